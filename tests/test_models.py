"""The models section: spec, initialisation, reference, executor, vectors, datasets, training."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from nutshell import backends
from nutshell import spec as spec_mod
from nutshell.conformance import model_checks
from nutshell.conformance.checks import CheckFailed, Unsupported
from nutshell.errors import DTypeError, ShapeError, SpecError
from nutshell.spec import generate_models, models, tolerance
from nutshell.spec.reference import models as ref
from nutshell.spec.reference.tracked import T
from nutshell.training import datasets
from nutshell.training import fit as train

CONTRACT_MODELS = ["logistic_regression", "softmax_regression", "mlp", "traffic_sign_cnn", "digits_cnn",
                   "inception_net", "lstm_classifier"]


@pytest.fixture(scope="module")
def b() -> backends.Backend:
    """The quickest backend that loads here (the NumPy path of CuPy on a CPU)."""
    for name in ("cupy", "torch", "onnx"):
        try:
            return backends.load(name, "cpu" if name != "cupy" else None)
        except backends.BackendUnavailable:
            continue
    pytest.skip("no backend available")


@pytest.fixture(scope="module")
def tol() -> dict:
    return spec_mod.load().tolerance


def _doc() -> dict:
    return yaml.safe_load(models.MODELS_FILE.read_text())


def _write(tmp_path: Path, doc: dict) -> Path:
    p = tmp_path / "models.yaml"
    p.write_text(yaml.safe_dump(doc, sort_keys=False))
    return p


def _model(doc: dict, mid: str) -> dict:
    return next(m for m in doc["models"] if m["id"] == mid)


# --- the spec ------------------------------------------------------------------------------------

def test_every_contract_model_is_in_the_spec_and_fits_together():
    assert models.names() == CONTRACT_MODELS
    for m in models.load().values():
        shapes = m.shapes(batch=3)
        assert shapes[m.output] == ((3,) if m.loss == "binary_cross_entropy" else (3, m.classes))
        assert m.concepts <= set(spec_mod.load().concepts)


def test_figure5_architecture_is_the_glossarys():
    m = models.get("traffic_sign_cnn")
    s = m.shapes(batch=1)
    assert m.input_shape == (3, 32, 32)
    assert s["conv1.y"] == (1, 4, 28, 28) and s["pool1.y"] == (1, 4, 14, 14)
    assert s["conv2.y"] == (1, 10, 10, 10) and s["pool2.y"] == (1, 10, 5, 5)
    assert m.param("conv1_w").shape == (4, 3, 5, 5) and m.param("conv2_w").shape == (10, 4, 5, 5)


def test_dims_resolve_and_override():
    assert models.get("lstm_classifier").param("w_ih").shape == (96, 8)      # 4H × V
    assert models.get("mlp", H=64).param("w2").shape == (64, 64)
    assert models.get("lstm_classifier", T=51).input_shape == (51, 8)
    with pytest.raises(SpecError, match="no dimension 'Q'"):
        models.get("mlp", Q=3)


def test_an_unknown_value_names_model_and_node(tmp_path):
    doc = _doc()
    _model(doc, "mlp")["graph"][1]["inputs"]["x"] = "hiden"
    with pytest.raises(SpecError, match="model mlp: node features: unknown input value 'hiden'"):
        models.get("mlp", _write(tmp_path, doc))


def test_a_shape_that_does_not_fit_names_the_node(tmp_path):
    doc = _doc()
    _model(doc, "mlp")["params"][2]["shape"] = ["H", 7]
    with pytest.raises(SpecError, match="model mlp: node features"):
        models.get("mlp", _write(tmp_path, doc))


def test_an_unused_parameter_is_refused(tmp_path):
    doc = _doc()
    _model(doc, "mlp")["params"].append({"name": "spare", "shape": [3], "init": {"kind": "zeros"}})
    with pytest.raises(SpecError, match="parameter 'spare' is never used"):
        models.get("mlp", _write(tmp_path, doc))


def test_the_schema_refuses_an_unknown_field(tmp_path):
    doc = _doc()
    _model(doc, "mlp")["colour"] = "blue"
    with pytest.raises(SpecError, match="Additional properties"):
        models.get("mlp", _write(tmp_path, doc))


# --- initialisation ------------------------------------------------------------------------------

def test_init_is_seeded_float32_exact_and_per_parameter():
    m = models.get("digits_cnn")
    a, again, other = models.init_params(m, 0), models.init_params(m, 0), models.init_params(m, 1)
    assert all(np.array_equal(a[k], again[k]) for k in a)
    assert not np.array_equal(a["conv1_w"], other["conv1_w"])
    wide = models.init_params(m, 0, "float64")
    assert all(np.array_equal(wide[k], a[k].astype(np.float64)) for k in a)
    bound = np.sqrt(6 / 9)                                    # he_uniform, fan_in = 1·3·3
    assert np.abs(a["conv1_w"]).max() <= bound and not a["conv1_b"].any()
    forget = models.init_params(models.get("lstm_classifier"), 0)["b"].reshape(4, -1)
    assert (forget[1] == 3.0).all() and not forget[[0, 2, 3]].any()


def test_vectors_hold_the_spec_init():
    for m in models.load().values():
        vm, data = m.vector_model(), m.vectors.load()
        want = models.init_params(vm, vm.vectors.seed, "float64", vm.vectors.init)
        assert all(np.array_equal(data[f"param.{k}"], v) for k, v in want.items()), m.id


# --- the reference -------------------------------------------------------------------------------

def _ref_loss(m: models.ModelSpec, params: dict, x: np.ndarray, y: np.ndarray) -> float:
    return float(ref.loss_and_grads(m, {k: T(v) for k, v in params.items()}, T(x), y)[0].v)


@pytest.mark.parametrize("name", ["mlp", "lstm_classifier", "digits_cnn"])
def test_reference_gradients_match_finite_differences(name):
    m = models.get(name).vector_model()
    data = m.vectors.load()
    params = {k[6:]: v for k, v in data.items() if k.startswith("param.")}
    x, y = data["in.x"], data["in.labels"]
    rng = np.random.default_rng(0)
    d = {k: rng.standard_normal(v.shape) for k, v in params.items()}
    h = 1e-6
    fd = (_ref_loss(m, {k: v + h * d[k] for k, v in params.items()}, x, y)
          - _ref_loss(m, {k: v - h * d[k] for k, v in params.items()}, x, y)) / (2 * h)
    analytic = sum(float(np.sum(data[f"grad.{k}"] * d[k])) for k in params)
    assert fd == pytest.approx(analytic, rel=1e-6, abs=1e-9)


def test_margins_gate_where_first_order_bounds_hold():
    data = models.get("digits_cnn").vectors.load()
    assert data["margin.float32"] > 1 and data["margin.float64"] > 1
    assert data["train.margin.float64"] > 1
    assert data["train.margin.float32"] <= 1   # a CNN's float32 trajectory: a kink inside the bound


def test_generation_is_deterministic():
    assert generate_models.generate(check=True) == []


# --- the executor --------------------------------------------------------------------------------

@pytest.mark.parametrize("name", CONTRACT_MODELS)
def test_executor_matches_the_goldens_in_float64(b, tol, name):
    spec = models.get(name)
    data = spec.vectors.load()
    params = {k[6:]: v for k, v in data.items() if k.startswith("param.")}
    m = b.model(name, params=params, dims=spec.vectors.dims)
    if m.unsupported():
        pytest.skip(m.unsupported())
    assert tolerance.compare(m.forward(data["in.x"]), data["out.logits"], data["err.logits"], "float64", tol).ok
    loss, grads = m.loss_and_grads(data["in.x"], data["in.labels"])
    assert tolerance.compare(np.array(loss), data["out.loss"], data["err.loss"], "float64", tol).ok
    for k, g in grads.items():
        assert g.dtype == np.float64
        assert tolerance.compare(g, data[f"grad.{k}"], data[f"gerr.{k}"], "float64", tol).ok, k


def test_a_parameter_read_twice_gets_both_gradients(b, tmp_path):
    """A weight shared by two layers: its gradient is the sum of both uses (finite differences)."""
    doc = _doc()
    mlp = _model(doc, "mlp")
    mlp["graph"][1]["inputs"]["w"] = "w2"
    mlp["graph"].insert(2, {"id": "again", "op": "layer", "inputs": {"x": "features", "w": "w2", "b": "b2"},
                            "attrs": {"activation": "tanh"}})
    mlp["graph"][3]["inputs"]["x"] = "again"
    spec = models.get("mlp", _write(tmp_path, doc))
    from nutshell.spec.graph import Model

    params = models.init_params(spec, 0, "float64")
    rng = np.random.default_rng(1)
    x, y = rng.standard_normal((5, 2)), rng.integers(0, 3, 5)
    _, grads = Model(b, spec, params).loss_and_grads(x, y)
    d = rng.standard_normal(params["w2"].shape)
    h = 1e-6

    def loss_at(t: float) -> float:
        return Model(b, spec, params | {"w2": params["w2"] + t * d}).loss_and_grads(x, y)[0]

    assert (loss_at(h) - loss_at(-h)) / (2 * h) == pytest.approx(float(np.sum(grads["w2"] * d)), rel=1e-6)


def test_model_api(b):
    m = b.model("mlp", seed=3)
    assert m.dtype == np.float32 and m.forward(np.zeros((2, 2))).dtype == np.float32
    p = m.params()
    p["w1"][:] = 7
    assert not (m.params()["w1"] == 7).any()                  # params() is a copy
    assert m.forward(np.ones((4, 2)), output="hidden").shape == (4, 32)
    x, y = np.ones((4, 2)), np.array([0, 1, 2, 0])
    before, (loss, grads) = m.params(), m.loss_and_grads(x, y)
    assert m.step(x, y, 0.5) == loss
    after = m.params()
    assert all(np.array_equal(after[k], before[k] - np.float32(0.5) * grads[k]) for k in before)
    assert m.predict(x).shape == (4,)
    with pytest.raises(ShapeError, match="argument 'w1'"):
        b.model("mlp", params=before | {"w1": np.zeros((3, 3), np.float32)})
    with pytest.raises(DTypeError):
        b.model("mlp", params=before | {"w1": before["w1"].astype(np.float64)})


def test_binary_model_predicts_by_the_sign_of_its_logit(b):
    m = b.model("logistic_regression", params={"w": np.ones((4, 1), np.float32), "b": np.zeros(1, np.float32)})
    assert list(m.predict(np.array([[1.0, 0, 0, 0], [-1.0, 0, 0, 0]]))) == [1, 0]


# --- conformance items ---------------------------------------------------------------------------

def test_model_checks_pass_and_refuse_what_the_bound_cannot_cover(b, tol):
    rec = model_checks.train(b, models.get("softmax_regression"), "float32", tol, {})
    assert rec.usage <= 1 and {"loss", "w", "b"} <= set(rec.details)
    with pytest.raises(Unsupported, match="cannot bound the training trajectory of digits_cnn in float32"):
        model_checks.train(b, models.get("digits_cnn"), "float32", tol, {})
    assert model_checks.grads(b, models.get("digits_cnn"), "float32", tol).usage <= 1


def test_a_wrong_gradient_fails_the_check(b, tol, monkeypatch):
    from nutshell.spec.graph import Model

    real = Model.loss_and_grads

    def off_by_a_thousandth(self, x, y):
        loss, grads = real(self, x, y)
        return loss, grads | {"b3": grads["b3"] * 1.001}

    monkeypatch.setattr(Model, "loss_and_grads", off_by_a_thousandth)
    with pytest.raises(CheckFailed, match="gradient 'b3'"):
        model_checks.grads(b, models.get("mlp"), "float64", tol)


# --- datasets and training -----------------------------------------------------------------------

def test_digits_split_is_fixed():
    pytest.importorskip("sklearn")
    d = datasets.load(models.get("digits_cnn"))
    again = datasets.load(models.get("softmax_regression"))
    assert d.x_train.shape == (1438, 1, 8, 8) and d.x_test.shape == (359, 1, 8, 8)
    assert np.array_equal(d.x_test.reshape(359, -1), again.x_test) and np.array_equal(d.y_test, again.y_test)
    assert d.x_train.dtype == np.float32 and 0 <= d.x_train.min() and d.x_train.max() <= 1


@pytest.mark.parametrize("name", [n for n in CONTRACT_MODELS if n not in ("softmax_regression", "digits_cnn")])
def test_synthetic_datasets_are_deterministic(name):
    spec = models.get(name)
    a, c = datasets.load(spec), datasets.load(spec)
    assert np.array_equal(a.x_train, c.x_train) and np.array_equal(a.y_test, c.y_test)
    assert a.x_train.shape[1:] == spec.input_shape and a.classes == spec.classes
    assert set(np.unique(a.y_train)) == set(range(spec.classes))


def test_delayed_recall_labels_are_the_first_token():
    x, y = datasets.delayed_recall(n=16, length=51, classes=4, vocab=8, seed=0)
    assert x.shape == (16, 51, 8) and np.array_equal(x[:, 0].argmax(-1), y)
    assert (x[:, 1:].argmax(-1) >= 4).all()


def test_fit_learns_and_reports(b):
    spec = models.get("logistic_regression")
    m = b.model("logistic_regression")
    hist = train.fit(m, datasets.load(spec), epochs=2, batch_size=32, lr=0.1, seed=0)
    assert hist.steps == 2 * 25 and len(hist.epochs) == 2 and hist.test_accuracy > 0.75


def test_train_command_prints_progress_and_json(b, tmp_path, capsys):
    from nutshell import cli

    out = tmp_path / "p.npz"
    code = cli.main(["train", "logistic_regression", "-b", b.name, "--epochs", "2", "-o", str(out), "--json"])
    cap = capsys.readouterr()
    lines = cap.err.strip().splitlines()                 # progress on stderr: stdout is one JSON document
    assert code == 0 and any(line.startswith("epoch   2/2") for line in lines)
    result = json.loads(cap.out)
    assert set(result) == {"model", "backend", "test_accuracy", "final_loss", "steps"} and result["steps"] == 50
    saved = dict(np.load(out))
    assert set(saved) == {"w", "b"}
    assert b.model("logistic_regression", params=saved).forward(np.zeros((1, 4))).shape == (1,)
