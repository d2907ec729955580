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
carried downstream. The exit status is 1 when any element lies outside its bound, when a backend
fails, when a requested backend cannot load, or when no backend could run the model; 2 for a
backend name that does not exist or an ``--input`` the model does not have.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np

from nutshell import backends
from nutshell import spec as spec_mod
from nutshell.errors import BackendUnavailable, NutshellError, SpecError, UnsupportedConcept
from nutshell.spec.reference.tracked import T

ORT = "onnxruntime"


def _input_files(specs: list[str] | None) -> dict[str, str]:
    """``--input NAME=FILE.npy`` options as {name: file}."""
    out = {}
    for item in specs or []:
        name, sep, path = item.partition("=")
        if not sep or not name:
            raise SpecError(f"--input takes NAME=FILE.npy, got {item!r}")
        out[name] = path
    return out


def _load_inputs(files: dict[str, str], inputs: list[str]) -> dict[str, np.ndarray]:
    """The arrays of ``files``, each named after one of the model's ``inputs`` (else a SpecError naming them)."""
    spec_mod.check_names(files, inputs, what="input")
    out = {}
    for name, path in files.items():
        try:
            out[name] = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise SpecError(f"--input {name}: cannot read {path!r} as a .npy array: {exc}") from None
    return out


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", type=Path, help="the ONNX model")
    p.add_argument("-b", "--backend", action="append",
                   help=f"a backend to compare (repeatable; default: every one): {', '.join(backends.names())}")
    p.add_argument("--device", choices=["cpu", "cuda"], help="where every backend runs (default: the best)")
    p.add_argument("--per-node", action="store_true", help="compare every intermediate value and check each node")
    p.add_argument("--input", action="append", metavar="NAME=FILE.npy", help="an input's values (repeatable)")
    p.add_argument("--seed", type=int, default=0, help="seed of the generated inputs (default 0)")


def _compare():
    """nutshell/onnxio/tools/compare.py, which needs onnx and onnxruntime (the rest of the CLI does not)."""
    try:
        from nutshell.onnxio.tools import compare as onnx_compare
    except ImportError as exc:
        raise BackendUnavailable(f"nutshell check needs onnx and onnxruntime ({exc.name or exc}); "
                                 "pip install 'nutshell[onnx]'") from None
    return onnx_compare


def run(args: argparse.Namespace) -> int:
    backends.check_names(args.backend)
    files = _input_files(args.input)
    c = _compare()
    from nutshell.onnxio.codec import reader as onnx_import

    graph = onnx_import.parse(args.file)
    tol = spec_mod.load().tolerance
    feeds = graph.check_feeds(c.inputs_for(graph, _load_inputs(files, [v.name for v in graph.inputs]), args.seed))
    c.check_reference(graph, feeds)                   # its sizes, before any backend runs
    loaded, missing = backends.available(args.backend, args.device)
    print(f"{args.file}: graph {graph.name!r}, opset {graph.opset}, {len(graph.steps)} steps; inputs "
          + ", ".join(f"{k} {a.shape} {a.dtype}" for k, a in feeds.items()))
    for name, why in missing.items():
        print(f"  {name}: unavailable: {why}")
    if not loaded:
        print(f"nutshell check: no backend can run here ({', '.join(missing)} unavailable)", file=sys.stderr)
        return 1
    runs, imported, failures = {}, {}, {}
    for name, b in loaded.items():
        try:
            imported[name] = b.import_onnx(graph)
            runs[name] = imported[name].run(feeds, every=args.per_node)
        except UnsupportedConcept as exc:
            print(f"  {name}: unsupported: {exc}")
        except NutshellError as exc:
            failures[name] = f"{type(exc).__name__}: {exc}"
    ref = c.reference(graph, feeds)
    ort = _baseline(graph, feeds, ref, args.per_node)
    bad = _print_outputs(c.compare_outputs(graph, runs, ort, ref, tol))
    if args.per_node:
        bad |= _print_nodes(graph, runs, feeds, ort, ref, {k: imported[k] for k in runs}, tol)
    for name, why in failures.items():
        print(f"  {name}: FAILED: {why}")
    if not runs:
        print("nutshell check: no backend ran the model", file=sys.stderr)
    return 1 if bad or failures or not runs or (args.backend and missing) else 0


def _baseline(graph, feeds: dict, ref: dict, every: bool) -> dict[str, np.ndarray]:
    """ONNX Runtime's values; where it cannot run the model (kernels of old opsets it dropped, a
    dilated SAME window), the float64 reference's values rounded to each value's dtype instead."""
    try:
        return _compare().ort_values(graph, feeds, every)
    except Exception as exc:
        print(f"  {ORT} cannot run the model ({type(exc).__name__}: {str(exc).strip().splitlines()[0][:200]}); "
              f"the '{ORT}' columns below hold the float64 reference rounded to each value's dtype")
    from onnx import helper

    def rounded(name: str, v: Any) -> Any:
        dtype = helper.tensor_dtype_to_np_dtype(graph.types[name]) if name in graph.types else np.float32
        return v.v.astype(dtype) if isinstance(v, T) else v

    return {k: rounded(k, v) for k, v in ref.items() if k in graph.values or k in graph.outputs}


def _print_outputs(table: dict[str, dict]) -> bool:
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


def _print_nodes(graph, runs: dict, feeds: dict, ort: dict, ref: dict, imported: dict, tol: dict) -> bool:
    names = list(runs)
    print(f"\nper node: max abs difference from {ORT} along the whole chain; local usage = the node run on "
          f"{ORT}'s inputs, against its own bound (> 1: outside)")
    print(f"  {'node':<44}" + "".join(f"{n:>12}" for n in names) + "".join(f"{'local ' + n:>14}" for n in names))
    c = _compare()
    local = dict(c.local_usages(graph, imported, feeds, ort, tol))
    first = None
    for value, node in graph.values.items():
        if value not in ort or any(value not in r for r in runs.values()):
            continue
        diffs = [c.difference(r[value], ort[value], ref.get(value), tol) for r in runs.values()]
        usage = local.get(node, {})
        print(f"  {node[:44]:<44}" + "".join(f"{d.max_abs:12.3g}" for d in diffs)
              + "".join(f"{usage.get(n, float('nan')):14.3g}" for n in names))
        out = [n for n in names if usage.get(n, 0.0) > 1.0]
        if out and first is None:
            first = f"{node} on {', '.join(out)}"
    print(f"first node where a backend leaves its bound: {first or 'none'}")
    return first is not None
