"""Results files under hostile input: every results.json, bench.json and results.jsonl is read by
one function, only from a regular file within the size limit, and validated against the JSON
Schema for types as well as keys; a problem is a SpecError naming the file, the record and the
field, in ``nutshell report`` as in the API, never a raw AttributeError, TypeError or KeyError."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import jsonschema
import pytest

from nutshell import cli
from nutshell import spec as spec_mod
from nutshell.conformance import schema
from nutshell.conformance.results import (
    BenchOutcome,
    CheckResult,
    FileKind,
    Outcome,
    ResultsWriter,
    Section,
    load,
    load_bench,
    load_lines,
    load_results,
    summarize,
    summary_table,
)
from nutshell.errors import SpecError

VERSION = spec_mod.load().version


def record(rid: str = "relu[torch-grid-float32]", **extra) -> dict:
    return {"id": rid, "backend": "torch", "concept": "relu", "check": "forward", "section": "ops",
            "outcome": "pass", "vector": "grid", "dtype": "float32", "usage": 0.25, **extra}


def results_doc(**header) -> dict:
    return {"kind": "nutshell-results", "spec_version": VERSION, "backends": {"torch": {"device": "cpu"}},
            "unavailable": {}, "machine": {"host": "box", "cpus": 2}, "results": [record()], **header}


def measurement(**extra) -> dict:
    return {"backend": "torch", "device": "cpu", "concept": "relu", "size": "small", "direction": "forward",
            "outcome": "ok", "time": {"median_s": 1e-3, "spread": 0.01}, **extra}


def bench_doc(**header) -> dict:
    return {"kind": "nutshell-bench", "schema_version": 1, "spec_version": VERSION, "machine": {"host": "box"},
            "devices": {"cpu": "a CPU"}, "peak": {"cpu": {"n": 64, "gflops": 10.0, "library": "numpy"}},
            "results": [measurement()], **header}


def write(path: Path, doc) -> Path:
    path.write_text(json.dumps(doc))
    return path


def nutshell(capsys, *argv: str) -> tuple[int, str]:
    """``nutshell ARGV`` in this process: (exit status, stderr)."""
    code = cli.main(list(argv))
    return code, capsys.readouterr().err


def test_the_schema_is_valid_and_knows_every_outcome_and_section():
    doc = json.loads(schema.SCHEMA_FILE.read_text())
    jsonschema.Draft202012Validator.check_schema(doc)
    props = doc["$defs"]["checkResult"]["properties"]
    assert props["outcome"]["enum"] == [o.value for o in Outcome]
    assert props["section"]["enum"] == [s.value for s in Section]
    assert doc["$defs"]["benchResult"]["properties"]["outcome"]["enum"] == [o.value for o in BenchOutcome]


def test_what_a_run_writes_reads_back(tmp_path):
    w = ResultsWriter(tmp_path / "results.json", {"spec_version": VERSION, "backends": {}, "unavailable": {}})
    w.add(CheckResult.from_json(record()))
    w.flush()
    doc = load_results(tmp_path / "results.json", VERSION)
    assert doc["kind"] == FileKind.RESULTS.value and doc["results"] == w.records
    assert load_lines(tmp_path / "results.jsonl") == w.records


@pytest.mark.parametrize("doc, message", [
    (results_doc(machine="box"), r"field machine: expected dict, got 'box'"),
    (results_doc(results=[record(usage="small")]),
     r"results\[0\] \(relu\[torch-grid-float32\]\): field usage: expected int or float or null, got 'small'"),
    (results_doc(results=[record(), record(["relu"])]), r"results\[1\]: field id: expected str, got \['relu'\]"),
    (results_doc(backends={"torch": "cpu"}), r"field backends\.torch: expected dict, got 'cpu'"),
    (results_doc(unavailable=["cupy"]), r"field unavailable: expected dict, got \['cupy'\]"),
    (results_doc(versions={"numpy": 2}), r"field versions\.numpy: expected str, got 2"),
    (results_doc(results=[record(details={"pairwise_max_abs": [0.1]})]),
     r"field details\.pairwise_max_abs: expected dict or null, got \[0\.1\]"),
    (results_doc(results=[record(outcome="passed")]), r"field outcome: 'passed' is not one of pass, fail"),
    (results_doc(results=["relu"]), r"results\[0\]: a check result must be a JSON object, got a string"),
])
def test_report_refuses_a_results_file_of_the_wrong_types_naming_the_field(tmp_path, capsys, doc, message):
    path = write(tmp_path / "r.json", doc)
    with pytest.raises(SpecError, match=message):
        load_results(path)
    code, err = nutshell(capsys, "report", str(path), "-o", str(tmp_path / "index.html"))
    assert code == 2 and f"SpecError: {path}: " in err and not (tmp_path / "index.html").exists(), err


@pytest.mark.parametrize("doc, message", [
    (bench_doc(results=[{"backend": "torch", "concept": "relu"}]), r"results\[0\]: field size is missing"),
    (bench_doc(results=[measurement(time={"median_s": 1e-3, "spread": "wide"})]),
     r"field time\.spread: expected int or float, got 'wide'"),
    (bench_doc(results=[measurement(time=None)]), r"field time: a measurement needs time\.median_s"),
    (bench_doc(results=[measurement(time={"median_s": 0.0})]),
     r"field time\.median_s: expected a number above 0, got 0\.0"),
    (bench_doc(results=[measurement(baseline={"library": ["torch"]})]),
     r"field baseline\.library: expected str, got \['torch'\]"),
    (bench_doc(peak={"cpu": "fast"}), r"field peak\.cpu: expected dict, got 'fast'"),
    (bench_doc(devices=["cpu"]), r"field devices: expected dict, got \['cpu'\]"),
])
def test_report_refuses_a_bench_file_of_the_wrong_types_naming_the_field(tmp_path, capsys, doc, message):
    path = write(tmp_path / "bench.json", doc)
    with pytest.raises(SpecError, match=message):
        load_bench(path)
    results = write(tmp_path / "r.json", results_doc())
    code, err = nutshell(capsys, "report", str(results), "--bench", str(path), "-o", str(tmp_path / "index.html"))
    assert code == 2 and f"SpecError: {path}: " in err, err


def test_a_bench_file_passed_as_results_says_to_use_bench_and_the_reverse(tmp_path, capsys):
    bench, results = write(tmp_path / "bench.json", bench_doc()), write(tmp_path / "r.json", results_doc())
    code, err = nutshell(capsys, "report", str(bench), "-o", str(tmp_path / "index.html"))
    assert code == 2 and "this is a bench file (of nutshell bench): pass it with --bench" in err, err
    assert "lacks" not in err and "missing" not in err
    code, err = nutshell(capsys, "report", str(results), "--bench", str(results), "-o", str(tmp_path / "i.html"))
    assert code == 2 and "this is a results file (of nutshell run): pass it without --bench" in err, err


def test_neither_kind_is_named_as_such(tmp_path):
    with pytest.raises(SpecError, match=r"not a nutshell results file or bench file"):
        load(write(tmp_path / "x.json", {"results": []}))
    with pytest.raises(SpecError, match=r"not a nutshell results file \(needs 'spec_version'"):
        load_results(write(tmp_path / "y.json", [1, 2]))


@pytest.mark.parametrize("special, what", [("/dev/zero", "a character device"), ("dir", "a directory")])
def test_only_regular_files_are_read(tmp_path, special, what):
    path = Path(special) if special.startswith("/") else tmp_path
    started = time.monotonic()
    with pytest.raises(SpecError, match=f"{path}: {what}, not a regular file"):
        load_results(path)
    assert time.monotonic() - started < 1


def test_a_fifo_is_refused_at_once_not_waited_on(tmp_path):
    fifo = tmp_path / "results.json"
    os.mkfifo(fifo)
    r = subprocess.run([sys.executable, "-m", "nutshell.cli", "compare", str(fifo), str(fifo)], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 2 and "a FIFO (named pipe), not a regular file" in r.stderr, r.stderr


def test_a_file_over_the_size_limit_is_refused_unread(tmp_path):
    big = tmp_path / "results.json"
    with big.open("wb") as f:
        f.truncate(schema.MAX_BYTES + 1)          # sparse: no disk space, no time
    with pytest.raises(SpecError, match=f"{schema.MAX_BYTES + 1:,} bytes, more than the limit of "
                                        f"{schema.MAX_BYTES:,} bytes \\(256 MiB\\)"):
        load_results(big)


def test_nesting_beyond_the_recursion_limit_is_a_spec_error(tmp_path):
    deep = tmp_path / "results.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(SpecError, match="nested too deeply"):
        load_results(deep)


def test_the_lines_file_leaves_out_only_a_last_line_cut_short(tmp_path):
    lines = tmp_path / "results.jsonl"
    good = json.dumps(record()) + "\n"
    lines.write_text(good + good.replace("grid", "kink")[:40])
    assert [r.id for r in load_lines(lines)] == ["relu[torch-grid-float32]"]
    lines.write_text(good + "{cut\n" + good)
    with pytest.raises(SpecError, match=r"results\.jsonl: line 2: not a JSON line"):
        load_lines(lines)
    lines.write_text(good + json.dumps(record(backend=["torch"])) + "\n")
    with pytest.raises(SpecError, match=r"results\.jsonl: line 2: field backend: expected str, got \['torch'\]"):
        load_lines(lines)


def test_a_spec_problem_is_counted_apart_from_the_crashes():
    recs = [CheckResult.from_json(record(outcome="spec", message="vector file ... has sha256 ...")),
            CheckResult.from_json(record("relu[torch-grid-float64]", outcome="error"))]
    counts = summarize(recs)["torch"]
    assert (counts["spec"], counts["error"], counts["total"]) == (1, 1, 2)
    assert "spec problems: 1 check(s) not run" in summary_table(summarize(recs))
