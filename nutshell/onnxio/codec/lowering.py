"""ONNX nodes lowered to spec concepts and structural steps (see nutshell/onnxio/codec/reader.py).

One ``_<Op>`` method per supported operator turns a node into steps; the arithmetic each lowering
sends to the backend is described in the importer's docstring. A node whose attribute values or
element types the spec cannot express is refused with UnsupportedOnnxOp, before anything runs.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from nutshell.errors import AttrError, ShapeError, SpecError, UnsupportedOnnxOp
from nutshell.onnxio.codec import inference
from nutshell.onnxio.codec.graph import Graph, Step, Value, at_node
from nutshell.onnxio.codec.structural import apply, limit

SUPPORTED = ("Conv", "MaxPool", "AveragePool", "GlobalAveragePool", "Relu", "Sigmoid", "Tanh", "Softmax",
             "LogSoftmax", "Gemm", "MatMul", "Add", "Mul", "Concat", "Flatten", "Reshape", "Dropout", "LRN",
             "LSTM", "Constant", "ConstantOfShape", "Identity", "Transpose", "Squeeze", "Unsqueeze")
CONCEPTS = frozenset({"conv2d", "max_pool2d", "avg_pool2d", "global_avg_pool2d", "relu", "sigmoid", "tanh",
                      "softmax", "log_softmax", "dense", "lrn", "lstm"})     # what the operators become
FLOATS = (TensorProto.FLOAT, TensorProto.DOUBLE)
OPSETS = range(1, 29)
"""The opsets of the default ONNX domain the lowering imports: 1 to 28. Every version of every
operator above up to opset 28 (the newest ONNX 1.23 defines) is one the lowering reads right: the
versions that changed what an operator computes are handled here (Add/Mul broadcast before 7,
Reshape's shape attribute before 5, Softmax on the coerced 2-D input before 13, Squeeze/Unsqueeze
axes as an input from 13, Dropout's mask before 10, AveragePool's dilations from 19, LSTM's layout
from 14); the later versions (up to 25) only added element types. A newer opset may redefine an
operator, so it is refused until the lowering is checked against it."""
_POOL = ("auto_pad", "kernel_shape", "pads", "strides", "ceil_mode")
ATTRS: dict[str, tuple[str, ...]] = {   # the attributes each operator may carry
    "Conv": ("auto_pad", "dilations", "group", "kernel_shape", "pads", "strides"),
    "MaxPool": (*_POOL, "dilations", "storage_order"),
    "AveragePool": (*_POOL, "count_include_pad", "dilations"),
    "Softmax": ("axis",), "LogSoftmax": ("axis",),
    "Gemm": ("alpha", "beta", "transA", "transB", "broadcast"),
    "Add": ("broadcast", "axis"), "Mul": ("broadcast", "axis"),
    "Concat": ("axis",), "Flatten": ("axis",), "Reshape": ("shape", "allowzero"),
    "Dropout": ("ratio", "is_test", "seed"), "LRN": ("size", "alpha", "beta", "bias"),
    "LSTM": ("activations", "direction", "hidden_size", "input_forget", "layout"),
    "Constant": ("value", "value_float", "value_floats", "value_int", "value_ints"),
    "ConstantOfShape": ("value",),
    "Transpose": ("perm",), "Squeeze": ("axes",), "Unsqueeze": ("axes",),
}


def label(node: onnx.NodeProto) -> str:
    """How messages name a node: its name, or its first output."""
    first = next(filter(None, node.output), "")
    return repr(node.name) if node.name else f"writing {first!r}" if first else "(unnamed)"


def _inferred(model: onnx.ModelProto) -> dict[str, tuple[int, tuple[int | None, ...] | None]]:
    """(element type, shape or None) of every value ONNX shape inference can type."""
    try:
        typed = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    except (onnx.shape_inference.InferenceError, RuntimeError, ValueError) as exc:
        raise SpecError(f"ONNX shape inference rejects the model: {str(exc).strip().splitlines()[0]}") from None
    out = {}
    for vi in (*typed.graph.input, *typed.graph.value_info, *typed.graph.output):
        t = vi.type.tensor_type
        if vi.type.HasField("tensor_type") and t.elem_type:
            shape = tuple(d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim) \
                if t.HasField("shape") else None
            out[vi.name] = (t.elem_type, shape)
    for init in model.graph.initializer:
        out[init.name] = (init.data_type, tuple(init.dims))
    return out


# --- lowering -------------------------------------------------------------------------------------

@dataclass
class _Node:
    """An ONNX node as the lowering reads it."""

    op: str
    label: str
    inputs: list[str]
    outputs: list[str]
    attrs: dict = field(default_factory=dict)

    def input(self, k: int) -> str:
        return self.inputs[k] if k < len(self.inputs) else ""

    def output(self, k: int) -> str:
        return self.outputs[k] if k < len(self.outputs) else ""

    def refuse(self, why: str) -> UnsupportedOnnxOp:
        return UnsupportedOnnxOp(f"ONNX operator {self.op} (node {self.label}): {why}")

    def ints(self, name: str, default: list[int] | None, length: int) -> list[int]:
        v = self.attrs.get(name, default)
        if v is None:
            raise self.refuse(f"attribute {name!r} is required")
        if len(v) != length:
            raise self.refuse(f"{name}={list(v)}: only 2-D operations (NCHW inputs) are supported")
        return [int(e) for e in v]


def _text(v: Any) -> Any:
    return v.decode() if isinstance(v, bytes) else v


def _attr_values(node: onnx.NodeProto) -> dict:
    """{name: value}, strings decoded (auto_pad, direction, activations)."""
    out = {}
    for a in node.attribute:
        v = helper.get_attribute_value(a)
        out[a.name] = [_text(e) for e in v] if isinstance(v, list) else _text(v)
    return out


class Lowering:
    """Turns validated ONNX nodes into steps (one ``_<op>`` method per operator)."""

    def __init__(self, model: onnx.ModelProto, nodes: list[onnx.NodeProto]):
        self.model, self.g = model, model.graph
        self.opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)
        self.nodes = nodes
        self.known = _inferred(model)
        self.constants = {t.name: _array(t, f"initializer {t.name!r}") for t in self.g.initializer}
        self.inputs = tuple(self._input(vi) for vi in self.g.input if vi.name not in self.constants)
        self.metas: dict[str, inference.Meta | None] = {k: inference.meta(a) for k, a in self.constants.items()}
        self.metas.update({v.name: _declared(v) for v in self.inputs})
        self.steps: list[Step] = []
        self.values: dict[str, str] = {}
        self._fused: dict[str, tuple[str, str]] = {}   # MatMul output -> (bias constant, Add output)
        self._absorbed: set[str] = set()                # outputs of the Adds folded into a dense
        self._count = 0
        self.node: _Node | None = None

    # --- helpers ---------------------------------------------------------------------------------

    def tmp(self) -> str:
        """A fresh value name between the steps of one node: its first output's name + ``~k``."""
        self._count += 1
        return f"{next(filter(None, self.node.outputs), 'v')}~{self._count}"

    def emit(self, op: str, inputs: dict[str, str], outputs: dict[str, str], attrs: dict | None = None,
             rule: str = "") -> None:
        """Append a step, its results inferred from what is known of its inputs and checked against
        the tensor limit; nothing is computed before :meth:`run` has seen the whole graph."""
        step = Step(op, tuple(inputs.items()), tuple(outputs.items()), attrs or {}, f"{self.node.op} {self.node.label}",
                    rule)
        outs = inference.infer_step(step, {arg: self.metas.get(name) for arg, name in inputs.items()})
        self.metas.update({name: outs[res] if outs is not None else None for res, name in outputs.items()})
        self.steps.append(step)

    def move(self, op: str, x: str, out: str | None = None, **attrs: Any) -> str:
        """A one-input structural step; returns its output's name."""
        out = out or self.tmp()
        self.emit(op, {"x": x}, {"y": out}, attrs)
        return out

    def elem(self, name: str) -> int | None:
        m = self.metas.get(name)
        return helper.np_dtype_to_tensor_dtype(m.dtype) if m is not None else self.known.get(name, (None, None))[0]

    def shape(self, name: str) -> tuple[int | None, ...] | None:
        m = self.metas.get(name)
        return m.shape if m is not None else self.known.get(name, (None, None))[1]

    def rank(self, name: str) -> int | None:
        s = self.shape(name)
        return None if s is None else len(s)

    def floats(self, *names: str) -> None:
        """Concept inputs must be float32 or float64 where the type is known."""
        for name in filter(None, names):
            t = self.elem(name)
            if t is not None and t not in FLOATS:
                kind = helper.tensor_dtype_to_string(t).removeprefix("TensorProto.").lower()
                raise self.node.refuse(f"input {name!r} is {kind}; the spec's concepts compute in float32 or float64")

    def rank_is(self, name: str, want: int, what: str) -> None:
        r = self.rank(name)
        if r is not None and r != want:
            raise self.node.refuse(f"input {name!r} has rank {r}: {what}")

    def const(self, name: str) -> np.ndarray | None:
        """The data of a value known at import (a constant, or small and computed from constants)."""
        m = self.metas.get(name) if name else None
        return None if m is None else m.value

    # --- the walk --------------------------------------------------------------------------------

    def run(self) -> None:
        self._find_fusions()
        for node in self.nodes:
            n = _Node(node.op_type, label(node), list(node.input), list(node.output), _attr_values(node))
            extra = sorted(set(n.attrs) - set(ATTRS.get(n.op, ())))
            if extra:
                raise n.refuse(f"attribute {extra[0]!r} is not supported")
            self.node = n
            getattr(self, f"_{n.op}")(n)
            for o in filter(None, n.outputs):
                self.values[o] = f"{n.op} {n.label}"
        inference.LIMITS.check_total(self.metas)
        self._fold()

    def _fold(self) -> None:
        """Compute the structural steps on constants only, in order, into constants: now that every
        value's size is known to fit (each checked by :meth:`emit`, together by :meth:`run`)."""
        steps = []
        for step in self.steps:
            if step.structural and all(name in self.constants for _, name in step.inputs):
                with at_node(step):
                    outs = apply(step.op, {arg: self.constants[name] for arg, name in step.inputs}, step.attrs)
                self.constants.update({name: outs[res] for res, name in step.outputs})
            else:
                steps.append(step)
        self.steps = steps

    def graph(self) -> Graph:
        types = {k: t for k, (t, _) in self.known.items()}
        return Graph(self.g.name or "graph", self.opset, self.inputs, tuple(o.name for o in self.g.output),
                     self.constants, tuple(self.steps), self.values, types, self.model)

    def _input(self, vi: onnx.ValueInfoProto) -> Value:
        if not vi.type.HasField("tensor_type"):
            raise UnsupportedOnnxOp(f"graph input {vi.name!r} is not a tensor; only tensor inputs are supported")
        t = vi.type.tensor_type
        try:
            dtype = np.dtype(helper.tensor_dtype_to_np_dtype(t.elem_type))
        except (KeyError, TypeError, ValueError):
            raise UnsupportedOnnxOp(f"graph input {vi.name!r} has element type {t.elem_type}, which NumPy "
                                    "cannot hold") from None
        shape = tuple(d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim) \
            if t.HasField("shape") else None
        if shape is not None and any(d is not None and d < 0 for d in shape):
            raise SpecError(f"graph input {vi.name!r} declares a negative dimension in {list(shape)}")
        return Value(vi.name, dtype, shape)

    def _find_fusions(self) -> None:
        """MatMul (2-D weight) whose only reader is an Add of a constant row vector: one dense."""
        readers: dict[str, int] = {}
        for node in self.nodes:
            for i in node.input:
                readers[i] = readers.get(i, 0) + 1
        outputs = {o.name for o in self.g.output}
        made = {node.output[0]: node for node in self.nodes if node.op_type == "MatMul"}
        for node in self.nodes:
            if node.op_type != "Add" or len(node.input) != 2 or any(a.name == "broadcast" for a in node.attribute):
                continue
            for mm, bias in (node.input, node.input[::-1]):
                m = made.get(mm)
                c = self.constants.get(bias)
                if m is None or c is None or readers.get(mm) != 1 or mm in outputs or self.rank(m.input[1]) != 2 \
                        or (self.rank(m.input[0]) or 0) < 2:
                    continue
                n_out = self.shape(m.input[1])[1]
                if c.shape in ((n_out,), (1, n_out)) and c.dtype.kind == "f":
                    self._fused[mm] = (bias, node.output[0])
                    self._absorbed.add(node.output[0])
                    break

    # --- arithmetic through concepts ---------------------------------------------------------------

    def add(self, a: str, b: str, out: str) -> None:
        """a + b = conv2d(x = stack(a, b) as (1, 2, M, 1), w = ones (1, 2, 1, 1)): a·1 + b·1."""
        ab = {"a": self.tmp(), "b": self.tmp()}
        self.emit("broadcast", {"a": a, "b": b}, ab)
        x = self.tmp()
        self.emit("pair", ab, {"y": x})
        y = self._conv1x1(x, self.move("full", x, shape=[1, 2, 1, 1], value=1.0))
        self.emit("like", {"x": y, "like": ab["a"]}, {"y": out})

    def mul(self, a: str, b: str, out: str) -> None:
        """a ⊙ b = conv2d(x = a as (1, M, 1, 1), w = b as (M, 1, 1, 1), groups = M); a one-element
        factor is one (1, 1, 1, 1) kernel over x as (1, 1, M, 1)."""
        sa, sb = self.shape(a), self.shape(b)
        if sa is not None and math.prod(d or 2 for d in sa) == 1:
            a, b, sa, sb = b, a, sb, sa
        ab = {"a": self.tmp(), "b": self.tmp()}
        self.emit("broadcast", {"a": a, "b": b}, ab)
        if sb is not None and math.prod(d or 2 for d in sb) == 1:
            y = self._conv1x1(self.move("column", ab["a"]), self.move("reshape", b, shape=[1, 1, 1, 1]))
        else:
            y = self._conv1x1(self.move("channels", ab["a"]), self.move("kernels", ab["b"]), "groups")
        self.emit("like", {"x": y, "like": ab["a"]}, {"y": out})

    def scale(self, x: str, factor: float) -> str:
        """factor · x, one product per element (a (1, 1, 1, 1) kernel over x as (1, 1, M, 1))."""
        col = self.move("column", x)
        y = self._conv1x1(col, self.move("full", x, shape=[1, 1, 1, 1], value=float(factor)))
        out = self.tmp()
        self.emit("like", {"x": y, "like": x}, {"y": out})
        return out

    def _conv1x1(self, x: str, w: str, rule: str = "") -> str:
        y = self.tmp()
        attrs = {"stride": [1, 1], "pads": [0, 0, 0, 0], "dilation": [1, 1], "groups": 1}
        self.emit("conv2d", {"x": x, "w": w}, {"y": y}, attrs, rule)
        return y

    # --- one method per operator -----------------------------------------------------------------

    def _Conv(self, n: _Node) -> None:
        x, w, b = n.input(0), n.input(1), n.input(2)
        self.floats(x, w, b)
        self.rank_is(x, 4, "only 2-D convolution (N, C, H, W) is supported")
        if "kernel_shape" in n.attrs:
            n.ints("kernel_shape", None, 2)
        attrs = {"stride": n.ints("strides", [1, 1], 2), "pads": n.ints("pads", [0] * 4, 4),
                 "dilation": n.ints("dilations", [1, 1], 2), "groups": int(n.attrs.get("group", 1))}
        rule = self._auto_pad(n, attrs)
        self.emit("conv2d", {"x": x, "w": w} | ({"b": b} if b else {}), {"y": n.output(0)}, attrs, rule)

    def _auto_pad(self, n: _Node, attrs: dict) -> str:
        mode = n.attrs.get("auto_pad", "NOTSET")
        if mode not in ("NOTSET", "VALID", "SAME_UPPER", "SAME_LOWER"):
            raise n.refuse(f"auto_pad={mode!r} is not an ONNX value")
        if mode == "VALID":
            attrs["pads"] = [0, 0, 0, 0]
        return mode if mode.startswith("SAME") else ""

    def _pool(self, n: _Node, concept: str, extra: dict) -> None:
        x = n.input(0)
        self.floats(x)
        self.rank_is(x, 4, "only 2-D pooling (N, C, H, W) is supported")
        kernel = n.ints("kernel_shape", None, 2)
        attrs = {"kernel": kernel, "stride": n.ints("strides", [1, 1], 2), "pads": n.ints("pads", [0] * 4, 4),
                 **extra, "ceil_mode": bool(n.attrs.get("ceil_mode", 0))}
        rule = self._auto_pad(n, attrs)
        dil = attrs.get("dilation", [1, 1])
        for axis in (0, 1):
            k_eff = dil[axis] * (kernel[axis] - 1) + 1
            if not rule and max(attrs["pads"][axis], attrs["pads"][axis + 2]) >= k_eff:
                raise n.refuse(f"pads {attrs['pads']} reach a whole kernel {kernel}: the spec's pooling needs "
                               "pads smaller than the (dilated) kernel")
        self.emit(concept, {"x": x}, {"y": n.output(0)}, attrs, rule)

    def _MaxPool(self, n: _Node) -> None:
        if n.output(1):
            raise n.refuse("the Indices output is not supported")
        self._pool(n, "max_pool2d", {"dilation": n.ints("dilations", [1, 1], 2)})

    def _AveragePool(self, n: _Node) -> None:
        if n.ints("dilations", [1, 1], 2) != [1, 1]:
            raise n.refuse("dilations ≠ 1: the spec's avg_pool2d has no dilation")
        self._pool(n, "avg_pool2d", {"count_include_pad": bool(n.attrs.get("count_include_pad", 0))})

    def _GlobalAveragePool(self, n: _Node) -> None:
        self.floats(n.input(0))
        self.rank_is(n.input(0), 4, "only (N, C, H, W) inputs are supported")
        self.emit("global_avg_pool2d", {"x": n.input(0)}, {"y": n.output(0)})

    def _unary(self, n: _Node, concept: str) -> None:
        self.floats(n.input(0))
        self.emit(concept, {"x": n.input(0)}, {"y": n.output(0)})

    def _Relu(self, n: _Node) -> None:
        self._unary(n, "relu")

    def _Sigmoid(self, n: _Node) -> None:
        self._unary(n, "sigmoid")

    def _Tanh(self, n: _Node) -> None:
        self._unary(n, "tanh")

    def _softmax(self, n: _Node, concept: str) -> None:
        x = n.input(0)
        self.floats(x)
        if self.opset >= 13:
            self.emit(concept, {"x": x}, {"y": n.output(0)}, {"axis": int(n.attrs.get("axis", -1))})
            return
        axis = int(n.attrs.get("axis", 1))          # before opset 13: on x coerced to 2-D at axis
        flat = self.move("flatten", x, axis=axis)
        y = self.tmp()
        self.emit(concept, {"x": flat}, {"y": y}, {"axis": -1})
        self.emit("like", {"x": y, "like": x}, {"y": n.output(0)})

    def _Softmax(self, n: _Node) -> None:
        self._softmax(n, "softmax")

    def _LogSoftmax(self, n: _Node) -> None:
        self._softmax(n, "log_softmax")

    def _Gemm(self, n: _Node) -> None:
        """Y = alpha · A' B' + beta · C, A' = A or Aᵀ, B' = B or Bᵀ."""
        a, b, c = n.input(0), n.input(1), n.input(2)
        self.floats(a, b, c)
        alpha, beta = float(n.attrs.get("alpha", 1.0)), float(n.attrs.get("beta", 1.0))
        if n.attrs.get("transA", 0):
            a = self.move("transpose", a, perm=[1, 0])
        if n.attrs.get("transB", 0):
            b = self.move("transpose", b, perm=[1, 0])
        if alpha != 1.0:
            a = self.scale(a, alpha)
        bias, rest = self._gemm_bias(b, c if beta != 0.0 else "", beta)
        y = n.output(0) if not rest else self.tmp()
        self.emit("dense", {"x": a, "w": b} | ({"b": bias} if bias else {}), {"y": y})
        if rest:
            self.add(y, rest, n.output(0))

    def _gemm_bias(self, b: str, c: str, beta: float) -> tuple[str, str]:
        """(dense's bias, a term to add afterwards): C is the bias when it is a row of N and beta = 1."""
        if not c:
            return "", ""
        sb, sc = self.shape(b), self.shape(c)
        n_out = None if sb is None or len(sb) != 2 else sb[1]
        if beta == 1.0 and n_out is not None and sc in ((n_out,), (1, n_out)):
            return (self.move("reshape", c, shape=[n_out]) if len(sc) == 2 else c), ""
        return "", c if beta == 1.0 else self.scale(c, beta)

    def _MatMul(self, n: _Node) -> None:
        a, b = n.input(0), n.input(1)
        self.floats(a, b)
        ra, rb = self.rank(a), self.rank(b)
        if ra is None or rb is None:
            raise n.refuse("inputs of unknown rank (the lowering depends on it)")
        bias, out = self._fused.get(n.output(0), ("", n.output(0)))
        if rb > 2:
            xw = {"x": self.tmp(), "w": self.tmp()}
            self.emit("batched", {"a": a, "b": b}, xw)
            y = self._conv1x1(xw["x"], xw["w"], "groups")
            self.emit("batched_out", {"y": y, "a": a, "b": b}, {"y": out})
            return
        x = self.move("rows", a)
        w = b if rb == 2 else self.move("reshape", b, shape=[-1, 1])
        if bias and self.constants[bias].ndim == 2:
            bias = self.move("reshape", bias, shape=[-1])
        y = self.tmp()
        self.emit("dense", {"x": x, "w": w} | ({"b": bias} if bias else {}), {"y": y})
        self.emit("matmul_out", {"y": y, "a": a, "b": b}, {"y": out})

    def _binary(self, n: _Node, combine: Callable[[str, str, str], None]) -> None:
        a, b = n.input(0), n.input(1)
        if n.output(0) in self._absorbed:
            return                                       # the bias of the MatMul's dense
        self.floats(a, b)
        if self.opset < 7 and n.attrs.get("broadcast", 0):
            b = self._legacy(a, b, n.attrs.get("axis"))
        combine(a, b, n.output(0))

    def _legacy(self, a: str, b: str, axis: int | None) -> str:
        out = self.tmp()
        self.emit("legacy_broadcast", {"b": b, "like": a}, {"y": out}, {"axis": axis})
        return out

    def _Add(self, n: _Node) -> None:
        self._binary(n, self.add)

    def _Mul(self, n: _Node) -> None:
        self._binary(n, self.mul)

    def _Concat(self, n: _Node) -> None:
        parts = {f"x{k}": name for k, name in enumerate(n.inputs)}
        self.emit("concat", parts, {"y": n.output(0)}, {"axis": int(n.attrs.get("axis", 1))})

    def _Flatten(self, n: _Node) -> None:
        self.move("flatten", n.input(0), n.output(0), axis=int(n.attrs.get("axis", 1)))

    def _Reshape(self, n: _Node) -> None:
        allowzero = int(n.attrs.get("allowzero", 0))
        if self.opset < 5:
            self.move("reshape", n.input(0), n.output(0), shape=list(n.attrs["shape"]), allowzero=allowzero)
            return
        self.emit("reshape", {"x": n.input(0), "shape": n.input(1)}, {"y": n.output(0)}, {"allowzero": allowzero})

    def _Dropout(self, n: _Node) -> None:
        """Inference: the identity; the mask (if asked for) is all ones."""
        training = n.input(2)
        if training:
            flag = self.const(training)
            if flag is None or bool(np.asarray(flag).ravel()[0]):
                raise n.refuse("training_mode must be a constant false: only inference (the identity) is supported")
        self.move("identity", n.input(0), n.output(0))
        if n.output(1):
            dtype = np.dtype(bool) if self.opset >= 10 else None
            elem = self.elem(n.input(0))
            dtype = dtype or np.dtype(helper.tensor_dtype_to_np_dtype(elem or TensorProto.FLOAT))
            self.move("mask", n.input(0), n.output(1), dtype=dtype)

    def _Identity(self, n: _Node) -> None:
        self.move("identity", n.input(0), n.output(0))

    def _Transpose(self, n: _Node) -> None:
        perm = n.attrs.get("perm")
        if perm is None:
            rank = self.rank(n.input(0))
            if rank is None:
                raise n.refuse("no perm and an input of unknown rank")
            perm = list(range(rank))[::-1]
        self.move("transpose", n.input(0), n.output(0), perm=[int(k) for k in perm])

    def _squeeze(self, n: _Node, op: str) -> None:
        """Axes from the attribute (before opset 13) or the second input (a constant, or not)."""
        ins = {"x": n.input(0)} | ({"axes": n.input(1)} if n.input(1) else {})
        attrs = {"axes": list(n.attrs["axes"])} if "axes" in n.attrs else {}
        if op == "unsqueeze" and not attrs and not n.input(1):
            raise n.refuse("Unsqueeze needs axes")
        self.emit(op, ins, {"y": n.output(0)}, attrs)

    def _Squeeze(self, n: _Node) -> None:
        self._squeeze(n, "squeeze")

    def _Unsqueeze(self, n: _Node) -> None:
        self._squeeze(n, "unsqueeze")

    def _LRN(self, n: _Node) -> None:
        self.floats(n.input(0))
        self.rank_is(n.input(0), 4, "only (N, C, H, W) inputs are supported")
        attrs = {"size": int(n.attrs["size"]), "alpha": float(n.attrs.get("alpha", 1e-4)),
                 "beta": float(n.attrs.get("beta", 0.75)), "bias": float(n.attrs.get("bias", 1.0))}
        self.emit("lrn", {"x": n.input(0)}, {"y": n.output(0)}, attrs)

    def _Constant(self, n: _Node) -> None:
        if len(n.attrs) != 1:
            raise SpecError(f"Constant (node {n.label}) must carry exactly one value attribute, got {sorted(n.attrs)}")
        (key, v), = n.attrs.items()
        if key == "value":
            value = _array(v, f"node {n.label} attribute 'value'")
        else:
            value = np.array(v, np.float32 if key.startswith("value_float") else np.int64)
        self.constants[n.output(0)] = value
        self.metas[n.output(0)] = inference.meta(value)

    def _ConstantOfShape(self, n: _Node) -> None:
        t = n.attrs.get("value")
        value = np.zeros(1, np.float32) if t is None else _array(t, f"node {n.label} attribute 'value'")
        if value.size != 1:
            raise SpecError(f"ConstantOfShape (node {n.label}): 'value' must hold one element, got {value.shape}")
        self.emit("fill", {"shape": n.input(0)}, {"y": n.output(0)}, {"value": value})

    def _LSTM(self, n: _Node) -> None:
        """ONNX LSTM (forward, default activations) as the spec's lstm, outputs reshaped."""
        self._lstm_supported(n)
        x, w, r, b, h0, c0 = (n.input(k) for k in (0, 1, 2, 3, 5, 6))
        self.floats(x, w, r, b, h0, c0)
        layout = int(n.attrs.get("layout", 0))
        self._lstm_shapes(n, layout)
        if layout:
            x = self.move("transpose", x, perm=[1, 0, 2])             # (N, T, I) -> (T, N, I)
        ins = {"x": x, "h0": self._state(h0, x, w, layout), "c0": self._state(c0, x, w, layout),
               "w_ih": self.move("gates", w), "w_hh": self.move("gates", r)}
        if b:
            halves = {"wb": self.tmp(), "rb": self.tmp()}
            self.emit("lstm_bias", {"b": b}, halves)
            ins["b"] = self.tmp()
            self.add(halves["wb"], halves["rb"], ins["b"])
        else:
            ins["b"] = self.tmp()
            self.emit("zero_bias", {"w": w}, {"y": ins["b"]})
        outs = {k: self.tmp() for k in ("y", "h", "c")}
        self.emit("lstm", ins, outs)
        self._lstm_outputs(n, outs, layout)

    def _lstm_supported(self, n: _Node) -> None:
        if n.attrs.get("direction", "forward") != "forward":
            raise n.refuse(f"direction={n.attrs['direction']!r}: only the forward direction is supported")
        if n.attrs.get("activations", ["Sigmoid", "Tanh", "Tanh"]) != ["Sigmoid", "Tanh", "Tanh"]:
            raise n.refuse(f"activations={n.attrs['activations']}: only the default (Sigmoid, Tanh, Tanh)")
        if int(n.attrs.get("input_forget", 0)):
            raise n.refuse("input_forget=1 (coupled gates) is not supported")
        if n.input(4) or n.input(7):
            raise n.refuse("sequence_lens and peepholes (P) are not supported")

    def _lstm_shapes(self, n: _Node, layout: int) -> None:
        """The known shapes of X, W, R, B, initial_h and initial_c fit one H: ONNX's (T, N, I) (layout
        0; 1: (N, T, I)), (1, 4H, I), (1, 4H, H), (1, 8H), (1, N, H) (layout 1: (N, 1, H)); H is
        ``hidden_size`` where given, else R's last dim. ShapeError naming the ONNX input, or
        AttrError for a hidden_size the weights contradict."""
        r = self.shape(n.input(2))
        hid = n.attrs.get("hidden_size", None if r is None or len(r) != 3 else r[2])
        if hid is None:
            return
        if r is not None and len(r) == 3 and r[2] not in (None, hid):
            raise AttrError(f"ONNX operator LSTM (node {n.label}): hidden_size={hid}, but R {tuple(r)} is for "
                            f"H = {r[2]}", argument="hidden_size")
        x = self.shape(n.input(0))
        n_in = None if x is None or len(x) != 3 else x[2]
        batch = None if x is None or len(x) != 3 else x[1 - layout]
        state = (batch, 1, hid) if layout else (1, batch, hid)
        wants = {1: ("W", (1, 4 * hid, n_in)), 2: ("R", (1, 4 * hid, hid)), 3: ("B", (1, 8 * hid)),
                 5: ("initial_h", state), 6: ("initial_c", state)}
        for k, (name, want) in wants.items():
            got = self.shape(n.input(k)) if n.input(k) else None
            if got is not None and not _fits(tuple(got), want):
                shown = tuple("?" if d is None else d for d in want)
                raise ShapeError(f"ONNX operator LSTM (node {n.label}): {name} must have shape {shown} "
                                 f"(H = {hid}), got {tuple(got)}", argument=name)

    def _state(self, given: str, x: str, w: str, layout: int) -> str:
        """h0 or c0 as (N, H): ONNX's (1, N, H) (layout 0) or (N, 1, H) squeezed, or zeros."""
        if given:
            return self.move("squeeze", given, axis=layout)
        out = self.tmp()
        self.emit("zero_state", {"x": x, "w": w}, {"y": out})
        return out

    def _lstm_outputs(self, n: _Node, outs: dict[str, str], layout: int) -> None:
        """Y (T, 1, N, H) or (N, T, 1, H); Y_h, Y_c (1, N, H) or (N, 1, H)."""
        if n.output(0):
            y = outs["y"] if not layout else self.move("transpose", outs["y"], perm=[1, 0, 2])
            self.move("unsqueeze", y, n.output(0), axis=1 if not layout else 2)
        for k, key in ((1, "h"), (2, "c")):
            if n.output(k):
                self.move("unsqueeze", outs[key], n.output(k), axis=layout)


def _declared(v: Value) -> inference.Meta | None:
    """A graph input as declared (None where a dimension is dynamic), within the tensor limit."""
    m = inference.declared(v)
    if m is not None:
        limit(m.shape, m.dtype, f"graph input {v.name!r}")
    return m


def _fits(got: tuple, want: tuple) -> bool:
    """Shapes agree where both dims are known (None: unknown)."""
    return len(got) == len(want) and all(g is None or w is None or g == w for g, w in zip(got, want, strict=True))


def _array(t: TensorProto, where: str) -> np.ndarray:
    """A tensor's data as NumPy (its size was checked when the file was read)."""
    if t.data_type in (TensorProto.STRING, TensorProto.UNDEFINED):
        raise UnsupportedOnnxOp(f"{where}: {helper.tensor_dtype_to_string(t.data_type)} tensors are not supported")
    try:
        return numpy_helper.to_array(t)
    except Exception as exc:
        raise SpecError(f"{where}: its data does not match its declared type and shape ({exc})") from None
