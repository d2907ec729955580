"""ONNX's own node tests against every backend, through the onnx.backend.base.Backend adapter (a
fast subset: the full set is the conformance item ``onnx_node_tests[<backend>]``)."""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from onnx import helper  # noqa: E402

from nutshell import backends  # noqa: E402
from nutshell.errors import UnsupportedOnnxOp  # noqa: E402
from nutshell.onnxio.codec import reader as onnx_import  # noqa: E402
from nutshell.onnxio.codec import structural as onnx_structural  # noqa: E402
from nutshell.onnxio.codec.lowering import CONCEPTS  # noqa: E402
from nutshell.onnxio.tools import nodetests  # noqa: E402
from nutshell.onnxio.tools.adapter import adapter  # noqa: E402

# the node case modules that build quickly (the pooling ones compute large references on import)
FAST = ("conv", "globalaveragepool", "relu", "sigmoid", "tanh", "softmax", "logsoftmax", "gemm", "matmul", "add",
        "mul", "concat", "flatten", "reshape", "dropout", "lrn", "lstm", "constant", "constantofshape", "identity",
        "transpose", "squeeze", "unsqueeze")
POOLING = ("test_MaxPool2d", "test_MaxPool2d_stride_padding_dilation", "test_AvgPool2d", "test_AvgPool2d_stride",
           "test_operator_maxpool")


@pytest.fixture(scope="module")
def cases() -> list[nodetests.Case]:
    disk = [c for c in nodetests.data_cases(("pytorch-converted", "pytorch-operator", "simple"))
            if c.name in POOLING or c.kind != "pytorch-converted"]
    return nodetests.node_cases(FAST) + disk


@pytest.fixture(scope="module")
def loaded():
    return backends.available(["torch", "cupy", "onnx"])[0]


def test_the_subset_covers_the_operators(cases):
    ops = {n.op_type for c in cases for n in c.model.graph.node}
    assert {"Conv", "Gemm", "MatMul", "Add", "Mul", "LSTM", "Softmax", "LRN", "Reshape", "MaxPool",
            "AveragePool"} <= ops
    assert len(cases) >= 120
    steps = set()
    for c in cases:
        try:
            steps |= {s.op for s in onnx_import.parse(c.model.SerializeToString()).steps if not s.structural}
        except UnsupportedOnnxOp:
            continue
    assert steps == CONCEPTS                                     # what conformance counts on


@pytest.mark.parametrize("name,kw", [("torch", {}), ("cupy", {}), ("onnx", {}), ("onnx", {"direct": False})])
def test_node_tests_pass(cases, loaded, name, kw):
    if name not in loaded:
        pytest.skip(f"backend {name} is not available")
    details = nodetests.run_suite(loaded[name], cases, **kw).details()
    print(name, kw, {k: details[k] for k in ("executed", "passed", "failed", "unsupported")})
    assert details["failures"] == {}, details["failures"]
    assert details["executed"] >= 100 and details["passed"] == details["executed"] - len(details["differences"])


def test_unsupported_cases_are_counted_apart(cases, loaded):
    details = nodetests.run_suite(loaded["cupy"], cases).details()
    refused = details["unsupported_cases"]
    assert "test_lstm_bidirectional" in refused and "reverse" not in refused["test_lstm_bidirectional"]
    assert any("int8" in why for why in refused.values())


def test_a_broken_lowering_fails(cases, loaded, monkeypatch):
    """The suite can fail: with Transpose's result reversed along its first axis, the transposing
    cases fail. (The result keeps its shape: a lowering that got a shape wrong, Transpose as the
    identity say, is refused at import by the shape inference before any case runs.)"""
    monkeypatch.setitem(onnx_structural.STRUCTURAL, "transpose",
                        (lambda i, a: {"y": i["x"].transpose(a["perm"])[::-1]}, False))
    details = nodetests.run_suite(loaded["cupy"], [c for c in cases if "trans" in c.name]).details()
    assert {"test_gemm_transposeA", "test_gemm_transposeB", "test_transpose_default"} <= set(details["failures"])


def test_onnx_lstm_cases_cannot_see_the_gate_order(cases, loaded, monkeypatch):
    """ONNX's LSTM cases give every gate block the same weights, so a wrong gate order still passes
    them (docs/onnx-node-tests.md); tests/test_onnx_import.py::test_lstm_gate_order_matters covers it."""
    monkeypatch.setattr(onnx_structural, "ONNX_GATES", (0, 1, 2, 3))
    lstm = [c for c in cases if c.name.startswith("test_lstm")]
    assert nodetests.run_suite(loaded["cupy"], lstm).details()["failures"] == {}


def test_adapter_is_an_onnx_backend(loaded):
    node = helper.make_node("Relu", ["x"], ["y"])
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", 1, [2])],
                              [helper.make_tensor_value_info("y", 1, [2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    cls = adapter(loaded["torch"])
    assert issubclass(cls, onnx.backend.base.Backend) and cls.supports_device("CPU")
    (y,) = cls.run_model(model, [np.array([-1.0, 2.0], np.float32)])
    np.testing.assert_array_equal(y, [0.0, 2.0])
    (y,) = cls.prepare(model).run({"x": np.array([3.0, -3.0], np.float32)})
    np.testing.assert_array_equal(y, [3.0, 0.0])
    bad = helper.make_model(helper.make_graph([helper.make_node("Erf", ["x"], ["y"])], "g", graph.input,
                                              graph.output), opset_imports=[helper.make_opsetid("", 18)])
    with pytest.raises(UnsupportedOnnxOp, match="Erf"):
        cls.prepare(bad)


def test_a_case_refused_at_import_for_another_reason_is_a_failure_not_a_crash(loaded):
    """A typed refusal other than UnsupportedOnnxOp (here a negative dimension) counts as failed."""
    node = helper.make_node("Relu", ["x"], ["y"])
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [2, -3])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [2, -3])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    case = nodetests.Case("negative_dim", "node", model, ((([np.zeros((2, 3), np.float32)], [np.zeros((2, 3))])),))
    out = nodetests.run_case(adapter(loaded["torch"]), case)
    assert out.status == "failed" and out.message.startswith("import refused: SpecError"), out
