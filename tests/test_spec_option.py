"""``--spec FILE`` reaches everything that reads the spec: the items collected, the backends the
checks run on, the runner's workers and the report. Each test uses a modified copy of
spec/concepts.yaml whose change shows only where that copy is read."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from nutshell import spec as spec_mod
from nutshell.conformance import report, runner
from nutshell.conformance.results import CheckResult, Outcome, ResultsWriter, Section
from nutshell.errors import SpecError

SUITE = runner.suite_file()


def spec_copy(tmp_path: Path, change: Callable[[dict], None]) -> Path:
    """spec/concepts.yaml with ``change`` applied, written to ``tmp_path`` (vector files are still
    found beside the repository's spec)."""
    doc = yaml.safe_load(spec_mod.SPEC_FILE.read_text())
    change(doc)
    path = tmp_path / "concepts.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True))
    return path


def without_convolve2d(doc: dict) -> None:
    doc["concepts"] = [c for c in doc["concepts"] if c["id"] != "convolve2d"]


def tighter_float32(doc: dict) -> None:
    """A float32 unit roundoff 10¹² times smaller: no real float32 result of a sum stays in its bound."""
    doc["tolerance"]["unit_roundoff"]["float32"] *= 1e-12


def pytest_run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pytest", *args, "-p", "no:cacheprovider", "-q"], cwd=cwd,
                          capture_output=True, text=True, timeout=600)


def test_the_items_come_from_the_spec_file(tmp_path):
    pytest.importorskip("torch")
    r = pytest_run(str(SUITE), "--spec", str(spec_copy(tmp_path, without_convolve2d)), "--backend", "torch",
                   "--collect-only", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    ids = [line.rsplit("::", 1)[1] for line in r.stdout.splitlines() if "::" in line]
    assert "conv2d[torch-figure3-float32]" in ids
    assert not [i for i in ids if i.startswith("convolve2d[")]


def test_the_backends_are_built_on_the_spec_file(tmp_path):
    """The catalogue's ``huge`` check compares with the tolerance of the backend's own spec: with
    the tighter copy it can only fail if the backend was built on the copy."""
    pytest.importorskip("torch")
    copy = spec_copy(tmp_path, tighter_float32)
    r = pytest_run(f"{SUITE}::conv2d[torch-huge]", "--spec", str(copy), "--backend", "torch",
                   "--results", str(tmp_path / "results.json"), cwd=tmp_path)
    assert r.returncode == 1, r.stdout + r.stderr
    rec, = json.loads((tmp_path / "results.json").read_text())["results"]
    assert rec["outcome"] == "fail" and "outside the bound" in rec["message"], rec
    assert shlex.split(rec["rerun"])[-2:] == ["--spec", str(copy)]


def test_the_runner_hands_the_spec_file_to_its_workers(tmp_path):
    pytest.importorskip("torch")
    copy = spec_copy(tmp_path, tighter_float32)
    opts = runner.Options(backends=["torch"], k="conv2d and huge", reports=tmp_path / "reports", quiet=True,
                          spec=copy)
    r = runner.Runner(opts)
    assert r.run() == 1
    rec, = (x for x in r.writer.records if x.id == "conv2d[torch-huge]")
    assert rec.outcome is Outcome.FAIL and shlex.split(rec.rerun)[-2:] == ["--spec", str(copy)]


def results_of(tmp_path: Path, version: str) -> Path:
    """reports/results.json of a run of relu on torch made with spec version ``version``."""
    w = ResultsWriter(tmp_path / "reports" / "results.json", {"spec_version": version, "backends": {},
                                                              "unavailable": {}})
    w.add(CheckResult(id="relu[torch-grid-float32]", backend="torch", concept="relu", check="forward",
                      section=Section.OPS, outcome=Outcome.PASS, vector="grid", dtype="float32", usage=0.0))
    w.flush()
    return w.path


def new_version_without_convolve2d(doc: dict) -> None:
    without_convolve2d(doc)
    doc["spec_version"] = "9.9.9"


def test_the_report_reads_the_spec_file(tmp_path):
    copy = spec_copy(tmp_path, new_version_without_convolve2d)
    results_of(tmp_path, "9.9.9")
    text = report.write_from_reports_dir(tmp_path / "reports", copy).read_text()
    assert "spec 9.9.9" in text and ">relu</a>" in text and "convolve2d" not in text
    with pytest.raises(SpecError, match=r"made with spec version 9\.9\.9"):
        report.write_from_reports_dir(tmp_path / "reports")


def test_the_report_command_takes_the_spec_file(tmp_path):
    copy = spec_copy(tmp_path, new_version_without_convolve2d)
    results = results_of(tmp_path, "9.9.9")
    out = tmp_path / "index.html"
    r = subprocess.run([sys.executable, "-m", "nutshell.cli", "report", str(results), "--spec", str(copy),
                        "-o", str(out)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert "spec 9.9.9" in out.read_text() and "convolve2d" not in out.read_text()
