"""The backend registry."""

from __future__ import annotations

import pytest

from nutshell import backends
from nutshell.errors import BackendUnavailable


def test_builtins_are_registered():
    assert {"torch", "cupy", "onnx"} <= set(backends.names())


def test_unknown_backend_names_the_registered_ones():
    with pytest.raises(BackendUnavailable, match=r"registered: .*torch"):
        backends.load("nonexistent")


def test_missing_dependency_names_the_extra(monkeypatch):
    monkeypatch.setitem(backends.BUILTIN, "ghost", ("nutshell.backends.ghost_impl_missing:Ghost", "ghost"))
    with pytest.raises(BackendUnavailable, match=r"pip install 'nutshell\[ghost\]'"):
        backends.load("ghost")


def test_available_collects_failures_without_raising(monkeypatch):
    monkeypatch.setitem(backends.BUILTIN, "ghost", ("nutshell.backends.ghost_impl_missing:Ghost", "ghost"))
    loaded, missing = backends.available(["ghost"])
    assert not loaded and "ghost" in missing
