"""A deliberately faulty backend that exists only in the tests: on one relu input it crashes the
process, on one sigmoid input it hangs, and tanh returns NaN. Everything else is PyTorch's."""

from __future__ import annotations

import ctypes
import time

import numpy as np

from nutshell.backends.torch_impl import TorchBackend


class FaultyBackend(TorchBackend):
    name = "faulty"

    def _forward(self, concept, inputs, attrs):
        x = inputs.get("x")
        if concept == "relu" and x is not None and x.size == 3:
            ctypes.string_at(0)          # segmentation fault
        if concept == "sigmoid" and x is not None and x.size == 4:
            time.sleep(3600)             # hang
        out = super()._forward(concept, inputs, attrs)
        if concept == "tanh":
            return {"y": np.full_like(out["y"], np.nan)}
        return out
