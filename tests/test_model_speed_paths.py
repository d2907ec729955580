"""The native whole-model paths of the CuPy, ONNX and PyTorch backends (issue 18, item 5).

``b.model`` on those backends no longer runs the node-by-node executor (nutshell.spec.graph.Model):
CuPy runs every node on its own arrays, validated once at the model's boundary; ONNX composes the
concept graphs into one forward and one backward session. Both must give what the node-by-node
executor gives: the logits, loss, gradients and training trajectory within the tolerance model's
bounds of the float64 goldens (spec/vectors/models), and the same typed errors for the same bad
input. Neither path is its own oracle: the goldens are.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from nutshell import backends
from nutshell import spec as spec_mod
from nutshell.errors import NutshellError
from nutshell.spec import models, tolerance
from nutshell.spec import reference as ref
from nutshell.spec.graph import Model
from nutshell.spec.reference import models as ref_models
from nutshell.spec.reference.tracked import T

NATIVE = {"cupy": "CupyModel", "onnx": "OnnxModel", "torch": "TorchModel"}


def _load(name: str) -> backends.Backend:
    try:
        return backends.load(name, "cpu")
    except backends.BackendUnavailable as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="module", params=sorted(NATIVE))
def b(request) -> backends.Backend:
    return _load(request.param)


@pytest.fixture(scope="module")
def tol() -> dict:
    return spec_mod.load().tolerance


def _split(data: dict[str, np.ndarray], prefix: str, dtype: str | None = None) -> dict[str, np.ndarray]:
    return {k[len(prefix):]: v if dtype is None else v.astype(dtype) for k, v in data.items() if k.startswith(prefix)}


def _within(actual, golden, err, dtype: str, tol: dict, what: str) -> None:
    c = tolerance.compare(np.asarray(actual), golden, err, dtype, tol)
    assert c.ok, f"{what}: {c}"


def _pair(b: backends.Backend, name: str, dtype: str) -> tuple[Model, Model]:
    """(the backend's native model, the node-by-node executor) on the vector's parameters."""
    spec = models.get(name)
    params = _split(spec.vectors.load(), "param.", dtype)
    native = b.model(name, params=params, dims=spec.vectors.dims or None)
    assert type(native).__name__ == NATIVE[b.name]
    if native.unsupported():
        pytest.skip(native.unsupported())
    return native, Model(b, native.spec, params)


# --- the goldens ---------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", models.names())
def test_native_logits_loss_and_grads_are_within_the_goldens_bounds(b, tol, name, dtype):
    data = models.get(name).vectors.load()
    x, y = data["in.x"].astype(dtype), data["in.labels"]
    for m in _pair(b, name, dtype):
        what = f"{type(m).__name__} {name} {dtype}"
        _within(m.forward(x), data["out.logits"], data["err.logits"], dtype, tol, f"{what} logits")
        loss, grads = m.loss_and_grads(x, y)
        _within(loss, data["out.loss"], data["err.loss"], dtype, tol, f"{what} loss")
        if float(data[f"margin.{dtype}"]) > 1:                    # else a ReLU decision lies inside its bound
            assert set(grads) == {p.name for p in m.spec.params}
            for k, g in grads.items():
                assert g.dtype == np.dtype(dtype) and g.flags.c_contiguous
                _within(g, data[f"grad.{k}"], data[f"gerr.{k}"], dtype, tol, f"{what} gradient {k}")


def _trajectory(m: Model, data: dict[str, np.ndarray], lr: float, dtype: str) -> dict[str, np.ndarray]:
    losses = [m.step(x.astype(dtype), y, lr) for x, y in zip(data["train.x"], data["train.labels"], strict=True)]
    return {"loss": np.asarray(losses)} | m.params()


@pytest.mark.parametrize("name", ["softmax_regression", "mlp", "digits_cnn", "inception_net", "lstm_classifier"])
def test_native_training_steps_follow_the_reference_trajectory(b, tol, name):
    spec = models.get(name)
    data = spec.vectors.load()
    dtype = "float32" if b.name == "onnx" and spec.concepts & {"conv2d", "inception"} else "float64"
    if not float(data[f"train.margin.{dtype}"]) > 1:
        pytest.skip(f"the tolerance model cannot bound {name}'s trajectory in {dtype}")
    lr = spec.vector_model().vectors.train.lr
    goldens = {"loss": (data["train.loss"], data["train.lerr"])}
    goldens |= {k: (v, data[f"train.perr.{k}"]) for k, v in _split(data, "train.param.").items()}
    for m in _pair(b, name, dtype):
        result = _trajectory(m, data, lr, dtype)
        assert set(result) == set(goldens)
        for k, (golden, err) in goldens.items():
            _within(result[k], golden, err, dtype, tol, f"{type(m).__name__} {name} after the steps: {k}")


def test_a_native_model_reads_another_value_and_predicts(b):
    m = b.model("digits_cnn", seed=0)
    x = np.random.default_rng(0).standard_normal((3, 1, 8, 8))
    features, logits = m.forward(x, output="features"), m.forward(x)
    assert features.shape == (3, 128) and features.dtype == np.float32 and (features >= 0).all()   # pooled ReLUs
    fc = m.params()
    np.testing.assert_allclose(logits, features @ fc["fc_w"] + fc["fc_b"], rtol=1e-5, atol=1e-6)
    assert np.array_equal(m.predict(x), np.argmax(logits, axis=1))


def _fanning_out(tmp_path: Path) -> models.ModelSpec:
    """The mlp with values read several times: the hidden layer is an LSTM cell's x, h and c (whose
    second output c nothing reads), and w2, b2 serve two layers."""
    doc = yaml.safe_load(models.MODELS_FILE.read_text())
    mlp = next(m for m in doc["models"] if m["id"] == "mlp")
    mlp["params"] += [{"name": "w_ih", "shape": ["4H", "H"], "init": {"kind": "glorot_uniform"}},
                      {"name": "w_hh", "shape": ["4H", "H"], "init": {"kind": "glorot_uniform"}},
                      {"name": "bl", "shape": ["4H"], "init": {"kind": "uniform", "bound": 0.5}}]
    tanh = {"activation": "tanh"}
    mlp["graph"] = [
        {"id": "hidden", "op": "layer", "inputs": {"x": "x", "w": "w1", "b": "b1"}, "attrs": tanh},
        {"id": "cell", "op": "lstm_cell",
         "inputs": {"x": "hidden", "h": "hidden", "c": "hidden", "w_ih": "w_ih", "w_hh": "w_hh", "b": "bl"}},
        {"id": "features", "op": "layer", "inputs": {"x": "cell.h", "w": "w2", "b": "b2"}, "attrs": tanh},
        {"id": "again", "op": "layer", "inputs": {"x": "features", "w": "w2", "b": "b2"}, "attrs": tanh},
        {"id": "logits", "op": "dense", "inputs": {"x": "again", "w": "w3", "b": "b3"}}]
    path = tmp_path / "models.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return models.get("mlp", path)


def _native_model(b: backends.Backend, spec: models.ModelSpec, params: dict) -> Model:
    """The backend's native executor for a spec that is not in the repository's models file."""
    if b.name == "cupy":
        from nutshell.backends.cupy_impl.backend import CONCEPTS, CupyModel

        return CupyModel(b, spec, params=params, impls=CONCEPTS)
    if b.name == "torch":
        from nutshell.backends.torch_impl.backend import CONCEPTS, TorchModel

        return TorchModel(b, spec, params=params, impls=CONCEPTS)
    from nutshell.backends.onnx_impl.model import OnnxModel

    return OnnxModel(b, spec, params=params)


def test_a_value_read_by_several_nodes_gets_the_sum_of_their_cotangents(b, tol, tmp_path):
    spec = _fanning_out(tmp_path)
    params = models.init_params(spec, 3, "float64")
    rng = np.random.default_rng(2)
    x, y = rng.standard_normal((5, 2)), rng.integers(0, 3, 5)
    loss, grads, _ = ref_models.loss_and_grads(spec, {k: T(v) for k, v in params.items()}, T(x), y)
    got_loss, got = _native_model(b, spec, params).loss_and_grads(x, y)
    _within(got_loss, loss.v, loss.e, "float64", tol, "loss")
    for k, g in grads.items():
        _within(got[k], g.v, g.e, "float64", tol, f"gradient {k}")


# --- the same errors -----------------------------------------------------------------------------

BAD = {
    "a wrong channel count": ("digits_cnn", (2, 3, 8, 8), [0, 1]),
    "a label out of range": ("digits_cnn", (2, 1, 8, 8), [0, 10]),
    "one label short": ("mlp", (4, 2), [0, 1, 2]),
    "a rank-3 input to a dense model": ("mlp", (4, 2, 1), [0, 1, 2, 0]),
    "targets of the wrong length": ("logistic_regression", (3, 4), [1, 0]),
}


@pytest.mark.parametrize("case", BAD)
def test_bad_input_raises_the_node_by_node_executors_error(b, case):
    name, shape, labels = BAD[case]
    native, nodes = _pair(b, name, "float32")
    x, before = np.zeros(shape, np.float32), native.params()
    raised = []
    for m in (native, nodes):
        with pytest.raises(NutshellError) as info:
            m.step(x, np.array(labels), 0.1)
        raised.append((type(info.value), str(info.value)))
    assert raised[0] == raised[1]
    assert all(np.array_equal(v, before[k]) for k, v in native.params().items())     # nothing was stepped


def test_a_float64_model_the_onnx_backend_cannot_run_says_why():
    b = _load("onnx")
    m = b.model("digits_cnn", dtype="float64")
    assert "conv2d in float64" in m.unsupported()
    raised = []
    for each in (m, Model(b, m.spec, m.params())):
        with pytest.raises(NutshellError) as info:
            each.loss_and_grads(np.zeros((2, 1, 8, 8)), np.array([0, 1]))
        raised.append((type(info.value).__name__, str(info.value)))
    assert raised[0] == raised[1] and raised[0][0] == "UnsupportedConcept"


# --- ONNX: two sessions per model and batch shape --------------------------------------------------

def test_an_onnx_step_is_two_cached_sessions_of_standard_operators():
    from nutshell.backends.onnx_impl.model import Composer, Training

    b = _load("onnx")
    m = b.model("inception_net", seed=0)
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((4, 3, 16, 16)), rng.integers(0, 8, 4)
    built, entries = b.sessions.builds, len(b.sessions)
    m.step(x, y, 0.01)
    assert (b.sessions.builds - built, len(b.sessions) - entries) == (1, 1)
    step = m._training((4, 3, 16, 16))
    assert isinstance(step, Training) and step.forward.session is not step.backward.session
    m.step(x, y, 0.01)
    b.model("inception_net", seed=1).step(x, y, 0.01)
    assert b.sessions.builds - built == 1                                  # cached per (model, shape, dtype)
    m.step(x[:3], y[:3], 0.01)
    assert b.sessions.builds - built == 2
    forward, backward = Composer(b, m.spec, m.spec.shapes(4), m.dtype, m._differentiable).train()
    for graph in (forward, backward):
        assert {n.domain for n in graph.graph.node} == {""}
        assert {n.op_type for n in graph.graph.node}.isdisjoint({"Loop", "If", "Scan"})
    inputs = {i.name for i in backward.graph.input}
    assert {"x", "a_w3"} <= inputs and {o.name for o in forward.graph.output} == inputs - {
        "x", "labels", *m.params()} | {"loss"}
    assert "stem_w" not in inputs, "the gradient of x, the only use of the stem's weight backward, is dropped"
    forward_convs = {tuple(n.input[:2]) for n in forward.graph.node if n.op_type == "Conv"}
    backward_convs = [tuple(n.input[:2]) for n in backward.graph.node if n.op_type == "Conv"]
    assert backward_convs and forward_convs.isdisjoint(backward_convs), \
        "no backward Conv takes a forward Conv's (input, weight): the inception modules are not run again"
    assert not set(m.params()) & {w for _, w in backward_convs}, "a backward Conv convolves with a weight as is"


def test_an_onnx_relu_read_by_a_max_pool_alone_takes_its_mask_on_the_pooled_values(monkeypatch):
    """digits_cnn's relu → 2×2 max-pool pairs: backward, the relu's Where runs on the pooled values (a
    quarter of the elements) and the gradients are bit for bit those of the relu's own vjp after the
    unpooling, ties of zeros (a window of non-positive values) and negative inputs included."""
    from nutshell.backends.onnx_impl.model import Composer

    b = _load("onnx")
    spec = models.get("digits_cnn")
    assert set(Composer(b, spec, spec.shapes(8), "float32", {"x"})._relu_pools()) == {"pool1", "pool2"}
    rng = np.random.default_rng(3)
    x, y = rng.standard_normal((8, 1, 8, 8)).astype(np.float32), rng.integers(0, 10, 8)
    x[:, :, :4] = -np.abs(x[:, :, :4])                         # windows where the relu gives 0 everywhere
    fused = b.model("digits_cnn", seed=2)
    wheres = [n for n in Composer(b, spec, spec.shapes(8), "float32", fused._differentiable).train()[1].graph.node
              if n.op_type == "Where"]
    assert {n.name.partition("/")[0] for n in wheres} == {"d:relu1@pool1", "d:relu2@pool2"}
    loss, grads = fused._loss_and_grads(x, y)
    monkeypatch.setattr(Composer, "_relu_pools", lambda self: {})
    plain = backends.load("onnx", "cpu").model("digits_cnn", seed=2)
    loss_plain, grads_plain = plain._loss_and_grads(x, y)
    assert loss == loss_plain and grads.keys() == grads_plain.keys()
    for name, g in grads.items():
        assert np.array_equal(g, grads_plain[name]), name
    assert np.count_nonzero(grads["conv1_w"]) and np.count_nonzero(grads["conv2_w"])


# --- CuPy on NumPy: max pooling by running maximum ---------------------------------------------------

POOLS = {
    "2x2 stride 2": {"kernel": [2, 2], "stride": [2, 2], "pads": [0, 0, 0, 0], "dilation": [1, 1], "ceil_mode": False},
    "3x3 stride 1 pad 1": {"kernel": [3, 3], "stride": [1, 1], "pads": [1, 1, 1, 1], "dilation": [1, 1],
                           "ceil_mode": False},
    "dilated, ceil, uneven pads": {"kernel": [3, 2], "stride": [2, 3], "pads": [1, 0, 2, 1], "dilation": [2, 1],
                                   "ceil_mode": True},
}


@pytest.mark.parametrize("pool", POOLS)
def test_cupy_max_pool_sends_each_gradient_to_the_first_maximum(tol, pool):
    """Ties everywhere (a ReLU's zeros, values on a coarse grid) and a NaN: the forward values and
    the gradient's positions against the float64 reference."""
    b = _load("cupy")
    rng = np.random.default_rng(7)
    x = np.maximum(np.round(rng.standard_normal((3, 4, 9, 11)) * 2) / 2, 0).astype(np.float32)
    x[1, 2, 3, 4] = np.nan                                                 # inside a window of every pool
    attrs = POOLS[pool]
    y = b.run("max_pool2d", {"x": x}, attrs)["y"]
    gy = rng.standard_normal(y.shape).astype(np.float32)
    gx = b.vjp("max_pool2d", {"x": x}, {"y": gy}, attrs)["x"]
    want_y = ref.forward("max_pool2d", {"x": x.astype(np.float64)}, attrs)["y"]
    want_gx = ref.vjp("max_pool2d", {"x": x.astype(np.float64)}, {"y": gy.astype(np.float64)}, attrs)["x"]
    assert np.isnan(y).any() and (x == 0).mean() > 0.4
    _within(y, want_y.v, want_y.e, "float32", tol, "y")
    _within(gx, want_gx.v, want_gx.e, "float32", tol, "gx")


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32", "float64"])
def test_cupy_kept_is_where_bit_for_bit(dtype):
    """The branchless where(mask, a, 0) of the ReLU and max-pool vjps on NumPy: +0 where the mask
    is false (not −0), and inf, NaN (its payload too) and −0 kept as they are where it is true."""
    ml_dtypes = pytest.importorskip("ml_dtypes")
    _load("cupy")
    from nutshell.backends.cupy_impl.xp import kept

    dt = np.dtype(ml_dtypes.bfloat16) if dtype == "bfloat16" else np.dtype(dtype)
    rng = np.random.default_rng(3)
    a = rng.standard_normal((4, 5, 6)).astype(dt)
    a.flat[::7], a.flat[1::11], a.flat[2::13], a.flat[3::5] = np.inf, np.nan, -np.inf, -0.0
    bits = a.view(f"u{dt.itemsize}")
    bits.flat[4::17] = bits.flat[1] | 1                                    # a NaN with a payload
    mask = rng.random(a.shape) < 0.5
    got, want = kept(mask, a), np.where(mask, a, 0)
    assert got.dtype == want.dtype and got.shape == want.shape
    assert np.array_equal(got.view(f"u{dt.itemsize}"), want.view(f"u{dt.itemsize}"))


# --- CuPy on NumPy: a model step's (C, H, W, N) planes -------------------------------------------------

@pytest.mark.parametrize("pool", POOLS)
def test_cupy_planes_max_pool_sends_each_gradient_to_the_first_maximum(tol, pool):
    """The planes max pool on the ties and NaN of the test above, against the float64 reference."""
    _load("cupy")
    from nutshell.backends.cupy_impl import planes, pooling

    rng = np.random.default_rng(7)
    x = np.maximum(np.round(rng.standard_normal((3, 4, 9, 11)) * 2) / 2, 0).astype(np.float32)
    x[1, 2, 3, 4] = np.nan
    attrs = POOLS[pool]
    win = pooling.window(x.shape, attrs)
    y, saved = planes.pool_forward(planes.Planar.of(x).a, win)
    gy = rng.standard_normal(planes.Planar(y).shape).astype(np.float32)
    gx = planes.Planar(planes.pool_backward(planes.Planar.of(gy).a, saved, win)).nchw()
    want_y = ref.forward("max_pool2d", {"x": x.astype(np.float64)}, attrs)["y"]
    want_gx = ref.vjp("max_pool2d", {"x": x.astype(np.float64)}, {"y": gy.astype(np.float64)}, attrs)["x"]
    _within(planes.Planar(y).nchw(), want_y.v, want_y.e, "float32", tol, "y")
    _within(gx, want_gx.v, want_gx.e, "float32", tol, "gx")


CONVS = {
    "3x3 pad 1": ({"stride": [1, 1], "pads": [1, 1, 1, 1], "dilation": [1, 1], "groups": 1}, (3, 3)),
    "1x1": ({"stride": [1, 1], "pads": [0, 0, 0, 0], "dilation": [1, 1], "groups": 1}, (1, 1)),
    "1x1 groups": ({"stride": [1, 1], "pads": [0, 0, 0, 0], "dilation": [1, 1], "groups": 2}, (1, 1)),
    "strided, dilated, grouped, uneven pads": (
        {"stride": [2, 3], "pads": [1, 0, 2, 1], "dilation": [2, 1], "groups": 2}, (3, 2)),
}


@pytest.mark.parametrize("budget", [1 << 28, 1 << 12], ids=["whole", "a row per chunk"])
@pytest.mark.parametrize("case", CONVS)
def test_cupy_planes_conv_matches_the_reference(tol, case, budget):
    """The planes convolution's y, gx, gw and gb against the float64 reference, with its columns
    kept or extracted again, in one chunk of rows or many."""
    _load("cupy")
    from nutshell.backends.cupy_impl import planes

    attrs, (kh, kw) = CONVS[case]
    rng = np.random.default_rng(5)
    x = rng.standard_normal((3, 4, 9, 11)).astype(np.float32)
    w = rng.standard_normal((6, 4 // attrs["groups"], kh, kw)).astype(np.float32)
    b = rng.standard_normal(6).astype(np.float32)
    ins = {"x": x, "w": w, "b": b}
    xp_ = planes.Planar.of(x).a
    y, cols = planes.conv_forward(xp_, w, b, attrs, budget)
    gy = rng.standard_normal(planes.Planar(y).shape).astype(np.float32)
    want = ref.forward("conv2d", {k: v.astype(np.float64) for k, v in ins.items()}, attrs)["y"]
    _within(planes.Planar(y).nchw(), want.v, want.e, "float32", tol, "y")
    wants = ref.vjp("conv2d", {k: v.astype(np.float64) for k, v in ins.items()}, {"y": gy.astype(np.float64)},
                    attrs)
    assert (cols is None) == (budget < 1 << 20 and (kh, kw) != (1, 1))        # a 1×1 kernel's columns are x
    for reused in (cols, None):
        gx, gw = planes.conv_backward(xp_, w, planes.Planar.of(gy).a, attrs, budget, reused)
        got = {"x": planes.Planar(gx).nchw(), "w": gw, "b": planes.conv2d_vjp_saved(
            {"w": w, "b": b}, (xp_, reused), {"y": planes.Planar.of(gy).a}, attrs, {"w"})["b"]}
        for k in ("x", "w", "b"):
            _within(got[k], wants[k].v, wants[k].e, "float32", tol, f"g{k}")
