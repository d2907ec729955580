"""Time every concept (forward and vjp) and every model's training step on every backend, at the
shapes of spec/bench.yaml; print a table and write bench.json (in reports/, or ``--reports DIR``).
bench.json is replaced, atomically, only by a bench that measured something: the records of a
bench in progress go to bench.partial.json, and one that measures nothing (every backend
unavailable or failing) exits 1 and leaves the earlier figures as they were.

Method, per measurement: one warm-up call and one calibration call (compilation, caches and
allocations happen there), then rounds of ``number`` calls each, sized to last a few
milliseconds, with the device synchronised at the end of every round; sampling stops once the
median is stable (its standard error, estimated from the median absolute deviation, under 1%) or
the time cap is reached. A backend's call and its bare library calls (below) are sampled in turn,
so that a change in the machine's load moves all of them and their ratios stay meaningful on a
busy machine. Different backends are not sampled in turn: their thread pools keep spinning after
a call (OpenBLAS's for up to ~0.1 s), so on a 2-core machine torch's conv2d at the large shape
took 18–24 ms when alternated with NumPy calls against 9.5 ms back to back. Each backend is
measured in its own steady state, one after the other; repeat the run to see how much the
machine's load moved their ratio.

Every figure states its spread as pytest-benchmark does (rounds, median, interquartile range,
outliers) and whether it is **unsteady**: fewer than 5 rounds, or an IQR over 10% of the median
(``~`` in the table, ``time.unsteady`` in bench.json); the bench also says whether other
processes loaded the machine while it ran. The statistics, the thresholds and why they are what
they are: :mod:`nutshell.conformance.timing`.

Forward calls go through the contract's benchmark level (``b.op`` on native arrays: no host
copies inside the timed region). The contract has no native-level vjp, so vjp calls go through
``b.vjp`` with NumPy arrays (marked ``api`` in bench.json and ``*`` in the table). A model's
training step is ``m.step`` (also ``api``).

Four ratios come from the same run:

* the share of the machine's peak (the best float32 matrix product among the installed libraries
  at a large square size, per device). It is counted at the FLOPs of bench.yaml's formula; an
  entry whose formula counts another algorithm's work (``flops_basis``: conv2d_fft counts a
  direct convolution's) gives an effective rate, marked ``†`` and recorded as ``flops_basis``;
* ``overhead`` (own×): time / the backend's own baseline, its own work called directly on its
  library (``Backend.baseline()``, see nutshell/backends/baseline.py): the wrapper's cost;
* ``canonical_ratio`` (can×): time / the canonical bare call a user of the library writes
  (``Backend.baseline().canonical()``): for ONNX Runtime a one-node model of the standard operator,
  for torch the ``torch.nn.functional`` call, for NumPy/CuPy im2col + one matrix product. Where
  the own baseline already is that call (torch, cupy) the record says ``same_as: baseline`` and
  the two ratios are one figure;
* each backend's throughput relative to torch's on the same case.

A bare call is timed only when its result agrees with the backend's; otherwise the record says why
it was skipped.
"""

from __future__ import annotations

import argparse
import ast
import json
import math
import operator
import os
import platform
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from nutshell import backends
from nutshell import spec as spec_mod
from nutshell.conformance.progress import steps
from nutshell.conformance.results import BenchOutcome, BenchResult, atomic_write, library_versions, machine_info
from nutshell.conformance.tables import Column, Table
from nutshell.conformance.timing import (
    MAX_SPREAD,
    MIN_ROUNDS,
    QUICK,
    Settings,
    cpu_clock,
    machine_load,
    measure,
    unsteady,
)
from nutshell.errors import SpecError, UnsupportedConcept
from nutshell.spec import models, validate
from nutshell.spec.signatures import output_shapes

BENCH_FILE = spec_mod.SPEC_DIR / "bench.yaml"
SIZES = ("small", "medium", "large")
DTYPE = "float32"
KIND = "nutshell-bench"
REPORTS = Path("reports")


# ------------------------------------------------------------------------- the spec's entries

@dataclass(frozen=True)
class Case:
    """One benchmark shape: an entry of bench.yaml at one size."""

    name: str                 # the entry of bench.yaml
    kind: str                 # concept | model
    size: str
    shapes: dict
    attrs: dict
    note: str
    entry: dict
    flops: float | None = None   # a model step's FLOPs (a concept's depend on its output shapes)

    @property
    def target(self) -> str:
        """The concept or model id it measures."""
        return self.entry.get("model", self.name)


def load_entries(path: str | Path = BENCH_FILE) -> dict[str, dict]:
    """The entries of bench.yaml (validated; concept entries must name a spec concept)."""
    doc = spec_mod.load_document(path)
    entries = doc.get("bench") or {}
    concepts = spec_mod.load().concepts
    for name, e in entries.items():
        where = f"{path}: bench entry {name}"
        if e.get("kind") not in ("concept", "model"):
            raise SpecError(f"{where}: field kind: must be 'concept' or 'model'")
        if e["kind"] == "concept" and name not in concepts:
            raise SpecError(f"{where}: no concept of that name in concepts.yaml")
        if e["kind"] == "model" and e.get("model", name) not in models.names():
            raise SpecError(f"{where}: no model {e.get('model', name)!r} in models.yaml")
        for key in ("flops", "flops_vjp", "sizes") if e["kind"] == "concept" else ("sizes",):
            if key not in e:
                raise SpecError(f"{where}: field {key} is missing")
        unknown = set(e["sizes"]) - set(SIZES)
        if unknown:
            raise SpecError(f"{where}: field sizes: unknown size(s) {sorted(unknown)}; use {', '.join(SIZES)}")
    return entries


def cases(entries: dict[str, dict], names: list[str] | None, sizes: list[str] | None) -> list[Case]:
    """The cases to run, in bench.yaml's order, of the entries or the concept and model ids in
    ``names`` (all when None); an unknown name is a SpecError naming the closest one."""
    spec_mod.check_names(names, dict.fromkeys(n for name, e in entries.items() for n in (name, e.get("model", name))),
                         what="benchmark")
    out = []
    for name, e in entries.items():
        if names and not {name, e.get("model", name)} & set(names):
            continue
        for size, d in e["sizes"].items():
            if sizes and size not in sizes:
                continue
            if e["kind"] == "concept":
                out.append(Case(name, "concept", size, d["shapes"], d.get("attrs", {}), d.get("note", ""), e))
                continue
            m = models.get(e.get("model", name))
            out.append(Case(name, "model", size, {"x": [d["batch"], *m.input_shape]}, {}, d.get("note", ""), e,
                            model_flops(m, d["batch"], entries)))
    return out


def model_flops(m: models.ModelSpec, batch: int, entries: dict[str, dict]) -> float:
    """One training step of model ``m``: Σ over its concept nodes (and its loss) of ``flops_vjp``."""
    shapes = m.shapes(batch)
    calls = [(n.op, {k: shapes[v] for k, v in n.inputs.items()}, n.attrs) for n in m.nodes if not n.structural]
    logits = shapes[m.output]
    other = "labels" if m.loss == "cross_entropy" else "targets"
    calls.append((m.loss, {"logits": logits, other: logits[:1]}, {}))
    return sum(flops(entries[op], "flops_vjp", s, output_shapes(op, s, a), a) for op, s, a in calls)


# --------------------------------------------------------------------------- FLOP formulas

_BINARY = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
           ast.FloorDiv: operator.floordiv, ast.Pow: operator.pow}
_FUNCS = {"size": lambda s: math.prod(s), "log2": math.log2, "min": min, "max": max}


def evaluate(expr: Any, names: dict[str, Any]) -> Any:
    """Evaluate a formula of bench.yaml: numbers, names, + − × / // **, subscripts, size/log2/min/max."""
    try:
        tree = ast.parse(str(expr), mode="eval").body
    except SyntaxError as exc:
        raise SpecError(f"bench formula {expr!r}: {exc.msg}") from None

    def ev(n: ast.AST) -> Any:
        if isinstance(n, ast.Constant) and isinstance(n.value, (int, float)):
            return n.value
        if isinstance(n, ast.Name) and n.id in names:
            return names[n.id]
        if isinstance(n, ast.BinOp) and type(n.op) in _BINARY:
            return _BINARY[type(n.op)](ev(n.left), ev(n.right))
        if isinstance(n, ast.UnaryOp) and isinstance(n.op, ast.USub):
            return -ev(n.operand)
        if isinstance(n, ast.Subscript):
            return ev(n.value)[ev(n.slice)]
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id in _FUNCS and not n.keywords:
            return _FUNCS[n.func.id](*(ev(a) for a in n.args))
        raise SpecError(f"bench formula {expr!r}: cannot evaluate {ast.unparse(n)!r} "
                        f"(known names: {', '.join(sorted(names))})")
    try:
        return ev(tree)
    except (IndexError, TypeError, ZeroDivisionError) as exc:
        raise SpecError(f"bench formula {expr!r}: {exc}") from None


def flops(entry: dict, key: str, shapes: dict, outs: dict, attrs: dict) -> float:
    """The FLOPs of one call: ``entry[key]`` over input shapes, ``out_``-prefixed output shapes,
    attributes and the entry's symbols (defined in order)."""
    names: dict[str, Any] = {**attrs, **{k: tuple(v) for k, v in shapes.items()},
                             **{f"out_{k}": tuple(v) for k, v in outs.items()}}
    for sym, expr in (entry.get("symbols") or {}).items():
        names[sym] = evaluate(expr, names)
    return float(evaluate(entry[key], names))


# ---------------------------------------------------------------------------- machine peak

def device_key(device: str) -> str:
    """The hardware a backend runs on: "cpu (numpy)" -> "cpu", "cuda:0" stays."""
    return device.split()[0]


def _matmul_calls(device: str, n: int) -> dict[str, Callable[[], tuple[Callable, Callable]]]:
    """library -> maker of (call, synchronize) for an n×n float32 product on ``device``."""
    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal((n, n), dtype=np.float32) for _ in range(2))
    index = int(device.partition(":")[2] or 0)

    def numpy_():
        return (lambda: a @ b), (lambda: None)

    def torch_():
        import torch

        dev = torch.device("cpu") if device == "cpu" else torch.device("cuda", index)
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError("no CUDA device for torch")
        ta, tb = torch.from_numpy(a).to(dev), torch.from_numpy(b).to(dev)
        return (lambda: ta @ tb), ((lambda: torch.cuda.synchronize(dev)) if dev.type == "cuda" else (lambda: None))

    def cupy_():
        import cupy

        with cupy.cuda.Device(index):
            ca, cb = cupy.asarray(a), cupy.asarray(b)
        return (lambda: ca @ cb), (lambda: cupy.cuda.Device(index).synchronize())

    def ort_():
        import onnx
        import onnxruntime as ort
        from onnx import TensorProto, helper

        g = helper.make_graph([helper.make_node("MatMul", ["a", "b"], ["c"])], "peak",
                              [helper.make_tensor_value_info(k, TensorProto.FLOAT, [n, n]) for k in "ab"],
                              [helper.make_tensor_value_info("c", TensorProto.FLOAT, [n, n])])
        opsets = [helper.make_opsetid("", 17)]
        model = helper.make_model(g, opset_imports=opsets, ir_version=helper.find_min_ir_version_for(opsets))
        if device != "cpu" and "CUDAExecutionProvider" not in ort.get_available_providers():
            raise RuntimeError("onnxruntime has no CUDA provider here (onnxruntime-gpu is not installed)")
        providers = ["CPUExecutionProvider"] if device == "cpu" else [("CUDAExecutionProvider", {"device_id": index})]
        sess = ort.InferenceSession(model.SerializeToString(), providers=providers)
        if device != "cpu" and sess.get_providers()[0] != "CUDAExecutionProvider":
            raise RuntimeError("onnxruntime has no CUDA provider here")
        onnx.checker.check_model(model)
        if device == "cpu":
            return (lambda: sess.run(None, {"a": a, "b": b})), (lambda: None)
        io = sess.io_binding()
        for k, v in (("a", a), ("b", b)):
            io.bind_ortvalue_input(k, ort.OrtValue.ortvalue_from_numpy(v, "cuda", index))
        io.bind_output("c", "cuda", index)
        return (lambda: sess.run_with_iobinding(io)), (lambda: None)

    calls = {"torch": torch_, "onnxruntime": ort_}
    return ({"numpy": numpy_} | calls) if device == "cpu" else (calls | {"cupy": cupy_})


def _copy_calls(device: str, nbytes: int) -> dict[str, Callable[[], tuple[Callable, Callable]]]:
    """library -> maker of (call, synchronize) for a copy of ``nbytes`` into a second buffer on ``device``."""
    src = np.ones(nbytes // 4, np.float32)
    index = int(device.partition(":")[2] or 0)

    def numpy_():
        dst = np.empty_like(src)
        return (lambda: np.copyto(dst, src)), (lambda: None)

    def torch_():
        import torch

        if not torch.cuda.is_available():
            raise RuntimeError("no CUDA device for torch")
        dev = torch.device("cuda", index)
        a = torch.from_numpy(src).to(dev)
        b = torch.empty_like(a)
        return (lambda: b.copy_(a)), (lambda: torch.cuda.synchronize(dev))

    def cupy_():
        import cupy

        with cupy.cuda.Device(index):
            a = cupy.asarray(src)
            b = cupy.empty_like(a)
        return (lambda: cupy.copyto(b, a)), (lambda: cupy.cuda.Device(index).synchronize())

    return {"numpy": numpy_} if device == "cpu" else {"torch": torch_, "cupy": cupy_}


def bandwidth(device: str, s: Settings) -> tuple[float | None, str | None]:
    """(GB/s, library) of the fastest streaming copy on ``device``: 2 · size bytes moved per call
    (every byte read once and written once), the memory roof of the report's roofline."""
    nbytes = (s.stream_mib_cpu if device == "cpu" else s.stream_mib_gpu) * 2**20
    best: tuple[float | None, str | None] = (None, None)
    for lib, make in _copy_calls(device, nbytes).items():
        try:
            call, sync = make()
            rate = 2 * nbytes / measure([call], sync, s)[0].median_s / 1e9
        except Exception:  # a library that is missing or cannot use this device
            continue
        if best[0] is None or rate > best[0]:
            best = (rate, lib)
    return best


def machine_peak(devices: set[str], s: Settings) -> dict[str, dict]:
    """Per device: the best float32 matrix-product rate among the installed libraries, in GFLOP/s,
    and the memory bandwidth of a streaming copy, in GB/s."""
    out = {}
    for dev in sorted(devices):
        n = s.peak_n_cpu if dev == "cpu" else s.peak_n_gpu
        rates: dict[str, float | str] = {}
        for lib, make in _matmul_calls(dev, n).items():
            try:
                call, sync = make()
                rates[lib] = 2 * n**3 / measure([call], sync, s)[0].median_s / 1e9
            except Exception as exc:  # a library that is missing or cannot use this device
                rates[lib] = f"unavailable: {type(exc).__name__}: {exc}"[:200]
        measured = {k: v for k, v in rates.items() if isinstance(v, float)}
        best = max(measured, key=measured.get) if measured else None
        gbs, copier = bandwidth(dev, s)
        out[dev] = {"n": n, "dtype": DTYPE, "gflops": measured.get(best), "library": best, "libraries": rates,
                    "bandwidth_gbs": gbs, "bandwidth_library": copier}
    return out


# ------------------------------------------------------------------------------ environment

def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _gpu_name(index: int) -> str:
    try:
        import torch

        if torch.cuda.is_available():
            return torch.cuda.get_device_name(index)
    except ImportError:
        pass
    try:
        import cupy

        return cupy.cuda.runtime.getDeviceProperties(index)["name"].decode()
    except Exception:
        return "unknown CUDA device"


def devices(keys: set[str]) -> dict[str, str]:
    """Device key -> its hardware name, for the devices the benchmarked backends use."""
    return {k: _cpu_name() if k == "cpu" else _gpu_name(int(k.partition(":")[2] or 0)) for k in sorted(keys)}


# ------------------------------------------------------------------------------ measurements

def _inputs(concept: spec_mod.Concept, shapes: dict, rng: np.random.Generator, scale: dict | None = None
            ) -> dict[str, np.ndarray]:
    """Seeded float32 inputs: normal times ``scale[name]`` (0.5 by default), labels in range,
    targets in [0, 1]."""
    out = {}
    for name, shape in shapes.items():
        if concept.input(name).dtype == "int64":
            out[name] = rng.integers(0, shapes["logits"][-1], size=shape).astype(np.int64)
        elif name == "targets":
            out[name] = np.asarray(rng.uniform(0.0, 1.0, size=shape), DTYPE)
        else:
            out[name] = np.asarray((scale or {}).get(name, 0.5) * rng.standard_normal(shape), DTYPE)
    return out


def host(value: Any) -> list[np.ndarray]:
    """Any library's result (tensor, CuPy or ORT array, or a tuple/list/dict of them) as NumPy arrays."""
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, (list, tuple)):
        return [a for v in value for a in host(v)]
    for get in ("detach", "get", "numpy"):
        if hasattr(value, get) and not isinstance(value, np.ndarray):
            if get == "detach":
                return [value.detach().cpu().numpy()]
            return [np.asarray(getattr(value, get)())]
    return [np.asarray(value)]


def agree(a: list[np.ndarray], b: list[np.ndarray]) -> bool:
    """Same values to float32 precision of the largest magnitude (relative 1e-3), in the same shapes
    once axes of length 1 are dropped (ONNX's LSTM adds a direction axis: (T, 1, N, H))."""
    if len(a) != len(b):
        return False
    for x, y in zip(a, b, strict=True):
        x, y = np.squeeze(np.asarray(x, np.float64)), np.squeeze(np.asarray(y, np.float64))
        scale = max(float(np.max(np.abs(y), initial=0.0)), 1e-30)
        if x.shape != y.shape or not np.allclose(x, y, rtol=1e-3, atol=1e-3 * scale):
            return False
    return True


Bare = Callable[[backends.Baseline], Callable[[], Any] | None]


@dataclass
class Job:
    """What one measurement times: the backend's call and its FLOPs; ``bare`` makes the same
    work's bare call from a baseline (the own one or the canonical one; None when the library has
    none), ``describe`` names it."""

    direction: str                  # forward | vjp | step
    level: str                      # native (benchmark level) | api (NumPy in and out)
    call: Callable[[], Any]
    flops: float
    bare: Bare
    describe: Callable[[backends.Baseline], str]
    result: Callable[[], list[np.ndarray]] | None = None   # the backend's result, for the agreement check


def concept_jobs(b: Any, case: Case) -> list[Job]:
    """Forward (benchmark level) and vjp (NumPy API) of one concept case."""
    c = b.spec.concept(case.name)
    inputs = _inputs(c, case.shapes, np.random.default_rng(0), case.entry.get("scale"))
    attrs = validate._check_attrs(c, case.attrs)
    outs = output_shapes(case.name, {k: v.shape for k, v in inputs.items()}, attrs)
    rng = np.random.default_rng(1)
    cots = {k: np.asarray(0.5 * rng.standard_normal(s), DTYPE) for k, s in outs.items()}
    op = b.op(case.name, case.attrs, dtype=DTYPE)
    native = {k: b.to_native(v) for k, v in inputs.items()}
    diff = [k for k in c.differentiable if k in inputs]
    describe = lambda base: base.describe(case.name, attrs, inputs)  # noqa: E731
    fwd = Job("forward", "native", lambda: op(**native), flops(case.entry, "flops", case.shapes, outs, attrs),
              lambda base: base.forward(case.name, attrs, inputs), describe,
              lambda: [b.to_numpy(v) for v in op(**native).values()])
    vjp = Job("vjp", "api", lambda: b.vjp(case.name, inputs, cots, case.attrs),
              flops(case.entry, "flops_vjp", case.shapes, outs, attrs),
              lambda base: base.vjp(case.name, attrs, inputs, cots), describe,
              lambda: [b.vjp(case.name, inputs, cots, case.attrs)[k] for k in diff])
    return [fwd, vjp]


def model_jobs(b: Any, case: Case) -> list[Job]:
    """One SGD step of a model on a seeded batch (the model API takes NumPy)."""
    mid = case.target
    rng = np.random.default_rng(0)
    m = b.model(mid, seed=0)
    x = np.asarray(0.5 * rng.standard_normal(case.shapes["x"]), DTYPE)
    labels = rng.integers(0, models.get(mid).classes, size=x.shape[0]).astype(np.int64)
    lr = float(case.entry.get("lr", 1e-3))
    return [Job("step", "api", lambda: m.step(x, labels, lr), case.flops,
                lambda base: base.step(mid, m.params(), x, labels, lr), lambda base: base.call,
                lambda: [np.asarray(m.loss_and_grads(x, labels)[0])])]


def _record(b: Any, case: Case, direction: str, level: str) -> BenchResult:
    return BenchResult(backend=b.name, device=b.device, concept=case.target, kind=case.kind, size=case.size,
                       direction=direction, level=level, dtype=DTYPE, shapes=case.shapes, attrs=case.attrs,
                       note=case.note, flops_basis=case.entry.get("flops_basis"))


def _bare(job: Job, base: backends.Baseline, expected: list[np.ndarray] | None
          ) -> tuple[dict | None, Callable[[], Any] | None]:
    """(the record's entry, the call to time) of one baseline for ``job``: (None, None) when it has
    no call for it; the call only when its result agrees with the backend's, else why not."""
    try:
        call = job.bare(base)
        if call is None:
            return None, None
        entry = {"library": base.library, "call": job.describe(base)}
        if expected is None or agree(expected, host(call())):
            return entry, call
        return entry | {"skipped": "its result disagrees with the backend's"}, None
    except Exception as exc:  # the library's own function does not take these attributes
        return {"library": base.library, "skipped": f"{type(exc).__name__}: {exc}"[:200]}, None


def _time_job(b: Any, job: Job, rec: BenchResult, peak: dict | None, s: Settings,
              base: backends.Baseline | None) -> None:
    """Time the backend's call and, interleaved with it, each bare call that agrees with it: the
    own baseline and the canonical call (once, when the baseline is the canonical call)."""
    canon = base.canonical() if base else None
    refs = {"baseline": base, "canonical": None if canon is base else canon}
    expected = job.result() if job.result and any(refs.values()) else None
    calls, timed = [job.call], []
    for field, ref in refs.items():
        entry, call = _bare(job, ref, expected) if ref is not None else (None, None)
        setattr(rec, field, entry)
        if call is not None:
            calls.append(call)
            timed.append(field)
    t, *others = measure(calls, b.synchronize, s)
    rec.flops, rec.time, rec.gflops = job.flops, t.to_json(), job.flops / t.median_s / 1e9
    rec.peak_share = rec.gflops / peak["gflops"] if peak and peak.get("gflops") else None
    times = dict(zip(timed, others, strict=True))
    for field, bt in times.items():
        getattr(rec, field)["time"] = bt.to_json()
    rec.overhead = t.median_s / times["baseline"].median_s if "baseline" in times else None
    rec.canonical_ratio = t.median_s / times["canonical"].median_s if "canonical" in times else None
    if canon is not None and canon is base and rec.baseline is not None:
        rec.canonical = {"library": base.library, "call": rec.baseline.get("call", base.call), "same_as": "baseline"}
        rec.canonical_ratio = rec.overhead


def _failed(rec: BenchResult, exc: Exception, message: str) -> BenchResult:
    """The record of a measurement that did not happen: unsupported, or an error."""
    rec.outcome = BenchOutcome.UNSUPPORTED if isinstance(exc, UnsupportedConcept) else BenchOutcome.ERROR
    rec.message = message
    return rec


def run_case(b: Any, case: Case, peak: dict | None, s: Settings, tick: Callable[[str], None]
             ) -> list[BenchResult]:
    """Every measurement of one case on one backend; failures become records, never exceptions."""
    directions = ("forward", "vjp") if case.kind == "concept" else ("step",)
    try:
        jobs = concept_jobs(b, case) if case.kind == "concept" else model_jobs(b, case)
    except Exception as exc:
        for _ in directions:
            tick("")
        return [_failed(_record(b, case, d, "native" if d == "forward" else "api"), exc,
                        f"{type(exc).__name__}: {exc}") for d in directions]
    base = b.baseline()
    records = []
    for job in jobs:
        tick(f"{b.name} {case.target} {case.size} {job.direction}")
        rec = _record(b, case, job.direction, job.level)
        try:
            _time_job(b, job, rec, peak, s, base)
        except UnsupportedConcept as exc:
            _failed(rec, exc, str(exc))
        except Exception as exc:
            _failed(rec, exc, f"{type(exc).__name__}: {exc}"[:500])
        records.append(rec)
    return records


# ------------------------------------------------------------------------------------ output

_DIRECTIONS = {"forward": "fwd", "vjp": "vjp*", "step": "step*"}
# 73 columns; a figure's mark (~ unsteady, † effective %peak, or a blank) hangs after its number
_COLUMNS = [Column("dir", 5), Column("backend", 7), Column("ms", 9, ">", sep=0), Column("GFLOP/s", 8, ">"),
            Column("%peak", 6, ">", hang=1), Column("own×", 6, ">", sep=0, hang=1),
            Column("can×", 6, ">", sep=0, hang=1), Column("±IQR", 6, ">", sep=0, hang=1),
            Column("rounds", 7, ">", sep=0), Column("out", 3, ">")]


def _num(v: float | None, width: int) -> str:
    if v is None:
        return "—".rjust(width)
    digits = 0 if v >= 1000 else 1 if v >= 100 else 2 if v >= 10 else 3
    return f"{v:{width}.{digits}f}"


def _mark(time: dict | None) -> str:
    """``~`` after a figure resting on an unsteady time, else a blank."""
    return "~" if unsteady(time) else " "


def _bare_time(r: BenchResult, field: str) -> dict | None:
    """The time a ratio divides by: the baseline's, or the canonical call's (the baseline's when
    the baseline is the canonical call)."""
    entry = getattr(r, field) or {}
    if entry.get("same_as") == "baseline":
        entry = r.baseline or {}
    return entry.get("time")


def row(r: BenchResult) -> tuple[tuple[str, ...], str | None]:
    """One measurement's cells (the case is the group above), and for one that failed the outcome and
    message after the direction and backend."""
    head = (_DIRECTIONS[r.direction], r.backend[:7])
    if r.outcome is not BenchOutcome.OK:
        return head, f"{r.outcome}: {r.message or ''}"
    t = r.time
    share = None if r.peak_share is None else 100 * r.peak_share
    rounds, out = t.get("samples"), t.get("outliers")
    return (*head, _num(1e3 * t["median_s"], 9), _num(r.gflops, 8), _num(share, 6) + ("†" if r.flops_basis else " "),
            _num(r.overhead, 6) + _mark(_bare_time(r, "baseline")),
            _num(r.canonical_ratio, 6) + _mark(_bare_time(r, "canonical")),
            f"{100 * t.get('spread', 0.0):5.0f}%{_mark(t)}", "—" if rounds is None else str(rounds),
            "—" if out is None else str(out)), None


def ratios(results: list[BenchResult], reference: str = "torch") -> list[str]:
    """Each other backend's throughput over ``reference``'s on the same case in the same run
    (median time of the reference / median time of the backend; above 1 is faster; ``~`` when
    either time is unsteady)."""
    ref = {(r.concept, r.size, r.direction): r.time
           for r in results if r.backend == reference and r.outcome is BenchOutcome.OK}
    lines = [f"{r.concept[:20]:<20} {r.size:<6} {r.direction:<8} {r.backend[:7]:<7}"
             f"{ref[key]['median_s'] / r.time['median_s']:8.2f}×"
             f"{' ~' if unsteady(ref[key]) or unsteady(r.time) else ''}"
             for r in results if r.backend != reference and r.outcome is BenchOutcome.OK
             and (key := (r.concept, r.size, r.direction)) in ref]
    return [f"throughput relative to {reference} (same shapes, same run):", *lines] if lines else []


def legend(results: list[BenchResult]) -> list[str]:
    """What the table's columns and marks mean, for the marks that occur."""
    lines = ["* through the NumPy API (host copies included)",
             "own× = time / the backend's own work called directly on its library",
             "can× = time / the canonical call a user writes: for ONNX Runtime a one-node",
             "       model of the standard op; torch.nn.functional; NumPy/CuPy im2col+matmul"]
    same = sorted({r.backend for r in results if (r.canonical or {}).get("same_as") == "baseline"})
    if same:
        lines.append(f"       (can× = own× for {', '.join(same)}: the own baseline is that call)"[:80])
    lines.append("±IQR = interquartile range / median; out = rounds beyond 1.5 IQR from quartiles")
    for basis in sorted({r.flops_basis for r in results if r.flops_basis}):
        lines.append(f"† %peak at a {basis}'s FLOPs: an effective rate (it can pass 100)"[:80])
    return lines


def steadiness(doc: dict) -> list[str]:
    """How many figures are unsteady, and whether other processes loaded the machine."""
    times = [t for r in doc["results"] if r.outcome is BenchOutcome.OK
             for t in (r.time, (r.baseline or {}).get("time"), (r.canonical or {}).get("time")) if t]
    shaky = sum(bool(unsteady(t)) for t in times)
    lines = [f"~ unsteady: {shaky} of {len(times)} figures (< {MIN_ROUNDS} rounds or ±IQR > {MAX_SPREAD:.0%}): "
             "not to be trusted"]
    load = doc.get("load")
    if load and load["loaded"]:
        lines += [f"machine loaded: other processes used {load['others']:.1f} of {load['cores']} cores during "
                  "the bench;", "  its figures are slower and noisier than on a quiet machine: rerun when idle"]
    elif load:
        lines.append(f"machine quiet: other processes used {load['others']:.2f} of {load['cores']} cores "
                     "during the bench")
    return lines


def parts(doc: dict) -> tuple[list[str], Table, list[str]]:
    """The results in 80 columns: the peaks (lines), the table of each case (concept or model, size)
    and its measurements, then (lines) the legend, how steady the figures were, the throughput
    relative to torch and the unavailable backends."""
    before = []
    for dev, p in doc["peak"].items():
        rate = f"{p['gflops']:.1f} GFLOP/s ({p['library']}, {p['n']}² {p['dtype']})" if p["gflops"] else "unknown"
        if p.get("bandwidth_gbs"):
            rate += f"; memory {p['bandwidth_gbs']:.1f} GB/s ({p['bandwidth_library']} copy)"
        before.append(f"peak {dev}: {rate}"[:80])
    t = Table(_COLUMNS, indent=2, overflow="truncate")
    case = None
    for r in doc["results"]:
        if (r.concept, r.size) != case:
            case = (r.concept, r.size)
            t.group(f"{r.concept} {r.size}{': ' + r.note if r.note else ''}")
        cells, span = row(r)
        t.row(*cells, span=span)
    after = legend(doc["results"]) + steadiness(doc) + ratios(doc["results"])
    after += [f"{name}: unavailable: {why}"[:80] for name, why in doc["unavailable"].items()]
    return before, t, after


def table(doc: dict) -> str:
    """:func:`parts` as plain text."""
    before, t, after = parts(doc)
    return "\n".join([*before, *t.lines(), *after])


def show(doc: dict, stream=None) -> None:
    """:func:`parts` on ``stream`` (default stdout): the table drawn by rich on a terminal."""
    stream = stream or sys.stdout
    before, t, after = parts(doc)
    for line in before:
        print(line, file=stream)
    t.show(stream)
    for line in after:
        print(line, file=stream)


def partial_path(out: Path) -> Path:
    """Where a bench in progress keeps its records: bench.json -> bench.partial.json."""
    return out.with_name(f"{out.stem}.partial{out.suffix}")


def measured(doc: dict) -> bool:
    """Whether a bench document holds at least one measurement."""
    return any(r.outcome is BenchOutcome.OK for r in doc["results"])


def run_bench(names: list[str] | None, concepts: list[str] | None, sizes: list[str] | None, s: Settings,
              out: Path, device: str | None = None, stream=sys.stderr) -> dict:
    """Run the benchmark; returns the document (its results as :class:`BenchResult`, as
    :func:`report.load_bench` returns it).

    The records go to :func:`partial_path` after every case (an interrupted bench leaves them
    there); ``out`` is replaced, atomically, only at the end and only when something was
    measured, so a bench that measures nothing (every backend unavailable, or failing) leaves
    the figures of an earlier one as they were.
    """
    start = cpu_clock()
    selected = cases(load_entries(), concepts, sizes)
    loaded, missing = backends.available(names, device)
    for b in loaded.values():
        b.warmup()                                   # kernels compiled before anything is timed
    keys = {device_key(b.device) for b in loaded.values()}
    print("bench: measuring the machine's peak GFLOP/s and memory bandwidth first", file=stream, flush=True)
    doc = {"kind": KIND, "schema_version": 1, "spec_version": spec_mod.load().version,
           "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "complete": False,
           "settings": asdict(s), "machine": machine_info(), "devices": devices(keys), "versions": library_versions(),
           "backends": {n: {"device": b.device} for n, b in loaded.items()}, "unavailable": missing,
           "peak": machine_peak(keys, s), "load": None, "results": []}
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = partial_path(out)
    total = sum(len(loaded) * (2 if c.kind == "concept" else 1) for c in selected)
    with steps("bench", total, stream) as advance:
        for case in selected:
            for b in loaded.values():
                doc["results"] += run_case(b, case, doc["peak"].get(device_key(b.device)), s, advance)
                _write(partial, doc)
    doc.update(complete=True, finished=datetime.now(timezone.utc).isoformat(timespec="seconds"),
               load=machine_load(start, cpu_clock(), os.cpu_count() or 1))
    if measured(doc):
        _write(out, doc)
    partial.unlink(missing_ok=True)
    return doc


def _write(out: Path, doc: dict) -> None:
    """bench.json: the document with its records as JSON."""
    atomic_write(out, json.dumps(doc | {"results": [r.to_json() for r in doc["results"]]}, indent=1))


# ---------------------------------------------------------------------------------- command

def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("-b", "--backend", action="append",
                   help=f"a backend to time (repeatable; default: every one that loads): {', '.join(backends.names())}")
    p.add_argument("--concept", action="append", help="concept or model of spec/bench.yaml (repeatable)")
    p.add_argument("--size", action="append", choices=SIZES, help="benchmark size (repeatable; default: all, "
                   "or medium with --quick)")
    p.add_argument("--quick", action="store_true", help="short time caps, the medium size unless --size is given")
    p.add_argument("--device", choices=["cpu", "cuda"], help="where every backend runs (default: the best)")
    p.add_argument("--reports", type=Path, default=REPORTS, metavar="DIR",
                   help=f"where bench.json goes (default {REPORTS}/)")
    p.add_argument("-o", "--output", type=Path, help="the file itself (default DIR/bench.json)")


def run(args: argparse.Namespace) -> int:
    """Exit 0 when no measurement failed, 1 when one did, when a requested backend is unavailable or
    when nothing was measured (bench.json is then left as it was), 2 for a name that does not exist."""
    backends.check_names(args.backend)
    settings = QUICK if args.quick else Settings()
    sizes = args.size or (["medium"] if args.quick else None)
    out = args.output or args.reports / "bench.json"
    doc = run_bench(args.backend, args.concept, sizes, settings, out, args.device)
    show(doc)
    if not measured(doc):
        print(f"nutshell bench: nothing was measured; {out} left as it was", file=sys.stderr)
        return 1
    print(f"bench: {out}")
    failed = any(r.outcome is BenchOutcome.ERROR for r in doc["results"]) or (args.backend and doc["unavailable"])
    return 1 if failed else 0
