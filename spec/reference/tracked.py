"""Float64 values that carry a first-order bound on their own rounding error.

The reference computes every golden with :class:`T` arrays. Each ``T`` holds the float64 value
``v`` and ``e``: a bound, in units of the unit roundoff ``u`` of the format under test, on how
far a correctly-implemented backend working in that format may land from ``v``. The rules are
the standard first-order forward error bounds (Higham, *Accuracy and Stability of Numerical
Algorithms*, ch. 2–3), applied operation by operation:

* exact inputs: e = 0 (vectors hold values that every tested dtype represents exactly);
* a ⊕ b (+, −, ×, ÷): the propagated input errors plus one rounding of the result, |r|; a
  product (and each term of a dot product) also carries the second-order term u·e_a·e_b, with u
  the coarsest format's (:func:`second_order_u`), which matters only where both factors lie
  within their own error of 0;
* a sum of n terms: Σe + (n − 1)·Σ|a|; a dot product of n terms (einsum): γ_n = n·Σ|a||b|,
  with a folded-in bias counted as one more term;
* a transcendental f: |f'(a)|·e(a) + c_t·|f(a)|, c_t the spec's ``transcendental_ulps``;
* max, ReLU, indexing, padding, reshapes: the error of the element(s) they pass through.

Gradual underflow adds an absolute error of up to η/2 (η the format's smallest subnormal) to a
rounded product, quotient or library function (a sum of subnormals is exact, so sums add none).
``f`` counts it, in units of η, with the same coefficients as ``e``: a product adds ½ (a dot
product of n terms n/2), a transcendental c_t, and later products carry it on (|b|·f_a + |a|·f_b):
an underflowed term multiplied by 20 is 20 times as far off.

The conformance bound for a dtype is ``safety · u · e + max(floor, safety · η · f)`` (see
:mod:`spec.tolerance`).

Low precision (float16, bfloat16) has two legitimate implementations, and ``T`` bounds both:

* ``e`` as above, every rounding in the storage format: an implementation that also accumulates
  its sums and dot products in float16 or bfloat16 (the loosest one);
* ``r`` and ``a``, the same computation with its accumulations kept in float32 and each result
  rounded once into the storage format: ``r`` counts the roundings into the storage format (units
  of its u), ``a`` those inside the float32 accumulator (units of float32's u, 2⁻²⁴). A sum of
  n > 1 terms adds (n − 1)·Σ|a| to ``a`` and its one final rounding |r| to ``r``; a transcendental
  evaluated in float32 adds c_t·|f| to ``a`` and |f| to ``r``. Errors of the inputs propagate into
  ``r`` and ``a`` with the same factors as into ``e`` (first order, linear).

The float32-accumulation bound is ``safety · (u·r + u₃₂·a) + floor``. A value built without the
split (``T(v, e)``) counts all of ``e`` as storage roundings (``r = e``, ``a = 0``), which bounds
both implementations.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar

import ml_dtypes
import numpy as np

# Library implementations of exp, log, log1p, tanh, pow and sqrt are correct to within a few
# units in the last place; this is the c_t of the module docstring. spec/concepts.yaml states
# the same number under tolerance.transcendental_ulps, and a test holds them equal.
TRANSCENDENTAL_ULPS = 4.0


_EXACT_IN: ContextVar[tuple[type, ...]] = ContextVar("exact_in", default=(np.float32,))


@contextmanager
def constants_exact_in(*formats: type) -> Iterator[None]:
    """Within the block a constant counts as exact only when every one of ``formats`` holds it
    (the low-precision vectors: float32, float16 and bfloat16); outside it, float32 alone."""
    token = _EXACT_IN.set(formats)
    try:
        yield
    finally:
        _EXACT_IN.reset(token)


def second_order_u() -> float:
    """The unit roundoff of the coarsest format under test (float32's 2⁻²⁴, or 2⁻⁸ inside
    ``constants_exact_in`` with bfloat16): the factor of the second-order term of a product."""
    return max(float(ml_dtypes.finfo(f).eps) / 2 for f in _EXACT_IN.get())


def _exact(c: float) -> bool:
    with np.errstate(over="ignore"):
        return all(float(np.asarray(c).astype(f)) == c for f in _EXACT_IN.get())


def _arr(x, shape: tuple) -> np.ndarray:
    return np.broadcast_to(np.asarray(x, np.float64), shape).copy()


class T:
    """A float64 array with its rounding-error bounds: ``e`` in units of u (every rounding in the
    format under test), its float32-accumulation split ``r`` (units of u) + ``a`` (units of
    float32's u), and ``f``, the underflow roundings in units of η; see the module docstring."""

    __slots__ = ("a", "e", "f", "r", "v")
    __array_priority__ = 100

    def __init__(self, v, e=None, r=None, a=None, f=None):
        self.v = np.asarray(v, dtype=np.float64)
        self.e = np.zeros_like(self.v) if e is None else _arr(e, self.v.shape)
        self.r = self.e.copy() if r is None else _arr(r, self.v.shape)
        self.a = np.zeros_like(self.v) if a is None else _arr(a, self.v.shape)
        self.f = np.zeros_like(self.v) if f is None else _arr(f, self.v.shape)

    def _map(self, fn: Callable[[np.ndarray], np.ndarray]) -> T:
        """The same indexing or reshaping applied to the value and every bound."""
        return T(fn(self.v), fn(self.e), fn(self.r), fn(self.a), fn(self.f))

    @staticmethod
    def _rounded(v: np.ndarray, terms: Sequence[tuple[np.ndarray, T]], rounding: np.ndarray,
                 underflow: float = 0.0) -> T:
        """A result ``v`` whose error is Σ coef·(input error) + one rounding of size ``rounding``
        (in units of u; also one rounding into the storage format when accumulating in float32)
        and ``underflow`` (units of η: ½ for a product, 0 for a sum, which is exact there)."""
        def carried(kind: str) -> np.ndarray:
            return sum((c * getattr(t, kind) for c, t in terms), np.zeros_like(v))

        return T(v, carried("e") + rounding, carried("r") + rounding, carried("a"), carried("f") + underflow)

    # --- construction ---------------------------------------------------------------------

    @staticmethod
    def const(c: float) -> T:
        """A constant the backend must round into its format: one rounding unless exact."""
        return T(c, 0.0 if _exact(c) else abs(c))

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
        return self._map(lambda x: x[idx])

    def __setitem__(self, idx, other) -> None:
        other = T.wrap(other)
        for name in self.__slots__:
            getattr(self, name)[idx] = getattr(other, name)

    def reshape(self, *shape) -> T:
        return self._map(lambda x: x.reshape(*shape))

    def transpose(self, *axes) -> T:
        return self._map(lambda x: x.transpose(*axes))

    def flip(self, axis) -> T:
        return self._map(lambda x: np.flip(x, axis))

    def copy(self) -> T:
        return self._map(np.copy)

    def __repr__(self) -> str:
        return f"T(v={self.v!r}, e={self.e!r}, r={self.r!r}, a={self.a!r}, f={self.f!r})"

    # --- arithmetic: each result rounded once -----------------------------------------------

    def __add__(self, o) -> T:
        o = T.wrap(o)
        r = self.v + o.v
        return T._rounded(r, [(1.0, self), (1.0, o)], np.abs(r))

    __radd__ = __add__

    def __sub__(self, o) -> T:
        o = T.wrap(o)
        r = self.v - o.v
        return T._rounded(r, [(1.0, self), (1.0, o)], np.abs(r))

    def __rsub__(self, o) -> T:
        return T.wrap(o) - self

    def __neg__(self) -> T:
        return T(-self.v, self.e, self.r, self.a, self.f)

    def __mul__(self, o) -> T:
        o = T.wrap(o)
        r = self.v * o.v
        return _second_order(T._rounded(r, [(np.abs(o.v), self), (np.abs(self.v), o)], np.abs(r), 0.5), self, o)

    __rmul__ = __mul__

    def __truediv__(self, o) -> T:
        o = T.wrap(o)
        with np.errstate(divide="ignore", invalid="ignore"):
            r = self.v / o.v

            def carried(mine: np.ndarray, theirs: np.ndarray) -> np.ndarray:
                return mine / np.abs(o.v) + np.abs(r) * theirs / np.abs(o.v)

            return T(r, carried(self.e, o.e) + np.abs(r), carried(self.r, o.r) + np.abs(r), carried(self.a, o.a),
                     carried(self.f, o.f) + 0.5)

    def __rtruediv__(self, o) -> T:
        return T.wrap(o) / self

    # --- reductions ------------------------------------------------------------------------

    def sum(self, axis=None, keepdims: bool = False) -> T:
        """Σ over ``axis``: Σe + (n − 1)·Σ|a| (recursive summation, the worst order). Accumulated
        in float32: (n − 1)·Σ|a| in units of float32's u, and one rounding |Σ| of the result."""
        n = self.v.size if axis is None else int(np.prod([self.v.shape[a] for a in np.atleast_1d(axis)]))

        def total(x: np.ndarray) -> np.ndarray:
            return x.sum(axis=axis, keepdims=keepdims)

        v, mag = total(self.v), max(n - 1, 0) * total(np.abs(self.v))
        final = np.abs(v) if n > 1 else np.zeros_like(v)
        return T(v, total(self.e) + mag, total(self.r) + final, total(self.a) + mag, total(self.f))

    def mean(self, axis=None, keepdims: bool = False) -> T:
        n = self.v.size if axis is None else int(np.prod([self.v.shape[a] for a in np.atleast_1d(axis)]))
        return self.sum(axis, keepdims) / T.const(float(n))

    def max(self, axis=None, keepdims: bool = False) -> T:
        """Largest element; its error is at most the largest error among the candidates."""
        return self._map(lambda x: x.max(axis=axis, keepdims=keepdims))


# --- free functions -------------------------------------------------------------------------

def einsum(subscripts: str, a: T, b: T, bias: T | None = None) -> T:
    """A two-operand contraction, optionally plus a bias: each output is a dot product of
    n terms (n = product of the contracted sizes, + 1 with a bias), bounded by
    e = |a|·e_b + e_a·|b| + e_bias + n·(|a|·|b| + |bias|). Accumulated in float32: n·(…) in
    units of float32's u and one rounding |y| of the result into the storage format, after one
    of the product |a·b| where a bias follows (libraries round the product before adding it).
    Each of the n products may underflow: f = |a|·f_b + f_a·|b| + f_bias + n/2.
    """
    ins, out = subscripts.replace(" ", "").split("->")
    sa, sb = ins.split(",")
    sizes = dict(zip(sa, a.shape, strict=True)) | dict(zip(sb, b.shape, strict=True))
    n = int(np.prod([sizes[c] for c in set(sa + sb) - set(out)] or [1]))
    v = np.einsum(subscripts, a.v, b.v)
    mag = np.einsum(subscripts, np.abs(a.v), np.abs(b.v))

    def propagated(kind: str) -> np.ndarray:
        return np.einsum(subscripts, np.abs(a.v), getattr(b, kind)) + \
            np.einsum(subscripts, getattr(a, kind), np.abs(b.v)) + (0.0 if bias is None else getattr(bias, kind))

    product, products = (np.abs(v) if bias is not None else 0.0), n
    if bias is not None:
        v = v + bias.v
        mag = mag + np.abs(bias.v)
        n += 1
    y = T(v, propagated("e") + n * mag, propagated("r") + product + np.abs(v), propagated("a") + n * mag,
          propagated("f") + products / 2)
    return _second_order(y, a, b, lambda x, z: np.einsum(subscripts, x, z))


def _second_order(y: T, a: T, b: T, combine: Callable[[np.ndarray, np.ndarray], np.ndarray] = np.multiply) -> T:
    """The product (or contraction) ``y`` of ``a`` and ``b`` with the term a first-order bound
    leaves out added: |δa·δb| ≤ u²·e_a·e_b = u·(u·e_a·e_b), u ≤ :func:`second_order_u`; in the
    split the storage and accumulator parts of each factor's error count together, u·r + u₃₂·a ≤
    u·(r + a). Negligible beside the first-order terms, except where both factors lie within their
    own error of 0 (a saturated gate's 1 − tanh² = 0 times a cotangent that is 0 only to within its
    bound): there it is all the error there is. With underflow, |δa·δb| ≤ (u·e_a + η·f_a)(u·e_b +
    η·f_b) adds η·(u·(e_a·f_b + f_a·e_b) + η·f_a·f_b) ≤ η·u·(e_a·f_b + f_a·e_b + f_a·f_b) to f (η ≤ u
    in every format)."""
    u = second_order_u()
    f = y.f + u * (combine(a.e, b.f) + combine(a.f, b.e) + combine(a.f, b.f))
    return T(y.v, y.e + u * combine(a.e, b.e), y.r + u * combine(a.r + a.a, b.r + b.a), y.a, f)


def _unary(a: T, value: np.ndarray, slope: np.ndarray, ulps: float = TRANSCENDENTAL_ULPS) -> T:
    """f(a): |f′(a)|·e_a + c_t·|f(a)|; evaluated in float32, c_t·|f| in float32's u and one
    rounding |f| into the storage format; a subnormal f(a) is within c_t units of η."""
    s = np.abs(slope)
    return T(value, s * a.e + ulps * np.abs(value), s * a.r + np.abs(value), s * a.a + ulps * np.abs(value),
             s * a.f + ulps)


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
    return T(np.abs(a.v), a.e, a.r, a.a, a.f)


def _fields(*ts: T) -> Iterator[list[np.ndarray]]:
    """The value, then each bound, of every ``T`` in ``ts``: one list per field."""
    return ([getattr(t, name) for t in ts] for name in ("v", "e", "r", "a", "f"))


def maximum(a: T, b) -> T:
    """Elementwise max (ReLU is maximum(a, 0)): the error of whichever side is taken, bounded
    by the larger of the two."""
    b = T.wrap(b)
    v, *bounds = (np.maximum(x, y) for x, y in _fields(a, b))
    return T(v, *bounds)


def where(cond: np.ndarray, a, b) -> T:
    return T(*(np.where(cond, x, y) for x, y in _fields(T.wrap(a), T.wrap(b))))


def concat(parts: Sequence[T], axis: int) -> T:
    return T(*(np.concatenate(f, axis) for f in _fields(*parts)))


def stack(parts: Sequence[T], axis: int = 0) -> T:
    return T(*(np.stack(f, axis) for f in _fields(*parts)))


def pad(a: T, widths, value: float = 0.0) -> T:
    """np.pad with a constant; the padding is exact (its error is 0)."""
    return T(np.pad(a.v, widths, constant_values=value), *(np.pad(x, widths) for x in (a.e, a.r, a.a, a.f)))


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
    v, e, r, a, f, mag, count = (np.zeros((*lead, *size)) for _ in range(7))
    for p in range(kh):
        for q in range(kw):
            at = (..., slice(p * dh, p * dh + sh * (oh - 1) + 1, sh), slice(q * dw, q * dw + sw * (ow - 1) + 1, sw))
            term = cols[..., p, q, :, :]
            for acc, part in ((v, term.v), (e, term.e), (r, term.r), (a, term.a), (f, term.f), (mag, np.abs(term.v))):
                acc[at] += part
            count[at] += (term.v != 0) | (term.e != 0)
    adds = np.maximum(count - 1, 0) * mag
    return T(v, e + adds, r + np.where(count > 1, np.abs(v), 0.0), a + adds, f)
