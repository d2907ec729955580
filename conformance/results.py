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

from nutshell.backends import BUILTIN, ENV_VAR
from nutshell.conformance import schema
from nutshell.errors import SpecError


class Outcome(str, Enum):
    """How a check ended. A str, so that the JSON files keep their ``"pass"`` etc."""

    PASS = "pass"
    FAIL = "fail"
    UNSUPPORTED = "unsupported"
    ERROR = "error"                  # the backend crashed
    SPEC = "spec"                    # the spec's own files are broken (a vector file missing or altered): not run

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


# ------------------------------------------------------------------------------ check results

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
        """A record read back; SpecError naming the field when it is not one (schema.py)."""
        schema.validate(d, "checkResult", where)
        return cls._valid(d)

    @classmethod
    def _valid(cls, d: dict) -> CheckResult:
        """A record the schema accepted. Files written before records carried a section get it
        derived from the names, once, here."""
        section = Section(d["section"]) if "section" in d else _legacy_section(d)
        return cls(**{**d, "outcome": Outcome(d["outcome"]), "section": section})


def rerun_command(suite: Path, check_id: str, backends: Iterable[str], device: str | None = None,
                  spec: str | Path | None = None) -> str:
    """The command that reruns exactly one check, from the current directory.

    The plugin (for a failure) and the runner (for a check its worker crashed or hung on) both
    write it. A backend's check names that backend; a check spanning backends (the ``cross``
    group) names every backend its run had: ``--backend cross`` selects none, and no ``--backend``
    at all selects every registered backend, perhaps not those that ran. The device and the spec
    file go along when the run had them, so the rerun sees the same backends on the same spec, and
    so does ``$NUTSHELL_BACKENDS`` for a backend registered there (it exists nowhere else): pasted
    into a fresh shell, the command reruns that check.

    It starts pytest as ``python -m pytest``, as the runner starts its workers, so that the current
    directory is on ``sys.path`` for both (a backend module beside the user's files imports in the
    rerun as it did in the run; a bare ``pytest`` leaves the directory out). ``$PYTHONPATH`` goes
    along, when the run had one, with a backend from ``$NUTSHELL_BACKENDS``: its module may be found
    only there.
    """
    try:
        where = Path(suite).relative_to(Path.cwd())
    except ValueError:
        where = Path(suite)
    argv = ["python", "-m", "pytest", f"{where}::{check_id}"]
    for name in backends:
        argv += ["--backend", name]
    if device:
        argv += ["--nutshell-device", device]
    if spec is not None:
        argv += ["--spec", str(spec)]
    env = {ENV_VAR: _env_backends(argv)}
    if env[ENV_VAR]:
        env["PYTHONPATH"] = os.pathsep.join(p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p)
    # a shell takes NAME=value as an assignment only with the name and the '=' unquoted
    return " ".join([f"{name}={shlex.quote(value)}" for name, value in env.items() if value] + [shlex.join(argv)])


def _env_backends(argv: list[str]) -> str:
    """The entries of $NUTSHELL_BACKENDS (``name=module:Class``, comma-separated) that define a
    backend the command names; the registry reads the variable the same way."""
    named = {argv[i + 1] for i, a in enumerate(argv[:-1]) if a == "--backend"} - set(BUILTIN)
    items = [item.strip() for item in os.environ.get(ENV_VAR, "").split(",")]
    return ",".join(item for item in items if item.partition("=")[0].strip() in named and item.partition("=")[2])


# ------------------------------------------------------------------------------ bench results

class BenchOutcome(str, Enum):
    """How one benchmark measurement ended."""

    OK = "ok"
    UNSUPPORTED = "unsupported"
    ERROR = "error"

    def __str__(self) -> str:
        return self.value


_BENCH_MEASURED = frozenset(("flops", "time", "gflops", "peak_share", "baseline", "overhead", "canonical",
                             "canonical_ratio"))


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
    time: dict | None = None       # the Timing's fields, its spread and whether it is unsteady
    gflops: float | None = None
    peak_share: float | None = None
    flops_basis: str | None = None  # whose FLOPs count when not the concept's own ("direct convolution")
    baseline: dict | None = None   # the backend's own work on the bare library: library, call, time or why skipped
    overhead: float | None = None  # time / the baseline's time
    canonical: dict | None = None  # the canonical bare call: as baseline, or same_as "baseline"
    canonical_ratio: float | None = None  # time / the canonical call's time

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
        """A measurement read back; SpecError naming the field when it is not one (schema.py)."""
        schema.validate(d, "benchResult", where)
        return cls._valid(d)

    @classmethod
    def _valid(cls, d: dict) -> BenchResult:
        """A measurement the schema accepted."""
        return cls(**{**d, "outcome": BenchOutcome(d["outcome"])})


# ------------------------------------------------------------------------------ reading files

class FileKind(str, Enum):
    """The two kinds of results document, by the value of their ``kind`` field (results files
    written before it existed have none)."""

    RESULTS = "nutshell-results"     # results.json of nutshell run
    BENCH = "nutshell-bench"         # bench.json of nutshell bench

    def __str__(self) -> str:
        return self.value


_KINDS = {FileKind.RESULTS: ("results file", "nutshell run", "resultsFile", CheckResult),
          FileKind.BENCH: ("bench file", "nutshell bench", "benchFile", BenchResult)}
_NEEDS = {FileKind.RESULTS: "needs 'spec_version' and a 'results' list",
          FileKind.BENCH: "kind 'nutshell-bench' with a 'results' list"}
_HINTS = {FileKind.RESULTS: "pass it without --bench", FileKind.BENCH: "pass it with --bench"}


def file_kind(doc: Any) -> FileKind | None:
    """Which kind of results document ``doc`` is, or None when it is neither."""
    if not isinstance(doc, dict) or not isinstance(doc.get("results"), list):
        return None
    if doc.get("kind") == FileKind.BENCH.value:
        return FileKind.BENCH
    if doc.get("kind", FileKind.RESULTS.value) == FileKind.RESULTS.value and "spec_version" in doc:
        return FileKind.RESULTS
    return None


def load(path: str | Path, expect: FileKind | None = None, version: str | None = None) -> dict:
    """A results or bench document (``expect``: only that kind), read by :func:`schema.read_text`
    (a regular file within the size limit) and validated against the schema before use; its
    records become :class:`CheckResult` or :class:`BenchResult`, its ``kind`` says which. With
    ``version``, a file of another spec version is refused. Every problem is a SpecError naming
    the file, the record and the field."""
    doc = schema.parse(schema.read_text(path), str(path))
    kind = file_kind(doc)
    if kind is None:
        wanted = [expect] if expect else list(FileKind)
        raise SpecError(f"{path}: not a nutshell {' or '.join(_KINDS[k][0] for k in wanted)} "
                        f"({'; '.join(_NEEDS[k] for k in wanted)})")
    name, origin, definition, record = _KINDS[kind]
    if expect is not None and kind is not expect:
        raise SpecError(f"{path}: not a nutshell {_KINDS[expect][0]}: this is a {name} (of {origin}): {_HINTS[kind]}")
    schema.validate(doc, definition, str(path))
    if version is not None and doc["spec_version"] != version:
        raise SpecError(f"{path}: made with spec version {doc['spec_version']}, this spec is {version}; "
                        "rerun it with this checkout, or report it from a checkout of that version")
    return doc | {"kind": kind.value, "results": [record._valid(r) for r in doc["results"]],
                  "backends": doc.get("backends", {}), "unavailable": doc.get("unavailable", {}),
                  "source": str(path)}


def load_results(path: str | Path, version: str | None = None) -> dict:
    """A results.json (see :func:`load`)."""
    return load(path, FileKind.RESULTS, version)


def load_bench(path: str | Path, version: str | None = None) -> dict:
    """A bench.json (see :func:`load`)."""
    return load(path, FileKind.BENCH, version)


def load_lines(path: str | Path) -> list[CheckResult]:
    """The records of a results.jsonl (``--resume``), read like any results file. A last line cut
    short by an interruption (no newline after it) is left out: everything before it is good. Any
    other line that is not a check record is a SpecError naming the line and the field."""
    text = schema.read_text(path)
    lines = text.splitlines()
    out = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        where = f"{path}: line {i + 1}"
        try:
            d = schema.parse(line, where, "line")
        except SpecError:
            if i == len(lines) - 1 and not text.endswith("\n"):
                break
            raise
        out.append(CheckResult.from_json(d, where))
    return out


# ------------------------------------------------------------------------------ the hunt

HUNT_FILE = "hunt.json"
"""What ``nutshell hunt`` writes into its reports folder: per backend, its last hunt."""


def load_hunt(path: str | Path) -> dict:
    """A hunt.json, read like any results file (:func:`schema.read_text`) and validated against the
    schema's ``huntFile``; a SpecError naming the file and the field when it is not one."""
    doc = schema.parse(schema.read_text(path), str(path))
    schema.validate(doc, "huntFile", str(path))
    return doc


def record_hunt(results_path: str | Path, hunt: dict) -> bool:
    """Make ``hunt`` (a hunt.json's document) the ``hunt`` field of the results file at
    ``results_path``, rewritten atomically with every other field as it was; False, and nothing
    written, when the file holds that hunt already."""
    doc = schema.parse(schema.read_text(results_path), str(results_path))
    if doc.get("hunt") == hunt:
        return False
    atomic_write(Path(results_path), json.dumps(doc | {"hunt": hunt}, indent=1))
    return True


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
        started = datetime.now(timezone.utc).isoformat(timespec="seconds")
        self.header = {"kind": FileKind.RESULTS.value} | header | {"started": started, "machine": machine_info(),
                                                                  "versions": library_versions()}
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
    flushed at once, so the parent can tell which check a crash or a hang interrupted. Every line
    carries the worker's token (``run``), so the parent reads only the worker it started now, and
    the last line, once the session has finished, is ``done``: a worker that ends without it died."""

    def __init__(self, path: Path, header: dict, token: str | None = None):
        self.path = Path(path)
        self.token = token
        self.records: list[CheckResult] = []
        self._f = self.path.open("a", buffering=1)
        self._write({"event": "header", **header})

    def _write(self, obj: dict) -> None:
        self._f.write(json.dumps({**obj, "run": self.token}, default=_jsonable) + "\n")
        self._f.flush()

    def start(self, check_id: str, section: Section) -> None:
        """The section goes along so that a crash record the runner writes lands where the check would."""
        self._write({"event": "start", "id": check_id, "section": section.value, "t": time.time()})

    def add(self, record: CheckResult) -> None:
        self.records.append(record)
        self._write({"event": "record", **record.to_json()})

    def flush(self, final: bool = True) -> None:
        if final:
            self._write({"event": "done"})
            self._f.close()
        else:
            self._f.flush()


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


def summary_rows(summary: dict, unavailable: dict | None = None):
    """Per backend: the counts by outcome and the worst bound usage among passes; then each
    unavailable backend with its whole reason (wrapped at word boundaries): a
    :class:`~nutshell.conformance.tables.Table` (imported here: rich loads only where a table is drawn)."""
    from nutshell.conformance.tables import Column, Table

    t = Table([Column("backend", 10), Column("passed", 7, ">"), Column("failed", 7, ">"),
               Column("unsupp.", 8, ">"), Column("errors", 7, ">"), Column("total", 7, ">"),
               Column("worst usage", sep=2)])
    for name in sorted(summary):
        s = summary[name]
        t.row(name, s["pass"], s["fail"], s["unsupported"], s["error"], s["total"], f"{s['worst_usage']:.3g}")
    for name, why in sorted((unavailable or {}).items()):
        t.row(name, span=f"unavailable: {why}")
    return t


def spec_problems(summary: dict) -> str | None:
    """The line for checks the spec's own broken files kept from running (counted in the total, under
    no column: the spec is broken, not a backend)."""
    broken = sum(s[Outcome.SPEC.value] for s in summary.values())
    return f"spec problems: {broken} check(s) not run, the spec's own files are broken (outcome 'spec')" \
        if broken else None


def summary_table(summary: dict, unavailable: dict | None = None) -> str:
    """:func:`summary_rows` as plain text readable in 80 columns, and :func:`spec_problems`."""
    problems = spec_problems(summary)
    return "\n".join([*summary_rows(summary, unavailable).lines(), *([problems] if problems else [])])


_JUNIT_TAGS = {Outcome.FAIL: "failure", Outcome.ERROR: "error", Outcome.SPEC: "error", Outcome.UNSUPPORTED: "skipped"}


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
