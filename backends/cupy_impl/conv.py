"""Convolution three ways: im2col + matrix product, the flipped kernel, and the FFT.

conv2d (cross-correlation), with G groups, Cg = C/G input and Og = O/G output channels each,
K = Cg·kh·kw and L = oH·oW, for a chunk of m samples:

    col = im2col(x)                                  # (G, K, m·L): channel-major, batch inside
    y   = w.reshape(G, Og, K) @ col + b              # (G, Og, m·L): one matmul batched over groups
    gw  = gy @ colᵀ,   gcol = wᵀ @ gy,   gx = col2im(gcol),   gb = Σ_{n,i,j} gy

On NumPy with stride 1, gcol is computed on gy spread over the padded planes, so that col2im
is one contiguous shifted add per tap (:func:`.im2col.col2im_flat`), not one add per row of oW.
A model keeps each convolution's columns from its forward pass for gw (:func:`conv2d_saving`).

The batch is processed in chunks (:func:`.im2col.chunks`) so that the working memory of one call
(padded input, columns and, backward, their gradients) stays under the backend's budget, which
the table entries read with :func:`.im2col.current_budget`.

convolve2d is conv2d with the kernel flipped on both spatial axes; conv2d_fft computes conv2d
through the convolution theorem (see :func:`conv2d_fft`).
"""

from __future__ import annotations

import math
from typing import Any

from nutshell.backends.cupy_impl.im2col import (
    MIB,
    Window,
    chunks,
    col2im,
    col2im_flat,
    current_budget,
    im2col,
    pad,
    spread,
)
from nutshell.backends.cupy_impl.xp import array_module, matmul, on_gpu
from nutshell.spec.signatures import Impl

Arrays = dict[str, Any]

# On the CPU a chunk is also kept near the size of the last-level cache, so that the matmul reads
# the columns back while they are still cached; larger chunks make fewer, larger products, which
# keep two BLAS threads in step. Measured at the benchmark shape (2 cores): 32 MiB is about 20%
# faster than one whole-batch chunk with one thread and as fast with two. On the GPU only the
# budget limits a chunk.
CPU_CHUNK_BYTES = 32 * MIB


def window(x_shape: tuple, w_shape: tuple, attrs: dict) -> Window:
    """The sweep of the (O, Cg, kh, kw) kernel over the (H, W) plane of x."""
    return Window.make(x_shape[2:], w_shape[2:], attrs["stride"], attrs["pads"], attrs["dilation"])


def _sample_bytes(x: Any, w: Any, win: Window) -> int:
    """Working memory per sample, forward or backward: the columns (or their gradient), two
    padded planes (the padded input, or the padded gradient and its crop) and the output chunk
    (or the regrouped gy)."""
    hp, wp = win.padded
    c, o = x.shape[1], w.shape[0]
    return x.itemsize * (c * win.taps * win.out_size + 2 * c * hp * wp + o * win.out_size)


def _chunk_budget(x: Any, budget: int) -> int:
    return budget if on_gpu(x) else min(budget, CPU_CHUNK_BYTES)


def _flat_ok(x: Any, w: Any, win: Window) -> bool:
    """Whether gx may go through :func:`.im2col.col2im_flat`: on NumPy, for stride 1 and a finite
    kernel (its products with the zeros around the output must be 0, not NaN)."""
    return not on_gpu(x) and (win.sh, win.sw) == (1, 1) and bool(array_module(w).isfinite(w).all())


def conv2d_forward(x: Any, w: Any, b: Any | None, attrs: dict, budget: int) -> Any:
    """y (N, O, oH, oW): per chunk of m samples, im2col and one matmul batched over the groups."""
    return conv2d_forward_saving(x, w, b, attrs, budget, keep=False)[0]


def conv2d_forward_saving(x: Any, w: Any, b: Any | None, attrs: dict, budget: int,
                          keep: bool = True) -> tuple[Any, list | None]:
    """(y, the columns of every chunk) when ``keep`` and all of them together fit the budget, else
    (y, None). :func:`conv2d_backward` reuses kept columns instead of extracting them again."""
    xp = array_module(x)
    win, g = window(x.shape, w.shape, attrs), attrs["groups"]
    n, o = x.shape[0], w.shape[0]
    wg = w.reshape(g, o // g, math.prod(w.shape[1:]))                 # (G, Og, K)
    keep = keep and n * x.itemsize * x.shape[1] * win.taps * win.out_size <= budget
    y, cols = xp.empty((n, o, win.oh, win.ow), dtype=x.dtype), []
    for sl in chunks(n, _sample_bytes(x, w, win), _chunk_budget(x, budget)):
        m = sl.stop - sl.start
        col = im2col(x[sl], win).reshape(g, wg.shape[2], m * win.out_size)              # (G, K, m·L)
        yc = matmul(wg, col)                                                            # (G, Og, m·L)
        if keep:
            cols.append(col)
        del col                                   # unless kept: before the next chunk's columns are allocated
        yc = yc.reshape(o, m, win.oh, win.ow).transpose(1, 0, 2, 3)                     # (m, O, oH, oW)
        if b is None:
            y[sl] = yc
        else:                                     # the bias rides on the copy into y: one pass
            xp.add(yc, b[:, None, None], out=y[sl])
    return y, cols if keep else None


def conv2d_backward(x: Any, w: Any, gy: Any, attrs: dict, budget: int, cols: list | None = None,
                    need_x: bool = True) -> tuple[Any | None, Any]:
    """(gx, gw): per chunk, the columns (kept by :func:`conv2d_forward_saving`, or extracted again),
    gw += gy·colᵀ and, when ``need_x``, gx = col2im(wᵀ·gy) (gather form; on NumPy for stride 1,
    where the chunk's flat columns fit the budget, :func:`.im2col.col2im_flat`); else gx is None."""
    xp = array_module(x)
    win, g = window(x.shape, w.shape, attrs), attrs["groups"]
    n, c, o = x.shape[0], x.shape[1], w.shape[0]
    wg = w.reshape(g, o // g, math.prod(w.shape[1:]))                 # (G, Og, K)
    gw = xp.zeros_like(wg)
    gx = xp.empty(x.shape, dtype=x.dtype) if need_x else None
    chunk = _chunk_budget(x, budget)
    flat, flat_bytes = _flat_ok(x, w, win), x.itemsize * c * win.taps * math.prod(win.padded)
    for i, sl in enumerate(chunks(n, _sample_bytes(x, w, win), chunk)):
        m = sl.stop - sl.start
        gyc = gy[sl].transpose(1, 0, 2, 3).reshape(g, o // g, m * win.out_size)        # (G, Og, m·L)
        col = im2col(x[sl], win).reshape(g, wg.shape[2], m * win.out_size) if cols is None else cols[i]
        gw += matmul(gyc, col.transpose(0, 2, 1))                                       # (G, Og, K)
        del col
        if need_x:
            gx[sl] = _gx(wg, gy[sl], gyc, win, c, flat and m * flat_bytes <= chunk)
    return gx, gw.reshape(w.shape)


def _gx(wg: Any, gy: Any, gyc: Any, win: Window, c: int, flat: bool) -> Any:
    """The (m, C, H, W) gradient of a chunk's input, from wᵀ·gy through col2im: by default on
    the (G, Og, m·L) regrouped gy; when ``flat``, on gy spread over the padded planes and
    :func:`.im2col.col2im_flat` (its shifted adds are contiguous)."""
    g = wg.shape[0]
    if flat:
        gym = gyc.reshape(-1, gy.shape[0], win.oh, win.ow).transpose(1, 0, 2, 3)       # (m, O, oH, oW) view
        gys = spread(gym, win)                                   # (O, m·Hp·Wp), read from the contiguous gyc
        gcol = matmul(wg.transpose(0, 2, 1), gys.reshape(g, -1, gys.shape[1]))          # (G, K, m·Hp·Wp)
        return col2im_flat(gcol.reshape(c, win.kh, win.kw, gys.shape[1]), win)
    gcol = matmul(wg.transpose(0, 2, 1), gyc)                                           # (G, K, m·L)
    return col2im(gcol.reshape(c, win.kh, win.kw, gy.shape[0], win.oh, win.ow), win)


def _conv(inputs: Arrays, attrs: dict, flip: bool) -> Arrays:
    w = inputs["w"][:, :, ::-1, ::-1] if flip else inputs["w"]
    return {"y": conv2d_forward(inputs["x"], w, inputs.get("b"), attrs, current_budget())}


def _conv_vjp(inputs: Arrays, cots: Arrays, attrs: dict, flip: bool, cols: list | None = None,
              need_x: bool = True) -> Arrays:
    w = inputs["w"][:, :, ::-1, ::-1] if flip else inputs["w"]
    gy = cots["y"]
    gx, gw = conv2d_backward(inputs["x"], w, gy, attrs, current_budget(), cols, need_x)
    grads = {} if gx is None else {"x": gx}
    grads["w"] = gw[:, :, ::-1, ::-1] if flip else gw
    if "b" in inputs:
        grads["b"] = gy.sum(axis=(0, 2, 3))
    return grads


def conv2d_saving(inputs: Arrays, attrs: dict) -> tuple[Arrays, list | None]:
    """The outputs, and the columns :func:`conv2d_vjp_saved` reuses (None when over the budget)."""
    y, cols = conv2d_forward_saving(inputs["x"], inputs["w"], inputs.get("b"), attrs, current_budget())
    return {"y": y}, cols


def conv2d_vjp_saved(inputs: Arrays, saved: list | None, cots: Arrays, attrs: dict, wanted: set[str]) -> Arrays:
    """The vjp from the columns :func:`conv2d_saving` kept; gx only when "x" is ``wanted``."""
    return _conv_vjp(inputs, cots, attrs, flip=False, cols=saved, need_x="x" in wanted)


def conv2d(inputs: Arrays, attrs: dict) -> Arrays:
    """Cross-correlation: the kernel is not flipped."""
    return _conv(inputs, attrs, flip=False)


def conv2d_vjp(inputs: Arrays, cots: Arrays, attrs: dict) -> Arrays:
    return _conv_vjp(inputs, cots, attrs, flip=False)


def convolve2d(inputs: Arrays, attrs: dict) -> Arrays:
    """True convolution: conv2d of the kernel flipped on both spatial axes, w[:, :, ::−1, ::−1]."""
    return _conv(inputs, attrs, flip=True)


def convolve2d_vjp(inputs: Arrays, cots: Arrays, attrs: dict) -> Arrays:
    """conv2d's gradients for the flipped kernel; gw is flipped back."""
    return _conv_vjp(inputs, cots, attrs, flip=True)


# --- the FFT path ---------------------------------------------------------------------------

def fast_len(n: int) -> int:
    """The smallest 2^a·3^b·5^c ≥ n: a transform length the FFT handles quickly."""
    best = 1 << max(n - 1, 0).bit_length()
    p5 = 1
    while p5 < best:
        p35 = p5
        while p35 < best:
            p = p35
            while p < n:
                p *= 2
            best = min(best, p)
            p35 *= 3
        p5 *= 5
    return best


def _spread(a: Any, step: tuple[int, int]) -> Any:
    """Zeros between the entries of the last two axes: out[..., i·s0, j·s1] = a[..., i, j].

    A dilated kernel is the kernel spread by the dilation; a strided output's gradient, spread
    by the stride, is the gradient of the stride-1 output it was subsampled from.
    """
    xp = array_module(a)
    h, w = a.shape[-2:]
    out = xp.zeros((*a.shape[:-2], step[0] * (h - 1) + 1, step[1] * (w - 1) + 1), dtype=a.dtype)
    out[..., ::step[0], ::step[1]] = a
    return out


def full_conv(a: Any, b: Any) -> Any:
    """Linear 2-D convolution with a channel contraction, through the FFT.

    a (G, A, K, ha, wa), b (G, K, B, hb, wb) → c (G, A, B, ha + hb − 1, wa + wb − 1),
    c[g, i, j] = Σ_k a[g, i, k] ⊛ b[g, k, j], ⊛ the full linear convolution. Both are zero-padded
    to P ≥ ha + hb − 1 (and Q ≥ wa + wb − 1) before the transform, so the circular convolution
    that the product of transforms computes never wraps around and equals the linear one.
    """
    xp = array_module(a)
    lh, lw = a.shape[-2] + b.shape[-2] - 1, a.shape[-1] + b.shape[-1] - 1
    size = (fast_len(lh), fast_len(lw))
    fa = xp.fft.rfft2(a, s=size).transpose(0, 3, 4, 1, 2)     # (G, P, Q', A, K)
    fb = xp.fft.rfft2(b, s=size).transpose(0, 3, 4, 1, 2)     # (G, P, Q', K, B)
    fc = (fa @ fb).transpose(0, 3, 4, 1, 2)                   # (G, A, B, P, Q')
    return xp.fft.irfft2(fc, s=size)[..., :lh, :lw]                   # complex64 → float32, in dtype


def _fft_parts(inputs: Arrays, attrs: dict) -> tuple[Window, Any, Any]:
    """The window, the padded input by group (G, N, Cg, Hp, Wp) and the dilated kernel (G, Og, Cg, ke_h, ke_w)."""
    x, w, g = inputs["x"], inputs["w"], attrs["groups"]
    win = window(x.shape, w.shape, attrs)
    xpad = pad(x, win)
    xg = xpad.reshape(x.shape[0], g, x.shape[1] // g, *xpad.shape[2:]).transpose(1, 0, 2, 3, 4)
    wd = _spread(w, (win.dh, win.dw))
    return win, xg, wd.reshape(g, w.shape[0] // g, *wd.shape[1:])


def _ungroup(a: Any) -> Any:
    """(G, N, Cg, H, W) → (N, G·Cg, H, W)."""
    return a.transpose(1, 0, 2, 3, 4).reshape(a.shape[1], a.shape[0] * a.shape[2], *a.shape[3:])


def conv2d_fft(inputs: Arrays, attrs: dict) -> Arrays:
    """conv2d through the convolution theorem.

    The cross-correlation is the true convolution with the flipped, dilated kernel wd:
    y_full = xpad ⊛ flip(wd) (:func:`full_conv`), whose entry i + ke − 1 is Σ_s xpad[i + s]·wd[s];
    the stride keeps every s-th of those: y[i] = y_full[i·s + ke − 1].
    The whole input goes through the FFT at once: this path is not chunked. The FFT has no
    float16 or bfloat16 transform (NumPy's and CuPy's compute those in float32): the result is
    rounded once into the inputs' format.
    """
    win, xg, wd = _fft_parts(inputs, attrs)
    kf = wd[..., ::-1, ::-1].transpose(0, 2, 1, 3, 4)                        # (G, Cg, Og, ke_h, ke_w)
    full = full_conv(xg, kf)                                                # (G, N, Og, ·, ·)
    eh, ew = wd.shape[-2] - 1, wd.shape[-1] - 1
    y = _ungroup(full[..., eh:eh + win.sh * (win.oh - 1) + 1:win.sh, ew:ew + win.sw * (win.ow - 1) + 1:win.sw])
    if "b" in inputs:
        y += inputs["b"][:, None, None]
    return {"y": y.astype(inputs["x"].dtype, copy=False)}


def conv2d_fft_vjp(inputs: Arrays, cots: Arrays, attrs: dict) -> Arrays:
    """The gradients through the FFT as well (not the im2col path).

    With u = gy spread by the stride (the gradient of the stride-1 output):
    gxpad = u ⊛ wd (a full convolution, cropped to the input), and the dilated kernel's gradient
    gwd[s] = Σ_a u[a]·xpad[a + s] = (xpad ⊛ flip(u))[s + hu − 1], of which gw keeps every
    dilation-th tap.
    """
    xp = array_module(inputs["x"])
    win, xg, wd = _fft_parts(inputs, attrs)
    g, gy = attrs["groups"], cots["y"]
    u = _spread(gy, (win.sh, win.sw))
    ug = u.reshape(u.shape[0], g, u.shape[1] // g, *u.shape[2:]).transpose(1, 0, 2, 3, 4)   # (G, N, Og, hu, wu)
    gxg = full_conv(ug, wd)                                                   # (G, N, Cg, ≤Hp, ≤Wp)
    gxpad = xp.zeros(xg.shape, dtype=gy.dtype)
    gxpad[..., :gxg.shape[-2], :gxg.shape[-1]] = gxg
    gx = _ungroup(gxpad)[:, :, win.pt:win.pt + win.h, win.pl:win.pl + win.w]
    uf = ug[..., ::-1, ::-1].transpose(0, 2, 1, 3, 4)                          # (G, Og, N, hu, wu)
    gwd = full_conv(uf, xg)                                                   # (G, Og, Cg, ·, ·)
    hu, wu = u.shape[-2] - 1, u.shape[-1] - 1
    gw = gwd[..., hu:hu + wd.shape[-2]:win.dh, wu:wu + wd.shape[-1]:win.dw]
    grads = {"x": xp.ascontiguousarray(gx), "w": gw.reshape(inputs["w"].shape).astype(inputs["w"].dtype, copy=False)}
    if "b" in inputs:
        grads["b"] = gy.sum(axis=(0, 2, 3))
    return grads


CONCEPTS: dict[str, Impl] = {
    "conv2d": Impl(conv2d, conv2d_vjp),
    "convolve2d": Impl(convolve2d, convolve2d_vjp),
    "conv2d_fft": Impl(conv2d_fft, conv2d_fft_vjp),
}
