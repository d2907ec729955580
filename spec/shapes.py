"""Window arithmetic shared by every backend and the reference (backend-neutral plumbing).

Only integer shape arithmetic lives here; every numerical operation belongs to a backend.
"""

from __future__ import annotations

import math


def conv_out(n: int, k: int, s: int, p_begin: int, p_end: int, d: int = 1) -> int:
    """Output length of a convolution window sweep (floor rule).

    out = ⌊(n + p_begin + p_end − d·(k − 1) − 1) / s⌋ + 1; it is < 1 when the dilated kernel
    is larger than the padded input.
    """
    return (n + p_begin + p_end - d * (k - 1) - 1) // s + 1


def pool_out(n: int, k: int, s: int, p_begin: int, p_end: int, d: int = 1, ceil: bool = False) -> int:
    """Output length of a pooling window sweep.

    Floor mode is :func:`conv_out`. Ceil mode rounds the division up, then drops the last
    window when it would start inside the end padding, i.e. when (out − 1)·s ≥ n + p_begin
    (the rule ONNX and PyTorch share).
    """
    if not ceil:
        return conv_out(n, k, s, p_begin, p_end, d)
    out = -(-(n + p_begin + p_end - d * (k - 1) - 1) // s) + 1
    if (out - 1) * s >= n + p_begin:
        out -= 1
    return out


def window_reach(out: int, k: int, s: int, d: int = 1) -> int:
    """Length of the (padded) axis that ``out`` windows of a sweep span, from the first tap of the
    first window to the last tap of the last one.

    Window i starts at i·s and its taps lie d apart, so the last window ends at
    reach = (out − 1)·s + d·(k − 1) + 1. In floor mode reach ≤ n + p_begin + p_end; in ceil mode
    (:func:`pool_out`) the last window may run past the end padding. A backend that sweeps in floor
    mode over an explicitly padded input therefore pads the end by reach − (n + p_begin): more
    than p_end when ceil mode adds a window, less (a crop) when trailing positions lie in no window.
    """
    return (out - 1) * s + d * (k - 1) + 1


def same_pads(n: int, k: int, s: int, d: int = 1, upper: bool = True) -> tuple[int, int]:
    """(begin, end) padding of ONNX auto_pad SAME_UPPER / SAME_LOWER, so that out = ⌈n / s⌉.

    total = max(k_eff − s, 0) if n % s == 0 else max(k_eff − n % s, 0), with
    k_eff = d·(k − 1) + 1; the odd pixel goes to the end (UPPER) or the start (LOWER).
    """
    k_eff = d * (k - 1) + 1
    total = max(k_eff - s, 0) if n % s == 0 else max(k_eff - n % s, 0)
    small, big = total // 2, total - total // 2
    return (small, big) if upper else (big, small)


def conv2d_out_shape(x_shape, w_shape, stride, pads, dilation) -> tuple[int, int, int, int]:
    """(N, O, oH, oW) of conv2d for x (N, C, H, W) and w (O, C/g, kh, kw)."""
    n, _, h, w = x_shape
    o, _, kh, kw = w_shape
    oh = conv_out(h, kh, stride[0], pads[0], pads[2], dilation[0])
    ow = conv_out(w, kw, stride[1], pads[1], pads[3], dilation[1])
    return n, o, oh, ow


def pool2d_out_shape(x_shape, kernel, stride, pads, dilation=(1, 1), ceil=False):
    """(N, C, oH, oW) of a 2-D pooling over x (N, C, H, W)."""
    n, c, h, w = x_shape
    oh = pool_out(h, kernel[0], stride[0], pads[0], pads[2], dilation[0], ceil)
    ow = pool_out(w, kernel[1], stride[1], pads[1], pads[3], dilation[1], ceil)
    return n, c, oh, ow


def lrn_window(c: int, size: int, channels: int) -> tuple[int, int]:
    """Channel range [lo, hi) summed by ONNX LRN around channel c.

    lo = max(0, c − ⌊(size − 1)/2⌋), hi = min(C, c + ⌈(size − 1)/2⌉ + 1).
    """
    lo = max(0, c - (size - 1) // 2)
    hi = min(channels, c + math.ceil((size - 1) / 2) + 1)
    return lo, hi
