"""ONNX files from outside, read safely (backend-neutral plumbing, no arithmetic).

>>> from nutshell.onnxio.codec import files as onnx_files
>>> model, folder = onnx_files.load("net.onnx")       # or the file's bytes (then folder is None)

A file is untrusted input. :func:`load` returns a ``ModelProto`` whose tensors all hold their
data in the proto, or raises :class:`~nutshell.errors.SpecError` naming what is wrong, before
any of the model runs:

* the bytes must parse completely as an ONNX ``ModelProto`` holding a graph (a truncated or
  malformed file is refused; so is a file over the protobuf limit of 2 GiB);
* every tensor (initializers, ``Constant`` values, tensors in attributes and subgraphs) declares
  dims ≥ 0 and at most :func:`max_tensor_bytes` bytes, checked on the declared dims before its
  data is read or anything is allocated;
* external data: ``location`` must be a relative path to a regular file inside the model's
  folder, after resolving every symbolic link; absolute paths, ``..`` and links that lead out
  are refused before any file is opened; ``offset`` and ``length`` must lie inside that file and
  ``length`` must equal the declared size. A model given as bytes has no folder, so it may not
  use external data. ``onnx.load`` is never called: it would follow the paths itself.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from pathlib import Path, PurePosixPath, PureWindowsPath

import numpy as np
import onnx
from google.protobuf.message import DecodeError
from onnx import AttributeProto, TensorProto, helper

from nutshell.errors import SpecError
from nutshell.spec import validate

LIMIT_ENV = "NUTSHELL_ONNX_MAX_TENSOR_MB"
DEFAULT_LIMIT_MB = 1024
PROTOBUF_LIMIT = 2**31 - 1          # protobuf cannot hold a message this large
MAX_DEPTH = 32                      # nesting of subgraphs we are willing to walk


def max_tensor_bytes() -> int:
    """The largest tensor a model may declare: $NUTSHELL_ONNX_MAX_TENSOR_MB MiB (default 1024)."""
    return validate.env_bytes(LIMIT_ENV) or DEFAULT_LIMIT_MB * 2**20


def load(source: str | os.PathLike | bytes | bytearray | memoryview) -> tuple[onnx.ModelProto, Path | None]:
    """(model with every tensor's data inline, the model's folder or None for bytes)."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        data, folder, what = bytes(source), None, "the given bytes"
    else:
        path = Path(source)
        if not path.is_file():
            raise SpecError(f"ONNX file {str(path)!r} does not exist or is not a file")
        if path.stat().st_size > PROTOBUF_LIMIT:
            raise SpecError(f"ONNX file {str(path)!r} is larger than protobuf's 2 GiB limit")
        data, folder, what = path.read_bytes(), path.resolve().parent, repr(str(path))
    model = parse_bytes(data, what)
    limit = max_tensor_bytes()
    for where, tensor in tensors(model):
        check_size(tensor, where, limit)
        if tensor.data_location == TensorProto.EXTERNAL:
            _inline(tensor, where, folder)
    return model, folder


def parse_bytes(data: bytes, what: str = "the given bytes") -> onnx.ModelProto:
    """A ModelProto from serialized bytes; anything else is a SpecError."""
    if not data:
        raise SpecError(f"{what}: empty, not an ONNX model")
    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except (DecodeError, RuntimeError, ValueError) as exc:
        raise SpecError(f"{what}: not a valid ONNX protobuf (truncated or malformed): {exc}") from None
    if not model.HasField("graph") or not model.opset_import:
        raise SpecError(f"{what}: parses, but holds no ONNX graph or no opset import; truncated or not an ONNX model")
    return model


# --- every tensor of a model --------------------------------------------------------------------

def tensors(model: onnx.ModelProto) -> Iterator[tuple[str, TensorProto]]:
    """(where, tensor) for every tensor the model holds: initializers, attribute tensors (Constant
    values), and the same inside subgraphs and local functions."""
    yield from _graph_tensors(model.graph, "graph", 0)
    for f in model.functions:
        for node in f.node:
            yield from _node_tensors(node, f"function {f.name!r}", 0)


def _graph_tensors(g: onnx.GraphProto, where: str, depth: int) -> Iterator[tuple[str, TensorProto]]:
    if depth > MAX_DEPTH:
        raise SpecError(f"{where}: subgraphs nested more than {MAX_DEPTH} deep")
    for t in g.initializer:
        yield f"{where}: initializer {t.name!r}", t
    for s in g.sparse_initializer:
        yield f"{where}: sparse initializer {s.values.name!r} (values)", s.values
        yield f"{where}: sparse initializer {s.values.name!r} (indices)", s.indices
    for node in g.node:
        yield from _node_tensors(node, where, depth)


def _node_tensors(node: onnx.NodeProto, where: str, depth: int) -> Iterator[tuple[str, TensorProto]]:
    label = f"{where}: node {node.name or node.op_type!r} ({node.op_type})"
    for a in node.attribute:
        if a.type == AttributeProto.TENSOR:
            yield f"{label} attribute {a.name!r}", a.t
        elif a.type == AttributeProto.TENSORS:
            for t in a.tensors:
                yield f"{label} attribute {a.name!r}", t
        elif a.type == AttributeProto.SPARSE_TENSOR:
            yield f"{label} attribute {a.name!r} (values)", a.sparse_tensor.values
        elif a.type == AttributeProto.GRAPH:
            yield from _graph_tensors(a.g, f"{label} subgraph", depth + 1)
        elif a.type == AttributeProto.GRAPHS:
            for sub in a.graphs:
                yield from _graph_tensors(sub, f"{label} subgraph", depth + 1)


# --- sizes ---------------------------------------------------------------------------------------

def itemsize(data_type: int, where: str) -> int:
    """Bytes per element of an ONNX element type (strings count 1: their data is in the file)."""
    if data_type == TensorProto.STRING:
        return 1
    try:
        return np.dtype(helper.tensor_dtype_to_np_dtype(data_type)).itemsize
    except (KeyError, TypeError, ValueError):
        raise SpecError(f"{where}: unknown element type {data_type}") from None


def check_size(tensor: TensorProto, where: str, limit: int) -> int:
    """The declared size in bytes; SpecError when a dim is negative or the size exceeds ``limit``."""
    dims = list(tensor.dims)
    if any(d < 0 for d in dims):
        raise SpecError(f"{where}: negative dimension in {dims}")
    return check_declared(math.prod(dims) * itemsize(tensor.data_type, where), dims, where, limit)


def check_declared(nbytes: int, dims: list[int], where: str, limit: int) -> int:
    """``nbytes`` if it is within ``limit``, else SpecError naming the limit's variable."""
    if nbytes > limit:
        raise SpecError(f"{where}: declares a tensor of {nbytes / 2**20:.1f} MiB (dims {dims}), over the limit of "
                        f"{limit / 2**20:.0f} MiB (set ${LIMIT_ENV} to change it)")
    return nbytes


# --- external data -------------------------------------------------------------------------------

def _inline(tensor: TensorProto, where: str, folder: Path | None) -> None:
    """Read a tensor's external data into ``raw_data`` after checking where it points."""
    info = {e.key: e.value for e in tensor.external_data}
    if folder is None:
        raise SpecError(f"{where}: uses external data, which a model given as bytes cannot; give its path")
    path = inside(folder, info.get("location", ""), where)
    nbytes = math.prod(tensor.dims) * itemsize(tensor.data_type, where)
    try:
        offset = int(info.get("offset", 0))
        length = int(info.get("length", nbytes))
    except ValueError:
        raise SpecError(f"{where}: external data offset and length must be integers, got {info}") from None
    size = path.stat().st_size
    if offset < 0 or length != nbytes or offset + length > size:
        raise SpecError(f"{where}: external data [{offset}, {offset + length}) does not fit the declared "
                        f"{nbytes} bytes or the file's {size} bytes")
    with path.open("rb") as f:
        f.seek(offset)
        tensor.raw_data = f.read(length)
    del tensor.external_data[:]
    tensor.data_location = TensorProto.DEFAULT


def inside(folder: Path, location: str, where: str) -> Path:
    """The regular file ``location`` names inside ``folder`` (links resolved), or SpecError."""
    if not location or "\x00" in location:
        raise SpecError(f"{where}: external data without a valid location")
    posix, win = PurePosixPath(location), PureWindowsPath(location)
    if posix.is_absolute() or win.is_absolute() or win.drive or ".." in posix.parts or ".." in win.parts:
        raise SpecError(f"{where}: external data location {location!r} points outside the model's folder; refused")
    root = folder.resolve()
    path = (root / posix).resolve()
    if path != root and root not in path.parents:
        raise SpecError(f"{where}: external data location {location!r} leads outside the model's folder "
                        "(through a link); refused")
    if not path.is_file():
        raise SpecError(f"{where}: external data file {location!r} does not exist in the model's folder")
    return path
