"""Every spec model's forward in float16 and bfloat16 against the float64 reference (conformance/precision.py)."""

from __future__ import annotations

import numpy as np
import pytest

import nutshell
from nutshell import spec
from nutshell.conformance import checks, precision
from nutshell.spec import lowp, tolerance

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
@pytest.mark.parametrize("model", ["softmax_regression", "lstm_classifier"])
@pytest.mark.parametrize("backend", ["torch", "cupy", "onnx"])
def test_a_smooth_model_passes_and_names_its_accumulation(backend, model, dtype):
    """Every backend runs the models in both formats (torch and ONNX node by node)."""
    try:
        b = nutshell.load(backend, device="cpu")
    except nutshell.BackendUnavailable as exc:
        pytest.skip(str(exc))
    rec = precision.model_forward(b, model, dtype, ST)
    assert rec.usage <= 1 and rec.details["consistent_with"] == tolerance.FLOAT32


def test_a_model_whose_relu_decisions_lie_within_the_bound_says_so(torch_backend):
    with pytest.raises(checks.Unsupported, match=r"margin \S+ ≤ 1"):
        precision.model_forward(torch_backend, "mlp", "bfloat16", ST)


def test_logits_in_another_format_fail(torch_backend):
    class Widening(type(torch_backend)):
        def model(self, name, params=None, seed=0, dtype=None, dims=None):
            m = super().model(name, {k: v.astype(np.float32) for k, v in params.items()}, seed, "float32", dims)
            forward = m.forward
            m.forward = lambda x: forward(x.astype(np.float32))
            return m

    with pytest.raises(checks.CheckFailed, match="came back as float32"):
        precision.model_forward(Widening(device="cpu"), "softmax_regression", "float16", ST)
