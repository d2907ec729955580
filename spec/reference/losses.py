"""Binary cross-entropy from logits and cross-entropy with integer labels: the float64 oracle.

Both are batch means; their vjps take the scalar cotangent g of the loss.
"""

from __future__ import annotations

import numpy as np

from nutshell.spec.reference import tracked
from nutshell.spec.reference.activations import log_softmax
from nutshell.spec.reference.tracked import T
from nutshell.spec.signatures import Impl


def binary_cross_entropy(z: T, t: T) -> T:
    """loss = mean_n(max(z, 0) − z·t + log1p(e^(−|z|))): the stable form, finite at |z| = 100.

    It equals −t·log σ(z) − (1 − t)·log(1 − σ(z)) without forming σ(z).
    """
    per = tracked.maximum(z, 0.0) - z * t + tracked.log1p(tracked.exp(-tracked.abs_(z)))
    return per.mean()


def binary_cross_entropy_grad(z: T, t: T, g: T) -> T:
    """∂loss/∂z_n = (σ(z_n) − t_n) / N, so gz = (σ(z) − t)·(g / N)."""
    return (tracked.sigmoid(z) - t) * (g / T.const(float(z.shape[0])))


def cross_entropy(z: T, labels: np.ndarray) -> T:
    """loss = mean_n(−log_softmax(z)[n, labels[n]])."""
    picked = log_softmax(z, -1)[np.arange(z.shape[0]), labels]  # (N,)
    return -picked.mean()


def cross_entropy_grad(z: T, labels: np.ndarray, g: T) -> T:
    """∂loss/∂z[n, k] = (softmax(z)[n, k] − [k = labels[n]]) / N, softmax = e^(log_softmax)."""
    onehot = np.arange(z.shape[1]) == labels[:, None]  # (N, K)
    p = tracked.exp(log_softmax(z, -1))
    return tracked.where(onehot, p - 1.0, p) * (g / T.const(float(z.shape[0])))


CONCEPTS: dict[str, Impl] = {
    "binary_cross_entropy": Impl(
        lambda i, a: {"loss": binary_cross_entropy(i["logits"], i["targets"])},
        lambda i, g, a: {"logits": binary_cross_entropy_grad(i["logits"], i["targets"], g["loss"])}),
    "cross_entropy": Impl(
        lambda i, a: {"loss": cross_entropy(i["logits"], i["labels"])},
        lambda i, g, a: {"logits": cross_entropy_grad(i["logits"], i["labels"], g["loss"])}),
}
