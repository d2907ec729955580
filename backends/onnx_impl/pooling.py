"""Pooling as ONNX graphs: max_pool2d, avg_pool2d, global_avg_pool2d, forward and vjp.

Max pooling pads explicitly with −inf (ONNX Runtime's MaxPool refuses pads ≥ the undilated
kernel, which the spec allows up to the dilated kernel − 1), adds the end padding ceil mode needs
so that a floor-mode MaxPool yields the spec's window count, and restores NaN propagation
(ONNX Runtime's MaxPool skips NaN) with a second MaxPool over the NaN mask. Its vjp scatters gy
onto the argmax positions: MaxPool's Indices (flat over N·C·Hp·Wp, the first of ties in row-major
window order) and ScatterElements with reduction "add" (overlapping windows accumulate), or where
windows cannot overlap MaxUnpool, which places each gy at its index several times faster (in
float32: ONNX Runtime has no float64 MaxUnpool kernel).

Average pooling is ONNX AveragePool excluding padding, in floor mode, on an input arranged so that
its windows and divisors are the spec's (see :func:`_avg_pool2d`); its vjp divides gy by the
divisor map and spreads it over each window with a grouped ConvTranspose of ones.
"""

from __future__ import annotations

import numpy as np
from onnx import helper

from nutshell.backends.onnx_impl.graph import Graph, crop_hw, pad, reshape, slice_
from nutshell.spec import shapes
from nutshell.spec.signatures import Impl


def _max_pads(x_shape: tuple, attrs: dict) -> tuple[list[int], list[int]]:
    """(begin, end) −inf padding of H and W: the spec's pads, plus at the end what the last
    window of ceil mode reaches beyond them."""
    out = shapes.pool2d_out_shape(x_shape, attrs["kernel"], attrs["stride"], attrs["pads"], attrs["dilation"],
                                  attrs["ceil_mode"])
    begin, end = list(attrs["pads"][:2]), []
    for a, n in enumerate(x_shape[2:]):
        reach = shapes.window_reach(out[2 + a], attrs["kernel"][a], attrs["stride"][a], attrs["dilation"][a])
        end.append(max(attrs["pads"][a + 2], reach - n - begin[a]))
    return begin, end


def _max_windows(g: Graph, x: str, x_shape: tuple, attrs: dict, outputs: int = 1):
    """MaxPool over x padded with −inf (no pads, floor mode): y, or (y, flat indices). Without
    padding x itself is read (ONNX Runtime's Pad copies even when it adds nothing)."""
    begin, end = _max_pads(x_shape, attrs)
    xp = pad(g, x, [0, 0, *begin], [0, 0, *end], -np.inf) if any(begin + end) else x
    return xp, g.op("MaxPool", xp, outputs=outputs, kernel_shape=attrs["kernel"], strides=attrs["stride"],
                    dilations=attrs["dilation"])


def max_pool(g: Graph, x: str, x_shape: tuple, attrs: dict) -> str:
    """y = max over each window of x padded with −inf; NaN anywhere in a window gives NaN: with
    m = 1 there and 0 elsewhere, y + √(−m) adds −0 (y exactly, −0 included) or NaN, two cheap
    elementwise operators where a Where costs ONNX Runtime several times more."""
    xp, y = _max_windows(g, x, x_shape, attrs)
    nan = g.op("MaxPool", g.op("Cast", g.op("IsNaN", xp), to=g.elem), kernel_shape=attrs["kernel"],
               strides=attrs["stride"], dilations=attrs["dilation"])          # 1 where a window holds NaN
    return g.op("Add", y, g.op("Sqrt", g.op("Neg", nan)))


def _disjoint(attrs: dict) -> bool:
    """Whether no two windows share an element: the stride reaches past the dilated kernel."""
    axes = zip(attrs["kernel"], attrs["stride"], attrs["dilation"], strict=True)
    return all(s >= d * (k - 1) + 1 for k, s, d in axes)


def max_pool_grad(g: Graph, x: str, gy: str, x_shape: tuple, attrs: dict) -> str:
    """gx: each gy added onto the first largest element of its window (placed there, where no
    two windows share an element)."""
    n, c, h, w = x_shape
    begin, end = _max_pads(x_shape, attrs)
    hp, wp = h + begin[0] + end[0], w + begin[1] + end[1]
    _, (_, index) = _max_windows(g, x, x_shape, attrs, outputs=2)            # index flat over (N, C, Hp, Wp)
    if _disjoint(attrs) and g.dtype == np.float32:
        gxp = g.op("MaxUnpool", gy, index, g.ints([n, c, hp, wp]), kernel_shape=attrs["kernel"],
                   strides=attrs["stride"])
    else:
        zeros = g.op("ConstantOfShape", g.ints([n * c * hp * wp]), value=helper.make_tensor("zero", g.elem, [1], [0]))
        flat = g.op("ScatterElements", zeros, reshape(g, index, [-1]), reshape(g, gy, [-1]), axis=0, reduction="add")
        gxp = reshape(g, flat, [n, c, hp, wp])
    if (hp, wp) == (h, w):
        return gxp
    return slice_(g, gxp, begin, [begin[0] + h, begin[1] + w], [2, 3])


def _max_pool2d(g: Graph, v: dict, attrs: dict) -> dict:
    return {"y": max_pool(g, v["x"], g.shapes["x"], attrs)}


def _max_pool2d_vjp(g: Graph, v: dict, cot: dict, attrs: dict) -> dict:
    return {"x": max_pool_grad(g, v["x"], cot["y"], g.shapes["x"], attrs)}


def divisor_map(x_shape: tuple, attrs: dict) -> np.ndarray:
    """(oH, oW) window sizes the average divides by: positions inside the input, or with
    count_include_pad inside the explicitly padded input (never beyond it in ceil mode)."""
    out = shapes.pool2d_out_shape(x_shape, attrs["kernel"], attrs["stride"], attrs["pads"], (1, 1), attrs["ceil_mode"])
    counts = []
    for a, n in enumerate(x_shape[2:]):
        start = np.arange(out[2 + a]) * attrs["stride"][a] - attrs["pads"][a]
        stop = start + attrs["kernel"][a]
        if attrs["count_include_pad"]:
            counts.append(np.minimum(stop, n + attrs["pads"][a + 2]) - start)
        else:
            counts.append(np.minimum(stop, n) - np.maximum(start, 0))
    return np.outer(*counts)


def _avg_pool2d(g: Graph, v: dict, attrs: dict) -> dict:
    """AveragePool with count_include_pad=0 and ceil_mode=0 on terms it shares with the spec:
    for count_include_pad the pads are zeros added by Pad (so they count and nothing beyond
    them does), and ceil mode becomes extra end padding up to the last window's reach (ONNX
    Runtime's own ceil mode keeps a last window that starts in the end padding)."""
    h, w = g.shapes["x"][2:]
    out = shapes.pool2d_out_shape(g.shapes["x"], attrs["kernel"], attrs["stride"], attrs["pads"], (1, 1),
                                  attrs["ceil_mode"])
    reach = [shapes.window_reach(o, k, s) for o, k, s in zip(out[2:], attrs["kernel"], attrs["stride"], strict=True)]
    x, begin = v["x"], list(attrs["pads"][:2])
    if attrs["count_include_pad"]:
        x = pad(g, x, [0, 0, *begin], [0, 0, *attrs["pads"][2:]])          # (N, C, H + pads, W + pads)
        h, w, begin = h + begin[0] + attrs["pads"][2], w + begin[1] + attrs["pads"][3], [0, 0]
    end = [max(0, r - m - b) for r, m, b in zip(reach, (h, w), begin, strict=True)]
    return {"y": g.op("AveragePool", x, kernel_shape=attrs["kernel"], strides=attrs["stride"], pads=begin + end,
                      count_include_pad=0)}


def _avg_pool2d_vjp(g: Graph, v: dict, cot: dict, attrs: dict) -> dict:
    """gx[r] = Σ over the windows w holding r of gy[w] / D[w]: ConvTranspose of gy / D with a
    ones kernel, group = C, in padded coordinates, then cropped to the input."""
    c, h, w = g.shapes["x"][1:]
    (kh, kw), (sh, sw) = attrs["kernel"], attrs["stride"]
    share = g.op("Div", cot["y"], g.const(divisor_map(g.shapes["x"], attrs).astype(g.dtype)))  # (N, C, oH, oW)
    ones = g.const(np.ones((c, 1, kh, kw), g.dtype))
    spread = g.op("ConvTranspose", share, ones, strides=attrs["stride"], group=c)  # (N, C, sh·(oH−1)+kh, ...)
    oh, ow = g.shapes[cot["y"]][2:]
    length = (shapes.window_reach(oh, kh, sh), shapes.window_reach(ow, kw, sw))
    return {"x": crop_hw(g, spread, length, tuple(attrs["pads"][:2]), (h, w))}


def _global_avg_pool2d(g: Graph, v: dict, attrs: dict) -> dict:
    return {"y": g.op("GlobalAveragePool", v["x"])}


def _global_avg_pool2d_vjp(g: Graph, v: dict, cot: dict, attrs: dict) -> dict:
    """gx = gy / (H·W) broadcast over each map."""
    n, c, h, w = g.shapes["x"]
    return {"x": g.op("Expand", g.op("Div", cot["y"], g.scalar(float(h * w))), g.ints([n, c, h, w]))}


CONCEPTS: dict[str, Impl] = {
    "max_pool2d": Impl(_max_pool2d, _max_pool2d_vjp),
    "avg_pool2d": Impl(_avg_pool2d, _avg_pool2d_vjp),
    "global_avg_pool2d": Impl(_global_avg_pool2d, _global_avg_pool2d_vjp),
}
