"""Losses as ONNX graphs: binary_cross_entropy (from logits) and cross_entropy (integer labels).

Both are batch means, written Σ/N. ONNX has no log1p, so :func:`log1p` uses Kahan's identity.
"""

from __future__ import annotations

import numpy as np

from nutshell.backends.onnx_impl.activations import sigmoid, softmax
from nutshell.backends.onnx_impl.graph import Graph, unsqueeze
from nutshell.spec.signatures import Impl


def log1p(g: Graph, e: str) -> str:
    """log(1 + e) to full relative accuracy: with u = 1 ⊕ e, e·log(u)/(u − 1), or e where u = 1."""
    u = g.op("Add", g.scalar(1.0), e)
    d = g.op("Sub", u, g.scalar(1.0))
    return g.op("Where", g.op("Equal", d, g.scalar(0.0)), e, g.op("Div", g.op("Mul", e, g.op("Log", u)), d))


def _mean(g: Graph, terms: str, n: int) -> str:
    return g.op("Div", g.op("ReduceSum", terms, keepdims=0), g.scalar(float(n)))


def _bce(g: Graph, v: dict, attrs: dict) -> dict:
    """loss = mean(max(z, 0) − z·t + log1p(e^(−|z|))), finite for any |z|."""
    z, t = v["logits"], v["targets"]
    tail = log1p(g, g.op("Exp", g.op("Neg", g.op("Abs", z))))
    terms = g.op("Add", g.op("Sub", g.op("Relu", z), g.op("Mul", z, t)), tail)
    return {"loss": _mean(g, terms, g.shapes["logits"][0])}


def _bce_vjp(g: Graph, v: dict, cot: dict, attrs: dict) -> dict:
    """gz = (σ(z) − t) · gloss / N."""
    scale = g.op("Div", cot["loss"], g.scalar(float(g.shapes["logits"][0])))
    return {"logits": g.op("Mul", g.op("Sub", sigmoid(g, v["logits"]), v["targets"]), scale)}


def _cross_entropy(g: Graph, v: dict, attrs: dict) -> dict:
    """loss = −Σ_n log_softmax(z)[n, label_n] / N."""
    logp = g.op("LogSoftmax", v["logits"], axis=-1)                          # (N, K)
    picked = g.op("GatherElements", logp, unsqueeze(g, v["labels"], [1]), axis=1)  # (N, 1)
    return {"loss": g.op("Neg", _mean(g, picked, g.shapes["logits"][0]))}


def _cross_entropy_vjp(g: Graph, v: dict, cot: dict, attrs: dict) -> dict:
    """gz = (softmax(z) − onehot(labels)) · gloss / N."""
    n, k = g.shapes["logits"]
    onehot = g.op("Cast", g.op("Equal", g.const(np.arange(k, dtype=np.int64)), unsqueeze(g, v["labels"], [1])),
                  to=g.elem)                                                 # (N, K)
    scale = g.op("Div", cot["loss"], g.scalar(float(n)))
    return {"logits": g.op("Mul", g.op("Sub", softmax(g, v["logits"], -1), onehot), scale)}


CONCEPTS: dict[str, Impl] = {
    "binary_cross_entropy": Impl(_bce, _bce_vjp),
    "cross_entropy": Impl(_cross_entropy, _cross_entropy_vjp),
}
