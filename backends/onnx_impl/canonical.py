"""The canonical ONNX model of a concept: what a user of ONNX Runtime writes without nutshell.

One node of the standard operator where ONNX has one (``Conv`` with its pads, ``MaxPool``,
``AveragePool``, ``GlobalAveragePool``, ``LRN``, ``Relu``, ``Sigmoid``, ``Tanh``, ``Softmax``,
``LogSoftmax``, ``Gemm``, ``SoftmaxCrossEntropyLoss``, ``LSTM``), else the shortest chain of
standard nodes (a layer is ``Gemm`` then its activation). The models are built here with
``onnx.helper`` alone, not with the backend's graph builder (``graph.py``), so that a backend
graph slower than the obvious model shows in the bench as a ratio above 1.

A concept with no standard operator has no canonical model (None): ``maxout``,
``binary_cross_entropy``, ``convolve2d`` (the kernel flip), ``conv2d_fft``, ``inception``. ONNX has
no gradient operators, so there is no canonical vjp either.

The spec's inputs become the operator's as a user would prepare them once, outside the timed call:
``LSTM`` takes its gate blocks in the order (i, o, f, c) where the spec stacks (i, f, g, o), its
weights with a leading direction axis, and the two biases ``[Wb; Rb]`` (here ``[b; 0]``).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx
from onnx import helper

OPSET = 18
Feeds = dict[str, np.ndarray]
Built = tuple[list[onnx.NodeProto], Feeds, list[str]]      # nodes, their feeds, the graph's outputs
_ACTIVATIONS = {"relu": "Relu", "sigmoid": "Sigmoid", "tanh": "Tanh"}
_ONNX_GATES = [0, 3, 1, 2]                                   # spec (i, f, g, o) -> ONNX (i, o, f, c)


def model(concept: str, attrs: dict, inputs: Feeds) -> tuple[onnx.ModelProto, Feeds] | None:
    """The checked canonical model of ``concept`` for full ``attrs`` and these inputs, with its
    feeds; None when ONNX has no standard operator for it."""
    make = _BUILDERS.get(concept)
    if make is None:
        return None
    nodes, feeds, outputs = make(attrs, inputs)
    dtype = helper.np_dtype_to_tensor_dtype(next(v.dtype for v in inputs.values() if v.dtype.kind == "f"))
    graph = helper.make_graph(
        nodes, f"canonical_{concept}",
        [helper.make_tensor_value_info(k, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape) for k, v in feeds.items()],
        [helper.make_tensor_value_info(k, dtype, None) for k in outputs])
    opsets = [helper.make_opsetid("", OPSET)]
    m = helper.make_model(graph, opset_imports=opsets, producer_name="nutshell-canonical",
                          ir_version=helper.find_min_ir_version_for(opsets))
    m = onnx.shape_inference.infer_shapes(m, check_type=True, strict_mode=True)   # the outputs' shapes
    onnx.checker.check_model(m, full_check=True)
    return m, feeds


def ops(m: onnx.ModelProto) -> str:
    """The model's operators in order: "Conv", "Gemm+Relu"."""
    return "+".join(n.op_type for n in m.graph.node)


def _node(op: str, ins: list[str], outs: list[str], **attrs) -> onnx.NodeProto:
    return helper.make_node(op, ins, outs, **attrs)


def _unary(op: str) -> Callable[[dict, Feeds], Built]:
    return lambda a, v: ([_node(op, ["x"], ["y"])], {"x": v["x"]}, ["y"])


def _axis(op: str) -> Callable[[dict, Feeds], Built]:
    return lambda a, v: ([_node(op, ["x"], ["y"], axis=a["axis"])], {"x": v["x"]}, ["y"])


def _dense(a: dict, v: Feeds) -> Built:
    """y = x·w + b: one Gemm, or one MatMul without a bias."""
    if "b" not in v:
        return [_node("MatMul", ["x", "w"], ["y"])], dict(v), ["y"]
    return [_node("Gemm", ["x", "w", "b"], ["y"])], dict(v), ["y"]


def _layer(a: dict, v: Feeds) -> Built:
    """act(x·w + b): Gemm, then the activation's node (none for the identity)."""
    act = _ACTIVATIONS.get(a["activation"])
    if act is None:
        return [_node("Gemm", ["x", "w", "b"], ["y"])], dict(v), ["y"]
    return [_node("Gemm", ["x", "w", "b"], ["z"]), _node(act, ["z"], ["y"])], dict(v), ["y"]


def _logistic_regression(a: dict, v: Feeds) -> Built:
    """σ(x·w + b) with w (I) and b (): MatMul, Add, Sigmoid."""
    return ([_node("MatMul", ["x", "w"], ["z"]), _node("Add", ["z", "b"], ["s"]), _node("Sigmoid", ["s"], ["p"])],
            dict(v), ["p"])


def _softmax_regression(a: dict, v: Feeds) -> Built:
    """softmax(x·w + b): Gemm, Softmax."""
    return [_node("Gemm", ["x", "w", "b"], ["z"]), _node("Softmax", ["z"], ["p"], axis=-1)], dict(v), ["p"]


def _cross_entropy(a: dict, v: Feeds) -> Built:
    """The batch mean of −log softmax(logits)[label]: one SoftmaxCrossEntropyLoss."""
    return [_node("SoftmaxCrossEntropyLoss", ["logits", "labels"], ["loss"], reduction="mean")], dict(v), ["loss"]


def _conv2d(a: dict, v: Feeds) -> Built:
    """One Conv; pads [top, left, bottom, right] are ONNX's own order."""
    names = ["x", "w", "b"] if "b" in v else ["x", "w"]
    node = _node("Conv", names, ["y"], strides=a["stride"], pads=a["pads"], dilations=a["dilation"],
                 group=a["groups"], kernel_shape=list(v["w"].shape[2:]))
    return [node], dict(v), ["y"]


def _max_pool2d(a: dict, v: Feeds) -> Built:
    node = _node("MaxPool", ["x"], ["y"], kernel_shape=a["kernel"], strides=a["stride"], pads=a["pads"],
                 dilations=a["dilation"], ceil_mode=int(a["ceil_mode"]))
    return [node], {"x": v["x"]}, ["y"]


def _avg_pool2d(a: dict, v: Feeds) -> Built:
    node = _node("AveragePool", ["x"], ["y"], kernel_shape=a["kernel"], strides=a["stride"], pads=a["pads"],
                 ceil_mode=int(a["ceil_mode"]), count_include_pad=int(a["count_include_pad"]))
    return [node], {"x": v["x"]}, ["y"]


def _lrn(a: dict, v: Feeds) -> Built:
    node = _node("LRN", ["x"], ["y"], size=a["size"], alpha=a["alpha"], beta=a["beta"], bias=a["bias"])
    return [node], {"x": v["x"]}, ["y"]


def _lstm_feeds(v: Feeds, h: str, c: str) -> Feeds:
    """W (1, 4H, I), R (1, 4H, H), B (1, 8H) = [b; 0] in ONNX's gate order; initial_h, initial_c
    (1, N, H) from the spec's inputs ``h`` and ``c``."""
    hidden = v[h].shape[1]

    def gates(a: np.ndarray) -> np.ndarray:
        return np.concatenate([a[k * hidden:(k + 1) * hidden] for k in _ONNX_GATES])   # (4H, ...)
    b = gates(v["b"])
    return {"W": gates(v["w_ih"])[None], "R": gates(v["w_hh"])[None], "B": np.concatenate([b, np.zeros_like(b)])[None],
            "initial_h": v[h][None], "initial_c": v[c][None]}


def _lstm(a: dict, v: Feeds) -> Built:
    """One LSTM node over the sequence x (T, N, I): outputs Y (T, 1, N, H), Y_h and Y_c (1, N, H)."""
    node = _node("LSTM", ["X", "W", "R", "B", "", "initial_h", "initial_c"], ["Y", "Y_h", "Y_c"],
                 hidden_size=v["h0"].shape[1])
    return [node], {"X": v["x"], **_lstm_feeds(v, "h0", "c0")}, ["Y", "Y_h", "Y_c"]


def _lstm_cell(a: dict, v: Feeds) -> Built:
    """One step: the LSTM node over a sequence of one, x (N, I) as X (1, N, I); outputs Y_h, Y_c."""
    node = _node("LSTM", ["X", "W", "R", "B", "", "initial_h", "initial_c"], ["", "Y_h", "Y_c"],
                 hidden_size=v["h"].shape[1])
    return [node], {"X": v["x"][None], **_lstm_feeds(v, "h", "c")}, ["Y_h", "Y_c"]


_BUILDERS: dict[str, Callable[[dict, Feeds], Built]] = {
    "sigmoid": _unary("Sigmoid"), "relu": _unary("Relu"), "tanh": _unary("Tanh"),
    "softmax": _axis("Softmax"), "log_softmax": _axis("LogSoftmax"),
    "dense": _dense, "layer": _layer, "logistic_regression": _logistic_regression,
    "softmax_regression": _softmax_regression, "cross_entropy": _cross_entropy,
    "conv2d": _conv2d, "max_pool2d": _max_pool2d, "avg_pool2d": _avg_pool2d,
    "global_avg_pool2d": _unary("GlobalAveragePool"), "lrn": _lrn, "lstm": _lstm, "lstm_cell": _lstm_cell,
}
