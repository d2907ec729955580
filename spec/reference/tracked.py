"""Float64 values that carry a first-order bound on their own rounding error.

The reference computes every golden with :class:`T` arrays. Each ``T`` holds the float64 value
``v`` and ``e``: a bound, in units of the unit roundoff ``u`` of the format under test, on how
far a correctly-implemented backend working in that format may land from ``v``. The rules are
the standard first-order forward error bounds (Higham, *Accuracy and Stability of Numerical
Algorithms*, ch. 2–3), applied operation by operation:

* exact inputs: e = 0 (vectors hold values that every tested dtype represents exactly);
* a ⊕ b (+, −, ×, ÷): the propagated input errors plus one rounding of the result, |r|;
* a sum of n terms: Σe + (n − 1)·Σ|a|; a dot product of n terms (einsum): γ_n = n·Σ|a||b|,
  with a folded-in bias counted as one more term;
* a transcendental f: |f'(a)|·e(a) + c_t·|f(a)|, c_t the spec's ``transcendental_ulps``;
* max, ReLU, indexing, padding, reshapes: the error of the element(s) they pass through.

The conformance bound for a dtype is ``safety · u · e + floor`` (see :mod:`spec.tolerance`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

# Library implementations of exp, log, log1p, tanh, pow and sqrt are correct to within a few
# units in the last place; this is the c_t of the module docstring. spec/concepts.yaml states
# the same number under tolerance.transcendental_ulps, and a test holds them equal.
TRANSCENDENTAL_ULPS = 4.0


def _f32_exact(c: float) -> bool:
    return float(np.float32(c)) == c


class T:
    """A float64 array with its rounding-error bound (in units of u)."""

    __slots__ = ("e", "v")
    __array_priority__ = 100

    def __init__(self, v, e=None):
        self.v = np.asarray(v, dtype=np.float64)
        self.e = np.zeros_like(self.v) if e is None else np.broadcast_to(np.asarray(e, np.float64), self.v.shape).copy()

    # --- construction ---------------------------------------------------------------------

    @staticmethod
    def const(c: float) -> T:
        """A constant the backend must round into its format: one rounding unless exact."""
        return T(c, 0.0 if _f32_exact(c) else abs(c))

    @staticmethod
    def wrap(x) -> T:
        return x if isinstance(x, T) else T.const(float(x)) if np.ndim(x) == 0 else T(x)

    # --- array protocol -------------------------------------------------------------------

    @property
    def shape(self) -> tuple[int, ...]:
        return self.v.shape

    @property
    def ndim(self) -> int:
        return self.v.ndim

    def __getitem__(self, idx) -> T:
        return T(self.v[idx], self.e[idx])

    def __setitem__(self, idx, other) -> None:
        other = T.wrap(other)
        self.v[idx] = other.v
        self.e[idx] = other.e

    def reshape(self, *shape) -> T:
        return T(self.v.reshape(*shape), self.e.reshape(*shape))

    def transpose(self, *axes) -> T:
        return T(self.v.transpose(*axes), self.e.transpose(*axes))

    def flip(self, axis) -> T:
        return T(np.flip(self.v, axis), np.flip(self.e, axis))

    def copy(self) -> T:
        return T(self.v.copy(), self.e.copy())

    def __repr__(self) -> str:
        return f"T(v={self.v!r}, e={self.e!r})"

    # --- arithmetic: each result rounded once -----------------------------------------------

    def __add__(self, o) -> T:
        o = T.wrap(o)
        r = self.v + o.v
        return T(r, self.e + o.e + np.abs(r))

    __radd__ = __add__

    def __sub__(self, o) -> T:
        o = T.wrap(o)
        r = self.v - o.v
        return T(r, self.e + o.e + np.abs(r))

    def __rsub__(self, o) -> T:
        return T.wrap(o) - self

    def __neg__(self) -> T:
        return T(-self.v, self.e)

    def __mul__(self, o) -> T:
        o = T.wrap(o)
        r = self.v * o.v
        return T(r, np.abs(o.v) * self.e + np.abs(self.v) * o.e + np.abs(r))

    __rmul__ = __mul__

    def __truediv__(self, o) -> T:
        o = T.wrap(o)
        with np.errstate(divide="ignore", invalid="ignore"):
            r = self.v / o.v
            e = self.e / np.abs(o.v) + np.abs(r) * o.e / np.abs(o.v) + np.abs(r)
        return T(r, e)

    def __rtruediv__(self, o) -> T:
        return T.wrap(o) / self

    # --- reductions ------------------------------------------------------------------------

    def sum(self, axis=None, keepdims: bool = False) -> T:
        """Σ over ``axis``: Σe + (n − 1)·Σ|a| (recursive summation, the worst order)."""
        n = self.v.size if axis is None else int(np.prod([self.v.shape[a] for a in np.atleast_1d(axis)]))
        v = self.v.sum(axis=axis, keepdims=keepdims)
        e = self.e.sum(axis=axis, keepdims=keepdims) + max(n - 1, 0) * np.abs(self.v).sum(axis=axis, keepdims=keepdims)
        return T(v, e)

    def mean(self, axis=None, keepdims: bool = False) -> T:
        n = self.v.size if axis is None else int(np.prod([self.v.shape[a] for a in np.atleast_1d(axis)]))
        return self.sum(axis, keepdims) / T.const(float(n))

    def max(self, axis=None, keepdims: bool = False) -> T:
        """Largest element; its error is at most the largest error among the candidates."""
        return T(self.v.max(axis=axis, keepdims=keepdims), self.e.max(axis=axis, keepdims=keepdims))


# --- free functions -------------------------------------------------------------------------

def einsum(subscripts: str, a: T, b: T, bias: T | None = None) -> T:
    """A two-operand contraction, optionally plus a bias: each output is a dot product of
    n terms (n = product of the contracted sizes, + 1 with a bias), bounded by
    e = |a|·e_b + e_a·|b| + e_bias + n·(|a|·|b| + |bias|).
    """
    ins, out = subscripts.replace(" ", "").split("->")
    sa, sb = ins.split(",")
    sizes = dict(zip(sa, a.shape, strict=True)) | dict(zip(sb, b.shape, strict=True))
    n = int(np.prod([sizes[c] for c in set(sa + sb) - set(out)] or [1]))
    v = np.einsum(subscripts, a.v, b.v)
    mag = np.einsum(subscripts, np.abs(a.v), np.abs(b.v))
    e = np.einsum(subscripts, np.abs(a.v), b.e) + np.einsum(subscripts, a.e, np.abs(b.v))
    if bias is not None:
        v = v + bias.v
        mag = mag + np.abs(bias.v)
        e = e + bias.e
        n += 1
    return T(v, e + n * mag)


def _unary(a: T, value: np.ndarray, slope: np.ndarray, ulps: float = TRANSCENDENTAL_ULPS) -> T:
    return T(value, np.abs(slope) * a.e + ulps * np.abs(value))


def _ieee(fn: Callable[..., float], overflow: Callable[..., float], domain: Callable[..., float]):
    """``fn`` from Python's ``math`` with IEEE results where ``math`` raises instead (±inf, nan)."""
    def one(*args: float) -> float:
        try:
            return fn(*args)
        except OverflowError:
            return overflow(*args)
        except ValueError:
            return domain(*args)
    return one


def _libm(fn: Callable[..., float], *arrays: np.ndarray) -> np.ndarray:
    """``fn`` element by element through the C library, not through NumPy's loops.

    NumPy chooses its float64 exp, log and tanh loops by CPU (AVX-512, AVX2 or the C library), and
    they differ in the last bit: the same spec regenerated different goldens for 15 vector files on
    an AVX2 machine than on the AVX-512 one that wrote them. The C library's functions are the same
    code on every x86-64 machine with FMA, so the goldens, and their sha256 lines, do not depend on
    the machine that regenerates them. The vectors are small; the loop costs milliseconds.
    """
    return np.asarray(np.frompyfunc(fn, len(arrays), 1)(*arrays), dtype=np.float64)


_EXP = _ieee(math.exp, lambda t: math.inf, lambda t: math.nan)
_LOG = _ieee(math.log, lambda t: math.nan, lambda t: -math.inf if t == 0 else math.nan)
_LOG1P = _ieee(math.log1p, lambda t: math.nan, lambda t: -math.inf if t == -1 else math.nan)
_POW = _ieee(math.pow, lambda t, p: math.inf, lambda t, p: math.inf if t == 0 else math.nan)


def exp(a: T) -> T:
    v = _libm(_EXP, a.v)
    return _unary(a, v, v)


def log(a: T) -> T:
    with np.errstate(divide="ignore", invalid="ignore"):
        return _unary(a, _libm(_LOG, a.v), 1.0 / a.v)


def log1p(a: T) -> T:
    return _unary(a, _libm(_LOG1P, a.v), 1.0 / (1.0 + a.v))


def tanh(a: T) -> T:
    v = _libm(math.tanh, a.v)
    return _unary(a, v, 1.0 - v * v)


def sigmoid(a: T) -> T:
    """σ(a) = 1 / (1 + e^(−a)), treated as one library function.

    Evaluated through z = e^(−|a|) ≤ 1 as 1/(1 + z) for a ≥ 0 and z/(1 + z) otherwise: it never
    overflows, gives exactly 0 and 1 at ∓1000, and keeps full relative accuracy in the lower tail
    (½·tanh(a/2) + ½ cancels there: at a = −30 it is off by 1e−3 relative in float64).
    """
    z = _libm(_EXP, -np.abs(a.v))
    v = np.where(a.v >= 0, 1.0 / (1.0 + z), z / (1.0 + z))
    return _unary(a, v, v * (1.0 - v))


def power(a: T, p: float) -> T:
    v = _libm(_POW, a.v, p)
    return _unary(a, v, p * _libm(_POW, a.v, p - 1.0))


def abs_(a: T) -> T:
    return T(np.abs(a.v), a.e)


def maximum(a: T, b) -> T:
    """Elementwise max (ReLU is maximum(a, 0)): the error of whichever side is taken, bounded
    by the larger of the two."""
    b = T.wrap(b)
    return T(np.maximum(a.v, b.v), np.maximum(a.e, b.e))


def where(cond: np.ndarray, a, b) -> T:
    a, b = T.wrap(a), T.wrap(b)
    return T(np.where(cond, a.v, b.v), np.where(cond, a.e, b.e))


def concat(parts: Sequence[T], axis: int) -> T:
    return T(np.concatenate([p.v for p in parts], axis), np.concatenate([p.e for p in parts], axis))


def stack(parts: Sequence[T], axis: int = 0) -> T:
    return T(np.stack([p.v for p in parts], axis), np.stack([p.e for p in parts], axis))


def pad(a: T, widths, value: float = 0.0) -> T:
    """np.pad with a constant; the padding is exact (its error is 0)."""
    return T(np.pad(a.v, widths, constant_values=value), np.pad(a.e, widths))


def zeros(shape) -> T:
    return T(np.zeros(shape))


def windows(a: T, kernel, stride, dilation, out) -> T:
    """Sliding windows over the last two axes: (..., Hp, Wp) -> (..., kh, kw, oH, oW) with
    [..., p, q, i, j] = a[..., i·sh + p·dh, j·sw + q·dw]. Pure indexing: errors pass through."""
    (kh, kw), (sh, sw), (dh, dw), (oh, ow) = kernel, stride, dilation, out
    taps = [a[..., p * dh:p * dh + sh * (oh - 1) + 1:sh, q * dw:q * dw + sw * (ow - 1) + 1:sw]
            for p in range(kh) for q in range(kw)]
    cols = stack(taps, axis=-3)  # (..., kh*kw, oH, oW)
    return cols.reshape(*a.shape[:-2], kh, kw, oh, ow)


def scatter_windows(cols: T, size, stride, dilation) -> T:
    """The adjoint of :func:`windows`: adds every window entry back onto its (Hp, Wp) pixel.

    A pixel that receives m terms is a sum of m terms, bounded for any summation order:
    e = Σe + (m − 1)·Σ|a|. Exact zeros (value and error 0, e.g. the losers of a max) are not
    counted: adding them is exact, so a pixel fed by one term passes it through unchanged.
    """
    *lead, kh, kw, oh, ow = cols.shape
    (sh, sw), (dh, dw) = stride, dilation
    v, e, mag, count = (np.zeros((*lead, *size)) for _ in range(4))
    for p in range(kh):
        for q in range(kw):
            at = (..., slice(p * dh, p * dh + sh * (oh - 1) + 1, sh), slice(q * dw, q * dw + sw * (ow - 1) + 1, sw))
            term, term_e = cols.v[..., p, q, :, :], cols.e[..., p, q, :, :]
            v[at] += term
            e[at] += term_e
            mag[at] += np.abs(term)
            count[at] += (term != 0) | (term_e != 0)
    return T(v, e + np.maximum(count - 1, 0) * mag)
