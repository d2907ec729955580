"""The bench's bare calls (nutshell/backends/baseline.py): each backend's own baseline and the
canonical call a user of its library writes. The ONNX canonical models are real ONNX models run by
real ONNX Runtime sessions, checked against the float64 reference and the backend's own result."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("onnxruntime")

import onnx
import onnxruntime as ort
from onnx import helper

from nutshell import backends
from nutshell.backends.onnx_impl import canonical
from nutshell.backends.onnx_impl.baseline import OrtBaseline, OrtCanonical
from nutshell.conformance import bench
from nutshell.spec import reference, validate

WITHOUT_STANDARD_OP = ("maxout", "binary_cross_entropy", "convolve2d", "conv2d_fft", "inception")


@pytest.fixture(scope="module")
def onnx_backend():
    return backends.load("onnx", device="cpu")


def small(b, concept: str) -> tuple[dict, dict]:
    """The bench's seeded inputs at the concept's small size, and its full attributes."""
    case = next(iter(bench.cases(bench.load_entries(), [concept], ["small"])))
    c = b.spec.concept(concept)
    return bench._inputs(c, case.shapes, np.random.default_rng(0), case.entry.get("scale")), \
        validate._check_attrs(c, case.attrs)


def run(m: onnx.ModelProto, feeds: dict) -> list[np.ndarray]:
    return ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)


def golden(concept: str, inputs: dict, attrs: dict) -> list[np.ndarray]:
    """The float64 reference's outputs for the same inputs."""
    f64 = {k: v.astype(np.float64) if v.dtype.kind == "f" else v for k, v in inputs.items()}
    return [t.v for t in reference.forward(concept, f64, attrs).values()]


def test_conv2d_is_one_conv_node_with_its_pads_matching_the_reference_and_the_backend(onnx_backend):
    rng = np.random.default_rng(3)
    inputs = {"x": rng.standard_normal((2, 4, 7, 6)).astype(np.float32),
              "w": rng.standard_normal((6, 2, 3, 2)).astype(np.float32),
              "b": rng.standard_normal(6).astype(np.float32)}
    given = {"stride": [2, 1], "pads": [1, 0, 2, 1], "dilation": [1, 2], "groups": 2}
    attrs = validate._check_attrs(onnx_backend.spec.concept("conv2d"), given)
    m, feeds = canonical.model("conv2d", attrs, inputs)
    onnx.checker.check_model(m, full_check=True)
    (node,) = m.graph.node
    got = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    assert node.op_type == "Conv" and list(node.input) == ["x", "w", "b"]
    assert (got["pads"], got["strides"], got["dilations"], got["group"]) == ([1, 0, 2, 1], [2, 1], [1, 2], 2)
    y, = run(m, feeds)
    want, = golden("conv2d", inputs, attrs)
    np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-5)
    assert bench.agree([y], [onnx_backend.run("conv2d", inputs, given)["y"]])


@pytest.mark.parametrize("concept", sorted(canonical._BUILDERS))
def test_every_canonical_model_passes_the_checker_and_matches_the_reference(onnx_backend, concept):
    """At the bench's small shapes: the gate repacking of LSTM, the pads of pooling, the
    softmax's axis and the loss's mean are all what the spec says."""
    inputs, attrs = small(onnx_backend, concept)
    m, feeds = canonical.model(concept, attrs, inputs)
    onnx.checker.check_model(m, full_check=True)
    assert bench.agree(run(m, feeds), golden(concept, inputs, attrs)), concept


@pytest.mark.parametrize("concept", WITHOUT_STANDARD_OP)
def test_concepts_without_a_standard_operator_have_no_canonical_model(onnx_backend, concept):
    inputs, attrs = small(onnx_backend, concept)
    assert canonical.model(concept, attrs, inputs) is None
    assert OrtCanonical(onnx_backend).forward(concept, attrs, inputs) is None


def test_the_onnx_canonical_call_is_a_bare_session_of_the_one_node_model(onnx_backend):
    inputs, attrs = small(onnx_backend, "max_pool2d")
    base = onnx_backend.baseline()
    canon = base.canonical()
    assert isinstance(base, OrtBaseline) and isinstance(canon, OrtCanonical) and canon.canonical() is canon
    assert canon.describe("max_pool2d", attrs, inputs) == "one-node ONNX model: MaxPool"
    layer_inputs, layer_attrs = small(onnx_backend, "layer")
    assert canon.describe("layer", layer_attrs, layer_inputs) == "2-node ONNX model: Gemm+Relu"
    y = bench.host(canon.forward("max_pool2d", attrs, inputs)())
    assert bench.agree(y, [onnx_backend.run("max_pool2d", inputs, attrs)["y"]])
    cots = {"y": np.ones_like(y[0])}
    assert canon.vjp("max_pool2d", attrs, inputs, cots) is None          # ONNX has no gradient operators
    assert base.vjp("max_pool2d", attrs, inputs, cots) is not None       # the backend's own vjp graph


@pytest.mark.parametrize("name", ["torch", "cupy"])
def test_where_the_own_baseline_is_the_canonical_call_it_says_so(name):
    """torch's baseline is the torch.nn.functional call, the array module's the im2col + matmul a
    user writes: canonical() is the baseline itself, so the bench times it once."""
    try:
        b = backends.load(name, device="cpu")
    except backends.BackendUnavailable as exc:
        pytest.skip(str(exc))
    base = b.baseline()
    assert base.canonical() is base


def test_a_baseline_names_no_canonical_call_unless_it_knows_one():
    assert backends.Baseline(None).canonical() is None
