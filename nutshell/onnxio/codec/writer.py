"""Spec models as ONNX models (backend-neutral): the graph of spec/models.yaml, one ONNX subgraph
per spec node.

>>> from nutshell.onnxio.codec import writer as onnx_export
>>> from nutshell.spec import models
>>> proto = onnx_export.export(models.get("digits_cnn"), params)    # params None: the spec's init
>>> onnx.save(proto, "digits.onnx")

The model has one input ``x`` (N, *input) and one output ``logits``, N a dynamic dimension
("N"); every parameter is an initializer of its own name. Opset :data:`OPSET`. Each ONNX node's
doc_string names the spec concept (or structural op) and the spec node it implements; the model
carries producer "nutshell" and its version, and metadata_props ``nutshell.spec_version``,
``nutshell.model`` and ``nutshell.dims``. The result passes the ONNX checker with full check and
strict shape inference. Nothing is computed here: LSTM weights are only reordered into ONNX's gate
blocks (i, o, f, c) and its bias padded with ONNX's second bias vector Rb = 0.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping

import numpy as np
import onnx
from onnx import helper, numpy_helper

from nutshell import spec as spec_mod
from nutshell.errors import ShapeError, SpecError
from nutshell.spec import models as spec_models
from nutshell.spec.models import INPUT, ModelSpec, Node
from nutshell.version import __version__

OPSET = 18
BATCH = "N"
_SPEC_GATES = np.argsort((0, 2, 3, 1))   # ONNX block j (i, o, f, c) is spec block _SPEC_GATES[j] of (i, f, g, o)


class _Builder:
    """ONNX nodes and initializers collected for one spec node at a time (its doc string)."""

    def __init__(self, dtype: np.dtype, params: Mapping[str, np.ndarray]):
        self.dtype, self.params = dtype, params
        self.nodes: list[onnx.NodeProto] = []
        self.inits = [numpy_helper.from_array(a, name) for name, a in params.items()]
        self.doc = ""
        self._count = 0

    def fresh(self, hint: str) -> str:
        self._count += 1
        return f"{hint}_{self._count}"

    def op(self, op_type: str, *inputs: str, outputs: int = 1, out: str | None = None, **attrs) -> str | list[str]:
        """One ONNX node; returns its output name (a list when ``outputs`` > 1)."""
        names = [out] if out and outputs == 1 else [self.fresh(op_type.lower()) for _ in range(outputs)]
        self.nodes.append(helper.make_node(op_type, list(inputs), names, name=self.fresh(op_type), doc_string=self.doc,
                                           **attrs))
        return names[0] if outputs == 1 else names

    def const(self, array: np.ndarray, hint: str) -> str:
        name = self.fresh(hint)
        self.inits.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def ints(self, values: list[int]) -> str:
        return self.const(np.array(values, np.int64), "shape")

    def param(self, name: str, node: Node) -> np.ndarray:
        """The value of a parameter an exporter must rearrange (LSTM weights, flipped kernels)."""
        if name not in self.params:
            raise SpecError(f"export: node {node.id} ({node.op}) needs '{name}' to be a parameter")
        return self.params[name]


# --- one exporter per concept: (builder, node, input value names) -> {output: value name} ---------

def _conv2d(b: _Builder, node: Node, v: dict[str, str]) -> dict[str, str]:
    a = node.attrs
    args = [v["x"], v["w"]] + ([v["b"]] if "b" in v else [])
    return {"y": b.op("Conv", *args, strides=a["stride"], pads=a["pads"], dilations=a["dilation"], group=a["groups"])}


def _convolve2d(b: _Builder, node: Node, v: dict[str, str]) -> dict[str, str]:
    """True convolution: Conv with the kernel flipped on both spatial axes (a new initializer)."""
    flipped = b.const(np.ascontiguousarray(b.param(node.inputs["w"], node)[:, :, ::-1, ::-1]), "flipped")
    return _conv2d(b, node, {**v, "w": flipped})


def _pool_attrs(a: dict) -> dict:
    return {"kernel_shape": a["kernel"], "strides": a["stride"], "pads": a["pads"], "ceil_mode": int(a["ceil_mode"])}


def _dense(b: _Builder, node: Node, v: dict[str, str]) -> str:
    return b.op("Gemm", v["x"], v["w"], *([v["b"]] if "b" in v else []))


def _layer(b: _Builder, node: Node, v: dict[str, str]) -> dict[str, str]:
    act = {"relu": "Relu", "sigmoid": "Sigmoid", "tanh": "Tanh", "identity": "Identity"}[node.attrs["activation"]]
    return {"y": b.op(act, _dense(b, node, v))}


def _inception(b: _Builder, node: Node, v: dict[str, str]) -> dict[str, str]:
    """1×1; 1×1 → 3×3 (pad 1); 1×1 → 5×5 (pad 2); 3×3 max pool (stride 1, pad 1) → 1×1; ReLU after
    every convolution; concatenated on channels in that order."""
    def conv(x: str, w: str, pad: int) -> str:
        attrs = {"strides": [1, 1], "pads": [pad] * 4, "dilations": [1, 1], "group": 1}
        return b.op("Relu", b.op("Conv", x, v[w], v["b" + w[1:]], **attrs))

    pool = b.op("MaxPool", v["x"], kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1])
    branches = [conv(v["x"], "w1", 0), conv(conv(v["x"], "w3r", 0), "w3", 1), conv(conv(v["x"], "w5r", 0), "w5", 2),
                conv(pool, "wp", 0)]
    return {"y": b.op("Concat", *branches, axis=1)}


def _lstm(b: _Builder, node: Node, v: dict[str, str]) -> dict[str, str]:
    """ONNX LSTM: W, R reordered to (i, o, f, c) with a leading direction axis; B = [b; 0]."""
    w_ih, w_hh, bias = (b.param(node.inputs[k], node) for k in ("w_ih", "w_hh", "b"))
    hidden = w_hh.shape[1]

    def onnx_order(a: np.ndarray) -> np.ndarray:                     # (4H, …) -> (1, 4H, …)
        return a.reshape(4, hidden, -1)[_SPEC_GATES].reshape(1, 4 * hidden, *a.shape[1:])

    rb = np.zeros_like(bias)
    ws = [b.const(onnx_order(w), f"{node.inputs[k]}_onnx") for w, k in ((w_ih, "w_ih"), (w_hh, "w_hh"))]
    bb = b.const(np.concatenate([onnx_order(bias)[0], rb])[None], f"{node.inputs['b']}_onnx")  # (1, 8H)
    h0, c0 = (b.op("Unsqueeze", v[k], b.ints([0])) if v[k] else "" for k in ("h0", "c0"))  # (1, N, H); "" = zeros
    y, yh, yc = b.op("LSTM", v["x"], *ws, bb, "", h0, c0, outputs=3, hidden_size=hidden)
    return {"y": b.op("Squeeze", y, b.ints([1])), "h": b.op("Squeeze", yh, b.ints([0])),
            "c": b.op("Squeeze", yc, b.ints([0]))}


def _unary(op_type: str) -> Callable:
    return lambda b, node, v: {"y": b.op(op_type, v["x"])}


def _softmax(op_type: str) -> Callable:
    return lambda b, node, v: {"y": b.op(op_type, v["x"], axis=node.attrs["axis"])}


EXPORTERS: dict[str, Callable[[_Builder, Node, dict[str, str]], dict[str, str]]] = {
    "relu": _unary("Relu"), "sigmoid": _unary("Sigmoid"), "tanh": _unary("Tanh"),
    "softmax": _softmax("Softmax"), "log_softmax": _softmax("LogSoftmax"),
    "dense": lambda b, node, v: {"y": _dense(b, node, v)},
    "layer": _layer,
    "softmax_regression": lambda b, node, v: {"p": b.op("Softmax", _dense(b, node, v), axis=-1)},
    "conv2d": _conv2d, "conv2d_fft": _conv2d, "convolve2d": _convolve2d,
    "max_pool2d": lambda b, node, v: {"y": b.op("MaxPool", v["x"], dilations=node.attrs["dilation"],
                                                **_pool_attrs(node.attrs))},
    "avg_pool2d": lambda b, node, v: {"y": b.op("AveragePool", v["x"], **_pool_attrs(node.attrs),
                                                count_include_pad=int(node.attrs["count_include_pad"]))},
    "global_avg_pool2d": _unary("GlobalAveragePool"),
    "lrn": lambda b, node, v: {"y": b.op("LRN", v["x"], **node.attrs)},
    "inception": _inception,
    "lstm": _lstm,
}


# --- structural nodes -----------------------------------------------------------------------------

def _structural(b: _Builder, node: Node, v: dict[str, str]) -> str:
    """flatten: Flatten(axis 1); reshape: Reshape to [0, *shape] (0 keeps N); transpose; zeros: a
    ConstantOfShape of (N, *shape), N read from ``like`` at run time."""
    a = node.attrs
    if node.op == "flatten":
        return b.op("Flatten", v["x"], axis=1)
    if node.op == "reshape":
        return b.op("Reshape", v["x"], b.ints([0, *a["shape"]]))
    if node.op == "transpose":
        return b.op("Transpose", v["x"], perm=list(a["perm"]))
    n = b.op("Slice", b.op("Shape", v["like"]), b.ints([0]), b.ints([1]))
    dims = b.op("Concat", n, b.ints(list(a["shape"])), axis=0)
    zero = numpy_helper.from_array(np.zeros(1, b.dtype), "zero")
    return b.op("ConstantOfShape", dims, value=zero)


# --- the model ------------------------------------------------------------------------------------

def _params(model: ModelSpec, params: Mapping[str, np.ndarray] | None, seed: int, dtype: str | None
            ) -> dict[str, np.ndarray]:
    """The parameters: every one the spec names, of its shape, all float32 or all float64."""
    if params is None:
        return spec_models.init_params(model, seed, dtype or "float32")
    want = {p.name: p.shape for p in model.params}
    if set(params) != set(want):
        missing, extra = sorted(set(want) - set(params)), sorted(set(params) - set(want))
        raise ShapeError(f"parameters must be exactly {sorted(want)}: missing {missing}, unknown {extra}",
                         concept=model.id, argument=(missing or extra)[0])
    kinds = {str(np.asarray(a).dtype) for a in params.values()}
    if dtype is None and (len(kinds) != 1 or not kinds <= {"float32", "float64"}):
        raise ShapeError(f"parameters must all be float32 or all float64, got {sorted(kinds)}", concept=model.id,
                         argument="params")
    out = {}
    for name, shape in want.items():
        a = np.asarray(params[name])
        if a.shape != shape:
            raise ShapeError(f"must have shape {shape}, got {a.shape}", concept=model.id, argument=name)
        out[name] = np.ascontiguousarray(a, dtype=dtype or a.dtype)
    return out


def export(model: ModelSpec, params: Mapping[str, np.ndarray] | None = None, seed: int = 0,
           dtype: str | None = None) -> onnx.ModelProto:
    """The spec model as a checked ONNX model (see the module docstring)."""
    p = _params(model, params, seed, dtype)
    dt = np.dtype(next(iter(p.values())).dtype) if p else np.dtype(dtype or "float32")
    b = _Builder(dt, p)
    names = {INPUT: INPUT, **{k: k for k in p}}
    zeros: dict[str, Node] = {}                  # zeros nodes not exported yet
    for node in model.nodes:
        v = {arg: _value(b, node, arg, ref, names, zeros) for arg, ref in node.inputs.items()}
        if node.op == "zeros":
            zeros[node.id] = node
            continue
        if node.structural:
            b.doc = f"nutshell structural op {node.op} (spec node '{node.id}')"
            names[node.id] = _structural(b, node, v)
            continue
        if node.op not in EXPORTERS:
            raise SpecError(f"export: concept '{node.op}' (node {node.id} of {model.id}) has no ONNX mapping")
        b.doc = f"nutshell spec concept {node.op} (spec node '{node.id}')"
        for out, value in EXPORTERS[node.op](b, node, v).items():
            names[f"{node.id}.{out}"] = value
    return _finish(model, b, names[model.output])


def _value(b: _Builder, node: Node, arg: str, ref: str, names: dict[str, str], zeros: dict[str, Node]) -> str:
    """The ONNX name of a node's input. A zeros node is exported where it is first needed, and not
    at all for an LSTM's initial state, which ONNX takes as zeros when it is left out ("")."""
    if ref not in zeros:
        return names[ref]
    if node.op == "lstm" and arg in ("h0", "c0"):
        return ""
    z = zeros.pop(ref)
    b.doc = f"nutshell structural op zeros (spec node '{z.id}')"
    names[ref] = _structural(b, z, {"like": names[z.inputs["like"]]})
    return names[ref]


def _finish(model: ModelSpec, b: _Builder, logits: str) -> onnx.ModelProto:
    b.doc = "nutshell: the model's output"
    b.op("Identity", logits, out="logits")
    used = {i for n in b.nodes for i in n.input}
    b.inits = [t for t in b.inits if t.name in used]       # parameters only rearranged (LSTM) are not kept
    elem = helper.np_dtype_to_tensor_dtype(b.dtype)
    out_shape = [BATCH] if model.loss == "binary_cross_entropy" else [BATCH, model.classes]
    x = helper.make_tensor_value_info(INPUT, elem, [BATCH, *model.input_shape])
    y = helper.make_tensor_value_info("logits", elem, out_shape)
    graph = helper.make_graph(b.nodes, model.id, [x], [y], initializer=b.inits)
    # The IR version the opset needs, not the onnx package's newest: onnx 1.23 writes IR 14 by
    # default, which onnxruntime before 1.31 refuses to load ("max supported IR version: 13").
    opsets = [helper.make_opsetid("", OPSET)]
    proto = helper.make_model(graph, opset_imports=opsets, ir_version=helper.find_min_ir_version_for(opsets),
                              producer_name="nutshell", producer_version=__version__,
                              doc_string=f"{model.title}: {model.description}")
    helper.set_model_props(proto, {"nutshell.spec_version": spec_mod.load().version, "nutshell.model": model.id,
                                   "nutshell.dims": json.dumps(model.dims, sort_keys=True)})
    try:
        onnx.checker.check_model(proto, full_check=True)
        return onnx.shape_inference.infer_shapes(proto, check_type=True, strict_mode=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise SpecError(f"export of {model.id}: the ONNX checker rejects the result (a bug in the exporter): "
                        f"{exc}") from None
