"""Batch-mean losses computed from logits."""

from __future__ import annotations

import torch

from nutshell.backends.torch_impl.activations import sigmoid
from nutshell.spec.signatures import Impl


class _StableBCE(torch.autograd.Function):
    """ℓ(z, t) = max(z, 0) − z·t + log1p(exp(−|z|)) elementwise; ∂ℓ/∂z = σ(z) − t.

    The stable form is kept for the value; its gradient is given in closed form because the
    autograd of max and |·| at z = 0 would give −t instead of σ(0) − t = 1/2 − t.
    """

    @staticmethod
    def forward(ctx, z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(z, t)
        return torch.relu(z) - z * t + torch.log1p(torch.exp(-z.abs()))

    @staticmethod
    def backward(ctx, g: torch.Tensor) -> tuple[torch.Tensor, None]:
        z, t = ctx.saved_tensors
        return g * (sigmoid(z) - t), None


def binary_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """mean_n(max(z, 0) − z·t + log1p(exp(−|z|))): finite at |z| = 100 in either dtype."""
    return _StableBCE.apply(logits, targets).mean()


def cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """mean_n(−log_softmax(logits)[n, labels[n]]): (N, K), (N,) int64 -> ()."""
    picked = torch.log_softmax(logits, dim=-1).gather(1, labels[:, None])   # (N, 1)
    return -picked.mean()


# concept -> Impl(forward(inputs, attrs)); no vjp: autograd differentiates the forward (backend.py)
CONCEPTS: dict[str, Impl] = {
    "binary_cross_entropy": Impl(lambda i, a: {"loss": binary_cross_entropy(i["logits"], i["targets"])}),
    "cross_entropy": Impl(lambda i, a: {"loss": cross_entropy(i["logits"], i["labels"])}),
}
