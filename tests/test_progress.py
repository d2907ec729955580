"""What ``nutshell run``, ``nutshell bench`` and ``nutshell train`` show while they run (issue 16,
item 7): bars on a terminal, plain lines elsewhere; and the commands' tables: drawn by rich on a terminal,
plain columns elsewhere."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys

import nutshell
from nutshell.conformance.progress import RunProgress, steps
from nutshell.conformance.results import CheckResult, Outcome, Section
from nutshell.conformance.runner import summary_table
from nutshell.conformance.tables import Column, Table
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
    r = subprocess.run([sys.executable, "-m", "nutshell.cli", "run", "-b", "cupy", "-b", "onnx", "-k", "relu and grid",
                        "-j", "2"], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert "\x1b[" not in r.stdout and "━" not in r.stdout                  # no escape codes, no bars
    results = json.loads((tmp_path / "reports" / "results.json").read_text())["results"]
    for group in ("cupy", "onnx"):                                          # -j 2: side by side, a line each
        lines = [line for line in r.stdout.splitlines() if line.startswith(f"[nutshell] {group} done")]
        count = sum(x["backend"] == group for x in results)
        assert count > 0 and lines == [f"[nutshell] {group} done; {group} so far: {count} passed"], r.stdout


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


# --------------------------------------------------------------------------------- the tables

WHY = ("backend 'cupy' needs a package that is not installed (cupy_backends.cuda.libs); "
       "pip install 'nutshell[cupy]'")
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def summary() -> Table:
    recs = [record("torch", Outcome.PASS, 0), record("torch", Outcome.FAIL, 1)]
    return summary_table(recs, {"cupy": WHY})


def test_a_table_on_a_terminal_is_drawn_by_rich_and_wraps_a_long_cell_at_words(monkeypatch):
    monkeypatch.setenv("COLUMNS", "72")
    out = Terminal()
    summary().show(out)
    text = ANSI.sub("", out.getvalue())
    lines = text.splitlines()
    assert "\x1b[1m" in out.getvalue() and "─" * 20 in text                  # a bold header over a rule
    assert lines[0].split() == ["backend", "passed", "failed", "unsupp.", "errors", "total", "worst", "usage"]
    assert lines[2].split() == ["torch", "1", "1", "0", "0", "2", "0"]
    assert all(len(line.rstrip()) <= 72 for line in lines) and lines[3].startswith("cupy       unavailable: ")
    assert " ".join(" ".join(line.split()) for line in lines[3:]).removeprefix("cupy ") == f"unavailable: {WHY}"


def test_a_piped_table_is_plain_columns_without_box_characters():
    out = io.StringIO()
    summary().show(out)
    text = out.getvalue()
    assert "\x1b[" not in text and not set("─━│┃┌┏╭") & set(text)
    lines = text.splitlines()
    assert lines[:2] == ["backend     passed  failed  unsupp.  errors   total  worst usage",
                         "torch            1       1        0       0       2  0"]
    assert all(len(line) <= 80 for line in lines) and lines[2].startswith("cupy       unavailable: backend")
    assert " ".join(line.strip() for line in lines[2:]).removeprefix("cupy ").lstrip() == f"unavailable: {WHY}"
    assert Table([Column("a", 3), Column("b", 4, ">")], indent=2).lines() == ["  a      b"]


def test_a_run_names_each_unavailable_backend_on_stderr_before_the_table(tmp_path):
    env = dict(os.environ, NUTSHELL_BACKENDS="broken=nutshell_no_such_module:Backend")
    r = subprocess.run([sys.executable, "-m", "nutshell.cli", "run", "-b", "cupy", "-b", "broken", "-k",
                        "relu and grid and float32", "-j", "1"], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True, timeout=600)
    assert r.returncode == 1, r.stdout                  # it ran, but a requested backend could not
    lines = r.stdout.splitlines()
    said = [i for i, line in enumerate(lines) if line.startswith("nutshell: backend 'broken' unavailable: ")]
    table = next(i for i, line in enumerate(lines) if line.startswith("backend ") and "worst usage" in line)
    assert len(said) == 1 and said[0] < table, r.stdout
    assert "nutshell_no_such_module" in lines[said[0]] and "\x1b[" not in r.stdout
    assert any(line.startswith("broken     unavailable: ") for line in lines[table:]), r.stdout
