"""The CuPy backend's GPU path, checked against its own NumPy path on every spec vector.

Skipped, with the reason, where CuPy is missing or sees no usable CUDA device. Run with
``pytest -m gpu tests/test_cupy_gpu.py`` on a machine with an NVIDIA GPU.
"""

from __future__ import annotations

import numpy as np
import pytest

from nutshell import spec
from nutshell.backends.cupy_impl import CupyBackend, im2col, kernels, recurrent
from nutshell.backends.cupy_impl.xp import device_count
from nutshell.errors import BackendUnavailable

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(device_count() == 0, reason="no usable CUDA device: CuPy is not installed, or "
                       "cupy.cuda.runtime.getDeviceCount() fails or reports 0 (no GPU or driver)"),
]

TOL = {"float32": {"rtol": 2e-4, "atol": 2e-5}, "float64": {"rtol": 1e-9, "atol": 1e-12}}
CONCEPTS = sorted(spec.load().concepts)


@pytest.fixture(scope="module")
def gpu() -> CupyBackend:
    b = CupyBackend()
    b.warmup()
    return b


@pytest.fixture(scope="module")
def cpu() -> CupyBackend:
    return CupyBackend(device="cpu")


def _close(got: np.ndarray, want: np.ndarray, dtype: str, what: str) -> None:
    scale = max(1.0, float(np.nanmax(np.abs(np.where(np.isfinite(want), want, 0)), initial=0.0)))
    np.testing.assert_allclose(got, want, rtol=TOL[dtype]["rtol"], atol=TOL[dtype]["atol"] * scale, err_msg=what)
    assert got.dtype == want.dtype == np.dtype(dtype), what


def test_device_is_cuda(gpu):
    assert gpu.device == "cuda:0"
    assert gpu.xp.__name__ == "cupy"


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("concept", CONCEPTS)
def test_gpu_equals_numpy_on_every_vector(gpu, cpu, concept, dtype):
    c = gpu.spec.concept(concept)
    for vec in c.vectors:
        data = vec.load()
        inputs = {k[3:]: (v.astype(dtype) if c.input(k[3:]).dtype == "float" else v)
                  for k, v in data.items() if k.startswith("in.")}
        want, got = cpu.run(concept, inputs, vec.attrs), gpu.run(concept, inputs, vec.attrs)
        for k in want:
            _close(got[k], want[k], dtype, f"{vec.name} forward {k}")
        if not vec.grad:
            continue
        cots = {k[4:]: v.astype(dtype) for k, v in data.items() if k.startswith("cot.")}
        gwant, ggot = cpu.vjp(concept, inputs, cots, vec.attrs), gpu.vjp(concept, inputs, cots, vec.attrs)
        assert set(ggot) == set(gwant)
        for k in gwant:
            _close(ggot[k], gwant[k], dtype, f"{vec.name} vjp {k}")


def test_raw_kernels_warm_up(gpu):
    """warmup() compiled every kernel in both dtypes; later calls hit the cache, nothing compiles."""
    gpu.warmup()
    assert kernels.elementwise.cache_info().currsize == 5
    assert kernels._raw.cache_info().currsize == 4            # im2col, col2im × float32, float64
    misses = kernels._raw.cache_info().misses
    x = gpu.to_native(np.ones((1, 1, 4, 4), np.float32))
    win = im2col.Window.make((4, 4), (2, 2), (1, 1), (0, 0, 0, 0), (1, 1))
    kernels.col2im(kernels.im2col(x, win, 0.0), win)
    assert kernels._raw.cache_info().misses == misses


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_window_kernels_equal_numpy_and_are_deterministic(gpu, dtype):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 7, 6)).astype(dtype)
    win = im2col.Window.make((7, 6), (3, 2), (2, 1), (1, 2, 2, 0), (2, 2), ceil=True)
    col = kernels.im2col(gpu.to_native(x), win, -np.inf)
    np.testing.assert_array_equal(gpu.to_numpy(col), im2col.im2col(x, win, -np.inf))
    g = rng.standard_normal(col.shape).astype(dtype)
    gx1, gx2 = kernels.col2im(gpu.to_native(g), win), kernels.col2im(gpu.to_native(g), win)
    np.testing.assert_array_equal(gpu.to_numpy(gx1), gpu.to_numpy(gx2))    # gather form: bitwise repeatable
    np.testing.assert_allclose(gpu.to_numpy(gx1), im2col.col2im(g, win), rtol=1e-6 if dtype == np.float32 else 1e-14)


@pytest.mark.parametrize(("shape", "kernel"), [
    ((3, 64, 28, 28), (3, 3)),      # 576 rows × 784 positions ≥ 2¹⁸ threads: one thread walks all 3 samples
    ((2, 8192, 3, 3), (3, 3)),      # 73,728 rows > the 65,535 blocks of grid y: the row loop strides
])
def test_im2col_grid_loops_equal_numpy(gpu, shape, kernel):
    x = np.random.default_rng(4).standard_normal(shape).astype(np.float32)
    win = im2col.Window.make(shape[2:], kernel, (1, 1), (1, 0, 0, 1), (1, 1))
    got = gpu.to_numpy(kernels.im2col(gpu.to_native(x), win, 0.0))
    np.testing.assert_array_equal(got, im2col.im2col(x, win, 0.0))


def test_lstm_gate_kernels_equal_numpy(gpu):
    rng = np.random.default_rng(1)
    z, c = rng.standard_normal((5, 12)) * 4, rng.standard_normal((5, 3))
    gh, gc = rng.standard_normal((5, 3)), rng.standard_normal((5, 3))
    h_new, c_new = recurrent.gates(z, c)
    dz, gc_prev = recurrent.gates_vjp(z, c, c_new, gh, gc)
    dev = [gpu.to_native(a) for a in (z, c, c_new, gh, gc)]
    for got, want in zip((*kernels.lstm_gates(dev[0], dev[1]), *kernels.lstm_gates_grad(*dev)),
                         (h_new, c_new, dz, gc_prev), strict=True):
        np.testing.assert_allclose(gpu.to_numpy(got), want, rtol=1e-12, atol=1e-14)


def test_non_contiguous_native_inputs(gpu, cpu):
    """Raw kernels ignore strides: the backend makes their inputs contiguous first."""
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 3, 6, 5)).astype(np.float32)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    xt = gpu.to_native(np.ascontiguousarray(x.transpose(0, 1, 3, 2))).transpose(0, 1, 3, 2)   # strided view
    assert not xt.flags.c_contiguous
    attrs = {"pads": [1, 0, 1, 2], "stride": [2, 1]}
    y = gpu.op("conv2d", attrs)(x=xt, w=gpu.to_native(w))["y"]
    gpu.synchronize()
    np.testing.assert_allclose(gpu.to_numpy(y), cpu.run("conv2d", {"x": x, "w": w}, attrs)["y"], rtol=2e-4, atol=2e-5)
    s = gpu.op("sigmoid")(x=xt)["y"]
    np.testing.assert_allclose(gpu.to_numpy(s), cpu.run("sigmoid", {"x": x})["y"], rtol=1e-6)


def test_subnormals_are_flushed_as_declared(gpu, cpu):
    """The declared deviation holds: on the GPU CuPy's kernels flush float32 subnormals; NumPy keeps them."""
    x = np.full((2, 3), 2.0**-140, np.float32)
    assert gpu.run("relu", {"x": x})["y"].max() == 0 and cpu.run("relu", {"x": x})["y"].min() == 2.0**-140
    s = np.full((2, 3), -100.0, np.float32)                       # σ(−100) = 3.7e−44, an exp-made subnormal
    assert gpu.run("sigmoid", {"x": s})["y"].max() == 0 and cpu.run("sigmoid", {"x": s})["y"].min() > 0
    flushed = ("relu", "tanh", "max_pool2d", "avg_pool2d", "global_avg_pool2d", "lrn")
    catalogue = {f"{c}[cupy-subnormal]" for c in flushed}
    found = {"layer[cupy-found_torch_2026_12_04_1-float32]", "softmax_regression[cupy-found_onnx_2026_12_04_1-float32]",
             "lstm_cell[cupy-found_torch_2026_12_04_1-float32]", "lstm[cupy-found_torch_2026_12_04_1-float32]"}
    assert set(gpu.deviations) == catalogue | found


def test_tf32_stays_off(gpu):
    """1 + 2⁻¹² needs 13 mantissa bits: TF32 (10) would round it to 1 and the sum to 64."""
    a = np.full((64, 64), 1 + 2.0**-12, np.float32)
    out = gpu.to_numpy(gpu.to_native(a) @ gpu.to_native(np.ones((64, 64), np.float32)))
    assert out[0, 0] == np.float32(64 + 64 * 2.0**-12)
    x = np.full((1, 64, 3, 3), 1 + 2.0**-12, np.float32)
    y = gpu.run("conv2d", {"x": x, "w": np.ones((1, 64, 3, 3), np.float32)})["y"]
    assert y[0, 0, 0, 0] == np.float32(576 * (1 + 2.0**-12))


def test_tf32_environment_is_refused(monkeypatch):
    monkeypatch.setenv("CUPY_TF32", "1")
    with pytest.raises(BackendUnavailable, match="CUPY_TF32"):
        CupyBackend(device="cuda")


def test_missing_device_index_is_refused():
    with pytest.raises(BackendUnavailable):
        CupyBackend(device=f"cuda:{device_count()}")


def test_chunked_conv_on_gpu_equals_whole(gpu):
    rng = np.random.default_rng(3)
    x, w = rng.standard_normal((9, 3, 8, 8)), rng.standard_normal((4, 3, 3, 3))
    gy = rng.standard_normal((9, 4, 8, 8))
    whole = gpu.vjp("conv2d", {"x": x, "w": w}, {"y": gy}, {"pads": [1, 1, 1, 1]})
    small = CupyBackend()
    small.mem_budget_mb = 0.05
    parts = small.vjp("conv2d", {"x": x, "w": w}, {"y": gy}, {"pads": [1, 1, 1, 1]})
    for k in whole:
        np.testing.assert_allclose(parts[k], whole[k], rtol=1e-12, atol=1e-12)
