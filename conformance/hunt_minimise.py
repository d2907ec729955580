"""Judging one call against the float64 reference, and shrinking a failing call to a small one.

:func:`judge` runs a :class:`~nutshell.conformance.hunt_cases.Case` in a worker and compares
every output (forward) or gradient (vjp) with the reference's golden under the spec's derived
bound, through the conformance checks' own comparison (``checks._compare_all``): usage is
max |actual − golden| / bound, a finding when it exceeds 1, when the backend raises on a valid
call, or when its worker crashes or hangs.

A crash proves little about the call that died: a corrupted heap is noticed by whichever
allocation comes next. :class:`Minimiser` therefore trusts nothing it has not seen again in a
fresh process. It first finds a culprit (the dying call alone, repeated; else the smallest part
of the dead worker's history that still kills a fresh worker, by delta debugging), then walks to
ever simpler neighbours (``hunt_cases.neighbours``) in a running worker, confirming the case it
reached in a fresh worker every few steps and at the end (a step that is not confirmed is undone).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from nutshell import spec as spec_mod
from nutshell.conformance import checks, hunt_cases
from nutshell.conformance.hunt_cases import Case
from nutshell.conformance.hunt_worker import Died, Request, Worker

HISTORY = 120
"""The most calls of a dead worker's history that are replayed to find the culprit."""
CONFIRM_EVERY = 8
"""Minimisation steps taken in a running worker between two confirmations in a fresh one."""


@dataclass
class Verdict:
    """How one call went: ``kind`` None (within bound), "wrong", "raised", "crash" or "hang"."""

    case: Case
    usage: float = 0.0
    kind: str | None = None
    message: str = ""
    stderr: str = ""
    history: list[Case] = field(default_factory=list)


def judge(worker: Worker, concept: spec_mod.Concept, case: Case, tol: dict, request_id: int = 0) -> Verdict:
    """Run ``case`` in ``worker`` and compare it with the reference (see the module docstring)."""
    data = hunt_cases.data(concept, case)
    if hunt_cases.ambiguous(case, data, tol):
        return Verdict(case, 0.0, None, "not run: rounding decides a winner or a kink")
    split = checks._split
    inputs = checks.cast(split(data, "in."), concept, case.dtype)
    cots = {k: v.astype(case.dtype) for k, v in split(data, "cot.").items()}
    reply = worker.call(Request(request_id, case.concept, case.mode, inputs, case.attrs, cots), tag=case)
    if isinstance(reply, Died):
        return Verdict(case, float("inf"), reply.how, f"worker {reply.how} ({reply.signal})", reply.stderr,
                       list(reply.history))
    if reply.raised is not None:
        return Verdict(case, float("inf"), "raised", f"a valid call raised {reply.raised}")
    gold, what = ("grad.", "gradient") if case.mode == "vjp" else ("out.", "output")
    err = "gerr." if case.mode == "vjp" else "err."
    try:
        rec = checks._compare_all(reply.out, split(data, gold), split(data, err), case.dtype, tol, what,
                                  underflows=split(data, err[:-1] + "_f."))
    except checks.CheckFailed as exc:
        return Verdict(case, float(exc.record["usage"]), "wrong", str(exc))
    return Verdict(case, rec.usage)


def _distinct(cases) -> list[Case]:
    """Each case once, in order (cases hold dicts: not hashable)."""
    out: list[Case] = []
    for c in cases:
        if c not in out:
            out.append(c)
    return out


class Minimiser:
    """Confirm a finding in fresh processes and shrink it (see the module docstring)."""

    def __init__(self, backend: str, device: str | None, concept: spec_mod.Concept, tol: dict,
                 timeout: float, deadline: float, log=print):
        self.backend, self.device, self.concept, self.tol = backend, device, concept, tol
        self.timeout, self.deadline, self.log = timeout, deadline, log
        self.fresh_runs = 0
        self.refuted: list[Case] = []   # cases that failed in a running worker but not in a fresh one
        self._worker: Worker | None = None

    def replay(self, calls: list[Case], repeat: int = 1, fresh: bool = True) -> Verdict | None:
        """Run ``calls`` in order ``repeat`` times (in a fresh worker unless ``fresh`` is False);
        the first failing verdict, or None."""
        worker = self._fresh() if fresh else self._running()
        try:
            for _ in range(repeat):
                for i, case in enumerate(calls):
                    v = judge(worker, self.concept, case, self.tol, i)
                    if v.kind is not None:
                        return v
            return None
        finally:
            if fresh:
                worker.close()

    def culprit(self, found: Verdict, repeat: int) -> Verdict | None:
        """The one call that fails alone in a fresh worker, repeated ``repeat`` times; else the
        smallest failing part of the history (its last call's verdict); None when nothing fails again."""
        alone = self.replay([found.case], repeat)
        if alone is not None:
            return alone
        history = found.history[-HISTORY:] or [found.case]
        if self.replay(history) is None:
            self.log("hunt: the failing history does not fail again in a fresh process")
            return None
        part = self._ddmin(history)
        for case in _distinct(reversed(part)):   # the last first
            alone = self.replay([case], repeat)
            if alone is not None:
                return alone
        return self.replay(part)

    def shrink(self, v: Verdict, repeat: int) -> Verdict:
        """Walk to simpler neighbours while they still fail in a running worker. Every
        CONFIRM_EVERY steps, and at the end, the case reached must fail again in a fresh worker;
        when it does not, the walk goes back to the last confirmed case, leaves that candidate
        out, and from then on confirms every step."""
        confirmed = current = v
        every, pending = CONFIRM_EVERY, 0
        while time.time() < self.deadline:
            nxt = self._simpler(current, repeat)
            if nxt is not None:
                current, pending = nxt, pending + 1
                if pending < every:
                    continue
            if pending:
                again, pending = self.replay([current.case], repeat), 0
                if again is None:
                    self.refuted.append(current.case)
                    current, every = confirmed, 1
                    continue
                confirmed = current = again
                self.log(f"hunt: minimised to {confirmed.case.describe()}")
            if nxt is None:
                break
        self.close()
        return confirmed

    def _simpler(self, v: Verdict, repeat: int) -> Verdict | None:
        """The first neighbour of ``v`` that fails in the running worker (never a refuted one)."""
        for cand in hunt_cases.neighbours(self.concept, v.case):
            if cand not in self.refuted:
                failed = self.replay([cand], repeat, fresh=False)
                if failed is not None:
                    return failed
        return None

    def _ddmin(self, calls: list[Case]) -> list[Case]:
        """Zeller's delta debugging over a call sequence: drop chunks while a fresh worker still fails."""
        n = 2
        while len(calls) >= 2 and time.time() < self.deadline:
            size = max(1, len(calls) // n)
            chunks = [calls[i:i + size] for i in range(0, len(calls), size)]
            for i in range(len(chunks)):
                rest = [c for j, ch in enumerate(chunks) if j != i for c in ch]
                if rest and self.replay(rest) is not None:
                    calls, n = rest, max(n - 1, 2)
                    break
            else:
                if n >= len(calls):
                    break
                n = min(len(calls), 2 * n)
        return calls

    def _fresh(self) -> Worker:
        self.fresh_runs += 1
        return Worker(self.backend, self.device, self.timeout)

    def _running(self) -> Worker:
        """The worker the walk runs its candidates in; a new one after a crash or a hang."""
        if self._worker is None or self._worker.proc.poll() is not None:
            self.close()
            self._worker = Worker(self.backend, self.device, self.timeout)
        return self._worker

    def close(self) -> None:
        if self._worker is not None:
            self._worker.close()
            self._worker = None
