"""Focused checks of the TensorFlow backend (examples/tf_backend), where TensorFlow needed working around.

The backend is an outside package: ``pip install -e examples/tf_backend`` registers it through the
``nutshell.backends`` entry point. These tests compare it with the float64 reference.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("tensorflow")
pytest.importorskip("nutshell_tf_backend", reason="pip install --no-deps -e examples/tf_backend")

from nutshell import backends
from nutshell.errors import BackendUnavailable
from nutshell.spec import reference, validate


@pytest.fixture(scope="module")
def b():
    return backends.load("tf", device="cpu")


def reference_vjp(b, concept: str, inputs: dict, attrs: dict, seed: int = 0) -> tuple[dict, dict]:
    """(the backend's gradients, the reference's) for a random cotangent, inputs in float64."""
    arrays, full, _ = validate.check(b.spec.concept(concept), inputs, attrs)
    rng = np.random.default_rng(seed)
    cots = {k: rng.standard_normal(t.v.shape) for k, t in reference.forward(concept, arrays, full).items()}
    want = {k: t.v for k, t in reference.vjp(concept, arrays, cots, full).items()}
    return b.vjp(concept, inputs, cots, attrs), want


def test_registered_only_through_the_entry_point(b):
    assert "tf" in backends.names() and "tf" not in backends.BUILTIN
    assert type(b).__module__.startswith("nutshell_tf_backend.")
    assert b.concepts == frozenset(b.spec.concepts)


@pytest.mark.parametrize("concept, attrs", [("max_pool2d", {"kernel": [2, 2]}), ("lrn", {"size": 3})])
def test_float64_where_tensorflow_kernels_return_float32(b, concept, attrs):
    x = (1.0 + np.arange(16.0).reshape(1, 4, 2, 2) * 2.0 ** -40)      # differences float32 cannot hold
    y = b.run(concept, {"x": x}, attrs)["y"]
    arrays, full, _ = validate.check(b.spec.concept(concept), {"x": x}, attrs)
    assert y.dtype == np.float64
    np.testing.assert_allclose(y, reference.forward(concept, arrays, full)["y"].v, rtol=1e-15, atol=0)


def test_grouped_dilated_strided_conv_gradient_in_float64(b):
    """TensorFlow's CPU convolution has no float64 gradient for groups or dilation."""
    rng = np.random.default_rng(1)
    ins = {"x": rng.standard_normal((2, 4, 9, 8)), "w": rng.standard_normal((6, 2, 2, 3)), "b": rng.standard_normal(6)}
    attrs = {"stride": [2, 1], "pads": [1, 0, 2, 1], "dilation": [2, 2], "groups": 2}
    got, want = reference_vjp(b, "conv2d", ins, attrs)
    for k in ins:
        assert got[k].dtype == np.float64
        np.testing.assert_allclose(got[k], want[k], rtol=1e-12, atol=1e-12, err_msg=k)


def test_conv2d_fft_stays_float64_and_equals_conv2d(b):
    rng = np.random.default_rng(2)
    ins = {"x": rng.standard_normal((1, 4, 7, 6)), "w": rng.standard_normal((2, 2, 3, 2))}
    attrs = {"stride": [1, 2], "pads": [0, 1, 2, 0], "dilation": [2, 1], "groups": 2}
    fft, direct = b.run("conv2d_fft", ins, attrs)["y"], b.run("conv2d", ins, attrs)["y"]
    assert fft.dtype == np.float64
    np.testing.assert_allclose(fft, direct, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("concept", ["conv2d", "conv2d_fft"])
def test_empty_batch_keeps_the_output_shape(b, concept):
    """TensorFlow's convolution returns an empty batch with the input's shape; the backend does not."""
    ins = {"x": np.zeros((0, 3, 6, 6), np.float32), "w": np.ones((4, 3, 3, 3), np.float32),
           "b": np.ones(4, np.float32)}
    assert b.run(concept, ins, {"pads": [1, 1, 1, 1]})["y"].shape == (0, 4, 6, 6)


def test_max_pool_ties_nan_and_dropped_ceil_window(b):
    x = np.array([[[[1.0, 1.0, 2.0, 2.0], [1.0, 1.0, 2.0, np.nan]]]])
    y = b.run("max_pool2d", {"x": x}, {"kernel": [2, 2]})["y"]
    assert y[0, 0, 0, 0] == 1.0 and np.isnan(y[0, 0, 0, 1])
    gx = b.vjp("max_pool2d", {"x": x[..., :2]}, {"y": np.ones((1, 1, 1, 1))}, {"kernel": [2, 2]})["x"]
    np.testing.assert_array_equal(gx[0, 0], [[1.0, 0.0], [0.0, 0.0]])            # the first of the tie
    row = np.arange(5.0).reshape(1, 1, 1, 5)
    attrs = {"kernel": [1, 3], "stride": [1, 3], "pads": [0, 1, 0, 1], "ceil_mode": True}
    np.testing.assert_array_equal(b.run("max_pool2d", {"x": row}, attrs)["y"], [[[[1.0, 4.0]]]])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("kernel, stride", [((1, 1), [2, 1]), ((1, 1), [3, 2]), ((1, 3), [2, 2]), ((2, 1), [1, 3])])
def test_strided_convolutions_with_a_kernel_1_wide(b, kernel, stride, dtype):
    """Along an axis where the kernel is 1 wide the input is sliced and the stride dropped (conv.unstride)."""
    rng = np.random.default_rng(4)
    ins = {k: rng.standard_normal(shape).astype(dtype) for k, shape in
           (("x", (2, 4, 11, 8)), ("w", (6, 2, *kernel)), ("b", (6,)))}
    attrs = {"stride": stride, "pads": [1, 1, 0, 1], "groups": 2}
    arrays, full, _ = validate.check(b.spec.concept("conv2d"), {k: v.astype(np.float64) for k, v in ins.items()}, attrs)
    y = reference.forward("conv2d", arrays, full)["y"].v
    cot = rng.standard_normal(y.shape).astype(dtype)
    want = {k: t.v for k, t in reference.vjp("conv2d", arrays, {"y": cot.astype(np.float64)}, full).items()}
    tol = 1e-12 if dtype == "float64" else 1e-4
    np.testing.assert_allclose(b.run("conv2d", ins, attrs)["y"], y, rtol=tol, atol=tol)
    got = b.vjp("conv2d", ins, {"y": cot}, attrs)
    for k in ins:
        np.testing.assert_allclose(got[k], want[k], rtol=tol, atol=tol, err_msg=k)


ONEDNN = """
import os, sys
os.environ["TF_ENABLE_ONEDNN_OPTS"] = "1"
from nutshell import backends, spec
from nutshell.conformance import checks
b = backends.load("tf", device="cpu")
conv2d = spec.load().concept("conv2d")
vec = next(v for v in conv2d.vectors if v.name == "found_tf_2026_12_04_1")
for _ in range(20):
    checks.vjp(b, conv2d, vec, "float32", b.spec.tolerance)   # raises CheckFailed outside the bound
"""


def test_the_found_onednn_gradient_case_stays_right():
    """TensorFlow 2.21 with oneDNN on (the default on AVX-512 CPUs) gets the filter gradient of a
    strided 1×1 convolution wrong, differently from call to call; ``nutshell hunt`` found it and
    the spec keeps it as a ``found`` vector. The backend must be right on it twenty times running."""
    r = subprocess.run([sys.executable, "-c", ONEDNN], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]


def test_maxout_first_piece_alone_gets_the_gradient(b):
    x, w, bias = np.ones((1, 1)), np.array([[2.0, 2.0, 1.0, 3.0]]), np.zeros(4)
    g = b.vjp("maxout", {"x": x, "w": w, "b": bias}, {"y": np.ones((1, 2))}, {"pieces": 2})
    np.testing.assert_array_equal(g["b"], [1.0, 0.0, 0.0, 1.0])


def test_binary_cross_entropy_gradient_at_zero(b):
    """σ(0) − t, not the −t that differentiating max(z, 0) and |z| at 0 would give."""
    z, t = np.zeros(2), np.array([0.0, 1.0])
    g = b.vjp("binary_cross_entropy", {"logits": z, "targets": t}, {"loss": np.array(1.0)})
    np.testing.assert_allclose(g["logits"], (0.5 - t) / 2, rtol=0, atol=0)
    assert set(g) == {"logits"}


def test_loss_is_a_0d_array(b):
    out = b.run("cross_entropy", {"logits": np.zeros((3, 4), np.float32), "labels": np.array([0, 1, 3])})
    assert isinstance(out["loss"], np.ndarray) and out["loss"].shape == () and out["loss"].dtype == np.float32


def test_benchmark_level_stays_in_tensorflow(b):
    import tensorflow as tf

    rng = np.random.default_rng(3)
    x, w = rng.standard_normal((2, 3, 8, 8)).astype(np.float32), rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    call = b.op("conv2d", {"pads": [1, 1, 1, 1]})
    out = call(x=b.to_native(x), w=b.to_native(w))
    b.synchronize()
    assert isinstance(out["y"], tf.Tensor)
    np.testing.assert_array_equal(b.to_numpy(out["y"]), b.run("conv2d", {"x": x, "w": w}, {"pads": [1, 1, 1, 1]})["y"])


def test_subnormals_are_flushed_by_tensorflow(b):
    """A known deviation, kept here so the guide stays true: TensorFlow's CPU kernels flush
    subnormal float32 values to zero, which the catalogue's ``subnormal`` checks report."""
    x = np.full((1, 1, 2, 2), 2.0 ** -130, np.float32)
    assert b.run("avg_pool2d", {"x": x}, {"kernel": [2, 2]})["y"][0, 0, 0, 0] == 0.0


@pytest.mark.parametrize("device, match", [("tpu", "unknown device"), ("gpu:7", "sees")])
def test_devices_it_cannot_use_are_unavailable(device, match):
    with pytest.raises(BackendUnavailable, match=match):
        backends.load("tf", device=device)
