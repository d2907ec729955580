"""Losses from logits, batch means, in their numerically stable forms.

binary cross-entropy:  ℓ = mean_n(max(z, 0) − z·t + log1p(exp(−|z|))),   ∂ℓ/∂z = (σ(z) − t) / N
cross-entropy:         ℓ = −mean_n(log_softmax(z)[n, label_n]),           ∂ℓ/∂z = (softmax(z) − onehot) / N
"""

from __future__ import annotations

from typing import Any

import numpy as np

from nutshell.backends.cupy_impl import activations as act
from nutshell.backends.cupy_impl.xp import array_module
from nutshell.spec.signatures import Impl

Arrays = dict[str, Any]


def batch_mean(a: Any) -> Any:
    """Σ_n a[n] / N; an empty batch gives 0/0 = NaN (without NumPy's warning about it)."""
    with np.errstate(invalid="ignore"):
        return a.sum() / a.shape[0]


def binary_cross_entropy(inputs: Arrays, attrs: dict) -> Arrays:
    """The stable form never exponentiates a positive number: finite at |z| = 100."""
    xp = array_module(inputs["logits"])
    z, t = inputs["logits"], inputs["targets"]
    return {"loss": batch_mean(xp.maximum(z, 0) - z * t + xp.log1p(xp.exp(-xp.abs(z))))}


def binary_cross_entropy_vjp(inputs: Arrays, cots: Arrays, attrs: dict) -> Arrays:
    z, t = inputs["logits"], inputs["targets"]
    return {"logits": (act.sigmoid(z) - t) * cots["loss"] / z.shape[0]}


def _label_mask(logits: Any, labels: Any) -> Any:
    """onehot (N, K): True at [n, labels[n]]."""
    xp = array_module(logits)
    return xp.arange(logits.shape[1]) == labels[:, None]


def cross_entropy(inputs: Arrays, attrs: dict) -> Arrays:
    xp = array_module(inputs["logits"])
    logp = act.log_softmax(inputs["logits"], axis=1)
    picked = xp.take_along_axis(logp, inputs["labels"][:, None], axis=1)[:, 0]     # (N,)
    return {"loss": -batch_mean(picked)}


def cross_entropy_vjp(inputs: Arrays, cots: Arrays, attrs: dict) -> Arrays:
    z = inputs["logits"]
    p = act.softmax(z, axis=1)
    onehot = _label_mask(z, inputs["labels"])
    return {"logits": (p - onehot) * cots["loss"] / z.shape[0]}


CONCEPTS: dict[str, Impl] = {
    "binary_cross_entropy": Impl(binary_cross_entropy, binary_cross_entropy_vjp),
    "cross_entropy": Impl(cross_entropy, cross_entropy_vjp),
}
