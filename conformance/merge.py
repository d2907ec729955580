"""Write one HTML report from the results of one or more runs (say a CPU box and a GPU box), or,
given none, rebuild reports/index.html from the folder's results.json and bench.json (after a
``nutshell bench``, so the page shows the bench too).

Every results file must come from the version of the spec (``--spec``, by default the
repository's). A file that is not a nutshell results file (a bench.json goes with --bench), is
not a regular file, is larger than 256 MiB or holds a field of the wrong type is refused with
the file, the record and the field named (exit status 2), and no page is written.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from nutshell import spec as spec_mod
from nutshell.conformance.report import write_from_reports_dir, write_report
from nutshell.conformance.results import load_bench, load_results
from nutshell.errors import SpecError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("results", nargs="*", type=Path,
                   help="results.json files to merge (one per run); none: rebuild --reports' page from its "
                        "results.json and bench.json")
    p.add_argument("--reports", type=Path, default=Path("reports"),
                   help="the folder rebuilt when no results file is given (default: reports)")
    p.add_argument("-o", "--output", type=Path, help="the page to write (default: reports/index.html)")
    p.add_argument("--bench", type=Path, help="a bench.json for the performance section")
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
    bench = load_bench(args.bench, spec.version) if args.bench else None
    out = write_report(docs, bench, args.output or Path("reports") / "index.html", spec=spec)
    n = sum(len(d["results"]) for d in docs)
    print(f"report: {out} ({len(docs)} run(s), {n} checks{', with benchmarks' if bench else ''})")
    return 0
