"""What ``nutshell run`` shows while it runs (issue 16, item 7): named bars with counts on a
terminal, plain lines elsewhere."""

from __future__ import annotations

import io
import json
import subprocess
import sys

from nutshell.conformance.progress import RunProgress
from nutshell.conformance.results import CheckResult, Outcome, Section


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
    assert len(lines) == 2 and all("passed" in line for line in lines), r.stdout
    results = json.loads((tmp_path / "reports" / "results.json").read_text())["results"]
    cupy = sum(x["backend"] == "cupy" for x in results)
    assert cupy > 0 and lines[-1].endswith(f"cupy so far: {cupy} passed"), (lines, cupy)
