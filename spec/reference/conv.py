"""2-D convolution three ways (conv2d, convolve2d, conv2d_fft): the float64 oracle.

Notation: x (N, C, H, W), w (O, C/G, kh, kw), b (O,), G groups of Cg = C/G input and
Og = O/G output channels, stride (sh, sw), dilation (dh, dw), pads [top, left, bottom, right],
xpad the zero-padded input (Hp, Wp).
"""

from __future__ import annotations

import math

import numpy as np

from nutshell.spec import shapes
from nutshell.spec.reference import tracked
from nutshell.spec.reference.tracked import T
from nutshell.spec.signatures import Impl

FFT_C = 10.0
"""c of the FFT error model ‖ŷ − y‖₂ ≤ c·log2(P)·u·‖x‖₂·‖w‖₂ (see :func:`conv2d_fft`)."""


def _pad(x: T, pads) -> T:
    """Zero padding of the two spatial axes, pads = [top, left, bottom, right] (exact)."""
    t, l, bt, r = pads
    return tracked.pad(x, ((0, 0), (0, 0), (t, bt), (l, r)))


def _cols(x: T, w_shape, stride, pads, dilation, groups: int) -> T:
    """The windows of xpad, per group: (N, G, Cg, kh, kw, oH, oW)."""
    n, c = x.shape[:2]
    _, _, oh, ow = shapes.conv2d_out_shape(x.shape, w_shape, stride, pads, dilation)
    cols = tracked.windows(_pad(x, pads), w_shape[2:], stride, dilation, (oh, ow))  # (N, C, kh, kw, oH, oW)
    return cols.reshape(n, groups, c // groups, *cols.shape[2:])


def conv2d(x: T, w: T, b: T | None, stride=(1, 1), pads=(0, 0, 0, 0), dilation=(1, 1), groups: int = 1) -> T:
    """Cross-correlation (the kernel is not flipped):

    y[n, o, i, j] = b[o] + Σ_{c, p, q} w[o, c, p, q] · xpad[n, g·Cg + c, i·sh + p·dh, j·sw + q·dw],
    g = o ÷ Og: one dot product of Cg·kh·kw + 1 terms per output.
    """
    o = w.shape[0]
    cols = _cols(x, w.shape, stride, pads, dilation, groups)
    wg = w.reshape(groups, o // groups, *w.shape[1:])  # (G, Og, Cg, kh, kw)
    bias = None if b is None else b.reshape(groups, o // groups, 1, 1)
    y = tracked.einsum("ngcpqij,gocpq->ngoij", cols, wg, bias)  # (N, G, Og, oH, oW)
    return y.reshape(x.shape[0], o, *y.shape[3:])


def _input_grad(gy: T, w: T, x_shape, stride, pads, dilation, groups: int) -> T:
    """gx: every window's gy·w scattered back onto the pixels it read,

    gxpad[n, g·Cg + c, y, x] = Σ_{o, i, j, p, q : y = i·sh + p·dh, x = j·sw + q·dw} gy[n, g·Og + o, i, j]·w[o, c, p, q].

    That is a stride-1 correlation of the zero-stuffed gy (gy[i, j] placed at (i·sh, j·sw)),
    padded by d·(k − 1), with the kernel flipped on both axes and its two channel axes swapped
    (the transposed convolution); the padding rows are then cropped away. Bounded as a dot
    product of Og·kh·kw terms, whatever order a backend sums them in.
    """
    n, c, h, wd = x_shape
    o, cg, kh, kw = w.shape
    (sh, sw), (dh, dw) = stride, dilation
    oh, ow = gy.shape[2:]
    stuffed = tracked.zeros((n, o, sh * (oh - 1) + 1, sw * (ow - 1) + 1))
    stuffed[:, :, ::sh, ::sw] = gy
    wt = w.reshape(groups, o // groups, cg, kh, kw).transpose(0, 2, 1, 3, 4)  # (G, Cg, Og, kh, kw)
    wt = wt.reshape(c, o // groups, kh, kw).flip((2, 3))
    ph, pw = dh * (kh - 1), dw * (kw - 1)
    full = conv2d(stuffed, wt, None, (1, 1), (ph, pw, ph, pw), dilation, groups)  # (N, C, ≤ Hp, ≤ Wp)
    hp, wp = h + pads[0] + pads[2], wd + pads[1] + pads[3]
    full = tracked.pad(full, ((0, 0), (0, 0), (0, hp - full.shape[2]), (0, wp - full.shape[3])))
    return full[:, :, pads[0]:pads[0] + h, pads[1]:pads[1] + wd]


def conv2d_grad(x: T, w: T, b: T | None, gy: T, stride=(1, 1), pads=(0, 0, 0, 0), dilation=(1, 1),
                groups: int = 1) -> dict[str, T]:
    """The vjp of conv2d:

    * gx: see :func:`_input_grad` (gy·w scattered back through the windows);
    * gw[o, c, p, q] = Σ_{n, i, j} gy[n, o, i, j]·xpad[n, g·Cg + c, i·sh + p·dh, j·sw + q·dw],
      a dot product of N·oH·oW terms over the forward's windows;
    * gb[o] = Σ_{n, i, j} gy[n, o, i, j].
    """
    n, o = gy.shape[:2]
    cols = _cols(x, w.shape, stride, pads, dilation, groups)
    gyg = gy.reshape(n, groups, o // groups, *gy.shape[2:])  # (N, G, Og, oH, oW)
    gw = tracked.einsum("ngoij,ngcpqij->gocpq", gyg, cols).reshape(*w.shape)
    g = {"x": _input_grad(gy, w, x.shape, stride, pads, dilation, groups), "w": gw}
    if b is not None:
        g["b"] = gy.sum(axis=(0, 2, 3))
    return g


def convolve2d(x: T, w: T, b: T | None, **attrs) -> T:
    """True convolution: convolve2d(x, w) = conv2d(x, w[:, :, ::−1, ::−1])."""
    return conv2d(x, w.flip((2, 3)), b, **attrs)


def convolve2d_grad(x: T, w: T, b: T | None, gy: T, **attrs) -> dict[str, T]:
    """conv2d's vjp with the flipped kernel; the kernel gradient is flipped back."""
    g = conv2d_grad(x, w.flip((2, 3)), b, gy, **attrs)
    g["w"] = g["w"].flip((2, 3))
    return g


# --- conv2d through the convolution theorem ----------------------------------------------------

def _fft_log2(x_shape, w_shape, pads, dilation) -> float:
    """log2(P), P = Π over both axes of (padded input + dilated kernel − 1): the transform size
    at which the circular convolution equals the linear one; at least 1, so no bound vanishes."""
    size = [x_shape[2 + a] + pads[a] + pads[a + 2] + dilation[a] * (w_shape[2 + a] - 1) for a in (0, 1)]
    return max(math.log2(size[0] * size[1]), 1.0)


def _l2(a: np.ndarray, *lead: int) -> np.ndarray:
    """‖·‖₂ of each of the ``lead`` leading blocks of a: shape ``lead``."""
    rest = a.size // max(math.prod(lead), 1)
    return np.sqrt((a * a).reshape(*lead, rest).sum(-1))


def _spread(e: np.ndarray, per: int, axis: int) -> np.ndarray:
    """A bound per group repeated for each of the group's ``per`` channels."""
    return np.repeat(e, per, axis=axis)


def conv2d_fft(x: T, w: T, b: T | None, stride=(1, 1), pads=(0, 0, 0, 0), dilation=(1, 1),
               groups: int = 1) -> T:
    """conv2d through the convolution theorem: the value is conv2d's, the bound the FFT model's.

    A backend transforms the zero-padded plane and the flipped, dilated kernel at size P (large
    enough that the circular convolution is the linear one), multiplies, transforms back and keeps
    every stride-th sample. The FFT is normwise stable (Higham, Accuracy and Stability of
    Numerical Algorithms, ch. 24: ‖fl(Fx) − Fx‖₂ ≤ log2(P)·η·‖Fx‖₂/(1 − log2(P)·η), η ≈ 5.7u),
    and carrying that through the two forward transforms, the pointwise product and the inverse
    transform gives, for each output plane, the model ‖ŷ − y‖₂ ≤ c·log2(P)·u·‖x‖₂·‖w‖₂. An
    element's error is at most its plane's 2-norm error, so

    e[n, o, :, :] = c·log2(P)·‖xpad[n, group of o]‖₂·‖w[o]‖₂ (+ |b[o]| + |y| with a bias: the
    bias counted as one more term, its addition rounded once), c = FFT_C; inputs are exact.
    Transformed in float32 and rounded once into a low-precision format, the same model holds in
    float32's u, plus one rounding |y| into the storage format.
    """
    y = conv2d(x, w, b, stride, pads, dilation, groups)
    n, o = y.shape[:2]
    xn = _spread(_l2(x.v, n, groups), o // groups, 1)  # (N, O)
    e = FFT_C * _fft_log2(x.shape, w.shape, pads, dilation) * xn * _l2(w.v, o)
    e = e[:, :, None, None] + (0.0 if b is None else np.abs(b.v)[:, None, None] + np.abs(y.v))
    return T(y.v, e, np.abs(y.v), e)


def conv2d_fft_grad(x: T, w: T, b: T | None, gy: T, stride=(1, 1), pads=(0, 0, 0, 0), dilation=(1, 1),
                    groups: int = 1) -> dict[str, T]:
    """conv2d's vjp values with the FFT model's bounds (the gradients are convolutions too):

    * gx[n, c] = Σ_{o in c's group} gy[n, o] ⋆ w[o, c] (a transposed convolution): by the same
      model and Cauchy–Schwarz over o, e[n, c, :, :] = c·log2(P)·‖gy[n, group]‖₂·‖w[group]‖₂;
    * gw[o] = Σ_n gy[n, o] ⋆ xpad[n, group of o]: e[o] = c·log2(P)·‖gy[:, o]‖₂·‖xpad[:, group]‖₂
      (the 2-norms over the batch too);
    * gb[o] = Σ gy[:, o] as in conv2d (no transform).

    P is the forward's transform size, which also holds the zero-stuffed gy and the correlation.
    """
    g = conv2d_grad(x, w, b, gy, stride, pads, dilation, groups)
    n, (o, cg) = x.shape[0], w.shape[:2]
    c_log = FFT_C * _fft_log2(x.shape, w.shape, pads, dilation)
    gx_e = c_log * _l2(gy.v, n, groups) * _l2(w.v, groups)  # (N, G)
    g["x"] = T(g["x"].v, _spread(gx_e, cg, 1)[:, :, None, None])
    gy_o = _l2(gy.v.transpose(1, 0, 2, 3), o)  # (O,)
    x_g = _spread(_l2(x.v.transpose(1, 0, 2, 3), groups), o // groups, 0)  # (O,)
    g["w"] = T(g["w"].v, (c_log * gy_o * x_g)[:, None, None, None])
    return g


def _adapters(f, grad) -> Impl:
    """The concept entry (forward, vjp) of one convolution."""
    def fwd(i: dict, a: dict) -> dict:
        return {"y": f(i["x"], i["w"], i.get("b"), **a)}

    def back(i: dict, g: dict, a: dict) -> dict:
        return grad(i["x"], i["w"], i.get("b"), g["y"], **a)

    return Impl(fwd, back)


CONCEPTS: dict[str, Impl] = {
    "conv2d": _adapters(conv2d, conv2d_grad),
    "convolve2d": _adapters(convolve2d, convolve2d_grad),
    "conv2d_fft": _adapters(conv2d_fft, conv2d_fft_grad),
}
