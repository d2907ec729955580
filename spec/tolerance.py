"""The tolerance model, in one place.

Each golden element carries ``e``: a first-order bound, in units of the unit roundoff u, on the
rounding error a correct implementation commits (spec/reference/tracked.py computes it beside
the golden). The bound for a dtype is

    bound = safety · u(dtype) · e + floor(dtype)

* ``safety`` (2): a float64 check compares two float64 computations (backend and golden), each
  within u·e of the exact value; the factor also absorbs second-order terms, negligible here.
* ``floor``: gradual underflow adds an absolute error of up to half the smallest subnormal per
  operation; the floor allows 64 such roundings (64 · 2^−149 in float32, 64 · 2^−1074 in float64).

A check passes when every element is within its bound: usage = max |actual − golden| / bound ≤ 1.
NaN in the golden must be NaN in the result; ±inf must match exactly.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


def bound(e: np.ndarray, dtype: str, tolerance: dict) -> np.ndarray:
    """Per-element bound for results computed in ``dtype`` (see the module docstring)."""
    u = tolerance["unit_roundoff"][dtype]
    return tolerance["safety"] * u * np.asarray(e, np.float64) + tolerance["underflow_floor"][dtype]


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


def compare(actual: np.ndarray, golden: np.ndarray, e: np.ndarray, dtype: str, tolerance: dict) -> Comparison:
    """Compare ``actual`` (any float dtype) with the float64 ``golden`` under the model."""
    actual = np.asarray(actual)
    golden = np.asarray(golden, np.float64)
    if actual.shape != golden.shape:
        return Comparison(False, float("inf"), golden.size, golden.size, float("inf"), float("inf"),
                          None, None, None, None, shape_ok=False)
    a = actual.astype(np.float64)
    b = bound(np.broadcast_to(e, golden.shape), dtype, tolerance)
    finite = np.isfinite(golden)
    special_bad = ~finite & ~((np.isnan(golden) & np.isnan(a)) | (a == golden))
    with np.errstate(invalid="ignore", over="ignore"):
        err = np.where(finite, np.abs(a - golden), 0.0)
        err = np.where(finite & ~np.isfinite(a), np.inf, err)
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
