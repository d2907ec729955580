"""The backend registry: built-in backends plus any registered under the ``nutshell.backends``
entry-point group.

>>> from nutshell import backends      # the public spelling: nutshell.names(), nutshell.load()
>>> backends.names()
['cupy', 'onnx', 'torch']
>>> b = backends.load("torch")          # raises BackendUnavailable naming the extra to install
"""

from __future__ import annotations

import difflib
import importlib
import os
from importlib.metadata import entry_points

from nutshell.backends.base import Backend
from nutshell.backends.baseline import Baseline
from nutshell.errors import BackendUnavailable
from nutshell.spec import Spec

if __name__ != "nutshell.backends":  # the folder backends/ installs as nutshell.backends: one module, one name
    raise ImportError("import nutshell.backends, not backends: nutshell installs one import package")


__all__ = ["BUILTIN", "Backend", "BackendUnavailable", "Baseline", "available", "check_names", "load", "names",
           "unknown"]

ENTRY_POINT_GROUP = "nutshell.backends"

# name -> ("module:Class", extra that installs what it needs)
BUILTIN: dict[str, tuple[str, str]] = {
    "cupy": ("nutshell.backends.cupy_impl:CupyBackend", "cupy"),
    "onnx": ("nutshell.backends.onnx_impl:OnnxBackend", "onnx"),
    "torch": ("nutshell.backends.torch_impl:TorchBackend", "torch"),
}


ENV_VAR = "NUTSHELL_BACKENDS"


class _EnvEntry:
    """A backend named in $NUTSHELL_BACKENDS as ``name=module:Class`` (comma-separated): a way to
    try a backend without installing it."""

    def __init__(self, name: str, target: str):
        self.name, self.value = name, target

    def load(self):
        module, _, cls = self.value.partition(":")
        return getattr(importlib.import_module(module), cls)


def _entry_points() -> dict:
    eps = {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name not in BUILTIN}
    for item in filter(None, os.environ.get(ENV_VAR, "").split(",")):
        name, _, target = item.partition("=")
        if name and target and name not in BUILTIN:
            eps[name.strip()] = _EnvEntry(name.strip(), target.strip())
    return eps


def names() -> list[str]:
    """Every registered backend name, built-in first, then entry points, each sorted."""
    return sorted(BUILTIN) + sorted(_entry_points())


DEVICES = ("cpu", "cuda")


def unknown(name: str) -> str:
    """Why ``name`` is no backend: the registered names, the closest one, and --device for a device name."""
    known = names()
    msg = f"no backend named '{name}'; registered: {', '.join(known)}"
    if name.lower() in DEVICES:
        return f"{msg} ('{name}' is a device: choose it with --device {name.lower()})"
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    return f"{msg} (did you mean '{close[0]}'?)" if close else msg


def check_names(requested: list[str] | None) -> None:
    """Refuse names that no backend answers to, before anything is loaded or written."""
    known = set(names())
    bad = [n for n in requested or [] if n not in known]
    if bad:
        raise BackendUnavailable("; ".join(unknown(n) for n in bad))


def _resolve(name: str) -> type[Backend]:
    if name in BUILTIN:
        target, extra = BUILTIN[name]
        module, _, cls = target.partition(":")
        try:
            return getattr(importlib.import_module(module), cls)
        except ImportError as exc:
            raise BackendUnavailable(
                f"backend '{name}' needs a package that is not installed ({exc.name or exc}); "
                f"pip install 'nutshell[{extra}]'") from None
    eps = _entry_points()
    if name not in eps:
        raise BackendUnavailable(unknown(name))
    try:
        return eps[name].load()
    except Exception as exc:
        raise BackendUnavailable(f"backend '{name}' failed to load: {type(exc).__name__}: {exc}") from None


def load(name: str, device: str | None = None, spec: Spec | None = None) -> Backend:
    """An instance of backend ``name`` on ``device`` (None: the best this machine has), built on
    ``spec`` (None: the repository's spec/concepts.yaml)."""
    cls = _resolve(name)
    try:
        return cls(device=device, spec=spec)
    except BackendUnavailable:
        raise
    except Exception as exc:
        raise BackendUnavailable(f"backend '{name}' could not start: {type(exc).__name__}: {exc}") from None


def available(requested: list[str] | None = None, device: str | None = None,
              spec: Spec | None = None) -> tuple[dict, dict]:
    """(loaded backends by name, reasons by name for those that could not load), each built on ``spec``."""
    loaded, missing = {}, {}
    for name in requested or names():
        try:
            loaded[name] = load(name, device, spec)
        except BackendUnavailable as exc:
            missing[name] = str(exc)
    return loaded, missing
