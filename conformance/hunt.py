"""Search for inputs where a backend is wrong, crashes or hangs: a differential fuzzer against the
float64 reference under the spec's derived bounds.

Hypothesis draws valid calls from the whole attribute space of each concept (nutshell.conformance
.hunt_cases), forward and vjp, in rounds that take turns over concept, direction and dtype, every
other sweep climbing toward high bound usage (``hypothesis.target``), until the budget is spent.
Every call runs in a worker process of the backend's own; a result outside its bound, an exception
on a valid call, a crash or a hang is a finding. A finding is confirmed and minimised in fresh
processes and written as a reproducer bundle (see ``nutshell repro``); the hunt goes on with the
concepts that have none. Exit 1 when something was found, the last line naming the first bundle's
folder; 0 when the budget ran out clean. Either way the largest bound usage reached per concept
(with the call that reached it) and the findings go to reports/hunt.json, under the backend's name;
``nutshell report`` and ``nutshell run`` copy that file into the results.json of the same folder and
show it on the page.
``--save`` adds the minimised case to the spec as a vector of kind ``found``, so that every
backend is checked on it by ``nutshell run`` from then on.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from hypothesis import HealthCheck, Phase, given, seed, settings, target
from hypothesis.errors import Unsatisfiable

from nutshell import backends
from nutshell import spec as spec_mod
from nutshell.conformance import hunt_cases, repro
from nutshell.conformance.hunt_minimise import Minimiser, Verdict, judge
from nutshell.conformance.hunt_worker import Worker
from nutshell.conformance.results import HUNT_FILE, load_hunt
from nutshell.errors import AttrError, SpecError

ROUND = 200
"""Calls per Hypothesis round on one or two concepts (its first tenth are deliberately small calls);
a hunt over more concepts takes a quarter of that per round, so that a budget of minutes still
sweeps every concept, direction and dtype, and climbs in the next sweep."""
PROGRESS_S = 10.0
SCRIPT_REPEATS = 20
"""The least number of times a bundle's script repeats its call: it stops at the first failure, so
a bug that shows one call in three is all but certain to show, and a fixed one costs 20 calls."""
MINIMISE_S = 900.0
"""The most time spent confirming and minimising one finding, on top of the search budget."""


@dataclass
class Options:
    backend: str
    concepts: list[str] | None = None
    budget: float = 600.0           # seconds of search
    seed: int = 0
    save: bool = False
    device: str | None = None
    timeout: float = 60.0           # seconds one call may take before its worker is killed as hung
    reports: Path = Path("reports")


@dataclass
class Worst:
    """The largest bound usage a concept reached on calls that passed, the call (in words and as
    :meth:`hunt_cases.Case.to_json`, which rebuilds its inputs) and the passing calls counted."""

    usage: float = 0.0
    case: str = ""
    calls: int = 0
    call: dict | None = None


class _Found(BaseException):
    """Ends a Hypothesis round at a finding (BaseException: Hypothesis neither shrinks nor retries it)."""

    def __init__(self, verdict: Verdict):
        super().__init__(verdict.kind)
        self.verdict = verdict


class _Spent(BaseException):
    """Ends a Hypothesis round when the budget is spent."""


class _NothingLeft(Exception):
    """Every concept asked for has a finding: the hunt ends before its budget."""


@dataclass
class Hunt:
    opts: Options
    log: object = print
    worst: dict[str, Worst] = field(default_factory=dict)
    calls: int = 0
    seen: dict[str, float] = field(default_factory=dict)   # call (as JSON) -> its usage
    done: set[str] = field(default_factory=set)            # concepts with a confirmed finding: not searched again
    rounds_run: int = 0

    def __post_init__(self):
        self.spec = spec_mod.load()
        self.start = time.time()
        self.deadline = self.start + self.opts.budget
        self.worker = Worker(self.opts.backend, self.opts.device, self.opts.timeout)
        self.hello = self.worker.hello
        self.last_progress = self.start

    def dtypes(self, concept: str) -> tuple[str, ...]:
        """The dtypes the backend offers for ``concept`` (none when it does not implement it)."""
        table = self.hello["unsupported"].get(concept, {})
        return tuple(dt for dt, why in table.items() if why is None)

    def run(self) -> Verdict | None:
        """Rounds until the budget is spent (None) or a call fails (its verdict), going on from the
        last round after a finding, without the concepts in ``done``. Each round searches
        one concept in one direction and dtype, taken in turn (Hypothesis left to choose them
        draws the simplest, forward and the first dtype, three times in four); every other sweep
        over them climbs."""
        asked = self.opts.concepts or list(self.spec.concepts)
        rounds = [(c, mode, dt) for mode in ("vjp", "forward") for dt in ("float32", "float64") for c in asked
                  if dt in self.dtypes(c)]
        if not rounds:
            raise AttrError(f"backend {self.opts.backend} offers none of the concepts asked for",
                            argument="concept")
        for r in range(self.rounds_run, 10**9):
            concept, mode, dtype = rounds[r % len(rounds)]
            if {c for c, _, _ in rounds} <= self.done:
                raise _NothingLeft
            self.rounds_run = r + 1
            if concept in self.done:
                continue
            climb = (r // len(rounds)) % 2 == 1
            size = ROUND if len(asked) <= 2 else ROUND // 4
            try:
                self._round(self.spec.concept(concept), mode, dtype, self.opts.seed * 1_000_003 + r, climb, size)
            except _Found as found:
                return found.verdict
            except _Spent:
                return None
            except Unsatisfiable:
                continue
        return None

    def _round(self, concept: spec_mod.Concept, mode: str, dtype: str, round_seed: int, climb: bool,
               size: int) -> None:
        """One Hypothesis run of ``size`` calls; with ``climb``, its second half climbs toward high
        usage (``target``), else every call is a free draw: climbing stays near the calls that
        came close to their bound, which are not where a library's corner cases are."""
        phases = [Phase.generate, Phase.target] if climb else [Phase.generate]

        @seed(round_seed)
        @settings(max_examples=size, deadline=None, database=None, phases=phases,
                  suppress_health_check=list(HealthCheck), print_blob=False)
        @given(hunt_cases.cases(concept, mode, dtype))
        def prop(case: hunt_cases.Case) -> None:
            if time.time() > self.deadline:
                raise _Spent
            v = self.judge(concept, case)
            target(min(v.usage, 1e6))
            if v.kind is not None:
                raise _Found(v)

        prop()

    def judge(self, concept: spec_mod.Concept, case: hunt_cases.Case) -> Verdict:
        """The verdict on ``case``; a call already made is not made again (Hypothesis repeats
        itself, about one draw in three), its usage is remembered."""
        key = json.dumps(case.to_json(), sort_keys=True)
        if key in self.seen:
            return Verdict(case, self.seen[key])
        self.calls += 1
        v = judge(self.worker, concept, case, self.spec.tolerance, self.calls)
        if v.kind in ("crash", "hang"):
            self.worker = Worker(self.opts.backend, self.opts.device, self.opts.timeout)
        elif v.kind is None:
            self.seen[key] = v.usage
            w = self.worst.setdefault(concept.id, Worst())
            w.calls += 1
            if v.usage > w.usage:
                w.usage, w.case, w.call = v.usage, case.describe(), case.to_json()
        self._progress()
        return v

    def _progress(self) -> None:
        now = time.time()
        if now - self.last_progress < PROGRESS_S:
            return
        self.last_progress = now
        top = max(self.worst.items(), key=lambda kv: kv[1].usage, default=None)
        best = f"; worst usage {top[1].usage:.3g} ({top[0]})" if top else ""
        self.log(f"hunt {self.opts.backend}: {clock(now - self.start)}/{clock(self.opts.budget)}, "
                 f"{self.calls} calls{best}")

    def close(self) -> None:
        self.worker.close()


def clock(seconds: float) -> str:
    return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"


def repeats(v: Verdict) -> int:
    """Times a call is repeated to show a finding: three times for a wrong result or an exception
    (a library reading memory nobody wrote is wrong only now and then), as many times as the dead
    worker had run calls (at most 100) for a crash or a hang: heap damage adds up."""
    return 3 if v.kind in ("wrong", "raised") else max(3, min(len(v.history), 100))


def confirm(h: Hunt, v: Verdict) -> Verdict | None:
    """The finding confirmed in fresh processes and minimised (None when it does not come back)."""
    concept = h.spec.concept(v.case.concept)
    repeat = repeats(v)
    m = Minimiser(h.opts.backend, h.opts.device, concept, h.spec.tolerance, h.opts.timeout,
                  time.time() + MINIMISE_S, log=h.log)
    try:
        culprit = m.culprit(v, repeat)
        return None if culprit is None else m.shrink(culprit, repeat)
    finally:
        m.close()


def bundle(h: Hunt, v: Verdict, found_at: float, folder: Path, repeat: int) -> dict:
    """Write the finding's reproducer bundle; returns its summary."""
    concept = h.spec.concept(v.case.concept)
    details = (f"Found by `nutshell hunt -b {h.opts.backend} --seed {h.opts.seed}` after {found_at:.0f} s and "
               f"{h.calls} calls; minimised to {v.case.describe()}.\n\n" +
               (f"The worker's last stderr lines:\n\n```\n{v.stderr}\n```\n" if v.stderr else ""))
    b = repro.Bundle(h.opts.backend, h.hello["device"], v.case.concept, v.case.mode, v.case.dtype, v.case.attrs,
                     hunt_cases.data(concept, v.case), f"{v.kind}: {v.message}", v.kind,
                     versions=h.hello["versions"], repeat=repeat, details=details)
    return repro.write(b, folder, h.spec.tolerance, log=h.log)


def write_report(h: Hunt, result: dict) -> Path:
    """reports/hunt.json: per backend, the last hunt's figures, the worst usage per concept and the
    findings. The other backends' hunts stay; a hunt.json that is not one is replaced, with a warning."""
    path = h.opts.reports / HUNT_FILE
    doc = {"kind": "nutshell-hunt", "backends": {}}
    if path.is_file():
        try:
            doc = load_hunt(path)
        except SpecError as exc:
            h.log(f"hunt: {exc}; writing a new one")
    doc["backends"][h.opts.backend] = result | {
        "device": h.hello["device"], "versions": h.hello["versions"], "seed": h.opts.seed,
        "spec_version": h.spec.version,
        "budget_s": h.opts.budget, "calls": h.calls,
        "worst_usage": {c: vars(w) for c, w in sorted(h.worst.items())},
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
    return path


def hunt(opts: Options, log=print) -> int:
    """The whole command: search; confirm, minimise and bundle each finding, then go on with the
    concepts that have none until the budget is spent. 1 when something was found, else 0."""
    h = Hunt(opts, log)
    found: list[dict] = []
    try:
        while (v := h.run()) is not None:
            found_at = time.time() - h.start
            log(f"hunt: {v.kind} after {found_at:.0f} s ({h.calls} calls) on {v.case.describe()}: {v.message[:300]}")
            small = confirm(h, v)
            if small is None:
                log("hunt: not confirmed in a fresh process; searching on")
                continue
            found.append(_finding(h, small, found_at, max(repeats(v), SCRIPT_REPEATS)))
            h.done.add(v.case.concept)
    except _NothingLeft:
        pass
    finally:
        h.close()
    write_report(h, {"found": found, "elapsed_s": time.time() - h.start})
    _worst_lines(h, log)
    if not found:
        print(f"nutshell hunt: {h.calls} calls in {clock(time.time() - h.start)}, nothing found on {opts.backend}")
        return 0
    for f in found[1:]:
        print(f"nutshell hunt: also {f['kind']} in {f['case']['concept']}; bundle: {f['bundle']}")
    first = found[0]
    print(f"nutshell hunt: {first['kind']} found on {opts.backend} in {first['case']['concept']} after "
          f"{first['first_found_s']:.0f} s; bundle: {first['bundle']}")
    return 1


def _finding(h: Hunt, v: Verdict, found_at: float, repeat: int) -> dict:
    """Bundle a confirmed finding (and, with --save, add it to the spec); its record for hunt.json."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
    folder = h.opts.reports / "hunt" / f"{h.opts.backend}-{v.case.concept}-{v.kind}-{stamp}"
    summary = bundle(h, v, found_at, folder, repeat)
    if h.opts.save:
        from nutshell.spec import generate

        concept = h.spec.concept(v.case.concept)
        note = f"nutshell hunt found {h.opts.backend} {v.kind} here: {v.message.split(';')[0][:160]}"
        name = generate.add_found(concept, v.case.vector(concept), provenance(h), note)
        h.log(f"hunt: saved as spec vector {v.case.concept}/{name} (kind found)")
    h.log(f"hunt: fault in {summary['library'] or 'the backend' + chr(39) + 's own code'}; "
          f"script {'fails' if summary['script_fails'] else 'did not fail'} here; bundle: {folder}")
    usage = v.usage if math.isfinite(v.usage) else None     # a crash, a hang or an exception has none
    return {"kind": v.kind, "case": v.case.to_json(), "usage": usage, "message": v.message[:2000],
            "first_found_s": found_at, "bundle": str(folder), **summary}


def provenance(h: Hunt) -> dict:
    """Where a found vector came from: the backend, its library's version, the date, the seed."""
    lib = repro.LIBRARY.get(h.opts.backend, "numpy")
    return {"backend": h.opts.backend, "library": lib, "version": h.hello["versions"].get(lib, "?"),
            "date": datetime.now(timezone.utc).date().isoformat(), "seed": h.opts.seed}


def _worst_lines(h: Hunt, log) -> None:
    for c, w in sorted(h.worst.items()):
        log(f"  {c:<22} worst usage {w.usage:.3g} over {w.calls} passing calls  {w.case}")


BUDGET = re.compile(r"^(\d+(?:\.\d+)?)\s*([smh]?)$")


def budget(text: str) -> float:
    """'90', '90s', '10m', '1.5h' -> seconds."""
    m = BUDGET.match(text.strip())
    if not m or float(m.group(1)) <= 0:
        raise argparse.ArgumentTypeError(f"--budget takes a duration such as 90s, 10m or 1h, got {text!r}")
    return float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[m.group(2)]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("-b", "--backend", required=True, help="the backend to hunt on")
    p.add_argument("--concept", action="append", help="a concept to hunt in (repeatable; default: every one)")
    p.add_argument("--budget", type=budget, default=600.0, help="search time, e.g. 90s, 10m, 1h (default 10m)")
    p.add_argument("--seed", type=int, default=0, help="the search's seed (default 0)")
    p.add_argument("--save", action="store_true", help="add the minimised case to the spec as a 'found' vector")
    p.add_argument("--device", choices=["cpu", "cuda"], help="the backend's device (default: the best one)")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds one call may take (default 60)")
    p.add_argument("--reports", type=Path, default=Path("reports"), help="where hunt.json and bundles go")


def run(args: argparse.Namespace) -> int:
    backends.check_names([args.backend])
    if args.concept:
        spec_mod.check_names(args.concept, spec_mod.load().concepts)
    opts = Options(args.backend, args.concept, args.budget, args.seed, args.save, args.device, args.timeout,
                   args.reports)
    return hunt(opts, log=lambda line: print(line, file=sys.stderr, flush=True))

