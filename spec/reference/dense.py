"""Dense transformation, layer, maxout and the two regressions: the float64 oracle.

Every affine map is one :func:`~spec.reference.tracked.einsum`, the bias folded in as one more
term, so y = x·w + b is bounded as a dot product of I + 1 terms.
"""

from __future__ import annotations

import numpy as np

from nutshell.spec.reference import tracked
from nutshell.spec.reference.activations import ACTIVATIONS, sigmoid, sigmoid_grad, softmax, softmax_grad
from nutshell.spec.reference.tracked import T
from nutshell.spec.signatures import Impl


def dense(x: T, w: T, b: T | None) -> T:
    """y[n, o] = Σ_i x[n, i]·w[i, o] + b[o]; a rank-1 w (I,) gives y (N,)."""
    return tracked.einsum("ni,i->n" if w.ndim == 1 else "ni,io->no", x, w, b)


def dense_grad(x: T, w: T, b: T | None, gy: T) -> dict[str, T]:
    """gx = gy·wᵀ, gw = xᵀ·gy (a dot product over the batch), gb = Σ_n gy."""
    if w.ndim == 1:
        g = {"x": tracked.einsum("n,i->ni", gy, w), "w": tracked.einsum("ni,n->i", x, gy)}
    else:
        g = {"x": tracked.einsum("no,io->ni", gy, w), "w": tracked.einsum("ni,no->io", x, gy)}
    if b is not None:
        g["b"] = gy.sum(axis=0)
    return g


def layer(x: T, w: T, b: T, activation: str) -> tuple[T, T]:
    """(z, y): z = x·w + b, y = act(z)."""
    z = dense(x, w, b)
    return z, ACTIVATIONS[activation][0](z)


def layer_grad(x: T, w: T, b: T, activation: str, gy: T) -> dict[str, T]:
    """gz = act'(z)·gy, then the dense vjp."""
    z, y = layer(x, w, b, activation)
    return dense_grad(x, w, b, ACTIVATIONS[activation][1](z, y, gy))


def maxout(x: T, w: T, b: T, pieces: int) -> tuple[T, np.ndarray]:
    """(y, first): z = x·w + b; y = z.reshape(N, O, k).max(−1); first = the winning piece.

    Ties go to the first piece (argmax); a NaN piece wins and propagates.
    """
    z = dense(x, w, b)
    n = z.shape[0]
    zr = z.reshape(n, z.shape[1] // pieces, pieces)  # (N, O, k)
    return zr.max(axis=-1), np.argmax(zr.v, axis=-1)


def maxout_grad(x: T, w: T, b: T, pieces: int, gy: T) -> dict[str, T]:
    """gz[n, o, j] = gy[n, o] for the first max piece j, else 0; then the dense vjp."""
    _, first = maxout(x, w, b, pieces)
    mask = np.arange(pieces) == first[..., None]  # (N, O, k)
    gz = tracked.where(mask, T(gy.v[..., None], gy.e[..., None], f=gy.f[..., None]), 0.0)
    return dense_grad(x, w, b, gz.reshape(gz.shape[0], gz.shape[1] * gz.shape[2]))


def logistic_regression(x: T, w: T, b: T) -> T:
    """p = σ(x·w + b), shape (N,)."""
    return sigmoid(dense(x, w, b))


def logistic_regression_grad(x: T, w: T, b: T, gp: T) -> dict[str, T]:
    """gz = gp·p·(1 − p), then the dense vjp (w a vector, b a scalar)."""
    return dense_grad(x, w, b, sigmoid_grad(logistic_regression(x, w, b), gp))


def softmax_regression(x: T, w: T, b: T) -> T:
    """p = softmax(x·w + b) along the classes."""
    return softmax(dense(x, w, b), -1)


def softmax_regression_grad(x: T, w: T, b: T, gp: T) -> dict[str, T]:
    """gz = p·(gp − Σ_k gp_k·p_k), then the dense vjp."""
    return dense_grad(x, w, b, softmax_grad(softmax_regression(x, w, b), gp, -1))


CONCEPTS: dict[str, Impl] = {
    "dense": Impl(lambda i, a: {"y": dense(i["x"], i["w"], i.get("b"))},
                  lambda i, g, a: dense_grad(i["x"], i["w"], i.get("b"), g["y"])),
    "layer": Impl(lambda i, a: {"y": layer(i["x"], i["w"], i["b"], a["activation"])[1]},
                  lambda i, g, a: layer_grad(i["x"], i["w"], i["b"], a["activation"], g["y"])),
    "maxout": Impl(lambda i, a: {"y": maxout(i["x"], i["w"], i["b"], a["pieces"])[0]},
                   lambda i, g, a: maxout_grad(i["x"], i["w"], i["b"], a["pieces"], g["y"])),
    "logistic_regression": Impl(lambda i, a: {"p": logistic_regression(i["x"], i["w"], i["b"])},
                                lambda i, g, a: logistic_regression_grad(i["x"], i["w"], i["b"], g["p"])),
    "softmax_regression": Impl(lambda i, a: {"p": softmax_regression(i["x"], i["w"], i["b"])},
                               lambda i, g, a: softmax_regression_grad(i["x"], i["w"], i["b"], g["p"])),
}
