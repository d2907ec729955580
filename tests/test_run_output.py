"""What ``nutshell run`` prints and returns: the failures with their mismatch and a rerun command
that works when pasted, less with -q and more with -v, and exit codes a CI can rely on; a run that
runs nothing replaces nothing. The backend with the planted bug is ``skewed`` (tests/planted_backends.py),
whose module lies in the folder of the run, as a user's would, and not on $PYTHONPATH."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from itertools import pairwise
from pathlib import Path

import pytest

from nutshell import backends

HERE = Path(__file__).resolve().parent
SELECTION = ["-b", "skewed", "-k", "relu and (grid or kink)"]
PLANTED = "skewed=planted_backends:SkewedBackend"


def environment() -> dict[str, str]:
    """The planted backend registered; no $PYTHONPATH: its module is found in the folder of the run."""
    return {**{k: v for k, v in os.environ.items() if k != "PYTHONPATH"}, "NUTSHELL_BACKENDS": PLANTED}


def nutshell_run(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    """``nutshell run`` as a user starts it: the console script of the environment, not ``python -m``
    (which would put the folder on sys.path for the parent process)."""
    script = Path(sys.executable).with_name("nutshell")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "nutshell.cli"]
    return subprocess.run([*command, "run", *args], cwd=cwd, env=environment(), capture_output=True, text=True,
                          timeout=600)


def said(stderr: str) -> list[str]:
    """nutshell's own lines on stderr (a backend's library may log there too)."""
    return [line for line in stderr.splitlines() if line.startswith("nutshell:")]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file() and p.name != ".lock"}


@pytest.fixture(scope="module")
def skewed(tmp_path_factory):
    """A run of the planted bug, in a folder where an older nutshell left parts/ files of other names."""
    tmp = tmp_path_factory.mktemp("skewed")
    shutil.copy(HERE / "planted_backends.py", tmp)
    (tmp / "reports" / "parts").mkdir(parents=True)
    for name in ("torhc.jsonl", "torhc.skip"):
        (tmp / "reports" / "parts" / name).write_text("")
    r = nutshell_run(tmp, *SELECTION)
    records = json.loads((tmp / "reports" / "results.json").read_text())["results"]
    return r, tmp, records


def test_the_failures_are_listed_with_their_mismatch_and_rerun(skewed):
    r, _, records = skewed
    assert r.returncode == 1, r.stdout[-3000:] + r.stderr[-3000:]
    failed = {rec["id"]: rec for rec in records if rec["outcome"] == "fail"}
    assert "relu[skewed-grid-float32]" in failed
    lines = r.stdout.splitlines()
    listed = [i for i, line in enumerate(lines) if line.startswith("FAILED ")]
    assert {lines[i].split()[1] for i in listed} == set(failed)
    for i in listed:
        rec = failed[lines[i].split()[1]]
        assert lines[i].startswith(f"FAILED {rec['id']} - {rec['message'].splitlines()[0][:80]}")
        assert lines[i + 1] == f"  rerun: {rec['rerun']}"
    assert "elements (" in next(line for line in lines if line.startswith("FAILED relu[skewed-grid-float32] - "))
    table = next(i for i, line in enumerate(lines) if "worst usage" in line)
    assert table > max(listed)


def fresh_shell() -> dict[str, str]:
    """What a new terminal has: a PATH (with this environment's bin first, as after activating it)
    and a HOME; no $NUTSHELL_BACKENDS, no $PYTHONPATH, nothing else of this process."""
    path = os.pathsep.join([str(Path(sys.executable).parent), "/usr/local/bin", "/usr/bin", "/bin"])
    return {"PATH": path, "HOME": os.environ.get("HOME", "/")}


def test_a_pasted_rerun_command_reruns_exactly_that_check(skewed):
    """Every printed rerun line, pasted into a fresh shell in the folder of the run: the command
    brings what it needs (the backend's registration; the folder, where its module is, on sys.path)
    and reruns that one check, which fails again."""
    r, tmp, records = skewed
    lines = r.stdout.splitlines()
    printed = {line.split()[1]: after.split("rerun: ", 1)[1] for line, after in pairwise(lines)
               if line.startswith("FAILED ") and after.startswith("  rerun: ")}
    assert set(printed) == {rec["id"] for rec in records if rec["outcome"] == "fail"}, r.stdout[-3000:]
    reports = tmp / "reports"
    kept = tmp.parent / f"{tmp.name}-reports"       # the run's reports, for the tests after this one
    shutil.copytree(reports, kept)
    try:
        for cid, command in printed.items():
            out = subprocess.run(["env", "-i", *(f"{k}={v}" for k, v in fresh_shell().items()), "bash", "-c",
                                  command], cwd=tmp, capture_output=True, text=True, timeout=600)
            summary = out.stdout.strip().splitlines()[-1] if out.stdout.strip() else ""
            assert out.returncode == 1 and summary.strip("= ").startswith("1 failed in "), \
                command + "\n" + out.stdout[-3000:] + out.stderr[-3000:]
            rec, = json.loads((reports / "results.json").read_text())["results"]
            assert (rec["id"], rec["outcome"]) == (cid, "fail"), command
    finally:
        shutil.rmtree(reports)
        shutil.copytree(kept, reports)


def test_a_check_of_a_backend_that_cannot_load_says_why_it_is_not_found(tmp_path):
    """Pasted where the backend's module is not: pytest's "not found" comes with the reason."""
    argv = ["-m", "pytest", "conformance/spec.nutshell::relu[skewed-grid-float32]", "--backend", "skewed"]
    out = subprocess.run([sys.executable, *argv, "-p", "no:cacheprovider", "--results", str(tmp_path / "r.json")],
                         cwd=HERE.parent, env=environment(), capture_output=True, text=True, timeout=600)
    assert out.returncode == 4, out.stdout[-3000:] + out.stderr[-3000:]
    line, = said(out.stderr)
    assert line.startswith("nutshell: backend 'skewed' failed to load: ModuleNotFoundError") and \
        line.endswith("none of its checks exist"), line


def test_quiet_prints_the_counts_and_the_failing_ids_only(skewed):
    _, tmp, records = skewed
    r = nutshell_run(tmp, *SELECTION, "--resume", "-q")
    assert r.returncode == 1, r.stdout[-3000:] + r.stderr[-3000:]
    counts = Counter(rec["outcome"] for rec in records)
    expected = {f"FAILED {rec['id']}" for rec in records if rec["outcome"] == "fail"}
    expected.add(f"{counts['pass']} passed, {counts['fail']} failed")
    assert {line for line in r.stdout.splitlines() if line.strip()} == expected


def test_verbose_prints_a_line_for_every_check(skewed):
    _, tmp, records = skewed
    r = nutshell_run(tmp, *SELECTION, "--resume", "-v")
    assert r.returncode == 1, r.stdout[-3000:] + r.stderr[-3000:]
    words = {"pass": "PASSED", "fail": "FAILED"}
    lines = set(r.stdout.splitlines())
    assert {f"{words[rec['outcome']]} {rec['id']}" for rec in records} <= lines
    assert "worst usage" in r.stdout


def test_parts_keeps_nothing_after_a_run(skewed):
    _, tmp, _ = skewed
    assert not (tmp / "reports" / "parts").exists()
    assert {"results.json", "results.jsonl", "junit.xml", "index.html"} <= set(snapshot(tmp / "reports"))


@pytest.mark.parametrize("args, code, message", [
    (["-b", "skewed", "-k", "conv2dd"], 5, "nutshell: no check matched -k 'conv2dd'"),
    (["-b", "skewd", "-k", "relu"], 2, "did you mean 'skewed'?"),
    (["-b", "cuda", "-k", "relu"], 2, "'cuda' is a device: choose it with --device cuda"),
])
def test_a_run_that_runs_nothing_fails_and_replaces_nothing(skewed, args, code, message):
    _, tmp, _ = skewed
    before = snapshot(tmp / "reports")
    r = nutshell_run(tmp, *args)
    assert r.returncode == code, r.stdout[-3000:] + r.stderr[-3000:]
    line, = said(r.stderr)
    assert message in line
    assert snapshot(tmp / "reports") == before and not (tmp / "reports" / "parts").exists()


def test_every_requested_backend_unavailable_fails_and_replaces_nothing(skewed):
    if not backends.available(["cupy"], "cuda")[1]:
        pytest.skip("this machine has a CUDA device: the backend is available")
    _, tmp, _ = skewed
    before = snapshot(tmp / "reports")
    r = nutshell_run(tmp, *SELECTION, "--device", "cuda")
    assert r.returncode == 2, r.stdout[-3000:] + r.stderr[-3000:]
    line, = said(r.stderr)
    assert "every requested backend is unavailable" in line and "skewed" in line
    assert snapshot(tmp / "reports") == before
