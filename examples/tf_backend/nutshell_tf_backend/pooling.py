"""2-D pooling from explicit windows, with the spec's padding, ceil-mode and divisor rules.

``tf.nn.max_pool2d`` is not used: it has no dilation, no −inf border of its own, no float64
kernel on the CPU (it returns float32) and no promise about ties or NaN. Every window is
gathered instead as a trailing axis of strided slices, so the set of windows is exactly the
one :func:`nutshell.spec.shapes.pool_out` describes, the ceil-mode drop rule included, and the
reduction over that axis is written out.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from nutshell.spec import shapes
from nutshell.spec.signatures import Impl
from nutshell_tf_backend.conv import pad2d


def windows(x: tf.Tensor, kernel: Sequence[int], stride: Sequence[int], pads: Sequence[int],
            dilation: Sequence[int], ceil_mode: bool, value: float) -> tf.Tensor:
    """Every pooling window of x as a trailing axis: (N, C, H, W) -> (N, C, oH, oW, kh·kw).

    Tap (p, q) of window (i, j) is xpad[n, c, i·sh + p·dh, j·sw + q·dw], taps in row-major
    order; xpad is x bordered with ``value``: the explicit pads before, and after as far as the
    last window reaches (trailing pixels that no window reaches are never read).
    """
    out, ends = [], []
    for axis in (0, 1):
        n, k, s, d = x.shape[2 + axis], kernel[axis], stride[axis], dilation[axis]
        o = shapes.pool_out(n, k, s, pads[axis], pads[axis + 2], d, ceil_mode)
        out.append(o)
        ends.append(max(0, shapes.window_reach(o, k, s, d) - n - pads[axis]))
    xp = pad2d(x, [pads[0], pads[1], ends[0], ends[1]], value)
    (kh, kw), (sh, sw), (dh, dw), (oh, ow) = kernel, stride, dilation, out
    taps = [xp[:, :, p * dh:p * dh + (oh - 1) * sh + 1:sh, q * dw:q * dw + (ow - 1) * sw + 1:sw]
            for p in range(kh) for q in range(kw)]                # kh·kw × (N, C, oH, oW)
    return tf.stack(taps, axis=-1)                                # (N, C, oH, oW, kh·kw)


def first_max(z: tf.Tensor) -> tf.Tensor:
    """The maximum over the last axis, as the value of the element that wins.

    The winner is the first maximum in index order, or the first NaN when there is one (NaN
    propagates); it is gathered, so only it receives gradient. (..., k) -> (...).
    """
    k = z.shape[-1]
    zs = tf.stop_gradient(z)
    nan = tf.math.is_nan(zs)
    hit = tf.where(tf.reduce_any(nan, axis=-1, keepdims=True), nan, zs == tf.reduce_max(zs, axis=-1, keepdims=True))
    first = tf.reduce_min(tf.where(hit, tf.range(k), k), axis=-1)   # (...)
    return tf.gather(z, first, axis=-1, batch_dims=z.shape.rank - 1)


def max_pool2d(x: tf.Tensor, kernel: Sequence[int], stride: Sequence[int], pads: Sequence[int] = (0, 0, 0, 0),
               dilation: Sequence[int] = (1, 1), ceil_mode: bool = False) -> tf.Tensor:
    """y[n,c,i,j] = max_{p,q} xpad[n, c, i·sh + p·dh, j·sw + q·dw], xpad bordered with −inf.

    Ties go to the first element in row-major window order, NaN propagates; overlapping
    windows accumulate their gradients in the slices' backward pass.
    """
    return first_max(windows(x, kernel, stride, pads, dilation, ceil_mode, float("-inf")))


def _counts(out: int, k: int, s: int, lo: int, hi: int) -> np.ndarray:
    """Per window along one axis, how many of its k positions fall in [lo, hi): min(i·s + k, hi) − max(i·s, lo)."""
    start = np.arange(out) * s
    return np.minimum(start + k, hi) - np.maximum(start, lo)


def avg_pool2d(x: tf.Tensor, kernel: Sequence[int], stride: Sequence[int], pads: Sequence[int] = (0, 0, 0, 0),
               ceil_mode: bool = False, count_include_pad: bool = False) -> tf.Tensor:
    """y = (Σ of the window over the zero-bordered input) / divisor.

    divisor = the window positions inside the input [p_begin, p_begin + n) on each axis, or,
    with count_include_pad, inside the explicitly padded input [0, n + p_begin + p_end);
    positions a ceil-mode window reaches beyond that never count.
    """
    total = tf.reduce_sum(windows(x, kernel, stride, pads, (1, 1), ceil_mode, 0.0), axis=-1)   # (N, C, oH, oW)
    per_axis = []
    for axis in (0, 1):
        n, begin, end = x.shape[2 + axis], pads[axis], pads[axis + 2]
        lo, hi = (0, n + begin + end) if count_include_pad else (begin, n + begin)
        per_axis.append(_counts(total.shape[2 + axis], kernel[axis], stride[axis], lo, hi))
    divisor = np.outer(per_axis[0], per_axis[1])                  # (oH, oW), small exact integers
    return total / tf.constant(divisor, dtype=x.dtype)


def global_avg_pool2d(x: tf.Tensor) -> tf.Tensor:
    """y[n, c] = mean of x[n, c] over H and W: (N, C, H, W) -> (N, C, 1, 1)."""
    return tf.reduce_mean(x, axis=[2, 3], keepdims=True)


# concept -> Impl(forward(inputs, attrs)); no vjp: tf.GradientTape differentiates the forward (backend.py)
CONCEPTS: dict[str, Impl] = {
    "max_pool2d": Impl(lambda i, a: {"y": max_pool2d(i["x"], **a)}),
    "avg_pool2d": Impl(lambda i, a: {"y": avg_pool2d(i["x"], **a)}),
    "global_avg_pool2d": Impl(lambda i, a: {"y": global_avg_pool2d(i["x"])}),
}
