"""List the regressions between two results.json files, or between two bench.json files.

A regression is a check that passed before and does not now; a check that ran before and is
missing from the new file (it stopped running: listed by id, the first 20 of them, then a count);
a bound usage that grew by more than --usage-growth (relative; growth under 0.01 of the bound is
noise and ignored); a benchmark whose median got more than --slowdown slower, beyond the two runs'
spread; a benchmark that was measured before and is not now (it failed, or is missing from the new
file).

A benchmark's spread is its interquartile range [q25, q75] (see nutshell.conformance.timing). A
median more than --slowdown slower is a regression only when the two runs' ranges do not overlap
and both figures are steady (at least 5 rounds, an IQR at most 10% of the median); otherwise it is
listed, and not counted, as "within noise" (the ranges overlap) or "unsteady" (one figure rests on
too few rounds or too wide a spread to be trusted: a "± 0 %" of three rounds says nothing). A
record that states no quartiles or rounds (a file from before the bench recorded them) is judged
by its median alone. A bench that ran on a loaded machine is named in the notes.

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
from nutshell.conformance.tables import Column, Table
from nutshell.conformance.timing import unsteady
from nutshell.errors import SpecError

USAGE_FLOOR = 0.01          # usage changes smaller than this are rounding, not regressions
SHOWN = 20                  # lost checks listed by id; the rest are counted


@dataclass
class Comparison:
    """What changed between two files: the regressions of what both hold, what the new one lost."""

    compared: int                                     # checks (or measurements) in both files
    regressions: list[tuple[str, str]] = field(default_factory=list)   # (how, what) per check that got worse
    lost: list[str] = field(default_factory=list)     # the ids of what ran before and does not now
    notes: list[str] = field(default_factory=list)
    noise: list[tuple[str, str]] = field(default_factory=list)   # slowdowns the spread cannot tell from noise

    @property
    def count(self) -> int:
        return len(self.regressions) + len(self.lost)

    def rows(self) -> list[tuple[str, str]]:
        """(how, what): the regressions, then the lost ones by id up to :data:`SHOWN`."""
        return [*self.regressions, *(("no longer run", name) for name in self.lost[:SHOWN])]

    def more(self) -> str | None:
        """How many lost ones :meth:`rows` leaves out, if any."""
        return f"... and {len(self.lost) - SHOWN} more no longer run" if len(self.lost) > SHOWN else None


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
            out.regressions.append(("stopped passing", f"{rid}: pass -> {b.outcome}{why}"))
        elif a.outcome is Outcome.PASS and _grew(a.usage, b.usage, usage_growth):
            factor = f" (x{b.usage / a.usage:.2f})" if a.usage else ""
            out.regressions.append(("usage grew", f"{rid}: {a.usage:.3g} -> {b.usage:.3g}{factor}"))
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


def interval(time: dict) -> tuple[float, float]:
    """A figure's interquartile range [q25, q75]; the median alone when it states no quartiles."""
    return time.get("q25_s", time["median_s"]), time.get("q75_s", time["median_s"])


def judge(old: dict, new: dict, slowdown: float) -> str | None:
    """How a figure moved from the ``old`` time to the ``new`` (bench.json ``time`` dicts): None
    when its median moved less than ``slowdown`` either way, else "slower" or "faster" when the
    interquartile ranges are apart and both figures steady, "within noise" when the ranges overlap,
    "unsteady" when one figure cannot be trusted."""
    ta, tb = old["median_s"], new["median_s"]
    if tb <= ta * (1 + slowdown) and ta <= tb * (1 + slowdown):
        return None
    (a25, a75), (b25, b75) = interval(old), interval(new)
    if a25 <= b75 and b25 <= a75:
        return "within noise"
    if unsteady(old) or unsteady(new):
        return "unsteady"
    return "slower" if tb > ta else "faster"


def _spread(time: dict) -> str:
    """"0.25–0.31 ms, 52 rounds" (what is known of a figure's spread)."""
    lo, hi = interval(time)
    rounds = f", {time['samples']} rounds" if "samples" in time else ""
    return f"{1e3 * lo:.3g}–{1e3 * hi:.3g} ms{rounds}"


def _change(key: tuple, a: dict, b: dict) -> str:
    ta, tb = a["median_s"], b["median_s"]
    return (f"{_bench_name(key)}: {1e3 * ta:.3g} ms -> {1e3 * tb:.3g} ms (+{100 * (tb / ta - 1):.0f}%; "
            f"IQR {_spread(a)} -> {_spread(b)})")


def compare_bench(old: dict, new: dict, slowdown: float) -> Comparison:
    """The regressions between two bench documents, matched by backend, device, concept, size,
    direction and dtype; a slowdown inside the runs' spread goes to ``noise``."""
    before = {_bench_key(r): r for r in old["results"]}
    after = {_bench_key(r): r for r in new["results"]}
    both = sorted(before.keys() & after.keys(), key=str)
    gone = sorted(before.keys() - after.keys(), key=str)
    out = Comparison(len(both), lost=[_bench_name(k) for k in gone if before[k].outcome is BenchOutcome.OK])
    faster = 0
    for key in both:
        a, b = before[key], after[key]
        if a.outcome is BenchOutcome.OK and b.outcome is not BenchOutcome.OK:
            out.regressions.append(("stopped running", f"{_bench_name(key)}: {b.outcome}: {b.message or ''}"))
        elif a.outcome is BenchOutcome.OK:
            verdict = judge(a.time, b.time, slowdown)
            if verdict == "slower":
                out.regressions.append(("slower", _change(key, a.time, b.time)))
            elif verdict in ("within noise", "unsteady") and b.time["median_s"] > a.time["median_s"]:
                out.noise.append((verdict, _change(key, a.time, b.time)))
            faster += verdict == "faster"
    out.notes = [f"{len(both)} measurements compared", f"{faster} got faster",
                 f"{len(after.keys() - before.keys())} new", f"{len(gone)} no longer run",
                 f"{len(out.noise)} slower within noise"]
    if old.get("devices") != new.get("devices"):
        out.notes.append(f"different devices: {old.get('devices')} vs {new.get('devices')}")
    out.notes += [f"{which} bench ran on a loaded machine ({doc['load']['others']:.1f} of {doc['load']['cores']} "
                  "cores taken by other processes)" for which, doc in (("the old", old), ("the new", new))
                  if (doc.get("load") or {}).get("loaded")]
    return out


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("old", type=Path, help="the earlier results.json or bench.json")
    p.add_argument("new", type=Path, help="the later file of the same kind")
    p.add_argument("--slowdown", type=float, default=0.10,
                   help="a benchmark this much slower is a regression (default 0.10: 10%%)")
    p.add_argument("--usage-growth", type=float, default=0.10,
                   help="a bound usage this much larger is a regression (default 0.10: 10%%)")


def _table(title: str, rows: list[tuple[str, str]]) -> Table:
    """How each changed (stopped passing, slower, ...) and what, the what whole on one line in a log."""
    t = Table([Column("change", 16), Column("check or measurement")], title=title, indent=2, header=False,
              overflow="keep")
    for how, what in rows:
        t.row(how, span=what)
    return t


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
    if found.noise:
        _table(f"{len(found.noise)} slower, but inside the runs' spread (not counted):", found.noise).show()
    if found.count:
        _table(f"{found.count} regression(s):", found.rows()).show()
        if found.more():
            print(f"  {found.more()}")
        return 1
    if not found.compared:
        raise SpecError(f"nothing to compare: no check or measurement is in both {args.old} and {args.new}")
    print("no regressions")
    return 0
