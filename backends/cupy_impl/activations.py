"""Activation functions and the softmax family, forward and vjp, written against ``xp``.

The array functions (``sigmoid``, ``dsigmoid``, ``dtanh``, ``softmax``, ``log_softmax``) are
reused by the dense, loss and recurrent modules; ``CONCEPTS`` maps concept ids to the
``Impl(forward, vjp)`` the backend dispatches to.
"""

from __future__ import annotations

from typing import Any

from nutshell.backends.cupy_impl import kernels
from nutshell.backends.cupy_impl.xp import array_module, kept, on_gpu
from nutshell.spec.signatures import Impl

Arrays = dict[str, Any]


def _exp_neg_abs(x: Any) -> tuple[Any, Any]:
    """(e, r) with e = exp(−|x|) ∈ [0, 1] and r = 1 / (1 + e): nothing overflows."""
    xp = array_module(x)
    e = xp.exp(-xp.abs(x))
    return e, 1 / (1 + e)


def sigmoid(x: Any) -> Any:
    """σ(x) = 1 / (1 + e^(−x)) by the sign split: r for x ≥ 0, e·r for x < 0 (e = exp(−|x|)).

    Only exp of a non-positive number is ever taken, so σ(−1000) = 0 and σ(1000) = 1 exactly,
    without overflow warnings; each branch keeps a relative error of a few ulps, and NaN
    propagates (NaN ≥ 0 is false and e·r is NaN).
    """
    if on_gpu(x):
        return kernels.elementwise("sigmoid")(x)
    e, r = _exp_neg_abs(x)
    return array_module(x).where(x >= 0, r, e * r)


def dsigmoid(x: Any) -> Any:
    """σ'(x) = σ(x)·σ(−x) = e·r², accurate even where σ(x) itself rounds to 1."""
    e, r = _exp_neg_abs(x)
    return e * r * r


def dtanh(x: Any) -> Any:
    """tanh'(x) = 1 − tanh²(x) = 4·σ'(2x): the first for |x| < 1, where tanh² ≤ 0.58 leaves no
    cancellation and its two roundings beat the five of e·r² (4·σ'(2x) reached 0.98 of the float64
    bound near 0, found by ``nutshell hunt``), the second beyond, accurate where tanh rounds to ±1."""
    xp = array_module(x)
    y = xp.tanh(x)
    return xp.where(xp.abs(x) < 1, 1 - y * y, 4 * dsigmoid(2 * x))


def tanh(x: Any) -> Any:
    return array_module(x).tanh(x)


def sigmoid_vjp(x: Any, gy: Any) -> Any:
    if on_gpu(x):
        return kernels.elementwise("sigmoid_grad")(x, gy)
    return gy * dsigmoid(x)


def tanh_vjp(x: Any, gy: Any) -> Any:
    if on_gpu(x):
        return kernels.elementwise("tanh_grad")(x, gy)
    return gy * dtanh(x)


def relu(x: Any) -> Any:
    """max(x, 0); NaN propagates (maximum returns the NaN)."""
    return array_module(x).maximum(x, 0)


def relu_vjp(x: Any, gy: Any) -> Any:
    """gy where x > 0, else 0 (so relu'(0) = 0)."""
    return kept(x > 0, gy)


def softmax(x: Any, axis: int = -1) -> Any:
    """exp(x − m) / Σ exp(x − m) with m the max along ``axis``.

    After the shift the largest term is exp(0) = 1, so the sum is ≥ 1 and never overflows; a row
    of −inf with one finite entry gives that entry 1 and the others exp(−inf) = 0.
    """
    xp = array_module(x)
    ex = xp.exp(x - x.max(axis=axis, keepdims=True))
    return ex / ex.sum(axis=axis, keepdims=True)


def log_softmax(x: Any, axis: int = -1) -> Any:
    """(x − m) − log Σ exp(x − m), m the max along ``axis``; finite where softmax underflows."""
    xp = array_module(x)
    shifted = x - x.max(axis=axis, keepdims=True)
    return shifted - xp.log(xp.exp(shifted).sum(axis=axis, keepdims=True))


def softmax_vjp(y: Any, gy: Any, axis: int = -1) -> Any:
    """gx = y ⊙ (gy − Σ gy ⊙ y) along ``axis``, from the softmax output y."""
    return y * (gy - (gy * y).sum(axis=axis, keepdims=True))


def log_softmax_vjp(y: Any, gy: Any, axis: int = -1) -> Any:
    """gx = gy − exp(y) · Σ gy along ``axis``, from the log-softmax output y."""
    return gy - array_module(y).exp(y) * gy.sum(axis=axis, keepdims=True)


ACTIVATIONS = {"relu": relu, "sigmoid": sigmoid, "tanh": tanh, "identity": lambda x: x}
ACTIVATION_VJPS = {"relu": relu_vjp, "sigmoid": sigmoid_vjp, "tanh": tanh_vjp, "identity": lambda x, gy: gy}


def _elementwise(name: str) -> Impl:
    def forward(inputs: Arrays, attrs: dict) -> Arrays:
        return {"y": ACTIVATIONS[name](inputs["x"])}

    def vjp(inputs: Arrays, cots: Arrays, attrs: dict) -> Arrays:
        return {"x": ACTIVATION_VJPS[name](inputs["x"], cots["y"])}

    return Impl(forward, vjp)


def _normalised(fn, fn_vjp) -> Impl:
    def forward(inputs: Arrays, attrs: dict) -> Arrays:
        return {"y": fn(inputs["x"], attrs["axis"])}

    def vjp(inputs: Arrays, cots: Arrays, attrs: dict) -> Arrays:
        y = fn(inputs["x"], attrs["axis"])
        return {"x": fn_vjp(y, cots["y"], attrs["axis"])}

    return Impl(forward, vjp)


CONCEPTS: dict[str, Impl] = {
    "sigmoid": _elementwise("sigmoid"),
    "relu": _elementwise("relu"),
    "tanh": _elementwise("tanh"),
    "softmax": _normalised(softmax, softmax_vjp),
    "log_softmax": _normalised(log_softmax, log_softmax_vjp),
}
