"""The precision probes and the low-precision checks tell a backend that computes the wrong way
from a correct one: two test backends, one accumulating float16 in float16, one rounding float32
products to bfloat16, against the real backends."""

from __future__ import annotations

from typing import Any

import ml_dtypes
import numpy as np
import pytest

import nutshell
from nutshell import spec
from nutshell.backends.base import Backend
from nutshell.conformance import checks, precision, probe
from nutshell.spec import lowp, tolerance

S = spec.load()


class Sequential(Backend):
    """dense, layer (identity) and conv2d (stride 1, groups 1) as explicit dot products, the bias
    first and then one term after another: each product rounded to ``products`` (None: the
    inputs' dtype) and each partial sum to ``accumulator`` (None: the inputs' dtype)."""

    name = "sequential"
    products: Any = None
    accumulator: Any = None

    def unsupported(self, concept: str, dtype: str) -> str | None:
        return None if concept in ("dense", "layer", "conv2d") else "a test backend of dot products only"

    def _forward(self, concept: str, inputs: dict, attrs: dict) -> dict:
        x, w, dtype = inputs["x"], inputs["w"], inputs["x"].dtype
        if concept == "conv2d":
            cols, wk, lead = _columns(x, w, attrs["pads"])
        else:
            cols, wk, lead = x, w, (x.shape[0],)
        b = inputs.get("b", np.zeros(wk.shape[1], dtype))
        y = self._dots(cols, wk, b, dtype)                                       # (M, O)
        if concept == "conv2d":
            return {"y": y.reshape(*lead, -1).transpose(0, 3, 1, 2).copy()}     # (N, O, oH, oW)
        return {"y": y}

    def _dots(self, cols: np.ndarray, w: np.ndarray, b: np.ndarray, dtype: np.dtype) -> np.ndarray:
        """y[m, o] = b[o] + Σ_k cols[m, k]·w[k, o], rounded term by term as the class says."""
        prod, acc = self.products or dtype, self.accumulator or dtype
        y = np.broadcast_to(b.astype(acc), (cols.shape[0], w.shape[1])).copy()
        for k in range(cols.shape[1]):
            term = (cols[:, k, None].astype(np.float32) * w[None, k, :].astype(np.float32)).astype(prod)
            y = (y.astype(np.float32) + term.astype(np.float32)).astype(acc)
        return y.astype(dtype)


def _columns(x: np.ndarray, w: np.ndarray, pads: list[int]) -> tuple[np.ndarray, np.ndarray, tuple]:
    """im2col for stride 1: cols (N·oH·oW, C·kh·kw), w as (C·kh·kw, O), and (N, oH, oW)."""
    t, left, bottom, r = pads
    xp = np.pad(x, ((0, 0), (0, 0), (t, bottom), (left, r)))
    o, c, kh, kw = w.shape
    win = np.lib.stride_tricks.sliding_window_view(xp, (kh, kw), axis=(2, 3))   # (N, C, oH, oW, kh, kw)
    n, _, oh, ow = win.shape[:4]
    cols = win.transpose(0, 2, 3, 1, 4, 5).reshape(n * oh * ow, c * kh * kw)  # (N·oH·oW, C·kh·kw)
    return cols, w.reshape(o, c * kh * kw).T, (n, oh, ow)


class StorageAccumulating(Sequential):
    """float16 (bfloat16) in, every partial sum kept in float16 (bfloat16): the loosest legitimate way."""

    name = "storage_acc"


class Bf16Products(Sequential):
    """float32 in, each product rounded to bfloat16, sums in float32: what a library computing
    float32 matrix products in bfloat16 does."""

    name = "bf16_products"
    products = ml_dtypes.bfloat16
    accumulator = np.float32


class Float32Accumulating(Sequential):
    """float16 (bfloat16) in, products and partial sums in float32, the result rounded once."""

    name = "f32_acc"
    products = np.float32
    accumulator = np.float32


@pytest.fixture(scope="module")
def real():
    return nutshell.load("torch", device="cpu")


@pytest.mark.parametrize("concept", ["dense", "conv2d"])
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_the_accumulation_probe_tells_storage_from_float32(concept, dtype, real):
    assert probe.accumulation(StorageAccumulating(), concept, dtype) == probe.ACC_STORAGE
    assert probe.accumulation(Float32Accumulating(), concept, dtype) == probe.ACC32
    assert probe.accumulation(real, concept, dtype) == probe.ACC32


@pytest.mark.parametrize("concept", ["dense", "layer", "conv2d"])
def test_the_product_probe_tells_bfloat16_products_from_float32(concept, real):
    assert probe.products(Bf16Products(), concept) == probe.BF16_PRODUCTS
    assert probe.products(Float32Accumulating(), concept) == probe.FLOAT32
    assert probe.products(real, concept) == probe.FLOAT32


def _check(backend: Backend, concept: str, name: str, dtype: str) -> checks.Record:
    lv = next(v for v in lowp.load() if v.concept == concept and v.vector.name == name)
    return precision.forward(backend, S.concept(concept), lv, dtype, S.tolerance)


@pytest.mark.parametrize(("name", "dtype"), [("accumulation_probe_f16", "float16"),
                                             ("accumulation_probe_bf16", "bfloat16"), ("basic", "float16")])
def test_the_checks_pass_both_and_name_the_accumulation(name, dtype, real):
    """Within the storage-format bound both pass; the record says which accumulation ran."""
    assert _check(real, "dense", name, dtype).details["consistent_with"] == tolerance.FLOAT32
    assert _check(Float32Accumulating(), "dense", name, dtype).details["consistent_with"] == tolerance.FLOAT32
    rec = _check(StorageAccumulating(), "dense", name, dtype)
    assert rec.usage <= 1
    if name != "basic":    # a generated vector's sums need not lose anything in float16
        assert rec.details["consistent_with"] == tolerance.STORAGE


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_a_3x3x64_convolution_accumulated_in_the_storage_format(dtype):
    """spec/README.md: 4.5 (float16) and 8.5 (bfloat16) times the float32 bound, 0.1 % of the other."""
    rec = _check(StorageAccumulating(), "conv2d", "c64_k3", dtype)
    used = rec.details["usage_by_bound"]
    assert rec.details["consistent_with"] == tolerance.STORAGE
    assert used[tolerance.STORAGE] < 0.002 and used[tolerance.FLOAT32] > 4


def test_a_result_outside_the_storage_format_bound_fails():
    class OffByOne(StorageAccumulating):
        def _forward(self, concept, inputs, attrs):
            return {"y": (super()._forward(concept, inputs, attrs)["y"] + 1).astype(inputs["x"].dtype)}

    with pytest.raises(checks.CheckFailed) as e:
        _check(OffByOne(), "dense", "basic", "float16")
    assert e.value.record["details"]["consistent_with"] == tolerance.NEITHER


def test_a_result_in_another_dtype_fails():
    class Widening(Float32Accumulating):
        def _forward(self, concept, inputs, attrs):
            return {"y": super()._forward(concept, inputs, attrs)["y"].astype(np.float32)}

    with pytest.raises(checks.CheckFailed, match="came back as float32, not float16"):
        _check(Widening(), "dense", "basic", "float16")


@pytest.mark.parametrize(("name", "dtype"), [("subnormal_result_f16", "float16"),
                                             ("subnormal_result_bf16", "bfloat16")])
def test_flushing_subnormals_to_zero_fails(name, dtype, real):
    """The spec keeps gradual underflow: 2⁻¹⁵ in float16 and 2⁻¹²⁷ in bfloat16 lie above the
    underflow floor, so a backend that flushes them to zero fails."""
    class Flushing(Float32Accumulating):
        def _forward(self, concept, inputs, attrs):
            y = super()._forward(concept, inputs, attrs)["y"]
            return {"y": np.where(np.abs(y) < ml_dtypes.finfo(y.dtype).smallest_normal, 0, y).astype(y.dtype)}

    assert _check(real, "dense", name, dtype).usage == 0
    with pytest.raises(checks.CheckFailed, match="outside the bound"):
        _check(Flushing(), "dense", name, dtype)


def test_the_probe_command_prints_the_table(capsys):
    import argparse

    parser = argparse.ArgumentParser()
    probe.add_arguments(parser)
    assert probe.run(parser.parse_args(["-b", "torch", "--device", "cpu"])) == 0
    out = capsys.readouterr().out
    assert "torch on cpu" in out and "conv2d       float16   float32 accumulation" in out


def test_the_probe_table_counts_float32_work_that_is_not_full_float32():
    lines, wrong = probe.report(Bf16Products())
    assert wrong == 3 and "  dense        float32   bfloat16 products" in lines    # dense, layer, conv2d
    assert probe.report(Float32Accumulating())[1] == 0
