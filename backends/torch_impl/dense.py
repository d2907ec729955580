"""Dense transformations and the units, layers and regressions built on them."""

from __future__ import annotations

import torch

from nutshell.backends.torch_impl.activations import ACTIVATIONS, sigmoid
from nutshell.spec.signatures import Impl


def dense(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None = None) -> torch.Tensor:
    """y = x · w + b: (N, I) · (I, O) + (O,) -> (N, O)."""
    return x @ w if b is None else torch.addmm(b, x, w)


def layer(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor, activation: str = "relu") -> torch.Tensor:
    """y = act(x · w + b)."""
    return ACTIVATIONS[activation](dense(x, w, b))


def maxout(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor, pieces: int = 2) -> torch.Tensor:
    """y = z.reshape(N, O, k).max(−1), z = x · w + b; ties: the first piece wins.

    The winner is picked explicitly, the smallest piece index holding the maximum (or a NaN),
    and gathered, so only it receives gradient whatever tie rule torch.max follows.
    """
    z = dense(x, w, b)
    z = z.reshape(z.shape[0], z.shape[1] // pieces, pieces)        # (N, O, k)
    top = z.detach().amax(-1, keepdim=True)                        # (N, O, 1)
    hit = (z.detach() == top) | z.detach().isnan()
    index = torch.arange(pieces, device=z.device).expand_as(z)
    first = torch.where(hit, index, pieces).amin(-1, keepdim=True)  # (N, O, 1)
    return z.gather(-1, first).squeeze(-1)                         # (N, O)


def logistic_regression(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """p = σ(x · w + b): (N, I) · (I,) + () -> (N,)."""
    return sigmoid(x @ w + b)


def softmax_regression(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """p = softmax(x · w + b) along the classes: (N, K)."""
    return torch.softmax(dense(x, w, b), dim=-1)


# concept -> Impl(forward(inputs, attrs)); no vjp: autograd differentiates the forward (backend.py)
CONCEPTS: dict[str, Impl] = {
    "dense": Impl(lambda i, a: {"y": dense(i["x"], i["w"], i.get("b"))}),
    "layer": Impl(lambda i, a: {"y": layer(i["x"], i["w"], i["b"], a["activation"])}),
    "maxout": Impl(lambda i, a: {"y": maxout(i["x"], i["w"], i["b"], a["pieces"])}),
    "logistic_regression": Impl(lambda i, a: {"p": logistic_regression(i["x"], i["w"], i["b"])}),
    "softmax_regression": Impl(lambda i, a: {"p": softmax_regression(i["x"], i["w"], i["b"])}),
}
