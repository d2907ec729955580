"""The models section of the spec: ``spec/models.yaml`` as dataclasses, and its initialisation.

>>> from nutshell.spec import models
>>> m = models.get("digits_cnn")
>>> m.param("conv1_w").shape
(16, 1, 3, 3)
>>> p = models.init_params(m, seed=0)        # float32 values, the same on every machine
>>> wide = models.get("mlp", H=64)           # the same graph with another dimension

A model is a graph of spec concepts plus structural nodes that only move numbers around
(:data:`STRUCTURAL`). Every value of the graph has a name: ``x`` (the model input, batch first),
a parameter name, ``node.out`` for output ``out`` of a concept node, and ``node`` for a
structural node. The forward output (the logits) is the node ``logits``; the CNNs call their
penultimate value ``features``. The loss is ``cross_entropy`` on integer labels, or
``binary_cross_entropy`` on the logits (N,) with the labels 0/1 as targets.

Initialisation (:func:`init_params`) gives every parameter its own NumPy stream seeded by
(seed, crc32(name)) and rounds the draw to float32, so every backend and both dtypes start from
the same numbers, and adding a parameter never changes another's values.
"""

from __future__ import annotations

import functools
import math
import re
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from nutshell import spec as spec_mod
from nutshell.errors import NutshellError, SpecError

MODELS_FILE = spec_mod.SPEC_DIR / "models.yaml"
INPUT = "x"
OUTPUT_NODE = "logits"
STRUCTURAL = ("flatten", "reshape", "transpose", "zeros")
"""flatten: (N, ...) -> (N, prod); reshape: (N, ...) -> (N, *shape); transpose: axes permuted by
``perm``; zeros: a constant (N, *shape), N the leading size of its input ``like``."""

_DIM = re.compile(r"^(\d*)([A-Za-z_][A-Za-z0-9_]*)$")


@dataclass(frozen=True)
class Param:
    name: str
    shape: tuple[int, ...]
    init: dict                # {"kind": zeros | constant | blocks | uniform | glorot_uniform | he_uniform, ...}


@dataclass(frozen=True)
class Node:
    id: str
    op: str                   # a concept id or one of STRUCTURAL
    inputs: dict[str, str]    # the op's input name -> a value name
    attrs: dict               # concept nodes: every attribute, the spec's defaults filled in
    outputs: tuple[str, ...]  # the value names it defines

    @property
    def structural(self) -> bool:
        return self.op in STRUCTURAL


@dataclass(frozen=True)
class TrainVector:
    """``steps`` SGD steps of learning rate ``lr`` on seeded batches of ``batch`` examples."""

    steps: int
    batch: int
    lr: float
    seed: int


@dataclass(frozen=True)
class Vectors:
    batch: int
    seed: int
    train: TrainVector
    file: str
    sha256: str
    init: dict | None = None  # replaces every parameter's init for the vectors (e.g. non-zero weights)
    scale: float = 1.0        # inputs are a shuffled linspace over ±scale
    dims: dict = field(default_factory=dict)  # the vectors' own dimensions (e.g. a shorter sequence)

    def load(self) -> dict[str, np.ndarray]:
        return spec_mod.load_npz(spec_mod.SPEC_DIR / self.file, self.sha256)


@dataclass(frozen=True)
class Training:
    epochs: int
    batch_size: int
    lr: float
    momentum: float = 0.0
    optimizer: str = "sgd"              # or "adam"
    schedule: str = "constant"          # or "linear": the rate falls linearly over the run
    min_accuracy: float | None = None   # every backend must reach it on the test split


@dataclass(frozen=True)
class ModelSpec:
    id: str
    title: str
    description: str
    dims: dict[str, int]
    input_shape: tuple[int, ...]        # one example; the batch axis comes first
    classes: int
    loss: str
    params: tuple[Param, ...]
    nodes: tuple[Node, ...]
    dataset: dict
    training: Training
    vectors: Vectors
    source: str = str(MODELS_FILE)      # the file it came from

    def param(self, name: str) -> Param:
        return next(p for p in self.params if p.name == name)

    @property
    def output(self) -> str:
        """The value name of the logits."""
        return self.value(OUTPUT_NODE)

    @property
    def concepts(self) -> frozenset[str]:
        """Every spec concept the model runs, its loss included."""
        return frozenset({n.op for n in self.nodes if not n.structural} | {self.loss})

    def value(self, ref: str) -> str:
        """The value name of ``ref``: a node id stands for its first output."""
        for node in self.nodes:
            if ref == node.id:
                return node.outputs[0]
            if ref in node.outputs:
                return ref
        if ref == INPUT or any(p.name == ref for p in self.params):
            return ref
        raise SpecError(f"model {self.id}: no value named '{ref}'")

    def shapes(self, batch: int = 1) -> dict[str, tuple[int, ...]]:
        """The shape of every value for a batch of ``batch`` examples."""
        return _infer_shapes(self, batch)

    def vector_model(self) -> ModelSpec:
        """The model the vectors were made for: this one with the vectors' ``dims``."""
        return get(self.id, self.source, **{**self.dims, **self.vectors.dims}) if self.vectors.dims else self

    def fans(self) -> dict[str, tuple[int, int]]:
        """(fan_in, fan_out) of every weight, from the first node that reads it."""
        out: dict[str, tuple[int, int]] = {}
        shapes = {p.name: p.shape for p in self.params}
        for node in self.nodes:
            for ref in node.inputs.values():
                if ref in shapes and ref not in out:
                    out[ref] = _fan(node.op, shapes[ref])
        return out


def _fan(op: str, shape: tuple[int, ...]) -> tuple[int, int]:
    """Conv weights (O, C/g, kh, kw); LSTM weights (4H, I); dense weights (I, O); a vector (n,)."""
    if len(shape) == 4:
        area = shape[2] * shape[3]
        return shape[1] * area, shape[0] * area
    if len(shape) == 2:
        return (shape[1], shape[0]) if op in ("lstm", "lstm_cell") else (shape[0], shape[1])
    n = int(np.prod(shape)) if shape else 1
    return n, n


# --- structural nodes: work on NumPy arrays and on tracked T values alike ------------------------

def structural_shape(op: str, shape: tuple[int, ...], attrs: dict) -> tuple[int, ...]:
    """The output shape of a structural node whose input has ``shape``."""
    if op == "flatten":
        return (shape[0], math.prod(shape[1:]))
    if op == "reshape":
        out = (shape[0], *attrs["shape"])
        if math.prod(out) != math.prod(shape):
            raise SpecError(f"reshape of {shape} to {out} changes the number of elements")
        return out
    if op == "transpose":
        return tuple(shape[a] for a in attrs["perm"])
    return (shape[0], *attrs["shape"])  # zeros


def structural(op: str, a: Any, attrs: dict) -> Any:
    """flatten, reshape or transpose of ``a`` (zeros are made by the caller, in its own type)."""
    if op == "transpose":
        return a.transpose(*attrs["perm"])
    return a.reshape(*structural_shape(op, a.shape, attrs))  # (N, ...) -> (N, prod) or (N, *shape)


def structural_vjp(op: str, g: Any, in_shape: tuple[int, ...], attrs: dict) -> Any:
    """The cotangent of a structural node's input: the inverse permutation, or the input's shape."""
    if op == "transpose":
        return g.transpose(*np.argsort(attrs["perm"]))
    return g.reshape(*in_shape)


# --- initialisation ------------------------------------------------------------------------------

def _draw(rule: dict, shape: tuple[int, ...], fans: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """One parameter's values in float64 (rounded to float32 by the caller).

    glorot_uniform: U(±√(6 / (fan_in + fan_out))); he_uniform: U(±√(6 / fan_in)); uniform:
    U(±bound); blocks: a vector cut into len(values) equal blocks, block k filled with values[k]
    (e.g. an LSTM bias whose forget-gate block starts at 1).
    """
    kind = rule["kind"]
    if kind == "zeros":
        return np.zeros(shape)
    if kind == "constant":
        return np.full(shape, float(rule["value"]))
    if kind == "blocks":
        values = rule["values"]
        return np.repeat(np.array(values, np.float64), shape[0] // len(values)).reshape(shape)
    bound = {"uniform": lambda: rule["bound"],
             "glorot_uniform": lambda: math.sqrt(6.0 / (fans[0] + fans[1])),
             "he_uniform": lambda: math.sqrt(6.0 / fans[0])}[kind]()
    return rng.uniform(-bound, bound, size=shape)


def init_params(model: ModelSpec, seed: int = 0, dtype: str = "float32", init: dict | None = None
                ) -> dict[str, np.ndarray]:
    """Every parameter of ``model``, seeded: the same numbers on every backend, in ``dtype``.

    ``init`` replaces each parameter's own rule (the vectors use it to avoid all-zero weights).
    """
    if seed < 0:
        raise SpecError(f"model {model.id}: the seed must be ≥ 0, got {seed}")
    fans = model.fans()
    out = {}
    for p in model.params:
        rng = np.random.default_rng([seed, zlib.crc32(p.name.encode())])
        value = _draw(init or p.init, p.shape, fans.get(p.name, (1, 1)), rng)
        out[p.name] = value.astype(np.float32).astype(dtype)
    return out


# --- loading -------------------------------------------------------------------------------------

def _dim(v: Any, dims: Mapping[str, int], where: str) -> int:
    """An int, a dimension name, or a multiple of one such as ``4H``."""
    if isinstance(v, int) and not isinstance(v, bool):
        return v
    m = _DIM.match(str(v))
    if not m or m.group(2) not in dims:
        raise SpecError(f"{where}: '{v}' is neither an integer nor a multiple of a dimension in {sorted(dims)}")
    return int(m.group(1) or 1) * dims[m.group(2)]


def _shape(vs: list, dims: Mapping[str, int], where: str) -> tuple[int, ...]:
    return tuple(_dim(v, dims, where) for v in vs)


def _nodes(raw: list[dict], dims: Mapping[str, int], mid: str) -> tuple[Node, ...]:
    """Nodes with attrs completed and every input resolved to a value name."""
    from nutshell.spec import validate

    s = spec_mod.load()
    names: dict[str, str] = {}  # node id -> its first output's value name
    nodes = []
    for d in raw:
        nid, op = d["id"], d["op"]
        attrs = dict(d.get("attrs", {}))
        if op in STRUCTURAL:
            outputs: tuple[str, ...] = (nid,)
            if "shape" in attrs:
                attrs["shape"] = list(_shape(attrs["shape"], dims, f"model {mid}: node {nid}"))
        else:
            concept = s.concept(op)
            try:
                attrs = validate._check_attrs(concept, attrs)
            except NutshellError as exc:
                raise SpecError(f"model {mid}: node {nid}: {exc}") from None
            outputs = tuple(f"{nid}.{o}" for o in concept.outputs)
        inputs = {k: names.get(ref, ref) for k, ref in d["inputs"].items()}
        nodes.append(Node(nid, op, inputs, attrs, outputs))
        names[nid] = outputs[0]
    return tuple(nodes)


def _infer_shapes(model: ModelSpec, batch: int) -> dict[str, tuple[int, ...]]:
    """Shape inference through the spec's own validation: a graph that does not fit is a SpecError
    naming the model and the node."""
    from nutshell.spec import validate
    from nutshell.spec.signatures import output_shapes

    s = spec_mod.load()
    shapes = {INPUT: (batch, *model.input_shape)} | {p.name: p.shape for p in model.params}
    for node in model.nodes:
        missing = [ref for ref in node.inputs.values() if ref not in shapes]
        if missing:
            raise SpecError(f"model {model.id}: node {node.id}: unknown input value '{missing[0]}' (inputs must "
                            "name x, a parameter or an earlier node)")
        ins = {k: shapes[ref] for k, ref in node.inputs.items()}
        if node.structural:
            shapes[node.id] = structural_shape(node.op, next(iter(ins.values())), node.attrs)
            continue
        concept = s.concept(node.op)
        arrays = {k: np.zeros(v, np.int64 if concept.input(k).dtype == "int64" else np.float32) for k, v in ins.items()}
        try:
            validate.check(concept, arrays, node.attrs)
        except NutshellError as exc:
            raise SpecError(f"model {model.id}: node {node.id}: {exc}") from None
        for name, shp in output_shapes(node.op, ins, node.attrs).items():
            shapes[f"{node.id}.{name}"] = tuple(shp)
    return shapes


def _check(model: ModelSpec) -> None:
    """The graph fits together, uses every parameter, and ends in logits that fit the loss."""
    shapes = model.shapes(batch=2)
    used = {ref for n in model.nodes for ref in n.inputs.values()}
    unused = [p.name for p in model.params if p.name not in used]
    if unused:
        raise SpecError(f"model {model.id}: parameter '{unused[0]}' is never used")
    if not any(n.id == OUTPUT_NODE for n in model.nodes):
        raise SpecError(f"model {model.id}: no node named '{OUTPUT_NODE}'")
    want = (2,) if model.loss == "binary_cross_entropy" else (2, model.classes)
    if shapes[model.output] != want:
        raise SpecError(f"model {model.id}: logits have shape {shapes[model.output]} for a batch of 2, "
                        f"{model.loss} needs {want}")


def _build(d: dict, overrides: Mapping[str, int], source: str) -> ModelSpec:
    mid = d["id"]
    unknown = sorted(set(overrides) - set(d.get("dims", {})))
    if unknown:
        raise SpecError(f"model {mid}: no dimension '{unknown[0]}'; it has {sorted(d.get('dims', {}))}")
    dims = {**d.get("dims", {}), **overrides}
    v, t = d["vectors"], d["vectors"]["train"]
    model = ModelSpec(
        id=mid, title=d["title"], description=d["description"].strip(), dims=dims,
        input_shape=_shape(d["input"], dims, f"model {mid}: input"),
        classes=_dim(d["classes"], dims, f"model {mid}: classes"),
        loss=d["loss"],
        params=tuple(Param(p["name"], _shape(p["shape"], dims, f"model {mid}: parameter {p['name']}"), p["init"])
                     for p in d["params"]),
        nodes=_nodes(d["graph"], dims, mid),
        dataset=dict(d["dataset"]),
        training=Training(**d["training"]),
        vectors=Vectors(batch=v["batch"], seed=v["seed"], file=v["file"], sha256=v["sha256"], init=v.get("init"),
                        scale=v.get("scale", 1.0), dims=dict(v.get("dims", {})), train=TrainVector(**t)),
        source=source,
    )
    _check(model)
    return model


@functools.lru_cache(maxsize=4)
def document(path: str | Path | None = None) -> dict:
    """The validated models file (default: spec/models.yaml)."""
    return spec_mod.load_document(path or MODELS_FILE)


def names(path: str | Path | None = None) -> list[str]:
    """Every model id, in the file's order."""
    return [d["id"] for d in document(path)["models"]]


@functools.lru_cache(maxsize=64)
def _get(name: str, path: str | Path | None, overrides: tuple[tuple[str, int], ...]) -> ModelSpec:
    for d in document(path)["models"]:
        if d["id"] == name:
            return _build(d, dict(overrides), str(path or MODELS_FILE))
    raise SpecError(f"unknown model '{name}'; the spec knows: {', '.join(names(path))}")


def get(name: str, path: str | Path | None = None, **dims: int) -> ModelSpec:
    """One model; ``dims`` override its dimensions (e.g. ``T=51`` for a longer sequence)."""
    return _get(name, path, tuple(sorted(dims.items())))


def load(path: str | Path | None = None) -> dict[str, ModelSpec]:
    """Every model of the file, by id."""
    return {n: get(n, path) for n in names(path)}
