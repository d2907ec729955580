"""``nutshell run -j N`` (issue 18, item 1): groups side by side and split in batches, with the
same records as one worker after the other."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SELECTION = ["-b", "cupy", "-k", "relu or sigmoid"]


def nutshell(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nutshell.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=600)


def records(path: Path) -> list[tuple[str, str]]:
    return [(r["id"], r["outcome"]) for r in json.loads(path.read_text())["results"]]


def test_three_jobs_give_the_records_of_one(tmp_path):
    one = nutshell(tmp_path, "run", *SELECTION, "-j", "1", "--reports", "one", "-q")
    three = nutshell(tmp_path, "run", *SELECTION, "-j", "3", "--reports", "three", "-q")
    assert one.returncode == three.returncode == 0, one.stderr + three.stderr
    a, b = records(tmp_path / "one" / "results.json"), records(tmp_path / "three" / "results.json")
    assert len(b) == len(set(b)) and sorted(a) == sorted(b) and len(a) > 20
    doc = json.loads((tmp_path / "three" / "results.json").read_text())
    assert doc["complete"] and doc["backends"] == {"cupy": {"device": "cpu (numpy)"}}


def test_jobs_must_be_a_positive_whole_number(tmp_path):
    r = nutshell(tmp_path, "run", *SELECTION, "-j", "0")
    assert r.returncode == 2 and "-j takes a whole number of workers >= 1" in r.stderr
    assert not (tmp_path / "reports").exists()
