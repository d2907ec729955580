"""``nutshell run``: the conformance suite with every backend in its own worker process.

Each group (one per backend, plus ``cross`` for the checks that span backends) runs as a pytest
worker that reports a header, a start event and a record per check, and a last ``done`` event, on
a JSON-lines file of its own; every line carries the worker's token, so the runner reads no line
of another worker. When a worker dies (segmentation fault, abort, out-of-memory kill) or a check
runs past the timeout, the runner records that check as ``error`` (crash) or ``timeout``, leaves
it out and starts the worker again; a worker that dies outside any check is started again too, so
the rest of that backend and the other backends still run. A worker ends with the runner, however
the runner ends.

One run at a time holds a reports folder (``reports/.lock``). The run writes into
``reports/parts/`` and moves results.json, results.jsonl and junit.xml into the folder at the end,
or when SIGINT or SIGTERM stops it; a run that records nothing replaces nothing. ``--resume``
continues the last run of the folder (a killed one's from ``parts/``) when it had the same
selection and spec.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import math
import os
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from nutshell import backends
from nutshell import spec as spec_mod
from nutshell.conformance import shards
from nutshell.conformance.progress import RunProgress
from nutshell.conformance.results import (
    CheckResult,
    Outcome,
    ResultsWriter,
    Section,
    load_lines,
    load_results,
    rerun_command,
    spec_problems,
    summarize,
    summary_rows,
    write_junit,
)
from nutshell.conformance.tables import Column, Table
from nutshell.errors import BackendUnavailable, NothingSelected, NutshellError, RunRefused, SpecError

POLL_S = 0.2
REPORTS = Path("reports")
TIMEOUT_S = 120.0
IDLE_DEATHS = 2   # deaths outside any check in a row, with no check finished, before a group is given up
NO_TESTS = 5      # pytest's exit code when nothing was collected
RESULTS = ("results.jsonl", "junit.xml", "results.json")   # what a run moves into the folder, results.json last
GOOD = (Outcome.PASS, Outcome.UNSUPPORTED)


@dataclass
class Options:
    backends: list[str] | None
    device: str | None = None
    k: str | None = None
    reports: Path = REPORTS
    timeout: float = TIMEOUT_S
    resume: bool = False
    quiet: bool = False
    spec: Path | None = None  # the spec file every worker checks against (None: the repository's)
    verbose: bool = False
    shard: str | None = None  # "I/N": this run's share of the selected checks (conformance/shards.py)
    durations: Path | None = None  # an earlier results.json whose check times balance the shards
    jobs: int = 1  # workers at once: backend groups side by side, each split in batches when jobs allow


@dataclass
class Worker:
    group: str
    events: Path
    batch: str | None = None  # "i/k": this worker's share of its group's checks (-j)
    proc: subprocess.Popen | None = None
    token: str | None = None  # every event line of this worker carries it; lines without it are not this worker's
    offset: int = 0
    started: dict = field(default_factory=dict)  # check id -> its start event, for the check running now
    header: dict = field(default_factory=dict)  # the worker's: the backends it loaded, those it could not
    done: bool = False  # the worker finished its session (its last event)
    records: int = 0  # records it delivered


class _Stop(Exception):
    """SIGINT or SIGTERM arrived: the run stops at the next poll."""


def suite_file() -> Path:
    from nutshell import conformance

    return Path(conformance.__file__).parent / "spec.nutshell"


def worker_id(group: str) -> str:
    """The id of the record for a worker that died outside any check: not a check, never resumed."""
    return f"{group}[worker]"


def selection(opts: Options) -> dict:
    """What decides which checks a run has: a --resume must have the same."""
    spec_file = Path(opts.spec) if opts.spec is not None else spec_mod.SPEC_FILE
    return {"backends": sorted(opts.backends) if opts.backends else None, "k": opts.k, "device": opts.device,
            "spec_sha256": hashlib.sha256(spec_file.read_bytes()).hexdigest(), "shard": opts.shard}


_FLAGS = {"backends": "-b", "k": "-k", "device": "--device", "spec_sha256": "the spec file's sha256",
          "shard": "--shard"}


def resume_command(opts: Options) -> str:
    """The command that continues this run: the same selection, folder, spec and timeout."""
    argv = ["nutshell", "run", "--resume"]
    for name in opts.backends or []:
        argv += ["-b", name]
    argv += ["--device", opts.device] if opts.device else []
    argv += ["-k", opts.k] if opts.k else []
    argv += ["--spec", str(opts.spec)] if opts.spec is not None else []
    argv += ["--shard", opts.shard] if opts.shard else []
    argv += ["--durations", str(opts.durations)] if opts.durations is not None else []
    argv += ["--reports", str(opts.reports)] if Path(opts.reports) != REPORTS else []
    argv += ["--timeout", f"{opts.timeout:g}"] if opts.timeout != TIMEOUT_S else []
    return shlex.join(argv)


def _argv(opts: Options, w: Worker, skip: Path, timings: Path | None = None) -> list[str]:
    argv = [
        sys.executable,
        "-m",
        "pytest",
        str(suite_file()),
        "-p",
        "no:cacheprovider",
        "-q",
        "--no-header",
        "--tb=no",
        "-rN",
        "--assert=plain",        # checks write their own messages: no rewriting of every module at start-up
        "--no-nutshell-summary",
        f"--nutshell-group={w.group}",
        f"--events={w.events}",
        f"--skip-ids={skip}",
        f"--nutshell-parent={os.getpid()}",
    ]
    if w.token is not None:
        argv.append(f"--nutshell-run-id={w.token}")
    if w.batch is not None:
        argv.append(f"--nutshell-batch={w.batch}")
        argv += [f"--nutshell-batch-timings={timings}"] if timings is not None else []
    for b in opts.backends or []:
        argv += ["--backend", b]
    if opts.device:
        argv += ["--nutshell-device", opts.device]
    if opts.k:
        argv += ["-k", opts.k]
    if opts.shard:
        argv += ["--shard", opts.shard]
    if opts.durations is not None:
        argv += ["--shard-durations", str(opts.durations)]
    if opts.spec is not None:
        argv += ["--spec", str(opts.spec)]
    return argv


def _read_events(w: Worker) -> list[dict]:
    if not w.events.is_file():
        return []
    with w.events.open() as f:
        f.seek(w.offset)
        chunk = f.read()
    complete = chunk[: chunk.rfind("\n") + 1]
    w.offset += len(complete.encode())
    return [json.loads(line) for line in complete.splitlines() if line.strip()]


class RunLock:
    """One run per reports folder: an exclusive ``flock`` on ``<folder>/.lock`` for as long as the
    run lasts. The kernel frees it when the process ends, however it ends, so a killed run never
    leaves the folder locked; the file names the holder (PID, start, command) for the refusal."""

    def __init__(self, folder: Path):
        self.path = Path(folder) / ".lock"
        self._fd: int | None = None

    def __enter__(self) -> RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise RunRefused(self._refusal()) from None
        os.ftruncate(fd, 0)
        started = datetime.now(timezone.utc).isoformat(timespec="seconds")
        os.write(fd, json.dumps({"pid": os.getpid(), "started": started, "command": shlex.join(sys.argv)}).encode())
        self._fd = fd
        return self

    def __exit__(self, *exc) -> None:
        os.close(self._fd)  # closing the file releases the lock

    def _refusal(self) -> str:
        try:
            holder = json.loads(self.path.read_text())
            who = f"PID {holder['pid']}, started {holder['started']}: {holder['command']}"
        except (OSError, ValueError, KeyError, TypeError):
            who = "its PID is not written yet"
        return (f"{self.path.parent} is in use by another nutshell run ({who}); wait for it to end, "
                f"or give this run another folder with --reports OTHER_DIR")


class Runner:
    def __init__(self, opts: Options):
        self.opts = opts
        self.reports = Path(opts.reports)
        self.parts = self.reports / "parts"
        self.run_id = uuid.uuid4().hex[:12]
        version = spec_mod.load(opts.spec).version
        self.selection = selection(opts)
        self.header = {"spec_version": version, "backends": {}, "unavailable": {}, "run_id": self.run_id,
                       "selection": self.selection}
        self.previous: list[CheckResult] = []
        self.done: set[str] = set()
        self.writer: ResultsWriter | None = None  # opened at the first record: a run without one writes nothing
        self.moved = False  # the results are in the reports folder
        self.stopped: int | None = None  # the signal that stopped the run
        self.cross_pending: int | None = None  # cross checks left, as a worker that loaded a backend counted them
        self.spawned = 0
        self.current: list[Worker] = []  # the workers started (those still running are ended on a stop)
        self.progress = RunProgress([], enabled=False)  # the bars of the run (made when it starts)
        self.lock = threading.Lock()  # -j: the workers' threads share the records, the header and the counters
        self.costs: dict[str, float] = {}  # -j: group -> seconds its checks took in an earlier run
        self.timings: Path | None = None  # -j: those checks' seconds, for the workers to balance batches by

    @property
    def records(self) -> list[CheckResult]:
        return self.writer.records if self.writer is not None else self.previous

    def groups(self) -> list[str]:
        names = self.opts.backends or backends.names()
        return [*names, "cross"]

    def run(self) -> int:
        """Every group in its worker, then the results moved into the reports folder. Returns 0 when
        checks ran and none failed, 1 when one did (or a requested backend is unavailable), 128 +
        the signal's number when SIGINT or SIGTERM stopped the run. Unknown backend names, a folder
        in use, a --resume of another selection (RunRefused), no runnable backend
        (BackendUnavailable) and an empty selection (NothingSelected) raise before anything is replaced."""
        with self._stopping():
            backends.check_names(self.opts.backends)
            return self._locked()

    def _locked(self) -> int:
        """The run itself, holding the folder's lock."""
        with RunLock(self.reports):
            try:
                if self.opts.resume:
                    self._resume()
                groups = self.groups()
                if self.opts.jobs > 1:
                    self._earlier_timings()
                self.progress = RunProgress(groups, enabled=not self.opts.quiet)
                self._in_parallel([g for g in groups if g != "cross"])
                self._in_parallel([g for g in groups if g == "cross"])
                self._refuse_empty()
                self._finish(final=True)
            except _Stop:
                self._finish(final=False)
                print(self._stopped_line(), file=sys.stderr, flush=True)
                return 128 + self.stopped
            finally:
                self.progress.close()
                self._end_worker()
                self._clean_parts()
        return self._exit_code()

    def _earlier_timings(self) -> None:
        """-j: the seconds each check took in an earlier run (``--durations``, else the results.json
        this run will replace), written once into the parts folder for the workers to balance their
        batches by, and summed per group to start the longest first. Only balance depends on them:
        without a readable earlier run every check counts the same."""
        source = self.opts.durations or self.reports / "results.json"
        try:
            records = load_results(source)["results"] if source.is_file() else []
        except (NutshellError, OSError, ValueError):
            records = []
        seconds = {r.id: r.seconds for r in records if r.seconds is not None}
        if not seconds:
            return
        for r in records:                       # a record's backend is its group ("cross" for the cross checks)
            self.costs[r.backend] = self.costs.get(r.backend, 0.0) + (r.seconds or 0.0)
        folder = self.parts / self.run_id
        folder.mkdir(parents=True, exist_ok=True)
        self.timings = folder / "timings.json"
        self.timings.write_text(json.dumps(seconds))

    def _stopped_line(self) -> str:
        if not self.records:
            return "nutshell: interrupted before any check was recorded; nothing was replaced"
        return (f"nutshell: interrupted; {len(self.records)} checks recorded; continue with: "
                f"{resume_command(self.opts)}")

    @contextmanager
    def _stopping(self) -> Iterator[None]:
        """SIGINT and SIGTERM set a flag that the run reads at its next poll: it stops between two
        writes, never in the middle of one."""

        def stop(signum: int, _frame) -> None:
            self.stopped = self.stopped or signum

        before = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for s, handler in before.items():
                signal.signal(s, handler)

    def _check_stop(self, w: Worker | None = None) -> None:
        if self.stopped:
            if w is not None:
                self._kill(w)
            raise _Stop

    def _resume(self) -> None:
        """The records of the folder's last run (a killed run's in parts/, else the folder's own),
        when it had this selection and spec. Records of a worker that died or hung are not check
        results: a crash record (``check == "crash"``: a check the worker died in or was killed on,
        or ``<group>[worker]``) is dropped and that check or group runs again, so a run killed and
        resumed ends with the records of a clean one (a real segfault is simply recorded again).
        (Every backend's worker starts again, so the header's backends are this run's.)"""
        source = self.parts if (self.parts / "results.jsonl").is_file() else self.reports
        if not (source / "results.jsonl").is_file():
            return
        self._same_selection(self._header_of(source / "results.json").get("selection"), source)
        self.previous = [r for r in load_lines(source / "results.jsonl") if r.check != "crash"]
        self.done = {r.id for r in self.previous}

    @staticmethod
    def _header_of(path: Path) -> dict:
        try:
            return load_results(path)
        except SpecError as exc:
            raise RunRefused(f"--resume: {exc}; run without --resume to start afresh") from None

    def _same_selection(self, theirs, source: Path) -> None:
        if not isinstance(theirs, dict):
            raise RunRefused(f"--resume: {source} holds results that do not say which selection made them; "
                             "run without --resume to start afresh")
        differ = [f"{_FLAGS[k]} {theirs.get(k)!r} there, {v!r} here" for k, v in self.selection.items()
                  if theirs.get(k) != v]
        if differ:
            raise RunRefused(f"--resume: {source} holds a run of another selection ({'; '.join(differ)}); "
                             "resume with that run's options, or run without --resume (or with --reports "
                             "OTHER_DIR) to start afresh")

    def _in_parallel(self, groups: list[str]) -> None:
        """``groups`` on ``jobs`` workers at once: each group split into batches (``--nutshell-batch
        i/k``, a deterministic share of its checks, :func:`batches`), the batches of the longest
        group first, each job taking the next batch as it becomes free, so that the jobs end at
        about the same time. One job: the groups one after the other in this thread, as before."""
        if not groups:
            return
        tasks = plan(groups, self.opts.jobs, self.costs)
        if self.opts.jobs <= 1:
            for group, batch in tasks:
                self._run_group(group, batch)
            return
        with ThreadPoolExecutor(max_workers=self.opts.jobs, thread_name_prefix="nutshell-group") as pool:
            futures = [pool.submit(self._run_group, g, b) for g, b in tasks]
            pending = set(futures)
            while pending:                        # the main thread stays free for SIGINT and SIGTERM
                _, pending = wait(pending, timeout=POLL_S)
        for f in futures:
            f.result()                            # a _Stop (or a bug) in any group surfaces here
        self._check_stop()

    def _run_group(self, group: str, batch: str | None = None) -> None:
        """One group's worker, started again after a crash or a hang in a check, and after a death
        outside any check unless it died so twice in a row without finishing a check."""
        idle = 0
        while self._wanted(group):
            w = self._spawn(group, batch)
            ended = self._watch(w)
            if ended is None:
                if self.opts.jobs > 1 and not self.progress.bars:   # a plain log: a line as each worker ends
                    self._say(f"{group}{f' batch {batch}' if batch else ''} done; {group} so far: "
                              f"{self.progress.describe(group)}")
                return
            if ended != worker_id(group):
                continue
            idle = 0 if w.records else idle + 1
            why = f"the worker died ({_describe(w.proc.returncode)}) outside any check"
            if idle >= IDLE_DEATHS:
                self._interrupted(w, ended, "error", f"{why}, {idle} times in a row without finishing a check")
                return
            self._say(f"{group}: {why}; starting it again")

    def _wanted(self, group: str) -> bool:
        """A backend's group always runs; the cross group only with a backend to span, and not when a
        worker that loaded a backend found no cross check left."""
        if group != "cross":
            return True
        if self.header["unavailable"] and not self.header["backends"]:
            return False
        return self.cross_pending != 0

    def _spawn(self, group: str, batch: str | None = None) -> Worker:
        self._check_stop()
        with self.lock:
            self.spawned += 1
            n, done = self.spawned, "\n".join(sorted(self.done))
        folder = self.parts / self.run_id
        folder.mkdir(parents=True, exist_ok=True)
        w = Worker(group, folder / f"{group}-{n}.jsonl", batch=batch, token=f"{self.run_id}.{n}")
        skip = folder / f"{group}-{n}.skip"
        skip.write_text(done)
        # rows of dots of several workers would interleave, and the bars show the progress
        quiet = self.opts.quiet or self.opts.jobs > 1 or self.progress.bars
        w.proc = subprocess.Popen(_argv(self.opts, w, skip, self.timings), stdout=subprocess.DEVNULL if quiet else None,
                                  start_new_session=True, env=_worker_env(self.opts.jobs))
        with self.lock:
            self.current.append(w)
        return w

    def _watch(self, w: Worker) -> str | None:
        """Follow a worker until it ends. Returns the id of a check it crashed or hung on (recorded),
        ``worker_id(group)`` when it died outside any check (not recorded), None when it finished."""
        while True:
            self._consume(w)
            self._check_stop(w)
            now = time.time()
            for cid, ev in list(w.started.items()):
                if now - ev["t"] > self.opts.timeout:
                    self._kill(w)
                    self._interrupted(w, cid, "timeout", f"no result after {self.opts.timeout:g} s; worker killed")
                    return cid
            rc = w.proc.poll()
            if rc is not None:
                self._consume(w)
                if w.started:
                    cid = next(iter(w.started))
                    self._interrupted(w, cid, "error", f"worker died ({_describe(rc)}) while running this check")
                    return cid
                if not w.done:
                    return worker_id(w.group)
                if rc not in (0, 1, NO_TESTS):
                    self._interrupted(
                        w, worker_id(w.group), "error", f"the worker stopped with {_describe(rc)} outside any check"
                    )
                return None
            time.sleep(POLL_S)

    def _consume(self, w: Worker) -> None:
        for ev in _read_events(w):
            if ev.pop("run", None) != w.token:
                continue  # a line of another worker: an earlier one, or one of a run that is gone
            kind = ev.pop("event")
            if kind == "header":
                w.header = ev
                with self.lock:
                    self._merge_header(ev)
                    if w.group in ev.get("pending", {}):
                        self.progress.total(w.group, ev["pending"][w.group])
            elif kind == "start":
                w.started = {ev["id"]: ev}
            elif kind == "record":
                w.started.pop(ev["id"], None)
                w.records += 1
                self._add(CheckResult.from_json(ev, f"{w.events}: record"))
            elif kind == "done":
                w.done = True

    def _merge_header(self, h: dict) -> None:
        """A worker's backends into the run's header; the cross checks it counted when it loaded one."""
        hdr = self.header
        for name, info in h.get("backends", {}).items():
            hdr["backends"][name] = info
            hdr["unavailable"].pop(name, None)
        for name, why in h.get("unavailable", {}).items():
            hdr["unavailable"][name] = why
            hdr["backends"].pop(name, None)
        if h.get("backends") and "pending" in h:
            self.cross_pending = h["pending"].get("cross", 0)

    def _add(self, record: CheckResult) -> None:
        with self.lock:
            if record.id in self.done:
                return
            if self.writer is None:
                self.writer = ResultsWriter(self.parts / "results.json", self.header, records=self.previous)
            self.done.add(record.id)
            self.writer.add(record)
            self.progress.record(record)

    def _interrupted(self, w: Worker, cid: str, status: str, why: str) -> None:
        """An error record for the check the worker crashed or hung on, in the section of that
        check, with the command that reruns it on the backends of that worker. A worker that died
        outside any check has no check to rerun: its record (``<group>[worker]``) has no command."""
        start = w.started.pop(cid, None)
        section = Section(start["section"]) if start else Section.OTHER
        rerun = (
            rerun_command(suite_file(), cid, list(w.header.get("backends", {})), self.opts.device, self.opts.spec)
            if start
            else None
        )
        self._add(
            CheckResult(
                id=cid,
                backend=w.group,
                concept=cid.split("[", 1)[0],
                check="crash",
                section=section,
                outcome=Outcome.ERROR,
                status=status,
                message=why,
                rerun=rerun,
            )
        )
        self._say(f"{w.group}: {cid}: {why}")

    def _say(self, line: str) -> None:
        if not self.opts.quiet:
            print(f"\n[nutshell] {line}", flush=True)

    def _refuse_empty(self) -> None:
        """A run without a record: no backend could run, or the selection matched no check."""
        if self.records:
            return
        hdr = self.header
        if hdr["unavailable"] and not hdr["backends"]:
            which = "requested backend" if self.opts.backends else "backend"
            reasons = "; ".join(f"{name}: {why}" for name, why in sorted(hdr["unavailable"].items()))
            raise BackendUnavailable(f"no check ran: every {which} is unavailable here ({reasons})")
        raise NothingSelected(f"no check matched -k {self.opts.k!r}" if self.opts.k else "no check was selected")

    def _finish(self, final: bool) -> None:
        """results.jsonl, junit.xml and results.json of this run into the reports folder, each replaced
        atomically; a run with no record (none new, none resumed) replaces nothing."""
        if self.writer is None:
            if not self.previous:
                return
            self.writer = ResultsWriter(self.parts / "results.json", self.header, records=self.previous)
        self.writer.flush(final=final)
        write_junit(self.writer.records, self.parts / "junit.xml")
        for name in RESULTS:
            os.replace(self.parts / name, self.reports / name)
        self.moved = True

    def _end_worker(self) -> None:
        for w in list(self.current):
            if w.proc.poll() is None:
                self._kill(w)

    def _clean_parts(self) -> None:
        """parts/ keeps only what a later --resume needs: nothing once the results are in place, else
        the results of a run that never moved them (killed); never a worker's files."""
        if not self.parts.is_dir():
            return
        for entry in self.parts.iterdir():
            if self.moved or entry.name not in ("results.json", "results.jsonl"):
                shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
        if not any(self.parts.iterdir()):
            self.parts.rmdir()

    def _exit_code(self) -> int:
        bad = any(r.outcome not in GOOD for r in self.records)
        missing = any(n in self.header["unavailable"] for n in self.opts.backends or [])
        return 1 if bad or missing else 0

    @staticmethod
    def _kill(w: Worker) -> None:
        try:
            os.killpg(w.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        w.proc.wait()


THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def _worker_env(jobs: int) -> dict[str, str]:
    """The worker's environment: with several jobs, each library thread pool gets its share of the
    cores (unless the user set one), so that workers side by side do not fight over them."""
    env = dict(os.environ)
    if jobs > 1:
        share = str(max(1, (os.cpu_count() or 1) // jobs))
        for name in THREAD_VARS:
            env.setdefault(name, share)
    return env


MIN_BATCH_S = 15.0   # the shortest batch worth a worker: about four worker start-ups (imports, collection)
# Seconds of checks each in-tree group took in a default run (2 cores, 2026-12-04; tf, the
# out-of-tree example, took about 115). Only the plan of a run without an earlier one depends on
# them (the order, the batches): a group not named here (an out-of-tree backend) counts as the
# longest and starts first, since a long group started last is what leaves the other jobs idle, and
# a short one started first costs little.
TYPICAL_S = {"onnx": 56.0, "torch": 22.0, "cupy": 19.0, "cross": 4.0}


def plan(groups: list[str], jobs: int, costs: dict[str, float]) -> list[tuple[str, str | None]]:
    """The workers of ``groups`` for ``jobs`` jobs, in the order they start: (group, batch "i/k" or
    None), the longest group's first. One job: each group whole. Several, with every group's
    seconds in an earlier run (``costs``): batches of about total / (2·jobs) seconds, two a job, so
    that a long batch at the end does not leave the other jobs idle, and never under
    :data:`MIN_BATCH_S`, so that a short selection is not spread over workers that would mostly
    start up. Without them only :data:`TYPICAL_S` says how long a group may be: ⌈jobs / groups⌉
    batches each, a worker for every job and no start-up more, but none much shorter than
    :data:`MIN_BATCH_S` by its typical seconds (the cross checks stay one worker), in the order of
    those seconds, a group it does not name (an out-of-tree backend) first. (Tried: such a group on
    every job; two TensorFlow workers side by side on two cores took 131 s of checks against 115
    for one, and the run 167 s against 148–151.)"""
    if jobs <= 1:
        return [(g, None) for g in groups]
    if all(g in costs for g in groups):
        target = max(sum(costs[g] for g in groups) / (2 * jobs), MIN_BATCH_S)
        ks = {g: max(1, min(2 * jobs, round(costs[g] / target))) for g in groups}
    else:                                   # a group of typical seconds known: no batch much under MIN_BATCH_S
        even = max(1, -(-jobs // len(groups)))
        ks = {g: max(1, min(even, round(TYPICAL_S[g] / MIN_BATCH_S))) if g in TYPICAL_S else even for g in groups}
    order = sorted(groups, key=lambda g: -costs.get(g, TYPICAL_S.get(g, math.inf)))
    return [(g, f"{i}/{ks[g]}" if ks[g] > 1 else None) for g in order for i in range(1, ks[g] + 1)]


def _describe(rc: int) -> str:
    if rc < 0:
        try:
            return f"signal {signal.Signals(-rc).name}"
        except ValueError:
            return f"signal {-rc}"
    return f"exit code {rc}"


def _jobs(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"-j takes a whole number of workers >= 1, got {text!r}")
    return n


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("-b", "--backend", action="append",
                   help="a backend to check (repeatable; default: every registered backend)")
    p.add_argument("--device", choices=["cpu", "cuda"], help="the device of every backend (default: the best one)")
    p.add_argument("-k", help="pytest -k expression, e.g. 'conv2d and float32'")
    p.add_argument("--timeout", type=float, default=TIMEOUT_S, help="seconds one check may take (default 120)")
    p.add_argument("--resume", action="store_true",
                   help="continue the folder's last run (it must have had the same -b, -k, --device and spec)")
    p.add_argument("--reports", type=Path, default=REPORTS,
                   help="folder for results.json, results.jsonl, junit.xml and index.html (default: reports)")
    p.add_argument(
        "--spec",
        type=Path,
        help="spec file to check against (default: the repository's spec/concepts.yaml); the report reads it too",
    )
    p.add_argument("--shard", metavar="I/N", help="run shard I of N, a deterministic share of the selected checks; "
                   "`nutshell report` merges the N results files into one")
    p.add_argument("--durations", type=Path, metavar="RESULTS_JSON",
                   help="balance the shards (--shard) and the -j batches by the check times of this earlier "
                        "results.json (default for -j: the reports folder's own, when it has one)")
    p.add_argument("-j", "--jobs", type=_jobs, default=os.cpu_count() or 1, metavar="N",
                   help="worker processes at once (default: the number of cores, here %(default)s): backends "
                        "side by side, each split in batches when there are more jobs than backends")
    loud = p.add_mutually_exclusive_group()
    loud.add_argument("-q", "--quiet", action="store_true", help="print only the counts and the ids that failed")
    loud.add_argument("-v", "--verbose", action="store_true", help="print a line for every check at the end")


def run(args: argparse.Namespace) -> int:
    """The conformance suite, each backend in its own worker process, then the failures with their
    rerun commands, the summary table and the glossary's claims."""
    from nutshell.conformance.report import write_from_reports_dir

    if args.shard is not None:
        shards.parse(args.shard)
    elif args.durations is not None and args.jobs <= 1:
        raise SpecError("--durations balances shards and -j batches: give --shard I/N or -j N (N > 1) with it")
    opts = Options(backends=args.backend, device=args.device, k=args.k, reports=args.reports, timeout=args.timeout,
                   resume=args.resume, quiet=args.quiet, spec=args.spec, verbose=args.verbose,
                   shard=args.shard, durations=args.durations, jobs=args.jobs)
    r = Runner(opts)
    try:
        code = r.run()
    except NothingSelected as exc:
        print(f"nutshell: {exc}", file=sys.stderr)
        return NO_TESTS
    if r.stopped:
        return code
    print()
    for line in outcome_lines(r.records, -1 if opts.quiet else 1 if opts.verbose else 0):
        print(line)
    report = write_from_reports_dir(opts.reports, args.spec)
    sys.stdout.flush()   # what came before, before the reasons, in a log that holds both streams
    for name in opts.backends or []:   # a requested backend that did not run (exit status 1): why
        if name in r.header["unavailable"]:
            print(f"nutshell: backend {name!r} unavailable: {r.header['unavailable'][name]}", file=sys.stderr,
                  flush=True)
    if opts.quiet:
        return code
    print()
    summary_table(r.records, r.header["unavailable"]).show()
    problems = spec_problems(summarize(r.records))
    if problems:
        print(problems)
    claims = claims_table(r.records)
    if claims is not None:
        print()
        claims.show()
    print(f"results: {opts.reports / 'results.json'}  junit: {opts.reports / 'junit.xml'}  report: {report}")
    return code


_WORDS = {Outcome.PASS: "PASSED", Outcome.FAIL: "FAILED", Outcome.ERROR: "ERROR", Outcome.UNSUPPORTED: "UNSUPPORTED"}
_COUNTED = {Outcome.PASS: "passed", Outcome.FAIL: "failed", Outcome.ERROR: "error", Outcome.UNSUPPORTED: "unsupported"}
MESSAGE_CHARS = 240


def outcome_lines(records: list[CheckResult], verbosity: int = 0) -> list[str]:
    """pytest's short summary for the run: every check that neither passed nor is unsupported,
    with the first line of its message and its rerun command (verbosity -1: the ids only; 1: a
    line for every check first), then the counts."""
    lines = [f"{_word(r)} {r.id}" for r in records] if verbosity > 0 else []
    bad = [r for r in records if r.outcome not in GOOD]
    if bad and verbosity >= 0:
        lines.append("short summary (failures and errors):")
    for r in bad:
        if verbosity < 0:
            lines.append(f"{_word(r)} {r.id}")
            continue
        first = next(iter((r.message or "").strip().splitlines()), "no message")
        lines.append(f"{_word(r)} {r.id} - {first[:MESSAGE_CHARS]}")
        lines += [f"  rerun: {r.rerun}"] if r.rerun else []
    return [*lines, counts_line(records)]


def _word(r: CheckResult) -> str:
    return _WORDS.get(r.outcome, str(r.outcome).upper())


def counts_line(records: list[CheckResult]) -> str:
    """The counts as pytest writes them: ``9 passed, 1 failed, 2 errors``."""
    counts = Counter(r.outcome for r in records)
    out = []
    for o in Outcome:
        n = counts[o]
        if n:
            plural = "s" if o is Outcome.ERROR and n > 1 else ""   # 1 error, 2 errors
            out.append(f"{n} {_COUNTED.get(o, str(o))}{plural}")
    return ", ".join(out) or "no checks"


def summary_table(records: list[CheckResult], unavailable: dict[str, str]) -> Table:
    """The records' summary table (:func:`~nutshell.conformance.results.summary_rows`)."""
    return summary_rows(summarize(records), unavailable)


def claims_table(records: list[CheckResult]) -> Table | None:
    """The glossary's claims with their measured numbers, one row per claim and backend."""
    claims = [r for r in records if r.check == "claim"]
    if not claims:
        return None
    from nutshell.conformance.claims import headline

    t = Table([Column("claim", 34), Column("backend", 7), Column("outcome", 5)], title="glossary claims:",
              indent=2, width=200, overflow="truncate", header=False)
    for r in sorted(claims, key=lambda r: (r.concept, r.backend)):
        numbers = headline(r.concept, r.details or {}) if r.outcome == "pass" else (r.message or "")
        t.row(r.concept, r.backend, r.outcome, span=numbers)
    return t
