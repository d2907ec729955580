"""Peak allocations of a call, for the tests that prove a refusal comes before any large copy."""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable
from typing import Any


def peak(fn: Callable[[], Any]) -> int:
    """The peak of Python/NumPy allocations (bytes) while ``fn`` runs."""
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
