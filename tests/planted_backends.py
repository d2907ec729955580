"""Backends with planted bugs that exist only in the tests of ``nutshell run``. Both are CuPy's
backend (NumPy without a GPU: a worker starts in seconds), registered through $NUTSHELL_BACKENDS.

``SkewedBackend`` (``skewed``): relu 0.1 % too large, a wrong result that only the numbers show.

``DyingBackend`` (``dying``): its worker dies while loading it, outside any check, at the loads
that ``$NUTSHELL_DYING_LOADS`` lists (e.g. ``2`` or ``1,2``; loads are counted in the file
``$NUTSHELL_DYING_COUNT``), and it crashes on its float32 relu input of 3 elements (relu's
``kink`` vector)."""

from __future__ import annotations

import ctypes
import os
import signal
from pathlib import Path

import numpy as np

from nutshell.backends.cupy_impl import CupyBackend


class SkewedBackend(CupyBackend):
    name = "skewed"

    def _forward(self, concept, inputs, attrs):
        out = super()._forward(concept, inputs, attrs)
        return {"y": out["y"] * out["y"].dtype.type(1.001)} if concept == "relu" else out


class DyingBackend(CupyBackend):
    name = "dying"

    def __init__(self, device=None, spec=None):
        super().__init__(device, spec)
        counter = Path(os.environ["NUTSHELL_DYING_COUNT"])
        loads = int(counter.read_text()) + 1 if counter.is_file() else 1
        counter.write_text(str(loads))
        if str(loads) in os.environ.get("NUTSHELL_DYING_LOADS", "").split(","):
            os.kill(os.getpid(), signal.SIGKILL)

    def _forward(self, concept, inputs, attrs):
        x = inputs.get("x")
        if concept == "relu" and x is not None and x.size == 3 and x.dtype == np.float32:
            ctypes.string_at(0)          # segmentation fault
        return super()._forward(concept, inputs, attrs)
