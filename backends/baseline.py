"""Native baselines for ``nutshell bench``: the same work called directly on a backend's library.

The ratio of a backend's time to its baseline's is the wrapper's overhead. A baseline runs on
the backend's device with the backend's native arrays, so only the wrapper differs. Each built-in
backend keeps its own next to its implementation (``<backend>_impl/baseline.py``) and returns it
from ``Backend.baseline()``; a backend without one returns None and the bench leaves its
overhead blank. A concept without an obvious direct call (``conv2d_fft`` on torch and NumPy) has
no baseline either.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

Call = Callable[[], Any]


class Baseline:
    """``forward``/``vjp`` return a zero-argument call doing the work, or None when there is none.
    A call may raise for attributes the library's own function does not take (torch's pooling
    with asymmetric pads); the bench then drops the baseline and says why."""

    library = "?"

    def __init__(self, b: Any):
        self.b = b

    def forward(self, concept: str, attrs: dict, inputs: dict[str, np.ndarray]) -> Call | None:
        return None

    def vjp(self, concept: str, attrs: dict, inputs: dict[str, np.ndarray], cots: dict[str, np.ndarray]
            ) -> Call | None:
        return None

    def step(self, model: str, params: dict[str, np.ndarray], x: np.ndarray, labels: np.ndarray, lr: float
             ) -> Call | None:
        """One SGD step of a spec model (the call returns the loss before the step)."""
        return None
