"""2-D convolutions in NCHW: cross-correlation, true convolution, and the FFT route to the same result.

TensorFlow's CPU convolution wants NHWC input and HWIO filters, so ``_conv`` transposes on the
way in and out. Two CPU gaps shape the rest: no float64 gradient for a grouped convolution
(groups run one at a time) and no gradient at all for a dilated one in float64 (the kernel is
spread with zeros instead, :func:`dilate_kernel`). A strided 1×1 convolution runs unstrided on a
sliced input (:func:`unstride`): TensorFlow's oneDNN path gets its filter gradient wrong.
"""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf

from nutshell.spec import shapes
from nutshell.spec.signatures import Impl


def pad2d(x: tf.Tensor, pads: Sequence[int], value: float = 0.0) -> tf.Tensor:
    """Border the last two axes of (N, C, H, W) with ``value``, pads = [top, left, bottom, right]."""
    top, left, bottom, right = pads
    if not any(pads):
        return x
    return tf.pad(x, [[0, 0], [0, 0], [top, bottom], [left, right]], constant_values=value)


def _conv(x: tf.Tensor, w: tf.Tensor, stride: Sequence[int]) -> tf.Tensor:
    """Unpadded, ungrouped, undilated cross-correlation: (N, C, H, W) ⋆ (O, C, kh, kw) -> (N, O, oH, oW).

    An empty batch is answered here: TensorFlow's convolution returns it with the input's shape.
    Along an axis where the kernel is 1 wide, a stride s only picks every s-th pixel, so the input
    is sliced there (``unstride``) and the convolution runs with stride 1 on that axis.
    """
    if x.shape[0] == 0:
        _, _, oh, ow = shapes.conv2d_out_shape(x.shape, w.shape, stride, (0, 0, 0, 0), (1, 1))
        return tf.zeros((0, w.shape[0], oh, ow), x.dtype)
    x, stride = unstride(x, w.shape[2:], stride)
    y = tf.nn.conv2d(tf.transpose(x, [0, 2, 3, 1]),               # (N, H, W, C)
                     tf.transpose(w, [2, 3, 1, 0]),               # (kh, kw, C, O)
                     strides=[1, *stride, 1], padding="VALID")
    return tf.transpose(y, [0, 3, 1, 2])                          # (N, O, oH, oW)


def unstride(x: tf.Tensor, kernel: Sequence[int], stride: Sequence[int]) -> tuple[tf.Tensor, tuple[int, int]]:
    """x[:, :, ::sh, ::sw] and stride 1 along each axis where the kernel is 1 wide: the same output.

    A kernel 1 wide with stride s reads input rows 0, s, 2s, …, ⌈H/s⌉ of them, which is what the
    slice keeps. It keeps TensorFlow 2.21's oneDNN convolution (on by default on CPUs with AVX-512
    VNNI, BF16 or AMX, or with TF_ENABLE_ONEDNN_OPTS=1) off a path whose filter gradient is wrong,
    a different one from call to call: a strided 1×1 convolution. ``nutshell hunt -b tf --concept
    conv2d`` found it; the spec keeps the case as conv2d's vector ``found_tf_2026_12_04_1``. The
    slice's gradient is TensorFlow's own scatter, outside oneDNN.
    """
    steps = [s if k == 1 else 1 for k, s in zip(kernel, stride, strict=True)]
    if steps == [1, 1]:
        return x, tuple(stride)
    return x[:, :, ::steps[0], ::steps[1]], tuple(s // t for s, t in zip(stride, steps, strict=True))


def conv2d(x: tf.Tensor, w: tf.Tensor, b: tf.Tensor | None = None, stride: Sequence[int] = (1, 1),
           pads: Sequence[int] = (0, 0, 0, 0), dilation: Sequence[int] = (1, 1), groups: int = 1) -> tf.Tensor:
    """y[n,o,i,j] = b[o] + Σ_{c,p,q} w[o,c,p,q] · xpad[n, g·C/G + c, i·sh + p·dh, j·sw + q·dw].

    Cross-correlation (the kernel is not flipped); group g sees input channels g·C/G … and
    produces output channels g·O/G …, so the groups are the matching slices of x and w.
    """
    xs = tf.split(pad2d(x, pads), groups, axis=1)                 # G × (N, C/G, Hp, Wp)
    ws = tf.split(dilate_kernel(w, dilation), groups, axis=0)     # G × (O/G, C/G, kh', kw')
    y = tf.concat([_conv(xg, wg, stride) for xg, wg in zip(xs, ws, strict=True)], axis=1)
    return y if b is None else y + b[:, None, None]


def convolve2d(x: tf.Tensor, w: tf.Tensor, b: tf.Tensor | None = None, stride: Sequence[int] = (1, 1),
               pads: Sequence[int] = (0, 0, 0, 0), dilation: Sequence[int] = (1, 1), groups: int = 1) -> tf.Tensor:
    """True convolution: conv2d(x, w[:, :, ::−1, ::−1])."""
    return conv2d(x, tf.reverse(w, axis=[2, 3]), b, stride, pads, dilation, groups)


def dilate_kernel(w: tf.Tensor, dilation: Sequence[int]) -> tf.Tensor:
    """Spread the taps d apart with zeros between them: (O, Cg, kh, kw) -> (O, Cg, dh(kh−1)+1, dw(kw−1)+1)."""
    dh, dw = dilation
    if (dh, dw) == (1, 1):
        return w
    o, cg, kh, kw = w.shape
    spread = tf.pad(w[:, :, :, None, :, None],
                    [[0, 0], [0, 0], [0, 0], [0, dh - 1], [0, 0], [0, dw - 1]])   # (O, Cg, kh, dh, kw, dw)
    wd = tf.reshape(spread, (o, cg, kh * dh, kw * dw))
    return wd[:, :, :dh * (kh - 1) + 1, :dw * (kw - 1) + 1]


def conv2d_fft(x: tf.Tensor, w: tf.Tensor, b: tf.Tensor | None = None, stride: Sequence[int] = (1, 1),
               pads: Sequence[int] = (0, 0, 0, 0), dilation: Sequence[int] = (1, 1), groups: int = 1) -> tf.Tensor:
    """conv2d through the convolution theorem.

    With xp the zero-padded input (Hp × Wp) and k the dilated kernel (kh × kw), the full linear
    convolution xp ∗ flip(k) is (Hp + kh − 1) × (Wp + kw − 1); real FFTs of both, zero-padded
    to that size, make the circular product equal to it. Its entry
    [i + kh − 1, j + kw − 1] is Σ_{p,q} xp[i + p, j + q] k[p, q], the cross-correlation, and
    the stride subsamples it. Channels contract inside each group in the frequency domain.
    The transforms keep float64 (rfft2d of float64 is complex128). TensorFlow's FFTs take float32
    and float64 only: float16 and bfloat16 inputs are widened to float32 (exactly) and the result
    rounded once into their dtype.
    """
    if x.dtype in (tf.float16, tf.bfloat16):
        wide = [None if t is None else tf.cast(t, tf.float32) for t in (x, w, b)]
        return tf.cast(conv2d_fft(*wide, stride=stride, pads=pads, dilation=dilation, groups=groups), x.dtype)
    xp = pad2d(x, pads)                                           # (N, C, Hp, Wp)
    wd = dilate_kernel(w, dilation)                               # (O, Cg, kh, kw)
    n, _, hp, wp = xp.shape
    o, cg, kh, kw = wd.shape
    size = [hp + kh - 1, wp + kw - 1]                             # (P1, P2)
    xf = tf.signal.rfft2d(pad2d(xp, (0, 0, kh - 1, kw - 1)))      # (N, C, P1, F)
    wf = tf.signal.rfft2d(pad2d(tf.reverse(wd, axis=[2, 3]), (0, 0, hp - 1, wp - 1)))   # (O, Cg, P1, F)
    xf = tf.reshape(xf, (n, groups, cg, *xf.shape[-2:]))          # (N, G, Cg, P1, F)
    wf = tf.reshape(wf, (groups, o // groups, cg, *wf.shape[-2:]))   # (G, O/G, Cg, P1, F)
    yf = tf.einsum("ngcuv,gocuv->ngouv", xf, wf)                  # (N, G, O/G, P1, F)
    full = tf.signal.irfft2d(tf.reshape(yf, (n, o, *yf.shape[-2:])), fft_length=size)   # (N, O, P1, P2)
    y = full[:, :, kh - 1:hp:stride[0], kw - 1:wp:stride[1]]      # (N, O, oH, oW)
    return y if b is None else y + b[:, None, None]


# concept -> Impl(forward(inputs, attrs)); no vjp: tf.GradientTape differentiates the forward (backend.py)
CONCEPTS: dict[str, Impl] = {
    "conv2d": Impl(lambda i, a: {"y": conv2d(i["x"], i["w"], i.get("b"), **a)}),
    "convolve2d": Impl(lambda i, a: {"y": convolve2d(i["x"], i["w"], i.get("b"), **a)}),
    "conv2d_fft": Impl(lambda i, a: {"y": conv2d_fft(i["x"], i["w"], i.get("b"), **a)}),
}
