"""Activation functions as ONNX graphs: sigmoid, relu, tanh, softmax, log_softmax.

Every builder takes the graph and value names and returns value names. The vjp graphs use the
closed-form derivatives, written with the forward output y where that is the simpler form.
``CONCEPTS`` holds the concept graphs, ``Impl(forward(g, inputs, attrs), vjp(g, inputs, cotangents,
attrs))`` as in every area module of this backend.

ONNX Runtime's own Sigmoid kernel is an approximation with absolute, not relative, accuracy
(σ(−5) is 163 ulp off in float32 and σ(−20) comes out as 0), so :func:`sigmoid` is built from Exp;
its Tanh flushes tiny inputs to 0 and is up to 7·u·|y| off near ±1 (measured against mpmath, float64),
which :func:`tanh` routes around; its float32 Softmax flushes results below 2⁻¹²⁶ to 0 (its Exp
keeps them), so :func:`softmax` is built from Exp too. All three were found by ``nutshell hunt``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from nutshell.backends.onnx_impl.graph import Graph
from nutshell.spec.signatures import Impl


def sigmoid(g: Graph, x: str) -> str:
    """σ(x) = 1 / (1 + e^(−x)) through z = e^(−|x|) ≤ 1: 1/(1 + z) for x ≥ 0, z/(1 + z) otherwise.

    Nothing overflows, σ(∓1000) is exactly 0 and 1, the lower tail keeps full relative accuracy,
    and NaN propagates (the comparison is false, z/(1 + z) is NaN).
    """
    z = g.op("Exp", g.op("Neg", g.op("Abs", x)))
    d = g.op("Add", g.scalar(1.0), z)
    return g.op("Where", g.op("GreaterOrEqual", x, g.scalar(0.0)), g.op("Div", g.scalar(1.0), d), g.op("Div", z, d))


def tanh(g: Graph, x: str) -> str:
    """tanh(x) in three ranges of |x|:

    * below 2^−13 (2^−27 in float64) x itself: tanh(x) = x − x³/3 + … rounds to x, while ONNX
      Runtime's float32 Tanh is an ulp off and flushes subnormal x to 0;
    * below 0.55 ONNX Runtime's Tanh (within 4.3·u·|y| there);
    * above, sign(x)·(1 − z)/(1 + z) with z = e^(−2|x|) ≤ 1/3: no cancellation, within 2.2·u·|y|
      where the library's Tanh reaches 7·u·|y|. ±inf gives ±1 and NaN propagates (every
      comparison with NaN is false, and z is NaN).
    """
    a = g.op("Abs", x)
    small = g.scalar(2.0 ** (-13 if g.dtype == np.float32 else -27))
    z = g.op("Exp", g.op("Mul", a, g.scalar(-2.0)))
    tail = g.op("Mul", g.op("Sign", x), g.op("Div", g.op("Sub", g.scalar(1.0), z), g.op("Add", g.scalar(1.0), z)))
    body = g.op("Where", g.op("Less", a, g.scalar(0.55)), g.op("Tanh", x), tail)
    return g.op("Where", g.op("Less", a, small), x, body)


def softmax(g: Graph, x: str, axis: int) -> str:
    """exp(x − m) / Σ_axis exp(x − m), m the maximum along ``axis``: the largest term is e^0 = 1,
    so the sum never overflows, and results below float32's smallest normal stay subnormal."""
    e = g.op("Exp", g.op("Sub", x, g.op("ReduceMax", x, g.ints([axis]), keepdims=1)))
    return g.op("Div", e, g.op("ReduceSum", e, g.ints([axis]), keepdims=1))


def sigmoid_grad(g: Graph, y: str, gy: str) -> str:
    """gx = gy · y · (1 − y), y = σ(x)."""
    return g.op("Mul", g.op("Mul", gy, y), g.op("Sub", g.scalar(1.0), y))


def relu_grad(g: Graph, x: str, gy: str) -> str:
    """gx = gy where x > 0, else 0 (relu'(0) = 0)."""
    return g.op("Where", g.op("Greater", x, g.scalar(0.0)), gy, g.scalar(0.0))


def tanh_grad(g: Graph, y: str, gy: str) -> str:
    """gx = gy · (1 − y²), y = tanh(x)."""
    return g.op("Mul", gy, g.op("Sub", g.scalar(1.0), g.op("Mul", y, y)))


def softmax_grad(g: Graph, y: str, gy: str, axis: int) -> str:
    """gx = y · (gy − Σ_axis gy·y), y = softmax(x)."""
    dot = g.op("ReduceSum", g.op("Mul", gy, y), g.ints([axis]), keepdims=1)
    return g.op("Mul", y, g.op("Sub", gy, dot))


def log_softmax_grad(g: Graph, y: str, gy: str, axis: int) -> str:
    """gx = gy − e^y · Σ_axis gy, y = log_softmax(x)."""
    total = g.op("ReduceSum", gy, g.ints([axis]), keepdims=1)
    return g.op("Sub", gy, g.op("Mul", g.op("Exp", y), total))


def activation(g: Graph, name: str, z: str) -> str:
    """act(z) for the layer's activation names: relu, sigmoid, tanh, identity."""
    if name == "sigmoid":
        return sigmoid(g, z)
    if name == "tanh":
        return tanh(g, z)
    if name == "identity":
        return z
    return g.op("Relu", z)


def activation_grad(g: Graph, name: str, z: str, y: str, gy: str) -> str:
    """gz for y = act(z)."""
    if name == "relu":
        return relu_grad(g, z, gy)
    if name == "sigmoid":
        return sigmoid_grad(g, y, gy)
    if name == "tanh":
        return tanh_grad(g, y, gy)
    return gy


# --- concept graphs ------------------------------------------------------------------------------

def _unary(name: str) -> Impl:
    def forward(g: Graph, v: dict, attrs: dict) -> dict:
        return {"y": activation(g, name, v["x"])}

    def vjp(g: Graph, v: dict, cot: dict, attrs: dict) -> dict:
        y = activation(g, name, v["x"])
        return {"x": activation_grad(g, name, v["x"], y, cot["y"])}
    return Impl(forward, vjp)


def _normalised(build: Callable[[Graph, str, int], str], grad) -> Impl:
    def forward(g: Graph, v: dict, attrs: dict) -> dict:
        return {"y": build(g, v["x"], attrs["axis"])}

    def vjp(g: Graph, v: dict, cot: dict, attrs: dict) -> dict:
        y = build(g, v["x"], attrs["axis"])
        return {"x": grad(g, y, cot["y"], attrs["axis"])}
    return Impl(forward, vjp)


def _log_softmax(g: Graph, x: str, axis: int) -> str:
    return g.op("LogSoftmax", x, axis=axis)


CONCEPTS: dict[str, Impl] = {
    "sigmoid": _unary("sigmoid"),
    "relu": _unary("relu"),
    "tanh": _unary("tanh"),
    "softmax": _normalised(softmax, softmax_grad),
    "log_softmax": _normalised(_log_softmax, log_softmax_grad),
}
