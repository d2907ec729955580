"""pytest-xdist (issue 18, item 3): ``pytest conformance --backend torch -n 2`` writes one results
file, each check once, with the ids, outcomes and header of the same run without xdist."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("xdist")

from nutshell import conformance

SUITE = Path(conformance.__file__).parent


def run(tmp_path: Path, name: str, *extra: str) -> dict:
    out = tmp_path / f"{name}.json"
    r = subprocess.run([sys.executable, "-m", "pytest", str(SUITE), "--backend", "torch", "-k", "relu", "-q",
                        "-p", "no:cacheprovider", "--results", str(out), *extra], cwd=tmp_path,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return json.loads(out.read_text())


def test_two_workers_write_one_results_file_like_one_process(tmp_path):
    plain, parallel = run(tmp_path, "plain", "-p", "no:xdist"), run(tmp_path, "xdist", "-n", "2")
    ids = [r["id"] for r in parallel["results"]]
    assert len(ids) == len(set(ids)) and len(ids) >= 30
    assert {(r["id"], r["outcome"]) for r in parallel["results"]} == \
        {(r["id"], r["outcome"]) for r in plain["results"]}
    assert parallel["complete"] and parallel["backends"] == plain["backends"] == {"torch": {"device": "cpu"}}
    assert parallel["summary"] == plain["summary"]
