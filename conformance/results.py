"""Results as the run goes: one JSON line per check appended to ``results.jsonl``, and
``results.json`` rewritten atomically (a temporary file, then a rename) at most once a second and
at the end, so a killed run always leaves a valid file for what finished.

Every check produces one :class:`CheckResult` and every benchmark measurement one
:class:`BenchResult`; the plugin, the runner, the report, compare and the bench pass these typed
records around and turn them into JSON (and back) only here, at the file boundary.
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, fields
from datetime import datetime, timezone
from enum import Enum
from pathlib import Path
from typing import Any

from nutshell.errors import SpecError


class Outcome(str, Enum):
    """How a check ended. A str, so that the JSON files keep their ``"pass"`` etc."""

    PASS = "pass"
    FAIL = "fail"
    UNSUPPORTED = "unsupported"
    ERROR = "error"

    def __str__(self) -> str:   # the value in f-strings on every Python (3.12 changed Enum.__format__)
        return self.value


OUTCOMES = tuple(o.value for o in Outcome)


class Section(str, Enum):
    """Where the report shows a record. Set by whoever creates the record, since only it knows
    what kind of check it ran; the report never guesses it from the names."""

    OPS = "ops"                      # forward, vjp, finite difference and error checks of one backend
    CROSS = "cross"                  # a concept on every selected backend at once
    MODELS = "models"                # the models of models.yaml: forward, loss, gradients, training
    CLAIMS = "claims"                # the glossary's claims
    NODE_TESTS = "node-tests"        # ONNX's own node tests
    RELIABILITY = "reliability"      # the catalogue of awkward inputs and the fuzzing
    ONNX = "onnx"                    # export to ONNX and import from it
    OTHER = "other"                  # a worker that died outside any check

    def __str__(self) -> str:
        return self.value


_LEGACY_WORDS = ((Section.MODELS, ("train", "digits")), (Section.CLAIMS, ("claim",)), (Section.NODE_TESTS, ("node",)),
                 (Section.RELIABILITY, ("catalogue", "fuzz", "isolat", "reliab")),
                 (Section.ONNX, ("onnx", "export", "import")))


def _legacy_section(d: dict) -> Section:
    """The section of a record from a results file written before records carried one: the
    report's former guess from the concept and check names, kept for those files only."""
    concept, check = str(d["concept"]).lower(), str(d["check"]).lower()
    if concept.startswith("model_"):
        return Section.MODELS
    if check == "cross":
        return Section.CROSS
    if check in ("forward", "vjp", "fd", "error"):
        return Section.OPS
    words = f"{concept} {check}"
    return next((section for section, keys in _LEGACY_WORDS if any(k in words for k in keys)), Section.OTHER)


# ------------------------------------------------------------------------------ reading JSON

_STR, _NUM, _DICT = (str,), (int, float), (dict,)


def _checked(d: Any, table: dict[str, tuple[tuple[type, ...], bool]], required: tuple[str, ...], kind: str,
             where: str) -> dict:
    """``d`` once every field is known, present when required and of its type (None allowed where
    the table says so); else a SpecError naming the field, so a broken file says what is wrong."""
    if not isinstance(d, dict):
        raise SpecError(f"{where}: a {kind} must be a JSON object, got {type(d).__name__}")
    for name in d:
        if name not in table:
            raise SpecError(f"{where}: field {name}: not a field of a {kind}")
    for name in required:
        if name not in d:
            raise SpecError(f"{where}: field {name} is missing")
    for name, value in d.items():
        types, nullable = table[name]
        if value is None and nullable:
            continue
        if isinstance(value, bool) or not isinstance(value, types):
            wanted = " or ".join(t.__name__ for t in types) + (" or null" if nullable else "")
            raise SpecError(f"{where}: field {name}: expected {wanted}, got {value!r}"[:300])
    return d


def _member(enum: type[Enum], value: str, name: str, where: str) -> Any:
    try:
        return enum(value)
    except ValueError:
        known = ", ".join(m.value for m in enum)
        raise SpecError(f"{where}: field {name}: {value!r} is not one of {known}") from None


# ------------------------------------------------------------------------------ check results

_CHECK_FIELDS: dict[str, tuple[tuple[type, ...], bool]] = {
    "id": (_STR, False), "backend": (_STR, False), "concept": (_STR, False), "check": (_STR, False),
    "section": (_STR, False), "outcome": (_STR, False), "vector": (_STR, True), "dtype": (_STR, True),
    "usage": (_NUM, True), "details": (_DICT, True), "message": (_STR, True), "seconds": (_NUM, True),
    "nodeid": (_STR, True), "rerun": (_STR, True), "status": (_STR, True)}
_CHECK_REQUIRED = ("id", "backend", "concept", "check", "outcome")
_CHECK_ALWAYS = frozenset(("id", "backend", "concept", "check", "section", "outcome", "vector", "dtype"))


@dataclass
class CheckResult:
    """What one check of the conformance suite found: what it checked, how it ended, its numbers."""

    id: str                        # the check id, e.g. conv2d[torch-figure3-float32]
    backend: str                   # the backend, or "cross" for a check spanning the selected backends
    concept: str                   # a concept id, model_<id>, a claim id, export, onnx_import, ...
    check: str                     # forward, vjp, fd, error, cross, catalogue, fuzz, claim, crash, ...
    section: Section
    outcome: Outcome
    vector: str | None = None
    dtype: str | None = None
    usage: float | None = None     # max |error| / bound: at most 1 passes
    details: dict | None = None    # everything the check measured
    message: str | None = None     # why it did not pass
    seconds: float | None = None
    nodeid: str | None = None      # the pytest node id
    rerun: str | None = None       # the command that reruns exactly this check (failures and errors)
    status: str | None = None      # the runner's: "timeout" or "error" for a check its worker never finished

    def to_json(self) -> dict[str, Any]:
        """The record as results.json holds it: what identifies the check always, the rest when set."""
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is not None or f.name in _CHECK_ALWAYS:
                out[f.name] = value.value if isinstance(value, Enum) else value
        return out

    @classmethod
    def from_json(cls, d: Any, where: str = "check result") -> CheckResult:
        """A record read back; SpecError naming the field when it is not one. Files written before
        records carried a section get it derived from the names, once, here."""
        d = _checked(d, _CHECK_FIELDS, _CHECK_REQUIRED, "check result", where)
        outcome = _member(Outcome, d["outcome"], "outcome", where)
        section = _member(Section, d["section"], "section", where) if "section" in d else _legacy_section(d)
        return cls(**{**d, "outcome": outcome, "section": section})


def rerun_command(suite: Path, check_id: str, backends: Iterable[str], device: str | None = None,
                  spec: str | Path | None = None) -> str:
    """The command that reruns exactly one check, from the current directory.

    The plugin (for a failure) and the runner (for a check its worker crashed or hung on) both
    write it. A backend's check names that backend; a check spanning backends (the ``cross``
    group) names every backend its run had: ``--backend cross`` selects none, and no ``--backend``
    at all selects every registered backend, perhaps not those that ran. The device and the spec
    file go along when the run had them, so the rerun sees the same backends on the same spec.
    """
    try:
        where = Path(suite).relative_to(Path.cwd())
    except ValueError:
        where = Path(suite)
    argv = ["pytest", f"{where}::{check_id}"]
    for name in backends:
        argv += ["--backend", name]
    if device:
        argv += ["--nutshell-device", device]
    if spec is not None:
        argv += ["--spec", str(spec)]
    return shlex.join(argv)


# ------------------------------------------------------------------------------ bench results

class BenchOutcome(str, Enum):
    """How one benchmark measurement ended."""

    OK = "ok"
    UNSUPPORTED = "unsupported"
    ERROR = "error"

    def __str__(self) -> str:
        return self.value


_BENCH_FIELDS: dict[str, tuple[tuple[type, ...], bool]] = {
    "backend": (_STR, False), "device": (_STR, True), "concept": (_STR, False), "kind": (_STR, True),
    "size": (_STR, False), "direction": (_STR, False), "level": (_STR, True), "dtype": (_STR, True),
    "shapes": (_DICT, True), "attrs": (_DICT, True), "note": (_STR, True), "outcome": (_STR, False),
    "message": (_STR, True), "flops": (_NUM, True), "time": (_DICT, True), "gflops": (_NUM, True),
    "peak_share": (_NUM, True), "baseline": (_DICT, True), "overhead": (_NUM, True)}
_BENCH_REQUIRED = ("backend", "concept", "size", "direction", "outcome")
_BENCH_MEASURED = frozenset(("flops", "time", "gflops", "peak_share", "baseline", "overhead"))


@dataclass
class BenchResult:
    """One benchmark measurement: a concept's forward or vjp, or a model's step, on one backend."""

    backend: str
    concept: str                   # the concept or model id measured
    size: str                      # small | medium | large
    direction: str                 # forward | vjp | step
    outcome: BenchOutcome = BenchOutcome.OK
    device: str | None = None
    kind: str | None = None        # concept | model
    level: str | None = None       # native (benchmark level) | api (NumPy in and out)
    dtype: str | None = None
    shapes: dict | None = None
    attrs: dict | None = None
    note: str | None = None
    message: str | None = None     # why it was not measured
    flops: float | None = None
    time: dict | None = None       # the Timing's fields and its spread
    gflops: float | None = None
    peak_share: float | None = None
    baseline: dict | None = None   # the native baseline: library and time, or why it was skipped
    overhead: float | None = None  # time / the baseline's time

    def to_json(self) -> dict[str, Any]:
        """The record as bench.json holds it: a measurement writes every measured field (null
        where there is no baseline or peak), anything else only what is set."""
        ok = self.outcome is BenchOutcome.OK
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is not None or (ok and f.name in _BENCH_MEASURED):
                out[f.name] = value.value if isinstance(value, Enum) else value
        return out

    @classmethod
    def from_json(cls, d: Any, where: str = "bench result") -> BenchResult:
        """A measurement read back; SpecError naming the field when it is not one."""
        d = _checked(d, _BENCH_FIELDS, _BENCH_REQUIRED, "bench result", where)
        outcome = _member(BenchOutcome, d["outcome"], "outcome", where)
        if outcome is BenchOutcome.OK and not isinstance((d.get("time") or {}).get("median_s"), _NUM):
            raise SpecError(f"{where}: field time: a measurement needs time.median_s")
        return cls(**{**d, "outcome": outcome})


# ------------------------------------------------------------------------------ writing

def atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


_DISTRIBUTIONS = ("numpy", "torch", "onnx", "onnxruntime", "onnxruntime-gpu", "cupy-cuda12x", "cupy-cuda11x",
                  "cupy", "tensorflow-cpu", "tensorflow", "matplotlib", "nutshell")


def library_versions() -> dict[str, str]:
    """Python and the installed version of every library a backend or the report may use."""
    from importlib import metadata

    out = {"python": platform.python_version()}
    for dist in _DISTRIBUTIONS:
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return out


def machine_info() -> dict:
    return {"machine": platform.machine(), "processor": platform.processor(), "system": platform.platform(),
            "python": platform.python_version(), "cpus": os.cpu_count(), "host": platform.node()}


def _line(record: CheckResult) -> str:
    return json.dumps(record.to_json(), default=_jsonable) + "\n"


class ResultsWriter:
    """Collects check records and keeps results.json / results.jsonl current."""

    def __init__(self, path: Path, header: dict, every_s: float = 1.0, records: list[CheckResult] | None = None):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.lines = self.path.with_suffix(".jsonl")
        self.lines.write_text("".join(_line(r) for r in records or []))
        self.header = header | {"started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                                "machine": machine_info(), "versions": library_versions()}
        self.records: list[CheckResult] = list(records or [])
        self.every_s, self._last = every_s, 0.0
        self.flush(final=False)

    def add(self, record: CheckResult) -> None:
        self.records.append(record)
        with self.lines.open("a") as f:
            f.write(_line(record))
        if time.monotonic() - self._last >= self.every_s:
            self.flush(final=False)

    def flush(self, final: bool = True) -> None:
        self._last = time.monotonic()
        doc = self.header | {"complete": final, "summary": summarize(self.records),
                             "results": [r.to_json() for r in self.records]}
        if final:
            doc["finished"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
        atomic_write(self.path, json.dumps(doc, indent=1, default=_jsonable))


class EventWriter:
    """Worker mode: a JSON line when each check starts and one with its record when it ends,
    flushed at once, so the parent can tell which check a crash or a hang interrupted."""

    def __init__(self, path: Path, header: dict):
        self.path = Path(path)
        self.records: list[CheckResult] = []
        self._f = self.path.open("a", buffering=1)
        self._write({"event": "header", **header})

    def _write(self, obj: dict) -> None:
        self._f.write(json.dumps(obj, default=_jsonable) + "\n")
        self._f.flush()

    def start(self, check_id: str, section: Section) -> None:
        """The section goes along so that a crash record the runner writes lands where the check would."""
        self._write({"event": "start", "id": check_id, "section": section.value, "t": time.time()})

    def add(self, record: CheckResult) -> None:
        self.records.append(record)
        self._write({"event": "record", **record.to_json()})

    def flush(self, final: bool = True) -> None:
        self._f.flush()
        if final:
            self._f.close()


def _jsonable(o):
    if hasattr(o, "item"):
        return o.item()
    return str(o)


def summarize(records: Iterable[CheckResult]) -> dict:
    """Per backend: counts by outcome, the total, and the worst bound usage among passes."""
    out: dict = defaultdict(lambda: dict.fromkeys((*OUTCOMES, "total"), 0) | {"worst_usage": 0.0})
    for r in records:
        s = out[r.backend]
        s[r.outcome.value] += 1
        s["total"] += 1
        if r.outcome is Outcome.PASS and r.usage is not None:
            s["worst_usage"] = max(s["worst_usage"], r.usage)
    return dict(out)


def summary_table(summary: dict, unavailable: dict | None = None) -> str:
    """A table readable in 80 columns."""
    rows = [f"{'backend':<10} {'passed':>7} {'failed':>7} {'unsupp.':>8} {'errors':>7} {'total':>7}  worst usage"]
    for name in sorted(summary):
        s = summary[name]
        rows.append(f"{name:<10} {s['pass']:>7} {s['fail']:>7} {s['unsupported']:>8} {s['error']:>7} "
                    f"{s['total']:>7}  {s['worst_usage']:.3g}")
    for name, why in sorted((unavailable or {}).items()):
        rows.append(f"{name:<10} unavailable: {why[:60]}")
    return "\n".join(rows)


_JUNIT_TAGS = {Outcome.FAIL: "failure", Outcome.ERROR: "error", Outcome.UNSUPPORTED: "skipped"}


def write_junit(records: list[CheckResult], path: Path) -> None:
    """A JUnit XML file of the records (one testsuite per backend), written atomically."""
    from xml.etree import ElementTree as ET

    root = ET.Element("testsuites", name="nutshell")
    by_backend: dict[str, list[CheckResult]] = defaultdict(list)
    for r in records:
        by_backend[r.backend].append(r)
    for backend, recs in sorted(by_backend.items()):
        counts = summarize(recs)[backend]
        suite = ET.SubElement(root, "testsuite", name=backend, tests=str(len(recs)), failures=str(counts["fail"]),
                              errors=str(counts["error"]), skipped=str(counts["unsupported"]))
        for r in recs:
            case = ET.SubElement(suite, "testcase", classname=f"{backend}.{r.concept}", name=r.id,
                                 time=str(0 if r.seconds is None else r.seconds))
            tag = _JUNIT_TAGS.get(r.outcome)
            if tag:
                ET.SubElement(case, tag, message=str(r.message or "")[:2000])
    atomic_write(Path(path), ET.tostring(root, encoding="unicode"))
