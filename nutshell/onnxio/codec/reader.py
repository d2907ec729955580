"""ONNX models as graphs of spec concepts and structural steps (backend-neutral).

>>> from nutshell.onnxio.codec import reader as onnx_import
>>> g = onnx_import.parse("googlenet.onnx")      # read, validated and lowered once
>>> [s.op for s in g.steps][:3]
['conv2d', 'relu', 'max_pool2d']
>>> b.import_onnx(g).run({"data_0": x})          # {output name: array}, on backend b's own ops

:func:`parse` reads a file safely (:mod:`nutshell.onnxio.codec.files`), then refuses, before anything
runs: a graph with a cycle, a node reading a value nothing defines, a value defined twice
(SpecError); an opset outside :data:`lowering.OPSETS`, an operator outside :data:`SUPPORTED`, an
attribute value or element type the spec cannot express (UnsupportedOnnxOp, naming the operator and
the node); a model the ONNX checker rejects (SpecError); a graph input with a negative dimension
(SpecError); an LSTM whose weights do not fit each other or its hidden_size (ShapeError,
AttrError). Every value's shape and size is inferred before anything is allocated (inference.py):
a tensor over the limit, or a concept whose inputs do not fit it, is refused at import, naming the
node. Then every ONNX node becomes one or more :class:`Step`
(nutshell/onnxio/codec/lowering.py): a spec concept run by ``backend.run``, or a structural step
(:data:`STRUCTURAL`, nutshell/onnxio/codec/structural.py) that only moves numbers around in NumPy.
Structural steps whose inputs are all constant are folded at parse time; attrs that depend on the
input shapes (auto_pad's pads, a grouped convolution's groups) are resolved when a step runs. The
supported operators are those of the issue plus Transpose, Squeeze and Unsqueeze (plumbing that
exported LSTM models use). All arithmetic is the backend's, one rounding per IEEE operation:

* Gemm and MatMul (and a MatMul followed by Add of a constant bias) are ``dense``; a batched
  MatMul is a grouped 1×1 ``conv2d`` (groups = batch, K input channels per group);
* Add(a, b), after broadcasting: ``conv2d`` of x = stack(a, b) as (1, 2, M, 1) with w = ones
  (1, 2, 1, 1), a two-term dot product a·1 + b·1, rounded once;
* Mul(a, b), after broadcasting: ``conv2d`` of x = a as (1, M, 1, 1) with w = b as (M, 1, 1, 1),
  groups = M (one product each); by a one-element b: x as (1, 1, M, 1), w (1, 1, 1, 1);
* Gemm's alpha ≠ 1 and beta ≠ 1 scale A and C that way; C joins as ``dense``'s bias when it is a
  row vector and beta = 1, else through Add;
* LSTM: ONNX's gate blocks (i, o, f, c) are reordered to the spec's (i, f, g, o); its two bias
  vectors become one, b = Wb + Rb, through Add;
* Softmax / LogSoftmax: the concept on the node's axis (before opset 13: on the input coerced to
  2-D at the axis, as ONNX defined it then).
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import onnx

from nutshell.errors import SpecError, UnsupportedOnnxOp
from nutshell.onnxio.codec import files as onnx_files
from nutshell.onnxio.codec import inference
from nutshell.onnxio.codec.graph import Graph, Step, Value, at_node, resolve
from nutshell.onnxio.codec.lowering import OPSETS, SUPPORTED, Lowering, label
from nutshell.onnxio.codec.structural import STRUCTURAL, apply

__all__ = ["STRUCTURAL", "SUPPORTED", "Graph", "Imported", "Step", "Value", "execute", "graph_of", "parse",
           "run_steps"]


class Imported:
    """An imported graph on one backend: :meth:`run` executes its steps with the backend's ops."""

    def __init__(self, graph: Graph, backend):
        self.graph, self.backend = graph, backend

    @property
    def inputs(self) -> tuple[Value, ...]:
        return self.graph.inputs

    @property
    def outputs(self) -> tuple[str, ...]:
        return self.graph.outputs

    def run(self, feeds: Mapping[str, Any], every: bool = False) -> dict[str, np.ndarray]:
        """{output name: array}; with ``every``, also each value an ONNX node defines (those a
        lowering fused away excepted), for node-by-node comparisons."""
        values = execute(self.graph, self.graph.check_feeds(feeds), self.backend.run)
        out = collect(self.graph, values, every)
        return {k: np.array(v) if k in self.graph.outputs else np.asarray(v) for k, v in out.items()}

    def __repr__(self) -> str:
        return f"<imported ONNX graph {self.graph.name!r} on {self.backend.name}, {len(self.graph.steps)} steps>"


def collect(graph: Graph, values: dict[str, Any], every: bool) -> dict[str, Any]:
    names = list(graph.outputs) + ([n for n in graph.values if n not in graph.outputs] if every else [])
    return {n: values[n] for n in names if n in values}


def execute(graph: Graph, feeds: dict[str, Any], concept: Callable[[str, dict, dict], dict],
            structural: Callable[[Step, dict], dict] | None = None,
            limits: inference.Limits = inference.LIMITS) -> dict[str, Any]:
    """Every value of the graph: its constants, the feeds, then each step's results in order. Every
    value's size, inferred from the feeds' shapes, passes ``limits`` before the first step runs."""
    inference.infer(graph, {k: limits.meta(v) for k, v in feeds.items()}, limits)
    return run_steps(graph.steps, {**graph.constants, **feeds}, concept, structural, limits)


def run_steps(steps: Sequence[Step], values: dict[str, Any], concept: Callable[[str, dict, dict], dict],
              structural: Callable[[Step, dict], dict] | None = None,
              limits: inference.Limits = inference.LIMITS) -> dict[str, Any]:
    """Run ``steps`` on ``values`` (which they extend and which is returned). ``concept(op, inputs,
    attrs)`` runs a spec concept (``backend.run``); ``structural(step, inputs)`` a structural step
    (default: :func:`nutshell.onnxio.codec.structural.apply`). Each step's results pass ``limits``
    on its actual inputs before it runs. An error names the ONNX node it happened in."""
    for step in steps:
        ins = {arg: values[name] for arg, name in step.inputs}
        with at_node(step):
            inference.check_step(step, ins, limits)
            if step.structural:
                outs = structural(step, ins) if structural else apply(step.op, ins, step.attrs)
            else:
                outs = concept(step.op, ins, resolve(step, ins))
        values.update({name: outs[res] for res, name in step.outputs})
    return values


def graph_of(source: Any) -> Graph:
    """A parsed :class:`Graph` as is, or :func:`parse` of a path or bytes."""
    return source if isinstance(source, Graph) else parse(source)


# --- parsing ---------------------------------------------------------------------------------------

def parse(source: Any) -> Graph:
    """Read, validate and lower an ONNX model (a path or its bytes): see the module docstring."""
    model, _ = onnx_files.load(source)
    _check_opset(model)
    nodes = _ordered(model.graph)
    for node in nodes:
        if node.domain not in ("", "ai.onnx") or node.op_type not in SUPPORTED:
            where = f" from domain {node.domain!r}" if node.domain not in ("", "ai.onnx") else ""
            raise UnsupportedOnnxOp(f"ONNX operator {node.op_type}{where} (node {label(node)}) is not supported; "
                                    f"nutshell imports {', '.join(SUPPORTED)}")
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:
        raise SpecError(f"the ONNX checker rejects the model: {str(exc).strip().splitlines()[0]}") from None
    lower = Lowering(model, nodes)
    lower.run()
    return lower.graph()


def _check_opset(model: onnx.ModelProto) -> None:
    """The default domain's opset must be one the lowering knows (:data:`lowering.OPSETS`)."""
    for o in model.opset_import:
        if o.domain in ("", "ai.onnx") and o.version not in OPSETS:
            raise UnsupportedOnnxOp(f"the model imports ONNX opset {o.version}; nutshell imports opsets "
                                    f"{OPSETS.start} to {OPSETS.stop - 1}")


def _ordered(g: onnx.GraphProto) -> list[onnx.NodeProto]:
    """The nodes in a topological order; SpecError for a value defined twice, a node reading a
    value nothing defines, a cycle, or a graph output nothing defines."""
    defined = {i.name for i in g.input} | {t.name for t in g.initializer}
    producer: dict[str, int] = {}
    for k, node in enumerate(g.node):
        for o in filter(None, node.output):
            if o in producer or o in defined:
                raise SpecError(f"value {o!r} is defined twice (again by node {label(node)} {node.op_type})")
            producer[o] = k
    for node in g.node:
        for i in filter(None, node.input):
            if i not in defined and i not in producer:
                raise SpecError(f"node {label(node)} ({node.op_type}) reads {i!r}, which no graph input, "
                                "initializer or node defines")
    order = _topological(g, producer)
    for o in g.output:
        if o.name not in defined and o.name not in producer:
            raise SpecError(f"graph output {o.name!r} is not defined by any input, initializer or node")
    return [g.node[k] for k in order]


def _topological(g: onnx.GraphProto, producer: dict[str, int]) -> list[int]:
    """Kahn's algorithm, keeping the file's order where it is already valid."""
    deps = [{producer[i] for i in node.input if i in producer} for node in g.node]
    users: dict[int, list[int]] = {}
    for k, d in enumerate(deps):
        for p in d:
            users.setdefault(p, []).append(k)
    waiting = [len(d) for d in deps]
    ready = [k for k, n in enumerate(waiting) if n == 0]
    order: list[int] = []
    while ready:
        k = heapq.heappop(ready)
        order.append(k)
        for u in users.get(k, []):
            waiting[u] -= 1
            if waiting[u] == 0:
                heapq.heappush(ready, u)
    if len(order) < len(g.node):
        stuck = [f"{label(g.node[k])} ({g.node[k].op_type})" for k in range(len(g.node)) if waiting[k] > 0]
        raise SpecError(f"the graph has a cycle: nodes {', '.join(stuck[:6])} wait on each other")
    return order
