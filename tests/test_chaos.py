"""Chaos: ``nutshell run`` and its workers SIGKILLed at random (seeded) moments, then resumed until
complete, ends with exactly the (id, outcome) pairs of a clean run of the same selection (the plain
pytest harness, in one process). A killed runner's workers must end by themselves; a worker killed
inside a check is recorded as a crash by its runner, and ``--resume`` runs that check again."""

from __future__ import annotations

import json
import os
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
SEED = 1718
KILLS = 3       # SIGKILLs in all, each of the runner or of one of its workers (seeded)
BACKEND, SELECTION = "cupy", "relu or sigmoid"
ARGV = [sys.executable, "-m", "nutshell.cli", "run", "-b", BACKEND, "-k", SELECTION, "-q"]


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


def start(tmp: Path, resume: bool) -> subprocess.Popen:
    return subprocess.Popen(ARGV + ["--resume"] * resume, cwd=tmp, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def crashes(tmp: Path) -> int:
    """Crash records in what ``--resume`` will continue from (a killed run's parts/, else the folder)."""
    reports = tmp / "reports"
    lines = reports / "parts" / "results.jsonl"
    lines = lines if lines.is_file() else reports / "results.jsonl"
    if not lines.is_file():
        return 0
    return sum(json.loads(line).get("check") == "crash" for line in lines.read_text().splitlines() if line.strip())


def in_a_check(tmp: Path) -> bool:
    """Whether the newest worker's last event (parts/<run>/<group>-<n>.jsonl) starts a check."""
    events = sorted((tmp / "reports" / "parts").glob("*/*.jsonl"), key=lambda p: p.stat().st_mtime)
    try:
        text = events[-1].read_text() if events else ""
    except OSError:
        return False
    lines = text[:text.rfind("\n") + 1].splitlines()
    return bool(lines) and json.loads(lines[-1]).get("event") == "start"


def kill_a_worker_in_a_check(run: subprocess.Popen, tmp: Path, rng: random.Random) -> bool:
    """SIGKILL one of the runner's workers once it has started a check, until the runner records
    the crash (a worker killed just after its check, outside any, is started again: the next one is
    killed); False when the run ended first."""
    while run.poll() is None:
        workers, before = children(run.pid), crashes(tmp)
        if not (workers and in_a_check(tmp)):
            time.sleep(0.001)
            continue
        os.kill(rng.choice(sorted(workers)), signal.SIGKILL)
        deadline = time.monotonic() + 5
        while crashes(tmp) == before and run.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        if crashes(tmp) > before:
            return True
    return False


def kill_at_random(run: subprocess.Popen, tmp: Path, rng: random.Random) -> str:
    """SIGKILL the runner, or one of its workers (its children) in a check, after a random delay once
    the run has recorded a random number of new checks (they take milliseconds, a worker's start-up
    seconds); returns which, or "none" when the run ended first. A killed runner's workers must end
    by themselves; a killed worker's runner records the check it died in and goes on."""
    target = rng.choice(["runner", "worker"])
    at = staged(tmp / "reports") + rng.randint(1, 30)
    delay = rng.uniform(0.0, 0.02) if rng.random() < 0.7 else rng.uniform(0.02, 0.3)   # in a check, or later
    while run.poll() is None and staged(tmp / "reports") < at:
        time.sleep(0.005)
    time.sleep(delay)
    if run.poll() is not None:
        return "none"
    if target == "worker":
        return target if kill_a_worker_in_a_check(run, tmp, rng) else "none"
    workers = children(run.pid)
    run.send_signal(signal.SIGKILL)
    run.wait()
    assert all(gone(w) for w in workers), workers
    return target


def test_killed_and_resumed_runs_end_with_the_records_of_a_clean_run(tmp_path):
    rng = random.Random(SEED)
    chaos = tmp_path / "chaos"
    chaos.mkdir()
    clean = clean_run(tmp_path)     # meanwhile
    run, killed, resumed_crashes = start(chaos, resume=False), [], 0
    for _ in range(KILLS):
        if run.poll() is not None:                  # killed, or ended by itself (its crashes recorded)
            resumed_crashes += crashes(chaos)
            run = start(chaos, resume=True)
        killed.append(kill_at_random(run, chaos, rng))
    run.wait(timeout=600)
    resumed_crashes += crashes(chaos)
    r = subprocess.run([*ARGV, "--resume"], cwd=chaos, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    doc = json.loads((chaos / "reports" / "results.json").read_text())
    pairs = [(rec["id"], rec["outcome"]) for rec in doc["results"]]
    assert doc["complete"] and len(pairs) == len(set(pairs))
    assert set(pairs) == outcomes(clean, tmp_path)
    assert not (chaos / "reports" / "parts").exists()
    assert {"runner", "worker"} <= set(killed) and resumed_crashes, (killed, resumed_crashes)
