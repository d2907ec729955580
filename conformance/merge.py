"""Write one HTML report from the results of one or more runs (say a CPU box and a GPU box), or,
given none, rebuild reports/index.html from the folder's results.json and bench.json (after a
``nutshell bench``, so the page shows the bench too). The N results files of one run split with
``nutshell run --shard I/N`` (say over a CI matrix) are merged into the results file of the whole
run (``--merged``) and its page.

Every results file must come from the version of the spec (``--spec``, by default the
repository's). A file that is not a nutshell results file (a bench.json goes with --bench), is
not a regular file, is larger than 256 MiB or holds a field of the wrong type is refused with
the file, the record and the field named (exit status 2), and no page is written.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from nutshell import spec as spec_mod
from nutshell.conformance import shards
from nutshell.conformance.report import write_from_reports_dir, write_report
from nutshell.conformance.results import atomic_write, load_bench, load_results
from nutshell.errors import SpecError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("results", nargs="*", type=Path,
                   help="results.json files to merge (one per run); none: rebuild --reports' page from its "
                        "results.json and bench.json")
    p.add_argument("--reports", type=Path, default=Path("reports"),
                   help="the folder rebuilt when no results file is given (default: reports)")
    p.add_argument("-o", "--output", type=Path, help="the page to write (default: reports/index.html)")
    p.add_argument("--bench", type=Path, help="a bench.json for the performance section")
    p.add_argument("--merged", type=Path,
                   help="where the shards' merged results.json goes (default: results.json beside the page)")
    p.add_argument("--spec", type=Path,
                   help="the spec file the runs used (default: the repository's spec/concepts.yaml)")


def run(args: argparse.Namespace) -> int:
    if not args.results:
        if args.bench or args.output:
            raise SpecError("--bench and -o go with results files; without any, the page of --reports is rebuilt "
                            "from the folder's own results.json and bench.json")
        out = write_from_reports_dir(args.reports, args.spec)
        print(f"report: {out} (rebuilt from {args.reports})")
        return 0
    spec = spec_mod.load(args.spec)
    docs = [load_results(p, spec.version) for p in args.results]
    if any(shards.is_shard(d) for d in docs):
        docs = [_merged_shards(docs, args)]
    bench = load_bench(args.bench, spec.version) if args.bench else None
    out = write_report(docs, bench, args.output or Path("reports") / "index.html", spec=spec)
    n = sum(len(d["results"]) for d in docs)
    print(f"report: {out} ({len(docs)} run(s), {n} checks{', with benchmarks' if bench else ''})")
    return 0


def _merged_shards(docs: list[dict], args: argparse.Namespace) -> dict:
    """The shards of one run (``nutshell run --shard I/N``) as the results file of the whole run,
    written to --merged: the page and the file are those of a single run."""
    if not all(shards.is_shard(d) for d in docs):
        raise SpecError("some of these results files are shards (nutshell run --shard) and some are not: merge the "
                        "shards alone, then report them beside the other runs")
    doc = shards.combine(docs, [str(p) for p in args.results])
    doc.pop("hunt", None)
    hunt = merged_hunt(docs)
    if hunt is not None:
        doc["hunt"] = hunt
    target = args.merged or (args.output or Path("reports") / "index.html").parent / "results.json"
    if target.resolve() in {p.resolve() for p in args.results}:
        raise SpecError(f"the merged results would replace the shard {target}: name another file with --merged")
    target.parent.mkdir(parents=True, exist_ok=True)
    written = {k: v for k, v in doc.items() if k != "source"} | {"results": [r.to_json() for r in doc["results"]]}
    atomic_write(target, json.dumps(written, indent=1))
    print(f"merged {len(docs)} shards ({len(doc['results'])} checks): {target}")
    return doc


def merged_hunt(docs: list[dict]) -> dict | None:
    """The hunts the shards carry as one: per backend, the hunt that finished last (None when no
    shard carries one)."""
    runs: dict[str, dict] = {}
    for d in docs:
        for name, run in (d.get("hunt") or {}).get("backends", {}).items():
            if name not in runs or run["finished"] > runs[name]["finished"]:
                runs[name] = run
    return {"kind": "nutshell-hunt", "backends": runs} if runs else None
