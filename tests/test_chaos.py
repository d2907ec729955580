"""Chaos: ``nutshell run`` SIGKILLed at random (seeded) moments, its workers left to end by
themselves, then resumed until complete, ends with exactly the (id, outcome) pairs of a clean run
of the same selection (the plain pytest harness, in one process)."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from processes import children, gone, staged

from nutshell.conformance import runner

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="follows processes through /proc")
SEED = 1717
KILLS = 3
BACKEND, SELECTION = "cupy", "relu or sigmoid"


def clean_run(tmp: Path) -> subprocess.Popen:
    """The clean run: the plain pytest harness, every check of the selection in one process."""
    return subprocess.Popen([sys.executable, "-m", "pytest", str(runner.suite_file()), "--backend", BACKEND, "-k",
                             SELECTION, "--results", str(tmp / "clean.json"), "-q", "-p", "no:cacheprovider"], cwd=tmp,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def outcomes(proc: subprocess.Popen, tmp: Path) -> set[tuple[str, str]]:
    """The (id, outcome) pairs of the clean run, once it has ended."""
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out[-3000:]
    return {(rec["id"], rec["outcome"]) for rec in json.loads((tmp / "clean.json").read_text())["results"]}


def kill_at_random(tmp: Path, rng: random.Random, resume: bool) -> None:
    """A run killed with SIGKILL after a random delay once it has recorded a random number of new
    checks (or when it ends first); its workers must end by themselves."""
    argv = [sys.executable, "-m", "nutshell.cli", "run", "-b", BACKEND, "-k", SELECTION, "-q"]
    at = staged(tmp / "reports") + rng.randint(0, 40)
    proc = subprocess.Popen(argv + ["--resume"] * resume, cwd=tmp, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    delay = rng.uniform(0.0, 0.05) if rng.random() < 0.7 else rng.uniform(0.5, 3.0)   # in a check, or later
    while proc.poll() is None and staged(tmp / "reports") < at:
        time.sleep(0.01)
    time.sleep(delay)
    workers = children(proc.pid)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert all(gone(w) for w in workers), workers


def test_killed_and_resumed_runs_end_with_the_records_of_a_clean_run(tmp_path):
    rng = random.Random(SEED)
    (tmp_path / "chaos").mkdir()
    clean = clean_run(tmp_path)     # meanwhile
    for kill in range(KILLS):
        kill_at_random(tmp_path / "chaos", rng, resume=kill > 0)
    r = subprocess.run([sys.executable, "-m", "nutshell.cli", "run", "-b", BACKEND, "-k", SELECTION, "--resume", "-q"],
                       cwd=tmp_path / "chaos", capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    doc = json.loads((tmp_path / "chaos" / "reports" / "results.json").read_text())
    pairs = [(rec["id"], rec["outcome"]) for rec in doc["results"]]
    assert doc["complete"] and len(pairs) == len(set(pairs))
    assert set(pairs) == outcomes(clean, tmp_path)
    assert not (tmp_path / "chaos" / "reports" / "parts").exists()
