"""Exporting spec models to ONNX (nutshell/onnxio/codec/writer.py, ``nutshell export``): every model passes
the checker with full check, carries its metadata and a dynamic batch, and its logits in a plain
ONNX Runtime session, imported back onto every backend, and on every backend's own model all lie
within the tolerance model's bound of the float64 reference."""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from nutshell import backends, cli  # noqa: E402
from nutshell import spec as spec_mod  # noqa: E402
from nutshell.errors import ShapeError  # noqa: E402
from nutshell.onnxio.codec import writer as onnx_export  # noqa: E402
from nutshell.spec import models, tolerance  # noqa: E402
from nutshell.spec.reference import models as ref_models  # noqa: E402
from nutshell.spec.reference.tracked import T  # noqa: E402

TOL = spec_mod.load().tolerance
MODELS = models.names()


@pytest.fixture(scope="module")
def every_backend():
    loaded, _ = backends.available(["torch", "cupy", "onnx"])
    return loaded


def _session(proto: onnx.ModelProto) -> ort.InferenceSession:
    return ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])


def _within(actual: np.ndarray, ref: T, what: str) -> float:
    cmp = tolerance.compare(actual, ref.v, ref.e, "float32", TOL)
    assert cmp.ok and actual.dtype == np.float32, f"{what}: {cmp.describe()}"
    return cmp.usage


def test_every_model_is_exported(every_backend):
    assert set(MODELS) == {"logistic_regression", "softmax_regression", "mlp", "traffic_sign_cnn", "digits_cnn",
                           "inception_net", "lstm_classifier"}


@pytest.mark.parametrize("model_id", MODELS)
def test_export_checks_and_carries_its_metadata(model_id):
    spec = models.get(model_id)
    proto = onnx_export.export(spec, seed=1)
    onnx.checker.check_model(proto, full_check=True)
    onnx.shape_inference.infer_shapes(proto, check_type=True, strict_mode=True)
    assert proto.producer_name == "nutshell" and proto.producer_version
    assert max(o.version for o in proto.opset_import if o.domain == "") >= 17
    assert proto.ir_version == 8       # what opset 18 needs, so onnxruntime ≥ 1.14 loads it (not onnx's newest)
    props = {p.key: p.value for p in proto.metadata_props}
    assert props["nutshell.spec_version"] == spec_mod.load().version and props["nutshell.model"] == model_id
    concepts = {n.op for n in spec.nodes}
    for node in proto.graph.node:
        assert node.doc_string.startswith("nutshell"), node
    named = {n.doc_string.split()[3] for n in proto.graph.node if "spec concept" in n.doc_string or
             "structural op" in n.doc_string}
    assert concepts - {"zeros"} <= named                      # every spec concept is named by a node
    (x,) = proto.graph.input
    assert x.type.tensor_type.shape.dim[0].dim_param == "N"
    assert proto.graph.output[0].type.tensor_type.shape.dim[0].dim_param == "N"


@pytest.mark.parametrize("model_id", MODELS)
def test_exported_model_matches_every_backend(model_id, every_backend):
    """ONNX Runtime on the file, the file imported back onto every backend, and every backend's
    own model: all within the float64 reference's bounds (spec/reference/models.py), at two batch
    sizes (the batch is dynamic)."""
    spec = models.get(model_id)
    params = models.init_params(spec, seed=2)
    proto = onnx_export.export(spec, params)
    sess = _session(proto)
    usages = {}
    for batch in (1, 5):
        x = np.random.default_rng(batch).uniform(-1, 1, (batch, *spec.input_shape)).astype(np.float32)
        ref = ref_models.forward(spec, {k: T(v) for k, v in params.items()}, T(x))[spec.output]
        usages["onnxruntime"] = _within(sess.run(["logits"], {"x": x})[0], ref, "onnxruntime")
        for name, b in every_backend.items():
            usages[f"{name} import"] = _within(b.import_onnx(proto.SerializeToString()).run({"x": x})["logits"], ref,
                                               f"{name} import")
            usages[f"{name} model"] = _within(b.model(model_id, params=params).forward(x), ref, f"{name} model")
    print(model_id, {k: f"{v:.2g}" for k, v in usages.items()})


def test_export_cli_with_trained_parameters(tmp_path, capsys):
    """``nutshell export MODEL -o FILE --params FILE.npz`` takes what ``nutshell train -o`` writes."""
    spec = models.get("digits_cnn")
    params = models.init_params(spec, seed=5)
    np.savez(tmp_path / "trained.npz", **params)
    out = tmp_path / "digits.onnx"
    assert cli.main(["export", "digits_cnn", "-o", str(out), "--params", str(tmp_path / "trained.npz")]) == 0
    assert "checker (full check) passed" in capsys.readouterr().out
    proto = onnx.load(out)
    stored = {t.name: onnx.numpy_helper.to_array(t) for t in proto.graph.initializer}
    for name, value in params.items():
        np.testing.assert_array_equal(stored[name], value)
    x = np.random.default_rng(0).uniform(-1, 1, (3, 1, 8, 8)).astype(np.float32)
    ref = ref_models.forward(spec, {k: T(v) for k, v in params.items()}, T(x))[spec.output]
    _within(_session(proto).run(["logits"], {"x": x})[0], ref, "onnxruntime")


def test_export_refuses_parameters_that_do_not_fit(tmp_path, capsys):
    spec = models.get("mlp")
    params = models.init_params(spec)
    with pytest.raises(ShapeError, match="w1"):
        onnx_export.export(spec, {**params, "w1": params["w1"][:1]})
    with pytest.raises(ShapeError, match="missing"):
        onnx_export.export(spec, {k: v for k, v in params.items() if k != "b3"})
    np.savez(tmp_path / "bad.npz", **{k: v for k, v in params.items() if k != "b3"})
    assert cli.main(["export", "mlp", "-o", str(tmp_path / "x.onnx"), "--params", str(tmp_path / "bad.npz")]) == 2
    assert "ShapeError" in capsys.readouterr().err


def test_lstm_gates_are_reordered_for_onnx():
    """ONNX stacks the gates (i, o, f, c), the spec (i, f, g, o): block k of W is the spec's block
    [0, 3, 1, 2][k], and B is [b; 0]."""
    spec = models.get("lstm_classifier", T=2)
    params = models.init_params(spec, seed=0)
    proto = onnx_export.export(spec, params)
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in proto.graph.initializer}
    h = spec.dims["H"]
    w = next(v for k, v in inits.items() if k.startswith("w_ih"))
    blocks = params["w_ih"].reshape(4, h, -1)
    for k, spec_block in enumerate((0, 3, 1, 2)):
        np.testing.assert_array_equal(w[0, k * h:(k + 1) * h], blocks[spec_block])
    b = next(v for k, v in inits.items() if k.startswith("b_onnx"))
    np.testing.assert_array_equal(b[0, 4 * h:], 0)
    assert "w_ih" not in inits and "w_hh" not in inits           # only the reordered copies are kept


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_cross_check_with_torch_onnx(tmp_path):
    """torch.onnx's export of the same digits CNN, run by ONNX Runtime, gives the logits of ours
    within the tolerance model (skipped where torch.onnx cannot export offline)."""
    torch = pytest.importorskip("torch")
    spec = models.get("digits_cnn")
    p = models.init_params(spec, seed=3)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(1, 16, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(16, 32, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2), torch.nn.Flatten(),
        torch.nn.Linear(128, 10))
    with torch.no_grad():
        for layer, w, b in ((net[0], "conv1_w", "conv1_b"), (net[3], "conv2_w", "conv2_b")):
            layer.weight.copy_(torch.from_numpy(p[w]))
            layer.bias.copy_(torch.from_numpy(p[b]))
        net[7].weight.copy_(torch.from_numpy(p["fc_w"].T.copy()))
        net[7].bias.copy_(torch.from_numpy(p["fc_b"]))
    path = tmp_path / "torch.onnx"
    try:
        torch.onnx.export(net, (torch.zeros(1, 1, 8, 8),), str(path), input_names=["x"], output_names=["logits"],
                          dynamic_axes={"x": {0: "N"}, "logits": {0: "N"}}, dynamo=False)
    except Exception as exc:                                     # no exporter offline: nothing to compare
        pytest.skip(f"torch.onnx.export cannot run here: {type(exc).__name__}: {exc}")
    x = np.random.default_rng(4).uniform(-1, 1, (4, 1, 8, 8)).astype(np.float32)
    ref = ref_models.forward(spec, {k: T(v) for k, v in p.items()}, T(x))[spec.output]
    theirs = _session(onnx.load(path)).run(["logits"], {"x": x})[0]
    ours = _session(onnx_export.export(spec, p)).run(["logits"], {"x": x})[0]
    _within(theirs, ref, "torch.onnx")
    _within(ours, ref, "nutshell")
