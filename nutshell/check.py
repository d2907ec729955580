"""Run an ONNX model on every backend and on ONNX Runtime with the same inputs, and compare.

    nutshell check model.onnx [-b BACKEND]... [--per-node] [--input NAME=FILE.npy]... [--seed N]

Inputs not given with ``--input`` are generated from the declared shapes (dynamic dimensions set
to 1): floats uniform in [−1, 1), seeded. Per output and backend it prints the largest absolute
and relative difference from ONNX Runtime and the share of elements outside the bound of the
spec's tolerance model: the float64 reference (spec/reference) runs the same lowered graph with
tracked error bounds, and a backend and ONNX Runtime, each within its bound of the exact value,
may differ by twice that bound. Through a deep network that worst-case bound compounds (it grows
by about the ℓ1 norm of each layer's weights) and can exceed the values themselves; the table
says so ("vacuous") where it happens.

``--per-node`` also compares every value an ONNX node defines, and checks each node on its own:
the backend runs the node on ONNX Runtime's values of its inputs, and the result must lie within
the node's own bound (the reference of that node from the same inputs). The first node where a
backend leaves that bound is named: that is where the backends diverge, before the difference is
carried downstream. The exit status is 1 when any element lies outside its bound.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

import backends
import spec as spec_mod
from backends import onnx_import, validate
from backends.errors import NutshellError, SpecError, UnsupportedConcept
from backends.onnx_import import STRUCTURAL, Graph, Step
from backends.onnx_structural import limit
from spec import tolerance
from spec.reference import FORWARD
from spec.reference.tracked import T

ORT = "onnxruntime"


# --- the float64 reference of an imported graph, with tracked bounds --------------------------------

def _tracked(a: Any) -> Any:
    return a if isinstance(a, T) or np.asarray(a).dtype.kind != "f" else T(np.asarray(a, np.float64))


def _ref_concept(op: str, ins: dict, attrs: dict) -> dict:
    full = validate._check_attrs(spec_mod.load().concept(op), attrs)
    return FORWARD[op]({k: _tracked(v) for k, v in ins.items()}, full)


def _ref_structural(step: Step, ins: dict) -> dict:
    """A structural step on T values: the same plumbing on the values and on their bounds; a step
    that makes constants makes exact ones (bound 0)."""
    fn, makes = STRUCTURAL[step.op]
    values = fn({k: a.v if isinstance(a, T) else a for k, a in ins.items()}, step.attrs)
    if makes or not any(isinstance(a, T) for a in ins.values()):
        return {k: _tracked(v) for k, v in values.items()}
    bounds = fn({k: a.e if isinstance(a, T) else a for k, a in ins.items()}, step.attrs)
    return {k: T(v, bounds[k]) if np.asarray(v).dtype.kind == "f" else v for k, v in values.items()}


def reference(graph: Graph, feeds: dict[str, np.ndarray]) -> dict[str, Any]:
    """Every value of the graph in float64, floats as T (value and bound), from exact feeds."""
    return onnx_import.execute(graph, {k: _tracked(v) for k, v in feeds.items()}, _ref_concept, _ref_structural)


# --- one node at a time ------------------------------------------------------------------------------

def node_steps(graph: Graph) -> list[tuple[str, list[Step]]]:
    """(node, its steps) for every ONNX node that has steps, in graph order."""
    groups: dict[str, list[Step]] = {}
    for step in graph.steps:
        groups.setdefault(step.node, []).append(step)
    return list(groups.items())


def run_node(steps: list[Step], given: dict[str, Any], concept, structural=None) -> dict[str, Any]:
    """The values one node's steps define, from ``given`` (its inputs, constants included)."""
    return onnx_import.run_steps(steps, dict(given), concept, structural)


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
    """``actual`` against ONNX Runtime's ``ort``; outside = |actual − ort| > 2·bound(ref)."""
    a, o = np.asarray(actual), np.asarray(ort)
    if a.shape != o.shape:
        return Difference(np.inf, np.inf, o.size, o.size, np.inf, False)
    if o.dtype.kind != "f" or not isinstance(ref, T):                  # integers, masks: exact
        bad = int(np.sum(a != o))
        err = float(np.max(np.abs(a.astype(np.float64) - o.astype(np.float64)), initial=0.0))
        return Difference(err, float(bad > 0), bad, o.size, np.inf if bad else 0.0, False)
    a64, o64 = a.astype(np.float64), o.astype(np.float64)
    b = tolerance.bound(ref.e, str(o.dtype), tol)
    with np.errstate(invalid="ignore"):
        err = np.where(np.isfinite(o64) | np.isfinite(a64), np.abs(a64 - o64), 0.0)
        err = np.where(np.isnan(a64) & np.isnan(o64), 0.0, err)
        rel = err / np.maximum(np.abs(o64), np.finfo(np.float64).tiny)
        usage = tolerance.compare(a, ref.v, ref.e, str(o.dtype), tol).usage if a.size else 0.0
    peak = float(np.max(np.abs(ref.v), initial=0.0))
    return Difference(float(np.max(err, initial=0.0)), float(np.max(rel, initial=0.0)),
                      int(np.sum(~(err <= 2 * b))), o.size, usage, bool(b.size) and float(b.max()) >= peak > 0)


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


def _load_inputs(specs: list[str]) -> dict[str, np.ndarray]:
    out = {}
    for item in specs or []:
        name, sep, path = item.partition("=")
        if not sep or not name:
            raise SpecError(f"--input takes NAME=FILE.npy, got {item!r}")
        try:
            out[name] = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise SpecError(f"--input {name}: cannot read {path!r} as a .npy array: {exc}") from None
    return out


# --- ONNX Runtime, plain ---------------------------------------------------------------------------

def ort_values(graph: Graph, feeds: dict[str, np.ndarray], every: bool = False) -> dict[str, np.ndarray]:
    """The outputs (with ``every``, every value an ONNX node defines) from a plain ONNX Runtime
    session on the validated model."""
    import onnxruntime as ort

    from backends.onnx_impl.imported import with_outputs

    model = with_outputs(graph.model, list(graph.values), graph.types) if every else graph.model
    options = ort.SessionOptions()
    options.log_severity_level = 3
    sess = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(names, feeds), strict=True))


# --- the command -----------------------------------------------------------------------------------

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
        ref = run_node(steps, given, _ref_concept, _ref_structural)
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
            worst = max(worst, tolerance.compare(a, r.v, r.e, str(a.dtype), tol).usage)
        elif not np.array_equal(a, r):
            worst = np.inf
    return worst


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", type=Path, help="the ONNX model")
    p.add_argument("-b", "--backend", action="append", help="backend to compare (repeatable; default: every one)")
    p.add_argument("--per-node", action="store_true", help="compare every intermediate value and check each node")
    p.add_argument("--input", action="append", metavar="NAME=FILE.npy", help="an input's values (repeatable)")
    p.add_argument("--seed", type=int, default=0, help="seed of the generated inputs (default 0)")


def run(args: argparse.Namespace) -> int:
    graph = onnx_import.parse(args.file)
    tol = spec_mod.load().tolerance
    feeds = graph.check_feeds(inputs_for(graph, _load_inputs(args.input), args.seed))
    loaded, missing = backends.available(args.backend)
    print(f"{args.file}: graph {graph.name!r}, opset {graph.opset}, {len(graph.steps)} steps; inputs "
          + ", ".join(f"{k} {a.shape} {a.dtype}" for k, a in feeds.items()))
    for name, why in missing.items():
        print(f"  {name}: unavailable: {why}")
    runs, imported, failures = {}, {}, {}
    for name, b in loaded.items():
        try:
            imported[name] = b.import_onnx(graph)
            runs[name] = imported[name].run(feeds, every=args.per_node)
        except UnsupportedConcept as exc:
            print(f"  {name}: unsupported: {exc}")
        except NutshellError as exc:
            failures[name] = f"{type(exc).__name__}: {exc}"
    ref = reference(graph, feeds)
    ort = _baseline(graph, feeds, ref, args.per_node)
    bad = _print_outputs(compare_outputs(graph, runs, ort, ref, tol))
    if args.per_node:
        bad |= _print_nodes(graph, runs, feeds, ort, ref, {k: imported[k] for k in runs}, tol)
    for name, why in failures.items():
        print(f"  {name}: FAILED: {why}")
    return 1 if bad or failures else 0


def _baseline(graph: Graph, feeds: dict, ref: dict, every: bool) -> dict[str, np.ndarray]:
    """ONNX Runtime's values; where it cannot run the model (kernels of old opsets it dropped, a
    dilated SAME window), the float64 reference's values rounded to each value's dtype instead."""
    try:
        return ort_values(graph, feeds, every)
    except Exception as exc:
        print(f"  {ORT} cannot run the model ({type(exc).__name__}: {str(exc).strip().splitlines()[0][:200]}); "
              f"the '{ORT}' columns below hold the float64 reference rounded to each value's dtype")
    from onnx import helper

    def rounded(name: str, v: Any) -> Any:
        dtype = helper.tensor_dtype_to_np_dtype(graph.types[name]) if name in graph.types else np.float32
        return v.v.astype(dtype) if isinstance(v, T) else v

    return {k: rounded(k, v) for k, v in ref.items() if k in graph.values or k in graph.outputs}


def _print_outputs(table: dict[str, dict[str, Difference]]) -> bool:
    print(f"\ncompared with {ORT}; outside = |backend − {ORT}| > 2 × the tolerance model's bound; "
          "usage = max |backend − reference| / bound")
    bad = False
    for name, rows in table.items():
        print(f"output {name}:")
        print(f"  {'backend':<8} {'max abs':>10} {'max rel':>10}  {'outside':>15} {'share':>9}  {'usage':>9}")
        for b, d in rows.items():
            print(f"  {b:<8} {d.row()}")
            bad |= d.outside > 0
    return bad


def _print_nodes(graph: Graph, runs: dict, feeds: dict, ort: dict, ref: dict, imported: dict, tol: dict) -> bool:
    names = list(runs)
    print(f"\nper node: max abs difference from {ORT} along the whole chain; local usage = the node run on "
          f"{ORT}'s inputs, against its own bound (> 1: outside)")
    print(f"  {'node':<44}" + "".join(f"{n:>12}" for n in names) + "".join(f"{'local ' + n:>14}" for n in names))
    local = dict(local_usages(graph, imported, feeds, ort, tol))
    first = None
    for value, node in graph.values.items():
        if value not in ort or any(value not in r for r in runs.values()):
            continue
        diffs = [difference(r[value], ort[value], ref.get(value), tol) for r in runs.values()]
        usage = local.get(node, {})
        print(f"  {node[:44]:<44}" + "".join(f"{d.max_abs:12.3g}" for d in diffs)
              + "".join(f"{usage.get(n, float('nan')):14.3g}" for n in names))
        out = [n for n in names if usage.get(n, 0.0) > 1.0]
        if out and first is None:
            first = f"{node} on {', '.join(out)}"
    print(f"first node where a backend leaves its bound: {first or 'none'}")
    return first is not None
