"""Every claim check passes on a correct backend and fails on one that breaks the claim.

The correct backend is the float64 reference behind the contract; each broken one replaces one
concept with a plausible mistake (a non-linear dense, a convolution that forgets the flip,
subsampling posing as max pooling, ...), or the claim gets a deliberately wrong threshold.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest

from nutshell import spec
from nutshell.backends.base import Backend
from nutshell.conformance import claims
from nutshell.conformance.checks import CheckFailed, Unsupported
from nutshell.spec import reference
from nutshell.training import fit as train

TOL = spec.load().tolerance
CLAIMS = {c["id"]: c for c in claims.load()}


def _f64(arrays: dict) -> dict:
    return {k: v.astype(np.float64) if v.dtype.kind == "f" else v for k, v in arrays.items()}


def _dtype(arrays: dict) -> np.dtype:
    return next(v.dtype for v in arrays.values() if v.dtype.kind == "f")


def oracle_forward(concept: str, inputs: dict, attrs: dict) -> dict:
    dt = _dtype(inputs)
    return {k: t.v.astype(dt) for k, t in reference.forward(concept, _f64(inputs), attrs).items()}


class Oracle(Backend):
    """The reference as a backend; ``patches`` replace a concept's forward or vjp."""

    name = "oracle"

    def __init__(self, forward: dict | None = None, vjp: dict | None = None):
        super().__init__()
        self.patch_forward, self.patch_vjp = forward or {}, vjp or {}

    def _forward(self, concept, inputs, attrs):
        return self.patch_forward.get(concept, oracle_forward)(concept, inputs, attrs)

    def _vjp(self, concept, inputs, cotangents, attrs):
        if concept in self.patch_vjp:
            return self.patch_vjp[concept](concept, inputs, cotangents, attrs)
        dt = _dtype(inputs)
        return {k: t.v.astype(dt) for k, t in reference.vjp(concept, _f64(inputs), _f64(cotangents), attrs).items()}


def run(claim_id: str, backend: Backend | None = None, **threshold):
    claim = copy.deepcopy(CLAIMS[claim_id])
    claim["threshold"].update(threshold)
    return claims.run_claim(backend or Oracle(), claim, TOL)


def fails(claim_id: str, backend: Backend | None = None, **threshold) -> str:
    with pytest.raises(CheckFailed) as e:
        run(claim_id, backend, **threshold)
    reported = CLAIMS[claim_id]["report"]
    assert set(reported) <= set(e.value.record["details"]), "a failure must carry the measured numbers"
    return str(e.value)


def test_every_claim_has_a_check_and_every_check_a_claim():
    assert set(CLAIMS) == set(claims.CHECKS)


@pytest.mark.parametrize("claim_id", sorted(k for k, c in CLAIMS.items() if not c.get("slow")))
def test_claim_holds_on_the_reference(claim_id):
    """The training claims (marked slow) pass on the real backends; training on the oracle is too slow."""
    rec = run(claim_id)
    assert rec.usage <= 1
    assert set(CLAIMS[claim_id]["report"]) <= set(rec.details)


def test_headline_shows_the_reported_numbers():
    line = claims.headline("vanishing_gradients", {"sigmoid_ratio": 1.7659e-12, "relu_ratio": 1.0078, "other": 3})
    assert line == "sigmoid_ratio 1.77e-12, relu_ratio 1.01"
    assert claims.headline("inception_reduction", {"direct_macs": 120422400}) == "direct_macs 120,422,400"


# --- 1. linear collapse ----------------------------------------------------------------------

def test_linear_collapse_fails_when_dense_is_slightly_nonlinear():
    def bent(concept, inputs, attrs):
        y = oracle_forward(concept, inputs, attrs)["y"]
        return {"y": y + np.float32(1e-4) * y * y}
    assert "bound usage" in fails("linear_collapse", Oracle({"dense": bent}))


def test_linear_collapse_fails_when_the_layers_do_nothing():
    assert "moved the batch" in fails("linear_collapse", Oracle({"dense": lambda c, i, a: {"y": i["x"].copy()}}))


# --- 2. XOR ----------------------------------------------------------------------------------

def test_xor_fails_without_the_relu():
    def linear_layer(concept, inputs, attrs):
        return oracle_forward(concept, inputs, {**attrs, "activation": "identity"})
    assert "ReLU network" in fails("xor_needs_nonlinearity", Oracle({"layer": linear_layer}))


def test_xor_fails_with_a_threshold_below_what_linear_models_reach():
    assert "3 of 4" in fails("xor_needs_nonlinearity", linear_correct_max=2)


def test_xor_fails_when_the_grid_misses_labellings():
    claim = copy.deepcopy(CLAIMS["xor_needs_nonlinearity"])
    claim["parameters"]["grid"]["weights"] = [1.0, 1.0, 0.25]
    with pytest.raises(CheckFailed, match="labellings"):
        claims.run_claim(Oracle(), claim, TOL)


# --- 3. convolution theorem ------------------------------------------------------------------

def test_convolution_theorem_fails_for_a_half_precision_fft():
    def half(concept, inputs, attrs):
        y = oracle_forward("conv2d", inputs, attrs)["y"]
        return {"y": y.astype(np.float16).astype(y.dtype)}
    assert "bound usage" in fails("convolution_theorem", Oracle({"conv2d_fft": half}))


# --- 4. convolution versus cross-correlation -------------------------------------------------

def test_flip_claim_fails_when_convolve2d_does_not_flip():
    no_flip = Oracle({"convolve2d": lambda c, i, a: oracle_forward("conv2d", i, a)})
    assert "no flip" in fails("convolution_is_flipped_correlation", no_flip)


def test_flip_claim_fails_when_convolve2d_flips_one_axis_only():
    def rows_only(concept, inputs, attrs):
        return oracle_forward("conv2d", {**inputs, "w": np.ascontiguousarray(inputs["w"][:, :, ::-1])}, attrs)
    assert "bound usage" in fails("convolution_is_flipped_correlation", Oracle({"convolve2d": rows_only}))


# --- 5. pooling ------------------------------------------------------------------------------

def test_pooling_claim_fails_for_plain_subsampling():
    def subsample(concept, inputs, attrs):
        kh, kw = attrs["kernel"]
        return {"y": np.ascontiguousarray(inputs["x"][:, :, ::kh, ::kw])}
    assert "changed pooled outputs" in fails("pooling_shift_invariance", Oracle({"max_pool2d": subsample}))


def test_pooling_claim_fails_when_a_whole_window_shift_is_required_to_keep_the_map():
    assert "whole window" in fails("pooling_shift_invariance", changed_by_whole_window_min=10**6)


# --- 6. vanishing gradients ------------------------------------------------------------------

def test_vanishing_gradients_fails_when_the_sigmoid_slope_is_dropped():
    def no_slope(concept, inputs, cotangents, attrs):
        ident = {**attrs, "activation": "identity"}
        return {k: t.v.astype(np.float32) for k, t in
                reference.vjp(concept, _f64(inputs), _f64(cotangents), ident).items()}
    assert "sigmoid first/last" in fails("vanishing_gradients", Oracle(vjp={"layer": no_slope}))


def test_vanishing_gradients_fails_with_a_too_tight_relu_band():
    assert "ReLU first/last" in fails("vanishing_gradients", relu_ratio_min=2.0)


# --- 7. inception's reduction ----------------------------------------------------------------

def test_counting_proxy_counts_grouped_convolutions():
    cb = claims.CountingBackend(Oracle())
    x, w = np.ones((1, 4, 5, 5), np.float32), np.ones((6, 2, 3, 3), np.float32)
    cb.run("conv2d", {"x": x, "w": w}, {"pads": [1, 1, 1, 1], "groups": 2})
    cb.run("relu", {"x": x})
    assert cb.macs() == 1 * 6 * 5 * 5 * 2 * 3 * 3
    assert [c["macs"] for c in cb.calls] == [2700, 0]


def test_inception_claim_fails_when_the_backend_drops_the_padding():
    def unpadded(concept, inputs, attrs):
        return oracle_forward(concept, inputs, {**attrs, "pads": [0, 0, 0, 0]})
    msg = fails("inception_reduction", Oracle({"conv2d": unpadded}))
    assert "direct_macs: measured" in msg


def test_inception_claim_fails_against_a_wrong_stated_count():
    assert "reduced_macs" in fails("inception_reduction", reduced_macs=49774593)


# --- 8.–10. the trained models ---------------------------------------------------------------

def untrained(model, data, *args, **kwargs) -> train.History:
    """Stands in for training: the model as initialised, measured on the test split."""
    return train.History(test_accuracy=train.accuracy(model, data.x_test, data.y_test))


def test_learned_features_claim_fails_without_training(monkeypatch):
    monkeypatch.setattr(claims.train, "fit", untrained)
    msg = fails("learned_features_beat_engineered")
    assert "margin" in msg and "the CNN reached" in msg


def test_last_layer_claim_fails_when_softmax_regression_uses_sigmoids():
    def sigmoids(concept, inputs, attrs):
        z = oracle_forward("dense", inputs, attrs)["y"]
        return {"p": 1 / (1 + np.exp(-z))}
    msg = fails("last_layer_is_logistic_regression", Oracle({"softmax_regression": sigmoids}))
    assert "bound usage" in msg


def test_lstm_claim_fails_without_training(monkeypatch):
    monkeypatch.setattr(claims.train, "fit", untrained)
    assert "recall after 50 steps" in fails("lstm_long_memory")


def test_a_concept_the_backend_lacks_makes_the_claim_unsupported():
    class NoDense(Oracle):
        def unsupported(self, concept, dtype):
            return "not here" if concept == "dense" else None
    with pytest.raises(Unsupported, match="dense"):
        run("linear_collapse", NoDense())
