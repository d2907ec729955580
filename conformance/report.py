"""``reports/index.html``: one self-contained page comparing the backends.

It reads one or more ``results.json`` (runs from several machines merge into one page) and,
when present, a ``bench.json``. This module only prepares data: plain values for the Jinja2
templates in ``templates/`` (autoescaped; the markup and the one stylesheet live there) and the
pictures, which :mod:`nutshell.conformance.figures` draws with matplotlib as inline SVG. The page
has no script and no external reference (the stylesheet is inlined), so it opens offline.

Sections: the header (machines, devices, versions, dates, spec version); the coverage matrix
(concepts × backends: every check of a concept, every outcome counted, each cell linking to its
detail); the pairwise agreement between backends (from the cross checks) and determinism;
performance (from bench.json: a roofline per device, throughput relative to torch, every
measurement); the trained models (accuracy and loss per epoch, per backend); the glossary's
claims, each with its picture and its numbers in words; ONNX's node tests as an operator ×
backend matrix; the hunt (``nutshell hunt``, when a run carries one): its settings, the worst
bound usage per concept × backend and its findings with their bundles; the records of the other
sections (reliability, ONNX export and import, anything else), each record where its ``section``
puts it; then, per concept (and per model or claim id),
its definition, its vectors, its image vectors as pictures, and per backend the largest error
and the bound usage. The concepts are those of the spec the report is given (``--spec`` of the
run).
"""

from __future__ import annotations

import functools
import importlib.util
import math
import re
import sys
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from nutshell import spec as spec_mod
from nutshell.conformance import checks, figures
from nutshell.conformance.results import (  # load_results and load_bench: results files are read only there
    HUNT_FILE,
    OUTCOMES,
    BenchOutcome,
    BenchResult,
    CheckResult,
    Outcome,
    Section,
    atomic_write,
    load_bench,
    load_hunt,
    load_results,
    record_hunt,
)
from nutshell.conformance.timing import MAX_SPREAD, MIN_ROUNDS, unsteady
from nutshell.errors import NutshellError, SpecError
from nutshell.spec import models, validate
from nutshell.spec.signatures import LOW_PRECISION, output_shapes

CORE_CHECKS = ("forward", "vjp", "fd", "error", "cross")   # the columns of a concept's detail table
SECTIONS = (  # (section, anchor, title) of the plain record lists, in the page's order
    (Section.RELIABILITY, "reliability", "Reliability: bad inputs and fuzzing"),
    (Section.ONNX, "onnx", "ONNX export and import"),
    (Section.OTHER, "other", "Other checks"),
)
TEMPLATES = Path(__file__).with_name("templates")   # the page's Jinja2 templates and its stylesheet


@dataclass(frozen=True)
class Entry:
    """A check result and the run (results file) it came from: the columns are per run, so the
    same backend on two machines stays two columns."""

    run: int
    result: CheckResult


# ------------------------------------------------------------------------------------ columns

def columns(docs: list[dict]) -> list[dict]:
    """One column per backend per run, labelled as briefly as stays unique across runs."""
    cols = []
    for i, doc in enumerate(docs):
        host = doc.get("machine", {}).get("host", f"run {i + 1}")
        named = [*doc["backends"], *sorted({r.backend for r in doc["results"]} - {"cross"} - set(doc["backends"]))]
        for name in named:
            device = doc["backends"].get(name, {}).get("device", "?")
            cols.append({"run": i, "name": name, "device": device, "host": host, "why": None})
        for name, why in doc["unavailable"].items():
            cols.append({"run": i, "name": name, "device": "unavailable", "host": host, "why": why})
    for c in cols:
        c["label"] = _label(c, cols)
    for k, c in enumerate(cols):
        c["key"] = f"b{k}"
    return cols


_LEVELS = (lambda c: c["name"], lambda c: f"{c['name']} ({c['device']})",
           lambda c: f"{c['name']} ({c['device']}, {c['host']})",
           lambda c: f"{c['name']} ({c['device']}, {c['host']}, run {c['run'] + 1})")


def _label(c: dict, cols: list[dict]) -> str:
    """The shortest of name, name (device), name (device, host), ... that no other column shares."""
    return next((f(c) for f in _LEVELS if sum(f(o) == f(c) for o in cols) == 1), _LEVELS[-1](c))


def _column_of(cols: list[dict], run: int, backend: str) -> dict | None:
    return next((c for c in cols if c["run"] == run and c["name"] == backend), None)


# ----------------------------------------------------------------------------------- helpers

def anchor(*parts: str) -> str:
    return "-".join(re.sub(r"[^A-Za-z0-9_]+", "_", p) for p in parts)


def fmt(v: Any, digits: int = 3) -> str:
    """A number as a reader wants it: thousands separated, three significant digits, "—" for none."""
    if v is None:
        return "—"
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return str(v)
    if isinstance(v, int):
        return f"{v:,}"
    if v == 0 or math.isinf(v) or math.isnan(v):
        return f"{v:g}"
    return f"{v:.{digits}g}" if 1e-3 <= abs(v) < 1e5 else f"{v:.{digits - 1}e}"


def pct(v: float | None) -> str:
    """A share as a percentage: three significant digits below 10%, one decimal above."""
    if v is None:
        return "—"
    return f"{100 * v:.3g}%" if abs(v) < 0.1 else f"{100 * v:.1f}%"


def counts(records: Iterable[CheckResult]) -> dict[str, int]:
    c = dict.fromkeys((*OUTCOMES, "total"), 0)
    for r in records:
        c[r.outcome.value] += 1
        c["total"] += 1
    return c


def max_abs(r: CheckResult) -> float | None:
    """The largest absolute error among a record's compared arrays."""
    vals = [d["max_abs"] for d in (r.details or {}).values()
            if isinstance(d, dict) and isinstance(d.get("max_abs"), (int, float))]
    return max(vals) if vals else None


def _max(values) -> float | None:
    vals = [v for v in values if v is not None]
    return max(vals) if vals else None


def _outcome_class(outcome: Outcome) -> str:
    return {Outcome.PASS: "good", Outcome.FAIL: "bad", Outcome.ERROR: "bad", Outcome.SPEC: "bad"}.get(outcome, "none")


def _cell_class(c: dict) -> str:
    if c["total"] == 0:
        return "none"
    if c["fail"] or c["error"] or c.get("spec"):
        return "bad"
    return "good" if c["pass"] == c["total"] else "partial"


def _record_label(e: Entry, cols: list[dict]) -> str:
    c = _column_of(cols, e.run, e.result.backend)
    return c["label"] if c else e.result.backend


def _figure(name: str, title: str, svg_text: str, caption: str = "") -> dict:
    """What the template's figure macro takes: an id, a title, the SVG and a caption."""
    return {"id": name, "title": title, "svg": svg_text, "caption": caption}


# ------------------------------------------------------------------------ measured numbers as words

def words(details: dict | None, limit: int = 10) -> str:
    """A record's details as a short phrase: "largest |error| 1e-07, 10% of its bound; steps 42"."""
    items = list((details or {}).items())
    text = "; ".join(_phrase(k, v) for k, v in items[:limit])
    return text + (f"; and {len(items) - limit} more" if len(items) > limit else "")


def _phrase(key: str, v: Any) -> str:
    name = key.replace("_", " ")
    if isinstance(v, dict) and isinstance(v.get("max_abs"), (int, float)) and "usage" in v:
        off = f", {fmt(v['mismatched'])} of {fmt(v.get('total'))} outside it" if v.get("mismatched") else ""
        return f"{name}: largest |error| {fmt(v['max_abs'])}, {pct(v['usage'])} of its bound{off}"
    if isinstance(v, dict):
        inner = ", ".join(f"{k.replace('_', ' ')} {_value(x)}" for k, x in list(v.items())[:6])
        return f"{name}: {inner or 'none'}" + (f" and {len(v) - 6} more" if len(v) > 6 else "")
    return f"{name} {_value(v)}"


def _value(v: Any) -> str:
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, str):
        return v if len(v) <= 160 else v[:157] + "…"
    if isinstance(v, dict):
        return f"({len(v)} entries)"
    if isinstance(v, list):
        if v and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v):
            return ", ".join(fmt(x) for x in v) if len(v) <= 4 else \
                f"({len(v)} values, from {fmt(v[0])} to {fmt(v[-1])})"
        if all(isinstance(x, str) for x in v):
            return ", ".join(v[:6]) + (f" and {len(v) - 6} more" if len(v) > 6 else "")
        return f"({len(v)} entries)"
    return fmt(v)


# ------------------------------------------------------------------------------------ header

def header(docs: list[dict], bench: dict | None, version: str) -> dict:
    runs = []
    for i, d in enumerate(docs):
        m = d.get("machine") or {}
        runs.append({
            "n": i + 1, "host": m.get("host", "?"), "system": m.get("system", ""), "cpus": m.get("cpus", "?"),
            "python": m.get("python", "?"),
            "backends": ", ".join(f"{n} on {b.get('device', '?')}" for n, b in d["backends"].items()) or "none",
            "unavailable": "; ".join(f"{n}: {w}" for n, w in d["unavailable"].items()) or "—",
            "versions": ", ".join(f"{k} {v}" for k, v in (d.get("versions") or {}).items()) or "not recorded",
            "started": d.get("started", "?"), "finished": d.get("finished", "?"), "source": d.get("source", ""),
            "status": "complete" if d.get("complete", True) else "incomplete (interrupted)"})
    line = "no benchmark in this report"
    if bench:
        devs = ", ".join(f"{k}: {v}" for k, v in (bench.get("devices") or {}).items()) or "?"
        vers = ", ".join(f"{k} {v}" for k, v in (bench.get("versions") or {}).items()) or "?"
        line = (f"benchmark of {bench.get('date', '?')} on {(bench.get('machine') or {}).get('host', '?')} — "
                f"devices: {devs} — versions: {vers}")
    return {"version": version, "runs": runs, "bench": line,
            "generated": datetime.now(timezone.utc).isoformat(timespec="seconds")}


# ------------------------------------------------------------------------------------ coverage

def _concept_ids(spec: spec_mod.Spec, core: dict) -> list[str]:
    extra = sorted({cid for cid, _ in core} - set(spec.concepts))
    return [*spec.concepts, *extra]


def _cell(cls: str, text: str, href: str = "", extra: str = "", title: str = "") -> dict:
    """A matrix cell: its class (good, partial, bad, none), text, link, small print and hover text."""
    return {"cls": cls, "text": text, "href": href, "extra": extra, "title": title}


def _matrix_cell(n: dict, href: str) -> dict:
    if n["total"] == 0:
        return _cell("none", "not run")
    extra = " · ".join(f"{n[k]} {k}" for k in ("unsupported", "fail", "error", "spec") if n.get(k))
    return _cell(_cell_class(n), f"{n['pass']}/{n['total']}", href, extra)


def coverage(spec: spec_mod.Spec, core: dict, cols: list[dict]) -> dict:
    """Concepts × backends: passed / total, the other outcomes spelled out, a link to the detail."""
    rows = []
    for cid in _concept_ids(spec, core):
        cells = [_cell("none", "unavailable", title=c["why"]) if c["why"] is not None else
                 _matrix_cell(counts(core.get((cid, c["key"]), [])), f"#{anchor('c', cid, c['key'])}")
                 for c in cols]
        cross = counts(core.get((cid, "cross"), []))
        only_concepts = cross["total"] == 0 and cid not in spec.concepts       # only concepts have cross checks
        cells.append(_cell("none", "—") if only_concepts else
                     _matrix_cell(cross, f"#{anchor('concept', cid)}"))
        rows.append({"id": cid, "href": f"#{anchor('concept', cid)}", "cells": cells})
    totals = []
    for key in [*(c["key"] if c["why"] is None else None for c in cols), "cross"]:
        n = counts([r for (_, k), recs in core.items() if k == key for r in recs])
        totals.append("—" if key is None else f"{n['pass']}/{n['total']}")
    return {"columns": cols, "rows": rows, "totals": totals}


# ----------------------------------------------------------------------------------- agreement

STORAGE_ACC, FLOAT32_ACC = "storage-format accumulation", "float32 accumulation"   # conformance.precision's


def precision(spec: spec_mod.Spec, core: dict, cols: list[dict]) -> dict | None:
    """Concepts × (backend × low-precision dtype): the worst bound usage of the forward and vjp
    checks under the storage-format bound (the one they must meet) and under the float32-accumulation
    bound, the accumulation every result is consistent with, and the precision probe's verdict.
    None when the runs have no float16 or bfloat16 record."""
    present = [c for c in cols if c["why"] is None]
    rows = []
    for cid in _concept_ids(spec, core):
        cells = [_precision_cell(core.get((cid, c["key"]), []), dt) for c in present for dt in LOW_PRECISION]
        if any(cell["cls"] != "none" for cell in cells):
            rows.append({"id": cid, "cells": cells})
    if not rows:
        return None
    return {"columns": [{"label": c["label"], "dtype": dt} for c in present for dt in LOW_PRECISION], "rows": rows}


def _precision_cell(recs: list[CheckResult], dtype: str) -> dict:
    mine = [r for r in recs if r.dtype == dtype and r.check in ("forward", "vjp")]
    probe = next(((r.details or {}).get("verdict") for r in recs if r.dtype == dtype and r.check == "probe"), None)
    if not mine:
        return _cell("none", "—", extra=probe or "")
    n = counts(mine)
    ran = [r for r in mine if r.outcome is Outcome.PASS or r.outcome is Outcome.FAIL]
    storage = _max((r.details or {}).get("usage_by_bound", {}).get(STORAGE_ACC) for r in ran)
    f32 = _max((r.details or {}).get("usage_by_bound", {}).get(FLOAT32_ACC) for r in ran)
    storage_only = sum((r.details or {}).get("consistent_with") == STORAGE_ACC for r in ran)
    wider = sorted({str(r.details.get("computed_in")) for r in ran
                    if r.details and r.details.get("computed_in") not in (None, dtype)})
    acc = "storage acc." if storage_only else "f32 acc." if ran else ""
    title = (f"{n['pass']}/{n['total']} passed; worst usage {fmt(storage)} of the storage-format bound, {fmt(f32)} "
             f"of the float32-accumulation bound; {storage_only} of {len(ran)} results need the storage-format "
             "bound" + (f"; computed in {'; '.join(wider)}" if wider else "") + (f"; probe: {probe}" if probe else ""))
    extra = " · ".join(x for x in (acc, "wider" if wider else "", probe and f"probe: {probe}") if x)
    return _cell(_cell_class(n), f"{n['pass']}/{n['total']} · {fmt(storage, 2)}", extra=extra, title=title)


def agreement(cross: list[Entry], cols: list[dict]) -> list[dict]:
    """The worst pairwise max |difference| between backends, over every cross check: two heatmaps."""
    worst: dict[tuple[str, str, str], float] = {}
    for e in cross:
        for pair, v in ((e.result.details or {}).get("pairwise_max_abs") or {}).items():
            a, _, b = pair.partition("~")
            ca, cb = _column_of(cols, e.run, a), _column_of(cols, e.run, b)
            if ca is None or cb is None or not isinstance(v, (int, float)):
                continue
            key = (e.result.concept, ca["label"], cb["label"])
            worst[key] = max(worst.get(key, 0.0), float(v))
    if not worst:
        return []
    labels = sorted({x for _, a, b in worst for x in (a, b)})
    overall = [[None if a == b else _max([v for (_, x, y), v in worst.items() if {x, y} == {a, b}])
                for b in labels] for a in labels]
    pairs = sorted({(a, b) for _, a, b in worst})
    concepts = sorted({c for c, _, _ in worst})
    by_concept = [[worst.get((c, a, b)) for a, b in pairs] for c in concepts]
    titles = ("Worst |difference| between two backends, over all concepts", "Worst |difference| per concept")
    return [_figure("agree-all", titles[0], figures.heatmap(labels, labels, overall, titles[0], "agree-all",
                                                           "|difference|")),
            _figure("agree-concept", titles[1],
                    figures.heatmap(concepts, [f"{a} ~ {b}" for a, b in pairs], by_concept, titles[1],
                                    "agree-concept", "|difference|"))]


def determinism(entries: list[Entry], cols: list[dict]) -> dict:
    """Which concepts gave different bits on two runs of the same backend (catalogue 'determinism'):
    {"pairs": how many concept × backend pairs ran twice, "differ": [(concept, backend)]}."""
    runs = [e for e in entries if e.result.check == "catalogue" and e.result.vector is not None
            and e.result.id.endswith("-determinism]") and e.result.outcome is Outcome.PASS]
    differ = [(e.result.concept, _record_label(e, cols)) for e in runs
              if not (e.result.details or {}).get("identical", True)]
    return {"pairs": len(runs), "differ": differ}


# ---------------------------------------------------------------------------------------- hunt

FAULT = {"library": "the library", "backend": "the backend's own code"}


def hunt(docs: list[dict], spec: spec_mod.Spec) -> dict | None:
    """The hunts the runs carry (``nutshell hunt``, copied from hunt.json into results.json): per
    hunt its budget, seed and date; concepts × hunts, the worst bound usage reached (a finding's
    when the concept has one); the findings with their bundles. None when no run carries a hunt."""
    hunts = _hunt_columns(docs)
    if not hunts:
        return None
    seen = {cid for h in hunts for cid in h["run"]["worst_usage"]} | \
        {f["case"]["concept"] for h in hunts for f in h["run"]["found"]}
    concepts = [c for c in spec.concepts if c in seen] + sorted(seen - set(spec.concepts))
    rows = [{"id": cid, "cells": [_hunt_cell(h, cid) for h in hunts]} for cid in concepts]
    findings = [_finding_row(h, f) for h in hunts for f in h["run"]["found"]]
    return {"hunts": [_hunt_meta(h) for h in hunts], "rows": rows, "findings": findings}


def _hunt_columns(docs: list[dict]) -> list[dict]:
    """One column per backend's hunt, each hunt once however many runs carry it, labelled as
    briefly as stays unique (as the coverage columns are)."""
    cols, seen = [], set()
    for i, d in enumerate(docs):
        for name, run in sorted((d.get("hunt") or {}).get("backends", {}).items()):
            ident = (name, run.get("device"), run["finished"])
            if ident in seen:
                continue
            seen.add(ident)
            cols.append({"run": i, "name": name, "device": run.get("device", "?"),
                         "host": (d.get("machine") or {}).get("host", f"run {i + 1}"), "hunt": run})
    for k, c in enumerate(cols):
        c.update(label=_label(c, cols), key=f"h{k}")
    return [{"label": c["label"], "key": c["key"], "device": c["device"], "run": c.pop("hunt")} for c in cols]


def _hunt_meta(h: dict) -> dict:
    """A hunt's settings and figures, for the table above the matrix."""
    r = h["run"]
    return {"label": h["label"], "device": h["device"], "budget": _minutes(r["budget_s"]),
            "spent": _minutes(r.get("elapsed_s")), "seed": r["seed"], "calls": fmt(r["calls"]),
            "finished": r["finished"], "spec": r.get("spec_version", "—"), "found": len(r["found"]),
            "versions": ", ".join(f"{k} {v}" for k, v in sorted((r.get("versions") or {}).items())) or "—"}


def _minutes(seconds: float | None) -> str:
    return "—" if seconds is None else f"{seconds / 60:.3g} min"


def _hunt_cell(h: dict, cid: str) -> dict:
    """One concept of one hunt: its finding (bad: a call beyond its bound, linking to the finding's
    row) when it has one, else the worst usage over the passing calls; the calls in the hover text."""
    worst = h["run"]["worst_usage"].get(cid)
    passing = f"worst over {fmt(worst['calls'])} passing calls: {_worst_call(worst)}" if worst else "no passing call"
    found = next((f for f in h["run"]["found"] if f["case"]["concept"] == cid), None)
    if found is not None:
        usage = found.get("usage")
        text, extra = (fmt(usage), f"finding: {found['kind']}") if usage is not None else (found["kind"], "finding")
        return _cell("bad", text, f"#{_finding_anchor(h, found)}", extra,
                     f"{found['kind']} on {case_words(found['case'])}\n{passing}")
    if worst is None:
        return _cell("none", "—")
    return _cell("good", fmt(worst["usage"]), extra=f"{fmt(worst['calls'])} calls", title=passing)


def _worst_call(worst: dict) -> str:
    """The worst usage and the call that reached it in words, with the seed and scale that rebuild
    its inputs when known; no call reached more than 0 when every result was exact."""
    if not worst["case"]:
        return f"{fmt(worst['usage'])}, every result exact"
    call = worst.get("call")
    return f"{fmt(worst['usage'])} on {worst['case']}" + \
        (f", seed {call['seed']}, scale {fmt(call['scale'])}" if call else "")


def case_words(case: dict) -> str:
    """A drawn call (hunt_cases.Case.to_json) in words: concept, direction, dtype, sizes, attributes,
    seed and scale."""
    dims = " ".join(f"{k}={v}" for k, v in case["dims"].items())
    attrs = " ".join(f"{k}={_value(v)}" for k, v in case["attrs"].items())
    return " ".join(x for x in (case["concept"], case["mode"], case["dtype"], dims, attrs) if x) + \
        f", seed {case['seed']}, scale {fmt(case['scale'])}"


def _finding_anchor(h: dict, found: dict) -> str:
    return anchor("hunt", h["key"], found["case"]["concept"], found["kind"])


def _finding_row(h: dict, f: dict) -> dict:
    """A finding as the findings table shows it: where, what, whose fault, the bundle's folder."""
    lib = f.get("library")
    fault = lib if f.get("fault") == "library" and lib else FAULT.get(f.get("fault", ""), "—")
    message = f.get("message", "")
    return {"anchor": _finding_anchor(h, f), "label": h["label"], "concept": f["case"]["concept"],
            "kind": f["kind"], "usage": fmt(f.get("usage")), "call": case_words(f["case"]), "fault": fault,
            "bundle": f["bundle"], "message": message if len(message) <= 300 else message[:297] + "…"}


# --------------------------------------------------------------------------------- performance

def performance(bench: dict | None, spec: spec_mod.Spec, looks: figures.Looks) -> dict | None:
    """Peaks, a roofline per device, throughput relative to torch, and every measurement."""
    if not bench or not bench.get("results"):
        return None
    ok = [r for r in bench["results"] if r.outcome is BenchOutcome.OK]
    peaks = [{"device": d, "name": (bench.get("devices") or {}).get(d, ""), "gflops": p.get("gflops"),
              "library": p.get("library"), "n": p.get("n"), "dtype": p.get("dtype"),
              "bandwidth": p.get("bandwidth_gbs"),
              "libraries": ", ".join(f"{k} {fmt(v)}" for k, v in (p.get("libraries") or {}).items())}
             for d, p in (bench.get("peak") or {}).items()]
    rows = [_perf_row(r) for r in bench["results"]]
    return {"peaks": peaks, "rooflines": rooflines(ok, bench, spec, looks), "relative": relative(ok, looks),
            "rows": rows, "unsteady": any(r.get(k) for r in rows for k in ("unsteady", "overhead_unsteady",
                                                                            "canonical_unsteady")),
            "canonical": any(r.get("canonical") or r.get("call") for r in rows),
            "bases": sorted({r["basis"] for r in rows if r.get("basis")}), "load": _load(bench.get("load")),
            "min_rounds": MIN_ROUNDS, "max_spread": f"{MAX_SPREAD:.0%}"}


def _load(load: dict | None) -> str:
    """Whether other processes loaded the machine while the bench ran, in words."""
    if not load or not isinstance(load.get("others"), (int, float)):
        return ""
    state = "loaded: its figures lose about that share of the cores" if load.get("loaded") else "quiet"
    return (f"While the bench ran, other processes used {load['others']:.2g} of the machine's {load.get('cores', '?')} "
            f"cores: the machine was {state}.")


def _device(r: BenchResult) -> str:
    """The hardware a measurement ran on, as bench.json keys its peaks: "cpu (numpy)" -> "cpu"."""
    return (r.device or "?").split()[0]


def traffic(spec: spec_mod.Spec, concept: str, shapes: dict, attrs: dict | None) -> int | None:
    """The least bytes one call moves: every input read once and every output written once, at
    4 bytes a float32 element and 8 an int64 label; None when the spec cannot size the call."""
    c = spec.concepts.get(concept)
    if c is None or not shapes:
        return None
    try:
        views = {k: np.broadcast_to(np.zeros((), np.int64 if c.input(k).dtype == "int64" else np.float32), s)
                 for k, s in shapes.items()}
        given, full, _ = validate.check_views(c, views, attrs or {}, budget=False)
    except (NutshellError, ValueError):
        return None
    outs = output_shapes(concept, {k: a.shape for k, a in given.items()}, full)
    return sum(a.size * a.itemsize for a in given.values()) + 4 * sum(math.prod(s) for s in outs.values())


def rooflines(ok: list[BenchResult], bench: dict, spec: spec_mod.Spec, looks: figures.Looks) -> list[dict]:
    """Per device: every concept's forward call (native level) at its arithmetic intensity."""
    out = []
    for device in dict.fromkeys(_device(r) for r in ok):
        points = []
        for r in ok:
            moved = traffic(spec, r.concept, r.shapes, r.attrs) if r.kind == "concept" else None
            if _device(r) == device and r.direction == "forward" and r.flops and r.gflops and moved:
                points.append(figures.Point(r.backend, r.concept, r.size, r.flops / moved, r.gflops,
                                            bool(unsteady(r.time))))
        if not points:
            continue
        peak = (bench.get("peak") or {}).get(device) or {}
        name = (bench.get("devices") or {}).get(device)
        title = f"Roofline of {device}" + (f" ({name})" if name else "") + ": every concept's forward call"
        roofs = "Roofs: the measured peak (the best float32 matrix product)"
        roofs += (f" and the measured memory bandwidth, {fmt(peak['bandwidth_gbs'])} GB/s."
                  if peak.get("bandwidth_gbs") else
                  "; this bench.json has no measured memory bandwidth, so the slanted roof is not drawn.")
        caption = (f"{roofs} Each point is one measurement (a concept at one size on one backend); a point far "
                   "below the flat roof at high intensity is compute-bound and slow, one on the left is bound by "
                   "memory traffic. Intensity counts every input read once and every output written once.")
        key = f"roofline-{anchor(device)}"
        out.append(_figure(key, title, figures.roofline(title, points, peak.get("gflops"), peak.get("bandwidth_gbs"),
                                                        looks, key), caption))
    return out


def relative(ok: list[BenchResult], looks: figures.Looks, reference: str = "torch") -> list[dict]:
    """Per direction, each other backend's throughput over ``reference``'s on the same case
    (concept, size, direction), at the medium size when measured, else the first one measured."""
    ref = {(r.concept, r.size, r.direction): r.time["median_s"] for r in ok if r.backend == reference}
    out = []
    for direction in ("forward", "vjp", "step"):
        mine = [r for r in ok if r.direction == direction and r.backend != reference
                and (r.concept, r.size, r.direction) in ref]
        sizes = list(dict.fromkeys(r.size for r in mine))
        if not sizes:
            continue
        size = "medium" if "medium" in sizes else sizes[0]
        mine = [r for r in mine if r.size == size]
        groups = list(dict.fromkeys(r.concept for r in mine))
        series: dict[str, list[float | None]] = {}
        for r in mine:
            series.setdefault(r.backend, [None] * len(groups))[groups.index(r.concept)] = \
                ref[(r.concept, r.size, r.direction)] / r.time["median_s"]
        what = {"forward": "forward calls", "vjp": "vjp calls", "step": "training steps"}[direction]
        title = f"Throughput relative to {reference}: {what}, {size} shapes"
        key = f"relative-{direction}"
        out.append(_figure(key, title, figures.relative(title, groups, series, looks, reference, key),
                           f"{reference}'s median time over the backend's on the same shapes in the same run; "
                           "a bar to the right of 1 is faster than torch, to the left slower."))
    return out


def _perf_row(r: BenchResult) -> dict:
    row = {"concept": r.concept, "size": r.size, "direction": r.direction + ("" if r.level == "native" else "*"),
           "backend": r.backend, "device": r.device or ""}
    if r.outcome is not BenchOutcome.OK:
        return row | {"cls": "bad" if r.outcome is BenchOutcome.ERROR else "none",
                      "message": f"{r.outcome.value}: {r.message or ''}"}
    base = r.baseline or {}
    own = bool(unsteady(r.time))
    return row | {"ms": fmt(1e3 * r.time["median_s"]), "spread": f"±{100 * r.time.get('spread', 0):.0f}%",
                  "gflops": fmt(r.gflops), "share": fmt(None if r.peak_share is None else 100 * r.peak_share),
                  "basis": r.flops_basis or "", "overhead": fmt(r.overhead),
                  "baseline": base.get("library", "—"), "skipped": base.get("skipped"), "unsteady": own,
                  "overhead_unsteady": own or bool(unsteady(base.get("time")))} | canonical(r)


def canonical(r: BenchResult) -> dict:
    """The ratio to the canonical bare call a user of the library writes (``canonical_ratio``) and
    that call's name (``canonical``: library, call, or ``same_as`` the baseline, or why skipped);
    empty for a record without them (a bench.json of an earlier bench)."""
    ratio, call = r.canonical_ratio, r.canonical or {}
    name = "the baseline" if call.get("same_as") == "baseline" else call.get("call") or call.get("library") or ""
    return {"canonical": "" if ratio is None else fmt(ratio),
            "call": f"skipped: {call['skipped']}" if call.get("skipped") else name,
            "canonical_unsteady": ratio is not None and bool(unsteady(r.time) or unsteady(call.get("time")))}


# ------------------------------------------------------------------------------------- records

def record_rows(recs: list[Entry], cols: list[dict]) -> list[dict]:
    """One row per record: id, backend, outcome, usage, what it measured in words, why not passed."""
    return [{"id": e.result.id, "backend": _record_label(e, cols), "outcome": e.result.outcome.value,
             "cls": _outcome_class(e.result.outcome), "usage": fmt(e.result.usage), "words": words(e.result.details),
             "message": e.result.message or "", "rerun": e.result.rerun or ""} for e in recs]


def record_list(recs: list[Entry], cols: list[dict]) -> dict:
    """Counts per backend column, then the records (a long list folded, what did not pass first)."""
    per_col: dict[str, list[CheckResult]] = defaultdict(list)
    for e in recs:
        per_col[_record_label(e, cols)].append(e.result)
    bad = [e for e in recs if e.result.outcome is not Outcome.PASS]
    return {"summary": [{"label": label, "counts": counts(rs)} for label, rs in per_col.items()],
            "outcomes": [*OUTCOMES, "total"], "rows": record_rows(recs, cols), "folded": len(recs) > 40,
            "bad": record_rows(bad, cols)}


# ------------------------------------------------------------------------------------ training

def training(recs: list[Entry], cols: list[dict], looks: figures.Looks, drawn: frozenset[str] = frozenset()) -> dict:
    """One chart per model trained on its data (check "digits"): test accuracy and loss against
    epoch, a line per backend; the final numbers per backend, and a link to the trained filters
    when the concepts section draws them (their figure's id in ``drawn``); then every other
    model record."""
    trained = [e for e in recs if e.result.check == "digits"]
    charts = []
    for model in dict.fromkeys(e.result.concept for e in trained):
        runs, finals = {}, []
        for e in (e for e in trained if e.result.concept == model):
            d, label = e.result.details or {}, _record_label(e, cols)
            if isinstance(d.get("epochs"), list) and d["epochs"]:
                runs[label] = {"accuracy": d["epochs"], "loss": d.get("epoch_losses")}
            finals.append({"backend": label, "outcome": e.result.outcome.value, "cls": _outcome_class(e.result.outcome),
                           "accuracy": pct(d.get("test_accuracy")), "min_accuracy": pct(d.get("min_accuracy")),
                           "steps": fmt(d.get("steps")), "loss": fmt(d.get("final_loss")),
                           "seconds": fmt(d.get("seconds")), "message": e.result.message or ""})
        title, _ = _describe_text(model)
        key = f"training-{anchor(model)}"
        losses = any(run["loss"] for run in runs.values())
        name = "Test accuracy and training loss per epoch" if losses else "Test accuracy per epoch"
        caption = ("Test accuracy after each epoch (left) and the epoch's mean minibatch loss (right), one line per "
                   "backend" if losses else "Test accuracy after each epoch, one line per backend (these records keep "
                   "no loss per epoch, only the final loss in the table)") + \
            "; a smaller marker inside a larger one is two backends agreeing."
        figure = _figure(key, name, figures.training(name, runs, looks, key), caption) if runs else None
        filters = f"filters-{anchor(model)}"
        charts.append({"id": model, "title": title or model, "figure": figure, "finals": finals,
                       "filters": f"#fig-{filters}" if filters in drawn else ""})
    others = [e for e in recs if e.result.check != "digits"]
    return {"models": charts, "others": record_list(others, cols) if others else None}


# -------------------------------------------------------------------------------------- claims

def claims(recs: list[Entry], cols: list[dict], looks: figures.Looks) -> list[dict]:
    """Per claim that ran, in the order of claims.yaml: its picture, its statement, and per backend
    what it measured."""
    by_claim: dict[str, list[Entry]] = defaultdict(list)
    for e in recs:
        by_claim[e.result.concept].append(e)
    known = _claims()
    out = []
    for cid in [*(c for c in known if c in by_claim), *sorted(set(by_claim) - set(known))]:
        claim, entries = known.get(cid, {}), by_claim.get(cid, [])
        results = [{"backend": _record_label(e, cols), "outcome": e.result.outcome.value,
                    "cls": _outcome_class(e.result.outcome), "words": claim_words(cid, e.result.details or {}),
                    "message": e.result.message or "", "rerun": e.result.rerun or ""} for e in entries]
        out.append({"id": cid, "anchor": anchor("claim", cid), "title": claim.get("title", cid),
                    "claim": claim.get("claim", ""), "figure": _claim_figure(cid, entries, cols, looks),
                    "results": results})
    return out


def _claim_figure(cid: str, entries: list[Entry], cols: list[dict], looks: figures.Looks) -> dict | None:
    """The claim's picture from the records that hold what it needs; None when none does."""
    picture, claim = figures.CLAIMS.get(cid), _claims().get(cid)
    if picture is None or claim is None:
        return None
    runs = {_record_label(e, cols): e.result.details for e in entries
            if e.result.details and all(k in e.result.details for k in picture.needs)}
    if not runs:
        return None
    key = f"claim-{anchor(cid)}"
    return _figure(key, picture.title, picture.draw(runs, claim, looks, key, picture.title))


def claim_words(cid: str, d: dict) -> str:
    """What a claim's record measured, as a sentence; any other details (an older record, a claim
    without a sentence here) as words."""
    try:
        return CLAIM_WORDS[cid](d)
    except (KeyError, TypeError, ValueError, ZeroDivisionError):
        return words(d)


def _configs(d: dict) -> list[dict]:
    return [d[k] for k in sorted((k for k in d if re.fullmatch(r"config\d+", k)), key=lambda k: int(k[6:]))]


def _usages(d: dict, key: str) -> str:
    """A claim's bound usages, one per configuration, as "0.236% and 0.245%"."""
    shares = [pct(c[key]) if c[key] < 1 else f"{fmt(c[key])} times" for c in _configs(d)]
    return " and ".join(shares)


CLAIM_WORDS = {
    "linear_collapse": lambda d: (
        f"After {d['layers']:,} layers the stack has moved the batch by {pct(d['relative_change'])} (relative), yet "
        f"it differs from the single layer of their product by at most {fmt(d['max_abs_diff'])}: "
        f"{pct(d['bound_usage'])} of what rounding allows."),
    "xor_needs_nonlinearity": lambda d: (
        f"The two ReLU units get {d['relu_correct']} of 4 points right (largest error {fmt(d['relu_max_abs_error'])});"
        f" the best of {d['linear_models']:,} linear models gets {d['linear_best_correct']} of 4, and together they "
        f"realise only {d['linear_labellings']} of the 16 labellings of the square."),
    "convolution_theorem": lambda d: (
        f"FFT and direct convolution differ by at most {fmt(max(c['max_abs_diff'] for c in _configs(d)))}, that is "
        f"{_usages(d, 'bound_usage')} of the allowed rounding in the {len(_configs(d))} configurations."),
    "convolution_is_flipped_correlation": lambda d: (
        f"conv2d(x, flip(w)) matches convolve2d(x, w) to within {_usages(d, 'bound_usage')} of the allowed "
        f"rounding; conv2d(x, w), unflipped, misses it by {_usages(d, 'unflipped_usage')} that allowance."),
    "pooling_shift_invariance": lambda d: (
        f"Of {d['pooled_outputs']:,} pooled outputs, {d['changed_within_window']:,} changed under the "
        f"{d['shifts']} shifts inside a window and {d['changed_by_whole_window']:,} under a shift by a whole window "
        f"({d['features']:,} features in the map)."),
    "vanishing_gradients": lambda d: (
        f"The first layer's weight gradient is {fmt(d['sigmoid_ratio'])} times the last layer's with sigmoid and "
        f"{fmt(d['relu_ratio'])} times with ReLU."),
    "inception_reduction": lambda d: (
        f"{d['direct_macs']:,} multiply-adds directly; {d['reduced_macs']:,} with the 1×1 reduction "
        f"({d['reduction_macs']:,} + {d['reduced_5x5_macs']:,}): {d['saving']:.2f} times fewer."),
    "learned_features_beat_engineered": lambda d: (
        f"The CNN on the pixels reaches {pct(d['learned_accuracy'])} test accuracy, softmax regression on the ink "
        f"profiles {pct(d['engineered_accuracy'])}: {100 * d['margin']:.3g} points better, on "
        f"{d['test_examples']:,} test digits."),
    "last_layer_is_logistic_regression": lambda d: (
        f"The CNN's probabilities and softmax regression's differ by at most {fmt(d['max_abs_diff'])} "
        f"({pct(d['bound_usage'])} of the allowed rounding); they predict the same class for "
        f"{pct(d['argmax_agree'])} of the batch."),
    "lstm_long_memory": lambda d: (
        f"After the curriculum ({', '.join(str(s['length']) for s in d['stages'])} steps) the LSTM names the token "
        f"seen {d['delay']} steps earlier for {pct(d['accuracy'])} of {d['test_sequences']:,} unseen sequences "
        f"(chance: {pct(d['chance'])}); at the other delays it recalls " + ", ".join(
            f"{pct(r['accuracy'])} after {r['delay']}" for r in d["recall"] if r["delay"] != d["delay"]) + " steps."),
}


# ----------------------------------------------------------------------------------- node tests

def _operator(case: str) -> str:
    """The operator a case of ONNX's tests is about, from its name: test_conv_with_strides -> conv,
    test_Conv2d_groups -> Conv2d (PyTorch module), test_operator_maxpool -> maxpool (PyTorch operator)."""
    parts = case.removeprefix("test_").split("_")
    if parts[0] == "operator" and len(parts) > 1:
        return f"{parts[1]} (PyTorch operator)"
    return f"{parts[0]} (PyTorch module)" if parts[0][:1].isupper() else parts[0]


def node_tests(recs: list[Entry], cols: list[dict]) -> dict | None:
    """Operator × backend: how many of ONNX's cases passed, were unsupported or failed; why on hover
    and in the list under the matrix."""
    if not recs:
        return None
    labels = [_record_label(e, cols) for e in recs]
    status: dict[tuple[str, str], dict[str, list[tuple[str, str]]]] = defaultdict(lambda: defaultdict(list))
    listed_passes = True
    why = []
    for label, e in zip(labels, recs, strict=True):
        d = e.result.details or {}
        listed_passes &= isinstance(d.get("passed_cases"), list)
        groups = (("passed", {c: "" for c in d.get("passed_cases") or []}),
                  ("unsupported", d.get("unsupported_cases") or {}),
                  ("documented difference", d.get("differences") or {}), ("failed", d.get("failures") or {}))
        for state, cases in groups:
            for case, reason in cases.items():
                status[(_operator(case), label)][state].append((case, str(reason)))
                if state != "passed":
                    why.append({"operator": _operator(case), "case": case, "backend": label, "state": state,
                                "reason": str(reason)})
    ops = sorted({op for op, _ in status}, key=lambda op: ("(" in op, op.lower()))
    rows = [{"operator": op, "cells": [_node_cell(status.get((op, label), {})) for label in labels]} for op in ops]
    totals = [{"label": label, "outcome": e.result.outcome.value, "cls": _outcome_class(e.result.outcome),
               "text": (f"{fmt(d.get('passed'))} passed · {fmt(d.get('unsupported'))} unsupported · "
                        f"{fmt(d.get('failed'))} failed of {fmt(d.get('executed', 0) + d.get('unsupported', 0))}")
               if (d := e.result.details or {}) else e.result.message or e.result.outcome.value}
              for label, e in zip(labels, recs, strict=True)]
    return {"backends": labels, "rows": rows, "totals": totals, "why": why, "listed_passes": listed_passes}


def _node_cell(states: dict[str, list[tuple[str, str]]]) -> dict:
    n = {k: len(v) for k, v in states.items()}
    if not n:
        return {"cls": "none", "text": "—", "title": ""}
    cls = "bad" if n.get("failed") else "partial" if n.get("unsupported") or n.get("documented difference") else "good"
    text = " · ".join(f"{v} {k}" for k, v in n.items() if v)
    title = "\n".join(f"{case}: {k}{' — ' + reason if reason else ''}" for k, v in states.items() if k != "passed"
                      for case, reason in v[:12])
    return {"cls": cls, "text": text, "title": title}


# ------------------------------------------------------------------------------------ concepts

def concept_details(spec: spec_mod.Spec, core: dict, cols: list[dict]) -> list[dict]:
    """Per concept (then per model and claim): what it is, its vectors, its image vectors as
    pictures, and per backend what its checks measured."""
    out = []
    for cid in _concept_ids(spec, core):
        c = spec.concepts.get(cid)
        title, text = (c.title, c.definition) if c is not None else _describe_text(cid)
        out.append({"id": cid, "anchor": anchor("concept", cid), "title": title, "definition": text,
                    "semantics": list(c.semantics) if c else [], "vectors": _vectors(c) if c else None,
                    "images": _images(c, core, cols) if c else _filters(cid, core, cols),
                    "backends": [_backend_detail(cid, col, core.get((cid, col["key"]), [])) for col in cols
                                 if col["why"] is None]})
    return out


def _describe_text(cid: str) -> tuple[str, str]:
    """(title, description) of a model ("model_<id>" or its id) or of a claim; ("", "") otherwise."""
    try:
        m = models.get(cid.removeprefix("model_"))
        return m.title, m.description
    except NutshellError:
        pass
    claim = _claims().get(cid)
    return (claim.get("title", ""), claim.get("claim", "")) if claim else ("", "")


@functools.lru_cache(maxsize=1)
def _claims() -> dict[str, dict]:
    try:
        doc = spec_mod.load_document(spec_mod.SPEC_DIR / "claims.yaml")
    except NutshellError:
        return {}
    return {c["id"]: c for c in doc.get("claims", [])}


def _vectors(c: spec_mod.Concept) -> dict:
    rows = []
    for v in c.vectors:
        shapes = v.shapes or {k: list(np.shape(x["values"] if isinstance(x, dict) and "values" in x else x))
                              for k, x in (v.inputs or {}).items()}
        rows.append({"name": v.name, "kind": v.kind, "note": v.note, "vjp": "yes" if v.grad else "no",
                     "inputs": ", ".join(f"{k} {'×'.join(map(str, s)) or 'scalar'}" for k, s in shapes.items()),
                     "attrs": ", ".join(f"{k} = {_value(x)}" for k, x in v.attrs.items()) or "defaults"})
    return {"rows": rows, "errors": ", ".join(e.name for e in c.errors) or "none"}


def _images(c: spec_mod.Concept, core: dict, cols: list[dict]) -> list[dict]:
    """The hand vectors that are pictures (:func:`checks.is_image`: an input, a kernel and an
    output of one plane each): the spec's three, then each backend's output as it computed it."""
    out = []
    for v in c.vectors:
        arrays = {k: np.asarray(a, float) for k, a in {**(v.inputs or {}), **(v.expected or {})}.items()
                  if isinstance(a, list)}
        if v.kind == "hand" and checks.is_image(arrays):
            out.append(_image_figure(c, v, arrays, core, cols))
    return out


def _image_figure(c: spec_mod.Concept, v: spec_mod.Vector, arrays: dict[str, np.ndarray], core: dict,
                  cols: list[dict]) -> dict:
    """One image vector: the spec's row (input, kernel, expected output), then a row of each
    backend's output (its float32 record's when there is one), every output on one grey scale."""
    computed, said = [], []
    for col in cols:
        recs = [r for r in core.get((c.id, col["key"]), []) if r.check == "forward" and r.vector == v.name]
        drawn = min((r for r in recs if "computed" in (r.details or {})), key=lambda r: r.dtype != "float32",
                    default=None)
        plane = _plane(drawn.details["computed"].get("y")) if drawn else None
        if plane is not None:
            computed.append((f"{col['label']} ({drawn.dtype})", plane))
        if recs:
            said.append(f"{col['label']} {_image_error(recs)}")
    scale = figures.value_range([arrays["y"], *(a for _, a in computed)])
    rows = [("the spec", [("input x", arrays["x"][0, 0], None), ("kernel w", arrays["w"][0, 0], None),
                          ("expected output y", arrays["y"][0, 0], scale)])]
    if computed:
        rows.append(("as computed", [(label, a, scale) for label, a in computed]))
    key = f"image-{anchor(c.id, v.name)}"
    title = f"{c.title}: vector {v.name} — input, kernel and output, then each backend's output"
    caption = (f"{v.note[:1].upper() + v.note[1:]}. " if v.note else "") + \
        "Top: the spec's vector, its output worked out by hand; below: the output each backend computed. " + \
        "Largest |error| over every dtype: " + ("; ".join(said) if said else "not run") + "."
    return _figure(key, title, figures.image_rows(title, rows, key), caption)


def _array(value: Any, ndim: int) -> np.ndarray | None:
    """A recorded nested list as a float array of ``ndim`` dimensions, None when it is not one."""
    try:
        a = np.asarray(value, float)
    except (TypeError, ValueError):
        return None
    return a if a.ndim == ndim and a.size else None


def _plane(value: Any) -> np.ndarray | None:
    """A recorded output, (1, 1, H, W), as one 2-D picture; None for anything else."""
    a = _array(value, 4)
    return a[0, 0] if a is not None and a.shape[:2] == (1, 1) else None


def _image_error(recs: list[CheckResult]) -> str:
    """A backend's largest error on an image vector, and its outcomes other than pass."""
    worst = _max(max_abs(r) for r in recs)
    bad = sorted({r.outcome.value for r in recs} - {Outcome.PASS.value})
    return ("exactly 0" if worst == 0 else fmt(worst)) + (f" ({', '.join(bad)})" if bad else "")


def _filters(cid: str, core: dict, cols: list[dict]) -> list[dict]:
    """A trained model's first-layer filters per backend (the ``digits`` check keeps them), under
    the same filters at the spec's initialisation: the picture the glossary's Figure 1 draws."""
    kept = [(col["label"], f) for col in cols for r in core.get((cid, col["key"]), [])
            if r.check == "digits" and (f := (r.details or {}).get("first_filters"))]
    if not kept:
        return []
    param, seed = kept[0][1]["param"], kept[0][1].get("seed")
    init = _initial(cid, param, seed)
    trained = [(label, w) for label, f in kept if (w := _array(f["values"], 4)) is not None]
    shape = init.shape if init is not None else trained[0][1].shape if trained else None
    trained = [(label, w) for label, w in trained if w.shape == shape]
    if not trained:
        return []
    key = f"filters-{anchor(cid)}"
    title = f"The first convolution's {shape[0]} filters ({param}) after training, per backend"
    rows = ([("initialisation", init)] if init is not None else []) + trained
    return [_figure(key, title, figures.filter_bank(title, rows, key),
                    _filters_caption(shape, seed if init is not None else None, trained))]


def _filters_caption(shape: tuple[int, ...], seed: int | None, trained: list[tuple[str, np.ndarray]]) -> str:
    spread = _max(float(np.abs(a - b).max()) for i, (_, a) in enumerate(trained) for _, b in trained[i + 1:])
    init = "" if seed is None else f"; the top row is the spec's initialisation with seed {seed}, the same everywhere"
    agree = "here only one backend trained it" if spread is None else \
        f"the largest difference between two backends' weights is {fmt(spread)}"
    return (f"Each row: the {shape[0]} filters of {shape[2]}×{shape[3]} weights (their first input channel), red "
            f"positive, blue negative, one colour scale for all{init}. Trained by the spec's recipe from the same "
            f"seed, the filters come out the same on every backend: {agree}.")


def _initial(cid: str, param: str, seed: int | None) -> np.ndarray | None:
    """The parameter at the spec's initialisation with ``seed``, None when not known."""
    try:
        ms = models.get(cid.removeprefix("model_"))
        return None if seed is None else models.init_params(ms, seed, "float64")[param]
    except (NutshellError, KeyError):
        return None


def _backend_detail(cid: str, col: dict, recs: list[CheckResult]) -> dict:
    row = {"anchor": anchor("c", cid, col["key"]), "label": col["label"]}
    if not recs:
        return row | {"cls": "none", "run": False}
    n = counts(recs)
    by = defaultdict(list)
    for r in recs:
        by[r.check].append(r)

    def usage(check: str) -> str:
        return fmt(_max(r.usage for r in by[check] if r.outcome in (Outcome.PASS, Outcome.FAIL)))

    errs = counts(by["error"])
    extra = counts([r for r in recs if r.check not in CORE_CHECKS])
    bad = [{"cls": _outcome_class(r.outcome), "outcome": r.outcome.value, "id": r.id, "message": r.message or "",
            "rerun": r.rerun or ""} for r in recs if r.outcome is not Outcome.PASS]
    return row | {"cls": _cell_class(n), "run": True, "passed": f"{n['pass']}/{n['total']}",
                  "fwd_error": fmt(_max(max_abs(r) for r in by["forward"])), "fwd_usage": usage("forward"),
                  "vjp_error": fmt(_max(max_abs(r) for r in by["vjp"])), "vjp_usage": usage("vjp"),
                  "fd_usage": usage("fd"), "errors": f"{errs['pass']}/{errs['total']}",
                  "other": f"{extra['pass']}/{extra['total']}", "bad": bad}


# -------------------------------------------------------------------------------------- page

NAV = (("coverage", "Coverage"), ("precision", "Precision"), ("agreement", "Agreement"), ("determinism", "Determinism"),
       ("performance", "Performance"), ("training", "Training"), ("claims", "Claims"),
       ("node-tests", "ONNX node tests"), ("hunt", "Hunt"), ("reliability", "Reliability"), ("onnx", "ONNX"),
       ("concepts", "Concepts"))


def render(context: dict) -> str:
    """The page: templates/report.html.j2 with ``context``, autoescaped (the template marks the
    figures' SVG and the stylesheet safe), the stylesheet inlined so the page opens offline."""
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True, trim_blocks=True,
                             lstrip_blocks=True, undefined=jinja2.StrictUndefined)
    env.filters["num"] = fmt
    css = (TEMPLATES / "report.css").read_text(encoding="utf-8")
    return env.get_template("report.html.j2").render(**context, css=css, nav=NAV)


def write_report(results_docs: list[dict], bench_doc: dict | None, out: Path, *, spec: spec_mod.Spec) -> Path:
    """Render the page for the given runs and benchmark (as load_results and load_bench return
    them) against ``spec``, the spec the runs checked, and write it to ``out``."""
    missing = [m for m in ("jinja2", "matplotlib") if importlib.util.find_spec(m) is None]
    if missing:
        raise NutshellError(f"the HTML report needs {' and '.join(missing)}: pip install 'nutshell[report]'")
    for d in results_docs:
        d.setdefault("backends", {})
        d.setdefault("unavailable", {})
    cols = columns(results_docs)
    looks = figures.Looks([c["label"] for c in cols])
    core: dict[tuple[str, str], list[CheckResult]] = defaultdict(list)
    cross: list[Entry] = []
    others: dict[Section, list[Entry]] = defaultdict(list)
    for run, d in enumerate(results_docs):
        for r in d["results"]:
            if r.section is Section.CROSS:
                cross.append(Entry(run, r))
            elif r.section is not Section.OPS:
                others[r.section].append(Entry(run, r))
            key = "cross" if r.backend == "cross" else _column_of(cols, run, r.backend)["key"]
            core[(r.concept, key)].append(r)
    lists = [{"key": key, "title": title, "list": record_list(others[s], cols) if others[s] else None}
             for s, key, title in SECTIONS if s is not Section.OTHER or others[s]]
    details = concept_details(spec, core, cols)
    drawn = frozenset(f["id"] for c in details for f in c["images"])
    page = render({
        "title": f"nutshell report — spec {spec.version}", "header": header(results_docs, bench_doc, spec.version),
        "coverage": coverage(spec, core, cols), "precision": precision(spec, core, cols),
        "agreement": agreement(cross, cols),
        "determinism": determinism(others[Section.RELIABILITY], cols),
        "performance": performance(bench_doc, spec, looks),
        "training": training(others[Section.MODELS], cols, looks, drawn),
        "claims": claims(others[Section.CLAIMS], cols, looks),
        "node_tests": node_tests(others[Section.NODE_TESTS], cols), "hunt": hunt(results_docs, spec),
        "lists": lists, "concepts": details})
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out, page)
    return out


def write_from_reports_dir(reports: Path, spec_file: str | Path | None = None) -> Path:
    """reports/results.json (and reports/bench.json when present) -> reports/index.html, against
    the spec file the run used (None: the repository's). A reports/hunt.json is first copied into
    results.json (:func:`_take_hunt`), so the results file carries the hunt the page shows.

    A bench.json or hunt.json that cannot be used (another spec version, a broken file) is left out
    with a warning on stderr; a bad results.json is a SpecError."""
    reports = Path(reports)
    spec = spec_mod.load(spec_file)
    version = spec.version
    results = load_results(reports / "results.json", version)
    results["hunt"] = _take_hunt(reports, results.get("hunt"))
    bench = None
    if (reports / "bench.json").is_file():
        try:
            bench = load_bench(reports / "bench.json", version)
        except SpecError as exc:
            print(f"nutshell: the report leaves out the benchmarks: {exc}", file=sys.stderr)
    return write_report([results], bench, reports / "index.html", spec=spec)


def _take_hunt(reports: Path, held: dict | None) -> dict | None:
    """The hunt the folder's results.json is to carry: its hunt.json, recorded into results.json
    (``hunt``) when it differs from what the file holds (``held``); ``held`` when there is no
    hunt.json or it cannot be read (a warning on stderr)."""
    path = reports / HUNT_FILE
    if not path.is_file():
        return held
    try:
        found = load_hunt(path)
    except SpecError as exc:
        print(f"nutshell: the report leaves out the hunt: {exc}", file=sys.stderr)
        return held
    if found != held:                           # else results.json carries it already: not read again
        record_hunt(reports / "results.json", found)
    return found
