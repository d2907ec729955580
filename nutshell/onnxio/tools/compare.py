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

import math
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
    """What the float64 reference holds, and what its steps allocate on top.

    Held: every float value as a T, ``len(T.__slots__)`` float64 arrays (the value and its four
    bounds, spec/reference/tracked.py); the run keeps every value (for per-node comparisons).

    On top of that a window concept (conv2d, the poolings) allocates a working set several times
    its result for the length of the step (:func:`window_work`): the padded input, every window's
    elements (N, C, kh, kw, oH, oW), a kh·kw-fold copy that the backends' own kernels never make,
    and the temporaries of T's arithmetic; every other concept a multiple of its largest value
    (:data:`CONCEPT_WORK`, :func:`concept_work`: 4 to 15 times, an LSTM about 45). The whole-graph
    check (:meth:`check_total`) adds the largest working set of any step to the values held together;
    each step is also checked on its own (its inputs, results and working set) when it runs, for
    the steps whose sizes only data tells. One instance per run: it remembers the largest working set it has checked."""

    ARRAYS = len(T.__slots__)       # float64 arrays per held float value

    def __init__(self) -> None:
        self.work: tuple[int, str] = (0, "")    # the largest working set checked so far, and its node

    def meta(self, a: Any) -> inference.Meta:
        m = inference.meta(a)
        return inference.Meta(m.shape, np.dtype(np.float64)) if m.dtype.kind == "f" else m

    def held(self, m: inference.Meta) -> int:
        return self.ARRAYS * m.nbytes if m.dtype.kind == "f" else m.nbytes

    def check(self, step: Step, ins: Mapping[str, inference.Meta], outs: inference.Outputs) -> None:
        names = dict(step.outputs)
        for res, m in outs.items():
            limit(m.shape, m.dtype, f"the float64 reference of its result {names[res]!r}")
        if step.op in WINDOWS:
            x, y = ins["x"].shape, outs["y"].shape
            attrs = resolve(step, ins)
            kernel = attrs["kernel"] if "kernel" in attrs else ins["w"].shape[2:]
            padded = _padded(x, y, kernel, attrs)
            limit(padded, np.float64, "the float64 reference's padded input")
            limit((*x[:2], *kernel, *y[2:]), np.float64, "the float64 reference's windows")
            weights = sum(m.nbytes for arg, m in ins.items() if arg != "x" and m.dtype.kind == "f")
            work = window_work(step.op, x, y, kernel, padded, weights)
        elif step.op in CONCEPT_WORK:
            work = concept_work(step.op, {k: m.shape for k, m in ins.items() if m.dtype.kind == "f"},
                                {k: m.shape for k, m in outs.items() if m.dtype.kind == "f"}, resolve(step, ins))
        else:
            return
        self.work = max(self.work, (work, step.node))
        total = sum(self.held(m) for m in (*ins.values(), *outs.values())) + work
        budget = validate.memory_budget()
        if total > budget:
            raise SpecError(f"the float64 reference of this step needs {_size(total)} (its inputs and "
                            f"results, and {_size(work)} while it runs), over the memory budget of "
                            f"{_size(budget)} (set ${validate.MEMORY_ENV} to change it)")

    def check_total(self, known: Mapping[str, inference.Meta | None]) -> None:
        """SpecError when the values held together, with the largest working set, exceed the budget."""
        held = {k: self.held(m) for k, m in known.items() if m is not None}
        (work, node), budget = self.work, validate.memory_budget()
        total = sum(held.values()) + work
        if total > budget:
            top = sorted(held, key=held.get, reverse=True)[:3]
            during = f", and {_size(work)} more while {node} runs" if work else ""
            raise SpecError(f"the float64 reference needs {_size(total)}: the graph's values "
                            f"{_size(sum(held.values()))} together (the largest: "
                            + ", ".join(f"{k!r} {held[k] / 2**20:.0f} MiB" for k in top)
                            + f"){during}; over the memory budget of {_size(budget)} "
                            f"(set ${validate.MEMORY_ENV} to change it)")


WINDOWS = frozenset({"conv2d", "max_pool2d", "avg_pool2d"})   # the window concepts the importer emits


def _size(n: int) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"


def _padded(x: tuple, y: tuple, kernel, attrs: dict) -> tuple[int, ...]:
    """The input as the reference pads it: the pads, and in ceil mode the last window's reach."""
    stride, dilation, pads = attrs["stride"], attrs.get("dilation", (1, 1)), attrs["pads"]
    return (*x[:2], *(max(x[2 + a] + pads[a] + pads[a + 2],
                          (y[2 + a] - 1) * stride[a] + dilation[a] * (kernel[a] - 1) + 1) for a in (0, 1)))


def window_work(op: str, x: tuple, y: tuple, kernel, padded: tuple, weights: int = 0) -> int:
    """Bytes a window step of the reference allocates beyond its inputs and its result
    (``weights``: the float64 bytes of its w and b).

    In float64 arrays of P (the padded input, (N, C, Hp, Wp)), K (the windows, (N, C, kh, kw,
    oH, oW)) and Y (one output, (N, O, oH, oW)), counted from what the code allocates, the step's
    peak is the largest of its phases:

    * padding (tracked.pad): np.pad of the value and the four bounds, then T's constructor copies
      the four bounds: 9 P;
    * the windows (tracked.windows): the padded T (5 P) stays while each of the kh·kw taps copies
      its four bound slices (4 K over all taps), np.stack makes 5 K and T's constructor copies 4 of
      them; the reshape that follows holds as much (taps, stacked, 4 copies): 5 P + 13 K;
    * the contraction: conv2d (the padded input is gone) holds the windows, one |windows| or
      r + a temporary of tracked.einsum, and 14 Y: value, magnitudes, the four bounds being built
      and the constructor's four copies, the second-order terms: 6 K + 14 Y; max_pool2d keeps the
      padded input, the windows and the reshape's four copies, and the max (5 Y + 4 copies) and
      argmax (int64): 5 P + 9 K + 10 Y; avg_pool2d keeps the padded input, the windows and one
      |windows|, and the sum's 12 Y (5 P + 6 K + 12 Y); then, beside the window sum (5 Y), the
      divisor's count mask on one plane (≤ 7 arrays of (Hp, Wp)) and its windows (13 of (kh, kw,
      oH, oW)); the division 15 Y.

    Each weight (w, b) is converted to a T and reshaped in the step: 10 times its float64 size;
    Python's objects, each tap's T and array headers: under 1 KiB a tap, counted as 2 KiB, and
    64 KiB besides. The result's own five arrays are held by the graph (:meth:`ReferenceLimits.held`),
    so they are taken off. Measured with tracemalloc over random shapes, strides, pads, dilations
    and groups, a step's peak lies up to 15% below this count (never above);
    tests/test_hostile_onnx.py holds a run's measured peak within the budget its check accepted."""
    f8 = np.dtype(np.float64).itemsize
    n, c = x[:2]
    kh, kw = kernel
    p = math.prod(padded) * f8
    k = n * c * kh * kw * y[2] * y[3] * f8
    out = math.prod(y) * f8
    phases = [9 * p, 5 * p + 13 * k]
    if op == "conv2d":
        phases.append(6 * k + 14 * out)
    elif op == "max_pool2d":
        phases.append(5 * p + 9 * k + 10 * out)
    else:
        plane, taps = padded[2] * padded[3] * f8, kh * kw * y[2] * y[3] * f8
        phases += [5 * p + 6 * k + 12 * out, 5 * p + 5 * out + 7 * plane + 13 * taps, 5 * p + 15 * out]
    objects = 2**11 * kh * kw + 2**16
    return max(max(phases) - ReferenceLimits.ARRAYS * out, 0) + 10 * weights + objects



CONCEPT_WORK: dict[str, str] = {
    # concept: its working set, in float64 arrays of X (the largest float input or output, one
    # float64 array of its elements: a held value is 5 of them), R (the softmax's reductions,
    # X / the axis' size) or of the shapes named; then the measured peak / this count, over random
    # shapes (tracemalloc, the result's five arrays taken off; tests/test_hostile_onnx.py)
    "relu": "4 X: tracked.maximum's five np.maximum results, T's constructor copying four (0.99-1.0)",
    "sigmoid": "7 X: _libm's object array (a pointer and a 24-byte float per element: 4 X), its float64 "
               "copy, z, the where's operands (0.99-1.0)",
    "tanh": "6 X: as sigmoid with one temporary less (0.99-1.0)",
    "softmax": "10 X + 5 R: x - max (5 X + 4 copies), exp (object array 4 X), the sum's |x| and 5 R, "
               "the division (0.97-1.0)",
    "log_softmax": "11.5 X + 5.5 R: softmax's, then log(sum) and d - lse (0.93-0.97)",
    "global_avg_pool2d": "1 X + 15 R, R its (N, C) result: the sum's |x|, then the sum (5 R and 4 "
                         "copies) and the division by H*W (0.9-1.0)",
    "dense": "10 X: tracked.einsum's |x|, |w| and 9 arrays of the result's size (value, magnitudes, "
             "the four bounds, the constructor's copies, the second-order terms) (0.5-0.95)",
    "lrn": "15 X + 1.25 KiB a channel: x*x, the window sums (a T and a sliced copy per channel, "
           "stacked and copied), the power's object array, the division (0.95-1.0)",
    "lstm": "5 x + 44 y + 9 W + 16 N*H + 2 N*(I+H) + 6.5 KiB a time step, W = 4H*(I+H): every step's "
            "[x, h] (5 N*(I+H)) and seven (N, H) T values stay in the steps list (5 x + 40 y), the "
            "stacked y copies 4 y more; [w_ih, w_hh] is concatenated (9 W, then 5 W held); one cell's "
            "einsum and gate temporaries; Python's objects, about 6.4 KiB a step (0.85-1.0)",
}
"""The non-window concepts an imported graph can hold (nutshell/onnxio/codec/lowering.py's CONCEPTS),
each with the working set its float64 reference allocates beyond its inputs and its result, as
:func:`concept_work` counts it, derived from spec/reference's code: each tracked operation makes
five arrays for its result and T's constructor copies four of them again, and _libm (exp, log,
tanh, pow) goes through an object array of Python floats, 4 float64 arrays' worth."""


def concept_work(op: str, ins: Mapping[str, tuple], outs: Mapping[str, tuple], attrs: Mapping[str, Any]) -> int:
    """Bytes the reference of a non-window concept allocates beyond its inputs and its result
    (:data:`CONCEPT_WORK`: what each counts and the measured peak / count), 64 KiB of Python
    objects besides; ``ins`` and ``outs`` are the shapes of the float values."""
    f8 = np.dtype(np.float64).itemsize
    x = max(math.prod(s) for s in (*ins.values(), *outs.values())) * f8
    objects = 2**16
    if op in ("softmax", "log_softmax"):
        shape = ins["x"]
        r = x // max(shape[attrs["axis"]], 1) if shape else x
        return int(10 * x + 5 * r if op == "softmax" else 11.5 * x + 5.5 * r) + objects
    if op == "global_avg_pool2d":
        return x + 15 * math.prod(outs["y"]) * f8 + objects
    if op == "lrn":
        return 15 * x + 1280 * ins["x"][1] + objects
    if op == "lstm":
        steps, n, i = ins["x"]
        h = ins["w_hh"][1]
        return f8 * (5 * steps * n * i + 44 * steps * n * h + 9 * 4 * h * (i + h) + 16 * n * h
                     + 2 * n * (i + h)) + 6656 * steps + objects
    return _TIMES_X[op] * x + objects


_TIMES_X = {"relu": 4, "sigmoid": 7, "tanh": 6, "dense": 10}   # CONCEPT_WORK's n X

def check_reference(graph: Graph, feeds: dict[str, np.ndarray]) -> None:
    """SpecError, naming the node, when the float64 reference of ``graph`` on ``feeds`` would hold a
    tensor over the limit or, with its largest working set, more than the memory budget: before
    anything runs."""
    limits = ReferenceLimits()
    inference.infer(graph, {k: limits.meta(v) for k, v in feeds.items()}, limits)


def reference(graph: Graph, feeds: dict[str, np.ndarray]) -> dict[str, Any]:
    """Every value of the graph in float64, floats as T (value and bound), from exact feeds; what
    it will hold and allocate is checked for the whole graph before the first step runs
    (ReferenceLimits), before the feeds themselves become T values (five float64 arrays each)."""
    check_reference(graph, feeds)
    return onnx_import.execute(graph, {k: _tracked(v) for k, v in feeds.items()}, _ref_concept, _ref_structural,
                               ReferenceLimits())


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
        ref = run_node(steps, given, _ref_concept, _ref_structural, ReferenceLimits())
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
