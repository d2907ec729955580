"""What ``nutshell run`` shows while it runs: on a terminal, a named progress bar per group (each
backend, then ``cross``) with its passed / failed / unsupported counts as they come; elsewhere (a
CI log, a pipe) plain lines, one when each worker ends, so logs stay readable."""

from __future__ import annotations

import sys
from collections import Counter
from typing import TextIO

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from nutshell.conformance.results import CheckResult, Outcome


class RunProgress:
    """Counts per group; bars when ``stream`` is a terminal, nothing drawn otherwise."""

    def __init__(self, groups: list[str], enabled: bool, stream: TextIO | None = None):
        stream = stream or sys.stdout
        self.counts: dict[str, Counter] = {g: Counter() for g in groups}
        self.bars = enabled and stream.isatty()
        self._progress: Progress | None = None
        self._tasks: dict[str, TaskID] = {}
        if self.bars:
            self._progress = Progress(TextColumn("{task.description:<8}"), BarColumn(), MofNCompleteColumn(),
                                      TextColumn("{task.fields[counts]}"), TimeElapsedColumn(),
                                      console=Console(file=stream), transient=False)
            for g in groups:
                self._tasks[g] = self._progress.add_task(g, total=None, counts="", start=False)
            self._progress.start()

    def total(self, group: str, n: int) -> None:
        """The number of checks the group has to run (a worker counts them when it starts)."""
        if self._progress is not None and group in self._tasks:
            self._progress.update(self._tasks[group], total=n + sum(self.counts[group].values()))
            self._progress.start_task(self._tasks[group])

    def record(self, r: CheckResult) -> None:
        c = self.counts.setdefault(r.backend, Counter())
        c[r.outcome] += 1
        if self._progress is not None and r.backend in self._tasks:
            self._progress.update(self._tasks[r.backend], advance=1, counts=self.describe(r.backend))

    def describe(self, group: str) -> str:
        c = self.counts.get(group, Counter())
        words = [f"{c[o]} {w}" for o, w in ((Outcome.PASS, "passed"), (Outcome.FAIL, "failed"),
                                             (Outcome.UNSUPPORTED, "unsupported"), (Outcome.ERROR, "errors"),
                                             (Outcome.SPEC, "spec problems")) if c[o]]
        return ", ".join(words) or "no checks yet"

    def close(self) -> None:
        """Each bar ends at what its group recorded (a check counted at the start may not have run)."""
        if self._progress is not None:
            for g, task in self._tasks.items():
                done = sum(self.counts[g].values())
                self._progress.update(task, total=done, completed=done)
            self._progress.stop()
            self._progress = None
