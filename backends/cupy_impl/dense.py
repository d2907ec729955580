"""Dense transformations and the units built on them: dense, layer, maxout and the regressions.

Every concept here is an affine map z = x·w + b followed by something elementwise (or a
per-row reduction), so every vjp ends in the same adjoint of the affine map:

    gx = gz·wᵀ,   gw = xᵀ·gz,   gb = Σ_n gz[n]
"""

from __future__ import annotations

from typing import Any

from nutshell.backends.cupy_impl import activations as act
from nutshell.backends.cupy_impl.xp import array_module, matmul
from nutshell.spec.signatures import Impl

Arrays = dict[str, Any]


def affine(inputs: Arrays) -> Any:
    """z = x·w (+ b when given): (N, I)·(I, O) → (N, O), or (N, I)·(I,) → (N,)."""
    z = matmul(inputs["x"], inputs["w"])
    return z + inputs["b"] if "b" in inputs else z


def affine_vjp(inputs: Arrays, gz: Any) -> Arrays:
    """Gradients of z = x·w + b for gz shaped like z; a 1-D w (one output) gives outer products."""
    xp = array_module(gz)
    x, w = inputs["x"], inputs["w"]
    if w.ndim == 1:
        grads = {"x": xp.outer(gz, w), "w": matmul(gz, x)}
    else:
        grads = {"x": matmul(gz, w.T), "w": matmul(x.T, gz)}
    if "b" in inputs:
        grads["b"] = gz.sum(axis=0)
    return grads


def dense(inputs: Arrays, attrs: dict) -> Arrays:
    return {"y": affine(inputs)}


def dense_vjp(inputs: Arrays, cots: Arrays, attrs: dict) -> Arrays:
    return affine_vjp(inputs, cots["y"])


def layer(inputs: Arrays, attrs: dict) -> Arrays:
    """y = act(x·w + b)."""
    return {"y": act.ACTIVATIONS[attrs["activation"]](affine(inputs))}


def layer_vjp(inputs: Arrays, cots: Arrays, attrs: dict) -> Arrays:
    z = affine(inputs)
    return affine_vjp(inputs, act.ACTIVATION_VJPS[attrs["activation"]](z, cots["y"]))


def _pieces(inputs: Arrays, k: int) -> tuple[Any, Any]:
    """z (N, O, k) and the index of its first maximum per output (argmax keeps the first)."""
    z = affine(inputs)
    zr = z.reshape(z.shape[0], z.shape[1] // k, k)   # (N, O, k): the k pieces of an output are adjacent
    return zr, zr.argmax(axis=-1)


def maxout(inputs: Arrays, attrs: dict) -> Arrays:
    """y = z.reshape(N, O, k).max(−1), taken at the first maximal piece (NaN wins, and propagates)."""
    xp = array_module(inputs["x"])
    zr, idx = _pieces(inputs, attrs["pieces"])
    return {"y": xp.take_along_axis(zr, idx[..., None], axis=-1)[..., 0]}


def maxout_vjp(inputs: Arrays, cots: Arrays, attrs: dict) -> Arrays:
    """Only the winning piece of each output receives gy."""
    xp = array_module(inputs["x"])
    zr, idx = _pieces(inputs, attrs["pieces"])
    winner = xp.arange(zr.shape[-1]) == idx[..., None]                       # (N, O, k)
    gz = xp.where(winner, cots["y"][..., None], 0).reshape(zr.shape[0], zr.shape[1] * zr.shape[2])   # (N, O·k)
    return affine_vjp(inputs, gz)


def logistic_regression(inputs: Arrays, attrs: dict) -> Arrays:
    """p = σ(x·w + b), shape (N,)."""
    return {"p": act.sigmoid(affine(inputs))}


def logistic_regression_vjp(inputs: Arrays, cots: Arrays, attrs: dict) -> Arrays:
    return affine_vjp(inputs, act.sigmoid_vjp(affine(inputs), cots["p"]))


def softmax_regression(inputs: Arrays, attrs: dict) -> Arrays:
    """p = softmax(x·w + b) along the classes."""
    return {"p": act.softmax(affine(inputs))}


def softmax_regression_vjp(inputs: Arrays, cots: Arrays, attrs: dict) -> Arrays:
    p = act.softmax(affine(inputs))
    return affine_vjp(inputs, act.softmax_vjp(p, cots["p"]))


CONCEPTS: dict[str, Impl] = {
    "dense": Impl(dense, dense_vjp),
    "layer": Impl(layer, layer_vjp),
    "maxout": Impl(maxout, maxout_vjp),
    "logistic_regression": Impl(logistic_regression, logistic_regression_vjp),
    "softmax_regression": Impl(softmax_regression, softmax_regression_vjp),
}
