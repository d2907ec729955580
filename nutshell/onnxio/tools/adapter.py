"""Each nutshell backend as an ``onnx.backend.base.Backend``, so ONNX's own backend tests run on it.

>>> from nutshell.onnxio.tools.adapter import adapter
>>> OnnxOnTorch = adapter("torch")                  # a Backend class bound to nutshell.load("torch")
>>> rep = OnnxOnTorch.prepare(model)                # Backend.import_onnx: validated and lowered once
>>> outputs = rep.run([x])                          # a tuple, in the graph's output order

Everything goes through :meth:`nutshell.Backend.import_onnx`, so an operator nutshell does
not import raises :class:`~nutshell.errors.UnsupportedOnnxOp` from ``prepare``. Keyword arguments
of :func:`adapter` go to ``import_onnx`` (the ONNX backend takes ``direct=False`` to run concept
by concept instead of handing the model to ONNX Runtime whole).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import onnx
from onnx.backend.base import Backend as OnnxBackendBase
from onnx.backend.base import BackendRep

from nutshell import backends
from nutshell.backends.base import Backend
from nutshell.errors import ShapeError


class NutshellRep(BackendRep):
    """A prepared model: positional (or named) inputs in, outputs in the graph's order out."""

    def __init__(self, imported):
        self.imported = imported

    def run(self, inputs: Any, **kwargs: Any) -> tuple[Any, ...]:
        names = [v.name for v in self.imported.inputs]
        if isinstance(inputs, Mapping):
            feeds = dict(inputs)
        else:
            given = list(inputs) if isinstance(inputs, Sequence) else [inputs]
            if len(given) != len(names):
                raise ShapeError(f"the graph takes {len(names)} inputs {names}, got {len(given)}", argument="inputs")
            feeds = dict(zip(names, given, strict=True))
        out = self.imported.run(feeds)
        return tuple(out[name] for name in self.imported.outputs)


def adapter(backend: str | Backend, **import_kwargs: Any) -> type[OnnxBackendBase]:
    """An ``onnx.backend.base.Backend`` subclass running models on ``backend`` (a name or an instance)."""
    b = backends.load(backend) if isinstance(backend, str) else backend

    class NutshellOnnxBackend(OnnxBackendBase):
        nutshell = b

        @classmethod
        def prepare(cls, model: onnx.ModelProto, device: str = "CPU", **kwargs: Any) -> NutshellRep:
            return NutshellRep(b.import_onnx(model.SerializeToString(), **import_kwargs))

        @classmethod
        def supports_device(cls, device: str) -> bool:
            return device.upper() == "CPU" or (device.upper() == "CUDA" and b.device.startswith("cuda"))

    NutshellOnnxBackend.__name__ = NutshellOnnxBackend.__qualname__ = f"Nutshell_{b.name}"
    return NutshellOnnxBackend
