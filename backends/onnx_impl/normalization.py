"""Local response normalisation (ONNX LRN semantics) as an ONNX graph, forward and vjp.

    s[c] = Σ_{i ∈ window(c)} x[i]²,  t = bias + alpha/size · s,  y = x / t^beta

window(c) = [c − ⌊(size−1)/2⌋, c + ⌈(size−1)/2⌉] ∩ [0, C), written as a 0/1 band matrix
B[c, i] so that s = Einsum(x², B). ONNX Runtime's LRN kernel is not used: it refuses even sizes
and is up to 15 ulp off in float32 (this composition: under 3 ulp).
"""

from __future__ import annotations

import numpy as np

from nutshell.backends.onnx_impl.graph import Graph
from nutshell.spec import shapes
from nutshell.spec.signatures import Impl


def band(channels: int, size: int, dtype: np.dtype) -> np.ndarray:
    """B[c, i] = 1 when channel i is in the window of channel c."""
    b = np.zeros((channels, channels), dtype)
    for c in range(channels):
        lo, hi = shapes.lrn_window(c, size, channels)
        b[c, lo:hi] = 1
    return b


def _band(g: Graph, attrs: dict) -> str:
    return g.const(band(g.shapes["x"][1], attrs["size"], g.dtype))


def _denominator(g: Graph, x: str, b: str, attrs: dict) -> tuple[str, str]:
    """(t, t^beta) with t = bias + alpha/size · Σ_window x², B the band matrix."""
    s = g.op("Einsum", g.op("Mul", x, x), b, equation="nihw,ci->nchw")
    t = g.op("Add", g.scalar(attrs["bias"]), g.op("Mul", g.scalar(attrs["alpha"] / attrs["size"]), s))
    return t, g.op("Pow", t, g.scalar(attrs["beta"]))


def _lrn(g: Graph, v: dict, attrs: dict) -> dict:
    _, tb = _denominator(g, v["x"], _band(g, attrs), attrs)
    return {"y": g.op("Div", v["x"], tb)}


def _lrn_vjp(g: Graph, v: dict, cot: dict, attrs: dict) -> dict:
    """gx[i] = gy[i]/t[i]^β − (2αβ/size) · x[i] · Σ_{c: i ∈ window(c)} gy[c]·x[c] / t[c]^(β+1)."""
    x, gy = v["x"], cot["y"]
    b = _band(g, attrs)
    t, tb = _denominator(g, x, b, attrs)
    u = g.op("Div", g.op("Mul", gy, x), g.op("Mul", tb, t))                 # gy·x / t^(β+1)
    back = g.op("Einsum", u, b, equation="nchw,ci->nihw")
    k = g.scalar(2.0 * attrs["alpha"] * attrs["beta"] / attrs["size"])
    return {"x": g.op("Sub", g.op("Div", gy, tb), g.op("Mul", k, g.op("Mul", x, back)))}


CONCEPTS: dict[str, Impl] = {"lrn": Impl(_lrn, _lrn_vjp)}
