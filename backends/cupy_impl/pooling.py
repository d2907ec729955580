"""Max, average and global average pooling over im2col windows, forward and vjp.

Both window poolings look at col = im2col(x) (C, kh·kw, N, oH, oW) and send their gradients back
through col2im, so overlapping windows (kernel > stride) accumulate their contributions.

max:  the windows are padded with −inf; the gradient of each window goes to its first maximum in
      row-major window order alone (the first NaN where the window holds one, and y is NaN).
      On the GPU idx = argmax over the columns finds it and gy goes back through col2im. On
      NumPy, where that argmax across the window axis cost more than the rest of a CNN's step,
      y is a running maximum over the kh·kw strided views of the padded input, one per tap (on
      the input laid out (Hp, Wp, N, C), whose rows are long, and kept for backward), and
      backward walks the taps in the same order, each window's gy going to the first tap equal
      to its y; overlapping windows add up in col2im's order, so the sums are the same. Where
      the windows tile the plane (stride = kernel, no padding), each pixel has one window and
      backward writes each tap's share straight into a (N, C, oH, kh, oW, kw) view of gx.
avg:  y = Σ_window x / divisor, the divisor counting the window positions inside x, or, with
      count_include_pad, inside the explicitly padded x; never the positions beyond it that
      ceil mode adds.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import numpy as np

from nutshell.backends.cupy_impl.im2col import Window, col2im, im2col, pad
from nutshell.backends.cupy_impl.xp import array_module, kept, on_gpu
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
    """(y (N, C, oH, oW), what :func:`max_pool_backward` needs: idx (C, N, oH, oW), the winning
    tap p·kw + q of each window, on the GPU; on NumPy x and y, or for windows that do not tile
    the plane, the padded (Hp, Wp, N, C) plane and y in that layout)."""
    if not on_gpu(x):
        return (_running_max if _tiles(win) else _planes_max)(x, win)
    xp = array_module(x)
    col = _columns(x, win, -math.inf)
    idx = col.argmax(axis=1)
    return _nchw(xp.take_along_axis(col, idx[:, None], axis=1)[:, 0]), idx


def max_pool_backward(gy: Any, saved: Any, win: Window) -> Any:
    """gx: each window's gy goes to its winning tap; overlapping windows add up."""
    if not on_gpu(gy):
        return (_tiled_scatter if _tiles(win) else _first_max_scatter)(gy, saved, win)
    xp, idx = array_module(gy), saved
    taps = xp.arange(win.taps).reshape(1, win.taps, 1, 1, 1)
    gcol = xp.where(taps == idx[:, None], gy.transpose(1, 0, 2, 3)[:, None], 0)         # (C, K, N, oH, oW)
    return col2im(gcol.reshape(gy.shape[1], win.kh, win.kw, gy.shape[0], win.oh, win.ow), win)


def _taps(plane: np.ndarray, win: Window, axes: int = 2) -> Iterator[np.ndarray]:
    """The view of a padded plane under each tap (p, q), in row-major window order: the plane's
    (Hp, Wp) axes start at ``axes``; element (…, i, j, …) of view (p, q) is tap (p, q) of window (i, j)."""
    i_end, j_end = win.sh * (win.oh - 1) + 1, win.sw * (win.ow - 1) + 1
    lead = (slice(None),) * axes
    for p in range(win.kh):
        for q in range(win.kw):
            y0, x0 = p * win.dh, q * win.dw
            yield plane[(*lead, slice(y0, y0 + i_end, win.sh), slice(x0, x0 + j_end, win.sw))]


def _running_max(x: np.ndarray, win: Window) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
    """y as the running maximum of the tap views (np.maximum propagates NaN); saves (x, y)."""
    views = _taps(pad(x, win, -math.inf), win)
    y = next(views).copy()
    for v in views:
        np.maximum(y, v, out=y)
    return y, (x, y)


def _planes_max(x: np.ndarray, win: Window) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
    """y as the running maximum of the tap views of x padded with −inf and laid out (Hp, Wp, N, C),
    whose rows hold N·C elements, not oW; saves that plane and y in that layout for
    :func:`_first_max_scatter`."""
    n, c, h, w = x.shape
    xpad = np.full((*win.padded, n, c), -math.inf, x.dtype)
    xpad[win.pt:win.pt + h, win.pl:win.pl + w] = x.transpose(2, 3, 0, 1)
    views = _taps(xpad, win, 0)
    y = next(views).copy()                                                          # (oH, oW, N, C)
    for v in views:
        np.maximum(y, v, out=y)
    return np.ascontiguousarray(y.transpose(2, 3, 0, 1)), (xpad, y)


def _first_hits(views: Iterator[np.ndarray], y: np.ndarray) -> Iterator[np.ndarray]:
    """For each tap's view in window order, the windows whose first maximum it is: the first tap
    equal to y (or, where y is NaN, the first NaN tap); ``free`` marks the windows not yet served.
    Each mask is only valid until the next one is drawn."""
    free, hit = np.ones(y.shape, bool), np.empty(y.shape, bool)
    nan = np.isnan(y)
    nan = nan if nan.any() else None
    for v in views:
        np.equal(v, y, out=hit)
        if nan is not None:
            hit |= nan & np.isnan(v)
        hit &= free
        free ^= hit
        yield hit


def _first_max_scatter(gy: np.ndarray, saved: tuple[np.ndarray, np.ndarray], win: Window) -> np.ndarray:
    """gx: walking the taps in order, each window's gy goes to its first maximum
    (:func:`_first_hits`). The walk runs on the (Hp, Wp, N, C) planes :func:`_planes_max` kept: a
    tap's view there has rows of at least N·C elements, not oW, and NumPy's per-row cost no
    longer dominates."""
    xpad, y = saved
    gy = np.ascontiguousarray(gy.transpose(2, 3, 0, 1))                            # (oH, oW, N, C)
    gxp = np.zeros(xpad.shape, gy.dtype)
    for hit, g in zip(_first_hits(_taps(xpad, win, 0), y), _taps(gxp, win, 0), strict=True):
        g += kept(hit, gy)                        # one tap's view meets every pixel at most once
    return gxp[win.pt:win.pt + win.h, win.pl:win.pl + win.w].transpose(2, 3, 0, 1)


def _tiles(win: Window) -> bool:
    """Whether the windows tile the plane exactly: stride = kernel, no padding or dilation, and
    (H, W) = (oH·kh, oW·kw)."""
    return ((win.sh, win.sw) == (win.kh, win.kw) and (win.pt, win.pl, win.pb, win.pr) == (0, 0, 0, 0)
            and (win.dh, win.dw) == (1, 1) and (win.h, win.w) == (win.oh * win.kh, win.ow * win.kw))


def _tiled_scatter(gy: np.ndarray, saved: tuple[np.ndarray, np.ndarray], win: Window) -> np.ndarray:
    """gx for windows that tile the plane (:func:`_tiles`): every pixel lies in exactly one
    window, so each tap's gradient is written, not added, straight into the (N, C, oH, kh, oW, kw)
    view of gx; no padded planes and no transposes."""
    x, y = saved
    n, c = x.shape[:2]
    x6 = x.reshape(n, c, win.oh, win.kh, win.ow, win.kw)
    gx = np.empty(x.shape, gy.dtype)
    gx6 = gx.reshape(x6.shape)                                                        # (N, C, oH, kh, oW, kw)
    taps = [(p, q) for p in range(win.kh) for q in range(win.kw)]
    views = (x6[:, :, :, p, :, q] for p, q in taps)
    for (p, q), hit in zip(taps, _first_hits(views, y), strict=True):
        gx6[:, :, :, p, :, q] = kept(hit, gy)
    return gx


def max_pool2d_saving(inputs: Arrays, attrs: dict) -> tuple[Arrays, Any]:
    """The outputs, and what :func:`max_pool2d_vjp_saved` needs."""
    x = inputs["x"]
    y, saved = max_pool_forward(x, window(x.shape, attrs))
    return {"y": y}, saved


def max_pool2d_vjp_saved(inputs: Arrays, saved: Any, cots: Arrays, attrs: dict, wanted: set[str]) -> Arrays:
    """The vjp from what :func:`max_pool2d_saving` kept, without pooling again (nothing when
    "x" is not ``wanted``)."""
    if "x" not in wanted:
        return {}
    return {"x": max_pool_backward(cots["y"], saved, window(inputs["x"].shape, attrs))}


def max_pool2d(inputs: Arrays, attrs: dict) -> Arrays:
    return max_pool2d_saving(inputs, attrs)[0]


def max_pool2d_vjp(inputs: Arrays, cots: Arrays, attrs: dict) -> Arrays:
    return max_pool2d_vjp_saved(inputs, max_pool2d_saving(inputs, attrs)[1], cots, attrs, {"x"})


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
