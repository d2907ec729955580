"""Max, average and global average pooling over im2col windows, forward and vjp.

Both window poolings look at col = im2col(x) (C, kh·kw, N, oH, oW) and send their gradients back
through col2im, so overlapping windows (kernel > stride) accumulate their contributions.

max:  the windows are padded with −inf; idx = argmax over the window in row-major order keeps the
      first maximum (and the first NaN, so a window holding NaN gives NaN); backward puts gy at
      idx alone.
avg:  y = Σ_window x / divisor, the divisor counting the window positions inside x, or, with
      count_include_pad, inside the explicitly padded x; never the positions beyond it that
      ceil mode adds.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from nutshell.backends.cupy_impl.im2col import Window, col2im, im2col
from nutshell.backends.cupy_impl.xp import array_module
from nutshell.spec.signatures import Impl

Arrays = dict[str, Any]


def window(x_shape: tuple, attrs: dict) -> Window:
    """The pooling sweep over the (H, W) plane of x; ceil mode may add windows past the end pad."""
    return Window.make(x_shape[2:], attrs["kernel"], attrs["stride"], attrs["pads"],
                       attrs.get("dilation", [1, 1]), attrs["ceil_mode"])


def _columns(x: Any, win: Window, value: float) -> Any:
    """im2col(x) as (C, K, N, oH, oW), K = kh·kw taps in row-major window order."""
    return im2col(x, win, value).reshape(x.shape[1], win.taps, x.shape[0], win.oh, win.ow)


def _nchw(a: Any) -> Any:
    """(C, N, oH, oW) → a contiguous (N, C, oH, oW)."""
    return array_module(a).ascontiguousarray(a.transpose(1, 0, 2, 3))


def max_pool_forward(x: Any, win: Window) -> tuple[Any, Any]:
    """(y (N, C, oH, oW), idx (C, N, oH, oW)); idx is the winning tap p·kw + q of each window."""
    xp = array_module(x)
    col = _columns(x, win, -math.inf)
    idx = col.argmax(axis=1)
    return _nchw(xp.take_along_axis(col, idx[:, None], axis=1)[:, 0]), idx


def max_pool_backward(gy: Any, idx: Any, win: Window) -> Any:
    """gx: each window's gy goes to its winning tap; col2im adds up overlapping windows."""
    xp = array_module(gy)
    taps = xp.arange(win.taps).reshape(1, win.taps, 1, 1, 1)
    gcol = xp.where(taps == idx[:, None], gy.transpose(1, 0, 2, 3)[:, None], 0)         # (C, K, N, oH, oW)
    return col2im(gcol.reshape(gy.shape[1], win.kh, win.kw, gy.shape[0], win.oh, win.ow), win)


def max_pool2d(inputs: Arrays, attrs: dict) -> Arrays:
    x = inputs["x"]
    return {"y": max_pool_forward(x, window(x.shape, attrs))[0]}


def max_pool2d_vjp(inputs: Arrays, cots: Arrays, attrs: dict) -> Arrays:
    x = inputs["x"]
    win = window(x.shape, attrs)
    _, idx = max_pool_forward(x, win)
    return {"x": max_pool_backward(cots["y"], idx, win)}


def _axis_counts(n: int, k: int, s: int, p_begin: int, p_end: int, out: int, include_pad: bool) -> np.ndarray:
    """How many of each window's k taps land inside [0, n), or inside [−p_begin, n + p_end)."""
    taps = (np.arange(out) * s - p_begin)[:, None] + np.arange(k)                     # (out, k)
    lo, hi = (-p_begin, n + p_end) if include_pad else (0, n)
    return ((taps >= lo) & (taps < hi)).sum(axis=1)


def divisor(win: Window, include_pad: bool, like: Any) -> Any:
    """The (oH, oW) divisors of average pooling, in the dtype and on the device of ``like``."""
    rows = _axis_counts(win.h, win.kh, win.sh, win.pt, win.pb, win.oh, include_pad)
    cols = _axis_counts(win.w, win.kw, win.sw, win.pl, win.pr, win.ow, include_pad)
    return array_module(like).asarray(np.outer(rows, cols), dtype=like.dtype)


def avg_pool2d(inputs: Arrays, attrs: dict) -> Arrays:
    x = inputs["x"]
    win = window(x.shape, attrs)
    total = _nchw(_columns(x, win, 0.0).sum(axis=1))                                    # (N, C, oH, oW)
    return {"y": total / divisor(win, attrs["count_include_pad"], x)}


def avg_pool2d_vjp(inputs: Arrays, cots: Arrays, attrs: dict) -> Arrays:
    """Every tap of a window receives gy / divisor; overlapping windows add up in col2im."""
    xp = array_module(inputs["x"])
    gy = cots["y"]
    win = window(inputs["x"].shape, attrs)
    share = (gy / divisor(win, attrs["count_include_pad"], gy)).transpose(1, 0, 2, 3)  # (C, N, oH, oW)
    n, c = gy.shape[:2]
    return {"x": col2im(xp.broadcast_to(share[:, None, None], (c, win.kh, win.kw, n, win.oh, win.ow)), win)}


def global_avg_pool2d(inputs: Arrays, attrs: dict) -> Arrays:
    """y[n, c] = mean over the whole (H, W) plane, kept as (N, C, 1, 1)."""
    return {"y": inputs["x"].mean(axis=(2, 3), keepdims=True)}


def global_avg_pool2d_vjp(inputs: Arrays, cots: Arrays, attrs: dict) -> Arrays:
    xp = array_module(inputs["x"])
    x = inputs["x"]
    return {"x": xp.broadcast_to(cots["y"] / (x.shape[2] * x.shape[3]), x.shape).copy()}


CONCEPTS: dict[str, Impl] = {
    "max_pool2d": Impl(max_pool2d, max_pool2d_vjp),
    "avg_pool2d": Impl(avg_pool2d, avg_pool2d_vjp),
    "global_avg_pool2d": Impl(global_avg_pool2d, global_avg_pool2d_vjp),
}
