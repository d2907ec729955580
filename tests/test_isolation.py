"""A crashing, hanging or wrong backend loses nothing: `nutshell run` records each and goes on."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
HERE = Path(__file__).resolve().parent


def environment() -> dict[str, str]:
    """The faulty backend registered beside the real ones."""
    return dict(os.environ, NUTSHELL_BACKENDS="faulty=faulty_backend:FaultyBackend",
                PYTHONPATH=os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]))


def run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nutshell.cli", "run", *args], cwd=tmp_path, env=environment(),
                          capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def outcome(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("faulty")
    selection = "(relu or sigmoid or tanh or softmax) and not model_ and not claim"
    r = run(tmp, "-b", "faulty", "-b", "torch", "-k", selection, "--timeout", "5")
    doc = json.loads((tmp / "reports" / "results.json").read_text())
    return r, doc, tmp


def by_id(doc) -> dict:
    return {r["id"]: r for r in doc["results"]}


def test_the_crash_is_recorded_and_the_run_goes_on(outcome):
    r, doc, _ = outcome
    recs = by_id(doc)
    crash = recs["relu[faulty-kink-float32]"]
    assert crash["outcome"] == "error" and "SIGSEGV" in crash["message"], crash
    env, path, *argv = shlex.split(crash["rerun"])
    assert env == "NUTSHELL_BACKENDS=faulty=faulty_backend:FaultyBackend", crash["rerun"]
    assert path.startswith(f"PYTHONPATH={HERE}") and argv[:3] == ["python", "-m", "pytest"], crash["rerun"]
    rest = argv[4:]
    assert crash["section"] == "ops" and rest == ["--backend", "faulty"]
    assert recs["relu[faulty-grid-float32]"]["outcome"] == "pass"
    assert r.returncode == 1 and doc["complete"]


def test_the_hang_is_a_timeout(outcome):
    _, doc, _ = outcome
    hang = by_id(doc)["sigmoid[faulty-saturation-float64]"]
    assert hang["outcome"] == "error" and hang["status"] == "timeout", hang
    assert by_id(doc)["sigmoid[faulty-grid-float64]"]["outcome"] == "pass"


def test_nan_is_a_failure_with_numbers(outcome):
    _, doc, _ = outcome
    rec = by_id(doc)["tanh[faulty-grid-float32]"]
    assert rec["outcome"] == "fail" and "outside the bound" in rec["message"] and "rerun" in rec


def test_a_cross_failure_reruns_on_the_backends_of_the_run(outcome):
    """The cross group ran faulty and torch: its rerun command names both, and selects only that check."""
    _, doc, tmp = outcome
    rec = next(r for r in doc["results"] if r["id"].startswith("tanh[cross-") and r["outcome"] == "fail")
    env, path, *argv = shlex.split(rec["rerun"])          # the environment the run needed, then pytest
    assert env.startswith("NUTSHELL_BACKENDS=faulty=") and path.startswith("PYTHONPATH="), rec["rerun"]
    assert argv[:3] == ["python", "-m", "pytest"], rec["rerun"]
    assert [argv[i + 1] for i, a in enumerate(argv) if a == "--backend"] == ["faulty", "torch"]
    out = subprocess.run([sys.executable, *argv[1:], "--collect-only", "-q", "-p", "no:cacheprovider"], cwd=tmp,
                         env=environment(), capture_output=True, text=True, timeout=600)
    assert [line.rsplit("::", 1)[1] for line in out.stdout.splitlines() if "::" in line] == [rec["id"]], out.stdout


def test_nothing_else_is_lost(outcome):
    _, doc, _ = outcome
    recs = by_id(doc)
    torch_ids = {i for i in recs if "[torch-" in i}
    faulty_ids = {i.replace("[torch-", "[faulty-") for i in torch_ids}
    assert faulty_ids <= set(recs), sorted(faulty_ids - set(recs))[:5]
    assert all(recs[i]["outcome"] == "pass" for i in torch_ids)
    assert all(recs[i]["outcome"] == "pass" for i in recs if i.startswith("softmax[faulty-"))
