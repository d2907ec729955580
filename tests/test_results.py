"""The typed result records: what results.json, results.jsonl and bench.json hold, read back
exactly; broken records refused naming the field; and the one rerun command, which works when
pasted into a fresh shell."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from nutshell.conformance import runner
from nutshell.conformance.results import (
    BenchOutcome,
    BenchResult,
    CheckResult,
    Outcome,
    ResultsWriter,
    Section,
    rerun_command,
    summary_table,
)
from nutshell.errors import SpecError

SUITE = Path("/elsewhere/conformance/spec.nutshell")


def failed() -> CheckResult:
    return CheckResult(id="relu[torch-grid-float64-fd]", backend="torch", concept="relu", check="fd",
                       section=Section.OPS, outcome=Outcome.FAIL, vector="grid", dtype="float64", usage=3.5,
                       details={"fd": 1.0, "analytic": 2.0}, message="finite difference 1.0 vs vjp 2.0",
                       seconds=0.01, nodeid="conformance/spec.nutshell::relu[torch-grid-float64-fd]",
                       rerun="pytest 'conformance/spec.nutshell::relu[torch-grid-float64-fd]' --backend torch")


def test_a_record_keeps_the_files_keys_and_values(tmp_path):
    """results.json and results.jsonl hold the JSON values ("fail", "ops"), nothing a run did not
    set beyond what identifies the check, and read back as the very records written."""
    crash = CheckResult(id="relu[cross-grid-float32]", backend="cross", concept="relu", check="crash",
                        section=Section.CROSS, outcome=Outcome.ERROR, status="timeout", message="no result")
    w = ResultsWriter(tmp_path / "results.json", {"spec_version": "0"})
    for r in (failed(), crash):
        w.add(r)
    w.flush()
    doc = json.loads((tmp_path / "results.json").read_text())
    assert doc["results"][0]["outcome"] == "fail" and doc["results"][0]["section"] == "ops"
    assert set(doc["results"][1]) == {"id", "backend", "concept", "check", "section", "outcome", "vector", "dtype",
                                      "status", "message"}
    assert doc["results"][1]["vector"] is None and doc["summary"]["torch"]["fail"] == 1
    lines = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert lines == doc["results"]
    assert [CheckResult.from_json(d) for d in lines] == [failed(), crash]


@pytest.mark.parametrize("concept, check, section", [
    ("conv2d", "forward", Section.OPS), ("conv2d", "error", Section.OPS), ("conv2d", "cross", Section.CROSS),
    ("conv2d", "catalogue", Section.RELIABILITY), ("conv2d", "fuzz", Section.RELIABILITY),
    ("model_lenet", "forward", Section.MODELS), ("model_lenet", "train-agree", Section.MODELS),
    ("linear_collapse", "claim", Section.CLAIMS), ("onnx_node_tests", "onnx-node-tests", Section.NODE_TESTS),
    ("export", "onnx-export", Section.ONNX), ("relu", "crash", Section.OTHER),
])
def test_a_record_of_an_old_file_gets_its_section_from_the_names(concept, check, section):
    old = {"id": f"{concept}[torch]", "backend": "torch", "concept": concept, "check": check, "outcome": "pass"}
    assert CheckResult.from_json(old).section is section


@pytest.mark.parametrize("change, message", [
    (lambda d: d.pop("id"), "record 7: field id is missing"),
    (lambda d: d.update(outcome="passed"), "record 7: field outcome: 'passed' is not one of pass, fail"),
    (lambda d: d.update(section="ops-and-more"), "field section: 'ops-and-more' is not one of ops, cross"),
    (lambda d: d.update(usage=True), "field usage: expected int or float or null, got True"),
    (lambda d: d.update(details=[1, 2]), r"field details: expected dict or null, got \[1, 2\]"),
    (lambda d: d.update(backend=None), "field backend: expected str, got None"),
    (lambda d: d.update(time=0.1), "field time: not a field of a check result"),
])
def test_a_broken_record_is_refused_naming_the_field(change, message):
    d = failed().to_json()
    change(d)
    with pytest.raises(SpecError, match=message):
        CheckResult.from_json(d, "record 7")


def test_a_measurement_reads_back_and_a_failure_writes_what_it_has():
    ok = BenchResult(backend="torch", concept="relu", size="small", direction="forward", device="cpu",
                     kind="concept", level="native", dtype="float32", shapes={"x": [2]}, attrs={}, note="",
                     flops=2.0, time={"median_s": 1e-6, "spread": 0.01}, gflops=0.002)
    d = ok.to_json()
    assert d["outcome"] == "ok" and d["baseline"] is None and d["overhead"] is None and "message" not in d
    assert BenchResult.from_json(json.loads(json.dumps(d))) == ok
    error = BenchResult(backend="torch", concept="relu", size="small", direction="vjp",
                        outcome=BenchOutcome.ERROR, message="RuntimeError: no kernel")
    assert set(error.to_json()) == {"backend", "concept", "size", "direction", "outcome", "message"}
    with pytest.raises(SpecError, match=r"field time: a measurement needs time\.median_s"):
        BenchResult.from_json({**d, "time": {}})
    with pytest.raises(SpecError, match="field outcome: 'pass' is not one of ok, unsupported, error"):
        BenchResult.from_json({**d, "outcome": "pass"})


def test_the_rerun_command_names_the_backends_the_device_and_the_spec():
    one = shlex.split(rerun_command(SUITE, "relu[torch-grid-float32]", ["torch"]))
    assert one == ["python", "-m", "pytest", f"{SUITE}::relu[torch-grid-float32]", "--backend", "torch"]
    cross = shlex.split(rerun_command(SUITE, "relu[cross-grid-float32]", ["onnx", "torch"], "cuda",
                                      Path("my spec.yaml")))
    assert cross[4:] == ["--backend", "onnx", "--backend", "torch", "--nutshell-device", "cuda",
                         "--spec", "my spec.yaml"]


def test_the_rerun_command_is_relative_to_where_it_is_run(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    suite = tmp_path / "conformance" / "spec.nutshell"
    assert shlex.split(rerun_command(suite, "a[b]", ["torch"]))[3] == "conformance/spec.nutshell::a[b]"


def test_the_rerun_command_carries_the_backends_of_the_environment(monkeypatch):
    """A backend registered in $NUTSHELL_BACKENDS exists nowhere else: the command sets the
    variable to its entries (quoted for the shell), and leaves out the entries it does not name."""
    monkeypatch.setenv("NUTSHELL_BACKENDS", "mine=pkg.mod:Mine, other=pkg.other:Other,spaced=my pkg:Spaced")
    monkeypatch.delenv("PYTHONPATH", raising=False)
    mine = rerun_command(SUITE, "relu[mine-grid-float32]", ["mine"])
    assert mine == (f"NUTSHELL_BACKENDS=mine=pkg.mod:Mine python -m pytest '{SUITE}::relu[mine-grid-float32]' "
                    "--backend mine")
    cross = shlex.split(rerun_command(SUITE, "relu[cross-grid-float32]", ["spaced", "torch", "mine"]))
    assert cross[0] == "NUTSHELL_BACKENDS=mine=pkg.mod:Mine,spaced=my pkg:Spaced" and cross[1] == "python"
    assert shlex.split(rerun_command(SUITE, "relu[torch-grid-float32]", ["torch"]))[:3] == ["python", "-m", "pytest"]


def test_the_rerun_command_carries_the_python_path_a_backend_of_the_environment_needs(monkeypatch):
    """$PYTHONPATH goes along with a backend from $NUTSHELL_BACKENDS (its module may be found only
    there), quoted so that the shell still takes it as an assignment; not with built-in backends."""
    monkeypatch.setenv("NUTSHELL_BACKENDS", "mine=pkg.mod:Mine")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(["/my dir/src", "", "lib"]))
    mine = rerun_command(SUITE, "relu[mine-grid-float32]", ["mine"])
    assert mine.startswith(f"NUTSHELL_BACKENDS=mine=pkg.mod:Mine PYTHONPATH='/my dir/src{os.pathsep}lib' python ")
    assert shlex.split(mine)[1] == f"PYTHONPATH=/my dir/src{os.pathsep}lib" and shlex.split(mine)[2] == "python"
    assert shlex.split(rerun_command(SUITE, "relu[torch-grid-float32]", ["torch"]))[0] == "python"


def test_a_printed_rerun_command_pasted_into_a_fresh_shell_reruns_exactly_that_check(tmp_path):
    """The faulty backend (tests/faulty_backend.py, registered only through $NUTSHELL_BACKENDS)
    fails tanh; the rerun line pytest prints, run by a shell whose environment lacks the variable,
    runs that one check again, on that backend."""
    pytest.importorskip("torch")
    tests = str(Path(__file__).resolve().parent)
    env = {k: v for k, v in os.environ.items() if k != "NUTSHELL_BACKENDS"} | {
        "PYTHONPATH": os.pathsep.join([tests, os.environ.get("PYTHONPATH", "")]),
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])}
    cid = "tanh[faulty-grid-float32]"
    first = subprocess.run([sys.executable, "-m", "pytest", f"{runner.suite_file()}::{cid}", "--backend", "faulty",
                            "-p", "no:cacheprovider", "--results", str(tmp_path / "first.json")], cwd=tmp_path,
                           env=env | {"NUTSHELL_BACKENDS": "faulty=faulty_backend:FaultyBackend"},
                           capture_output=True, text=True, timeout=600)
    # pytest repeats the failure message in its short summary when $CI is set: one distinct line
    printed = sorted({line.split("rerun: ", 1)[1] for line in first.stdout.splitlines() if "rerun: " in line})
    assert first.returncode == 1 and len(printed) == 1, first.stdout + first.stderr
    again = subprocess.run(printed[0], shell=True, cwd=tmp_path, env=env, capture_output=True, text=True,
                           timeout=600)
    assert again.returncode == 1, again.stdout + again.stderr
    doc = json.loads((tmp_path / "reports" / "results.json").read_text())
    assert [(r["id"], r["backend"], r["outcome"]) for r in doc["results"]] == [(cid, "faulty", "fail")]


def test_an_unavailable_backend_s_reason_is_shown_whole_in_80_columns():
    why = ("backend 'cupy' needs a package that is not installed (cupy_backends.cuda.libs); "
           "pip install 'nutshell[cupy]'")
    table = summary_table({}, {"cupy": why})
    lines = table.splitlines()[1:]
    assert all(len(line) <= 80 for line in lines) and lines[0].startswith("cupy       unavailable:")
    assert " ".join(line.split(None, 1)[1] if i == 0 else line.strip() for i, line in enumerate(lines)) == \
        f"unavailable: {why}"
