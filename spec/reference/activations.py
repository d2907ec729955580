"""Activation functions and softmax: the float64 oracle, forward beside backward.

Every function takes and returns :class:`~spec.reference.tracked.T`, so each golden carries its
rounding-error bound. The ``*_grad`` functions are the hand-derived vector-Jacobian products.
"""

from __future__ import annotations

import numpy as np

from nutshell.spec.reference import tracked
from nutshell.spec.reference.tracked import T
from nutshell.spec.signatures import Impl


def relu(x: T) -> T:
    """relu(x) = max(x, 0): exact, NaN propagates."""
    return tracked.maximum(x, 0.0)


def relu_grad(x: T, gy: T) -> T:
    """gx = gy where x > 0, else 0 (relu'(0) = 0): exact."""
    return tracked.where(x.v > 0, gy, 0.0)


def sigmoid(x: T) -> T:
    """σ(x) = 1 / (1 + e^(−x)), one library function."""
    return tracked.sigmoid(x)


def sigmoid_grad(y: T, gy: T) -> T:
    """σ'(x) = σ(x)·(1 − σ(x)), so gx = gy·y·(1 − y) with y the forward output."""
    return gy * (y * (1.0 - y))


def tanh(x: T) -> T:
    """tanh(x), one library function."""
    return tracked.tanh(x)


def tanh_grad(y: T, gy: T) -> T:
    """tanh'(x) = 1 − tanh²(x), so gx = gy·(1 − y²)."""
    return gy * (1.0 - y * y)


def identity(x: T) -> T:
    """id(x) = x."""
    return x


def identity_grad(y: T, gy: T) -> T:
    """id'(x) = 1, so gx = gy."""
    return gy


def _exact_infinities(a: T) -> T:
    """An infinite value that IEEE arithmetic passes through (−inf − m) is exact: error 0."""
    return T(a.v, np.where(np.isinf(a.v), 0.0, a.e), f=np.where(np.isinf(a.v), 0.0, a.f))


def _shifted(x: T, axis: int) -> T:
    """d = x − max(x) along ``axis``; the max is exact, and −inf − m = −inf is exact too."""
    return _exact_infinities(x - x.max(axis=axis, keepdims=True))


def softmax(x: T, axis: int = -1) -> T:
    """y_i = e^(d_i) / Σ_j e^(d_j), d = x − max(x) (max-subtracted).

    With a row of −inf except one finite entry, d is 0 there and −inf elsewhere, e^(−inf) = 0,
    so the row is exactly one-hot.
    """
    ex = tracked.exp(_shifted(x, axis))
    return ex / ex.sum(axis=axis, keepdims=True)


def softmax_grad(y: T, gy: T, axis: int = -1) -> T:
    """∂y_i/∂x_j = y_i(δ_ij − y_j), so gx = y·(gy − Σ_j gy_j·y_j)."""
    return y * (gy - (gy * y).sum(axis=axis, keepdims=True))


def log_softmax(x: T, axis: int = -1) -> T:
    """y_i = d_i − log Σ_j e^(d_j), d = x − max(x); −inf entries stay −inf (exact)."""
    d = _shifted(x, axis)
    lse = tracked.log(tracked.exp(d).sum(axis=axis, keepdims=True))
    return _exact_infinities(d - lse)


def log_softmax_grad(y: T, gy: T, axis: int = -1) -> T:
    """∂y_i/∂x_j = δ_ij − softmax_j, so gx = gy − e^(y)·Σ_j gy_j (e^y is the softmax)."""
    return gy - tracked.exp(y) * gy.sum(axis=axis, keepdims=True)


ACTIVATIONS = {
    "relu": (relu, lambda x, y, gy: relu_grad(x, gy)),
    "sigmoid": (sigmoid, lambda x, y, gy: sigmoid_grad(y, gy)),
    "tanh": (tanh, lambda x, y, gy: tanh_grad(y, gy)),
    "identity": (identity, lambda x, y, gy: identity_grad(y, gy)),
}
"""name -> (f(x), vjp(x, y, gy)): the unit activations that a layer can use."""


def _unit(name: str) -> Impl:
    """The concept entry (forward, vjp) of an elementwise activation."""
    f, grad = ACTIVATIONS[name]

    def fwd(i: dict, a: dict) -> dict:
        return {"y": f(i["x"])}

    def back(i: dict, g: dict, a: dict) -> dict:
        return {"x": grad(i["x"], f(i["x"]), g["y"])}

    return Impl(fwd, back)


CONCEPTS: dict[str, Impl] = {
    "relu": _unit("relu"),
    "sigmoid": _unit("sigmoid"),
    "tanh": _unit("tanh"),
    "softmax": Impl(lambda i, a: {"y": softmax(i["x"], a["axis"])},
                    lambda i, g, a: {"x": softmax_grad(softmax(i["x"], a["axis"]), g["y"], a["axis"])}),
    "log_softmax": Impl(lambda i, a: {"y": log_softmax(i["x"], a["axis"])},
                        lambda i, g, a: {"x": log_softmax_grad(log_softmax(i["x"], a["axis"]), g["y"], a["axis"])}),
}
