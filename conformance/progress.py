"""What a long command shows while it runs: on a terminal, rich progress bars; elsewhere (a CI
log, a pipe) plain lines, so logs stay readable.

* :class:`RunProgress`: ``nutshell run``'s named bar per group (each backend, then ``cross``) with
  its passed / failed / unsupported counts as they come; plain lines, one when each worker ends;
* :func:`steps`: any command that works through a known number of steps (``nutshell bench``): one
  bar with the step in progress and the time left; plain lines, one as each step begins.
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

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


class Steps:
    """Progress through ``total`` steps, each announced as it begins by calling the object with its
    label (an empty label counts a step without showing it: one that was skipped).

    On a terminal, a bar: the title, done / total, the time taken and left, the step in progress;
    elsewhere a line as each step begins, ``[bench 12/380, 0:41] torch conv2d medium forward``."""

    def __init__(self, title: str, total: int, stream: TextIO):
        self.title, self.total, self.stream = title, total, stream
        self.begun, self.started = 0, time.monotonic()
        self._progress: Progress | None = None
        if stream.isatty():
            self._progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                      TimeElapsedColumn(), TextColumn("left"), TimeRemainingColumn(),
                                      TextColumn("{task.fields[step]}"), console=Console(file=stream))
            self._task = self._progress.add_task(title, total=total, step="")
            self._progress.start()

    def __call__(self, label: str) -> None:
        self.begun += 1
        if self._progress is not None:
            self._progress.update(self._task, completed=self.begun - 1, step=label, refresh=True)
        elif label:
            elapsed = int(time.monotonic() - self.started)
            print(f"[{self.title} {self.begun}/{self.total}, {elapsed // 60}:{elapsed % 60:02d}] {label}",
                  file=self.stream, flush=True)

    def close(self) -> None:
        """The bar ends with every step begun done."""
        if self._progress is not None:
            self._progress.update(self._task, completed=self.begun, step="")
            self._progress.stop()
            self._progress = None


@contextmanager
def steps(title: str, total: int, stream: TextIO | None = None) -> Iterator[Steps]:
    """``with steps("bench", n) as advance: ... advance("torch conv2d medium forward") ...``:
    a :class:`Steps` on ``stream`` (default stderr), closed however the block ends."""
    progress = Steps(title, total, stream or sys.stderr)
    try:
        yield progress
    finally:
        progress.close()
