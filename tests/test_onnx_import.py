"""Importing ONNX graphs (nutshell/onnxio/codec/reader.py): each supported operator and attribute on every
backend against the tolerance model and ONNX Runtime, the arithmetic going through the backends'
own concepts, refusals before anything runs, and GoogLeNet (the published Inception v1 topology)."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from nutshell import backends  # noqa: E402
from nutshell import spec as spec_mod  # noqa: E402
from nutshell.errors import DTypeError, ShapeError, UnsupportedOnnxOp  # noqa: E402
from nutshell.onnxio.codec import reader as onnx_import  # noqa: E402
from nutshell.onnxio.tools import compare as compare  # noqa: E402
from nutshell.onnxio.tools import zoo as onnx_zoo  # noqa: E402
from nutshell.spec import tolerance  # noqa: E402

TOL = spec_mod.load().tolerance
F32 = TensorProto.FLOAT
# the large models (about a minute of CPU on two cores, most of it the per-node bounds) run on request
LARGE = pytest.mark.skipif(os.environ.get("NUTSHELL_ONNX_LARGE") != "1",
                           reason="a large model: set NUTSHELL_ONNX_LARGE=1")


@pytest.fixture(scope="module")
def runners():
    """(label, backend, import_onnx kwargs): every backend, the ONNX backend both ways."""
    loaded, _ = backends.available(["torch", "cupy", "onnx"])
    out = [(n, b, {}) for n, b in loaded.items()]
    if "onnx" in loaded:
        out.append(("onnx-concepts", loaded["onnx"], {"direct": False}))
    return out


def _graph(nodes, inputs, outputs, inits=(), opset=18) -> onnx.ModelProto:
    """A model; outputs declared without a shape (``_vi(name, None)``) get ONNX's inferred one."""
    g = helper.make_graph(nodes, "t", inputs, outputs, initializer=list(inits))
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    return onnx.shape_inference.infer_shapes(m)


def _vi(name: str, shape, elem=F32):
    return helper.make_tensor_value_info(name, elem, shape)


def _const(name: str, a) -> TensorProto:
    return numpy_helper.from_array(np.asarray(a), name)


def _x(*shape, seed=0, dtype=np.float32) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-2, 2, shape).astype(dtype)


def _agree(model: onnx.ModelProto, feeds: dict, runners, exact: bool = False) -> dict:
    """ONNX Runtime and every backend within the tolerance model's bound of the float64 reference
    of the lowered graph (bit-exact for pure plumbing); returns ONNX Runtime's outputs."""
    graph = onnx_import.parse(model.SerializeToString())
    ref, ort = compare.reference(graph, feeds), compare.ort_values(graph, feeds)
    results = {"onnxruntime": ort} | {label: b.import_onnx(graph, **kw).run(feeds) for label, b, kw in runners}
    for label, out in results.items():
        for name in graph.outputs:
            got, want = np.asarray(out[name]), ort[name]
            assert got.shape == want.shape and got.dtype == want.dtype, (label, name, got.shape, got.dtype)
            r = ref[name]
            if exact or not isinstance(r, compare.T):
                np.testing.assert_array_equal(got, want, err_msg=f"{label} {name}")
                continue
            cmp = tolerance.compare(got, r.v, r.e, str(got.dtype), TOL)
            assert cmp.ok, f"{label} {name}: {cmp.describe()}"
    return ort


# --- arithmetic operators ---------------------------------------------------------------------------

@pytest.mark.parametrize("ta,tb,alpha,beta,c_shape", [
    (0, 0, 1.0, 1.0, (5,)), (1, 0, 1.0, 1.0, (1, 5)), (0, 1, 0.5, 1.0, (3, 5)), (1, 1, 2.0, 0.25, (5,)),
    (0, 0, 1.0, 3.0, ()), (0, 1, 1.0, 1.0, None), (0, 0, 1.5, 0.0, (3, 5))])
def test_gemm(runners, ta, tb, alpha, beta, c_shape):
    a, b = _x(*((4, 3) if ta else (3, 4)), seed=1), _x(*((5, 4) if tb else (4, 5)), seed=2)
    inits = [_const("b", b)] + ([_const("c", _x(*c_shape, seed=3))] if c_shape is not None else [])
    node = helper.make_node("Gemm", ["a", "b"] + (["c"] if c_shape is not None else []), ["y"], transA=ta,
                            transB=tb, alpha=alpha, beta=beta)
    _agree(_graph([node], [_vi("a", list(a.shape))], [_vi("y", [3, 5])], inits), {"a": a}, runners)


def test_matmul_and_bias_become_one_dense(runners):
    nodes = [helper.make_node("MatMul", ["x", "w"], ["xw"]), helper.make_node("Add", ["xw", "b"], ["y"])]
    m = _graph(nodes, [_vi("x", ["N", 4])], [_vi("y", ["N", 3])], [_const("w", _x(4, 3, seed=1)),
                                                                 _const("b", _x(3, seed=2))])
    ops = [s.op for s in onnx_import.parse(m.SerializeToString()).steps if not s.structural]
    assert ops == ["dense"]
    _agree(m, {"x": _x(6, 4)}, runners)


@pytest.mark.parametrize("sa,sb", [((3, 4), (4, 5)), ((2, 3, 4), (4, 5)), ((2, 3, 4), (2, 4, 5)),
                                   ((1, 3, 4), (2, 4, 5)), ((4,), (4, 5)), ((3, 4), (4,)), ((4,), (2, 4, 3))])
def test_matmul_shapes(runners, sa, sb):
    want = np.matmul(np.zeros(sa), np.zeros(sb)).shape
    m = _graph([helper.make_node("MatMul", ["a", "b"], ["y"])], [_vi("a", list(sa)), _vi("b", list(sb))],
               [_vi("y", list(want))])
    _agree(m, {"a": _x(*sa, seed=1), "b": _x(*sb, seed=2)}, runners)


@pytest.mark.parametrize("op", ["Add", "Mul"])
@pytest.mark.parametrize("sa,sb", [((2, 3), (2, 3)), ((2, 3), (3,)), ((2, 1, 4), (3, 1)), ((2, 3), (1,)),
                                   ((1,), (2, 3))])
def test_add_mul_broadcasting(runners, op, sa, sb):
    want = np.broadcast_shapes(sa, sb)
    m = _graph([helper.make_node(op, ["a", "b"], ["y"])], [_vi("a", list(sa)), _vi("b", list(sb))],
               [_vi("y", list(want))])
    _agree(m, {"a": _x(*sa, seed=1), "b": _x(*sb, seed=2)}, runners)


class _Spy:
    """A backend stand-in that records every concept it is asked to run."""

    name = "spy"

    def __init__(self, inner):
        self.inner, self.calls = inner, []

    def run(self, concept, inputs, attrs=None):
        self.calls.append(concept)
        return self.inner.run(concept, inputs, attrs)


@pytest.mark.parametrize("op", ["Add", "Mul"])
def test_elementwise_arithmetic_is_the_backends_conv2d(op):
    """Add and Mul reach the backend as conv2d: nothing is added or multiplied by NumPy."""
    m = _graph([helper.make_node(op, ["a", "b"], ["y"])], [_vi("a", [2, 3]), _vi("b", [3])], [_vi("y", [2, 3])])
    spy = _Spy(backends.load("cupy"))
    a, b = _x(2, 3, seed=1), _x(3, seed=2)
    y = onnx_import.Imported(onnx_import.parse(m.SerializeToString()), spy).run({"a": a, "b": b})["y"]
    assert spy.calls == ["conv2d"]
    np.testing.assert_array_equal(y, a + b if op == "Add" else a * b)   # one IEEE rounding, like NumPy's


# --- windows --------------------------------------------------------------------------------------

@pytest.mark.parametrize("attrs", [
    {"auto_pad": "SAME_UPPER", "strides": [2, 2]}, {"auto_pad": "SAME_LOWER", "strides": [2, 1]},
    {"auto_pad": "VALID", "strides": [1, 2]}, {"pads": [1, 0, 2, 1], "dilations": [2, 1], "group": 2},
    {"auto_pad": "SAME_LOWER", "strides": [2, 2], "group": 2}])
def test_conv(runners, attrs):
    x, w, b = _x(2, 4, 7, 8, seed=1), _x(6, 4 // attrs.get("group", 1), 3, 3, seed=2), _x(6, seed=3)
    m = _graph([helper.make_node("Conv", ["x", "w", "b"], ["y"], **attrs)], [_vi("x", ["N", 4, 7, 8])],
               [_vi("y", None)], [_const("w", w), _const("b", b)])
    _agree(m, {"x": x}, runners)


@pytest.mark.parametrize("op,attrs", [
    ("MaxPool", {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1], "ceil_mode": 1}),
    ("MaxPool", {"kernel_shape": [2, 3], "dilations": [2, 1], "pads": [1, 0, 0, 1]}),
    ("MaxPool", {"kernel_shape": [2, 3], "auto_pad": "SAME_LOWER"}),
    ("MaxPool", {"kernel_shape": [3, 3], "strides": [2, 2], "auto_pad": "SAME_UPPER"}),
    ("AveragePool", {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1], "ceil_mode": 1,
                     "count_include_pad": 1}),
    ("AveragePool", {"kernel_shape": [3, 2], "strides": [2, 2], "pads": [0, 1, 1, 0]}),
    ("AveragePool", {"kernel_shape": [3, 3], "strides": [2, 2], "auto_pad": "SAME_UPPER"})])
def test_pooling(runners, op, attrs):
    m = _graph([helper.make_node(op, ["x"], ["y"], **attrs)], [_vi("x", [2, 3, 7, 8])], [_vi("y", None)])
    _agree(m, {"x": _x(2, 3, 7, 8)}, runners)


@pytest.mark.parametrize("op,attrs", [("Conv", {"kernel_shape": [3, 3], "strides": [2, 1], "dilations": [2, 2]}),
                                      ("MaxPool", {"kernel_shape": [2, 3], "strides": [1, 2], "dilations": [2, 1]})])
@pytest.mark.parametrize("mode", ["SAME_UPPER", "SAME_LOWER"])
def test_same_padding_with_dilation(runners, op, attrs, mode):
    """ONNX: SAME pads so that out = ⌈n / s⌉, with the dilated kernel. ONNX Runtime refuses a dilated
    SAME Conv and pads a dilated SAME MaxPool for the undilated kernel, so the reference here is
    ONNX Runtime on the explicit pads of backends.shapes.same_pads."""
    from nutshell.spec.shapes import same_pads

    x, w = _x(1, 2, 7, 9, seed=1), _x(3, 2, 3, 3, seed=2)
    inputs, inits = (["x", "w"], [_const("w", w)]) if op == "Conv" else (["x"], [])
    (t, bt), (lf, r) = (same_pads(n, attrs["kernel_shape"][a], attrs["strides"][a], attrs["dilations"][a],
                                  mode == "SAME_UPPER") for a, n in enumerate((7, 9)))
    same = _graph([helper.make_node(op, inputs, ["y"], auto_pad=mode, **attrs)], [_vi("x", [1, 2, 7, 9])],
                  [_vi("y", None)], inits)
    explicit = _graph([helper.make_node(op, inputs, ["y"], pads=[t, lf, bt, r], **attrs)], [_vi("x", [1, 2, 7, 9])],
                      [_vi("y", None)], inits)
    want = _agree(explicit, {"x": x}, runners)["y"]
    assert want.shape[2:] == (-(-7 // attrs["strides"][0]), -(-9 // attrs["strides"][1]))
    for label, b, kw in runners:
        got = b.import_onnx(same.SerializeToString(), **kw).run({"x": x})["y"]
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6, err_msg=label)


def test_global_average_pool_and_lrn(runners):
    nodes = [helper.make_node("LRN", ["x"], ["n"], size=3, alpha=0.2, beta=0.6, bias=1.5),
             helper.make_node("GlobalAveragePool", ["n"], ["y"])]
    _agree(_graph(nodes, [_vi("x", [2, 5, 4, 3])], [_vi("y", [2, 5, 1, 1])]), {"x": _x(2, 5, 4, 3)}, runners)


# --- LSTM -----------------------------------------------------------------------------------------

def _lstm_weights(h: int, i: int) -> tuple[np.ndarray, ...]:
    """ONNX W, R, B whose four gate blocks each carry their own offset, so a permutation shows."""
    rng = np.random.default_rng(7)
    offset = np.repeat([0.3, -0.4, 0.9, -0.2], h)[:, None]
    w = (rng.uniform(-0.5, 0.5, (1, 4 * h, i)) + offset).astype(np.float32)
    r = (rng.uniform(-0.5, 0.5, (1, 4 * h, h)) + offset).astype(np.float32)
    b = np.concatenate([np.repeat([0.5, -1.0, 2.0, 0.1], h), np.repeat([-0.3, 0.2, 0.7, -0.6], h)])
    return w, r, b[None].astype(np.float32)


@pytest.mark.parametrize("with_b,with_state", [(True, True), (False, False)])
def test_lstm(runners, with_b, with_state):
    t, n, i, h = 5, 3, 4, 6
    w, r, b = _lstm_weights(h, i)
    names = ["x", "w", "r", "b" if with_b else "", "", "h0" if with_state else "", "c0" if with_state else ""]
    inits = [_const("w", w), _const("r", r)] + ([_const("b", b)] if with_b else [])
    inputs = [_vi("x", [t, n, i])] + ([_vi("h0", [1, n, h]), _vi("c0", [1, n, h])] if with_state else [])
    node = helper.make_node("LSTM", names, ["y", "yh", "yc"], hidden_size=h)
    m = _graph([node], inputs, [_vi("y", [t, 1, n, h]), _vi("yh", [1, n, h]), _vi("yc", [1, n, h])], inits)
    feeds = {"x": _x(t, n, i)} | ({"h0": _x(1, n, h, seed=4) / 2, "c0": _x(1, n, h, seed=5)} if with_state else {})
    _agree(m, feeds, runners)


def test_lstm_gate_order_matters(monkeypatch):
    """With ONNX's gate blocks taken in the spec's order, the LSTM above leaves the bound (so its
    distinct per-gate weights do detect a permutation, which ONNX's own LSTM cases cannot)."""
    from nutshell.onnxio.codec import structural as onnx_structural

    monkeypatch.setattr(onnx_structural, "ONNX_GATES", (0, 1, 2, 3))
    with pytest.raises(AssertionError, match="onnxruntime"):
        test_lstm([("cupy", backends.load("cupy"), {})], True, True)


def test_lstm_batch_first_layout(runners):
    """layout=1 (ONNX Runtime's CPU LSTM refuses it): the same numbers as layout 0, transposed."""
    t, n, i, h = 4, 2, 3, 5
    w, r, b = _lstm_weights(h, i)
    x = _x(t, n, i)

    def model(layout: int) -> onnx.ModelProto:
        shape_x, shape_y, shape_h = ([t, n, i], [t, 1, n, h], [1, n, h]) if not layout else \
            ([n, t, i], [n, t, 1, h], [n, 1, h])
        node = helper.make_node("LSTM", ["x", "w", "r", "b"], ["y", "yh"], hidden_size=h, layout=layout)
        return _graph([node], [_vi("x", shape_x)], [_vi("y", shape_y), _vi("yh", shape_h)],
                      [_const("w", w), _const("r", r), _const("b", b)])

    ort = _agree(model(0), {"x": x}, runners)
    for label, be, kw in runners:
        out = be.import_onnx(model(1).SerializeToString(), **kw).run({"x": x.transpose(1, 0, 2).copy()})
        np.testing.assert_allclose(out["y"], ort["y"].transpose(2, 0, 1, 3), rtol=1e-5, atol=1e-6, err_msg=label)
        np.testing.assert_allclose(out["yh"], ort["yh"].transpose(1, 0, 2), rtol=1e-5, atol=1e-6, err_msg=label)


# --- softmax, plumbing ----------------------------------------------------------------------------

@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax"])
@pytest.mark.parametrize("opset,axis", [(11, 1), (11, -1), (11, 0), (13, 1), (13, 0), (13, -1)])
def test_softmax_axis_by_opset(runners, op, opset, axis):
    """Before opset 13 the input is coerced to 2-D at the axis; from 13 on, the axis alone."""
    m = _graph([helper.make_node(op, ["x"], ["y"], axis=axis)], [_vi("x", [2, 3, 4])], [_vi("y", [2, 3, 4])],
               opset=opset)
    _agree(m, {"x": _x(2, 3, 4)}, runners)


def test_structural_operators_are_exact(runners):
    nodes = [
        helper.make_node("Reshape", ["x", "s"], ["r"]),                         # (2, 3, 4) -> (2, 12)
        helper.make_node("Flatten", ["x"], ["f"], axis=-1),                     # (6, 4)
        helper.make_node("Transpose", ["x"], ["t"], perm=[2, 0, 1]),
        helper.make_node("Unsqueeze", ["r", "ax"], ["u"]),                      # (2, 1, 12)
        helper.make_node("Squeeze", ["u", "ax"], ["q"]),
        helper.make_node("Constant", [], ["k"], value=_const("kv", np.arange(12, dtype=np.float32).reshape(1, 12))),
        helper.make_node("Concat", ["q", "k"], ["c"], axis=0),
        helper.make_node("Dropout", ["c"], ["d", "mask"]),
        helper.make_node("Identity", ["d"], ["i"]),
        helper.make_node("ConstantOfShape", ["zs"], ["z"], value=_const("zv", np.array([1.5], np.float32))),
    ]
    outs = [_vi(n, None) for n in ("r", "f", "t", "i", "z")] + [_vi("mask", None, TensorProto.BOOL)]
    m = _graph(nodes, [_vi("x", [2, 3, 4])], outs, [_const("s", np.array([0, -1], np.int64)),
                                                     _const("zs", np.array([2, 3], np.int64)),
                                                     _const("ax", np.array([1], np.int64))])
    _agree(m, {"x": _x(2, 3, 4)}, runners, exact=True)


def test_reshape_with_a_runtime_shape_and_allowzero(runners):
    m = _graph([helper.make_node("Reshape", ["x", "s"], ["y"], allowzero=1)],
               [_vi("x", [2, 0, 3]), _vi("s", [3], TensorProto.INT64)], [_vi("y", None)])
    out = _agree(m, {"x": np.zeros((2, 0, 3), np.float32), "s": np.array([3, 0, 2], np.int64)}, runners, exact=True)
    assert out["y"].shape == (3, 0, 2)


def test_float64_graph(runners):
    """A float64 graph stays in float64 (where the backend offers the concepts in float64)."""
    nodes = [helper.make_node("Gemm", ["x", "w", "b"], ["g"]), helper.make_node("Tanh", ["g"], ["y"])]
    m = _graph(nodes, [_vi("x", [3, 4], TensorProto.DOUBLE)], [_vi("y", [3, 2], TensorProto.DOUBLE)],
               [_const("w", _x(4, 2, dtype=np.float64)), _const("b", _x(2, dtype=np.float64))])
    _agree(m, {"x": _x(3, 4, dtype=np.float64)}, runners)


# --- refusals and feeds -----------------------------------------------------------------------------

INT32, INT64 = TensorProto.INT32, TensorProto.INT64


@pytest.mark.parametrize("node,outputs,match", [
    (helper.make_node("Erf", ["x"], ["y"], name="odd"), [("y", F32)], "Erf.*'odd'"),
    (helper.make_node("LSTM", ["x3", "w", "r"], ["y"], name="rnn", hidden_size=2, direction="reverse"),
     [("y", F32)], "LSTM.*'rnn'.*reverse"),
    (helper.make_node("AveragePool", ["x"], ["y"], name="avg", kernel_shape=[2, 2], dilations=[2, 2]),
     [("y", F32)], "AveragePool.*'avg'.*dilation"),
    (helper.make_node("MaxPool", ["x"], ["y", "i"], name="mp", kernel_shape=[2, 2]), [("y", F32), ("i", INT64)],
     "MaxPool.*'mp'.*Indices"),
    (helper.make_node("Relu", ["i"], ["y"], name="ints"), [("y", INT32)], "Relu.*'ints'.*int32")])
def test_unsupported_is_refused_before_anything_runs(node, outputs, match):
    inputs = [_vi("x", [1, 1, 4, 4]), _vi("x3", [3, 1, 4]), _vi("w", [1, 8, 4]), _vi("r", [1, 8, 2]),
              _vi("i", [2], INT32)]
    m = _graph([node], [i for i in inputs if i.name in node.input], [_vi(o, None, t) for o, t in outputs], opset=19)
    spy = _Spy(backends.load("cupy"))
    with pytest.raises(UnsupportedOnnxOp, match=match):
        onnx_import.Imported(onnx_import.parse(m.SerializeToString()), spy)
    assert spy.calls == []


def test_feeds_are_checked(runners):
    m = _graph([helper.make_node("Relu", ["x"], ["y"])], [_vi("x", ["N", 3])], [_vi("y", ["N", 3])])
    for _label, b, kw in runners:
        g = b.import_onnx(m.SerializeToString(), **kw)
        assert g.run({"x": _x(5, 3)})["y"].shape == (5, 3)              # the batch is dynamic
        with pytest.raises(ShapeError, match="missing"):
            g.run({})
        with pytest.raises(ShapeError, match="no input 'z'"):
            g.run({"x": _x(1, 3), "z": _x(1)})
        with pytest.raises(DTypeError, match="float32"):
            g.run({"x": _x(1, 3, dtype=np.float64)})
        with pytest.raises(ShapeError, match=r"\(\?, 3\)"):
            g.run({"x": _x(1, 4)})


# --- GoogLeNet ------------------------------------------------------------------------------------

def _googlenet_on_every_backend(runners, width: float, size: int, classes: int) -> dict[str, float]:
    """Every backend: each node within its own bound on ONNX Runtime's inputs, the output within
    the end-to-end bound; returns each backend's seconds for one forward pass."""
    graph = onnx_import.parse(onnx_zoo.googlenet(width, size, classes).SerializeToString())
    feeds = compare.inputs_for(graph, {}, seed=1)
    ort = compare.ort_values(graph, feeds, every=True)
    ref = compare.reference(graph, feeds)["prob"]
    seconds, imported = {}, {}
    for label, b, kw in runners:
        imported[label] = imp = b.import_onnx(graph, **kw)
        imp.run(feeds)                                                   # warm (session caches)
        start = time.perf_counter()
        out = imp.run(feeds)["prob"]
        seconds[label] = time.perf_counter() - start
        assert compare.difference(out, ort["prob"], ref, TOL).outside == 0, label
        assert abs(float(out.sum()) - 1.0) < 1e-4 and np.argmax(out) == np.argmax(ort["prob"]), label
    local = compare.local_usages(graph, imported, feeds, ort, TOL)
    assert len(local) == len(compare.node_steps(graph)) > 100
    for label in [*imported, compare.ORT]:
        worst = max(local, key=lambda r, k=label: r[1][k])
        assert worst[1][label] <= 1.0, (label, worst)
    return seconds


def test_googlenet_narrow_on_every_backend(runners):
    """The published topology, 1/8 of the channels at 64×64: what CI runs."""
    seconds = _googlenet_on_every_backend(runners, 0.125, 64, 10)
    print("narrow GoogLeNet, one forward pass:", {k: f"{v:.3f} s" for k, v in seconds.items()})


@pytest.mark.slow
@LARGE
def test_googlenet_full_size_on_every_backend(runners):
    seconds = _googlenet_on_every_backend(runners, 1.0, 224, 1000)
    print("GoogLeNet 224×224, batch 1, one forward pass:", {k: f"{v:.3f} s" for k, v in seconds.items()})


@pytest.mark.slow
@pytest.mark.parametrize("name,output", [("inception_v1", "prob_1"), ("squeezenet", "softmaxout_1"),
                                         pytest.param("bvlc_alexnet", "prob_1", marks=LARGE)])
def test_published_models_shipped_with_onnx(runners, name, output):
    """Published Caffe2 models that ship with onnx as "light" test models (opset 9; weights made by
    ConstantOfShape): GoogLeNet (Inception v1), SqueezeNet and AlexNet import and run on every
    backend. Every node's value agrees with ONNX Runtime's, and the output with the one stored
    beside the model."""
    from onnx.backend.test.loader import DATA_DIR

    path = os.path.join(DATA_DIR, "light", f"light_{name}.onnx")
    stored = onnx.TensorProto()
    with open(path.replace(".onnx", "_output_0.pb"), "rb") as f:
        stored.ParseFromString(f.read())
    graph = onnx_import.parse(path)
    feeds = compare.inputs_for(graph, {}, seed=0)
    ort = compare.ort_values(graph, feeds, every=True)
    np.testing.assert_allclose(ort[output], numpy_helper.to_array(stored), rtol=1e-5)
    for label, b, kw in runners:
        values = b.import_onnx(graph, **kw).run(feeds, every=True)
        common = set(values) & set(ort)
        assert len(common) >= 0.9 * len(graph.values) and output in common, label
        for k in common:
            v, scale = values[k], float(np.max(np.abs(ort[k]), initial=0.0))
            np.testing.assert_allclose(v, ort[k], rtol=1e-4, atol=1e-6 * scale, err_msg=f"{label} {k}")


# --- nutshell check ---------------------------------------------------------------------------------

SKEWED = '''
from nutshell.backends.cupy_impl import CupyBackend


class Skewed(CupyBackend):
    """The CuPy backend with every max pool 0.1 % too large."""

    name = "skewed"

    def _forward(self, concept, inputs, attrs):
        out = super()._forward(concept, inputs, attrs)
        return {"y": out["y"] * 1.001} if concept == "max_pool2d" else out
'''


def test_check_command(tmp_path, monkeypatch, capsys):
    """``nutshell check`` compares every backend with ONNX Runtime per output, and with --per-node
    names the first node where a backend leaves its bound (here a skewed max pool)."""
    from nutshell import cli
    from nutshell.onnxio.codec import writer as onnx_export
    from nutshell.spec import models

    path = tmp_path / "digits.onnx"
    onnx.save(onnx_export.export(models.get("digits_cnn"), seed=1), path)
    np.save(tmp_path / "x.npy", _x(2, 1, 8, 8))
    assert cli.main(["check", str(path), "-b", "torch", "-b", "cupy", "--input", f"x={tmp_path / 'x.npy'}"]) == 0
    out = capsys.readouterr().out
    assert "inputs x (2, 1, 8, 8) float32" in out and "output logits:" in out
    assert all(f"  {b} " in out for b in ("torch", "cupy")) and "0/20" in out
    (tmp_path / "skewed_backend.py").write_text(SKEWED)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("NUTSHELL_BACKENDS", "skewed=skewed_backend:Skewed")
    assert cli.main(["check", str(path), "-b", "cupy", "-b", "skewed", "--per-node"]) == 1
    out = capsys.readouterr().out
    assert "first node where a backend leaves its bound: MaxPool" in out and out.rstrip().endswith("on skewed")
