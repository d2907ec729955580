"""The API's allocation guard (issue 17, item 3): a call's size is checked against the memory budget
before any copy or any backend work, and integer attributes beyond 32 bits are AttrErrors, the
same on every backend."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest
from memtrace import peak

from nutshell import backends
from nutshell.errors import AttrError, ShapeError, SpecError
from nutshell.spec import validate

HUGE = (200_000, 200_000)          # 149 GiB as float32


@pytest.fixture(scope="module")
def every_backend():
    loaded, _ = backends.available(["torch", "cupy", "onnx"])
    assert loaded, "no backend to test"
    return loaded


@pytest.fixture
def no_work(every_backend, monkeypatch):
    """Every backend's hooks fail if reached: a refusal must come before any backend work."""
    def reached(*args, **kwargs):
        raise AssertionError("the backend's hook ran")

    for b in every_backend.values():
        monkeypatch.setattr(b, "_forward", reached)
        monkeypatch.setattr(b, "_vjp", reached)
    return every_backend


def test_default_budget_is_half_the_physical_memory(monkeypatch):
    monkeypatch.delenv(validate.MEMORY_ENV, raising=False)
    physical = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    assert validate.memory_budget() == physical // 2


def test_broadcast_view_of_149_gib_is_refused_before_any_copy(no_work, monkeypatch):
    """The reproduction: a broadcast view of one number was copied into 149 GiB (MemoryError). The
    default budget (half of this machine's memory, under 149 GiB here) refuses it at once."""
    monkeypatch.delenv(validate.MEMORY_ENV, raising=False)
    assert validate.memory_budget() < 149 * 2**30
    x = np.broadcast_to(np.float32(1), HUGE)
    for name, b in no_work.items():
        def call(b=b):
            with pytest.raises(ShapeError, match=r"149\.0 GiB.*memory budget.*NUTSHELL_MAX_MEMORY_MB") as e:
                b.run("relu", {"x": x})
            assert e.value.concept == "relu" and e.value.argument == "x"
        start = time.perf_counter()
        assert peak(call) < 2**20, name
        assert time.perf_counter() - start < 1.0, name
        with pytest.raises(ShapeError, match=r"149\.0 GiB"):
            b.vjp("relu", {"x": x}, {"y": x})


def test_budget_counts_the_outputs_from_the_shape_arithmetic(no_work, monkeypatch):
    """x (2048, 1) · w (1, 2048): 16 KiB of inputs, a 16 MiB output, refused before running."""
    monkeypatch.setenv(validate.MEMORY_ENV, "8")
    x, w = np.ones((2048, 1), np.float32), np.ones((1, 2048), np.float32)
    for b in no_work.values():
        with pytest.raises(ShapeError, match=r"output y \(2048, 2048\): 16\.0 MiB") as e:
            b.run("dense", {"x": x, "w": w})
        assert e.value.argument == "y"


def test_budget_setting(every_backend, monkeypatch):
    x = np.ones((512, 1024), np.float32)                 # 2 MiB in, 2 MiB out
    monkeypatch.setenv(validate.MEMORY_ENV, "3")
    for b in every_backend.values():
        with pytest.raises(ShapeError, match=r"4\.0 MiB.*over the memory budget of 3\.0 MiB"):
            b.run("relu", {"x": x})
    monkeypatch.setenv(validate.MEMORY_ENV, "5")
    for b in every_backend.values():
        np.testing.assert_array_equal(b.run("relu", {"x": x})["y"], x)
    for bad in ("lots", "0", "-3"):
        monkeypatch.setenv(validate.MEMORY_ENV, bad)
        with pytest.raises(SpecError, match=validate.MEMORY_ENV):
            validate.memory_budget()


def test_padded_input_counts(every_backend, monkeypatch):
    """pads of 2²⁰ with a stride of 2²⁰: a 3×4 output, but every backend pads x to 32 MiB first."""
    x, w = np.ones((1, 1, 4, 4), np.float32), np.ones((1, 1, 1, 1), np.float32)
    attrs = {"pads": [2**20, 0, 2**20, 0], "stride": [2**20, 1]}
    monkeypatch.setenv(validate.MEMORY_ENV, "16")
    for b in every_backend.values():
        with pytest.raises(ShapeError, match=r"x padded by pads \(1, 1, 2097156, 4\): 32\.0 MiB") as e:
            b.run("conv2d", {"x": x, "w": w}, attrs)
        assert e.value.argument == "pads"
    monkeypatch.setenv(validate.MEMORY_ENV, "256")
    results = {n: b.run("conv2d", {"x": x, "w": w}, attrs)["y"] for n, b in every_backend.items()}
    for n, y in results.items():
        np.testing.assert_array_equal(y, np.array([[[[0] * 4, [1] * 4, [0] * 4]]], np.float32), err_msg=n)


def test_lrn_window_beyond_memory_is_refused_everywhere(every_backend, monkeypatch):
    """An LRN size of 2³¹ − 1 pads the channels to 128 GiB: ONNX Runtime returned a result, the
    others crashed in their allocators (BackendFailure); now the same refusal everywhere."""
    monkeypatch.setenv(validate.MEMORY_ENV, "1024")
    x = np.ones((1, 1, 4, 4), np.float32)
    for b in every_backend.values():
        with pytest.raises(ShapeError, match=r"x padded by size .*128\.0 GiB") as e:
            b.run("lrn", {"x": x}, {"size": 2**31 - 1})
        assert e.value.argument == "size"


@pytest.mark.parametrize("value", [2**31, 2**62, 2**63, 2**64, -2**63])
@pytest.mark.parametrize("concept, arg, attrs", [
    ("conv2d", "stride", lambda v: {"stride": [v, 1]}),
    ("conv2d", "pads", lambda v: {"pads": [v, 0, 0, 0]}),
    ("conv2d", "dilation", lambda v: {"dilation": [1, v]}),
    ("conv2d", "groups", lambda v: {"groups": v}),
    ("max_pool2d", "stride", lambda v: {"kernel": [2, 2], "stride": [v, 1]}),
    ("avg_pool2d", "kernel", lambda v: {"kernel": [v, 2]}),
    ("softmax", "axis", lambda v: {"axis": v}),
    ("lrn", "size", lambda v: {"size": v}),
])
def test_integer_attributes_beyond_32_bits_are_attr_errors(no_work, concept, arg, attrs, value):
    """A stride of 2⁶³ was blamed on the backend (BackendFailure), and CuPy failed at 2⁶² where the
    others returned a result: now an AttrError naming the attribute, on every backend, before any work."""
    x = np.ones((1, 1, 4, 4), np.float32)
    inputs = {"x": x, "w": np.ones((1, 1, 2, 2), np.float32)} if concept == "conv2d" else {"x": x}
    for b in no_work.values():
        with pytest.raises(AttrError, match="32-bit range") as e:
            b.run(concept, inputs, attrs(value))
        assert (e.value.concept, e.value.argument) == (concept, arg)
        with pytest.raises(AttrError, match="32-bit range"):
            b.op(concept, attrs(value))


@pytest.mark.parametrize("concept, attrs", [
    ("conv2d", {"stride": [2**31 - 1, 2**31 - 1]}),
    ("max_pool2d", {"kernel": [2, 2], "stride": [2**31 - 1, 1]}),
    ("avg_pool2d", {"kernel": [2, 2], "stride": [1, 2**31 - 1]}),
])
def test_the_largest_32_bit_stride_gives_the_same_result_everywhere(every_backend, concept, attrs):
    x = np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4)
    inputs = {"x": x, "w": np.ones((1, 1, 2, 2), np.float32)} if concept == "conv2d" else {"x": x}
    results = {n: b.run(concept, inputs, attrs)["y"] for n, b in every_backend.items()}
    first = next(iter(results.values()))
    for n, y in results.items():
        np.testing.assert_array_equal(y, first, err_msg=n)
