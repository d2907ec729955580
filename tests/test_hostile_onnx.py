"""Hostile ONNX models (issue 17, item 2): every value's size is known before anything is allocated,
for the backends and for the float64 reference of ``nutshell check``; malformed shapes and opsets
are refused at import with the node named; NaN on both sides is agreement."""

from __future__ import annotations

import numpy as np
import pytest
from memtrace import peak

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

import nutshell  # noqa: E402
from nutshell import backends, cli  # noqa: E402
from nutshell import spec as spec_mod  # noqa: E402
from nutshell.errors import AttrError, ShapeError, SpecError, UnsupportedOnnxOp  # noqa: E402
from nutshell.onnxio.codec import files as onnx_files  # noqa: E402
from nutshell.onnxio.codec import inference  # noqa: E402
from nutshell.onnxio.codec import reader as onnx_import  # noqa: E402
from nutshell.onnxio.codec.lowering import OPSETS  # noqa: E402
from nutshell.onnxio.codec.structural import STRUCTURAL  # noqa: E402
from nutshell.onnxio.tools import compare  # noqa: E402
from nutshell.spec import validate  # noqa: E402

F32 = TensorProto.FLOAT
MIB_763 = 200_000_000          # float32 elements: 763 MiB, under the default limit of 1024 MiB


@pytest.fixture(scope="module")
def every_backend():
    loaded, _ = backends.available(["torch", "cupy", "onnx"])
    assert loaded, "no backend to test"
    return loaded


@pytest.fixture(autouse=True)
def limits(monkeypatch):
    """The defaults of the tensor limit; a budget larger than any of these models' runs need, so that
    the tensor limit is what each test meets (the budget has its own tests)."""
    monkeypatch.delenv(onnx_files.LIMIT_ENV, raising=False)
    monkeypatch.setenv(validate.MEMORY_ENV, str(2**20))


def _model(nodes, inputs, outputs, inits=(), opset=18) -> bytes:
    """The serialized model; outputs declared without a shape (``_vi(name, None)``) get ONNX's
    inferred one."""
    graph = helper.make_graph(nodes, "hostile", inputs, outputs, initializer=list(inits))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    if any(not o.type.tensor_type.HasField("shape") for o in outputs):
        model = onnx.shape_inference.infer_shapes(model)
    return model.SerializeToString()


def _vi(name: str, shape, elem=F32):
    return helper.make_tensor_value_info(name, elem, shape)


def _refused(data: bytes, every_backend, cls, match: str) -> None:
    """parse and every backend's import_onnx raise ``cls``, allocating no more than 16 MiB."""
    def attempt():
        with pytest.raises(cls, match=match):
            onnx_import.parse(data)
    assert peak(attempt) < 16 * 2**20
    for b in every_backend.values():
        with pytest.raises(cls, match=match):
            b.import_onnx(data)


def _check_cli(tmp_path, data: bytes, capsys, *args: str) -> tuple[int, str, str]:
    path = tmp_path / "model.onnx"
    path.write_bytes(data)
    code = cli.main(["check", str(path), "-b", "cupy", "-b", "torch", *args])
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, out, err


# --- sizes known before anything is allocated -------------------------------------------------------

def _concat_bomb() -> bytes:
    """The reproduction: ConstantOfShape of 763 MiB concatenated 64 times (47.7 GiB)."""
    shape = numpy_helper.from_array(np.array([MIB_763], np.int64), "s")
    return _model([helper.make_node("ConstantOfShape", ["s"], ["c"], name="fill"),
                   helper.make_node("Concat", ["c"] * 64, ["y"], axis=0, name="cat")],
                  [], [_vi("y", [64 * MIB_763])], [shape])


def test_concat_bomb_is_refused_before_anything_is_allocated(every_backend, tmp_path, capsys):
    data = _concat_bomb()
    assert len(data) < 600
    _refused(data, every_backend, SpecError, r"ONNX node Concat 'cat'.*48828\.1 MiB.*over the limit of 1024 MiB")
    code, _, err = _check_cli(tmp_path, data, capsys)
    assert code == 2 and "SpecError" in err and onnx_files.LIMIT_ENV in err


def test_many_fills_within_the_limit_are_refused_together(every_backend, monkeypatch):
    """Eight ConstantOfShape of 763 MiB, each within the limit, 6 GiB together: refused on the
    memory budget before any of them is made (they were made one by one at import)."""
    monkeypatch.setenv(validate.MEMORY_ENV, "4096")
    shape = numpy_helper.from_array(np.array([MIB_763], np.int64), "s")
    nodes = [helper.make_node("ConstantOfShape", ["s"], [f"y{k}"]) for k in range(8)]
    data = _model(nodes, [], [_vi(f"y{k}", [MIB_763]) for k in range(8)], [shape])
    _refused(data, every_backend, SpecError, r"6\.0 GiB together.*memory budget of 4\.0 GiB")


def test_shape_computed_from_constants_is_known_before_the_fill(every_backend):
    """ConstantOfShape whose shape is a Concat of constants: 1.5 GiB, refused before it is made."""
    a = numpy_helper.from_array(np.array([20000], np.int64), "a")
    data = _model([helper.make_node("Concat", ["a", "a"], ["s"], axis=0),
                   helper.make_node("ConstantOfShape", ["s"], ["y"], name="fill")],
                  [], [_vi("y", [20000, 20000])], [a])
    _refused(data, every_backend, SpecError, r"ONNX node ConstantOfShape 'fill'.*1525\.9 MiB")


def test_shape_from_a_feed_is_checked_before_the_run(every_backend):
    """The shape is an input: unknown at import, refused from the feed's value before any step."""
    data = _model([helper.make_node("ConstantOfShape", ["s"], ["y"], name="fill"),
                   helper.make_node("Relu", ["y"], ["z"])], [_vi("s", [2], TensorProto.INT64)], [_vi("z", None)])
    for b in every_backend.values():
        imported = b.import_onnx(data, **({"direct": False} if b.name == "onnx" else {}))
        np.testing.assert_array_equal(imported.run({"s": np.array([2, 3])})["z"], np.zeros((2, 3), np.float32))
        with pytest.raises(SpecError, match=r"ONNX node ConstantOfShape 'fill'.*over the limit"):
            imported.run({"s": np.array([20000, 20000])})


def test_shape_from_a_feed_is_checked_before_onnx_runtime_runs_the_model_whole(every_backend):
    """The ONNX backend's default import hands the model to one ONNX Runtime session: the feed's
    value fixes the dynamic sizes, which pass the limit before the session allocates them."""
    if "onnx" not in every_backend:
        pytest.skip("backend onnx is not available")
    data = _model([helper.make_node("ConstantOfShape", ["s"], ["y"], name="fill"),
                   helper.make_node("Relu", ["y"], ["z"])], [_vi("s", [2], TensorProto.INT64)], [_vi("z", None)])
    imported = every_backend["onnx"].import_onnx(data)
    np.testing.assert_array_equal(imported.run({"s": np.array([2, 3])})["z"], np.zeros((2, 3), np.float32))
    with pytest.raises(SpecError, match=r"ONNX node ConstantOfShape 'fill'.*over the limit"):
        imported.run({"s": np.array([20000, 20000])})


def _conv_pads(pads: int) -> bytes:
    """The reproduction: a 1×1 convolution of one pixel with pads of ``pads`` on every side."""
    w = numpy_helper.from_array(np.ones((1, 1, 1, 1), np.float32), "w")
    side = 2 * pads + 1
    return _model([helper.make_node("Conv", ["x", "w"], ["y"], pads=[pads] * 4, name="conv")],
                  [_vi("x", [1, 1, 1, 1])], [_vi("y", [1, 1, side, side])], [w])


def test_conv_with_huge_pads_is_refused_at_import(every_backend, tmp_path, capsys):
    """pads of 20000: a 6.4 GB output (and 107 GiB in the float64 reference), refused at import."""
    data = _conv_pads(20000)
    assert len(data) < 200
    _refused(data, every_backend, SpecError, r"ONNX node Conv 'conv'.*\[1, 1, 40001, 40001\].*over the limit")
    code, _, err = _check_cli(tmp_path, data, capsys)
    assert code == 2 and "over the limit" in err


def test_the_reference_sizes_what_it_holds(every_backend, monkeypatch, tmp_path, capsys):
    """Under a limit of 1 MiB, an 8×8 convolution over 64×64 runs on the backends (16 KiB each), but
    the float64 reference's windows, (1, 1, 8, 8, 57, 57) float64, are 1.6 MiB: refused by name."""
    monkeypatch.setenv(onnx_files.LIMIT_ENV, "1")
    w = numpy_helper.from_array(np.full((1, 1, 8, 8), 0.5, np.float32), "w")
    data = _model([helper.make_node("Conv", ["x", "w"], ["y"], name="conv")], [_vi("x", [1, 1, 64, 64])],
                  [_vi("y", [1, 1, 57, 57])], [w])
    graph = onnx_import.parse(data)
    feeds = {"x": np.ones((1, 1, 64, 64), np.float32)}
    for b in every_backend.values():
        assert b.import_onnx(graph).run(feeds)["y"].shape == (1, 1, 57, 57)
    with pytest.raises(SpecError, match=r"ONNX node Conv 'conv'.*reference's windows.*over the limit of 1 MiB"):
        compare.reference(graph, feeds)
    code, _, err = _check_cli(tmp_path, data, capsys)
    assert code == 2 and "reference's windows" in err


def _windows_model(kind: str, n: int) -> bytes:
    """A window model of size ``n``: Conv of one pixel with pads of n (the reproduction), a 3×3 Conv
    with bias over 4 channels, a strided MaxPool in ceil mode, an AveragePool, a Conv then MaxPool."""
    def rand(name, *shape):
        return numpy_helper.from_array(np.random.default_rng(0).uniform(-1, 1, shape).astype(np.float32), name)

    if kind == "conv pads":
        return _conv_pads(n)
    if kind in _CONCEPT_MODELS:
        return _concept_model(kind, n)
    conv = helper.make_node("Conv", ["x", "w", "b"], ["c" if kind == "conv then pool" else "y"], pads=[1] * 4)
    pool = helper.make_node("MaxPool", ["c"], ["y"], kernel_shape=[2, 2])
    nodes = {"conv 3x3": [conv], "conv then pool": [conv, pool],
             "max pool": [helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[3, 3], strides=[2, 2], pads=[1] * 4,
                                           ceil_mode=1)],
             "avg pool": [helper.make_node("AveragePool", ["x"], ["y"], kernel_shape=[2, 3], pads=[1, 1, 0, 1])]}[kind]
    inits = [rand("w", 8, 4, 3, 3), rand("b", 8)] if "conv" in kind else []
    return _model(nodes, [_vi("x", [1, 4, n, n])], [_vi("y", None)], inits)


def _reference_accepts(kind: str, n: int) -> bool:
    """Whether the import and the reference's check accept the window model of size ``n``."""
    try:
        graph = onnx_import.parse(_windows_model(kind, n))
        compare.check_reference(graph, compare.inputs_for(graph, {}))
    except SpecError:
        return False
    return True


_CONCEPT_MODELS = ("softmax", "log softmax opset 11", "lrn", "lstm", "gemm", "sigmoid", "global avg pool")


def _concept_model(kind: str, n: int) -> bytes:
    """A model of size ``n`` of a non-window concept whose reference allocates several times its
    values (compare.CONCEPT_WORK): Softmax over 4 channels, LogSoftmax of opset 11 (the flatten
    path), LRN of size 5 over 8 channels, an LSTM of n steps (batch 8, 16 inputs, H = 16), Gemm
    (n, 256)·(256, 256) with a bias, Sigmoid, GlobalAveragePool over n×n."""
    def rand(name, *shape):
        return numpy_helper.from_array(np.random.default_rng(0).uniform(-1, 1, shape).astype(np.float32), name)

    x, inits, opset = [1, 4, n, n], [], 18
    if kind == "softmax":
        node = helper.make_node("Softmax", ["x"], ["y"], axis=1, name="sm")
    elif kind == "log softmax opset 11":
        node, opset = helper.make_node("LogSoftmax", ["x"], ["y"], axis=2, name="lsm"), 11
    elif kind == "lrn":
        node, x = helper.make_node("LRN", ["x"], ["y"], size=5, name="lrn"), [1, 8, n, n]
    elif kind == "lstm":
        node, x = helper.make_node("LSTM", ["x", "W", "R", "B"], ["y"], hidden_size=16, name="lstm"), [n, 8, 16]
        inits = [rand("W", 1, 64, 16), rand("R", 1, 64, 16), rand("B", 1, 128)]
    elif kind == "gemm":
        node, x = helper.make_node("Gemm", ["x", "w", "b"], ["y"], name="gemm"), [n, 256]
        inits = [rand("w", 256, 256), rand("b", 256)]
    else:
        node = helper.make_node({"sigmoid": "Sigmoid", "global avg pool": "GlobalAveragePool"}[kind], ["x"], ["y"])
    return _model([node], [_vi("x", x)], [_vi("y", None)], inits, opset=opset)


@pytest.mark.parametrize("kind", ["conv pads", "conv 3x3", "conv then pool", "max pool", "avg pool", *_CONCEPT_MODELS])
def test_the_reference_peak_stays_within_the_budget_its_check_accepted(monkeypatch, kind):
    """The float64 reference holds five arrays per value (T's value and four bounds) and a window
    step allocates its padded input, its windows and T's temporaries on top: the largest model the
    check accepts under a 48 MiB budget peaks within 48 MiB, and not far below (the check is not
    vacuous). It counted two arrays and no working set: pads of 3000 under 1000 MB peaked at 4.8 GiB.
    The other concepts' temporaries (compare.CONCEPT_WORK) went uncounted: a Softmax allocates 10
    times its input, an LRN 15 times, an LSTM about 45 times its output, on top of what is held."""
    budget = 48
    monkeypatch.setenv(validate.MEMORY_ENV, str(budget))

    lo, hi = 4, 2048                   # accepted at lo, refused at hi
    assert _reference_accepts(kind, lo) and not _reference_accepts(kind, hi)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if _reference_accepts(kind, mid) else (lo, mid)
    graph = onnx_import.parse(_windows_model(kind, lo))
    feeds = compare.inputs_for(graph, {})
    compare.reference(graph, compare.inputs_for(onnx_import.parse(_windows_model(kind, 2)), {}))  # warm: spec loaded
    used = peak(lambda: compare.reference(graph, feeds))
    assert budget * 2**20 / 2 < used <= budget * 2**20, (lo, used / 2**20)


def test_conv_pads_3000_under_1000_mb_is_refused_for_the_reference(tmp_path, capsys, monkeypatch):
    """The audit's case: accepted by the check, then 5.9 GB RSS in ``nutshell check``. The backends
    hold its 137 MiB result; the reference would need 5.4 GiB (measured: 4.8 GiB), refused by name
    before anything is allocated."""
    monkeypatch.setenv(validate.MEMORY_ENV, "1000")
    data = _conv_pads(3000)
    want = r"ONNX node Conv 'conv': the float64 reference of this step needs 5\.4 GiB.*memory budget of 1000\.0 MiB"
    assert "5.4 GiB" in _refused_before_allocating(tmp_path, capsys, data, want)


@pytest.mark.parametrize("kind, n, budget, needs, work", [
    ("softmax", 1024, 500, "680.1 MiB", "360.1 MiB"),
    ("lrn", 512, 300, "400.1 MiB", "240.1 MiB"),
    ("lstm", 20000, 500, "1.2 GiB", "1.1 GiB"),
])
def test_a_step_whose_temporaries_exceed_the_budget_is_refused_before_it_runs(monkeypatch, tmp_path, capsys, kind,
                                                                             n, budget, needs, work):
    """What the step holds fits the budget; with its reference's temporaries it does not: a SpecError
    naming the node and both sizes, before anything is allocated."""
    monkeypatch.setenv(validate.MEMORY_ENV, str(budget))
    data = _concept_model(kind, n)
    want = (rf"ONNX node \w+ '\w+': the float64 reference of this step needs {needs} \(its inputs and results, "
            rf"and {work} while it runs\), over the memory budget of {budget}\.0 MiB")
    assert work in _refused_before_allocating(tmp_path, capsys, data, want)


def _refused_before_allocating(tmp_path, capsys, data: bytes, want: str) -> str:
    """The model's reference is refused with a SpecError matching ``want`` by ``compare.reference``
    (peaking under 16 MiB: nothing allocated) and ``check_reference``, and ``nutshell check`` exits
    2 naming the budget's variable; returns its stderr."""
    graph = onnx_import.parse(data)
    feeds = compare.inputs_for(graph, {})

    def attempt():
        with pytest.raises(SpecError, match=want):
            compare.reference(graph, feeds)
    assert peak(attempt) < 16 * 2**20
    with pytest.raises(SpecError, match=want):
        compare.check_reference(graph, feeds)
    code, _, err = _check_cli(tmp_path, data, capsys)
    assert code == 2 and "SpecError" in err and validate.MEMORY_ENV in err
    return err


def _conv_attr(attr: str, value: int) -> bytes:
    w = numpy_helper.from_array(np.ones((1, 1, 1, 1), np.float32), "w")
    node = helper.make_node("Conv", ["x", "w"], ["y"], name="conv", **{attr: [value] * (4 if attr == "pads" else 2)})
    return _model([node], [_vi("x", [1, 1, 4, 4])], [_vi("y", [1, 1, "H", "W"])], [w])


@pytest.mark.parametrize("value", [2**31, 2**63 - 1])
@pytest.mark.parametrize("attr, arg", [("pads", "pads"), ("strides", "stride")])
def test_attribute_beyond_32_bits_is_an_attr_error(every_backend, tmp_path, capsys, attr, arg, value):
    """An ONNX attribute outside the 32-bit range the backends' window arithmetic holds (a stride of
    2**63 was blamed on the backend): an AttrError naming the node, at import on every backend and
    in ``nutshell check``."""
    path = tmp_path / "model.onnx"
    path.write_bytes(_conv_attr(attr, value))
    want = rf"ONNX node Conv 'conv': conv2d: argument '{arg}': must lie in the 32-bit range.*got \[{value}, {value}"
    for name in every_backend:
        with pytest.raises(AttrError, match=want):
            nutshell.load(name).import_onnx(path)
    code, _, err = _check_cli(tmp_path, path.read_bytes(), capsys)
    assert code == 2 and "AttrError" in err and "'conv'" in err


def test_every_structural_step_has_a_shape_rule():
    assert set(inference.SHAPES) == set(STRUCTURAL)


def test_inferred_shapes_are_the_computed_ones(every_backend):
    """Every value of a graph of every kind of step, inferred from the feeds, has the shape and
    dtype the run gives it (a dynamic batch keeps the steps from being folded at import)."""
    rng = np.random.default_rng(0)

    def const(name, *shape):
        return numpy_helper.from_array(rng.uniform(-1, 1, shape).astype(np.float32), name)

    nodes = [
        helper.make_node("Gemm", ["x", "g"], ["a"], transB=1, alpha=0.5),                    # (N, 6)
        helper.make_node("Mul", ["a", "two"], ["b"]),
        helper.make_node("Add", ["b", "row"], ["c"]),
        helper.make_node("Reshape", ["c", "shape"], ["d"]),                                  # (N, 2, 3)
        helper.make_node("MatMul", ["d", "m"], ["e"]),                                       # (N, 2, 4)
        helper.make_node("Transpose", ["e"], ["f"], perm=[1, 0, 2]),                         # (2, N, 4)
        helper.make_node("LSTM", ["f", "W", "R", "B"], ["h", "hn"], hidden_size=3),          # (2, 1, N, 3)
        helper.make_node("Squeeze", ["h", "one"], ["i"]),                                    # (2, N, 3)
        helper.make_node("Unsqueeze", ["i", "zero"], ["j"]),                                 # (1, 2, N, 3)
        helper.make_node("Concat", ["j", "j"], ["k"], axis=1),                               # (1, 4, N, 3)
        helper.make_node("Conv", ["k", "cw"], ["l"], pads=[1, 1, 1, 1]),                     # (1, 2, N, 3)
        helper.make_node("MaxPool", ["l"], ["p"], kernel_shape=[2, 2], auto_pad="SAME_UPPER"),
        helper.make_node("Flatten", ["p"], ["q"], axis=2),
        helper.make_node("Dropout", ["q"], ["r", "mask"]),
        helper.make_node("Softmax", ["r"], ["y"]),
    ]
    inits = [const("g", 6, 5), numpy_helper.from_array(np.float32(2.0), "two"), const("row", 6),
             numpy_helper.from_array(np.array([0, 2, 3], np.int64), "shape"), const("m", 3, 4),
             const("W", 1, 12, 4), const("R", 1, 12, 3), const("B", 1, 24),
             numpy_helper.from_array(np.array([1], np.int64), "one"),
             numpy_helper.from_array(np.array([0], np.int64), "zero"), const("cw", 2, 4, 3, 3)]
    outputs = [_vi("y", None), _vi("mask", None, TensorProto.BOOL), _vi("hn", None)]
    data = _model(nodes, [_vi("x", ["N", 5])], outputs, inits)
    graph = onnx_import.parse(data)
    feeds = {"x": rng.uniform(-1, 1, (3, 5)).astype(np.float32)}
    known = inference.infer(graph, {"x": inference.meta(feeds["x"])})
    values = onnx_import.execute(graph, dict(feeds), every_backend["cupy"].run)
    assert len(graph.steps) > 20 and set(known) == set(values)
    for name, v in values.items():
        assert (known[name].shape, known[name].dtype) == (np.shape(v), np.asarray(v).dtype), name


# --- malformed shapes and opsets, refused at import ----------------------------------------------------

def test_negative_input_dimension(every_backend, tmp_path, capsys):
    """Accepted by import, then a raw ValueError in ``nutshell check``; now refused at import."""
    data = _model([helper.make_node("Relu", ["x"], ["y"])], [_vi("x", [2, -3])], [_vi("y", [2, -3])])
    _refused(data, every_backend, SpecError, r"graph input 'x' declares a negative dimension in \[2, -3\]")
    code, _, err = _check_cli(tmp_path, data, capsys)
    assert code == 2 and "negative dimension" in err


def test_graph_input_declared_over_the_limit(every_backend):
    """An input of 2⁸⁰ floats is refused at import like an initializer that large."""
    data = _model([helper.make_node("Relu", ["x"], ["y"])], [_vi("x", [2**40, 2**40])], [_vi("y", [2**40, 2**40])])
    _refused(data, every_backend, SpecError, r"graph input 'x': declares a tensor of .* over the limit")


def _lstm(w_h: int, r_h: int, hidden_size: int | None, b_h: int | None = None) -> bytes:
    """An LSTM over x (5, 2, 4) whose W is for H = w_h, R for r_h (and B for b_h)."""
    def ones(name, *shape):
        return numpy_helper.from_array(np.full(shape, 0.1, np.float32), name)

    inits = [ones("W", 1, 4 * w_h, 4), ones("R", 1, 4 * r_h, r_h)] + ([ones("B", 1, 8 * b_h)] if b_h else [])
    attrs = {"hidden_size": hidden_size} if hidden_size is not None else {}
    node = helper.make_node("LSTM", ["x", "W", "R"] + (["B"] if b_h else []), ["y"], name="lstm", **attrs)
    return _model([node], [_vi("x", [5, 2, 4])], [_vi("y", None)], inits)


def test_lstm_hidden_size_that_the_weights_contradict(every_backend, tmp_path, capsys):
    """Accepted and run before (ONNX Runtime refused it); now an AttrError naming the node."""
    data = _lstm(3, 3, hidden_size=5)
    _refused(data, every_backend, AttrError, r"LSTM \(node 'lstm'\): hidden_size=5, but R \(1, 12, 3\) is for H = 3")
    code, _, err = _check_cli(tmp_path, data, capsys)
    assert code == 2 and "AttrError" in err


@pytest.mark.parametrize("w_h, r_h, b_h, arg, want", [
    (2, 3, None, "W", r"\(1, 12, 4\)"),
    (3, 3, 2, "B", r"\(1, 24\)"),
])
def test_lstm_weights_of_the_wrong_shape(every_backend, tmp_path, capsys, w_h, r_h, b_h, arg, want):
    """Accepted by import, then a raw ValueError in the reference of ``nutshell check``; now a
    ShapeError naming the node and the ONNX input."""
    data = _lstm(w_h, r_h, None, b_h)
    _refused(data, every_backend, ShapeError, rf"LSTM \(node 'lstm'\): {arg} must have shape {want} \(H = 3\)")
    code, _, err = _check_cli(tmp_path, data, capsys)
    assert code == 2 and "ShapeError" in err


def test_lstm_weights_that_do_not_fit_are_refused_at_run_time_too(every_backend):
    """W as a graph input of dynamic shape: unknown at import, refused by the spec's lstm rule
    before the step runs, and by the reference alike (no raw ValueError)."""
    r = numpy_helper.from_array(np.full((1, 12, 3), 0.1, np.float32), "R")
    data = _model([helper.make_node("LSTM", ["x", "W", "R"], ["y"], name="lstm")],
                  [_vi("x", [5, 2, 4]), _vi("W", [1, "G", 4])], [_vi("y", None)], [r])
    graph = onnx_import.parse(data)
    feeds = {"x": np.ones((5, 2, 4), np.float32), "W": np.ones((1, 8, 4), np.float32)}
    for b in every_backend.values():
        with pytest.raises(ShapeError, match="ONNX node LSTM 'lstm'"):
            b.import_onnx(graph, **({"direct": False} if b.name == "onnx" else {})).run(feeds)
    with pytest.raises(ShapeError, match="ONNX node LSTM 'lstm'"):
        compare.reference(graph, feeds)


@pytest.mark.parametrize("opset", [0, 29, 99])
def test_opset_outside_the_supported_range(every_backend, opset):
    data = _model([helper.make_node("Relu", ["x"], ["y"])], [_vi("x", [2, 3])], [_vi("y", [2, 3])], opset=opset)
    _refused(data, every_backend, UnsupportedOnnxOp, rf"opset {opset}; nutshell imports opsets 1 to 28")


def test_the_supported_opsets_import(every_backend):
    """The ends of the range import and run (opset 1 with its own Relu, the newest with today's)."""
    assert (OPSETS.start, OPSETS.stop - 1) == (1, 28)
    x = np.array([[-1.0, 2.0, -3.0]], np.float32)
    for opset in (OPSETS.start, OPSETS.stop - 1):
        data = _model([helper.make_node("Relu", ["x"], ["y"])], [_vi("x", [1, 3])], [_vi("y", [1, 3])], opset=opset)
        for b in every_backend.values():
            imported = b.import_onnx(data, **({"direct": False} if b.name == "onnx" else {}))
            np.testing.assert_array_equal(imported.run({"x": x})["y"], np.maximum(x, 0))


# --- NaN on both sides is agreement ---------------------------------------------------------------------

def _nan_model() -> bytes:
    c = numpy_helper.from_array(np.array([[np.nan, 1.0, 2.0]], np.float32), "c")
    return _model([helper.make_node("Add", ["x", "c"], ["y"])], [_vi("x", [2, 3])], [_vi("y", [2, 3])], [c])


def test_nan_constant_agrees_when_both_sides_hold_nan(tmp_path, capsys):
    """Reported as 2 of 6 outside before, although the backends and ONNX Runtime agree exactly."""
    code, out, _ = _check_cli(tmp_path, _nan_model(), capsys, "--per-node")
    assert code == 0, out
    rows = [line for line in out.splitlines() if line.strip().startswith(("cupy", "torch"))]
    assert len(rows) == 2 and all("0/6" in r and "nan" not in r for r in rows), out


def test_nan_on_one_side_only_is_outside():
    graph = onnx_import.parse(_nan_model())
    feeds = {"x": np.zeros((2, 3), np.float32)}
    ref, tol = compare.reference(graph, feeds)["y"], spec_mod.load().tolerance
    ort = compare.ort_values(graph, feeds)["y"]
    assert np.isnan(ort[:, 0]).all()
    same = compare.difference(ort.copy(), ort, ref, tol)
    assert (same.outside, same.max_abs, same.max_rel) == (0, 0.0, 0.0)
    one_sided = ort.copy()
    one_sided[0, 0] = 0.0
    d = compare.difference(one_sided, ort, ref, tol)
    assert d.outside == 1 and d.max_abs == np.inf


def test_infinities_of_opposite_signs_differ():
    ref, tol = compare.T(np.array([np.inf, 1.0])), spec_mod.load().tolerance
    a, o = np.array([np.inf, 1.0], np.float32), np.array([-np.inf, 1.0], np.float32)
    assert compare.difference(a, o, ref, tol).outside == 1
    assert compare.difference(o, o, ref, tol).outside == 0
