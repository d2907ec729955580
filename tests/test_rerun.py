"""The "rerun exactly this check" command of a check that crashed its worker: the runner's
record names the backends the group ran with, and the command selects that check and no other."""

from __future__ import annotations

import shlex
import subprocess
import sys

import pytest

from nutshell import backends
from nutshell.conformance import runner
from nutshell.conformance.results import EventWriter, Outcome, Section

pytest.importorskip("torch")


def crash_in(group: str, check_id: str, section: Section, tmp_path) -> runner.Runner:
    """A runner that watched a real worker process of ``group`` die (SIGABRT) while ``check_id``
    ran; the worker's events are written by the plugin's own EventWriter."""
    r = runner.Runner(runner.Options(backends=["torch"], reports=tmp_path / "reports", quiet=True))
    w = runner.Worker(group, tmp_path / f"{group}.jsonl")
    events = EventWriter(w.events, {"backends": {"torch": {"device": "cpu"}}, "unavailable": {}})
    events.start(check_id, section)
    events.flush()
    w.proc = subprocess.Popen([sys.executable, "-c", "import os; os.abort()"])
    assert r._watch(w) == check_id
    return r


def collected(argv: list[str]) -> list[str]:
    """The node ids that ``pytest <argv>`` selects (pytest --collect-only)."""
    out = subprocess.run([sys.executable, "-m", "pytest", *argv, "--collect-only", "-q", "-p", "no:cacheprovider"],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    return [line for line in out.stdout.splitlines() if "::" in line]


def test_a_crash_in_the_cross_group_reruns_on_the_groups_backends(tmp_path):
    cid = "relu[cross-grid-float32]"
    rec = crash_in("cross", cid, Section.CROSS, tmp_path).writer.records[-1]
    assert rec.id == cid and rec.outcome is Outcome.ERROR and "SIGABRT" in rec.message
    assert rec.section is Section.CROSS
    argv = shlex.split(rec.rerun)
    named = [argv[i + 1] for i, a in enumerate(argv) if a == "--backend"]
    assert named == ["torch"] and set(named) <= set(backends.names())
    assert argv[:3] == ["python", "-m", "pytest"]
    assert [line.rsplit("::", 1)[1] for line in collected(argv[3:])] == [cid]


def test_a_crash_in_a_backend_group_reruns_on_that_backend(tmp_path):
    cid = "relu[torch-error-integer_dtype]"
    rec = crash_in("torch", cid, Section.OPS, tmp_path).writer.records[-1]
    assert rec.backend == "torch" and rec.section is Section.OPS and rec.check == "crash"
    argv = shlex.split(rec.rerun)
    assert argv[:3] == ["python", "-m", "pytest"] and argv[4:] == ["--backend", "torch"]
    assert [line.rsplit("::", 1)[1] for line in collected(argv[3:])] == [cid]
