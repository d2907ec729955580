"""The reference's transcendental functions go through the C library (not NumPy's CPU-dependent loops),
with NumPy's IEEE results where Python's ``math`` would raise."""

from __future__ import annotations

import numpy as np
import pytest

from nutshell.spec.reference import tracked
from nutshell.spec.reference.tracked import T

EDGES = np.array([-np.inf, -1000.0, -1.0, -0.0, 0.0, 1e-300, 0.5, 1.0, 709.0, 710.0, 1000.0, np.inf, np.nan])


@pytest.mark.parametrize(("fn", "ref"), [(tracked.exp, np.exp), (tracked.log, np.log), (tracked.log1p, np.log1p),
                                         (tracked.tanh, np.tanh)])
def test_edges_match_numpy_ieee_results(fn, ref):
    with np.errstate(all="ignore"):
        want = ref(EDGES)
    got = fn(T(EDGES)).v
    assert got.dtype == np.float64 and got.shape == EDGES.shape
    np.testing.assert_allclose(got, want, rtol=4 * 2.0**-52, atol=0)   # same inf/nan places, ≤ 4 ulps elsewhere


def test_power_edges_and_shapes():
    x = np.array([0.0, 0.0, -2.0, 4.0, np.inf, 1e300])
    with np.errstate(all="ignore"):
        want = np.power(x, -0.5)
    np.testing.assert_allclose(tracked.power(T(x), -0.5).v, want, rtol=4 * 2.0**-52, atol=0)
    assert tracked.exp(T(np.array(0.0))).v.shape == () and tracked.exp(T(np.zeros((2, 0)))).v.shape == (2, 0)
