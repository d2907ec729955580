"""``nutshell compare``: planted regressions in real results and bench files are found."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest


def nutshell(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nutshell.cli", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=600)


@pytest.fixture(scope="module")
def real(tmp_path_factory) -> dict:
    """A real results.json (torch, relu) and a real bench.json (torch, relu and conv2d, small)."""
    pytest.importorskip("torch")
    d = tmp_path_factory.mktemp("real")
    r = nutshell("run", "-b", "torch", "-k", "relu", cwd=d)
    assert (d / "reports" / "results.json").is_file(), r.stdout + r.stderr
    r = nutshell("bench", "--quick", "-b", "torch", "--concept", "relu", "--concept", "conv2d", "--size", "small",
                 cwd=d)
    assert r.returncode == 0, r.stdout + r.stderr
    return {"results": json.loads((d / "reports" / "results.json").read_text()),
            "bench": json.loads((d / "reports" / "bench.json").read_text())}


def write(path: Path, doc: dict) -> str:
    path.write_text(json.dumps(doc))
    return str(path)


def test_planted_regressions_are_listed(real, tmp_path):
    new_results = copy.deepcopy(real["results"])
    flipped = next(r for r in new_results["results"] if r["outcome"] == "pass" and r["check"] == "forward")
    flipped.update(outcome="fail", message="planted: 3/4 elements outside the bound")
    grown = next(r for r in new_results["results"] if r["outcome"] == "pass" and r["check"] == "vjp"
                 and r["usage"] > 0.01)
    grown["usage"] = grown["usage"] * 3 + 0.05
    r = nutshell("compare", write(tmp_path / "old.json", real["results"]), write(tmp_path / "new.json", new_results))
    assert r.returncode == 1, r.stdout + r.stderr
    assert f"stopped passing  {flipped['id']}: pass -> fail: planted" in r.stdout
    assert f"usage grew       {grown['id']}" in r.stdout
    assert "2 regression(s)" in r.stdout

    old_bench, new_bench = copy.deepcopy(real["bench"]), copy.deepcopy(real["bench"])
    steady = {"median_s": 1e-3, "q25_s": 0.99e-3, "q75_s": 1.01e-3, "samples": 40, "unsteady": False}
    for doc, scale in ((old_bench, 1.0), (new_bench, 1.2)):     # 20% slower, the quartiles well apart
        planted = next(b for b in doc["results"] if b["concept"] == "conv2d" and b["direction"] == "forward")
        planted["time"].update({k: v * scale if k.endswith("_s") else v for k, v in steady.items()})
    r = nutshell("compare", write(tmp_path / "old_b.json", old_bench), write(tmp_path / "new_b.json", new_bench))
    assert r.returncode == 1, r.stdout + r.stderr
    assert "slower           torch conv2d small forward" in r.stdout and "(+20%;" in r.stdout
    assert "1 regression(s)" in r.stdout


def test_no_regressions_exit_zero(real, tmp_path):
    r = nutshell("compare", write(tmp_path / "a.json", real["results"]), write(tmp_path / "b.json", real["results"]))
    assert r.returncode == 0 and "no regressions" in r.stdout, r.stdout + r.stderr
    within = copy.deepcopy(real["bench"])
    for b in within["results"]:
        if b["outcome"] == "ok":
            b["time"]["median_s"] *= 1.05            # 5% slower: noise, not a regression
    r = nutshell("compare", write(tmp_path / "c.json", real["bench"]), write(tmp_path / "d.json", within))
    assert r.returncode == 0 and "no regressions" in r.stdout, r.stdout + r.stderr


def test_a_fixed_check_is_not_a_regression(real, tmp_path):
    old = copy.deepcopy(real["results"])
    next(r for r in old["results"] if r["outcome"] == "pass").update(outcome="fail", message="was broken")
    r = nutshell("compare", write(tmp_path / "a.json", old), write(tmp_path / "b.json", real["results"]))
    assert r.returncode == 0 and "1 now pass that did not" in r.stdout, r.stdout


def test_different_kinds_or_broken_files_are_refused(real, tmp_path):
    r = nutshell("compare", write(tmp_path / "a.json", real["results"]), write(tmp_path / "b.json", real["bench"]))
    assert r.returncode == 2 and "not the same kind" in r.stderr
    (tmp_path / "broken.json").write_text("[1, 2")
    r = nutshell("compare", str(tmp_path / "broken.json"), str(tmp_path / "a.json"))
    assert r.returncode == 2 and "not a JSON file" in r.stderr
