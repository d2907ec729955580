"""Shards: a deterministic share of a run's check ids, so a CI matrix can split one run over
several machines and ``nutshell report`` can put it back together.

Every shard collects the same checks (the same spec, -b, -k and --device) and keeps those assigned
to it. The assignment is greedy longest-first: ids in order of falling duration (ties by id), each
to the shard with the least total time so far (ties to the lowest index). With the durations of an
earlier results file (``--durations``) the shards take about equally long; without, every check
counts the same and the shards hold equally many. Either way the assignment depends only on the
ids and the durations, so any machine computes the same one.
"""

from __future__ import annotations

import heapq
import re
import statistics
from collections.abc import Iterable, Mapping

from nutshell.conformance.results import summarize
from nutshell.errors import SpecError

_SHARD = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")


def parse(text: str) -> tuple[int, int]:
    """``"I/N"`` -> (I, N) with 1 ≤ I ≤ N."""
    m = _SHARD.match(text or "")
    if not m or not 1 <= int(m[1]) <= int(m[2]):
        raise SpecError(f"--shard must be I/N with 1 <= I <= N (e.g. 2/3), got {text!r}")
    return int(m[1]), int(m[2])


def assign(ids: Iterable[str], n: int, durations: Mapping[str, float] | None = None) -> dict[str, int]:
    """id -> shard index (1…n). An id without a duration counts as the median of those known."""
    ids = sorted(set(ids))
    known = {i: float(durations[i]) for i in ids if durations and durations.get(i) is not None}
    typical = statistics.median(known.values()) if known else 1.0
    cost = {i: known.get(i, typical) for i in ids}
    loads = [(0.0, k) for k in range(1, n + 1)]              # (total so far, shard index): a min-heap
    out = {}
    for i in sorted(ids, key=lambda i: (-cost[i], i)):
        total, k = heapq.heappop(loads)
        out[i] = k
        heapq.heappush(loads, (total + cost[i], k))
    return out


def durations_of(doc: Mapping) -> dict[str, float]:
    """The seconds each check took in a loaded results document (checks without a time are left out)."""
    return {r.id: r.seconds for r in doc["results"] if r.seconds is not None}


def is_shard(doc: Mapping) -> bool:
    return bool((doc.get("selection") or {}).get("shard"))


def combine(docs: list[Mapping], names: list[str]) -> dict:
    """The results document of the whole run from its N loaded shard documents (``names`` for messages):
    the records of every shard, the backends any shard loaded, the summary recomputed. Refused
    unless the documents are shards 1…N of one selection, each once."""
    selections = [dict(d["selection"], shard=None) for d in docs]
    for name, sel in zip(names[1:], selections[1:], strict=True):
        if sel != selections[0]:
            raise SpecError(f"{name} is a shard of another selection than {names[0]} ({sel} vs {selections[0]})")
    parts = [parse(d["selection"]["shard"]) for d in docs]
    n = parts[0][1]
    counts = {k: [i for (i, m) in parts if m == n].count(k) for k in range(1, n + 1)}
    if any(m != n for _, m in parts) or any(c != 1 for c in counts.values()):
        missing = [f"{k}/{n}" for k, c in counts.items() if c == 0]
        twice = [f"{k}/{n}" for k, c in counts.items() if c > 1]
        got = ", ".join(d["selection"]["shard"] for d in docs)
        raise SpecError(f"shards must be 1/{n} … {n}/{n}, each once: got {got}"
                        + (f"; missing {', '.join(missing)}" if missing else "")
                        + (f"; twice {', '.join(twice)}" if twice else ""))
    ordered = [d for _, d in sorted(zip(parts, docs, strict=True), key=lambda p: p[0])]
    backends = {k: v for d in ordered for k, v in d["backends"].items()}
    unavailable = {k: v for d in ordered for k, v in d["unavailable"].items() if k not in backends}
    records = [r for d in ordered for r in d["results"]]
    return dict(ordered[0]) | {
        "selection": selections[0], "backends": backends, "unavailable": unavailable, "results": records,
        "started": min(d.get("started") or "" for d in ordered),
        "finished": max(d.get("finished") or "" for d in ordered),
        "complete": all(d.get("complete") for d in ordered), "shards": [d["selection"]["shard"] for d in ordered],
        "summary": summarize(records)}
