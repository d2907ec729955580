"""The ONNX backend's own machinery: its graphs, the session cache, the dtypes it declares
unsupported, and backward graphs against independent computations (onnx's ReferenceEvaluator
and NumPy loops written here)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from onnx.reference import ReferenceEvaluator  # noqa: E402

from nutshell.backends.onnx_impl import OnnxBackend  # noqa: E402
from nutshell.backends.onnx_impl.backend import UNSUPPORTED  # noqa: E402
from nutshell.backends.onnx_impl.graph import OPSET, session  # noqa: E402
from nutshell.errors import BackendUnavailable, ShapeError, UnsupportedConcept  # noqa: E402

CONV = {"stride": [2, 2], "pads": [1, 0, 2, 1], "dilation": [2, 2], "groups": 2}
INCEPTION = {"x": (1, 3, 5, 5), "w1": (2, 3, 1, 1), "b1": (2,), "w3r": (2, 3, 1, 1), "b3r": (2,),
             "w3": (3, 2, 3, 3), "b3": (3,), "w5r": (1, 3, 1, 1), "b5r": (1,), "w5": (2, 1, 5, 5), "b5": (2,),
             "wp": (2, 3, 1, 1), "bp": (2,)}
LSTM = {"w_ih": (8, 3), "w_hh": (8, 2), "b": (8,)}
# concept -> (input shapes, attrs): one small case per concept
SAMPLES = {
    "sigmoid": ({"x": (2, 3)}, {}), "relu": ({"x": (4,)}, {}), "tanh": ({"x": (2, 2, 2)}, {}),
    "softmax": ({"x": (3, 4)}, {"axis": 0}), "log_softmax": ({"x": (3, 4)}, {}),
    "dense": ({"x": (3, 4), "w": (4, 2), "b": (2,)}, {}),
    "layer": ({"x": (3, 4), "w": (4, 2), "b": (2,)}, {"activation": "tanh"}),
    "maxout": ({"x": (3, 4), "w": (4, 6), "b": (6,)}, {"pieces": 3}),
    "logistic_regression": ({"x": (3, 4), "w": (4,), "b": ()}, {}),
    "softmax_regression": ({"x": (3, 4), "w": (4, 5), "b": (5,)}, {}),
    "binary_cross_entropy": ({"logits": (5,), "targets": (5,)}, {}),
    "cross_entropy": ({"logits": (5, 3), "labels": (5,)}, {}),
    "conv2d": ({"x": (2, 4, 9, 8), "w": (6, 2, 3, 3), "b": (6,)}, CONV),
    "convolve2d": ({"x": (2, 4, 9, 8), "w": (6, 2, 3, 3)}, CONV),
    "conv2d_fft": ({"x": (2, 4, 9, 8), "w": (6, 2, 3, 3), "b": (6,)}, CONV),
    "max_pool2d": ({"x": (1, 2, 8, 8)}, {"kernel": [2, 3], "stride": [1, 2], "pads": [2, 3, 1, 4], "dilation": [3, 2],
                                         "ceil_mode": True}),
    "avg_pool2d": ({"x": (1, 2, 8, 9)}, {"kernel": [2, 3], "stride": [2, 2], "pads": [0, 1, 1, 2], "ceil_mode": True,
                                         "count_include_pad": True}),
    "global_avg_pool2d": ({"x": (2, 3, 4, 5)}, {}),
    "lrn": ({"x": (2, 6, 2, 3)}, {"size": 4, "alpha": 0.3, "beta": 0.6, "bias": 2.0}),
    "lstm_cell": ({"x": (3, 3), "h": (3, 2), "c": (3, 2), **LSTM}, {}),
    "lstm": ({"x": (4, 3, 3), "h0": (3, 2), "c0": (3, 2), **LSTM}, {}),
    "inception": (INCEPTION, {}),
}
CASES = [(c, dt) for c in SAMPLES for dt in ("float32", "float64")]


@pytest.fixture(scope="module")
def b():
    return OnnxBackend(device="cpu")


def sample(concept: str, dtype: str, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    shapes = SAMPLES[concept][0]
    return {k: rng.integers(0, 3, s) if k == "labels" else rng.standard_normal(s).astype(dtype)
            for k, s in shapes.items()}


def full_attrs(b, concept: str) -> dict:
    from nutshell.spec import validate
    return validate._check_attrs(b.spec.concept(concept), SAMPLES[concept][1])


def test_samples_cover_every_concept(b):
    assert set(SAMPLES) == set(b.spec.concepts)


@pytest.mark.parametrize("direction", ["forward", "vjp"])
@pytest.mark.parametrize(("concept", "dtype"), CASES)
def test_every_graph_passes_the_full_checker(b, concept, dtype, direction):
    if b.unsupported(concept, dtype):
        pytest.skip(b.unsupported(concept, dtype))
    model = b.build(concept, full_attrs(b, concept), SAMPLES[concept][0], dtype, direction)
    onnx.checker.check_model(model, full_check=True)
    onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    assert [(o.domain, o.version) for o in model.opset_import] == [("", OPSET)]
    assert all(n.domain == "" for n in model.graph.node), "standard operators only"
    prefix = "out." if direction == "forward" else "grad."
    assert all(o.name.startswith(prefix) for o in model.graph.output)


@pytest.mark.parametrize(("concept", "dtype"), CASES)
def test_declared_dtypes_are_true(b, concept, dtype):
    """An unsupported declaration means ONNX Runtime really refuses the graph; everything else
    runs, forward and backward, and returns the dtype it was given."""
    attrs, shapes = full_attrs(b, concept), SAMPLES[concept][0]
    if b.unsupported(concept, dtype):
        assert dtype == "float64" and (concept, dtype) in UNSUPPORTED
        with pytest.raises(Exception, match="NOT_IMPLEMENTED"):
            session(b.build(concept, attrs, shapes, dtype, "forward"), ["CPUExecutionProvider"])
        with pytest.raises(UnsupportedConcept, match="float64"):
            b.run(concept, sample(concept, dtype), attrs)
        return
    ins = sample(concept, dtype)
    out = b.run(concept, ins, attrs)
    grads = b.vjp(concept, ins, {k: np.ones_like(v) for k, v in out.items()}, attrs)
    assert {v.dtype for v in (*out.values(), *grads.values())} == {np.dtype(dtype)}
    assert set(grads) == {i.name for i in b.spec.concept(concept).inputs if i.differentiable and i.name in ins}


def test_float64_conv_is_declared_unsupported(b):
    assert "Conv" in b.unsupported("conv2d", "float64")
    assert b.unsupported("conv2d", "float32") is None
    assert b.unsupported("conv2d_fft", "float64") is None      # DFT and Einsum have float64 kernels
    x, w = np.ones((1, 1, 3, 3)), np.ones((1, 1, 2, 2))
    with pytest.raises(UnsupportedConcept, match="conv2d"):
        b.run("conv2d", {"x": x, "w": w})
    assert "conv2d" in b.concepts


def test_session_cache_reuses_and_is_bounded():
    b = OnnxBackend(device="cpu", cache_size=2)
    x = np.ones(3, np.float32)
    b.run("relu", {"x": x})
    b.run("relu", {"x": x + 1})
    assert (len(b.sessions), b.sessions.builds) == (1, 1)
    b.run("relu", {"x": np.ones(4, np.float32)})
    b.run("relu", {"x": x})                                    # refreshes the (3,) entry
    b.run("relu", {"x": np.ones(5, np.float32)})               # evicts (4,), the least recently used
    assert (len(b.sessions), b.sessions.builds) == (2, 3)
    b.run("relu", {"x": x})
    assert b.sessions.builds == 3
    b.run("relu", {"x": np.ones(4, np.float32)})
    assert b.sessions.builds == 4
    b.run("relu", {"x": x.astype(np.float64)})                 # dtype is part of the key
    b.vjp("relu", {"x": x}, {"y": x})                          # so is the direction
    assert b.sessions.builds == 6


def test_op_callable_uses_the_cache(b):
    ins = sample("conv2d", "float32")
    call = b.op("conv2d", CONV)
    native = {k: b.to_native(v) for k, v in ins.items()}
    builds = b.sessions.builds
    first = b.to_numpy(call(**native)["y"])
    call(**native)
    b.synchronize()
    assert b.sessions.builds <= builds + 1
    np.testing.assert_array_equal(first, b.run("conv2d", ins, CONV)["y"])
    with pytest.raises(ShapeError, match="'X'"):
        call(X=native["x"], w=native["w"])
    with pytest.raises(ShapeError, match="'w'"):
        call(x=native["x"])


def test_graphs_carry_the_ir_version_of_their_opset(b):
    """Not the onnx package's newest IR (14 with onnx 1.23), which onnxruntime < 1.31 refuses."""
    from onnx import helper

    from nutshell.backends.onnx_impl.graph import OPSET

    proto = b.build("relu", {}, {"x": (2, 3)}, "float32", "forward")
    assert proto.ir_version == helper.find_min_ir_version_for([helper.make_opsetid("", OPSET)]) == 8


def test_save_graph_writes_a_checked_model(b, tmp_path):
    path = b.save_graph("lstm", {}, SAMPLES["lstm"][0], "float32", "vjp", tmp_path / "lstm_vjp.onnx")
    model = onnx.load(path)
    onnx.checker.check_model(model, full_check=True)
    assert {i.name for i in model.graph.input} >= {"x", "cot.y", "cot.h", "cot.c"}


def test_cuda_without_a_gpu_is_unavailable():
    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("onnxruntime-gpu is installed")
    with pytest.raises(BackendUnavailable, match="onnxruntime-gpu"):
        OnnxBackend(device="cuda:0")
    assert OnnxBackend().device == "cpu"


def test_imports_neither_torch_nor_cupy():
    code = "import sys, nutshell; nutshell.load('onnx'); print(sorted({'torch', 'cupy'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.stdout.strip() == "[]", out.stderr


# --- backward graphs against a second opinion --------------------------------------------------------

@pytest.mark.parametrize(("concept", "attrs"), [
    ("conv2d", {"stride": [2, 1], "pads": [1, 0, 2, 1], "dilation": [1, 2], "groups": 1}),  # group 1: no evaluator gap
    ("lstm_cell", {}), ("lrn", SAMPLES["lrn"][1]), ("softmax_regression", {}), ("binary_cross_entropy", {}),
])
def test_vjp_graph_agrees_with_the_reference_evaluator(b, concept, attrs):
    shapes = dict(SAMPLES[concept][0])
    if concept == "conv2d":
        shapes["w"], shapes["b"] = (5, 4, 3, 2), (5,)
    rng = np.random.default_rng(3)
    ins = {k: rng.standard_normal(s).astype(np.float32) for k, s in shapes.items()}
    full = {**full_attrs(b, concept), **attrs}
    out = b.run(concept, ins, full)
    cots = {k: rng.standard_normal(v.shape).astype(np.float32) for k, v in out.items()}
    model = b.build(concept, full, shapes, "float32", "vjp")
    theirs = ReferenceEvaluator(model).run(None, {**ins, **{f"cot.{k}": v for k, v in cots.items()}})
    ours = b.vjp(concept, ins, cots, full)
    for o, t in zip(model.graph.output, theirs, strict=True):
        np.testing.assert_allclose(ours[o.name[5:]], t, rtol=2e-5, atol=2e-5, err_msg=o.name)


def conv_vjp_loops(x, w, gy, stride, pads, dilation, groups):
    """gx, gw of y[n,o,i,j] = Σ w[o,c,p,q]·xpad[n, g·Cg + c, i·sh + p·dh, j·sw + q·dw], by loops."""
    xp = np.pad(x, ((0, 0), (0, 0), (pads[0], pads[2]), (pads[1], pads[3])))
    gxp, gw = np.zeros_like(xp), np.zeros_like(w)
    o_per_group, cg = w.shape[0] // groups, w.shape[1]
    for n, o, i, j in np.ndindex(*gy.shape):
        for c, p, q in np.ndindex(*w.shape[1:]):
            ch, r, s = o // o_per_group * cg + c, i * stride[0] + p * dilation[0], j * stride[1] + q * dilation[1]
            gxp[n, ch, r, s] += gy[n, o, i, j] * w[o, c, p, q]
            gw[o, c, p, q] += gy[n, o, i, j] * xp[n, ch, r, s]
    return gxp[:, :, pads[0]:pads[0] + x.shape[2], pads[1]:pads[1] + x.shape[3]], gw


@pytest.mark.parametrize("concept", ["conv2d", "conv2d_fft"])
def test_conv_vjp_k3_s2_d2_g2_matches_loops(b, concept):
    ins = sample(concept, "float32", seed=4)
    gy = np.random.default_rng(5).standard_normal(b.run(concept, ins, CONV)["y"].shape).astype(np.float32)
    grads = b.vjp(concept, ins, {"y": gy}, CONV)
    gx, gw = conv_vjp_loops(*(ins[k].astype(float) for k in ("x", "w")), gy.astype(float), **CONV)
    np.testing.assert_allclose(grads["x"], gx, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(grads["w"], gw, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(grads["b"], gy.sum((0, 2, 3)), rtol=1e-5, atol=1e-5)


def test_max_pool_vjp_ties_go_to_the_first_in_window_order(b):
    x = np.zeros((1, 1, 4, 4), np.float32)
    x[0, 0, 1, 2] = x[0, 0, 2, 1] = 1.0           # two equal maxima share the middle windows
    attrs = {"kernel": [2, 2], "stride": [1, 1]}
    gy = np.arange(1, 10, dtype=np.float32).reshape(1, 1, 3, 3)
    want = np.zeros((4, 4))
    for i, j in np.ndindex(3, 3):                 # loops: strict > keeps the first of equals
        best = (i, j)
        for p, q in np.ndindex(2, 2):
            if x[0, 0, i + p, j + q] > x[0, 0, best[0], best[1]]:
                best = (i + p, j + q)
        want[best] += gy[0, 0, i, j]
    np.testing.assert_array_equal(b.vjp("max_pool2d", {"x": x}, {"y": gy}, attrs)["x"][0, 0], want)


@pytest.mark.parametrize("include", [False, True])
def test_avg_pool_ceil_mode_matches_loops(b, include):
    """n = 8, k = 2, s = 2, pads (0, 1): ceil gives 5 windows, the last one starts in the end
    padding and is dropped, so 4 remain (ONNX Runtime's own ceil mode keeps it)."""
    x = np.random.default_rng(6).standard_normal((1, 1, 8, 9)).astype(np.float32)
    attrs = {"kernel": [2, 3], "stride": [2, 2], "pads": [0, 1, 1, 2], "ceil_mode": True, "count_include_pad": include}
    y = b.run("avg_pool2d", {"x": x}, attrs)["y"][0, 0]
    gy = np.arange(y.size, dtype=np.float32).reshape(y.shape)
    gx = b.vjp("avg_pool2d", {"x": x}, {"y": gy[None, None]}, attrs)["x"][0, 0]
    assert y.shape == (4, 5)
    want, want_gx = np.zeros(y.shape), np.zeros((8, 9))
    for i, j in np.ndindex(*y.shape):
        r0, c0 = 2 * i, 2 * j - 1
        rows, cols = slice(max(r0, 0), min(r0 + 2, 8)), slice(max(c0, 0), min(c0 + 3, 9))
        if include:
            d = (min(r0 + 2, 8 + 1) - r0) * (min(c0 + 3, 9 + 2) - c0)
        else:
            d = (rows.stop - rows.start) * (cols.stop - cols.start)
        want[i, j] = x[0, 0, rows, cols].sum() / d
        want_gx[rows, cols] += gy[i, j] / d
    np.testing.assert_allclose(y, want, rtol=1e-6)
    np.testing.assert_allclose(gx, want_gx, rtol=1e-6)


FIG3_X = np.array([[1, 1, 1, 0, 0], [0, 1, 1, 1, 0], [0, 0, 1, 1, 1], [0, 0, 1, 1, 0], [0, 1, 1, 0, 0]], np.float32)
FIG3_W = np.array([[1, 0, 1], [0, 1, 0], [1, 0, 1]], np.float32)


@pytest.mark.parametrize("concept", ["conv2d", "convolve2d", "conv2d_fft"])
def test_glossary_figure3(b, concept):
    y = b.run(concept, {"x": FIG3_X[None, None], "w": FIG3_W[None, None]})["y"]
    np.testing.assert_allclose(y[0, 0], [[4, 3, 4], [2, 4, 3], [2, 3, 4]], atol=1e-5)


def test_max_pool_propagates_nan_and_pads_with_minus_inf(b):
    x = -np.ones((1, 1, 4, 4), np.float32)
    x[0, 0, 0, 0] = np.nan
    y = b.run("max_pool2d", {"x": x}, {"kernel": [2, 2], "pads": [1, 1, 1, 1]})["y"][0, 0]
    assert np.isnan(y[0, 0]) and np.all(y.ravel()[1:] == -1)


def test_activations_route_around_onnx_runtime_kernels(b):
    """ORT's Sigmoid is 163 ulp off at −5 and 0 at −20; its float32 Tanh flushes tiny x to 0."""
    x = np.array([-1000, -20, -5, 1000], np.float32)
    y = b.run("sigmoid", {"x": x})["y"]
    assert y[0] == 0 and y[-1] == 1
    np.testing.assert_allclose(y[1:3], 1 / (1 + np.exp([20.0, 5.0])), rtol=4e-7)
    tiny = np.array([2.0 ** -140, -(2.0 ** -130), 1e-30], np.float32)
    np.testing.assert_array_equal(b.run("tanh", {"x": tiny})["y"], tiny)


@pytest.mark.parametrize("concept", ["conv2d", "convolve2d", "conv2d_fft", "dense", "max_pool2d"])
def test_an_empty_batch_gives_empty_outputs_and_zero_gradients(b, concept):
    """Found by nutshell hunt: an empty batch made ONNX Runtime's Reshape fail in the convolutions'
    vjp (and its FFT trap with SIGFPE). Every output is empty, so each gradient is a sum over no
    cotangent entries: exactly zero, of the input's shape."""
    x = np.zeros((0, 2, 4, 4) if concept != "dense" else (0, 3), np.float32)
    others = {"dense": {"w": np.ones((3, 2), np.float32), "b": np.ones(2, np.float32)},
              "max_pool2d": {}}.get(concept, {"w": np.ones((3, 2, 2, 2), np.float32), "b": np.ones(3, np.float32)})
    attrs = {"kernel": [2, 2]} if concept == "max_pool2d" else {}
    y = b.run(concept, {"x": x, **others}, attrs)["y"]
    assert y.size == 0 and y.dtype == np.float32 and y.shape[0] == 0
    grads = b.vjp(concept, {"x": x, **others}, {"y": np.zeros_like(y)}, attrs)
    assert set(grads) == {"x", *others}
    for k, g in grads.items():
        assert g.shape == ({"x": x, **others}[k]).shape and not g.any()
