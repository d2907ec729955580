"""A spec model run whole by ONNX Runtime: one session for the forward pass and the loss, one
for the backward pass.

Both graphs are composed from the graphs this backend already builds for single concepts
(``OnnxBackend.build``), each inlined under a prefix of its own with its inputs wired to the
model's values, and the structural nodes as ONNX Reshape, Transpose and ConstantOfShape:

* forward and loss: x, the parameters and the labels -> the loss, plus every value the backward
  graph reads (``Model.forward`` has a graph of its own: x and the parameters -> one value);
* backward: those values, x, the parameters and the labels -> one gradient per parameter. The
  loss's vjp is seeded with a constant 1, then the nodes' vjp graphs follow in reverse; a value
  read by several nodes gets the sum of their cotangents, added in the order of the node-by-node
  executor (``nutshell.spec.graph``), so the arithmetic is the same. A relu read by a max-pool
  alone takes its mask on the pooled values, before the unpooling (:meth:`Composer._relu_pool_vjp`):
  the same numbers from a quarter of the elements (2×2 pools).

A vjp graph runs its concept forward again for what it needs (the inception module's vjp runs the
whole module): every backward node whose operator, attributes and inputs are those of a forward
node is dropped, and the backward graph reads that node's result from the forward session
(:func:`share`). Only nodes downstream of a parameter are differentiated, and every node whose
result no output needs (the gradient of x, say) is dropped before each model is checked (full
ONNX checker, strict shape inference) and handed to ONNX Runtime. The sessions are cached in the
backend's session cache under (model, input shape, dtype). A step is two session runs with I/O
binding: the values passed from the forward to the backward session stay where ONNX Runtime put
them (on the GPU on a CUDA device); only the loss and the gradients come back to NumPy.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper

from nutshell.backends.onnx_impl import graph
from nutshell.backends.onnx_impl.graph import Graph
from nutshell.spec import validate
from nutshell.spec.graph import Model
from nutshell.spec.models import INPUT, ModelSpec, Node

Shapes = dict[str, tuple[int, ...]]


class Program:
    """One session of a composed graph, run with I/O binding on the backend's device. Its thread
    pool does not spin: a step runs two sessions in turn, each with a pool of its own, and the
    workers of one spinning on after its run took a core from the other (on two cores the step was
    about a fifth slower with spinning)."""

    def __init__(self, model: onnx.ModelProto, providers: list, device: tuple[str, int]):
        self.session = graph.session(model, providers, spinning=False)
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.outputs = [o.name for o in self.session.get_outputs()]
        self.device = device

    def __call__(self, feeds: Mapping[str, Any]) -> dict[str, ort.OrtValue]:
        """Run on host arrays or OrtValues (by input name; extra feeds are ignored); the outputs
        stay OrtValues on the device."""
        io = self.session.io_binding()
        for name in self.inputs:
            a = feeds[name]
            if isinstance(a, ort.OrtValue):
                io.bind_ortvalue_input(name, a)
            else:
                io.bind_cpu_input(name, a)
        for name in self.outputs:
            io.bind_output(name, *self.device)
        self.session.run_with_iobinding(io)
        return dict(zip(self.outputs, io.get_outputs(), strict=True))


class Training(NamedTuple):
    """The two sessions of a training step."""

    forward: Program          # x, the parameters, the labels -> the loss and the values backward reads
    backward: Program         # those values, x, the parameters, the labels -> the gradients


# --- composing graphs ----------------------------------------------------------------------------

def inline(g: Graph, sub: onnx.ModelProto, prefix: str, feeds: Mapping[str, str]) -> dict[str, str]:
    """Copy the nodes and initializers of ``sub`` into ``g``, every name prefixed, its graph inputs
    replaced by the values ``feeds`` names; returns {output name of sub: its name in g}. The
    Identity nodes that only name sub's outputs are left out: each output is its source value."""
    def name(n: str) -> str:
        return feeds[n] if n in feeds else (f"{prefix}{n}" if n else n)

    outputs, source = {o.name for o in sub.graph.output}, {}
    for t in sub.graph.initializer:
        copy = onnx.TensorProto()
        copy.CopyFrom(t)
        copy.name = name(t.name)
        g.inits.append(copy)
    for node in sub.graph.node:
        if node.op_type == "Identity" and node.output[0] in outputs:
            source[node.output[0]] = name(node.input[0])
            continue
        copy = onnx.NodeProto()
        copy.CopyFrom(node)
        copy.name = f"{prefix}{node.name}"
        copy.input[:] = [name(n) for n in node.input]
        copy.output[:] = [name(n) for n in node.output]
        g.nodes.append(copy)
    return {o.name: source.get(o.name, name(o.name)) for o in sub.graph.output}


def prune(g: Graph) -> None:
    """Drop every node, initializer and input that no graph output depends on."""
    live = {o.name for o in g.outputs}
    kept = []
    for node in reversed(g.nodes):
        if any(o in live for o in node.output):
            kept.append(node)
            live.update(i for i in node.input if i)
    g.nodes[:] = kept[::-1]
    g.inits[:] = [t for t in g.inits if t.name in live]
    g.inputs[:] = [i for i in g.inputs if i.name in live]


def expose(g: Graph, outputs: Mapping[str, onnx.ValueInfoProto]) -> None:
    """Make each value of ``outputs`` the graph output named by its info. Its producer writes there
    directly: an Identity would copy it, and the forward graph hands on every value the backward
    graph reads. One pass over the nodes renames them all (a pass per value would be quadratic in
    the size of an unrolled LSTM's graph)."""
    inputs = {i.name for i in g.inputs}
    rename = {v: info.name for v, info in outputs.items() if v not in inputs}
    g.nodes.extend(helper.make_node("Identity", [v], [info.name], name=f"out_{info.name}")
                   for v, info in outputs.items() if v in inputs)
    for node in g.nodes:
        if any(n in rename for n in node.input):
            node.input[:] = [rename.get(n, n) for n in node.input]
        if any(n in rename for n in node.output):
            node.output[:] = [rename.get(n, n) for n in node.output]
    g.outputs.extend(outputs.values())


def value_ids(g: Graph, given: Mapping[str, int], ids: dict[tuple, int]) -> dict[str, int]:
    """An id per value of ``g`` such that equal ids hold equal numbers: graph inputs take theirs
    from ``given``, an initializer's id is its content, a node output's the node's operator,
    attributes and input ids (``ids`` interns them, shared between graphs)."""
    keys = dict(given)
    for t in g.inits:
        bare = onnx.TensorProto()
        bare.CopyFrom(t)
        bare.name = ""
        keys[t.name] = ids.setdefault(("const", bare.SerializeToString()), len(ids))
    for node in g.nodes:
        attrs = tuple(a.SerializeToString() for a in sorted(node.attribute, key=lambda a: a.name))
        sig = ids.setdefault(("node", node.domain, node.op_type, attrs, tuple(keys[i] if i else -1 for i in node.input),
                              len(node.output)), len(ids))
        keys.update({o: ids.setdefault(("out", sig, k), len(ids)) for k, o in enumerate(node.output)})
    return keys


def share(forward: Graph, backward: Graph) -> None:
    """Drop from ``backward`` every node whose results ``forward`` computes as well (a vjp graph
    runs its concept forward again for what it needs): it reads them from ``forward`` instead,
    through inputs named ``f:<forward value>``. Nodes on constants alone stay."""
    ids: dict[tuple, int] = {}
    fwd = value_ids(forward, {i.name: ids.setdefault(("input", i.name), len(ids)) for i in forward.inputs}, ids)
    given = {i.name: fwd[i.name[2:]] if i.name.startswith("f:") else ids.setdefault(("input", i.name), len(ids))
             for i in backward.inputs}
    bwd = value_ids(backward, given, ids)
    source = {key: name for name, key in fwd.items()}
    consts = {t.name for t in backward.inits}
    read: dict[str, str] = {}                                   # backward value -> the forward value it equals
    kept = []
    for node in backward.nodes:
        if all(bwd[o] in source for o in node.output) and any(i and i not in consts for i in node.input):
            read.update({o: source[bwd[o]] for o in node.output})
            continue
        node.input[:] = [f"f:{read[i]}" if i in read else i for i in node.input]
        kept.append(node)
    backward.nodes[:] = kept
    info = _value_infos(forward)
    have = {i.name for i in backward.inputs}
    for name in dict.fromkeys(read.values()):
        if f"f:{name}" not in have:
            backward.inputs.append(_renamed(info[name], f"f:{name}"))


def _value_infos(g: Graph) -> dict[str, onnx.ValueInfoProto]:
    """The type and shape of every value of ``g`` (ONNX shape inference)."""
    inferred = onnx.shape_inference.infer_shapes(g.model())
    return {v.name: v for v in (*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output)}


def _renamed(info: onnx.ValueInfoProto, name: str) -> onnx.ValueInfoProto:
    copy = onnx.ValueInfoProto()
    copy.CopyFrom(info)
    copy.name = name
    return copy


def zeros(g: Graph, shape: tuple[int, ...]) -> str:
    return g.op("ConstantOfShape", g.ints(shape), value=helper.make_tensor("zero", g.elem, [1], [0]))


class Composer:
    """The forward and backward graphs of one model for one input shape, in one dtype."""

    def __init__(self, backend, spec: ModelSpec, shapes: Shapes, dtype: np.dtype, differentiable: set[str]):
        self.b, self.spec, self.shapes, self.dtype = backend, spec, shapes, str(dtype)
        self.differentiable = differentiable
        self.key = "targets" if spec.loss == "binary_cross_entropy" else "labels"

    def _graph(self, kind: str, labels: bool) -> tuple[Graph, dict[str, str]]:
        """A graph whose inputs are x, the parameters (and the labels): {value name: its name in g}."""
        g = Graph(self.dtype, f"{self.spec.id}_{kind}")
        names = {INPUT: g.input(INPUT, self.shapes[INPUT])}
        names.update({p.name: g.input(p.name, p.shape) for p in self.spec.params})
        if labels:
            names[self.key] = g.input(self.key, self.shapes[INPUT][:1], "int64" if self.key == "labels" else None)
        return g, names

    def _loss(self, g: Graph, logits: str, labels: str, direction: str, extra: Mapping[str, str]) -> dict[str, str]:
        """Inline the loss's forward or vjp graph on the values named ``logits`` and ``labels`` in g."""
        concept = self.b.spec.concept(self.spec.loss)
        shapes = {"logits": self.shapes[self.spec.output], self.key: self.shapes[INPUT][:1]}
        sub = self.b.build(self.spec.loss, validate._check_attrs(concept, {}), shapes, self.dtype, direction)
        prefix = "loss/" if direction == "forward" else "d:loss/"
        return inline(g, sub, prefix, {"logits": logits, self.key: labels, **extra})

    def forward(self, output: str) -> onnx.ModelProto:
        """x and the parameters -> the value ``output``, as the graph output ``value:<output>``."""
        g, names = self._forward("forward", labels=False)
        expose(g, {names[output]: helper.make_tensor_value_info(f"value:{output}", g.elem, self.shapes[output])})
        return self._finish(g)

    def train(self) -> tuple[onnx.ModelProto, onnx.ModelProto]:
        """The graphs of a training step: x, the parameters and the labels -> the loss and
        ``f:<value>`` for every forward value the backward graph reads; those, x, the parameters
        and the labels -> ``grad:<param>``."""
        fg, names = self._forward("loss", labels=True)
        fg.output("loss", self._loss(fg, names[self.spec.output], names[self.key], "forward", {})["out.loss"], [])
        bg = self._backward(names)
        share(fg, bg)
        prune(bg)
        info = _value_infos(fg)
        expose(fg, {i.name[2:]: _renamed(info[i.name[2:]], i.name) for i in bg.inputs if i.name.startswith("f:")})
        return self._finish(fg), self._finish(bg)

    def _forward(self, kind: str, labels: bool) -> tuple[Graph, dict[str, str]]:
        g, names = self._graph(kind, labels)
        for node in self.spec.nodes:
            self._forward_node(g, node, names)
        return g, names

    def _forward_node(self, g: Graph, node: Node, names: dict[str, str]) -> None:
        src = {k: names[ref] for k, ref in node.inputs.items()}
        if node.op == "zeros":
            names[node.id] = zeros(g, self.shapes[node.id])
        elif node.op == "transpose":
            names[node.id] = graph.transpose(g, src["x"], node.attrs["perm"])
        elif node.structural:
            names[node.id] = graph.reshape(g, src["x"], self.shapes[node.id])
        else:
            shapes = {k: self.shapes[ref] for k, ref in node.inputs.items()}
            sub = self.b.build(node.op, node.attrs, shapes, self.dtype, "forward")
            outs = inline(g, sub, f"{node.id}/", src)
            names.update({f"{node.id}.{k.partition('.')[2]}": v for k, v in outs.items()})

    def _backward(self, forward: dict[str, str]) -> Graph:
        """x, the parameters, the labels and the forward values it reads (``f:<name in the forward
        graph>``) -> ``grad:<param>``; ``forward`` maps value names to names in the forward graph."""
        g, names = self._graph("backward", True)

        def value(ref: str) -> str:
            if ref not in names:
                names[ref] = g.input(f"f:{forward[ref]}", self.shapes[ref])
            return names[ref]

        logits = self.spec.output
        seed = g.const(np.ones((), self.dtype), "one")
        outs = self._loss(g, value(logits), names[self.key], "vjp", {"cot.loss": seed})
        cot = {logits: outs["grad.logits"]}
        fused = self._relu_pools()
        for node in reversed(self.spec.nodes):
            if node.op == "zeros" or not any(o in cot for o in node.outputs):
                continue
            vjp = self._relu_pool_vjp(g, node, fused[node.id], value, cot) if node.id in fused else \
                self._node_vjp(g, node, value, cot)
            for ref, grad in vjp:
                if ref in self.differentiable:
                    cot[ref] = g.op("Add", cot[ref], grad) if ref in cot else grad
        for p in self.spec.params:
            g.output(f"grad:{p.name}", cot[p.name] if p.name in cot else zeros(g, p.shape), p.shape)
        return g

    def _relu_pools(self) -> dict[str, Node]:
        """{id of a max_pool2d node: the relu node whose result it alone reads}."""
        readers = Counter(ref for n in self.spec.nodes for ref in n.inputs.values())
        relus = {n.outputs[0]: n for n in self.spec.nodes if n.op == "relu"}
        return {n.id: relus[n.inputs["x"]] for n in self.spec.nodes
                if n.op == "max_pool2d" and n.inputs["x"] in relus and readers[n.inputs["x"]] == 1
                and n.inputs["x"] != self.spec.output}

    def _relu_pool_vjp(self, g: Graph, pool: Node, relu: Node, value, cot: dict[str, str]) -> list[tuple[str, str]]:
        """The vjp of relu then max_pool2d with the relu's mask taken on the pooled values (a pool's
        share of the relu's elements, a quarter for 2×2): p = maxpool(relu(a)), gp its cotangent,

            ga = [a > 0] ⊙ unpool(gp) = unpool([p > 0] ⊙ gp),

        since unpool puts gp[k] at the window's argmax i alone, where relu(a)[i] = p[k], so that
        a[i] > 0 exactly when p[k] > 0; every other element is 0 either way. The relu's own vjp
        graph computes the mask (on p), the pool's places the result."""
        out = pool.outputs[0]
        on_pooled = Node(f"{relu.id}@{pool.id}", "relu", {"x": out}, relu.attrs, (out,))
        (_, masked), = self._node_vjp(g, on_pooled, value, cot)
        return [(relu.inputs["x"] if ref == relu.outputs[0] else ref, grad)
                for ref, grad in self._node_vjp(g, pool, value, {**cot, out: masked})]

    def _node_vjp(self, g: Graph, node: Node, value, cot: dict[str, str]) -> list[tuple[str, str]]:
        """(input value name, the name of its cotangent contribution) for each input of one node."""
        if node.structural:
            src = node.inputs["x"]
            if node.op == "transpose":
                return [(src, graph.transpose(g, cot[node.id], np.argsort(node.attrs["perm"]).tolist()))]
            return [(src, graph.reshape(g, cot[node.id], self.shapes[src]))]
        shapes = {k: self.shapes[ref] for k, ref in node.inputs.items()}
        feeds = {k: value(ref) for k, ref in node.inputs.items()}
        for o in node.outputs:
            feeds[f"cot.{o.partition('.')[2]}"] = cot[o] if o in cot else zeros(g, self.shapes[o])
        sub = self.b.build(node.op, node.attrs, shapes, self.dtype, "vjp")
        outs = inline(g, sub, f"d:{node.id}/", feeds)
        return [(node.inputs[k.partition(".")[2]], v) for k, v in outs.items()]

    @staticmethod
    def _finish(g: Graph) -> onnx.ModelProto:
        prune(g)
        return graph.check(g.model())


class OnnxModel(Model):
    """A spec model whose forward and backward passes are one ONNX Runtime session each."""

    def __init__(self, backend, spec: ModelSpec, params: Mapping[str, np.ndarray] | None = None, seed: int = 0,
                 dtype: str | None = None):
        super().__init__(backend, spec, params=params, seed=seed, dtype=dtype)
        self._ident = (spec.id, spec.source, tuple(sorted(spec.dims.items())))

    # --- validated once at the boundary -------------------------------------------------------------

    def _input(self, x: np.ndarray) -> np.ndarray:
        x = super()._input(x)
        self._shapes(x.shape)
        return x

    def _labels(self, labels: np.ndarray, x_shape: tuple[int, ...]) -> np.ndarray:
        return self._loss_input(x_shape, labels)

    # --- the sessions -------------------------------------------------------------------------------

    def _composer(self, x_shape: tuple[int, ...]) -> Composer:
        return Composer(self.backend, self.spec, self._shapes(x_shape), self.dtype, self._differentiable)

    def _cached(self, key: tuple, build: Callable[[], Any]) -> Any:
        """The backend's cached entry for this model under ``key`` (built on first use)."""
        full = ("model", *self._ident, *key, self.dtype)
        return self.backend._guard(self.spec.id, lambda: self.backend.sessions.get(full, build))

    def _program(self, x_shape: tuple[int, ...], output: str) -> Program:
        """The session computing ``output`` from x and the parameters."""
        def build() -> Program:
            return self._compile(self._composer(x_shape).forward(output))
        return self._cached(("forward", output, x_shape), build)

    def _training(self, x_shape: tuple[int, ...]) -> Training:
        """The forward-and-loss and the backward session of a step."""
        def build() -> Training:
            forward, backward = self._composer(x_shape).train()
            return Training(self._compile(forward), self._compile(backward))
        return self._cached(("train", x_shape), build)

    def _compile(self, model: onnx.ModelProto) -> Program:
        cuda = self.backend.device.startswith("cuda")
        return Program(model, self.backend._providers, ("cuda", self.backend._device_id) if cuda else ("cpu", 0))

    def _run(self, program: Program, feeds: dict[str, Any]) -> dict[str, ort.OrtValue]:
        return self.backend._guard(self.spec.id, lambda: program(feeds))

    def _value(self, x: np.ndarray, name: str) -> np.ndarray:
        out = self._run(self._program(x.shape, name), {INPUT: x, **self._params})
        return out[f"value:{name}"].numpy()

    def _loss_and_grads(self, x: np.ndarray, labels: np.ndarray) -> tuple[float, dict[str, np.ndarray]]:
        step = self._training(x.shape)
        feeds: dict[str, Any] = {INPUT: x, **self._params, self._loss_key(): labels}
        forward = self._run(step.forward, feeds)
        grads = self._run(step.backward, feeds | forward)
        return float(forward["loss"].numpy()), {k.partition(":")[2]: v.numpy() for k, v in grads.items()}
