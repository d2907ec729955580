"""Max, average and global average pooling: the float64 oracle.

x is (N, C, H, W); a window of kernel (kh, kw), stride (sh, sw) and dilation (dh, dw) reads
xpad[n, c, i·sh + p·dh, j·sw + q·dw]; pads are [top, left, bottom, right].
"""

from __future__ import annotations

import numpy as np

from nutshell.spec import shapes
from nutshell.spec.reference import tracked
from nutshell.spec.reference.tracked import T
from nutshell.spec.signatures import Impl


def _grid(x_shape, kernel, stride, pads, dilation, ceil_mode: bool) -> tuple[tuple[int, int], tuple[int, int]]:
    """((oH, oW), (eh, ew)): the output size and how far the last window reaches past the end
    padding (only in ceil mode; those positions are not part of the explicitly padded input)."""
    out = shapes.pool2d_out_shape(x_shape, kernel, stride, pads, dilation, ceil_mode)[2:]
    extra = []
    for a in (0, 1):
        reach = shapes.window_reach(out[a], kernel[a], stride[a], dilation[a])
        extra.append(max(reach - (x_shape[2 + a] + pads[a] + pads[a + 2]), 0))
    return out, tuple(extra)


def _padded(x: T, kernel, stride, pads, dilation, ceil_mode: bool, value: float) -> tuple[T, tuple[int, int]]:
    """(xpad, (oH, oW)): x padded with ``value`` on the explicit pads and the ceil-mode reach."""
    out, (eh, ew) = _grid(x.shape, kernel, stride, pads, dilation, ceil_mode)
    widths = ((0, 0), (0, 0), (pads[0], pads[2] + eh), (pads[1], pads[3] + ew))
    return tracked.pad(x, widths, value), out


def _crop(g: T, x_shape, pads) -> T:
    """The input pixels of a padded grid."""
    h, w = x_shape[2:]
    return g[:, :, pads[0]:pads[0] + h, pads[1]:pads[1] + w]


def max_pool2d(x: T, kernel, stride, pads, dilation, ceil_mode: bool) -> tuple[T, np.ndarray]:
    """(y, first): y = the max of each window of x padded with −inf (exact); first = the winner's
    index in row-major window order (p·kw + q). Ties go to the first; a NaN wins and propagates."""
    xp, (oh, ow) = _padded(x, kernel, stride, pads, dilation, ceil_mode, -np.inf)
    n, c = x.shape[:2]
    cols = tracked.windows(xp, kernel, stride, dilation, (oh, ow))
    flat = cols.reshape(n, c, kernel[0] * kernel[1], oh, ow)  # (N, C, kh*kw, oH, oW)
    return flat.max(axis=2), np.argmax(flat.v, axis=2)


def max_pool2d_grad(x: T, gy: T, kernel, stride, pads, dilation, ceil_mode: bool) -> T:
    """gx[pixel] = Σ over the windows whose first max is that pixel of gy[window].

    Only the first max of a window (row-major order) receives its gy; overlapping windows
    (kernel > stride) that pick the same pixel add up.
    """
    xp, _ = _padded(x, kernel, stride, pads, dilation, ceil_mode, -np.inf)
    _, first = max_pool2d(x, kernel, stride, pads, dilation, ceil_mode)
    n, c, oh, ow = gy.shape
    mask = np.arange(kernel[0] * kernel[1])[:, None, None] == first[:, :, None]  # (N, C, kh*kw, oH, oW)
    gcols = tracked.where(mask, T(gy.v[:, :, None], gy.e[:, :, None], f=gy.f[:, :, None]), 0.0)
    gcols = gcols.reshape(n, c, *kernel, oh, ow)
    return _crop(tracked.scatter_windows(gcols, xp.shape[2:], stride, dilation), x.shape, pads)


def _divisor(x_shape, kernel, stride, pads, ceil_mode: bool, count_include_pad: bool) -> np.ndarray:
    """(oH, oW) window sizes: the positions inside the input, or with count_include_pad inside
    the explicitly padded input (never the ceil-mode reach beyond it)."""
    h, w = x_shape[2:]
    out, (eh, ew) = _grid(x_shape, kernel, stride, pads, (1, 1), ceil_mode)
    if count_include_pad:
        explicit = np.ones((h + pads[0] + pads[2], w + pads[1] + pads[3]))
    else:
        explicit = np.pad(np.ones((h, w)), ((pads[0], pads[2]), (pads[1], pads[3])))
    counted = T(np.pad(explicit, ((0, eh), (0, ew))))  # 1 where a position counts
    return tracked.windows(counted, kernel, stride, (1, 1), out).v.sum(axis=(0, 1))


def avg_pool2d(x: T, kernel, stride, pads, ceil_mode: bool, count_include_pad: bool) -> T:
    """y = (Σ over the window of xpad) / divisor, padding 0: a kh·kw-term sum and a division."""
    xp, out = _padded(x, kernel, stride, pads, (1, 1), ceil_mode, 0.0)
    window_sum = tracked.windows(xp, kernel, stride, (1, 1), out).sum(axis=(2, 3))
    return window_sum / T(_divisor(x.shape, kernel, stride, pads, ceil_mode, count_include_pad))


def avg_pool2d_grad(x: T, gy: T, kernel, stride, pads, ceil_mode: bool, count_include_pad: bool) -> T:
    """gx[pixel] = Σ over the windows holding the pixel of gy[window] / divisor[window]; padding
    positions receive nothing. One division per window, then a sum over the covering windows."""
    n, c, oh, ow = gy.shape
    xp, _ = _padded(x, kernel, stride, pads, (1, 1), ceil_mode, 0.0)
    share = gy / T(_divisor(x.shape, kernel, stride, pads, ceil_mode, count_include_pad))  # (N, C, oH, oW)
    gcols = T(np.broadcast_to(share.v[:, :, None, None], (n, c, *kernel, oh, ow)).copy(), share.e[:, :, None, None],
              f=share.f[:, :, None, None])
    return _crop(tracked.scatter_windows(gcols, xp.shape[2:], stride, (1, 1)), x.shape, pads)


def global_avg_pool2d(x: T) -> T:
    """y[n, c, 0, 0] = (Σ_{h, w} x[n, c, h, w]) / (H·W)."""
    return x.mean(axis=(2, 3), keepdims=True)


def global_avg_pool2d_grad(x: T, gy: T) -> T:
    """gx[n, c, h, w] = gy[n, c, 0, 0] / (H·W): one division, spread over the plane."""
    share = gy / T.const(float(x.shape[2] * x.shape[3]))  # (N, C, 1, 1)
    return T(np.broadcast_to(share.v, x.shape).copy(), share.e, f=share.f)


def _max_attrs(a: dict) -> tuple:
    return a["kernel"], a["stride"], a["pads"], a["dilation"], a["ceil_mode"]


def _avg_attrs(a: dict) -> tuple:
    return a["kernel"], a["stride"], a["pads"], a["ceil_mode"], a["count_include_pad"]


CONCEPTS: dict[str, Impl] = {
    "max_pool2d": Impl(lambda i, a: {"y": max_pool2d(i["x"], *_max_attrs(a))[0]},
                       lambda i, g, a: {"x": max_pool2d_grad(i["x"], g["y"], *_max_attrs(a))}),
    "avg_pool2d": Impl(lambda i, a: {"y": avg_pool2d(i["x"], *_avg_attrs(a))},
                       lambda i, g, a: {"x": avg_pool2d_grad(i["x"], g["y"], *_avg_attrs(a))}),
    "global_avg_pool2d": Impl(lambda i, a: {"y": global_avg_pool2d(i["x"])},
                              lambda i, g, a: {"x": global_avg_pool2d_grad(i["x"], g["y"])}),
}
