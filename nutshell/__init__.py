"""nutshell: the core concepts of deep learning as an executable spec, checked on several backends.

>>> import nutshell
>>> nutshell.names()
['cupy', 'onnx', 'torch']
>>> b = nutshell.load("torch")          # raises BackendUnavailable naming the extra to install
>>> b.run("relu", {"x": x})["y"]

``import nutshell`` is light: the registry and the spec load on first use of ``names``, ``load``,
``available`` or ``Backend``, and a backend's library (torch, onnxruntime, cupy) only when that
backend is loaded.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from nutshell import errors
from nutshell.errors import (
    AttrError,
    BackendFailure,
    BackendUnavailable,
    DTypeError,
    NutshellError,
    ShapeError,
    SpecError,
    UnsupportedConcept,
    UnsupportedOnnxOp,
)
from nutshell.version import __version__

if TYPE_CHECKING:
    from nutshell.backends import Backend, available, load, names

__all__ = [
    "AttrError", "Backend", "BackendFailure", "BackendUnavailable", "DTypeError", "NutshellError", "ShapeError",
    "SpecError", "UnsupportedConcept", "UnsupportedOnnxOp", "__version__", "available", "errors", "load", "names",
]

_REGISTRY = ("Backend", "available", "load", "names")


def __getattr__(name: str) -> Any:
    """The registry's names, imported on first use so that ``import nutshell`` stays light."""
    if name in _REGISTRY:
        from nutshell import backends

        return getattr(backends, name)
    raise AttributeError(f"module 'nutshell' has no attribute {name!r}")
