"""The second-order term of a tracked product (spec/reference/tracked.py): where both factors lie
within their own error of 0, the first-order bound is 0 and the second-order term is all there is."""

from __future__ import annotations

import ml_dtypes
import numpy as np

from nutshell.spec.reference import tracked
from nutshell.spec.reference.tracked import T


def test_a_product_of_two_values_within_their_error_of_zero_keeps_a_bound():
    a, b = T(0.0, 3.0), T(0.0, 5.0)
    u = tracked.second_order_u()
    assert u == 2.0 ** -24
    p = a * b
    # the worst a backend can do: each factor off by its whole bound, u·e
    assert (u * 3.0) * (u * 5.0) <= u * float(p.e)
    assert float(p.e) == u * 15.0


def test_the_coarsest_format_under_test_sets_the_factor():
    with tracked.constants_exact_in(np.float32, np.float16, ml_dtypes.bfloat16):
        assert tracked.second_order_u() == 2.0 ** -8
        assert float((T(0.0, 3.0) * T(0.0, 5.0)).e) == 2.0 ** -8 * 15.0


def test_a_dot_product_sums_the_second_order_terms_of_its_terms():
    a = T(np.zeros((1, 3)), np.full((1, 3), 2.0))
    b = T(np.zeros((3, 1)), np.full((3, 1), 4.0))
    y = tracked.einsum("nk,ko->no", a, b)
    assert float(y.e[0, 0]) == tracked.second_order_u() * 3 * 2.0 * 4.0


def test_first_order_terms_are_unchanged_where_the_factors_are_known():
    a, b = T(2.0, 1.0), T(3.0)
    assert float((a * b).e) == 3.0 * 1.0 + 6.0     # |b|·e_a + one rounding |ab|; e_b = 0, no second order
