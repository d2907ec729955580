"""Small helpers to build, check and run ONNX graphs.

A :class:`Graph` collects nodes while the per-area builders (activations.py, conv.py, ...) call
``g.op("Conv", x, w, strides=[1, 1])``; each call returns the name of the new value, so a builder
reads like the math it implements. :func:`check` runs the full ONNX checker and strict shape
inference on every model before :func:`session` hands it to ONNX Runtime.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper, numpy_helper

OPSET = 18                                  # ScatterElements "add" needs ≥ 16; axes are inputs since 13/18
INT64_MIN = int(np.iinfo(np.int64).min)     # a Slice end meaning "past the start" when stepping by −1


class Graph:
    """An ONNX graph under construction, in one float dtype."""

    def __init__(self, dtype: str, name: str):
        self.dtype = np.dtype(dtype)
        self.elem = helper.np_dtype_to_tensor_dtype(self.dtype)
        self.name = name
        self.nodes: list[onnx.NodeProto] = []
        self.inputs: list[onnx.ValueInfoProto] = []
        self.outputs: list[onnx.ValueInfoProto] = []
        self.inits: list[onnx.TensorProto] = []
        self._small: dict[tuple, str] = {}              # small constants, shared by value
        self.shapes: dict[str, tuple[int, ...]] = {}   # static shapes of the graph inputs
        self._count = 0

    def _fresh(self, hint: str) -> str:
        self._count += 1
        return f"{hint}_{self._count}"

    def input(self, name: str, shape: Sequence[int], dtype: str | None = None) -> str:
        """Declare a graph input of a static shape (the graph dtype unless ``dtype``)."""
        elem = self.elem if dtype is None else helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
        self.inputs.append(helper.make_tensor_value_info(name, elem, list(shape)))
        self.shapes[name] = tuple(shape)
        return name

    def output(self, name: str, value: str, shape: Sequence[int]) -> None:
        """Expose ``value`` as the graph output ``name`` of the given shape."""
        self.nodes.append(helper.make_node("Identity", [value], [name], name=f"out_{name}"))
        self.outputs.append(helper.make_tensor_value_info(name, self.elem, list(shape)))

    def op(self, op_type: str, *inputs: str, outputs: int = 1, **attrs: Any) -> Any:
        """Append one node; returns its output name (a tuple of names when ``outputs`` > 1)."""
        outs = [self._fresh(op_type.lower()) for _ in range(outputs)]
        self.nodes.append(helper.make_node(op_type, list(inputs), outs, name=self._fresh(op_type), **attrs))
        return outs[0] if outputs == 1 else tuple(outs)

    def const(self, array: np.ndarray, hint: str = "c") -> str:
        """A constant initializer holding ``array`` exactly as given (dtype included)."""
        array = np.asarray(array)
        key = (array.dtype.str, array.shape, array.tobytes())
        if array.size <= 8 and key in self._small:
            return self._small[key]
        name = self._fresh(hint)
        self.inits.append(numpy_helper.from_array(array, name))
        if array.size <= 8:
            self._small[key] = name
        return name

    def scalar(self, value: float) -> str:
        """A 0-d constant in the graph dtype."""
        return self.const(np.array(value, self.dtype), "s")

    def ints(self, values: Sequence[int]) -> str:
        """A 1-d int64 constant (shapes, axes, pads, indices)."""
        return self.const(np.array(values, np.int64), "i")

    def model(self) -> onnx.ModelProto:
        graph = helper.make_graph(self.nodes, self.name, self.inputs, self.outputs,
                                  initializer=self.inits)
        opsets = [helper.make_opsetid("", OPSET)]
        return helper.make_model(graph, opset_imports=opsets, producer_name="nutshell",
                                 ir_version=helper.find_min_ir_version_for(opsets))    # loads on older runtimes


# --- shape plumbing used by several areas --------------------------------------------------------

def reshape(g: Graph, x: str, shape: Sequence[int]) -> str:
    return g.op("Reshape", x, g.ints(shape))


def transpose(g: Graph, x: str, perm: Sequence[int]) -> str:
    return g.op("Transpose", x, perm=list(perm))


def unsqueeze(g: Graph, x: str, axes: Sequence[int]) -> str:
    return g.op("Unsqueeze", x, g.ints(axes))


def slice_(g: Graph, x: str, starts: Sequence[int], ends: Sequence[int], axes: Sequence[int],
           steps: Sequence[int] | None = None) -> str:
    """x[starts:ends:steps] on ``axes`` (ONNX Slice)."""
    args = [x, g.ints(starts), g.ints(ends), g.ints(axes)]
    if steps is not None:
        args.append(g.ints(steps))
    return g.op("Slice", *args)


def pad(g: Graph, x: str, begin: Sequence[int], end: Sequence[int], value: float = 0.0) -> str:
    """Constant padding: ``begin``/``end`` per axis (ONNX pads = begin + end)."""
    return g.op("Pad", x, g.ints(list(begin) + list(end)), g.scalar(value))


def reduce_sum(g: Graph, x: str, axes: Sequence[int], keepdims: bool = False) -> str:
    return g.op("ReduceSum", x, g.ints(axes), keepdims=int(keepdims))


def flip_hw(g: Graph, w: str) -> str:
    """w[:, :, ::−1, ::−1]."""
    return slice_(g, w, [-1, -1], [INT64_MIN, INT64_MIN], [2, 3], [-1, -1])


def crop_hw(g: Graph, x: str, length: tuple[int, int], begin: tuple[int, int], size: tuple[int, int]) -> str:
    """x[:, :, begin:begin+size] on the two spatial axes of current ``length``, zero-filled where
    the window runs past the end (a pooling gradient in ceil mode can be shorter than the input)."""
    short = [max(0, b + s - n) for n, b, s in zip(length, begin, size, strict=True)]
    if any(short):
        x = pad(g, x, [0, 0, 0, 0], [0, 0, *short])
    return slice_(g, x, list(begin), [b + s for b, s in zip(begin, size, strict=True)], [2, 3])


# --- model checks and sessions ------------------------------------------------------------------

def check(model: onnx.ModelProto) -> onnx.ModelProto:
    """Full ONNX checker, then strict shape inference; returns the model with inferred shapes."""
    onnx.checker.check_model(model, full_check=True)
    return onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)


INSERTED_CAST = "InsertedPrecisionFreeCast_"   # ONNX Runtime's name for a Cast it puts around a node


def float32_ops(model: onnx.ModelProto, providers: list) -> set[str]:
    """The operator types of a float16 ``model`` that ONNX Runtime runs in float32 with these
    ``providers``: those its optimiser feeds through Casts it inserts (a node without a float16
    kernel), read from the optimised model it writes out."""
    with tempfile.TemporaryDirectory() as tmp:
        options = ort.SessionOptions()
        options.log_severity_level = 3
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.optimized_model_filepath = str(Path(tmp) / "optimised.onnx")
        ort.InferenceSession(model.SerializeToString(), options, providers=providers)
        optimised = onnx.load(options.optimized_model_filepath)
    widened = {out for n in optimised.graph.node if n.name.startswith(INSERTED_CAST) for out in n.output}
    return {n.op_type for n in optimised.graph.node if not n.name.startswith(INSERTED_CAST)
            and any(i in widened for i in n.input)}


def session(model: onnx.ModelProto, providers: list, spinning: bool = True) -> ort.InferenceSession:
    """An ONNX Runtime session for a checked model. Without ``spinning`` the workers of its
    intra-op thread pool sleep as soon as they run out of work instead of spinning on."""
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if not spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(model.SerializeToString(), options, providers=providers)
