"""The tolerance model, in one place.

Each golden element carries ``e``: a first-order bound, in units of the unit roundoff u, on the
rounding error a correct implementation commits (spec/reference/tracked.py computes it beside
the golden). The bound for a dtype is

    bound = safety · u(dtype) · e + max(floor(dtype), safety · η(dtype) · f)

* ``safety`` (2): a float64 check compares two float64 computations (backend and golden), each
  within u·e of the exact value; the factor also absorbs second-order terms, negligible here.
* ``floor``: gradual underflow adds an absolute error of up to half the smallest subnormal η per
  rounded product, quotient or function; the floor allows 64 such roundings (64 · 2^−149 in
  float32, 64 · 2^−1074 in float64) wherever nothing more is known.
* ``f``: those underflow roundings as the reference tracked them, in units of η, carried through
  later operations like ``e`` (an underflowed gradient term multiplied by 20 is 20 times as far
  off); vectors store it as ``err_f.*``/``gerr_f.*``. Where ``f`` is not given the floor alone holds.

A check passes when every element is within its bound: usage = max |actual − golden| / bound ≤ 1.
NaN in the golden must be NaN in the result; ±inf must match exactly. A finite golden beyond the
format's range must come back as ±inf of its sign (the format's overflow: float16 rounds every
|y| ≥ 65520 to inf); within its bound of that edge either is accepted.

Low precision (float16, bfloat16) has two bounds (spec/reference/tracked.py): the storage-format
bound above, which a result must meet, and the float32-accumulation bound

    bound₃₂ = safety · (u(dtype) · r + u(float32) · a) + floor(dtype),

which a result computed with float32 accumulators and rounded once meets as well. A check records
its usage under both; :func:`consistent_with` names the accumulation its result agrees with.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import ml_dtypes
import numpy as np

from nutshell.spec.signatures import DTYPES

STORAGE = "storage-format accumulation"
FLOAT32 = "float32 accumulation"
NEITHER = "neither: outside the storage-format bound"


def smallest_subnormal(dtype: str) -> float:
    """η: the spacing of ``dtype``'s subnormals (2⁻¹⁴⁹ in float32, 2⁻²⁴ in float16)."""
    return float(ml_dtypes.finfo(DTYPES[dtype]).smallest_subnormal)


def underflow(dtype: str, tolerance: dict, f: np.ndarray | None = None) -> np.ndarray | float:
    """The absolute part of the bound: max(floor, safety·η·f), the floor alone without ``f``."""
    floor = tolerance["underflow_floor"][dtype]
    if f is None:
        return floor
    return np.maximum(floor, tolerance["safety"] * smallest_subnormal(dtype) * np.asarray(f, np.float64))


def bound(e: np.ndarray, dtype: str, tolerance: dict, f: np.ndarray | None = None) -> np.ndarray:
    """Per-element bound for results computed in ``dtype`` (see the module docstring)."""
    u = tolerance["unit_roundoff"][dtype]
    return tolerance["safety"] * u * np.asarray(e, np.float64) + underflow(dtype, tolerance, f)


def bound_float32_accumulation(r: np.ndarray, a: np.ndarray, dtype: str, tolerance: dict,
                               f: np.ndarray | None = None) -> np.ndarray:
    """Per-element bound for ``dtype`` results accumulated in float32 and rounded once into ``dtype``:
    safety · (u(dtype)·r + u(float32)·a) + max(floor, safety·η·f) (float32's η is below dtype's)."""
    u, u32 = tolerance["unit_roundoff"][dtype], tolerance["unit_roundoff"]["float32"]
    scaled = u * np.asarray(r, np.float64) + u32 * np.asarray(a, np.float64)
    return tolerance["safety"] * scaled + underflow(dtype, tolerance, f)


def overflow_threshold(dtype: str) -> float:
    """The smallest |y| that rounds to ±inf in ``dtype``: the largest finite value plus half its
    ulp, (2 − ε/2)·2^(emax−1); 65520 for float16 (largest finite 65504)."""
    info = ml_dtypes.finfo(DTYPES[dtype])      # NumPy's finfo knows bfloat16 only with ml_dtypes ≥ 0.7
    return (2.0 - float(info.eps) / 2) * 2.0 ** (int(info.maxexp) - 1)


def consistent_with(storage: Comparison, float32: Comparison) -> str:
    """The accumulation a low-precision result agrees with: float32 when it lies within the
    float32-accumulation bound, else the storage format when within that, else neither."""
    return FLOAT32 if float32.ok else STORAGE if storage.ok else NEITHER


@dataclass
class Comparison:
    """How one result array compares with its golden."""

    ok: bool
    usage: float            # max |err| / bound over finite elements (0 when there are none)
    mismatched: int         # elements outside their bound (NaN/inf disagreements included)
    total: int
    max_abs: float
    max_rel: float
    where: tuple[int, ...] | None   # index of the worst element
    actual_at: float | None
    golden_at: float | None
    bound_at: float | None
    shape_ok: bool = True

    def to_dict(self) -> dict:
        d = asdict(self)
        d["where"] = list(self.where) if self.where is not None else None
        return d

    def describe(self) -> str:
        if not self.shape_ok:
            return "shape mismatch"
        share = self.mismatched / max(self.total, 1)
        s = (f"{self.mismatched}/{self.total} elements ({share:.1%}) outside the bound; "
             f"max abs err {self.max_abs:.3g}, max rel err {self.max_rel:.3g}, bound usage {self.usage:.3g}")
        if self.where is not None:
            s += (f"; worst at {list(self.where)}: got {self.actual_at!r}, golden {self.golden_at!r},"
                  f" bound {self.bound_at:.3g}")
        return s


def compare(actual: np.ndarray, golden: np.ndarray, e: np.ndarray, dtype: str, tolerance: dict,
            f: np.ndarray | None = None) -> Comparison:
    """Compare ``actual`` (any float dtype) with the float64 ``golden`` under the model."""
    golden = np.asarray(golden, np.float64)
    return compare_within(actual, golden, bound(np.broadcast_to(e, golden.shape), dtype, tolerance, f), dtype)


def _overflowing(golden: np.ndarray, b: np.ndarray, dtype: str) -> tuple[np.ndarray, np.ndarray]:
    """(golden with ±inf where every value within its bound overflows ``dtype``, where ±inf of the
    golden's sign is also accepted because the bound reaches past the edge)."""
    edge = overflow_threshold(dtype)
    with np.errstate(invalid="ignore"):
        must = np.isfinite(golden) & (np.abs(golden) - b >= edge)
        may = np.isfinite(golden) & (np.abs(golden) + b >= edge)
    return np.where(must, np.copysign(np.inf, golden), golden), may


def compare_within(actual: np.ndarray, golden: np.ndarray, b: np.ndarray, dtype: str) -> Comparison:
    """Compare ``actual`` with the float64 ``golden`` element by element within the bound ``b``."""
    actual = np.asarray(actual)
    golden = np.asarray(golden, np.float64)
    if actual.shape != golden.shape:
        return Comparison(False, float("inf"), golden.size, golden.size, float("inf"), float("inf"),
                          None, None, None, None, shape_ok=False)
    a = actual.astype(np.float64)
    b = np.broadcast_to(b, golden.shape)
    golden, may_overflow = _overflowing(golden, b, dtype)
    finite = np.isfinite(golden)
    special_bad = ~finite & ~((np.isnan(golden) & np.isnan(a)) | (a == golden))
    with np.errstate(invalid="ignore", over="ignore"):
        err = np.where(finite, np.abs(a - golden), 0.0)
        err = np.where(finite & ~np.isfinite(a), np.inf, err)
        err = np.where(may_overflow & (a == np.copysign(np.inf, golden)), 0.0, err)
        ratio = np.where(finite, err / b, 0.0)
    bad = (ratio > 1.0) | special_bad
    worst = _worst(ratio, special_bad)
    with np.errstate(over="ignore"):
        rel = err / np.maximum(np.abs(golden), np.finfo(np.float64).tiny)
    rel = np.where(finite, rel, 0.0)
    return Comparison(
        ok=not bad.any(),
        usage=float(ratio.max()) if ratio.size else 0.0,
        mismatched=int(bad.sum()), total=int(golden.size),
        max_abs=float(err.max()) if err.size else 0.0,
        max_rel=float(rel.max()) if rel.size else 0.0,
        where=worst,
        actual_at=None if worst is None else float(a[worst]),
        golden_at=None if worst is None else float(golden[worst]),
        bound_at=None if worst is None else float(b[worst]),
    )


def _worst(ratio: np.ndarray, special_bad: np.ndarray) -> tuple[int, ...] | None:
    if ratio.size == 0:
        return None
    if special_bad.any():
        return tuple(int(i) for i in np.argwhere(special_bad)[0])
    return tuple(int(i) for i in np.unravel_index(int(np.argmax(ratio)), ratio.shape))
