"""List the regressions between two results.json files, or between two bench.json files.

A regression is a check that passed before and does not now; a check that ran before and is
missing from the new file (it stopped running: listed by id, the first 20 of them, then a count);
a bound usage that grew by more than --usage-growth (relative; growth under 0.01 of the bound is
noise and ignored); a benchmark whose median got more than --slowdown slower; a benchmark that was
measured before and is not now (it failed, or is missing from the new file).

Exit status 1 when there is any regression; 0 when there is none and at least one check (or
measurement) is in both files; 2 when the files cannot be compared: not nutshell results files
(not regular files, over 256 MiB, or a field of the wrong type), one of each kind, or nothing in
common.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path

from nutshell.conformance.results import BenchOutcome, BenchResult, FileKind, Outcome, load
from nutshell.errors import SpecError

USAGE_FLOOR = 0.01          # usage changes smaller than this are rounding, not regressions
SHOWN = 20                  # lost checks listed by id; the rest are counted


@dataclass
class Comparison:
    """What changed between two files: the regressions of what both hold, what the new one lost."""

    compared: int                                     # checks (or measurements) in both files
    regressions: list[str] = field(default_factory=list)   # one line per check that got worse
    lost: list[str] = field(default_factory=list)     # the ids of what ran before and does not now
    notes: list[str] = field(default_factory=list)

    @property
    def count(self) -> int:
        return len(self.regressions) + len(self.lost)

    def lines(self) -> list[str]:
        """The regressions, the lost ones by id up to :data:`SHOWN`, then their count."""
        out = [*self.regressions, *(f"no longer run    {name}" for name in self.lost[:SHOWN])]
        if len(self.lost) > SHOWN:
            out.append(f"... and {len(self.lost) - SHOWN} more no longer run")
        return out


def compare_results(old: dict, new: dict, usage_growth: float) -> Comparison:
    """The regressions between two results documents, matched by check id."""
    before = {r.id: r for r in old["results"]}
    after = {r.id: r for r in new["results"]}
    both = sorted(before.keys() & after.keys())
    out = Comparison(len(both), lost=sorted(before.keys() - after.keys()))
    fixed = 0
    for rid in both:
        a, b = before[rid], after[rid]
        if a.outcome is Outcome.PASS and b.outcome is not Outcome.PASS:
            why = f": {b.message}" if b.message else ""
            out.regressions.append(f"stopped passing  {rid}: pass -> {b.outcome}{why}")
        elif a.outcome is Outcome.PASS and _grew(a.usage, b.usage, usage_growth):
            factor = f" (x{b.usage / a.usage:.2f})" if a.usage else ""
            out.regressions.append(f"usage grew       {rid}: {a.usage:.3g} -> {b.usage:.3g}{factor}")
        fixed += a.outcome is not Outcome.PASS and b.outcome is Outcome.PASS
    out.notes = [f"{len(both)} checks compared", f"{fixed} now pass that did not",
                 f"{len(after.keys() - before.keys())} new", f"{len(out.lost)} no longer run"]
    return out


def _grew(old: float | None, new: float | None, growth: float) -> bool:
    if old is None or new is None:
        return False
    return new - old > USAGE_FLOOR and new > old * (1 + growth)


def _bench_key(r: BenchResult) -> tuple:
    return r.backend, r.device, r.concept, r.size, r.direction, r.dtype


def _bench_name(key: tuple) -> str:
    return " ".join(str(k) for k in (key[0], key[2], key[3], key[4]))


def compare_bench(old: dict, new: dict, slowdown: float) -> Comparison:
    """The regressions between two bench documents, matched by backend, device, concept, size,
    direction and dtype."""
    before = {_bench_key(r): r for r in old["results"]}
    after = {_bench_key(r): r for r in new["results"]}
    both = sorted(before.keys() & after.keys(), key=str)
    gone = sorted(before.keys() - after.keys(), key=str)
    out = Comparison(len(both), lost=[_bench_name(k) for k in gone if before[k].outcome is BenchOutcome.OK])
    faster = 0
    for key in both:
        a, b = before[key], after[key]
        if a.outcome is BenchOutcome.OK and b.outcome is not BenchOutcome.OK:
            out.regressions.append(f"stopped running  {_bench_name(key)}: {b.outcome}: {b.message or ''}")
        elif a.outcome is BenchOutcome.OK:
            ta, tb = a.time["median_s"], b.time["median_s"]
            if tb > ta * (1 + slowdown):
                out.regressions.append(f"slower           {_bench_name(key)}: {1e3 * ta:.3g} ms -> {1e3 * tb:.3g} ms "
                                       f"(+{100 * (tb / ta - 1):.0f}%)")
            faster += tb * (1 + slowdown) < ta
    out.notes = [f"{len(both)} measurements compared", f"{faster} got faster",
                 f"{len(after.keys() - before.keys())} new", f"{len(gone)} no longer run"]
    if old.get("devices") != new.get("devices"):
        out.notes.append(f"different devices: {old.get('devices')} vs {new.get('devices')}")
    return out


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("old", type=Path, help="the earlier results.json or bench.json")
    p.add_argument("new", type=Path, help="the later file of the same kind")
    p.add_argument("--slowdown", type=float, default=0.10,
                   help="a benchmark this much slower is a regression (default 0.10: 10%%)")
    p.add_argument("--usage-growth", type=float, default=0.10,
                   help="a bound usage this much larger is a regression (default 0.10: 10%%)")


def run(args: argparse.Namespace) -> int:
    old, new = load(args.old), load(args.new)
    if old["kind"] != new["kind"]:
        raise SpecError(f"{args.old} is a {old['kind']} file, {args.new} a {new['kind']} file: not the same kind "
                        "of file; compare two results.json or two bench.json")
    if old["kind"] == FileKind.BENCH.value:
        found = compare_bench(old, new, args.slowdown)
    else:
        found = compare_results(old, new, args.usage_growth)
    if old["spec_version"] != new["spec_version"]:
        found.notes.append(f"spec {old['spec_version']} -> {new['spec_version']}")
    print(f"{args.old} -> {args.new}: " + ", ".join(found.notes))
    if found.count:
        print(f"{found.count} regression(s):")
        for line in found.lines():
            print(f"  {line}")
        return 1
    if not found.compared:
        raise SpecError(f"nothing to compare: no check or measurement is in both {args.old} and {args.new}")
    print("no regressions")
    return 0
