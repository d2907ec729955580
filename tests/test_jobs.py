"""``nutshell run -j N`` (issue 18, item 1): groups side by side and split in batches, with the
same records as one worker after the other."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from nutshell.conformance import runner

SELECTION = ["-b", "cupy", "-k", "relu or sigmoid"]


def nutshell(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nutshell.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=600)


def records(path: Path) -> list[tuple[str, str]]:
    return [(r["id"], r["outcome"]) for r in json.loads(path.read_text())["results"]]


def test_three_jobs_give_the_records_of_one(tmp_path):
    """With the first run's times made long, -j 3 splits cupy into six batches on three jobs: the
    later batches start after checks are done, and must still get their own share."""
    one = nutshell(tmp_path, "run", *SELECTION, "-j", "1", "--reports", "one", "-q")
    doc = json.loads((tmp_path / "one" / "results.json").read_text())
    for r in doc["results"]:
        r["seconds"] = 100.0
    (tmp_path / "long.json").write_text(json.dumps(doc))
    assert runner.plan(["cupy"], 3, {"cupy": 100.0 * len(doc["results"])}) == [("cupy", f"{i}/6") for i in range(1, 7)]
    three = nutshell(tmp_path, "run", *SELECTION, "-j", "3", "--reports", "three", "-q", "--durations", "long.json")
    assert one.returncode == three.returncode == 0, one.stderr + three.stderr
    a, b = records(tmp_path / "one" / "results.json"), records(tmp_path / "three" / "results.json")
    assert len(b) == len(set(b)) and sorted(a) == sorted(b) and len(a) > 20
    doc = json.loads((tmp_path / "three" / "results.json").read_text())
    assert doc["complete"] and doc["backends"] == {"cupy": {"device": "cpu (numpy)"}}


def test_jobs_must_be_a_positive_whole_number(tmp_path):
    r = nutshell(tmp_path, "run", *SELECTION, "-j", "0")
    assert r.returncode == 2 and "-j takes a whole number of workers >= 1" in r.stderr
    assert not (tmp_path / "reports").exists()


def test_the_plan_gives_every_job_two_timed_batches_the_longest_group_first():
    groups = ["torch", "cupy", "onnx"]
    assert runner.plan(groups, 1, {}) == [("torch", None), ("cupy", None), ("onnx", None)]
    assert runner.plan(groups, 2, {}) == [("onnx", None), ("torch", None), ("cupy", None)]  # untimed: a worker a job
    untimed = runner.plan(["cupy", "onnx", "torch", "tf"], 2, {"cupy": 90.0})   # TYPICAL_S for the rest
    assert untimed == [("tf", None), ("cupy", None), ("onnx", None), ("torch", None)]   # the unknown one first
    assert runner.plan(["torch"], 2, {}) == [("torch", None)]    # typically 22 s: two batches would be under 15 s
    assert runner.plan(["mine"], 2, {}) == [("mine", "1/2"), ("mine", "2/2")]            # unknown: a worker a job
    sixteen = runner.plan(["cupy", "onnx", "torch", "tf", "cross"], 16, {})     # known: ≥ ~15 s a batch
    assert [g for g, _ in sixteen] == ["tf"] * 4 + ["onnx"] * 4 + ["torch"] + ["cupy"] + ["cross"]
    timed = runner.plan(groups, 2, {"torch": 100.0, "cupy": 40.0, "onnx": 160.0})   # batches of 75 s
    assert timed == [("onnx", "1/2"), ("onnx", "2/2"), ("torch", None), ("cupy", None)]
    assert runner.plan(["torch"], 8, {"torch": 40.0}) == [("torch", f"{i}/3") for i in (1, 2, 3)]
    assert runner.plan(["torch"], 2, {"torch": 6.0}) == [("torch", None)]    # a short run: one worker


def test_an_earlier_run_balances_the_batches_by_its_times(tmp_path):
    """The second run of a folder reads the first's times: per group (the longest starts first) and
    per check (written for the workers, whose batches they balance); its records are the first's."""
    first = nutshell(tmp_path, "run", *SELECTION, "-j", "1", "--reports", "out", "-q")
    doc = json.loads((tmp_path / "out" / "results.json").read_text())
    r = runner.Runner(runner.Options(["cupy"], k="relu or sigmoid", reports=tmp_path / "out", jobs=2))
    r._earlier_timings()
    seconds = {x["id"]: x["seconds"] for x in doc["results"]}
    assert json.loads(r.timings.read_text()) == seconds
    assert r.costs["cupy"] == pytest.approx(sum(s for x in doc["results"] if x["backend"] == "cupy"
                                                for s in [x["seconds"]]))
    again = nutshell(tmp_path, "run", *SELECTION, "-j", "2", "--reports", "out", "-q")
    assert first.returncode == again.returncode == 0, first.stderr + again.stderr
    assert sorted(records(tmp_path / "out" / "results.json")) == sorted((x["id"], x["outcome"]) for x in doc["results"])


def test_without_an_earlier_run_no_times_are_written(tmp_path):
    r = runner.Runner(runner.Options(["cupy"], reports=tmp_path / "empty", jobs=2))
    r._earlier_timings()
    assert r.timings is None and r.costs == {}
