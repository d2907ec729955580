"""``reports/index.html``: one self-contained page comparing the backends.

It reads one or more ``results.json`` (runs from several machines merge into one page) and,
when present, a ``bench.json``. The page has no script and no external reference: CSS is
inline, charts are inline SVG drawn by matplotlib (text kept as text), so it opens offline.

Sections: the header (machines, devices, versions, dates, spec version); the coverage matrix
(concepts × backends: every check of a concept, every outcome counted, each cell linking to
its detail); the pairwise
agreement between backends (from the cross checks); performance (from bench.json); the
records of every other section, each record where its ``section`` puts it: models and training
(numeric lists in their details are drawn as curves), claims, ONNX node tests, reliability (the
catalogue and fuzzing), ONNX export and import, anything else; then, per concept (and per model
or claim id), its definition, its vectors and per backend the largest error and the bound usage.
The concepts are those of the spec the report is given (``--spec`` of the run).
"""

from __future__ import annotations

import functools
import html
import io
import json
import math
import re
import sys
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from nutshell import spec as spec_mod
from nutshell.conformance.results import (
    OUTCOMES,
    BenchOutcome,
    BenchResult,
    CheckResult,
    Outcome,
    Section,
    atomic_write,
)
from nutshell.errors import NutshellError, SpecError

CORE_CHECKS = ("forward", "vjp", "fd", "error", "cross")   # the columns of a concept's detail table
SECTIONS = (  # (section, anchor, title) of the record lists, in the page's order; ops and cross are the matrix
    (Section.MODELS, "training", "Models: training curves and accuracy"),
    (Section.CLAIMS, "claims", "The glossary's claims"),
    (Section.NODE_TESTS, "node-tests", "ONNX node tests"),
    (Section.RELIABILITY, "reliability", "Reliability: bad inputs and fuzzing"),
    (Section.ONNX, "onnx", "ONNX export and import"),
    (Section.OTHER, "other", "Other checks"),
)


@dataclass(frozen=True)
class Entry:
    """A check result and the run (results file) it came from: the columns are per run, so the
    same backend on two machines stays two columns."""

    run: int
    result: CheckResult


# ------------------------------------------------------------------------------------ loading

def _read_json(path: Path) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except OSError as exc:
        raise SpecError(f"{path}: cannot read it: {exc.strerror or exc}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SpecError(f"{path}: not a JSON file ({exc})") from None


def load_results(path: str | Path, version: str | None = None) -> dict:
    """A results.json, checked for shape and (when ``version`` is given) for its spec version."""
    doc = _read_json(Path(path))
    if not isinstance(doc, dict) or not isinstance(doc.get("results"), list) or "spec_version" not in doc:
        raise SpecError(f"{path}: not a nutshell results file (needs 'spec_version' and a 'results' list)")
    doc["results"] = [CheckResult.from_json(r, _where(path, i, r)) for i, r in enumerate(doc["results"])]
    _same_version(path, doc, version)
    doc.setdefault("backends", {})
    doc.setdefault("unavailable", {})
    doc["source"] = str(path)
    return doc


def load_bench(path: str | Path, version: str | None = None) -> dict:
    """A bench.json written by ``nutshell bench``."""
    doc = _read_json(Path(path))
    if not isinstance(doc, dict) or doc.get("kind") != "nutshell-bench" or not isinstance(doc.get("results"), list):
        raise SpecError(f"{path}: not a nutshell bench file (kind 'nutshell-bench' with a 'results' list)")
    doc["results"] = [BenchResult.from_json(r, f"{path}: results[{i}]") for i, r in enumerate(doc["results"])]
    _same_version(path, doc, version)
    return doc


def _where(path: str | Path, i: int, r: Any) -> str:
    """Where a record sits, with its id when it has one, for the error message."""
    rid = r.get("id") if isinstance(r, dict) else None
    return f"{path}: results[{i}]" + (f" ({rid})" if isinstance(rid, str) else "")


def _same_version(path: str | Path, doc: dict, version: str | None) -> None:
    if version is not None and doc.get("spec_version") != version:
        raise SpecError(f"{path}: made with spec version {doc.get('spec_version')}, this spec is {version}; "
                        "rerun it with this checkout, or report it from a checkout of that version")


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

def esc(v: Any) -> str:
    return html.escape(str(v), quote=True)


def anchor(*parts: str) -> str:
    return "-".join(re.sub(r"[^A-Za-z0-9_]+", "_", p) for p in parts)


def fmt(v: Any, digits: int = 3) -> str:
    if v is None:
        return "—"
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return esc(v)
    if isinstance(v, int):
        return f"{v:,}"
    if v == 0 or math.isinf(v) or math.isnan(v):
        return f"{v:g}"
    return f"{v:.{digits}g}" if 1e-3 <= abs(v) < 1e5 else f"{v:.{digits - 1}e}"


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


# ------------------------------------------------------------------------------------ charts

def svg(fig: Any, name: str) -> str:
    """A matplotlib figure as inline SVG: text kept as text, no prolog, no metadata, ids made
    unique to this chart, scaled to the page's width."""
    import matplotlib

    buf = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": name}):
        fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None})
    text = buf.getvalue()
    text = text[text.index("<svg"):]
    text = re.sub(r"<metadata>.*?</metadata>", "", text, flags=re.S)
    text = re.sub(r'\bid="', f'id="{name}-', text)
    text = text.replace('href="#', f'href="#{name}-').replace("url(#", f"url(#{name}-")
    width = float(re.search(r'<svg[^>]*? width="([0-9.]+)pt"', text).group(1)) * 4 / 3   # pt -> CSS px
    text = re.sub(r'(<svg[^>]*?) width="[^"]*" height="[^"]*"',
                  rf'\1 class="chart" style="max-width:{width:.0f}px" role="img" aria-label="{name}"', text, count=1)
    return text


def _figure(width: float, height: float):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=96)
    fig.set_layout_engine("constrained")
    return fig


def heatmap(rows: list[str], cols: list[str], values: list[list[float | None]], title: str, name: str,
            unit: str) -> str:
    """A log10 heatmap with every value written in its cell (None: not measured, 0: exact)."""
    import numpy as np

    positive = [v for row in values for v in row if v]
    floor = min(positive) if positive else 1.0                    # an exact 0 gets the best colour
    data = np.array([[np.nan if v is None else math.log10(max(v, floor)) for v in row] for row in values])
    fig = _figure(min(12.5, max(6.0, 2.5 + 1.3 * len(cols))), 1.2 + 0.3 * len(rows))
    ax = fig.add_subplot()
    finite = data[np.isfinite(data)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    vmax = max(hi, lo + 1)
    im = ax.imshow(np.ma.masked_invalid(data), cmap="viridis", aspect="auto", vmin=lo, vmax=vmax)
    ax.set_xticks(range(len(cols)), cols, rotation=20, ha="right")
    ax.set_yticks(range(len(rows)), rows)
    for i, row in enumerate(values):
        for j, v in enumerate(row):
            dark = v is not None and (data[i, j] - lo) / (vmax - lo) < 0.6      # viridis is dark below that
            ax.text(j, i, "—" if v is None else ("0" if v == 0 else f"{v:.1e}"), ha="center", va="center",
                    fontsize=8, color="white" if dark else "black")
    ax.set_title(title, fontsize=11)
    fig.colorbar(im, ax=ax, label=f"log10 {unit}")
    return svg(fig, name)


def bars(groups: list[str], series: dict[str, list[float | None]], title: str, xlabel: str, name: str,
         base: float | None = None) -> str:
    """Horizontal grouped bars on a log axis, one group per row label, one colour per series.
    Bars grow from ``base`` (e.g. 1 for a ratio, so values below it point left), or from a
    decade under the smallest value."""
    import numpy as np

    values = [v for vals in series.values() for v in vals if v]
    start = base if base is not None else 10.0 ** math.floor(math.log10(min(values)) - 0.5) if values else 1.0
    fig = _figure(12.5, 1.0 + len(groups) * max(0.3, 0.12 * len(series)))
    ax = fig.add_subplot()
    h = 0.8 / max(len(series), 1)
    y = np.arange(len(groups))
    for k, (label, vals) in enumerate(series.items()):
        ax.barh(y + (k - (len(series) - 1) / 2) * h, [v - start if v else 0 for v in vals], h, left=start, label=label)
    ax.set_yticks(y, groups)
    ax.set_ylim(len(groups) - 0.5, -0.5)
    ax.set_xscale("log")
    if base is not None:
        ax.axvline(base, color="black", linewidth=0.8)
    ax.set_xlabel(xlabel)
    ax.set_title(title, fontsize=11)
    ax.grid(axis="x", alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)
    return svg(fig, name)


def curves(lines: dict[str, list[float]], title: str, ylabel: str, name: str) -> str:
    """One line per series against its index (epochs when the name says so, else steps)."""
    fig = _figure(12.5, 4.0)
    ax = fig.add_subplot()
    for label, ys in lines.items():
        ax.plot(range(1, len(ys) + 1), ys, label=label, linewidth=1.2)
    ax.set_xlabel("epoch" if "epoch" in title.lower() else "step")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_ylabel(ylabel)
    if all(v > 0 for ys in lines.values() for v in ys):
        ax.set_yscale("log")
    ax.set_title(title, fontsize=11)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return svg(fig, name)


# ----------------------------------------------------------------------------------- sections

def header(docs: list[dict], bench: dict | None, version: str) -> str:
    runs = []
    for i, d in enumerate(docs):
        m = d.get("machine", {})
        backs = ", ".join(f"{esc(n)} on {esc(b.get('device', '?'))}" for n, b in d["backends"].items()) or "none"
        unav = "; ".join(f"{esc(n)}: {esc(w)}" for n, w in d["unavailable"].items()) or "—"
        vers = ", ".join(f"{esc(k)} {esc(v)}" for k, v in (d.get("versions") or {}).items()) or "not recorded"
        status = "complete" if d.get("complete", True) else "incomplete (interrupted)"
        runs.append(f"<tr><td>{i + 1}</td><td>{esc(m.get('host', '?'))}<br><small>{esc(m.get('system', ''))}, "
                    f"{esc(m.get('cpus', '?'))} CPUs, Python {esc(m.get('python', '?'))}</small></td>"
                    f"<td>{backs}</td><td>{unav}</td><td>{esc(d.get('started', '?'))} → "
                    f"{esc(d.get('finished', '?'))}<br><small>{status}</small></td><td><small>{vers}</small></td>"
                    f"<td><small>{esc(d.get('source', ''))}</small></td></tr>")
    bench_line = "no benchmark in this report"
    if bench:
        devs = ", ".join(f"{esc(k)}: {esc(v)}" for k, v in bench.get("devices", {}).items())
        vers = ", ".join(f"{esc(k)} {esc(v)}" for k, v in bench.get("versions", {}).items())
        bench_line = (f"benchmark of {esc(bench.get('date', '?'))} on {esc(bench.get('machine', {}).get('host', '?'))}"
                      f" — devices: {devs or '?'} — versions: {vers or '?'}")
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    return (f"<header><h1>nutshell: conformance and performance</h1>"
            f"<p>Spec version <b>{esc(version)}</b> · {len(docs)} run(s) · generated {esc(now)}</p>"
            f"<table class='runs'><tr><th>run</th><th>machine</th><th>backends (device)</th><th>unavailable</th>"
            f"<th>started → finished</th><th>versions</th><th>file</th></tr>{''.join(runs)}</table>"
            f"<p class='muted'>{bench_line}</p></header>")


def _cell_class(c: dict) -> str:
    if c["total"] == 0:
        return "none"
    if c["fail"] or c["error"]:
        return "bad"
    return "good" if c["pass"] == c["total"] else "partial"


def coverage(spec: spec_mod.Spec, core: dict, cols: list[dict]) -> str:
    """Concepts × backends: passed / total, the other outcomes spelled out, a link to the detail."""
    head = "".join(f"<th title='{esc(c['host'])}'>{esc(c['label'])}</th>" for c in cols)
    rows = []
    for cid in _concept_ids(spec, core):
        cells = []
        for c in cols:
            if c["why"] is not None:
                cells.append(f"<td class='none' title='{esc(c['why'])}'>unavailable</td>")
                continue
            n = counts(core.get((cid, c["key"]), []))
            cells.append(_matrix_cell(n, f"#{anchor('c', cid, c['key'])}"))
        cross = counts(core.get((cid, "cross"), []))
        none = cross["total"] == 0 and cid not in spec.concepts        # only concepts have cross checks
        cells.append("<td class='none'>—</td>" if none else _matrix_cell(cross, f"#{anchor('concept', cid)}"))
        rows.append(f"<tr><th><a href='#{anchor('concept', cid)}'>{esc(cid)}</a></th>{''.join(cells)}</tr>")
    totals = []
    for c in cols:
        n = counts([r for (_, k), recs in core.items() if k == c["key"] for r in recs])
        totals.append(f"<td>{n['pass']}/{n['total']}</td>" if c["why"] is None else "<td>—</td>")
    n = counts([r for (_, k), recs in core.items() if k == "cross" for r in recs])
    totals.append(f"<td>{n['pass']}/{n['total']}</td>")
    return (f"<section id='coverage'><h2>Coverage</h2><p>Each cell: checks passed / checks run for that concept on "
            f"that backend: forward, vjp, finite difference, error cases and every other check of it (the "
            f"reliability catalogue, fuzzing), every dtype. Models and claims follow the concepts. Every record "
            f"counts once: unsupported, failed and errored checks are in the denominator and named in the "
            f"cell. A cell links to its detail.</p>"
            f"<table class='matrix'><tr><th>concept</th>{head}<th>cross-backend</th></tr>{''.join(rows)}"
            f"<tr class='total'><th>all concepts</th>{''.join(totals)}</tr></table></section>")


def _matrix_cell(n: dict, href: str) -> str:
    if n["total"] == 0:
        return "<td class='none'>not run</td>"
    extra = " · ".join(f"{n[k]} {k}" for k in ("unsupported", "fail", "error") if n[k])
    return (f"<td class='{_cell_class(n)}'><a href='{href}'>{n['pass']}/{n['total']}</a>"
            f"{f'<br><small>{extra}</small>' if extra else ''}</td>")


def _concept_ids(spec: spec_mod.Spec, core: dict) -> list[str]:
    extra = sorted({cid for cid, _ in core} - set(spec.concepts))
    return [*spec.concepts, *extra]


def agreement(cross: list[Entry], cols: list[dict]) -> str:
    """The worst pairwise max |difference| between backends, over every cross check."""
    worst: dict[tuple[str, str, str], float] = {}
    for e in cross:
        for pair, v in ((e.result.details or {}).get("pairwise_max_abs") or {}).items():
            a, _, b = pair.partition("~")
            ca, cb = _column_of(cols, e.run, a), _column_of(cols, e.run, b)
            if ca is None or cb is None or not isinstance(v, (int, float)):
                continue
            key = (e.result.concept, ca["label"], cb["label"])
            worst[key] = max(worst.get(key, 0.0), float(v))
    intro = ("<p>The largest absolute difference between two backends' float32 outputs on the same fresh "
             "inputs (the cross checks), worst over every vector of a concept.</p>")
    if not worst:
        return f"<section id='agreement'><h2>Agreement between backends</h2>{intro}<p>not run (needs a cross " \
               f"check with at least two backends)</p></section>"
    labels = sorted({x for _, a, b in worst for x in (a, b)})
    overall = [[None if a == b else _max([v for (_, x, y), v in worst.items() if {x, y} == {a, b}])
                for b in labels] for a in labels]
    pairs = sorted({(a, b) for _, a, b in worst})
    concepts = sorted({c for c, _, _ in worst})
    by_concept = [[worst.get((c, a, b)) for a, b in pairs] for c in concepts]
    pair_names = [f"{a} ~ {b}" for a, b in pairs]
    return (f"<section id='agreement'><h2>Agreement between backends</h2>{intro}"
            f"{heatmap(labels, labels, overall, 'worst |difference| over all concepts', 'agree-all', '|diff|')}"
            f"{heatmap(concepts, pair_names, by_concept, 'per concept', 'agree-concept', '|diff|')}"
            f"</section>")


def performance(bench: dict | None) -> str:
    title = "<h2>Performance</h2>"
    if not bench or not bench.get("results"):
        return f"<section id='performance'>{title}<p>not run (no bench.json; run <code>nutshell bench</code>)" \
               f"</p></section>"
    peaks = "".join(f"<li>{esc(d)}: {fmt(p.get('gflops'))} GFLOP/s ({esc(p.get('library'))}, {esc(p.get('n'))}² "
                    f"{esc(p.get('dtype'))}) — "
                    + ", ".join(f"{esc(k)} {fmt(v) if isinstance(v, float) else esc(v)}"
                                for k, v in p.get("libraries", {}).items()) + "</li>"
                    for d, p in bench.get("peak", {}).items())
    ok = [r for r in bench["results"] if r.outcome is BenchOutcome.OK]
    charts = "".join(_perf_charts(ok, size, d) for d in ("forward", "step") for size in ("small", "medium", "large")
                     if any(r.size == size and r.direction == d for r in ok))
    rows = "".join(_perf_row(r) for r in bench["results"])
    return (f"<section id='performance'>{title}<p>Machine peak (the best float32 matrix product among the "
            f"installed libraries, measured in the same run):</p><ul>{peaks}</ul>{charts}"
            f"<p>Overhead = the backend's median time / the same work called directly on its library. "
            f"Forward calls use native arrays (no host copies); vjp and model steps go through the NumPy API "
            f"(marked *).</p><table class='perf'><tr><th>concept</th><th>size</th><th>direction</th>"
            f"<th>backend</th><th>device</th><th>median ms</th><th>spread</th><th>GFLOP/s</th><th>% of peak</th>"
            f"<th>overhead</th><th>baseline</th></tr>{rows}</table></section>")


def _perf_charts(ok: list[BenchResult], size: str, direction: str) -> str:
    """GFLOP/s and overhead of every concept (or model step) at one size, one bar per backend."""
    what = "forward" if direction == "forward" else "training step"
    fwd = [r for r in ok if r.size == size and r.direction == direction]
    names = list(dict.fromkeys(r.concept for r in fwd))
    backs = list(dict.fromkeys(f"{r.backend} ({r.device})" for r in fwd))
    by = {(r.concept, f"{r.backend} ({r.device})"): r for r in fwd}
    rate = {b: [by[(c, b)].gflops if (c, b) in by else None for c in names] for b in backs}
    over = {b: [by[(c, b)].overhead if (c, b) in by else None for c in names] for b in backs}
    over = {b: vals for b, vals in over.items() if any(vals)}      # backends with a native baseline
    out = bars(names, rate, f"{what}, {size} shapes: GFLOP/s", "GFLOP/s (log scale)", f"perf-{direction}-{size}")
    if over:
        out += bars(names, over, f"{what}, {size} shapes: overhead against the library called directly",
                    "time / native baseline time (log scale; 1 = no overhead)", f"overhead-{direction}-{size}",
                    base=1.0)
    return out


def _perf_row(r: BenchResult) -> str:
    star = "" if r.level == "native" else "*"
    lead = (f"<tr><td>{esc(r.concept)}</td><td>{esc(r.size)}</td><td>{esc(r.direction)}{star}</td>"
            f"<td>{esc(r.backend)}</td><td>{esc(r.device or '')}</td>")
    if r.outcome is not BenchOutcome.OK:
        return f"{lead}<td colspan='6' class='{'bad' if r.outcome is BenchOutcome.ERROR else 'none'}'>" \
               f"{esc(r.outcome)}: {esc(r.message or '')}</td></tr>"
    t, base = r.time, r.baseline or {}
    share = None if r.peak_share is None else 100 * r.peak_share
    blabel = esc(base.get("library", "—")) + (f" <small>(skipped: {esc(base['skipped'])})</small>"
                                               if "skipped" in base else "")
    nums = (fmt(1e3 * t["median_s"]), f"±{100 * t.get('spread', 0):.0f}%", fmt(r.gflops), fmt(share),
            fmt(r.overhead))
    return lead + "".join(f"<td class='num'>{v}</td>" for v in nums) + f"<td>{blabel}</td></tr>"


def other_sections(entries: list[Entry], cols: list[dict]) -> str:
    """Training, claims, ONNX and anything else: whatever records each section has, or 'not run'."""
    groups: dict[Section, list[Entry]] = defaultdict(list)
    for e in entries:
        groups[e.result.section].append(e)
    out = []
    for section, key, title in SECTIONS:
        recs = groups.get(section, [])
        if section is Section.OTHER and not recs:
            continue
        body = _records_block(recs, cols, section, key) if recs else "<p>not run</p>"
        out.append(f"<section id='{key}'><h2>{esc(title)}</h2>{body}</section>")
    return "".join(out)


def _records_block(recs: list[Entry], cols: list[dict], section: Section, key: str) -> str:
    per_col: dict[str, list[CheckResult]] = defaultdict(list)
    for e in recs:
        per_col[_record_label(e, cols)].append(e.result)
    summary = "".join(f"<tr><td>{esc(label)}</td>" + "".join(f"<td>{n}</td>" for n in counts(rs).values())
                      + "</tr>" for label, rs in per_col.items())
    series = _series(recs, cols) if section is Section.MODELS else {}
    charts = "".join(curves(lines, name, name, f"{key}-{anchor(name)}") for name, lines in series.items())
    head = "<tr><th>check</th><th>backend</th><th>outcome</th><th>usage</th><th>measured</th></tr>"
    bad = [e for e in recs if e.result.outcome is not Outcome.PASS]
    table = f"<table class='records'>{head}{''.join(_record_row(e, cols) for e in recs)}</table>"
    if len(recs) > 40:   # a long list stays folded; what did not pass is shown above it
        shown = f"<table class='records'>{head}{''.join(_record_row(e, cols) for e in bad)}</table>" if bad else ""
        table = f"{shown}<details><summary>all {len(recs)} records</summary>{table}</details>"
    return (f"<table><tr><th>backend</th>{''.join(f'<th>{k}</th>' for k in (*OUTCOMES, 'total'))}</tr>{summary}"
            f"</table>{charts}{table}")


def _record_label(e: Entry, cols: list[dict]) -> str:
    c = _column_of(cols, e.run, e.result.backend)
    return c["label"] if c else e.result.backend


def _series(recs: list[Entry], cols: list[dict]) -> dict[str, dict[str, list[float]]]:
    """Curves in the details (a loss per step, an accuracy per epoch), by detail name, one line per record."""
    out: dict[str, dict[str, list[float]]] = defaultdict(dict)
    for e in recs:
        for name, v in (e.result.details or {}).items():
            if _numbers(v) and len(v) > 1:
                out[name][f"{e.result.concept} · {_record_label(e, cols)}"] = [float(x) for x in v]
    return out


def _numbers(v: Any) -> bool:
    return isinstance(v, list) and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v)


def brief(v: Any) -> str:
    """A detail value in a few characters: numbers formatted, long lists summarised."""
    if _numbers(v) and len(v) > 6:
        return f"[{len(v)} values: {fmt(v[0])} … {fmt(v[-1])}]"
    if isinstance(v, list):
        return "[" + ", ".join(brief(x) for x in v[:6]) + (", …]" if len(v) > 6 else "]")
    if isinstance(v, dict):
        return "{" + ", ".join(f"{esc(k)}: {brief(x)}" for k, x in list(v.items())[:4]) + \
            (", …}" if len(v) > 4 else "}")
    return fmt(v)


def _record_row(e: Entry, cols: list[dict]) -> str:
    r = e.result
    measured = ", ".join(f"{esc(k)} = {brief(v)}" for k, v in list((r.details or {}).items())[:12])
    msg = f"<br><small>{esc(r.message)}</small>" if r.message else ""
    return (f"<tr class='{_outcome_class(r.outcome)}'><td>{esc(r.id)}</td><td>{esc(_record_label(e, cols))}"
            f"</td><td>{esc(r.outcome)}</td><td>{fmt(r.usage)}</td><td>{measured}{msg}</td></tr>")


def _outcome_class(outcome: Outcome) -> str:
    return {Outcome.PASS: "good", Outcome.FAIL: "bad", Outcome.ERROR: "bad"}.get(outcome, "none")


def concept_details(spec: spec_mod.Spec, core: dict, cols: list[dict]) -> str:
    """Per concept (then per model and claim): what it is, its vectors, and per backend what its
    checks measured."""
    out = []
    for cid in _concept_ids(spec, core):
        title, text = _describe(spec, cid)
        c = spec.concepts.get(cid)
        rows = "".join(_backend_detail(cid, col, core.get((cid, col["key"]), [])) for col in cols
                       if col["why"] is None)
        out.append(f"<section class='concept' id='{anchor('concept', cid)}'><h3>{title} <code>{esc(cid)}</code>"
                   f"</h3>{text}{_vector_table(c) if c else ''}"
                   f"<table class='detail'><tr><th>backend</th><th>checks passed</th><th>forward: max |error|</th>"
                   f"<th>forward: worst usage</th><th>vjp: max |error|</th><th>vjp: worst usage</th>"
                   f"<th>finite diff.: worst usage</th><th>errors raised right</th><th>other checks passed</th>"
                   f"<th>not passed</th></tr>{rows}</table></section>")
    return f"<section id='concepts'><h2>Concepts, models and claims</h2>{''.join(out)}</section>"


def _describe(spec: spec_mod.Spec, cid: str) -> tuple[str, str]:
    """(title, definition) of a concept, a model ("model_<id>") of models.yaml or a claim of claims.yaml."""
    c = spec.concepts.get(cid)
    if c is not None:
        semantics = "".join(f"<li>{esc(s)}</li>" for s in c.semantics)
        return esc(c.title), f"<p>{esc(c.definition)}</p>" + (f"<ul>{semantics}</ul>" if semantics else "")
    try:
        from nutshell.spec import models

        m = models.get(cid.removeprefix("model_"))
        return esc(m.title), f"<p>{esc(m.description)}</p>"
    except (ImportError, NutshellError):
        pass
    claim = _claims().get(cid)
    if claim is not None:
        return esc(claim.get("title", "")), f"<p>{esc(claim.get('claim', ''))}</p>"
    return "", "<p class='muted'>not in concepts.yaml, models.yaml or claims.yaml; its checks are listed above</p>"


@functools.lru_cache(maxsize=1)
def _claims() -> dict[str, dict]:
    try:
        doc = spec_mod.load_document(spec_mod.SPEC_DIR / "claims.yaml")
    except NutshellError:
        return {}
    return {c["id"]: c for c in doc.get("claims", [])}


def _vector_table(c: spec_mod.Concept) -> str:
    rows = []
    for v in c.vectors:
        shapes = v.shapes or {k: list(_shape(x)) for k, x in (v.inputs or {}).items()}
        what = ", ".join(f"{esc(k)} {esc(tuple(s))}" for k, s in shapes.items())
        attrs = ", ".join(f"{esc(k)}={esc(x)}" for k, x in v.attrs.items()) or "defaults"
        rows.append(f"<tr><td>{esc(v.name)}</td><td>{esc(v.kind)}</td><td>{what}</td><td>{attrs}</td>"
                    f"<td>{'yes' if v.grad else 'no'}</td><td>{esc(v.note)}</td></tr>")
    errs = ", ".join(esc(e.name) for e in c.errors) or "none"
    return (f"<details><summary>{len(c.vectors)} vectors, {len(c.errors)} error cases</summary>"
            f"<table><tr><th>vector</th><th>kind</th><th>inputs</th><th>attributes</th><th>vjp</th><th>note</th></tr>"
            f"{''.join(rows)}</table><p>error cases: {errs}</p></details>")


def _shape(x: Any) -> tuple:
    import numpy as np

    return np.shape(x["values"] if isinstance(x, dict) and "values" in x else x)


def _backend_detail(cid: str, col: dict, recs: list[CheckResult]) -> str:
    label = esc(col["label"])
    if not recs:
        return f"<tr id='{anchor('c', cid, col['key'])}'><td>{label}</td><td colspan='9' class='none'>not run</td></tr>"
    n = counts(recs)
    by = defaultdict(list)
    for r in recs:
        by[r.check].append(r)

    def usage(check: str) -> str:
        return fmt(_max(r.usage for r in by[check] if r.outcome in (Outcome.PASS, Outcome.FAIL)))

    errs = counts(by["error"])
    extra = counts([r for r in recs if r.check not in CORE_CHECKS])
    bad = [r for r in recs if r.outcome is not Outcome.PASS]
    listing = "".join(f"<li class='{_outcome_class(r.outcome)}'><b>{esc(r.outcome)}</b> {esc(r.id)}: "
                      f"{esc(r.message or '')}{_rerun(r)}</li>" for r in bad)
    return (f"<tr id='{anchor('c', cid, col['key'])}' class='{_cell_class(n)}'><td>{label}</td>"
            f"<td>{n['pass']}/{n['total']}</td>"
            f"<td>{fmt(_max(max_abs(r) for r in by['forward']))}</td><td>{usage('forward')}</td>"
            f"<td>{fmt(_max(max_abs(r) for r in by['vjp']))}</td><td>{usage('vjp')}</td><td>{usage('fd')}</td>"
            f"<td>{errs['pass']}/{errs['total']}</td><td>{extra['pass']}/{extra['total']}</td>"
            f"<td>{f'<details><summary>{len(bad)}</summary><ul>{listing}</ul></details>' if bad else '0'}</td></tr>")


def _rerun(r: CheckResult) -> str:
    return f"<br><code>{esc(r.rerun)}</code>" if r.rerun else ""


# -------------------------------------------------------------------------------------- page

CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0 auto;max-width:1240px;
padding:16px 20px;color:#1d232a;background:#fff}
h1{font-size:24px;margin:8px 0}h2{font-size:19px;border-bottom:2px solid #d8dee4;padding-bottom:4px;margin-top:32px}
h3{font-size:16px;margin:22px 0 6px}code{font:12.5px ui-monospace,Menlo,Consolas,monospace;background:#f3f5f7;
padding:0 3px;border-radius:3px}small{color:#57606a}.muted{color:#57606a}
table{border-collapse:collapse;margin:8px 0;font-size:13px}th,td{border:1px solid #d8dee4;padding:3px 7px;
text-align:left;vertical-align:top}th{background:#f3f5f7}table.matrix td{text-align:center;min-width:78px}
table.matrix th:first-child{text-align:right}td.good,tr.good>td:first-child{background:#dcf5e3}
td.partial{background:#fff6d6}td.bad,tr.bad>td:first-child,li.bad{background:#fde2e1}td.none{color:#8c959f;
background:#f6f8fa}tr.total td,tr.total th{font-weight:600}td.num{text-align:right}
nav{position:sticky;top:0;background:#fff;padding:6px 0;border-bottom:1px solid #d8dee4;z-index:1}
nav a{margin-right:14px}a{color:#0b5cad;text-decoration:none}a:hover{text-decoration:underline}
svg.chart{display:block;width:100%;max-width:1200px;height:auto;margin:10px 0}
details summary{cursor:pointer;color:#0b5cad}section.concept{border-top:1px solid #eaeef2}
table.runs td{font-size:12.5px}
"""


def determinism(entries: list[Entry], cols: list[dict]) -> str:
    """Which concepts gave different bits on two runs of the same backend (catalogue 'determinism')."""
    runs = [e for e in entries if e.result.check == "catalogue" and e.result.vector is not None
            and e.result.id.endswith("-determinism]") and e.result.outcome is Outcome.PASS]
    title = "<section id='determinism'><h2>Determinism</h2>"
    if not runs:
        return title + "<p>not run</p></section>"
    differ = [e for e in runs if not (e.result.details or {}).get("identical", True)]
    if not differ:
        return title + f"<p>Every concept gave bit-identical results on two runs ({len(runs)} concept × backend " \
                       "pairs).</p></section>"
    rows = "".join(f"<tr><td>{esc(e.result.concept)}</td><td>{esc(_record_label(e, cols))}</td></tr>"
                   for e in differ)
    return (title + f"<p class='fail'>{len(differ)} of {len(runs)} concept × backend pairs gave different bits on "
            f"two runs:</p><table><tr><th>concept</th><th>backend</th></tr>{rows}</table></section>")


def write_report(results_docs: list[dict], bench_doc: dict | None, out: Path, *, spec: spec_mod.Spec) -> Path:
    """Render the page for the given runs and benchmark (as load_results and load_bench return
    them) against ``spec``, the spec the runs checked, and write it to ``out``."""
    for d in results_docs:
        d.setdefault("backends", {})
        d.setdefault("unavailable", {})
    cols = columns(results_docs)
    core: dict[tuple[str, str], list[CheckResult]] = defaultdict(list)
    others, cross = [], []
    for run, d in enumerate(results_docs):
        for r in d["results"]:
            if r.section is Section.CROSS:
                cross.append(Entry(run, r))
            elif r.section is not Section.OPS:
                others.append(Entry(run, r))
            key = "cross" if r.backend == "cross" else _column_of(cols, run, r.backend)["key"]
            core[(r.concept, key)].append(r)
    nav = "".join(f"<a href='#{k}'>{t}</a>" for k, t in (
        ("coverage", "Coverage"), ("agreement", "Agreement"), ("performance", "Performance"),
        ("training", "Training"), ("claims", "Claims"), ("node-tests", "ONNX node tests"),
        ("reliability", "Reliability"), ("determinism", "Determinism"), ("onnx", "ONNX"), ("concepts", "Concepts")))
    page = (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            f"<meta name='viewport' content='width=device-width, initial-scale=1'>"
            f"<title>nutshell report — spec {esc(spec.version)}</title><style>{CSS}</style></head><body>"
            f"{header(results_docs, bench_doc, spec.version)}<nav>{nav}</nav>"
            f"{coverage(spec, core, cols)}{agreement(cross, cols)}{determinism(others, cols)}{performance(bench_doc)}"
            f"{other_sections(others, cols)}{concept_details(spec, core, cols)}</body></html>\n")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out, page)
    return out


def write_from_reports_dir(reports: Path, spec_file: str | Path | None = None) -> Path:
    """reports/results.json (and reports/bench.json when present) -> reports/index.html, against
    the spec file the run used (None: the repository's).

    A bench.json that cannot be used (another spec version, a broken file) is left out with a
    warning on stderr; a bad results.json is a SpecError."""
    reports = Path(reports)
    spec = spec_mod.load(spec_file)
    version = spec.version
    results = load_results(reports / "results.json", version)
    bench = None
    if (reports / "bench.json").is_file():
        try:
            bench = load_bench(reports / "bench.json", version)
        except SpecError as exc:
            print(f"nutshell: the report leaves out the benchmarks: {exc}", file=sys.stderr)
    return write_report([results], bench, reports / "index.html", spec=spec)
