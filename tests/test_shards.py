"""Shards (issue 18, item 2): ``nutshell run --shard I/N`` runs a deterministic share of the
checks; ``nutshell report`` merges the N results files into the results file of the whole run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from nutshell.conformance import shards
from nutshell.conformance.results import CheckResult, Outcome, Section
from nutshell.errors import SpecError

SELECTION = ["-b", "cupy", "-k", "relu or sigmoid"]


def nutshell(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nutshell.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=600)


def outcomes(path: Path) -> set[tuple[str, str]]:
    return {(r["id"], r["outcome"]) for r in json.loads(path.read_text())["results"]}


def test_three_shards_merged_are_the_single_run(tmp_path):
    full = nutshell(tmp_path, "run", *SELECTION, "--reports", "full", "-q")
    assert full.returncode == 0, full.stdout[-2000:] + full.stderr[-2000:]
    parts = []
    for i in (1, 2, 3):
        r = nutshell(tmp_path, "run", *SELECTION, "--shard", f"{i}/3", "--durations", "full/results.json",
                     "--reports", f"s{i}", "-q")
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
        parts.append(outcomes(tmp_path / f"s{i}" / "results.json"))
    assert all(parts) and not set.intersection(*parts)                          # each check in one shard
    r = nutshell(tmp_path, "report", "s1/results.json", "s2/results.json", "s3/results.json",
                 "-o", "merged/index.html")
    assert r.returncode == 0, r.stderr
    merged = json.loads((tmp_path / "merged" / "results.json").read_text())
    single = json.loads((tmp_path / "full" / "results.json").read_text())
    assert outcomes(tmp_path / "merged" / "results.json") == outcomes(tmp_path / "full" / "results.json")
    assert len(merged["results"]) == len(single["results"]) and merged["summary"] == single["summary"]
    assert merged["backends"] == single["backends"] and merged["complete"] and merged["selection"]["shard"] is None
    assert (tmp_path / "merged" / "index.html").is_file()
    r = nutshell(tmp_path, "report", "s1/results.json", "s3/results.json", "-o", "x/index.html")
    assert r.returncode == 2 and "missing 2/3" in r.stderr and not (tmp_path / "x").exists()
    r = nutshell(tmp_path, "report", "s1/results.json", "s2/results.json", "s3/results.json",
                 "--merged", "s1/results.json")
    assert r.returncode == 2 and "would replace the shard" in r.stderr


def test_the_assignment_is_deterministic_and_balanced():
    ids = [f"c{i}" for i in range(100)]
    a = shards.assign(ids, 3)
    assert a == shards.assign(list(reversed(ids)), 3)                           # the order given does not matter
    assert sorted(list(a.values()).count(k) for k in (1, 2, 3)) == [33, 33, 34]
    slow = {i: (50.0 if i == "c7" else 1.0) for i in ids}
    b = shards.assign(ids, 3, slow)
    load = {k: sum(slow[i] for i in ids if b[i] == k) for k in (1, 2, 3)}
    assert max(load.values()) - min(load.values()) <= 50.0 and list(b.values()).count(b["c7"]) < 20


@pytest.mark.parametrize("text", ["0/3", "4/3", "1", "a/b", "", "1/0"])
def test_bad_shards_are_refused(text):
    with pytest.raises(SpecError, match="--shard must be I/N"):
        shards.parse(text)


def _shard_doc(shard: str, k: str | None = "relu") -> dict:
    rec = CheckResult(id=f"relu[torch-{shard}]", backend="torch", concept="relu", check="forward",
                      section=Section.OPS, outcome=Outcome.PASS)
    return {"selection": {"backends": None, "k": k, "device": None, "spec_sha256": "x", "shard": shard},
            "backends": {"torch": {"device": "cpu"}}, "unavailable": {}, "results": [rec], "complete": True}


def test_shards_of_another_selection_or_twice_are_refused():
    with pytest.raises(SpecError, match="another selection"):
        shards.combine([_shard_doc("1/2"), _shard_doc("2/2", k="tanh")], ["a", "b"])
    with pytest.raises(SpecError, match="twice 1/2"):
        shards.combine([_shard_doc("1/2"), _shard_doc("1/2")], ["a", "b"])
    doc = shards.combine([_shard_doc("2/2"), _shard_doc("1/2")], ["a", "b"])
    assert [r.id for r in doc["results"]] == ["relu[torch-1/2]", "relu[torch-2/2]"]
    assert doc["summary"]["torch"]["pass"] == 2
