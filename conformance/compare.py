"""List the regressions between two results.json files, or between two bench.json files.

A regression is a check that passed before and does not now, a bound usage that grew by more
than ``--usage-growth`` (relative; growth under 0.01 of the bound is noise and ignored), or a
benchmark whose median got more than ``--slowdown`` slower (or that stopped running). Exit
status 1 when there is any, 0 when there is none, 2 when the files cannot be compared.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from nutshell.conformance.report import load_bench, load_results
from nutshell.conformance.results import BenchOutcome, BenchResult, Outcome
from nutshell.errors import SpecError

USAGE_FLOOR = 0.01          # usage changes smaller than this are rounding, not regressions


def _kind(path: Path) -> str:
    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SpecError(f"{path}: not a readable JSON file ({exc})") from None
    return "bench" if isinstance(doc, dict) and doc.get("kind") == "nutshell-bench" else "results"


def compare_results(old: dict, new: dict, usage_growth: float) -> tuple[list[str], list[str]]:
    """(regressions, notes) between two results documents, matched by check id."""
    before = {r.id: r for r in old["results"]}
    after = {r.id: r for r in new["results"]}
    regressions, fixed = [], 0
    for rid in sorted(before.keys() & after.keys()):
        a, b = before[rid], after[rid]
        if a.outcome is Outcome.PASS and b.outcome is not Outcome.PASS:
            why = f": {b.message}" if b.message else ""
            regressions.append(f"stopped passing  {rid}: pass -> {b.outcome}{why}")
        elif a.outcome is Outcome.PASS and _grew(a.usage, b.usage, usage_growth):
            factor = f" (x{b.usage / a.usage:.2f})" if a.usage else ""
            regressions.append(f"usage grew       {rid}: {a.usage:.3g} -> {b.usage:.3g}{factor}")
        fixed += a.outcome is not Outcome.PASS and b.outcome is Outcome.PASS
    notes = [f"{len(before.keys() & after.keys())} checks compared",
             f"{fixed} now pass that did not", f"{len(after.keys() - before.keys())} new",
             f"{len(before.keys() - after.keys())} no longer run"]
    return regressions, notes


def _grew(old: float | None, new: float | None, growth: float) -> bool:
    if old is None or new is None:
        return False
    return new - old > USAGE_FLOOR and new > old * (1 + growth)


def _bench_key(r: BenchResult) -> tuple:
    return r.backend, r.device, r.concept, r.size, r.direction, r.dtype


def compare_bench(old: dict, new: dict, slowdown: float) -> tuple[list[str], list[str]]:
    """(regressions, notes) between two bench documents, matched by backend, device, concept,
    size, direction and dtype."""
    before = {_bench_key(r): r for r in old["results"]}
    after = {_bench_key(r): r for r in new["results"]}
    regressions, faster = [], 0
    for key in sorted(before.keys() & after.keys(), key=str):
        a, b = before[key], after[key]
        name = " ".join(str(k) for k in (key[0], key[2], key[3], key[4]))
        if a.outcome is BenchOutcome.OK and b.outcome is not BenchOutcome.OK:
            regressions.append(f"stopped running  {name}: {b.outcome}: {b.message or ''}")
        elif a.outcome is BenchOutcome.OK:
            ta, tb = a.time["median_s"], b.time["median_s"]
            if tb > ta * (1 + slowdown):
                regressions.append(f"slower           {name}: {1e3 * ta:.3g} ms -> {1e3 * tb:.3g} ms "
                                   f"(+{100 * (tb / ta - 1):.0f}%)")
            faster += tb * (1 + slowdown) < ta
    notes = [f"{len(before.keys() & after.keys())} measurements compared", f"{faster} got faster",
             f"{len(after.keys() - before.keys())} new", f"{len(before.keys() - after.keys())} no longer run"]
    if old.get("devices") != new.get("devices"):
        notes.append(f"different devices: {old.get('devices')} vs {new.get('devices')}")
    return regressions, notes


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("old", type=Path, help="the earlier results.json or bench.json")
    p.add_argument("new", type=Path, help="the later file of the same kind")
    p.add_argument("--slowdown", type=float, default=0.10,
                   help="a benchmark this much slower is a regression (default 0.10: 10%%)")
    p.add_argument("--usage-growth", type=float, default=0.10,
                   help="a bound usage this much larger is a regression (default 0.10: 10%%)")


def run(args: argparse.Namespace) -> int:
    kinds = {_kind(args.old), _kind(args.new)}
    if len(kinds) != 1:
        raise SpecError(f"{args.old} and {args.new} are not the same kind of file (one results, one bench)")
    if kinds == {"bench"}:
        regressions, notes = compare_bench(load_bench(args.old), load_bench(args.new), args.slowdown)
    else:
        old, new = load_results(args.old), load_results(args.new)
        regressions, notes = compare_results(old, new, args.usage_growth)
        if old["spec_version"] != new["spec_version"]:
            notes.append(f"spec {old['spec_version']} -> {new['spec_version']}")
    print(f"{args.old} -> {args.new}: " + ", ".join(notes))
    if not regressions:
        print("no regressions")
        return 0
    print(f"{len(regressions)} regression(s):")
    for line in regressions:
        print(f"  {line}")
    return 1
