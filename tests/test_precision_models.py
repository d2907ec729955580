"""Every spec model's forward in float16 and bfloat16 against the float64 reference (conformance/precision.py)."""

from __future__ import annotations

import numpy as np
import pytest

import nutshell
from nutshell import spec
from nutshell.conformance import checks, precision
from nutshell.spec import lowp, models, tolerance
from nutshell.spec.reference import models as ref_models
from nutshell.spec.reference import tracked
from nutshell.spec.signatures import DTYPES

ST = {"spec": spec.load()}


@pytest.fixture(scope="module")
def torch_backend():
    pytest.importorskip("torch")
    return nutshell.load("torch", device="cpu")


def test_the_golden_inputs_are_exact_in_both_formats():
    g = precision.model_golden("digits_cnn", str(ST["spec"].path))
    for a in [g["x"], *g["params"].values()]:
        assert lowp.exact_in(a, "float16") and lowp.exact_in(a, "bfloat16")


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("model", sorted(models.load()))
@pytest.mark.parametrize("backend", ["torch", "cupy", "onnx"])
def test_every_model_passes_and_names_its_accumulation(backend, model, dtype):
    """Every backend runs every spec model in both formats, the CNNs' ReLU and max-pool kinks included."""
    try:
        b = nutshell.load(backend, device="cpu")
    except nutshell.BackendUnavailable as exc:
        pytest.skip(str(exc))
    rec = precision.model_forward(b, model, dtype, ST)
    assert rec.usage <= 1 and rec.details["consistent_with"] == tolerance.FLOAT32


def test_relu_decisions_within_the_bound_leave_the_logits_bounded(torch_backend):
    """mlp's ReLU inputs come closer to 0 than their bfloat16 bound, so a correct backend may take
    either branch; max is 1-Lipschitz and the tracked maximum carries the larger bound, so the
    logits are checked all the same (only the gradients need the margin)."""
    spec_ = models.get("mlp").vector_model()
    g = precision.model_golden("mlp", str(ST["spec"].path))
    params = {k: tracked.T(v) for k, v in g["params"].items()}
    with tracked.constants_exact_in(np.float32, np.float16, DTYPES["bfloat16"]):
        values = ref_models.forward(spec_, params, tracked.T(g["x"]))
    assert ref_models.margin(spec_, values, ST["spec"].tolerance, "bfloat16") < 1
    assert precision.model_forward(torch_backend, "mlp", "bfloat16", ST).usage <= 1


def test_logits_in_another_format_fail(torch_backend):
    class Widening(type(torch_backend)):
        def model(self, name, params=None, seed=0, dtype=None, dims=None):
            m = super().model(name, {k: v.astype(np.float32) for k, v in params.items()}, seed, "float32", dims)
            forward = m.forward
            m.forward = lambda x: forward(x.astype(np.float32))
            return m

    with pytest.raises(checks.CheckFailed, match="came back as float32"):
        precision.model_forward(Widening(device="cpu"), "softmax_regression", "float16", ST)
