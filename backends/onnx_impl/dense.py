"""Dense transformations as ONNX graphs: dense, layer, maxout, logistic and softmax regression.

Forward is Gemm (or MatMul without a bias); the vjp of y = x·w + b is
gx = gy·wᵀ, gw = xᵀ·gy, gb = Σ_n gy, each one Gemm or ReduceSum.
"""

from __future__ import annotations

import numpy as np

from nutshell.backends.onnx_impl.activations import (
    activation,
    activation_grad,
    sigmoid,
    sigmoid_grad,
    softmax,
    softmax_grad,
)
from nutshell.backends.onnx_impl.graph import Graph, reduce_sum, reshape, unsqueeze
from nutshell.spec.signatures import Impl


def affine(g: Graph, x: str, w: str, b: str | None) -> str:
    """y = x·w + b for x (N, I), w (I, O), b (O,) or none."""
    if b is None:
        return g.op("MatMul", x, w)
    return g.op("Gemm", x, w, b)


def affine_grad(g: Graph, v: dict, gy: str) -> dict:
    """{x: gy·wᵀ, w: xᵀ·gy, b: Σ_n gy} for the inputs present in ``v``."""
    grads = {"x": g.op("Gemm", gy, v["w"], transB=1), "w": g.op("Gemm", v["x"], gy, transA=1)}
    if "b" in v:
        grads["b"] = reduce_sum(g, gy, [0])
    return grads


def _dense(g: Graph, v: dict, attrs: dict) -> dict:
    return {"y": affine(g, v["x"], v["w"], v.get("b"))}


def _dense_vjp(g: Graph, v: dict, cot: dict, attrs: dict) -> dict:
    return affine_grad(g, v, cot["y"])


def _layer(g: Graph, v: dict, attrs: dict) -> dict:
    return {"y": activation(g, attrs["activation"], affine(g, v["x"], v["w"], v["b"]))}


def _layer_vjp(g: Graph, v: dict, cot: dict, attrs: dict) -> dict:
    z = affine(g, v["x"], v["w"], v["b"])
    y = activation(g, attrs["activation"], z)
    return affine_grad(g, v, activation_grad(g, attrs["activation"], z, y, cot["y"]))


def _pieces(g: Graph, v: dict, attrs: dict) -> str:
    """z = x·w + b viewed as (N, O, k): the k pieces of each output are adjacent columns."""
    n, k = g.shapes["x"][0], attrs["pieces"]
    z = affine(g, v["x"], v["w"], v["b"])
    return reshape(g, z, [n, g.shapes["w"][1] // k, k])  # (N, O, k)


def _maxout(g: Graph, v: dict, attrs: dict) -> dict:
    """y = max_k z[:, :, k]."""
    return {"y": g.op("ReduceMax", _pieces(g, v, attrs), g.ints([2]), keepdims=0)}


def _maxout_vjp(g: Graph, v: dict, cot: dict, attrs: dict) -> dict:
    """gz = gy on the first largest piece (ArgMax picks the first of ties), 0 on the others."""
    k = attrs["pieces"]
    z = _pieces(g, v, attrs)
    first = g.op("ArgMax", z, axis=2, keepdims=1, select_last_index=0)       # (N, O, 1)
    winner = g.op("Equal", g.const(np.arange(k, dtype=np.int64)), first)     # (N, O, k)
    gz = g.op("Where", winner, unsqueeze(g, cot["y"], [2]), g.scalar(0.0))
    return affine_grad(g, v, reshape(g, gz, [g.shapes["x"][0], g.shapes["w"][1]]))  # (N, O·k)


def _logistic(g: Graph, v: dict) -> str:
    """p = σ(x·w + b) for x (N, I), w (I,), b ()."""
    return sigmoid(g, g.op("Add", g.op("MatMul", v["x"], v["w"]), v["b"]))


def _logistic_regression(g: Graph, v: dict, attrs: dict) -> dict:
    return {"p": _logistic(g, v)}


def _logistic_regression_vjp(g: Graph, v: dict, cot: dict, attrs: dict) -> dict:
    """gz = gp·p(1 − p); gx = gz ⊗ w, gw = xᵀ·gz, gb = Σ gz."""
    gz = sigmoid_grad(g, _logistic(g, v), cot["p"])                        # (N,)
    return {"x": g.op("Mul", unsqueeze(g, gz, [1]), v["w"]),                 # (N, 1)·(I,) -> (N, I)
            "w": g.op("MatMul", gz, v["x"]),
            "b": g.op("ReduceSum", gz, keepdims=0)}


def _softmax_regression(g: Graph, v: dict, attrs: dict) -> dict:
    return {"p": softmax(g, affine(g, v["x"], v["w"], v["b"]), -1)}


def _softmax_regression_vjp(g: Graph, v: dict, cot: dict, attrs: dict) -> dict:
    p = softmax(g, affine(g, v["x"], v["w"], v["b"]), -1)
    return affine_grad(g, v, softmax_grad(g, p, cot["p"], -1))


CONCEPTS: dict[str, Impl] = {
    "dense": Impl(_dense, _dense_vjp),
    "layer": Impl(_layer, _layer_vjp),
    "maxout": Impl(_maxout, _maxout_vjp),
    "logistic_regression": Impl(_logistic_regression, _logistic_regression_vjp),
    "softmax_regression": Impl(_softmax_regression, _softmax_regression_vjp),
}
