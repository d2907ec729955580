"""Activation functions as ONNX graphs: sigmoid, relu, tanh, softmax, log_softmax.

Every builder takes the graph and value names and returns value names. The vjp graphs use the
closed-form derivatives, written with the forward output y where that is the simpler form.
``CONCEPTS`` holds the concept graphs, ``Impl(forward(g, inputs, attrs), vjp(g, inputs, cotangents,
attrs))`` as in every area module of this backend.

ONNX Runtime's own Sigmoid kernel is an approximation with absolute, not relative, accuracy
(σ(−5) is 163 ulp off in float32 and σ(−20) comes out as 0), so :func:`sigmoid` is built from Exp;
its Tanh flushes tiny inputs to 0, which :func:`tanh` routes around.
"""

from __future__ import annotations

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
    """tanh(x), and x itself where |x| < 2^−13 (2^−27 in float64): there tanh(x) = x − x³/3 + …
    rounds to x, while ONNX Runtime's float32 Tanh is an ulp off and flushes subnormal x to 0."""
    small = g.scalar(2.0 ** (-13 if g.dtype == np.float32 else -27))
    return g.op("Where", g.op("Less", g.op("Abs", x), small), x, g.op("Tanh", x))


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


def _normalised(op_type: str, grad) -> Impl:
    def forward(g: Graph, v: dict, attrs: dict) -> dict:
        return {"y": g.op(op_type, v["x"], axis=attrs["axis"])}

    def vjp(g: Graph, v: dict, cot: dict, attrs: dict) -> dict:
        y = g.op(op_type, v["x"], axis=attrs["axis"])
        return {"x": grad(g, y, cot["y"], attrs["axis"])}
    return Impl(forward, vjp)


CONCEPTS: dict[str, Impl] = {
    "sigmoid": _unary("sigmoid"),
    "relu": _unary("relu"),
    "tanh": _unary("tanh"),
    "softmax": _normalised("Softmax", softmax_grad),
    "log_softmax": _normalised("LogSoftmax", log_softmax_grad),
}
