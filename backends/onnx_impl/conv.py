"""Convolutions as ONNX graphs: conv2d, convolve2d and conv2d_fft, forward and vjp.

conv2d is ONNX Conv (a cross-correlation; pads [top, left, bottom, right] are ONNX's order).
Its vjp, for y = conv(x, w) with stride s, pads (p_b, p_e), dilation d, groups G:

* gx = ConvTranspose(gy, w) with the same s, pads, d and G, and
  output_padding = (H + p_b + p_e − d·(k − 1) − 1) mod s: the rows the forward never reached;
  with s = 1, G = 1 and no pad beyond d·(k − 1), the same sums as Conv(gy, flip(w)ᵀ) padded by
  d·(k − 1) − p, which ONNX Runtime spreads over its threads better;
* gw[o, c, p, q] = Σ_{n,i,j} gy[n, o, i, j] · xpad[n, g·C/G + c, i·s + p·d, j·s + q·d]: a Conv
  whose batch is C/G, whose channels are (G, N), whose kernel is gyᵀ, with the roles of stride
  and dilation swapped and group = G; it can come out larger than k, so it is cropped;
* gb = Σ_{n,i,j} gy.

With one group, stride 1, a kernel larger than 1×1 and at least 8 input channels, conv2d and gw
share one im2col matrix, cols[(n, i, j), (p, q, c)] = xpad[n, c, i + p·d, j + q·d] (x laid out
channels-last, one Slice per kernel tap): y = cols · W and gw = gyᵀ · cols are one large matrix
product each, and the backward graph reads cols from the forward session. ONNX Runtime's own Conv
and the swapped-roles Conv (a product only kh·kw columns wide per channel) took twice as long
there on two threads; with fewer channels building cols costs more than it saves.

A pointwise conv2d (1×1 kernel, stride 1, no pads, one group) is a matrix product over the
channels at every pixel, and so are its gradients: gx = Conv(gy, wᵀ) with wᵀ = w as (C, O, 1, 1),
and gw[o, c] = Σ_{n,l} gy[n, o, l] · x[n, c, l] over the pixels l, one Einsum (ONNX Runtime's
swapped-roles Conv is several times slower there).

conv2d_fft works in the frequency domain throughout (see :func:`_fft_conv2d`), so it runs in
float64 too, where ONNX Runtime has no Conv kernel.
"""

from __future__ import annotations

import numpy as np

from nutshell.backends.onnx_impl.graph import (
    Graph,
    crop_hw,
    flip_hw,
    pad,
    reduce_sum,
    reshape,
    slice_,
    transpose,
    unsqueeze,
)
from nutshell.spec import shapes
from nutshell.spec.signatures import Impl


def _conv_attrs(attrs: dict) -> dict:
    return {"strides": attrs["stride"], "pads": attrs["pads"], "dilations": attrs["dilation"],
            "group": attrs["groups"]}


def conv(g: Graph, x: str, w: str, b: str | None, attrs: dict, x_shape: tuple, w_shape: tuple) -> str:
    """y = conv2d(x, w) + b: ONNX Conv, or cols · W where :func:`columns` holds."""
    if not columns(x_shape, w_shape, attrs):
        return g.op("Conv", x, w, *([b] if b is not None else []), **_conv_attrs(attrs))
    o, c, kh, kw = w_shape
    wm = reshape(g, transpose(g, w, [2, 3, 1, 0]), [kh * kw * c, o])        # (kh·kw·C, O), rows (p, q, c)
    y = g.op("MatMul", im2col(g, x, x_shape, w_shape, attrs), wm)            # (N, oH, oW, O)
    if b is not None:
        y = g.op("Add", y, b)
    return transpose(g, y, [0, 3, 1, 2])                                     # (N, O, oH, oW)


def columns(x_shape: tuple, w_shape: tuple, attrs: dict) -> bool:
    """Whether conv2d and its gw go through one shared im2col matrix (see the module docstring)."""
    return (attrs["groups"] == 1 and list(attrs["stride"]) == [1, 1] and tuple(w_shape[2:]) != (1, 1)
            and x_shape[1] >= 8)


def im2col(g: Graph, x: str, x_shape: tuple, w_shape: tuple, attrs: dict) -> str:
    """cols[n, i, j, (p, q, c)] = xpad[n, c, i + p·d_h, j + q·d_w] (stride 1): (N, oH, oW, kh·kw·C),
    kept 4-d (a reshaped copy would be one more copy where the forward session hands it on)."""
    _, _, oh, ow = shapes.conv2d_out_shape(x_shape, w_shape, attrs["stride"], attrs["pads"], attrs["dilation"])
    (kh, kw), (dh, dw), pads = w_shape[2:], attrs["dilation"], attrs["pads"]
    xt = transpose(g, x, [0, 2, 3, 1])                                       # (N, H, W, C)
    if any(pads):
        xt = pad(g, xt, [0, pads[0], pads[1], 0], [0, pads[2], pads[3], 0])  # (N, Hp, Wp, C)
    taps = [slice_(g, xt, [p * dh, q * dw], [p * dh + oh, q * dw + ow], [1, 2]) for p in range(kh) for q in range(kw)]
    return g.op("Concat", *taps, axis=3)                                     # (N, oH, oW, kh·kw·C)


def conv_input_grad(g: Graph, w: str, gy: str, x_shape: tuple, w_shape: tuple, attrs: dict) -> str:
    """gx = ConvTranspose(gy, w), the output_padding restoring the exact input size; with stride 1
    and one group the same correlation as a Conv of gy with w flipped and transposed, padded by
    d·(k − 1) − p (ONNX Runtime runs that Conv on both threads where ConvTranspose's col2im runs on
    one)."""
    reach = [d * (k - 1) for d, k in zip(attrs["dilation"], w_shape[2:], strict=True)]
    if list(attrs["stride"]) == [1, 1] and attrs["groups"] == 1 and all(
            p <= reach[a % 2] for a, p in enumerate(attrs["pads"])):
        wt = transpose(g, flip_hw(g, w), [1, 0, 2, 3])                       # (C, O, kh, kw)
        pads = [reach[a % 2] - p for a, p in enumerate(attrs["pads"])]
        return g.op("Conv", gy, wt, pads=pads, dilations=attrs["dilation"])
    extra = [(n + attrs["pads"][a] + attrs["pads"][a + 2] - attrs["dilation"][a] * (k - 1) - 1) % attrs["stride"][a]
             for a, (n, k) in enumerate(zip(x_shape[2:], w_shape[2:], strict=True))]
    return g.op("ConvTranspose", gy, w, output_padding=extra, **_conv_attrs(attrs))


def conv_weight_grad(g: Graph, x: str, gy: str, x_shape: tuple, w_shape: tuple, attrs: dict) -> str:
    """gw as a Conv of x (batch C/G, channels (G, N)) with the kernel gyᵀ (O, N, oH, oW), or
    gyᵀ · cols where :func:`columns` holds."""
    if columns(x_shape, w_shape, attrs):
        return _columns_weight_grad(g, x, gy, x_shape, w_shape, attrs)
    n, _, h, wd = x_shape
    _, cg, kh, kw = w_shape
    groups = attrs["groups"]
    xg = reshape(g, x, [n, groups, cg, h, wd])                               # (N, G, C/G, H, W)
    xg = reshape(g, transpose(g, xg, [2, 1, 0, 3, 4]), [cg, groups * n, h, wd])  # (C/G, G·N, H, W)
    gyt = transpose(g, gy, [1, 0, 2, 3])                                     # (O, N, oH, oW)
    full = g.op("Conv", xg, gyt, strides=attrs["dilation"], dilations=attrs["stride"], pads=attrs["pads"],
                group=groups)                                               # (C/G, O, ≥kh, ≥kw)
    return slice_(g, transpose(g, full, [1, 0, 2, 3]), [0, 0], [kh, kw], [2, 3])  # (O, C/G, kh, kw)


def _columns_weight_grad(g: Graph, x: str, gy: str, x_shape: tuple, w_shape: tuple, attrs: dict) -> str:
    """gw[o, (p, q, c)] = Σ_{n,i,j} gy[n, o, i, j] · cols[(n, i, j), (p, q, c)]: one Gemm."""
    o, c, kh, kw = w_shape
    n, _, oh, ow = shapes.conv2d_out_shape(x_shape, w_shape, attrs["stride"], attrs["pads"], attrs["dilation"])
    gyt = reshape(g, transpose(g, gy, [0, 2, 3, 1]), [n * oh * ow, o])        # (N·oH·oW, O)
    cols = reshape(g, im2col(g, x, x_shape, w_shape, attrs), [n * oh * ow, kh * kw * c])
    gw = g.op("Gemm", gyt, cols, transA=1)                                  # (O, kh·kw·C)
    return transpose(g, reshape(g, gw, [o, kh, kw, c]), [0, 3, 1, 2])        # (O, C, kh, kw)


def pointwise(w_shape: tuple, attrs: dict) -> bool:
    """Whether conv2d is a matrix product over the channels at each pixel."""
    return (tuple(w_shape[2:]) == (1, 1) and list(attrs["stride"]) == [1, 1] and not any(attrs["pads"])
            and attrs["groups"] == 1)


def pointwise_grads(g: Graph, x: str, w: str, gy: str, x_shape: tuple, w_shape: tuple) -> dict:
    """gx = Conv(gy, wᵀ), gw[o, c] = Σ_{n,l} gy[n, o, l] · x[n, c, l] of a pointwise conv2d."""
    n, c, h, wd = x_shape
    o = w_shape[0]
    gx = g.op("Conv", gy, transpose(g, w, [1, 0, 2, 3]))                    # wᵀ as (C, O, 1, 1)
    gw = g.op("Einsum", reshape(g, gy, [n, o, h * wd]), reshape(g, x, [n, c, h * wd]), equation="nol,ncl->oc")
    return {"x": gx, "w": reshape(g, gw, [o, c, 1, 1])}


def conv_grad(g: Graph, x: str, w: str, gy: str, x_shape: tuple, w_shape: tuple, attrs: dict,
              bias: bool) -> dict:
    """{x, w[, b]} gradients of conv2d."""
    if pointwise(w_shape, attrs):
        grads = pointwise_grads(g, x, w, gy, x_shape, w_shape)
    else:
        grads = {"x": conv_input_grad(g, w, gy, x_shape, w_shape, attrs),
                 "w": conv_weight_grad(g, x, gy, x_shape, w_shape, attrs)}
    if bias:
        grads["b"] = reduce_sum(g, gy, [0, 2, 3])
    return grads


def _conv2d(g: Graph, v: dict, attrs: dict) -> dict:
    return {"y": conv(g, v["x"], v["w"], v.get("b"), attrs, g.shapes["x"], g.shapes["w"])}


def _conv2d_vjp(g: Graph, v: dict, cot: dict, attrs: dict) -> dict:
    return conv_grad(g, v["x"], v["w"], cot["y"], g.shapes["x"], g.shapes["w"], attrs, "b" in v)


def _convolve2d(g: Graph, v: dict, attrs: dict) -> dict:
    """convolve2d(x, w) = conv2d(x, w[:, :, ::−1, ::−1])."""
    return {"y": conv(g, v["x"], flip_hw(g, v["w"]), v.get("b"), attrs, g.shapes["x"], g.shapes["w"])}


def _convolve2d_vjp(g: Graph, v: dict, cot: dict, attrs: dict) -> dict:
    """The conv2d gradients for the flipped kernel; gw is flipped back."""
    grads = conv_grad(g, v["x"], flip_hw(g, v["w"]), cot["y"], g.shapes["x"], g.shapes["w"], attrs, "b" in v)
    grads["w"] = flip_hw(g, grads["w"])
    return grads


# --- conv2d through the convolution theorem ------------------------------------------------------

def dilate_hw(g: Graph, a: str, shape: tuple, step: list[int]) -> str:
    """Insert step − 1 zeros between neighbours on the two spatial axes: (A, B, k, l) ->
    (A, B, (k−1)·sh + 1, (l−1)·sw + 1)."""
    if step == [1, 1]:
        return a
    p, q, k, l = shape
    sh, sw = step
    a = pad(g, reshape(g, a, [p, q, k, 1, l, 1]), [0] * 6, [0, 0, 0, sh - 1, 0, sw - 1])  # (A, B, k, sh, l, sw)
    a = reshape(g, a, [p, q, k * sh, l * sw])
    return slice_(g, a, [0, 0], [(k - 1) * sh + 1, (l - 1) * sw + 1], [2, 3])


def _pow2(n: int) -> int:
    return 1 << (n - 1).bit_length()


def _fft_geometry(x_shape: tuple, w_shape: tuple, attrs: dict) -> tuple[list[int], list[int]]:
    """(dilated kernel size, transform size) per spatial axis. The transform covers the full
    linear convolution of the padded input, n + p_b + p_e + ke − 1, rounded up to a power of two:
    ONNX Runtime's DFT is radix-2 there, and slow (and in float64 only ~1e−8 accurate) elsewhere."""
    ke = [d * (k - 1) + 1 for d, k in zip(attrs["dilation"], w_shape[2:], strict=True)]
    size = [_pow2(n + attrs["pads"][a] + attrs["pads"][a + 2] + ke[a] - 1) for a, n in enumerate(x_shape[2:])]
    return ke, size


def _spectrum(g: Graph, a: str, shape: tuple, begin: list[int], size: list[int]) -> str:
    """2-D DFT of the real (A, B, h, w) tensor placed at ``begin`` in a zero (P, Q) plane:
    (A, B, P, Q, 2), ONNX's trailing (re, im) axis."""
    end = [p - n - b for p, n, b in zip(size, shape[2:], begin, strict=True)]
    a = unsqueeze(g, pad(g, a, [0, 0, *begin], [0, 0, *end]), [4])          # (A, B, P, Q, 1)
    for axis in (2, 3):
        a = g.op("DFT", a, axis=axis, onesided=0)
    return a                                                                 # (A, B, P, Q, 2)


def _real_inverse(g: Graph, a: str) -> str:
    """Re(IDFT2(a)) of an (A, B, P, Q, 2) spectrum (the inverse includes 1/(P·Q))."""
    for axis in (2, 3):
        a = g.op("DFT", a, axis=axis, inverse=1, onesided=0)
    return g.op("Gather", a, g.const(np.array(0, np.int64)), axis=-1)       # (A, B, P, Q)


def _complex_sum(g: Graph, equation: str, a: str, b: str, conj_a: bool = False, conj_b: bool = False) -> str:
    """Einsum of two complex (..., 2) tensors: Σ a·b over the contracted indices, with ā or b̄
    when asked. (ar + i·sa·ai)(br + i·sb·bi) = ar·br − sa·sb·ai·bi + i·(sb·ar·bi + sa·ai·br)."""
    zero, one = g.const(np.array(0, np.int64)), g.const(np.array(1, np.int64))
    ar, ai = (g.op("Gather", a, k, axis=-1) for k in (zero, one))
    br, bi = (g.op("Gather", b, k, axis=-1) for k in (zero, one))
    rr, ii, ri, ir = (g.op("Einsum", p, q, equation=equation) for p, q in ((ar, br), (ai, bi), (ar, bi), (ai, br)))
    re = g.op("Add" if conj_a != conj_b else "Sub", rr, ii)
    if conj_a:
        im = g.op("Sub", ri, ir)
    elif conj_b:
        im = g.op("Sub", ir, ri)
    else:
        im = g.op("Add", ri, ir)
    return g.op("Concat", unsqueeze(g, re, [-1]), unsqueeze(g, im, [-1]), axis=-1)


def _fft_operands(g: Graph, x: str, w: str, x_shape: tuple, w_shape: tuple, attrs: dict) -> tuple[str, str]:
    """X = DFT2(xpad) as (N, G, C/G, P, Q, 2) and V = DFT2(flipped, dilated w) as
    (G, O/G, C/G, P, Q, 2)."""
    n = x_shape[0]
    o, cg = w_shape[:2]
    groups = attrs["groups"]
    ke, size = _fft_geometry(x_shape, w_shape, attrs)
    xf = _spectrum(g, x, x_shape, attrs["pads"][:2], size)
    v = flip_hw(g, dilate_hw(g, w, w_shape, attrs["dilation"]))             # (O, C/G, keh, kew)
    vf = _spectrum(g, v, (o, cg, *ke), [0, 0], size)
    return (reshape(g, xf, [n, groups, cg, *size, 2]),                      # (N, G, C/G, P, Q, 2)
            reshape(g, vf, [groups, o // groups, cg, *size, 2]))            # (G, O/G, C/G, P, Q, 2)


def _fft_conv2d(g: Graph, v: dict, attrs: dict) -> dict:
    """y = conv2d(x, w) by the convolution theorem.

    With xpad the padded input and v = w dilated and flipped, the linear convolution
    z = xpad ∗ v is IDFT2(Σ_c DFT2(xpad)·DFT2(v)) when both are zero-padded to P ≥ Hp + ke − 1
    (no wrap-around); conv2d samples it: y[i, j] = z[ke_h − 1 + i·sh, ke_w − 1 + j·sw].
    """
    xs, ws = g.shapes["x"], g.shapes["w"]
    ke, size = _fft_geometry(xs, ws, attrs)
    out = shapes.conv2d_out_shape(xs, ws, attrs["stride"], attrs["pads"], attrs["dilation"])
    xf, vf = _fft_operands(g, v["x"], v["w"], xs, ws, attrs)
    zf = reshape(g, _complex_sum(g, "ngchw,gochw->ngohw", xf, vf), [xs[0], ws[0], *size, 2])  # (N, O, P, Q, 2)
    z = _real_inverse(g, zf)                                                # (N, O, P, Q)
    last = [k - 1 + s * (m - 1) for k, s, m in zip(ke, attrs["stride"], out[2:], strict=True)]
    y = slice_(g, z, [k - 1 for k in ke], [e + 1 for e in last], [2, 3], attrs["stride"])  # (N, O, oH, oW)
    if "b" in v:
        y = g.op("Add", y, unsqueeze(g, v["b"], [1, 2]))                   # b as (O, 1, 1)
    return {"y": y}


def _fft_conv2d_vjp(g: Graph, v: dict, cot: dict, attrs: dict) -> dict:
    """The vjp in the frequency domain. gz, the cotangent of z, is gy spread back onto the
    sampled positions (zeros elsewhere); then, per group, with GZ = DFT2(gz):
    gxpad = Re IDFT2(Σ_o GZ·V̄) (a correlation of gz with v) and
    gv = Re IDFT2(Σ_n X̄·GZ)[:ke] (a correlation of gz with xpad), both free of wrap-around
    because P ≥ Hp + ke − 1. Then gw = flip(gv) sampled every d, gx = gxpad without the pads."""
    xs, ws = g.shapes["x"], g.shapes["w"]
    n, c, h, w = xs
    o, cg = ws[:2]
    groups = attrs["groups"]
    ke, size = _fft_geometry(xs, ws, attrs)
    out = shapes.conv2d_out_shape(xs, ws, attrs["stride"], attrs["pads"], attrs["dilation"])
    xf, vf = _fft_operands(g, v["x"], v["w"], xs, ws, attrs)
    gz = dilate_hw(g, cot["y"], out, attrs["stride"])                       # (N, O, s·(oH−1)+1, ...)
    spread = (n, o, *[s * (m - 1) + 1 for s, m in zip(attrs["stride"], out[2:], strict=True)])
    gzf = reshape(g, _spectrum(g, gz, spread, [k - 1 for k in ke], size), [n, groups, o // groups, *size, 2])
    gxf = _complex_sum(g, "ngohw,gochw->ngchw", gzf, vf, conj_b=True)        # (N, G, C/G, P, Q, 2)
    gxpad = _real_inverse(g, reshape(g, gxf, [n, c, *size, 2]))             # (N, C, P, Q)
    gvf = _complex_sum(g, "ngchw,ngohw->gochw", xf, gzf, conj_a=True)        # (G, O/G, C/G, P, Q, 2)
    gv = slice_(g, _real_inverse(g, reshape(g, gvf, [o, cg, *size, 2])), [0, 0], ke, [2, 3])  # (O, C/G, keh, kew)
    grads = {"x": crop_hw(g, gxpad, tuple(size), tuple(attrs["pads"][:2]), (h, w)),
             "w": slice_(g, flip_hw(g, gv), [0, 0], ke, [2, 3], attrs["dilation"])}
    if "b" in v:
        grads["b"] = reduce_sum(g, cot["y"], [0, 2, 3])
    return grads


CONCEPTS: dict[str, Impl] = {
    "conv2d": Impl(_conv2d, _conv2d_vjp),
    "convolve2d": Impl(_convolve2d, _convolve2d_vjp),
    "conv2d_fft": Impl(_fft_conv2d, _fft_conv2d_vjp),
}
