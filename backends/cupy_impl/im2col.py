"""Window extraction shared by convolution and pooling: im2col, col2im and batch chunks.

For a window sweep with kernel (kh, kw), stride (sh, sw), pads [pt, pl, pb, pr] and dilation
(dh, dw) over x (N, C, H, W), the column array is

    col[c, p, q, n, i, j] = xpad[n, c, i·sh + p·dh, j·sw + q·dw]        # (C, kh, kw, N, oH, oW)

where xpad is x surrounded by a constant (0 for convolution and average pooling, −inf for max
pooling). The layout is channel-major with the batch inside, so that col.reshape(C·kh·kw, N·oH·oW)
is the column matrix of the whole chunk and a convolution is one matrix product per group (one
large product keeps BLAS busy, and costs one thread hand-off, not one per sample). The gradient
of anything computed from ``col`` flows back to x through :func:`col2im`, its adjoint:

    gx[n, c, h, w] = Σ_{p, q} gcol[c, p, q, n, i, j]   over the taps with i·sh + p·dh = h + pt
                                                        and j·sw + q·dw = w + pl, 0 ≤ i < oH, 0 ≤ j < oW

That is the *gather form*: each input pixel sums its own contributions in the fixed tap order
(p, q), so the result is deterministic and no two writers ever race on one pixel. The NumPy path
evaluates it for all pixels at once, one strided slice per tap (inside one tap the map
(i, j) → pixel is one-to-one, so a slice never hits a pixel twice); on the GPU each pixel is
one thread of a raw kernel that walks the taps (:mod:`.kernels`). For stride 1 on NumPy,
:func:`col2im_flat` takes columns laid over the flattened padded planes instead, where each tap
is a single shift of the whole chunk.

The batch goes through in :func:`chunks` sized by the working-memory budget of the call: the
backend sets it around every call with :func:`memory_budget`, as it sets the CUDA device, so
the area modules keep the one calling convention ``forward(inputs, attrs)``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from nutshell.backends.cupy_impl import kernels
from nutshell.backends.cupy_impl.xp import array_module, on_gpu
from nutshell.spec import shapes

MIB = 1 << 20
DEFAULT_BUDGET_MB = 256.0

_BUDGET: ContextVar[int] = ContextVar("nutshell_cupy_budget", default=int(DEFAULT_BUDGET_MB * MIB))


@dataclass(frozen=True)
class Window:
    """The geometry of one window sweep over (H, W); the output is (oH, oW)."""

    kh: int
    kw: int
    sh: int
    sw: int
    pt: int
    pl: int
    pb: int
    pr: int
    dh: int
    dw: int
    h: int
    w: int
    oh: int
    ow: int

    @classmethod
    def make(cls, hw: Sequence[int], kernel: Sequence[int], stride: Sequence[int], pads: Sequence[int],
             dilation: Sequence[int], ceil: bool = False) -> Window:
        """The sweep of ``kernel`` over an (H, W) plane; output sizes by :func:`shapes.pool_out`."""
        h, w = hw
        oh = shapes.pool_out(h, kernel[0], stride[0], pads[0], pads[2], dilation[0], ceil)
        ow = shapes.pool_out(w, kernel[1], stride[1], pads[1], pads[3], dilation[1], ceil)
        return cls(*kernel, *stride, *pads, *dilation, h, w, oh, ow)

    @property
    def padded(self) -> tuple[int, int]:
        """(Hp, Wp): the padded plane, grown past the end padding when ceil mode needs it."""
        hp = max(self.h + self.pt + self.pb, shapes.window_reach(self.oh, self.kh, self.sh, self.dh))
        wp = max(self.w + self.pl + self.pr, shapes.window_reach(self.ow, self.kw, self.sw, self.dw))
        return hp, wp

    @property
    def taps(self) -> int:
        return self.kh * self.kw

    @property
    def out_size(self) -> int:
        return self.oh * self.ow


def pad(x: Any, win: Window, value: float = 0.0) -> Any:
    """x (N, C, H, W) inside a (N, C, Hp, Wp) plane filled with ``value``."""
    xp = array_module(x)
    hp, wp = win.padded
    if (hp, wp) == (win.h, win.w):
        return x
    out = xp.full((*x.shape[:2], hp, wp), value, dtype=x.dtype)
    out[:, :, win.pt:win.pt + win.h, win.pl:win.pl + win.w] = x
    return out


def windows(xpad: Any, win: Window) -> Any:
    """A strided view (C, kh, kw, N, oH, oW) of a padded (N, C, Hp, Wp) plane; nothing is copied."""
    xp = array_module(xpad)
    sn, sc, sy, sx = xpad.strides
    n, c = xpad.shape[:2]
    shape = (c, win.kh, win.kw, n, win.oh, win.ow)
    strides = (sc, sy * win.dh, sx * win.dw, sn, sy * win.sh, sx * win.sw)
    return xp.lib.stride_tricks.as_strided(xpad, shape, strides)


def im2col(x: Any, win: Window, value: float = 0.0) -> Any:
    """The contiguous column array (C, kh, kw, N, oH, oW) of x (N, C, H, W)."""
    if on_gpu(x):
        return kernels.im2col(x, win, value)
    xp = array_module(x)
    return xp.ascontiguousarray(windows(pad(x, win, value), win))


def col2im(gcol: Any, win: Window) -> Any:
    """The adjoint of :func:`im2col` in gather form: gcol (C, kh, kw, N, oH, oW) → gx (N, C, H, W).

    On NumPy the result is a view into the padded gradient plane (the caller copies it where it
    needs it), which saves one plane-sized copy per chunk.
    """
    if on_gpu(gcol):
        return kernels.col2im(gcol, win)
    xp = array_module(gcol)
    gxp = xp.zeros((gcol.shape[0], gcol.shape[3], *win.padded), dtype=gcol.dtype)     # (C, N, Hp, Wp)
    i_end, j_end = win.sh * (win.oh - 1) + 1, win.sw * (win.ow - 1) + 1
    for p in range(win.kh):
        for q in range(win.kw):
            y0, x0 = p * win.dh, q * win.dw
            gxp[:, :, y0:y0 + i_end:win.sh, x0:x0 + j_end:win.sw] += gcol[:, p, q]
    return gxp[:, :, win.pt:win.pt + win.h, win.pl:win.pl + win.w].transpose(1, 0, 2, 3)


def spread(gy: Any, win: Window) -> Any:
    """gy (m, O, oH, oW) at the top-left of zero (Hp, Wp) planes, flattened: (O, m·Hp·Wp)."""
    xp = array_module(gy)
    m, o = gy.shape[:2]
    hp, wp = win.padded
    out = xp.zeros((o, m, hp, wp), dtype=gy.dtype)
    out[:, :, :win.oh, :win.ow] = gy.transpose(1, 0, 2, 3)
    return out.reshape(o, m * hp * wp)


def col2im_flat(gcol: Any, win: Window) -> Any:
    """col2im for stride 1 on columns laid over the flattened padded planes: gcol (C, kh, kw,
    m·Hp·Wp) → gx (m, C, H, W), a view.

    With stride 1, output (i, j) of tap (p, q) lands on padded pixel (i + p·dh, j + q·dw): in the
    flattened (m, Hp, Wp) planes that is a shift by p·dh·Wp + q·dw, the same for every pixel, so
    each tap is one contiguous add (rows of m·Hp·Wp, where the strided form has rows of oW). The
    columns of positions outside the (oH, oW) output must be 0 (the product of a finite kernel
    with :func:`spread`'s zeros): shifted past a plane's edge they land, harmlessly, on the next
    plane or in the slack at the end. The taps are added in the order (p, q), as in :func:`col2im`.
    """
    xp = array_module(gcol)
    c, length = gcol.shape[0], gcol.shape[3]
    hp, wp = win.padded
    gxp = xp.zeros((c, length + (win.kh - 1) * win.dh * wp + (win.kw - 1) * win.dw), dtype=gcol.dtype)
    for p in range(win.kh):
        for q in range(win.kw):
            shift = p * win.dh * wp + q * win.dw
            gxp[:, shift:shift + length] += gcol[:, p, q]
    planes = gxp[:, :length].reshape(c, length // (hp * wp), hp, wp)                   # (C, m, Hp, Wp)
    return planes[:, :, win.pt:win.pt + win.h, win.pl:win.pl + win.w].transpose(1, 0, 2, 3)


def chunks(n: int, per_sample_bytes: int, budget_bytes: int) -> Iterator[slice]:
    """Slices of the batch axis whose working memory (``per_sample_bytes`` each) fits the budget.

    A chunk holds ⌊budget / per_sample⌋ samples, at least one: a single sample larger than the
    budget still runs, alone.
    """
    step = max(1, budget_bytes // max(per_sample_bytes, 1))
    for start in range(0, n, step):
        yield slice(start, min(n, start + step))


@contextmanager
def memory_budget(nbytes: int) -> Iterator[None]:
    """Inside the block, one call keeps its extra working memory under ``nbytes`` (see :func:`current_budget`)."""
    token = _BUDGET.set(nbytes)
    try:
        yield
    finally:
        _BUDGET.reset(token)


def current_budget() -> int:
    """The working-memory budget of the current call in bytes: what :func:`memory_budget` set,
    else DEFAULT_BUDGET_MB."""
    return _BUDGET.get()
