"""CuPy kernels of the GPU path, compiled on first use (call :func:`warmup` before timing).

Nothing here runs on the NumPy path: every entry point is reached only with CuPy arrays, and
the kernels are built lazily, so this module imports (and the backend works) without CuPy.
Each kernel computes the same formula, in the same order, as the NumPy code it stands in for:

* ``sigmoid``: σ(x) = r for x ≥ 0 and e·r for x < 0, with e = exp(−|x|), r = 1 / (1 + e);
* ``sigmoid_grad``: gx = gy·σ'(x), σ'(x) = σ(x)·σ(−x) = e·r² (accurate also where σ rounds to 1);
* ``tanh_grad``: gx = gy·tanh'(x), tanh'(x) = 1 − tanh²(x) for |x| < 1, 4·σ'(2x) beyond;
* ``lstm_gates`` / ``lstm_gates_grad``: the gate arithmetic of one LSTM step and its adjoint
  (see :mod:`.recurrent`), one thread per (n, j) of the (N, H) state;
* ``im2col`` / ``col2im``: see :mod:`.im2col`; col2im is in gather form, one thread per input
  pixel summing its taps in the order (p, q), so the result is deterministic.

Raw kernels ignore strides: every array handed to them is made C-contiguous first. The kernels
are written for float and double; float16 arrays go through them as float32 copies and their
results are rounded once back to float16 (:func:`_widened`): CUDA's half type lacks the mixed
arithmetic the formulas use, and col2im's sums then accumulate in float32.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from nutshell.backends.cupy_impl.xp import usable_cupy

if TYPE_CHECKING:
    from nutshell.backends.cupy_impl.im2col import Window

_PREAMBLE = r"""
template <typename T> __device__ T nut_sigmoid(T x) {
    T e = exp(-fabs(x));
    T r = T(1) / (T(1) + e);
    return x >= T(0) ? r : e * r;
}
template <typename T> __device__ T nut_dsigmoid(T x) {
    T e = exp(-fabs(x));
    T r = T(1) / (T(1) + e);
    return e * r * r;
}
template <typename T> __device__ T nut_dtanh(T x) {
    T t = tanh(x);
    return fabs(x) < T(1) ? T(1) - t * t : T(4) * nut_dsigmoid(T(2) * x);
}
"""

_LSTM_FWD = r"""
const ptrdiff_t row = (i / H) * 4 * H, j = i % H;
const T ig = nut_sigmoid(z[row + j]);
const T fg = nut_sigmoid(z[row + H + j]);
const T gg = tanh(z[row + 2 * H + j]);
const T og = nut_sigmoid(z[row + 3 * H + j]);
c_new = fg * c + ig * gg;
h_new = og * tanh(c_new);
"""

_LSTM_BWD = r"""
const ptrdiff_t row = (i / H) * 4 * H, j = i % H;
const T zi = z[row + j], zf = z[row + H + j], zg = z[row + 2 * H + j], zo = z[row + 3 * H + j];
const T dc = gc + gh * nut_sigmoid(zo) * nut_dtanh(c_new);
dz[row + j] = dc * tanh(zg) * nut_dsigmoid(zi);
dz[row + H + j] = dc * c * nut_dsigmoid(zf);
dz[row + 2 * H + j] = dc * nut_sigmoid(zi) * nut_dtanh(zg);
dz[row + 3 * H + j] = gh * tanh(c_new) * nut_dsigmoid(zo);
gc_prev = dc * nut_sigmoid(zf);
"""

_ELEMENTWISE = {
    "sigmoid": ("T x", "T y", "y = nut_sigmoid(x)"),
    "sigmoid_grad": ("T x, T gy", "T gx", "gx = gy * nut_dsigmoid(x)"),
    "tanh_grad": ("T x, T gy", "T gx", "gx = gy * nut_dtanh(x)"),
    "lstm_gates": ("raw T z, T c, int64 H", "T h_new, T c_new", _LSTM_FWD),
    "lstm_gates_grad": ("raw T z, T c, T c_new, T gh, T gc, int64 H", "T gc_prev, raw T dz", _LSTM_BWD),
}

# col[c, p, q, n, i, j] = x[n, c, i·sh − pt + p·dh, j·sw − pl + q·dw], or `value` outside x.
# One thread per (c, p, q, i, j) (the block's y index is the row r = (c·kh + p)·kw + q, its x
# index and thread the position l = i·ow + j); it walks the samples n, so its divisions are done
# once and each sample costs one load and one store. Grid-stride loops cover any N and C·kh·kw.
_IM2COL = r"""
extern "C" __global__ void nutshell_im2col_DTYPE(
        const DTYPE* x, DTYPE* col, int N, int C, int H, int W, int kh, int kw,
        int sh, int sw, int pt, int pl, int dh, int dw, int oh, int ow, DTYPE value) {
    const int L = oh * ow;
    const int l = blockIdx.x * blockDim.x + threadIdx.x;
    if (l >= L) return;
    const int i = l / ow, j = l - i * ow;
    const long long rows = (long long)C * kh * kw, plane = (long long)H * W, sample = C * plane;
    for (long long r = blockIdx.y; r < rows; r += gridDim.y) {
        const int q = r % kw, p = (r / kw) % kh;
        const long long c = r / ((long long)kh * kw);
        const int y = i * sh - pt + p * dh, u = j * sw - pl + q * dw;
        const bool inside = y >= 0 && y < H && u >= 0 && u < W;
        const long long src = inside ? c * plane + (long long)y * W + u : 0;
        for (int n = blockIdx.z; n < N; n += gridDim.z)
            col[(r * N + n) * L + l] = inside ? x[n * sample + src] : value;
    }
}
"""

# gx[n, c, h, w] = Σ_{p, q} gcol[c, p, q, n, i, j] with i·sh = h + pt − p·dh, j·sw = w + pl − q·dw.
_COL2IM = r"""
extern "C" __global__ void nutshell_col2im_DTYPE(
        const DTYPE* col, DTYPE* gx, long long total, int N, int C, int H, int W, int kh, int kw,
        int sh, int sw, int pt, int pl, int dh, int dw, int oh, int ow) {
    long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= total) return;
    const int w = idx % W;
    long long t = idx / W;
    const int h = t % H; t /= H;
    const long long c = t % C, n = t / C;
    DTYPE s = 0;
    for (int p = 0; p < kh; ++p) {
        const int y = h + pt - p * dh;
        if (y < 0 || y % sh != 0 || y / sh >= oh) continue;
        for (int q = 0; q < kw; ++q) {
            const int u = w + pl - q * dw;
            if (u < 0 || u % sw != 0 || u / sw >= ow) continue;
            s += col[((((c * kh + p) * kw + q) * N + n) * oh + y / sh) * ow + u / sw];
        }
    }
    gx[idx] = s;
}
"""

_CTYPES = {np.dtype(np.float32): "float", np.dtype(np.float64): "double"}
_BLOCK = 256
_GRID_YZ = 65535            # the largest y and z grid dimensions CUDA allows
_THREADS = 1 << 18          # enough threads to fill a large GPU (132 SMs × 2048)


HALF = np.dtype(np.float16)


def _widened(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` with every float16 array argument as a float32 copy, its result (or each of its
    results) rounded once back to float16; arguments of other dtypes pass as they are."""
    def call(*args: Any) -> Any:
        if not any(getattr(a, "dtype", None) == HALF for a in args):
            return fn(*args)
        out = fn(*(a.astype(np.float32) if getattr(a, "dtype", None) == HALF else a for a in args))
        return tuple(o.astype(HALF) for o in out) if isinstance(out, tuple) else out.astype(HALF)
    return call


@functools.cache
def elementwise(name: str) -> Callable[..., Any]:
    """The named ElementwiseKernel (built on first use; CuPy specialises it per dtype)."""
    cp = usable_cupy()
    inputs, outputs, body = _ELEMENTWISE[name]
    kernel = cp.ElementwiseKernel(inputs, outputs, body, f"nutshell_{name}", preamble=_PREAMBLE)
    return _widened(kernel)


@functools.cache
def _raw(source: str, name: str, dtype: np.dtype) -> Any:
    ctype = _CTYPES[np.dtype(dtype)]
    return usable_cupy().RawKernel(source.replace("DTYPE", ctype), f"nutshell_{name}_{ctype}")


def _geometry(n: int, c: int, win: Window) -> tuple[np.int32, ...]:
    """The int arguments N, C, H, W, kh, kw, sh, sw, pt, pl, dh, dw, oh, ow of both raw kernels."""
    vals = (n, c, win.h, win.w, win.kh, win.kw, win.sh, win.sw, win.pt, win.pl, win.dh, win.dw, win.oh, win.ow)
    return tuple(np.int32(v) for v in vals)


def _launch(kernel: Any, total: int, *args: Any) -> None:
    if total:
        kernel(((total + _BLOCK - 1) // _BLOCK,), (_BLOCK,), (*args,))


@_widened
def im2col(x: Any, win: Window, value: float) -> Any:
    """Column array (C, kh, kw, N, oH, oW) of x (N, C, H, W) on the GPU."""
    cp = usable_cupy()
    x = cp.ascontiguousarray(x)
    n, c = x.shape[:2]
    col = cp.empty((c, win.kh, win.kw, n, win.oh, win.ow), dtype=x.dtype)
    if col.size:
        rows, block = c * win.kh * win.kw, min(_BLOCK, -(-win.out_size // 32) * 32)
        splits = min(n, max(1, _THREADS // (rows * win.out_size)))       # samples split over blocks
        grid = (-(-win.out_size // block), min(rows, _GRID_YZ), min(splits, _GRID_YZ))
        _raw(_IM2COL, "im2col", x.dtype)(grid, (block,), (x, col, *_geometry(n, c, win), x.dtype.type(value)))
    return col


@_widened
def col2im(gcol: Any, win: Window) -> Any:
    """gx (N, C, H, W) from gcol (C, kh, kw, N, oH, oW) on the GPU, one thread per pixel."""
    cp = usable_cupy()
    gcol = cp.ascontiguousarray(gcol)
    n, c = gcol.shape[3], gcol.shape[0]
    gx = cp.empty((n, c, win.h, win.w), dtype=gcol.dtype)
    _launch(_raw(_COL2IM, "col2im", gcol.dtype), gx.size, gcol, gx, np.int64(gx.size), *_geometry(n, c, win))
    return gx


@_widened
def lstm_gates(z: Any, c: Any) -> tuple[Any, Any]:
    """(h', c') of one LSTM step from z (N, 4H) and c (N, H)."""
    cp = usable_cupy()
    z, c = cp.ascontiguousarray(z), cp.ascontiguousarray(c)
    return elementwise("lstm_gates")(z, c, c.shape[1])


@_widened
def lstm_gates_grad(z: Any, c: Any, c_new: Any, gh: Any, gc: Any) -> tuple[Any, Any]:
    """(dz (N, 4H), gc_prev (N, H)) of one LSTM step."""
    cp = usable_cupy()
    z, c, c_new, gh, gc = (cp.ascontiguousarray(a) for a in (z, c, c_new, gh, gc))
    gc_prev, dz = cp.empty_like(c), cp.empty_like(z)
    elementwise("lstm_gates_grad")(z, c, c_new, gh, gc, c.shape[1], gc_prev, dz)
    return dz, gc_prev


def warmup() -> None:
    """Compile every kernel of this module for float32 and float64 (CuPy caches them on disk)."""
    from nutshell.backends.cupy_impl.im2col import Window

    cp = usable_cupy()
    win = Window.make((3, 3), (2, 2), (1, 1), (1, 1, 0, 0), (1, 1))
    for dtype in _CTYPES:
        x = cp.ones((1, 1, 3, 3), dtype=dtype)
        col2im(im2col(x, win, 0.0), win)
        z, c = cp.ones((1, 4), dtype=dtype), cp.ones((1, 1), dtype=dtype)
        h_new, c_new = lstm_gates(z, c)
        lstm_gates_grad(z, c, c_new, h_new, c_new)
        elementwise("sigmoid")(x)
        elementwise("sigmoid_grad")(x, x)
        elementwise("tanh_grad")(x, x)
    cp.cuda.Device().synchronize()
