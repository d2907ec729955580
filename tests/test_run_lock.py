"""One ``nutshell run`` per reports folder, and a ``--resume`` only of the same selection and spec.

The repro: two runs started seconds apart in one folder corrupted each other (a passing check
recorded as "worker died", the second run counting 2 checks instead of 37 and exiting 0)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nutshell import spec as spec_mod
from nutshell.conformance import runner
from nutshell.errors import RunRefused

SELECTION = ["-b", "cupy", "-k", "relu or sigmoid"]


def nutshell_run(cwd: Path, *args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nutshell.cli", "run", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=600, **kw)


def said(stderr: str) -> list[str]:
    """nutshell's own lines on stderr (a backend's library may log there too)."""
    return [line for line in stderr.splitlines() if line.startswith("nutshell:")]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file() and p.name != ".lock"}


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """A run, and a second one in the same folder started while the first is running."""
    tmp = tmp_path_factory.mktemp("two")
    first = subprocess.Popen([sys.executable, "-m", "nutshell.cli", "run", *SELECTION], cwd=tmp, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while not (tmp / "reports" / "parts").is_dir():    # made once the first run holds the folder
        assert first.poll() is None and time.monotonic() < deadline, first.communicate()
        time.sleep(0.05)
    second = nutshell_run(tmp, "-b", "cupy", "-k", "relu")
    out, err = first.communicate(timeout=600)
    return tmp, first, out + err, second


def test_a_second_run_in_a_busy_folder_is_refused_at_once(two_runs):
    _, first, _, second = two_runs
    assert second.returncode == 2, second.stdout[-3000:] + second.stderr[-3000:]
    line, = said(second.stderr)
    assert f"PID {first.pid}" in line and "wait for it to end" in line and "--reports OTHER_DIR" in line
    assert "deselected" not in second.stdout     # no worker started


def test_the_first_run_is_untouched_by_the_second(two_runs):
    tmp, first, output, _ = two_runs
    assert first.returncode == 0, output[-3000:]
    doc = json.loads((tmp / "reports" / "results.json").read_text())
    ids = [r["id"] for r in doc["results"]]
    assert doc["complete"] and len(ids) == len(set(ids)) == doc["summary"]["cupy"]["total"] + doc["summary"][
        "cross"]["total"]
    assert {r["outcome"] for r in doc["results"]} == {"pass"}
    assert {"relu[cupy-grid-float32]", "sigmoid[cupy-grid-float32]", "relu[cross-grid-float32]"} <= set(ids)


def test_the_lock_of_a_killed_run_is_free(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\nfrom nutshell.conformance.runner import "
                               "RunLock\nRunLock(sys.argv[1]).__enter__()\nprint('held', flush=True)\ntime.sleep(600)",
                               str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        with pytest.raises(RunRefused, match=f"PID {holder.pid}"), runner.RunLock(tmp_path):
            pass
    finally:
        holder.kill()
        holder.wait()
    with runner.RunLock(tmp_path):
        assert json.loads((tmp_path / ".lock").read_text())["pid"] == os.getpid()


def options(folder: Path, **change) -> runner.Options:
    """The options of the two_runs fixture's first run, resumed, with ``change``."""
    return runner.Options(**{"backends": ["cupy"], "k": "relu or sigmoid", "reports": folder, "resume": True,
                             "quiet": True} | change)


def changed_spec(tmp_path: Path) -> Path:
    """The repository's spec with a comment added: the same concepts, another file."""
    copy = tmp_path / "concepts.yaml"
    copy.write_text(spec_mod.SPEC_FILE.read_text() + "\n# a comment\n")
    return copy


@pytest.mark.parametrize("change, named", [
    ({"k": "relu"}, "-k 'relu or sigmoid' there, 'relu' here"),
    ({"backends": ["onnx", "cupy"]}, "-b ['cupy'] there, ['cupy', 'onnx'] here"),
    ({"device": "cpu"}, "--device None there, 'cpu' here"),
    ({"spec": "changed"}, "the spec file's sha256"),
])
def test_resume_refuses_a_run_of_another_selection(two_runs, tmp_path, change, named):
    tmp = two_runs[0]
    if change.get("spec"):
        change = {"spec": changed_spec(tmp_path)}
    before = snapshot(tmp / "reports")
    with pytest.raises(RunRefused, match="another selection") as refused:
        runner.Runner(options(tmp / "reports", **change)).run()
    assert named in str(refused.value)
    assert snapshot(tmp / "reports") == before


def test_resume_refuses_results_that_do_not_name_their_selection(two_runs, tmp_path):
    shutil.copytree(two_runs[0] / "reports", tmp_path / "reports")
    doc = json.loads((tmp_path / "reports" / "results.json").read_text())
    del doc["selection"]
    (tmp_path / "reports" / "results.json").write_text(json.dumps(doc))
    with pytest.raises(RunRefused, match="do not say which selection made them"):
        runner.Runner(options(tmp_path / "reports")).run()


def test_the_refusal_is_one_line_and_exit_code_2(two_runs):
    tmp = two_runs[0]
    r = nutshell_run(tmp, "--resume", "-b", "cupy", "-k", "relu")
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-3000:]
    line, = said(r.stderr)
    assert line.startswith("nutshell: RunRefused: --resume: reports holds a run of another selection")
