"""Shape inference over an imported graph: every value's shape, dtype and size before it exists.

A hostile model can ask for far more memory than its file holds: a ConstantOfShape of 763 MiB
concatenated 64 times fits in 534 bytes, a convolution of one pixel with pads of 20000 in 145.
So nothing is computed before the sizes are known (:class:`Limits`): each value must fit the tensor
limit (:func:`~nutshell.onnxio.codec.files.max_tensor_bytes`, $NUTSHELL_ONNX_MAX_TENSOR_MB), and
all the values a run holds together the memory budget
(:func:`~nutshell.spec.validate.memory_budget`, $NUTSHELL_MAX_MEMORY_MB):

* at import, the lowering infers each step as it emits it, from the declared input shapes (a value
  reached by a dynamic dimension stays unknown), checks the total, and only then folds the steps
  on constants (lowering.py);
* when a graph runs, :func:`infer` walks it again from the feeds' shapes before the first step,
  and :func:`check_step` checks each step once more on its actual inputs (a shape given by data
  known only then). The float64 reference of ``nutshell check`` sizes what it holds with its own
  :class:`Limits` (nutshell/onnxio/tools/compare.py).

A structural step that only moves elements (reshape, transpose, broadcast, …) is inferred by
running its own NumPy code on zero-strided views of the input shapes, which allocate nothing, so
the inference cannot drift from what the step does; a step that makes a new array (concat, fill,
…) has its shape rule here. Small results computed from known data are computed (the shapes that
Reshape or ConstantOfShape read). A concept step goes through the spec's validation
(:func:`nutshell.spec.validate.check_views`: names, dtypes, ranks, attrs, shape relations) and its
shape arithmetic (:func:`nutshell.spec.signatures.output_shapes`), so a model whose weights do
not fit its concept is refused at import, with the ONNX node named.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from nutshell import spec as spec_mod
from nutshell.errors import NutshellError, ShapeError, SpecError
from nutshell.onnxio.codec.graph import Graph, Step, Value, at_node, resolve
from nutshell.onnxio.codec.structural import apply, fill_dims, limit
from nutshell.spec import validate
from nutshell.spec.reference.tracked import T
from nutshell.spec.signatures import output_shapes

VALUE_ARGS = frozenset({"shape", "axes"})   # inputs whose data (not only shape) shapes the result
SMALL = 4096                                # elements: results small enough to compute while inferring


@dataclass(frozen=True)
class Meta:
    """What is known of a value before it exists: its shape and dtype, and its data where it is a
    constant or a feed (the integer tensors that give Reshape's shape or Squeeze's axes)."""

    shape: tuple[int, ...]
    dtype: np.dtype
    value: np.ndarray | None = None

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize

    def view(self) -> np.ndarray:
        """A zero-strided view of this shape and dtype: any size, no memory."""
        return np.broadcast_to(np.zeros((), self.dtype), self.shape)


def meta(a: Any) -> Meta:
    """The Meta of an existing value: an array, or the reference's T (float64 value and bound)."""
    if isinstance(a, T):
        return Meta(tuple(a.shape), np.dtype(np.float64))
    a = np.asarray(a)
    return Meta(a.shape, a.dtype, a)


def declared(v: Value) -> Meta | None:
    """A graph input as declared, None where a dimension is dynamic."""
    if v.shape is None or None in v.shape:
        return None
    return Meta(tuple(v.shape), v.dtype)


Outputs = dict[str, Meta]                              # result name -> Meta


class Limits:
    """What running a graph may allocate: each tensor within the tensor limit, and all the values
    a run holds at once (it keeps every one, for per-node comparisons) within the memory budget
    (:func:`nutshell.spec.validate.memory_budget`). The float64 reference of ``nutshell check``
    holds more per value; nutshell/onnxio/tools/compare.py subclasses this."""

    def meta(self, a: Any) -> Meta:
        """How the run holds the value ``a`` (a constant, a feed, a step's input)."""
        return meta(a)

    def held(self, m: Meta) -> int:
        """Bytes the run holds for a value."""
        return m.nbytes

    def check(self, step: Step, ins: Mapping[str, Meta], outs: Outputs) -> None:
        """Before ``step`` runs: every result fits the tensor limit."""
        names = dict(step.outputs)
        for res, m in outs.items():
            limit(m.shape, m.dtype, f"its result {names[res]!r}")

    def check_total(self, known: Mapping[str, Meta | None]) -> None:
        """SpecError when the known values together exceed the memory budget."""
        held = {k: self.held(m) for k, m in known.items() if m is not None}
        total, budget = sum(held.values()), validate.memory_budget()
        if total > budget:
            top = sorted(held, key=held.get, reverse=True)[:3]
            raise SpecError(f"the graph's values need {total / 2**30:.1f} GiB together (the largest: "
                            + ", ".join(f"{k!r} {held[k] / 2**20:.0f} MiB" for k in top)
                            + f"), over the memory budget of {budget / 2**30:.1f} GiB "
                            f"(set ${validate.MEMORY_ENV} to change it)")


LIMITS = Limits()


# --- one step ------------------------------------------------------------------------------------

def outputs(step: Step, ins: Mapping[str, Meta]) -> Outputs | None:
    """The step's results as Metas, or None where they depend on data not known yet. A shape the
    step cannot take raises the error the step itself would. Small results of structural steps on
    known data carry their data too (shapes computed from constants, for the steps they shape)."""
    if not step.structural:
        return _concept(step, ins)
    if any(arg in VALUE_ARGS and m.value is None for arg, m in ins.items()):
        return None
    try:
        outs = SHAPES[step.op](ins, step.attrs)
    except NutshellError:
        raise
    except (ValueError, IndexError, TypeError) as exc:         # as structural.apply reports them
        raise ShapeError(f"{step.op}: {exc}") from None
    if all(m.value is not None for m in ins.values()) and sum(math.prod(m.shape) for m in outs.values()) <= SMALL:
        data = apply(step.op, {k: m.value for k, m in ins.items()}, step.attrs)
        outs = {k: Meta(m.shape, m.dtype, np.asarray(data[k])) for k, m in outs.items()}
    return outs


def infer_step(step: Step, ins: Mapping[str, Meta | None], limits: Limits = LIMITS) -> Outputs | None:
    """The step's results from what is known of its inputs (None: not known), checked by
    ``limits``; an error names the ONNX node."""
    if any(m is None for m in ins.values()):
        return None
    with at_node(step):
        outs = outputs(step, ins)
        if outs is not None:
            limits.check(step, ins, outs)
    return outs


def check_step(step: Step, ins: Mapping[str, Any], limits: Limits = LIMITS) -> None:
    """Before ``step`` runs on the values ``ins`` (the caller names the node in errors)."""
    metas = {k: limits.meta(v) for k, v in ins.items()}
    outs = outputs(step, metas)
    if outs is not None:
        limits.check(step, metas, outs)


def infer(graph: Graph, inputs: Mapping[str, Meta | None], limits: Limits = LIMITS) -> dict[str, Meta | None]:
    """Every value of ``graph`` from its constants and ``inputs`` (None: not known), each step's
    results and then all of them together checked by ``limits``."""
    known: dict[str, Meta | None] = {k: limits.meta(v) for k, v in graph.constants.items()} | dict(inputs)
    for step in graph.steps:
        outs = infer_step(step, {arg: known.get(name) for arg, name in step.inputs}, limits)
        known.update({name: outs[res] if outs is not None else None for res, name in step.outputs})
    limits.check_total(known)
    return known


def _concept(step: Step, ins: Mapping[str, Meta]) -> Outputs:
    """A concept's results, after the spec's validation on zero-strided views of the inputs (its
    memory budget is the graph's: :meth:`Limits.check_total`; a backend checks the call's own when
    it runs the step)."""
    concept = spec_mod.load().concept(step.op)
    views = {k: m.view() for k, m in ins.items()}
    _, full, dtype = validate.check_views(concept, views, resolve(step, ins), budget=False)
    shapes = output_shapes(step.op, {k: m.shape for k, m in ins.items()}, full)
    return {k: Meta(tuple(s), np.dtype(dtype)) for k, s in shapes.items()}


# --- structural steps ----------------------------------------------------------------------------

def _moved(op: str) -> Callable[[Mapping[str, Meta], dict], Outputs]:
    """A step that only moves elements, run on zero-strided views (shape and axes operands as
    their data): its results' shapes and dtypes, nothing allocated."""
    def infer_moved(ins: Mapping[str, Meta], attrs: dict) -> Outputs:
        views = {k: m.value if k in VALUE_ARGS else m.view() for k, m in ins.items()}
        return {k: Meta(v.shape, v.dtype) for k, v in apply(op, views, attrs).items()}
    return infer_moved


def _concat(ins: Mapping[str, Meta], attrs: dict) -> Outputs:
    """np.concatenate's rule: the same rank and dims, but on ``axis``, where they add up."""
    parts, axis = [ins[f"x{k}"] for k in range(len(ins))], attrs["axis"]
    first = parts[0].shape if parts else ()
    rank = len(first)
    if not -rank <= axis < rank:
        raise ShapeError(f"cannot concatenate {[p.shape for p in parts]} on axis {axis}")
    ax = axis % rank
    rest = [p.shape[:ax] + p.shape[ax + 1:] for p in parts]
    if any(len(p.shape) != rank or r != rest[0] for p, r in zip(parts, rest, strict=True)):
        raise ShapeError(f"cannot concatenate {[p.shape for p in parts]} on axis {axis}: the other dims differ")
    shape = (*first[:ax], sum(p.shape[ax] for p in parts), *first[ax + 1:])
    return {"y": Meta(shape, np.result_type(*(p.dtype for p in parts)))}


def _pair(ins: Mapping[str, Meta], attrs: dict) -> Outputs:
    a, b = ins["a"], ins["b"]
    if a.shape != b.shape:
        raise ShapeError(f"cannot pair {a.shape} with {b.shape}")
    return {"y": Meta((1, 2, math.prod(a.shape), 1), np.result_type(a.dtype, b.dtype))}


def _gates(ins: Mapping[str, Meta], attrs: dict) -> Outputs:
    """ONNX's W or R (1, 4H, K) -> (4H, K)."""
    w = ins["x"]
    if len(w.shape) != 3 or w.shape[0] < 1 or w.shape[1] % 4:
        raise ShapeError(f"LSTM weights must have shape (1, 4·H, K), got {w.shape}")
    return {"y": Meta(w.shape[1:], w.dtype)}


def _lstm_bias(ins: Mapping[str, Meta], attrs: dict) -> Outputs:
    """ONNX's B (1, 8H) -> Wb, Rb (4H,)."""
    b = ins["b"]
    if len(b.shape) != 2 or b.shape[0] < 1 or b.shape[1] % 8:
        raise ShapeError(f"LSTM bias must have shape (1, 8·H), got {b.shape}")
    half = Meta((b.shape[1] // 2,), b.dtype)
    return {"wb": half, "rb": half}


def _fill(ins: Mapping[str, Meta], attrs: dict) -> Outputs:
    return {"y": Meta(tuple(fill_dims(ins["shape"].value)), attrs["value"].dtype)}


def _made(shape: Callable[[Mapping[str, Meta], dict], tuple[int, ...]], dtype_of: str
          ) -> Callable[[Mapping[str, Meta], dict], Outputs]:
    """A step that makes one new array ``y`` of ``shape(ins, attrs)``, in the dtype of input ``dtype_of``
    (or of attr ``dtype`` when ``dtype_of`` is empty)."""
    def infer_made(ins: Mapping[str, Meta], attrs: dict) -> Outputs:
        dtype = ins[dtype_of].dtype if dtype_of else np.dtype(attrs["dtype"])
        return {"y": Meta(tuple(int(d) for d in shape(ins, attrs)), dtype)}
    return infer_made


SHAPES: dict[str, Callable[[Mapping[str, Meta], dict], Outputs]] = {
    **{op: _moved(op) for op in ("identity", "reshape", "flatten", "transpose", "squeeze", "unsqueeze",
                                 "broadcast", "legacy_broadcast", "channels", "kernels", "column", "like", "rows",
                                 "matmul_out", "batched", "batched_out")},
    "concat": _concat,
    "pair": _pair,
    "gates": _gates,
    "lstm_bias": _lstm_bias,
    "fill": _fill,
    "full": _made(lambda i, a: a["shape"], "x"),
    "zero_bias": _made(lambda i, a: (i["w"].shape[1],), "w"),
    "zero_state": _made(lambda i, a: (i["x"].shape[1], i["w"].shape[1] // 4), "w"),
    "mask": _made(lambda i, a: i["x"].shape, ""),
}
"""How each structural step's results follow from its inputs (every op of STRUCTURAL, see tests)."""
