"""``nutshell run``: the conformance suite with every backend in its own worker process.

Each group (one per backend, plus ``cross`` for the checks that span backends) runs as a pytest
worker that reports a start event and a record per check on a JSON-lines pipe file. When a worker
dies (segmentation fault, abort, out-of-memory kill) or a check runs past the timeout, the runner
records that check as ``error`` (crash) or ``timeout``, leaves it out and starts the worker again,
so the rest of that backend and the other backends still run. Records go to
``reports/results.jsonl`` as they arrive and ``reports/results.json`` is replaced atomically, so
an interrupted run leaves valid files and ``--resume`` continues from them.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from nutshell import backends
from nutshell import spec as spec_mod
from nutshell.conformance.results import CheckResult, Outcome, ResultsWriter, Section, rerun_command, write_junit

POLL_S = 0.2
REPORTS = Path("reports")


@dataclass
class Options:
    backends: list[str] | None
    device: str | None = None
    k: str | None = None
    reports: Path = Path("reports")
    timeout: float = 120.0
    resume: bool = False
    quiet: bool = False
    spec: Path | None = None  # the spec file every worker checks against (None: the repository's)


@dataclass
class Worker:
    group: str
    events: Path
    proc: subprocess.Popen | None = None
    offset: int = 0
    started: dict = field(default_factory=dict)  # check id -> its start event, for the check running now
    header: dict = field(default_factory=dict)  # the worker's: the backends it loaded, those it could not


def suite_file() -> Path:
    from nutshell import conformance

    return Path(conformance.__file__).parent / "spec.nutshell"


def _argv(opts: Options, w: Worker, skip: Path) -> list[str]:
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
        "--no-nutshell-summary",
        f"--nutshell-group={w.group}",
        f"--events={w.events}",
        f"--skip-ids={skip}",
    ]
    for b in opts.backends or []:
        argv += ["--backend", b]
    if opts.device:
        argv += ["--nutshell-device", opts.device]
    if opts.k:
        argv += ["-k", opts.k]
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


class Runner:
    def __init__(self, opts: Options):
        self.opts = opts
        self.reports = opts.reports
        self.parts = self.reports / "parts"
        self.parts.mkdir(parents=True, exist_ok=True)
        previous = self._previous() if opts.resume else []
        self.done = {r.id for r in previous}
        s = spec_mod.load(opts.spec)
        self.writer = ResultsWriter(
            self.reports / "results.json",
            {"spec_version": s.version, "backends": {}, "unavailable": {}},
            records=previous,
        )

    def _previous(self) -> list[CheckResult]:
        lines = self.reports / "results.jsonl"
        if not lines.is_file():
            return []
        out = []
        for i, line in enumerate(lines.read_text().splitlines()):
            try:
                d = json.loads(line)
            except json.JSONDecodeError:
                break  # a line cut short by the interruption: everything before it is good
            out.append(CheckResult.from_json(d, f"{lines}: line {i + 1}"))
        return out

    def groups(self) -> list[str]:
        names = self.opts.backends or backends.names()
        return [*names, "cross"]

    def run(self) -> int:
        for group in self.groups():
            self._run_group(group)
        self.writer.flush(final=True)
        write_junit(self.writer.records, self.reports / "junit.xml")
        bad = any(r.outcome in (Outcome.FAIL, Outcome.ERROR) for r in self.writer.records)
        explicit_missing = self.opts.backends and any(
            n in self.writer.header["unavailable"] for n in self.opts.backends
        )
        return 1 if bad or explicit_missing else 0

    def _run_group(self, group: str) -> None:
        w = Worker(group, self.parts / f"{group}.jsonl")
        w.events.write_text("")
        skip = self.parts / f"{group}.skip"
        while True:
            skip.write_text("\n".join(sorted(self.done)))
            w.proc = subprocess.Popen(
                _argv(self.opts, w, skip),
                stdout=None if not self.opts.quiet else subprocess.DEVNULL,
                start_new_session=True,
            )
            interrupted = self._watch(w)
            if interrupted is None:
                return

    def _watch(self, w: Worker) -> str | None:
        """Follow a worker until it ends; returns the id of a check it crashed or hung on."""
        while True:
            self._consume(w)
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
                    why = f"worker died ({_describe(rc)}) while running this check"
                    self._interrupted(w, cid, "error", why)
                    return cid
                if rc not in (0, 1, 5):
                    self._interrupted(
                        w, f"{w.group}[worker]", "error", f"the worker stopped with {_describe(rc)} outside any check"
                    )
                return None
            time.sleep(POLL_S)

    def _consume(self, w: Worker) -> None:
        for ev in _read_events(w):
            kind = ev.pop("event")
            if kind == "header":
                w.header = ev
                self._merge_header(ev)
            elif kind == "start":
                w.started = {ev["id"]: ev}
            elif kind == "record":
                w.started.pop(ev["id"], None)
                self._add(CheckResult.from_json(ev, f"{w.events}: record"))

    def _merge_header(self, h: dict) -> None:
        hdr = self.writer.header
        hdr["backends"].update(h.get("backends", {}))
        hdr["unavailable"].update(h.get("unavailable", {}))

    def _add(self, record: CheckResult) -> None:
        if record.id not in self.done:
            self.done.add(record.id)
            self.writer.add(record)

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
        if not self.opts.quiet:
            print(f"\n[nutshell] {w.group}: {cid}: {why}", flush=True)

    @staticmethod
    def _kill(w: Worker) -> None:
        try:
            os.killpg(w.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        w.proc.wait()


def _describe(rc: int) -> str:
    if rc < 0:
        try:
            return f"signal {signal.Signals(-rc).name}"
        except ValueError:
            return f"signal {-rc}"
    return f"exit code {rc}"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("-b", "--backend", action="append")
    p.add_argument("--device", choices=["cpu", "cuda"])
    p.add_argument("-k", help="pytest -k expression, e.g. 'conv2d and float32'")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds one check may take (default 120)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run from reports/results.jsonl")
    p.add_argument(
        "--spec",
        type=Path,
        help="spec file to check against (default: the repository's spec/concepts.yaml); the report reads it too",
    )


def run(args: argparse.Namespace) -> int:
    """The conformance suite, each backend in its own worker process, then the summary table."""
    from nutshell.conformance.report import write_from_reports_dir
    from nutshell.conformance.results import summarize, summary_table

    opts = Options(
        backends=args.backend,
        device=args.device,
        k=args.k,
        reports=REPORTS,
        timeout=args.timeout,
        resume=args.resume,
        spec=args.spec,
    )
    r = Runner(opts)
    code = r.run()
    doc = r.writer
    print()
    print(summary_table(summarize(doc.records), doc.header["unavailable"]))
    for line in _claim_lines(doc.records):
        print(line)
    print(f"results: {doc.path}  junit: {REPORTS / 'junit.xml'}  report: {write_from_reports_dir(REPORTS, args.spec)}")
    return code


def _claim_lines(records: list[CheckResult]) -> list[str]:
    """The glossary's claims with their measured numbers, one line per claim and backend."""
    claims = [r for r in records if r.check == "claim"]
    if not claims:
        return []
    from nutshell.conformance.claims import headline

    lines = ["", "glossary claims:"]
    for r in sorted(claims, key=lambda r: (r.concept, r.backend)):
        numbers = headline(r.concept, r.details or {}) if r.outcome == "pass" else (r.message or "")
        lines.append(f"  {r.concept:<34} {r.backend:<7} {r.outcome:<5} {numbers}"[:200])
    return lines
