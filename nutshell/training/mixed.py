"""Mixed-precision training: float32 master parameters, the forward and backward pass in a low format.

The usual recipe for float16 and bfloat16 (``nutshell train MODEL --dtype bfloat16``): the
parameters p live in float32; every step rounds them into the low format, the backend runs the
model's forward and backward pass there, and the gradients g come back widened exactly to
float32, where the update happens (p ← p − lr·g, or momentum, or Adam), so that updates smaller
than the low format's spacing near p are not lost. Without it a bfloat16 parameter of 1 ignores
every update under 2⁻⁸.

:class:`MasterModel` is that model as :func:`nutshell.training.fit.fit` uses one: ``params``,
``set_params``, ``loss_and_grads``, ``step``, ``forward``, ``predict`` and ``dtype`` (float32),
with the low-precision model of the backend (``Backend.model(..., dtype=low)``) doing the work.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from nutshell.backends.base import Backend
from nutshell.spec import models
from nutshell.spec.graph import Model
from nutshell.spec.signatures import DTYPES


class MasterModel:
    """A spec model trained with float32 master parameters and computed in ``dtype``."""

    dtype = np.dtype(np.float32)

    def __init__(self, backend: Backend, name: str, dtype: str, seed: int = 0):
        self.low = np.dtype(DTYPES[dtype])
        self._master = models.init_params(models.get(name), seed, "float32")
        self.compute: Model = backend.model(name, params=self._rounded(), dtype=dtype)
        self.name = name

    def _rounded(self) -> dict[str, np.ndarray]:
        return {k: v.astype(self.low) for k, v in self._master.items()}

    def params(self) -> dict[str, np.ndarray]:
        """The float32 master parameters (copies)."""
        return {k: v.copy() for k, v in self._master.items()}

    def set_params(self, params: Mapping[str, np.ndarray]) -> None:
        """New master parameters, rounded once into the low format for the next pass."""
        self._master = {k: np.asarray(v, np.float32).copy() for k, v in params.items()}
        self.compute.set_params(self._rounded())

    def loss_and_grads(self, x: np.ndarray, labels: np.ndarray) -> tuple[float, dict[str, np.ndarray]]:
        """The loss and the gradients of a pass in the low format, widened (exactly) to float32."""
        loss, grads = self.compute.loss_and_grads(x, labels)
        return loss, {k: g.astype(np.float32) for k, g in grads.items()}

    def step(self, x: np.ndarray, labels: np.ndarray, lr: float) -> float:
        """p ← p − lr·g on the float32 masters; returns the loss before the step."""
        loss, grads = self.loss_and_grads(x, labels)
        rate = np.float32(lr)
        self.set_params({k: p - rate * grads[k] for k, p in self._master.items()})
        return loss

    def forward(self, x: np.ndarray, output: str | None = None) -> np.ndarray:
        return self.compute.forward(x, output)

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.compute.predict(x)
