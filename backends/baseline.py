"""Baselines for ``nutshell bench``: the same work called directly on a backend's library.

Two bare calls can stand beside a backend's own:

* its **own baseline**, ``Backend.baseline()``: the backend's work with the wrapper taken away (the
  ONNX backend's own graph in a bare session, say). time / its time is the wrapper's overhead;
* the **canonical call**, ``Backend.baseline().canonical()``: what a user of that library would
  write for the concept without nutshell (for ONNX Runtime a one-node model of the standard
  operator, for torch the ``torch.nn.functional`` call, for NumPy/CuPy im2col and one matrix
  product). time / its time says whether the backend's choice of work is as good as the obvious
  one: an own graph slower than the one-node model shows here, and never in the overhead.

Where the own baseline already is the canonical call (torch's and the array module's),
``canonical()`` returns the baseline itself and the bench reports one ratio for both. A baseline
runs on the backend's device with the backend's native arrays, so only the wrapper (or the choice
of operators) differs. Each built-in backend keeps its baselines next to its implementation
(``<backend>_impl/baseline.py``); a backend without one returns None and the bench leaves the
ratio blank, as it does for a concept without a direct call (``conv2d_fft`` has no standard
operator in any of the three libraries; ONNX has no gradient operators, so no canonical vjp).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

Call = Callable[[], Any]


class Baseline:
    """``forward``/``vjp``/``step`` return a zero-argument call doing the work, or None when there
    is none. A call may raise for attributes the library's own function does not take (torch's
    pooling with asymmetric pads); the bench then drops the baseline and says why."""

    library = "?"
    call = "the library called directly"     # what the calls are, as the bench records it

    def __init__(self, b: Any):
        self.b = b

    def canonical(self) -> Baseline | None:
        """The canonical bare call a user of the library would write: ``self`` when this baseline
        is already that call, None when there is none."""
        return None

    def describe(self, concept: str, attrs: dict, inputs: dict[str, np.ndarray]) -> str:
        """What the call for ``concept`` is, in a few words, for the bench's records."""
        return self.call

    def forward(self, concept: str, attrs: dict, inputs: dict[str, np.ndarray]) -> Call | None:
        return None

    def vjp(self, concept: str, attrs: dict, inputs: dict[str, np.ndarray], cots: dict[str, np.ndarray]
            ) -> Call | None:
        return None

    def step(self, model: str, params: dict[str, np.ndarray], x: np.ndarray, labels: np.ndarray, lr: float
             ) -> Call | None:
        """One SGD step of a spec model (the call returns the loss before the step)."""
        return None
