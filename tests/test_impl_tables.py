"""One calling convention everywhere: every area module exports ``CONCEPTS: dict[str, Impl]`` and its
backend dispatches through their merge (nutshell.spec.signatures.Impl)."""

from __future__ import annotations

import importlib

import pytest

from nutshell import spec
from nutshell.spec.signatures import Impl

AREAS = ("activations", "dense", "losses", "conv", "pooling", "normalization", "recurrent", "inception")

# package -> (the module holding the merged table, whether it writes its vjps by hand)
PACKAGES = {
    "nutshell.backends.torch_impl": ("nutshell.backends.torch_impl.backend", False),
    "nutshell.backends.cupy_impl": ("nutshell.backends.cupy_impl.backend", True),
    "nutshell.backends.onnx_impl": ("nutshell.backends.onnx_impl.backend", True),
    "nutshell.spec.reference": ("nutshell.spec.reference", True),
    "nutshell_tf_backend": ("nutshell_tf_backend.backend", False),
}


@pytest.mark.parametrize("package", PACKAGES)
def test_every_area_exports_concepts_and_the_backend_merges_them(package):
    table_module, hand_vjps = PACKAGES[package]
    merged = pytest.importorskip(table_module).CONCEPTS
    areas = [importlib.import_module(f"{package}.{area}").CONCEPTS for area in AREAS]
    assert merged == {k: impl for area in areas for k, impl in area.items()}
    assert sum(len(area) for area in areas) == len(merged) and set(merged) == set(spec.load().concepts)
    for cid, impl in merged.items():
        assert isinstance(impl, Impl) and callable(impl.forward), cid
        assert callable(impl.vjp) if hand_vjps else impl.vjp is None, cid
