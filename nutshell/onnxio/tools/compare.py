"""Comparing an imported ONNX graph across backends, ONNX Runtime and the float64 reference.

>>> from nutshell.onnxio.tools import compare
>>> ref = compare.reference(graph, feeds)            # every value as T: float64 value and bound
>>> ort = compare.ort_values(graph, feeds, every=True)
>>> compare.difference(out["prob"], ort["prob"], ref["prob"], tol)      # max abs / rel, outside, usage
>>> compare.local_usages(graph, {"torch": imported}, feeds, ort, tol)   # each node on ORT's inputs

The reference runs the same lowered graph as the backends (nutshell/onnxio/codec/reader.py), each concept
with spec/reference's tracked float64 implementation and each structural step on the values and
their bounds alike, so a value's bound is the spec's tolerance model carried through the graph.
``nutshell check`` (nutshell/check.py) prints these comparisons.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from nutshell import spec as spec_mod
from nutshell.errors import SpecError
from nutshell.onnxio.codec import inference
from nutshell.onnxio.codec import reader as onnx_import
from nutshell.onnxio.codec.graph import resolve
from nutshell.onnxio.codec.reader import STRUCTURAL, Graph, Step
from nutshell.onnxio.codec.structural import apply, limit
from nutshell.spec import tolerance, validate
from nutshell.spec.reference import CONCEPTS as REFERENCE
from nutshell.spec.reference.tracked import T

ORT = "onnxruntime"


# --- the float64 reference of an imported graph, with tracked bounds --------------------------------

def _tracked(a: Any) -> Any:
    return a if isinstance(a, T) or np.asarray(a).dtype.kind != "f" else T(np.asarray(a, np.float64))


def _ref_concept(op: str, ins: dict, attrs: dict) -> dict:
    full = validate._check_attrs(spec_mod.load().concept(op), attrs)
    return REFERENCE[op].forward({k: _tracked(v) for k, v in ins.items()}, full)


def _ref_structural(step: Step, ins: dict) -> dict:
    """A structural step on T values: the same plumbing on the values and on their bounds; a step
    that makes constants makes exact ones (bound 0)."""
    makes = STRUCTURAL[step.op][1]
    values = apply(step.op, {k: a.v if isinstance(a, T) else a for k, a in ins.items()}, step.attrs)
    if makes or not any(isinstance(a, T) for a in ins.values()):
        return {k: _tracked(v) for k, v in values.items()}
    bounds = apply(step.op, {k: a.e if isinstance(a, T) else a for k, a in ins.items()}, step.attrs)
    return {k: T(v, bounds[k]) if np.asarray(v).dtype.kind == "f" else v for k, v in values.items()}


class ReferenceLimits(inference.Limits):
    """What the float64 reference holds: every float as two float64 arrays (value and bound), and
    for a window concept (conv2d, the poolings) the padded input and every window's elements,
    (N, C, kh, kw, oH, oW), a kh·kw-fold copy that the backends' own kernels never make."""

    def meta(self, a: Any) -> inference.Meta:
        m = inference.meta(a)
        return inference.Meta(m.shape, np.dtype(np.float64)) if m.dtype.kind == "f" else m

    def held(self, m: inference.Meta) -> int:
        return 2 * m.nbytes if m.dtype.kind == "f" else m.nbytes

    def check(self, step: Step, ins: Mapping[str, inference.Meta], outs: inference.Outputs) -> None:
        names = dict(step.outputs)
        for res, m in outs.items():
            limit(m.shape, m.dtype, f"the float64 reference of its result {names[res]!r}")
        if step.op in WINDOWS:
            x, y = ins["x"].shape, outs["y"].shape
            attrs = resolve(step, ins)
            kernel = attrs["kernel"] if "kernel" in attrs else ins["w"].shape[2:]
            _, padded = validate.PADDED[step.op](x, attrs)
            limit(padded, np.float64, "the float64 reference's padded input")
            limit((*x[:2], *kernel, *y[2:]), np.float64, "the float64 reference's windows")


WINDOWS = frozenset({"conv2d", "max_pool2d", "avg_pool2d"})   # the window concepts the importer emits
REFERENCE_LIMITS = ReferenceLimits()


def check_reference(graph: Graph, feeds: dict[str, np.ndarray]) -> None:
    """SpecError, naming the node, when the float64 reference of ``graph`` on ``feeds`` would hold a
    tensor over the limit or more than the memory budget: before anything runs."""
    inference.infer(graph, {k: REFERENCE_LIMITS.meta(v) for k, v in feeds.items()}, REFERENCE_LIMITS)


def reference(graph: Graph, feeds: dict[str, np.ndarray]) -> dict[str, Any]:
    """Every value of the graph in float64, floats as T (value and bound), from exact feeds; what
    it will hold is checked for the whole graph before the first step runs (ReferenceLimits)."""
    return onnx_import.execute(graph, {k: _tracked(v) for k, v in feeds.items()}, _ref_concept, _ref_structural,
                               REFERENCE_LIMITS)


# --- one node at a time ------------------------------------------------------------------------------

def node_steps(graph: Graph) -> list[tuple[str, list[Step]]]:
    """(node, its steps) for every ONNX node that has steps, in graph order."""
    groups: dict[str, list[Step]] = {}
    for step in graph.steps:
        groups.setdefault(step.node, []).append(step)
    return list(groups.items())


def run_node(steps: list[Step], given: dict[str, Any], concept, structural=None,
             limits: inference.Limits = inference.LIMITS) -> dict[str, Any]:
    """The values one node's steps define, from ``given`` (its inputs, constants included)."""
    return onnx_import.run_steps(steps, dict(given), concept, structural, limits)


@dataclass
class Difference:
    """One value of one backend against ONNX Runtime (and its bound)."""

    max_abs: float
    max_rel: float
    outside: int
    total: int
    usage: float        # max |backend − reference value| / bound, over elements
    vacuous: bool       # the bound is as large as the values themselves

    def row(self) -> str:
        share = self.outside / max(self.total, 1)
        note = "  (bound vacuous)" if self.vacuous else ""
        return (f"{self.max_abs:10.3g} {self.max_rel:10.3g}  {self.outside:>7}/{self.total:<7} "
                f"({share:6.2%})  {self.usage:9.3g}{note}")


def difference(actual: np.ndarray, ort: np.ndarray, ref: Any, tol: dict) -> Difference:
    """``actual`` against ONNX Runtime's ``ort``; outside = |actual − ort| > 2·bound(ref), except
    where both hold the same value (NaN on both sides included: a NaN the model computes, from a NaN
    constant say, is the right result for both; a NaN on one side only is an infinite difference)."""
    a, o = np.asarray(actual), np.asarray(ort)
    if a.shape != o.shape:
        return Difference(np.inf, np.inf, o.size, o.size, np.inf, False)
    same = _same(a, o)
    with np.errstate(invalid="ignore"):
        err = np.where(same, 0.0, np.abs(a.astype(np.float64) - o.astype(np.float64)))
    err = np.where(np.isnan(err), np.inf, err)
    if o.dtype.kind != "f" or not isinstance(ref, T):                  # integers, masks: exact
        bad = int(np.sum(~same))
        return Difference(float(np.max(err, initial=0.0)), float(bad > 0), bad, o.size, np.inf if bad else 0.0, False)
    b = tolerance.bound(ref.e, str(o.dtype), tol, ref.f)
    with np.errstate(invalid="ignore", divide="ignore"):
        rel = np.where(same, 0.0, err / np.maximum(np.abs(o.astype(np.float64)), np.finfo(np.float64).tiny))
        usage = tolerance.compare(a, ref.v, ref.e, str(o.dtype), tol, ref.f).usage if a.size else 0.0
    known = ~np.isnan(ref.v)
    peak = float(np.max(np.abs(ref.v), initial=0.0, where=known))
    vacuous = bool(b.size) and float(np.max(b, initial=0.0, where=known)) >= peak > 0
    return Difference(float(np.max(err, initial=0.0)), float(np.max(rel, initial=0.0)),
                      int(np.sum(~same & ~(err <= 2 * b))), o.size, usage, vacuous)


def _same(a: np.ndarray, o: np.ndarray) -> np.ndarray:
    """Where both arrays hold the same value: equal, or NaN on both sides."""
    same = a == o
    if a.dtype.kind == "f" and o.dtype.kind == "f":
        same |= np.isnan(a) & np.isnan(o)
    return same


# --- inputs ------------------------------------------------------------------------------------------

def inputs_for(graph: Graph, given: dict[str, np.ndarray], seed: int = 0) -> dict[str, np.ndarray]:
    """The given inputs, and the others generated: dynamic dims 1, floats uniform in [−1, 1)."""
    rng = np.random.default_rng(seed)
    out = {}
    for v in graph.inputs:
        if v.name in given:
            out[v.name] = given[v.name]
            continue
        if v.dtype.kind != "f":
            raise SpecError(f"input {v.name!r} is {v.dtype}; give it with --input {v.name}=FILE.npy")
        shape = tuple(1 if d is None else d for d in (v.shape or ()))
        limit(shape, v.dtype, f"input {v.name!r}")
        out[v.name] = rng.uniform(-1.0, 1.0, shape).astype(v.dtype)
    return out


# --- ONNX Runtime, plain ---------------------------------------------------------------------------

def ort_values(graph: Graph, feeds: dict[str, np.ndarray], every: bool = False) -> dict[str, np.ndarray]:
    """The outputs (with ``every``, every value an ONNX node defines) from a plain ONNX Runtime
    session on the validated model."""
    import onnxruntime as ort

    from nutshell.backends.onnx_impl.imported import with_outputs

    model = with_outputs(graph.model, list(graph.values), graph.types) if every else graph.model
    options = ort.SessionOptions()
    options.log_severity_level = 3
    sess = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(names, feeds), strict=True))



def compare_outputs(graph: Graph, runs: dict[str, dict], ort: dict, ref: dict, tol: dict
                    ) -> dict[str, dict[str, Difference]]:
    """{output: {backend: Difference}}."""
    return {name: {b: difference(out[name], ort[name], ref.get(name), tol) for b, out in runs.items()}
            for name in graph.outputs}


def local_usages(graph: Graph, runs: dict[str, Any], feeds: dict, ort: dict, tol: dict
                 ) -> list[tuple[str, dict[str, float]]]:
    """Per ONNX node, each backend's usage of the node's own bound when it runs the node on ONNX
    Runtime's values of the node's inputs (ONNX Runtime's own usage under ``onnxruntime``)."""
    known = {**graph.constants, **feeds, **ort}
    rows = []
    for node, steps in node_steps(graph):
        produced = {name for s in steps for _, name in s.outputs}
        needed = {name for s in steps for _, name in s.inputs} - produced
        if not needed <= set(known):
            continue
        given = {k: known[k] for k in needed}
        ref = run_node(steps, given, _ref_concept, _ref_structural, REFERENCE_LIMITS)
        outs = [n for n in produced if n in graph.values and n in ort]
        usage = {b: _usage(run_node(steps, given, imp.backend.run), ref, outs, tol) for b, imp in runs.items()}
        usage[ORT] = _usage(ort, ref, outs, tol)
        rows.append((node, usage))
    return rows


def _usage(values: dict, ref: dict, names: list[str], tol: dict) -> float:
    worst = 0.0
    for n in names:
        r, a = ref[n], np.asarray(values[n])
        if isinstance(r, T):
            worst = max(worst, tolerance.compare(a, r.v, r.e, str(a.dtype), tol, r.f).usage)
        elif not np.array_equal(a, r):
            worst = np.inf
    return worst
