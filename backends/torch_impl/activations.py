"""Activation functions and the normalising maps softmax / log-softmax."""

from __future__ import annotations

import torch

from nutshell.spec.signatures import Impl


def sigmoid(x: torch.Tensor) -> torch.Tensor:
    """σ(x) = 1 / (1 + e^(−x)); e^(1000) = inf gives exactly 0, e^(−1000) = 0 exactly 1, no warning."""
    return torch.sigmoid(x)


def relu(x: torch.Tensor) -> torch.Tensor:
    """max(x, 0); autograd passes the gradient only where x > 0, so relu'(0) = 0. NaN propagates."""
    return torch.relu(x)


def tanh(x: torch.Tensor) -> torch.Tensor:
    """tanh(x) = (e^x − e^(−x)) / (e^x + e^(−x))."""
    return torch.tanh(x)


def softmax(x: torch.Tensor, axis: int = -1) -> torch.Tensor:
    """exp(x − m) / Σ exp(x − m) along ``axis``, m the maximum (torch subtracts it internally)."""
    return torch.softmax(x, dim=axis)


def log_softmax(x: torch.Tensor, axis: int = -1) -> torch.Tensor:
    """(x − m) − log Σ exp(x − m) along ``axis``."""
    return torch.log_softmax(x, dim=axis)


ACTIVATIONS = {"relu": relu, "sigmoid": sigmoid, "tanh": tanh, "identity": lambda z: z}

# concept -> Impl(forward(inputs, attrs)); no vjp: autograd differentiates the forward (backend.py)
CONCEPTS: dict[str, Impl] = {
    "sigmoid": Impl(lambda i, a: {"y": sigmoid(i["x"])}),
    "relu": Impl(lambda i, a: {"y": relu(i["x"])}),
    "tanh": Impl(lambda i, a: {"y": tanh(i["x"])}),
    "softmax": Impl(lambda i, a: {"y": softmax(i["x"], a["axis"])}),
    "log_softmax": Impl(lambda i, a: {"y": log_softmax(i["x"], a["axis"])}),
}
