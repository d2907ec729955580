"""The tolerance model's comparison."""

from __future__ import annotations

import numpy as np

from nutshell import spec
from nutshell.spec import tolerance

TOL = spec.load().tolerance


def test_within_and_outside_the_bound():
    golden = np.array([1.0, 2.0])
    e = np.array([10.0, 10.0])
    b = tolerance.bound(e, "float32", TOL)
    inside = tolerance.compare((golden + 0.9 * b).astype(np.float32), golden, e, "float32", TOL)
    assert inside.ok and inside.usage <= 1
    outside = tolerance.compare(golden + np.array([0.0, 1.5]) * b, golden, e, "float32", TOL)
    assert not outside.ok and outside.mismatched == 1 and outside.where == (1,)
    assert 1.4 < outside.usage < 1.6
    assert "1/2 elements (50.0%)" in outside.describe()


def test_bound_scales_with_the_unit_roundoff():
    e = np.array([1.0])
    assert tolerance.bound(e, "float32", TOL)[0] > 1e8 * tolerance.bound(e, "float64", TOL)[0]


def test_nan_and_inf_must_match_exactly():
    golden = np.array([np.nan, np.inf, -np.inf, 1.0])
    e = np.zeros(4)
    assert tolerance.compare(golden.copy(), golden, e, "float64", TOL).ok
    for bad in ([0.0, np.inf, -np.inf, 1.0], [np.nan, -np.inf, -np.inf, 1.0], [np.nan, np.inf, -np.inf, np.nan]):
        assert not tolerance.compare(np.array(bad), golden, e, "float64", TOL).ok


def test_shape_mismatch_fails():
    cmp = tolerance.compare(np.zeros(3), np.zeros(4), np.zeros(4), "float32", TOL)
    assert not cmp.ok and cmp.describe() == "shape mismatch"
