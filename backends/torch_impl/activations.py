"""Activation functions and the normalising maps softmax / log-softmax."""

from __future__ import annotations

import math

import torch

from nutshell.spec.signatures import Impl


def sigmoid(x: torch.Tensor) -> torch.Tensor:
    """σ(x) = 1 / (1 + e^(−x)), and e^x itself below t = ln u.

    torch.sigmoid returns 0 once e^(−x) overflows (x < −88.7 in float32), where σ(x) is still a
    subnormal; σ(x) = e^x / (1 + e^x) differs from e^x by a factor 1 − e^x + …, within one rounding
    once e^x < u, so below t the result is e^x (σ(−1000) is still exactly 0, σ(1000) exactly 1).
    The exp branch takes min(x, t): no branch overflows, so autograd never multiplies 0 by inf.
    NaN goes to torch.sigmoid and propagates.
    """
    t = math.log(torch.finfo(x.dtype).eps / 2)
    return torch.where(x < t, torch.exp(torch.clamp(x, max=t)), torch.sigmoid(x))


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
