"""``nutshell run`` and its workers under signals and deaths: Ctrl-C and SIGTERM stop cleanly with
valid files, one line and 130/143 (Ctrl-C while ``nutshell`` starts too); a worker ends with its
runner; a worker that dies outside any check is started again, and no crash record survives
``--resume``: the check (or the worker's group) runs again."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from xml.etree import ElementTree

import pytest
from processes import children, gone, staged

from nutshell.conformance import runner
from nutshell.conformance.results import EventWriter, Section

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="follows processes through /proc")
HERE = Path(__file__).resolve().parent
SELECTION = ["-b", "cupy", "-k", "relu or sigmoid"]
NUTSHELL = [sys.executable, "-m", "nutshell.cli"]
INTERRUPTED = re.compile(r"nutshell: interrupted; (\d+) checks recorded; continue with: (nutshell run --resume .*)")


def running_with_records(tmp: Path, at_least: int) -> subprocess.Popen:
    """``nutshell run`` started in ``tmp``, once it has recorded ``at_least`` checks."""
    proc = subprocess.Popen([*NUTSHELL, "run", *SELECTION], cwd=tmp, text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while staged(tmp / "reports") < at_least:
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.02)
    return proc


def stopped(tmp: Path, sig: signal.Signals) -> str:
    """Stop a run in ``tmp`` with ``sig`` once it has recorded 5 checks; check that it stopped
    cleanly, and return the command it printed to continue it."""
    proc = running_with_records(tmp, 5)
    workers = children(proc.pid)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + sig and "Traceback" not in err, err[-3000:]
    line, = [x for x in err.splitlines() if x.startswith("nutshell:")]
    recorded = int(INTERRUPTED.fullmatch(line).group(1))
    assert workers and all(gone(w) for w in workers)
    reports = tmp / "reports"
    doc = json.loads((reports / "results.json").read_text())
    lines = [json.loads(x) for x in (reports / "results.jsonl").read_text().splitlines()]
    cases = ElementTree.parse(reports / "junit.xml").getroot().iter("testcase")
    assert recorded >= 5 and len(doc["results"]) == len(lines) == len(list(cases)) == recorded
    assert not doc["complete"] and {r["outcome"] for r in doc["results"]} == {"pass"}
    return INTERRUPTED.fullmatch(line).group(2)


def test_sigterm_stops_the_run_cleanly_with_143(tmp_path):
    assert stopped(tmp_path, signal.SIGTERM).startswith("nutshell run --resume -b cupy -k 'relu or sigmoid'")


def test_ctrl_c_stops_the_run_cleanly_with_130_and_the_printed_command_continues_it(tmp_path):
    argv = shlex.split(stopped(tmp_path, signal.SIGINT))
    before = {json.loads(x)["id"] for x in (tmp_path / "reports" / "results.jsonl").read_text().splitlines()}
    r = subprocess.run([*NUTSHELL, *argv[1:]], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    doc = json.loads((tmp_path / "reports" / "results.json").read_text())
    ids = [x["id"] for x in doc["results"]]
    assert doc["complete"] and len(ids) == len(set(ids)) and before < set(ids)


def test_an_orphaned_worker_ends_by_itself(tmp_path):
    """The thread that watches the parent, alone (without the kernel's parent-death signal): the
    middle process is SIGKILLed and its child, the worker stand-in, ends."""
    worker = ("import sys, time\nfrom nutshell.conformance.plugin import poll_parent\nimport threading\n"
              "threading.Thread(target=poll_parent, args=(int(sys.argv[1]), 0.05), daemon=True).start()\n"
              "print('watching', flush=True)\ntime.sleep(600)")
    middle = ("import os, subprocess, sys, time\n"
              f"p = subprocess.Popen([sys.executable, '-c', {worker!r}, str(os.getpid())], stdout=subprocess.PIPE)\n"
              "assert p.stdout.readline() == b'watching\\n'\nprint(p.pid, flush=True)\ntime.sleep(600)")
    proc = subprocess.Popen([sys.executable, "-c", middle], stdout=subprocess.PIPE, text=True)
    child = int(proc.stdout.readline())
    assert not gone(child, within_s=0.5)
    proc.kill()
    proc.wait()
    assert gone(child)


def test_events_of_another_worker_are_ignored(tmp_path):
    """An earlier worker (or one of a killed run) that still writes is not taken for the current one."""
    r = runner.Runner(runner.Options(backends=["cupy"], reports=tmp_path / "reports", quiet=True))
    w = runner.Worker("cupy", tmp_path / "events.jsonl", token="now")
    header = {"backends": {"cupy": {"device": "cpu"}}, "unavailable": {}}
    old = EventWriter(w.events, header, "before")
    old.start("relu[cupy-grid-float32]", Section.OPS)
    new = EventWriter(w.events, header, "now")
    new.start("relu[cupy-grid-float64]", Section.OPS)
    old.flush()
    r._consume(w)
    assert list(w.started) == ["relu[cupy-grid-float64]"] and not w.done
    new.flush()
    r._consume(w)
    assert w.done and w.header["backends"] == header["backends"]


def dying(counter: Path, loads: str) -> dict[str, str]:
    """The environment of a run with the ``dying`` backend, which dies at the loads listed, counted in ``counter``."""
    return dict(os.environ, NUTSHELL_BACKENDS="dying=planted_backends:DyingBackend", NUTSHELL_DYING_LOADS=loads,
                NUTSHELL_DYING_COUNT=str(counter), PYTHONPATH=os.pathsep.join([str(HERE), os.environ.get(
                    "PYTHONPATH", "")]))


def collected(tmp: Path, selection: str) -> set[str]:
    """The ids that pytest collects for ``-b dying -k selection``, without the runner."""
    out = subprocess.run([sys.executable, "-m", "pytest", str(runner.suite_file()), "--backend", "dying", "-k",
                          selection, "--collect-only", "-q", "-p", "no:cacheprovider"], cwd=tmp,
                         env=dying(tmp / "collected", ""), capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return {line.rsplit("::", 1)[1] for line in out.stdout.splitlines() if "::" in line}


def run_dying(tmp: Path, loads: str, *args: str) -> subprocess.CompletedProcess:
    """``nutshell run -b dying ARGS`` in ``tmp``, the backend dying at the loads listed (one job:
    the loads are counted in the order one worker after the other makes them)."""
    return subprocess.run([*NUTSHELL, "run", "-b", "dying", "-j", "1", *args], cwd=tmp, env=dying(tmp / "loads", loads),
                          capture_output=True, text=True, timeout=600)


def test_a_worker_that_dies_outside_any_check_is_started_again(tmp_path):
    """The worker crashes in relu's first check, its next start dies while loading the backend
    (outside any check), and the one after goes on: every check is recorded once, and only the
    crash is an error. (No cross check: the worker's count of them, none, spares the cross worker.)"""
    selection = "relu and (kink or grid) and not cross"
    r = run_dying(tmp_path, "2", "-k", selection)
    assert r.returncode == 1, r.stdout[-3000:] + r.stderr[-3000:]
    assert "dying: the worker died (signal SIGKILL) outside any check; starting it again" in r.stdout
    doc = json.loads((tmp_path / "reports" / "results.json").read_text())
    ids = [x["id"] for x in doc["results"]]
    assert sorted(ids) == sorted(collected(tmp_path, selection))
    assert {x["id"] for x in doc["results"] if x["outcome"] != "pass"} == {"relu[dying-kink-float32]"}


def test_a_worker_that_keeps_dying_is_given_up_and_resume_runs_it_again(tmp_path):
    selection = "relu and grid and float32 and not vjp and not cross"
    r = run_dying(tmp_path, "1,2", "-k", selection)
    assert r.returncode == 1, r.stdout[-3000:] + r.stderr[-3000:]
    doc = json.loads((tmp_path / "reports" / "results.json").read_text())
    rec, = doc["results"]
    assert rec["id"] == "dying[worker]" and rec["outcome"] == "error"
    assert "outside any check, 2 times in a row" in rec["message"]
    r = run_dying(tmp_path, "", "-k", selection, "--resume")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    doc = json.loads((tmp_path / "reports" / "results.json").read_text())
    assert doc["complete"] and [(x["id"], x["outcome"]) for x in doc["results"]] == [("relu[dying-grid-float32]",
                                                                                      "pass")]


def test_resume_runs_again_the_check_a_worker_died_in(tmp_path):
    """A crash record is the runner's, not the check's: ``--resume`` drops it and runs the check
    again (this one segfaults every time, so it is recorded again), so a worker SIGKILLed in a check
    and resumed ends as a clean run does (tests/test_chaos.py)."""
    selection = "relu and kink and float32 and not vjp and not cross"
    said = "dying: relu[dying-kink-float32]: worker died (signal SIGSEGV) while running this check"
    for resume in ([], ["--resume"]):
        r = run_dying(tmp_path, "", "-k", selection, *resume)
        assert r.returncode == 1 and said in r.stdout, r.stdout[-3000:] + r.stderr[-3000:]
        doc = json.loads((tmp_path / "reports" / "results.json").read_text())
        crashed = [x for x in doc["results"] if x["check"] == "crash"]
        assert doc["complete"] and [x["id"] for x in crashed] == ["relu[dying-kink-float32]"]


def _nutshell_script() -> str:
    """The ``nutshell`` console script of this environment (nutshell.entry:main)."""
    script = Path(sys.executable).with_name("nutshell")
    if not script.is_file():
        pytest.skip("no nutshell console script next to this Python (not installed)")
    return str(script)


@pytest.mark.parametrize("how", ["console script", "python -m nutshell.entry"])
def test_ctrl_c_while_starting_is_one_line_and_130(tmp_path, how):
    """Ctrl-C while ``nutshell`` still imports its command line (the first second or two) was a raw
    KeyboardInterrupt traceback. SIGINT 0.3 s after the start, and once NumPy's C module is loaded
    (the interpreter's own start-up is past, the command line's import under way): one line, 130."""
    argv = [_nutshell_script()] if how == "console script" else [sys.executable, "-m", "nutshell.entry"]
    proc = subprocess.Popen([*argv, "list"], cwd=tmp_path, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    started = time.monotonic()
    maps = Path(f"/proc/{proc.pid}/maps")
    while proc.poll() is None and (time.monotonic() - started < 0.3 or "_multiarray_umath" not in maps.read_text()):
        time.sleep(0.005)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "Traceback" not in err, err[-3000:]
    assert len(err.splitlines()) == 1 and err.startswith("nutshell: interrupted"), err
