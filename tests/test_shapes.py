"""The window arithmetic of nutshell.spec.shapes, on values worked out by hand."""

from __future__ import annotations

import pytest

from nutshell.spec import shapes


@pytest.mark.parametrize(("n", "k", "s", "p", "d", "ceil", "out", "reach"), [
    (5, 2, 2, 0, 1, False, 2, 4),   # windows at 0, 2; position 4 is read by none
    (5, 2, 2, 0, 1, True, 3, 6),    # ceil adds a window at 4, which reaches one past the input
    (5, 3, 3, 1, 1, False, 2, 6),   # padded length 7: windows at 0, 3 end at 5, the last pad unread
    (5, 3, 3, 1, 1, True, 2, 6),    # ceil's third window would start at 6, in the end padding: dropped
    (7, 3, 2, 0, 2, False, 2, 7),   # dilated taps 0, 2, 4: windows at 0 and 2 reach exactly n
    (1, 1, 1, 0, 1, True, 1, 1),
])
def test_window_reach(n, k, s, p, d, ceil, out, reach):
    assert shapes.pool_out(n, k, s, p, p, d, ceil) == out
    assert shapes.window_reach(out, k, s, d) == reach
