"""ONNX files from outside (issue 8): every malformed or unsafe file is refused with a clear
nutshell error before anything runs, on every backend's ``import_onnx`` and in ``nutshell check``,
and no file outside the model's folder is ever opened."""

from __future__ import annotations

import pathlib

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from nutshell import backends, cli  # noqa: E402
from nutshell.errors import NutshellError, SpecError, UnsupportedOnnxOp  # noqa: E402
from nutshell.onnxio.codec import files as onnx_files  # noqa: E402
from nutshell.onnxio.codec import reader as onnx_import  # noqa: E402


def _model(nodes, inits=(), inputs=None, outputs=None) -> onnx.ModelProto:
    inputs = inputs if inputs is not None else [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])]
    outputs = outputs if outputs is not None else [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])]
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(inits))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def _raw(name: str, dims: list[int], data: bytes = b"") -> TensorProto:
    """A float tensor exactly as a hostile file may declare it (no consistency check)."""
    t = TensorProto(name=name, data_type=TensorProto.FLOAT, dims=dims)
    t.raw_data = data
    return t


def _good() -> onnx.ModelProto:
    w = numpy_helper.from_array(np.full((2, 3), 0.5, np.float32), "w")
    return _model([helper.make_node("Add", ["x", "w"], ["y"], name="add")], [w])


@pytest.fixture(scope="module")
def every_backend():
    loaded, _ = backends.available(["torch", "cupy", "onnx"])
    return loaded


@pytest.fixture
def opened(monkeypatch):
    """Every path opened for reading through pathlib (how nutshell/onnxio/codec/files.py reads)."""
    seen: list[pathlib.Path] = []
    real_open, real_read = pathlib.Path.open, pathlib.Path.read_bytes

    def spy_open(self, *a, **k):
        if "r" in (a[0] if a else k.get("mode", "r")):
            seen.append(self.resolve())
        return real_open(self, *a, **k)

    def spy_read(self):
        seen.append(self.resolve())
        return real_read(self)

    monkeypatch.setattr(pathlib.Path, "open", spy_open)
    monkeypatch.setattr(pathlib.Path, "read_bytes", spy_read)
    return seen


def _refused(source, every_backend, cls=SpecError, match: str | None = None) -> None:
    """Every backend's import_onnx raises ``cls`` (a clear nutshell error), and so does parse."""
    with pytest.raises(cls, match=match):
        onnx_import.parse(source)
    for b in every_backend.values():
        with pytest.raises(cls, match=match):
            b.import_onnx(source)


def _check_cli(path, capsys) -> str:
    assert cli.main(["check", str(path), "-b", "cupy"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("nutshell: ") and "Traceback" not in err
    return err


def _external(tmp_path, location: str, data: bytes = b"\x00" * 24, **info) -> pathlib.Path:
    """A model whose initializer w (2, 3) float32 lives in external data at ``location``."""
    m = _good()
    w = m.graph.initializer[0]
    w.ClearField("raw_data")
    w.data_location = TensorProto.EXTERNAL
    for k, v in {"location": location, **info}.items():
        w.external_data.add(key=k, value=str(v))
    folder = tmp_path / "model"
    folder.mkdir(exist_ok=True)
    path = folder / "m.onnx"
    path.write_bytes(m.SerializeToString())
    if not location.startswith("/") and ".." not in location:
        (folder / location).write_bytes(data)
    return path


def test_valid_file_imports_and_runs(every_backend, tmp_path):
    """The positive control for everything below: the same small model imports and runs."""
    path = tmp_path / "ok.onnx"
    onnx.save(_good(), path)
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    for b in every_backend.values():
        np.testing.assert_array_equal(b.import_onnx(path).run({"x": x})["y"], x + 0.5)


def test_truncated_protobuf(every_backend, tmp_path, capsys):
    data = _good().SerializeToString()
    _refused(data[: len(data) // 2], every_backend, match="truncated or malformed|no ONNX graph")
    path = tmp_path / "cut.onnx"
    path.write_bytes(data[:-7])
    _refused(path, every_backend)
    assert "SpecError" in _check_cli(path, capsys)


def test_malformed_protobuf(every_backend, tmp_path, capsys):
    garbage = np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes()
    _refused(garbage, every_backend)
    _refused(b"", every_backend, match="empty")
    _refused(b"this is not protobuf \xff\xfe", every_backend)
    path = tmp_path / "garbage.onnx"
    path.write_bytes(garbage)
    _check_cli(path, capsys)


def test_missing_file(every_backend, tmp_path, capsys):
    _refused(tmp_path / "absent.onnx", every_backend, match="does not exist")
    _check_cli(tmp_path / "absent.onnx", capsys)


def test_external_data_inside_the_folder_is_read(tmp_path, every_backend):
    path = _external(tmp_path, "w.bin", np.full((2, 3), 2.0, np.float32).tobytes())
    x = np.ones((2, 3), np.float32)
    for b in every_backend.values():
        np.testing.assert_array_equal(b.import_onnx(path).run({"x": x})["y"], x + 2.0)


@pytest.mark.parametrize("location", ["../secret.bin", "sub/../../secret.bin", "..\\secret.bin"])
def test_external_data_outside_the_folder_is_refused(tmp_path, every_backend, opened, location, capsys):
    secret = tmp_path / "secret.bin"
    secret.write_bytes(b"\x00" * 24)                     # exists: a careless reader would succeed
    path = _external(tmp_path, location)
    _refused(path, every_backend, match="outside the model's folder")
    _check_cli(path, capsys)
    assert secret.resolve() not in opened


def test_external_data_absolute_path_is_refused(tmp_path, every_backend, opened):
    secret = tmp_path / "secret.bin"
    secret.write_bytes(b"\x00" * 24)
    path = _external(tmp_path, str(secret.resolve()))
    _refused(path, every_backend, match="outside the model's folder")
    assert secret.resolve() not in opened


def test_external_data_through_a_link_out_is_refused(tmp_path, every_backend, opened):
    secret = tmp_path / "secret.bin"
    secret.write_bytes(b"\x00" * 24)
    path = _external(tmp_path, "link.bin")
    (path.parent / "link.bin").unlink()
    (path.parent / "link.bin").symlink_to(secret)
    _refused(path, every_backend, match="through a link")
    assert secret.resolve() not in opened


def test_external_data_in_bytes_is_refused(tmp_path, every_backend):
    path = _external(tmp_path, "w.bin")
    _refused(path.read_bytes(), every_backend, match="given as bytes")


def test_external_data_range_outside_the_file(tmp_path, every_backend):
    _refused(_external(tmp_path, "w.bin", offset=16), every_backend, match="does not fit")
    _refused(_external(tmp_path, "w.bin", length=4), every_backend, match="does not fit")


def test_tensor_over_the_limit(tmp_path, every_backend, monkeypatch, capsys):
    big = numpy_helper.from_array(np.zeros((1024, 1024), np.float32), "w")        # 4 MiB
    m = _model([helper.make_node("Add", ["x", "w"], ["y"])], [big],
               [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1024, 1024])],
               [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1024, 1024])])
    path = tmp_path / "big.onnx"
    onnx.save(m, path)
    monkeypatch.setenv(onnx_files.LIMIT_ENV, "1")
    _refused(path, every_backend, match="over the limit of 1 MiB")
    assert onnx_files.LIMIT_ENV in _check_cli(path, capsys)
    monkeypatch.setenv(onnx_files.LIMIT_ENV, "8")
    assert onnx_import.parse(path).constants["w"].shape == (1024, 1024)


def test_huge_declared_tensor_without_data(every_backend):
    """Dims of 2⁴⁰ floats (4 TiB) and no data: refused on the declared size, nothing allocated."""
    w = _raw("w", [1 << 20, 1 << 20])
    _refused(_model([helper.make_node("Add", ["x", "w"], ["y"])], [w]).SerializeToString(), every_backend,
             match="over the limit")


def test_huge_constant_of_shape(every_backend):
    shape = numpy_helper.from_array(np.array([1 << 20, 1 << 20], np.int64), "s")
    m = _model([helper.make_node("ConstantOfShape", ["s"], ["y"])], [shape], inputs=[])
    _refused(m.SerializeToString(), every_backend, match="over the limit")


def test_broadcast_over_the_limit(every_backend, monkeypatch, tmp_path, capsys):
    """Add of (n, 1) and (1, n) asks for n² elements: the importer's steps refuse it before
    allocating, at run time (where n is known), like an input ``nutshell check`` would have to
    generate over the limit. (The ONNX backend's direct path leaves memory to ONNX Runtime.)"""
    m = _model([helper.make_node("Add", ["x", "t"], ["y"])], [],
               [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 1]),
                helper.make_tensor_value_info("t", TensorProto.FLOAT, [1, "n"])],
               [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", "n"])])
    monkeypatch.setenv(onnx_files.LIMIT_ENV, "1")
    x = np.zeros((1024, 1), np.float32)
    for b in every_backend.values():
        with pytest.raises(SpecError, match="over the limit"):
            b.import_onnx(m.SerializeToString(), **({"direct": False} if b.name == "onnx" else {})).run(
                {"x": x, "t": x.T.copy()})
    huge = _model([helper.make_node("Relu", ["x"], ["y"])], [], [helper.make_tensor_value_info("x", 1, [1 << 30, 4])],
                  [helper.make_tensor_value_info("y", 1, [1 << 30, 4])])
    path = tmp_path / "huge_input.onnx"
    path.write_bytes(huge.SerializeToString())
    assert "over the limit" in _check_cli(path, capsys)


def test_tensor_data_not_matching_its_shape(every_backend):
    w = _raw("w", [2, 3], np.zeros(4, np.float32).tobytes())
    _refused(_model([helper.make_node("Add", ["x", "w"], ["y"])], [w]).SerializeToString(), every_backend)


def test_negative_dims(every_backend):
    w = _raw("w", [2, -3])
    _refused(_model([helper.make_node("Add", ["x", "w"], ["y"])], [w]).SerializeToString(), every_backend,
             match="negative dimension")


def test_bad_limit_setting(monkeypatch):
    monkeypatch.setenv(onnx_files.LIMIT_ENV, "lots")
    with pytest.raises(SpecError, match=onnx_files.LIMIT_ENV):
        onnx_import.parse(_good().SerializeToString())


def test_graph_with_a_cycle(every_backend, tmp_path, capsys):
    relu = [helper.make_node("Relu", ["b"], ["a"], name="first"), helper.make_node("Relu", ["a"], ["b"], name="second")]
    nodes = [*relu, helper.make_node("Add", ["x", "b"], ["y"], name="out")]
    _refused(_model(nodes).SerializeToString(), every_backend, match="cycle.*'first'")
    path = tmp_path / "cycle.onnx"
    path.write_bytes(_model(nodes).SerializeToString())
    assert "cycle" in _check_cli(path, capsys)


def test_node_reading_itself(every_backend):
    nodes = [helper.make_node("Add", ["x", "y"], ["y"], name="loop")]
    _refused(_model(nodes).SerializeToString(), every_backend, match="cycle")


def test_undefined_input(every_backend):
    nodes = [helper.make_node("Add", ["x", "nowhere"], ["y"], name="add")]
    _refused(_model(nodes).SerializeToString(), every_backend, match="'add'.*'nowhere'")


def test_undefined_graph_output(every_backend):
    m = _model([helper.make_node("Relu", ["x"], ["z"])])
    _refused(m.SerializeToString(), every_backend, match="graph output 'y'")


def test_value_defined_twice(every_backend):
    nodes = [helper.make_node("Relu", ["x"], ["y"], name="a"), helper.make_node("Relu", ["x"], ["y"], name="b")]
    _refused(_model(nodes).SerializeToString(), every_backend, match="defined twice")


def test_unknown_operator_is_refused_before_anything_runs(every_backend):
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="fine"), helper.make_node("Erf", ["r"], ["y"], name="odd")]
    _refused(_model(nodes).SerializeToString(), every_backend, UnsupportedOnnxOp, match="Erf.*'odd'")


def test_errors_are_nutshell_errors():
    """Every refusal above is a NutshellError, itself a ValueError: callers need nothing else."""
    assert issubclass(SpecError, NutshellError) and issubclass(UnsupportedOnnxOp, ValueError)
