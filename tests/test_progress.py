"""What ``nutshell run``, ``nutshell bench`` and ``nutshell train`` show while they run (issue 16,
item 7): bars on a terminal, plain lines elsewhere."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys

import nutshell
from nutshell.conformance.progress import RunProgress, steps
from nutshell.conformance.results import CheckResult, Outcome, Section
from nutshell.training import fit


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def record(backend: str, outcome: Outcome, n: int) -> CheckResult:
    return CheckResult(id=f"relu[{backend}-{n}]", backend=backend, concept="relu", check="forward",
                       section=Section.OPS, outcome=outcome)


def test_a_terminal_gets_a_named_bar_per_group_with_its_counts():
    out = Terminal()
    p = RunProgress(["torch", "cross"], enabled=True, stream=out)
    p.total("torch", 3)
    for i, o in enumerate((Outcome.PASS, Outcome.FAIL, Outcome.UNSUPPORTED)):
        p.record(record("torch", o, i))
    p.close()
    text = out.getvalue()
    assert "torch" in text and "cross" in text and "3/3" in text
    assert "1 passed, 1 failed, 1 unsupported" in text


def test_a_pipe_gets_no_bars():
    out = io.StringIO()
    p = RunProgress(["torch"], enabled=True, stream=out)
    p.record(record("torch", Outcome.PASS, 0))
    p.close()
    assert out.getvalue() == "" and p.describe("torch") == "1 passed"


def test_a_piped_run_prints_plain_lines_naming_each_group(tmp_path):
    r = subprocess.run([sys.executable, "-m", "nutshell.cli", "run", "-b", "cupy", "-k", "relu and grid", "-j", "2"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert "\x1b[" not in r.stdout and "━" not in r.stdout                  # no escape codes, no bars
    lines = [line for line in r.stdout.splitlines() if line.startswith("[nutshell] cupy batch")]
    assert len(lines) >= 2 and all("passed" in line for line in lines), r.stdout    # -j 2: at least two batches
    results = json.loads((tmp_path / "reports" / "results.json").read_text())["results"]
    cupy = sum(x["backend"] == "cupy" for x in results)
    assert cupy > 0 and lines[-1].endswith(f"cupy so far: {cupy} passed"), (lines, cupy)


def test_steps_draw_one_bar_with_the_step_in_progress_on_a_terminal():
    out = Terminal()
    with steps("bench", 3, out) as advance:
        advance("torch conv2d medium forward")
        advance("")                                           # a step skipped: counted, not named
        advance("onnx relu small vjp")
    text = out.getvalue()
    assert "bench" in text and "3/3" in text and "onnx relu small vjp" in text and "\x1b[" in text


def test_steps_print_a_plain_line_as_each_named_step_begins_elsewhere():
    out = io.StringIO()
    with steps("bench", 3, out) as advance:
        advance("torch conv2d medium forward")
        advance("")
        advance("onnx relu small vjp")
    lines = out.getvalue().splitlines()
    assert len(lines) == 2, lines
    assert re.fullmatch(r"\[bench 1/3, 0:0\d\] torch conv2d medium forward", lines[0])
    assert re.fullmatch(r"\[bench 3/3, 0:0\d\] onnx relu small vjp", lines[1])


def test_training_on_a_terminal_draws_a_bar_over_the_steps_under_the_epoch_lines():
    out = Terminal()
    with fit.Bar(out) as bar:
        _, hist = fit.train(nutshell.load("cupy"), "logistic_regression", epochs=2, log=bar.say, progress=bar.step)
    text = out.getvalue()
    assert "epoch   1/2" in text and "epoch   2/2" in text and "training" in text
    assert f"{hist.steps}/{hist.steps}" in text and "\x1b[" in text


def test_a_piped_train_prints_the_epoch_lines_alone(tmp_path):
    r = subprocess.run([sys.executable, "-m", "nutshell.cli", "train", "logistic_regression", "-b", "cupy",
                        "--epochs", "2"], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert "\x1b[" not in r.stdout and "━" not in r.stdout
    lines = r.stdout.splitlines()
    assert lines[0].startswith("training logistic_regression on cupy") and lines[-1].startswith("test accuracy")
    assert [line.split()[1] for line in lines[1:-1]] == ["1/2", "2/2"], lines
