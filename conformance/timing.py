"""The bench's clock and statistics: rounds of calls timed in turn, their spread, and whether a
figure (or the machine) can be trusted. ``nutshell bench`` measures with it and ``nutshell
compare`` judges changes with it.

Spread, stated as pytest-benchmark states it (:class:`Timing`): the rounds (``samples``; their
calls are its iterations, ``number``), the median m, the quartiles q₁, q₃ and the interquartile
range IQR = q₃ − q₁ (shown as IQR / m), the extremes, and the outliers: rounds outside Tukey's
fences [q₁ − 1.5·IQR, q₃ + 1.5·IQR]. A figure is **unsteady** (``time.unsteady``; ``~`` in the
table) when

* it rests on fewer than :data:`MIN_ROUNDS` (5) rounds: with n rounds the probability that the
  median lies outside even [min, max] is 2·2⁻ⁿ, so below 5 rounds no interval the samples give
  covers it with 90% confidence, and a "± 0 %" of three equal rounds says nothing; or
* its IQR exceeds :data:`MAX_SPREAD` (10%) of its median: the middle half of its rounds then
  spans more than the 10% change that ``nutshell compare`` calls a regression, so the figure
  cannot tell such a change from noise.

The machine's load is measured too (Linux): the CPU time every process used during the bench
(/proc/stat, a hypervisor's steal included) less this process's own, per second of wall time:
the cores' worth that others took. Above :data:`LOADED_SHARE` (10%) of the cores the machine is
called loaded (``load`` in bench.json, a line under the table): a figure that uses every core
then loses about that share of them, as much as the change compare looks for.

``nutshell compare`` reads the same verdict back from bench.json (:func:`unsteady`; computed from
the rounds and quartiles for a file written before the field existed).
"""

from __future__ import annotations

import math
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

MIN_ROUNDS = 5
"""Fewer rounds make a figure unsteady: P(median ∉ [min, max]) = 2·2⁻ⁿ exceeds 10% below n = 5."""
MAX_SPREAD = 0.10
"""An IQR wider than this share of the median makes a figure unsteady (compare's 10% regression)."""
LOADED_SHARE = 0.10
"""Other processes using more than this share of the cores make the machine loaded."""


@dataclass(frozen=True)
class Settings:
    cap_s: float = 1.0            # stop sampling after this long (once min_samples are in)
    min_samples: int = MIN_ROUNDS
    max_samples: int = 200
    sample_s: float = 0.005       # aim for samples this long (calls per sample adapt)
    rel_error: float = 0.01       # stop when the median's standard error is under this share
    peak_n_cpu: int = 2048
    peak_n_gpu: int = 8192
    stream_mib_cpu: int = 256     # the array a streaming copy moves to measure memory bandwidth
    stream_mib_gpu: int = 1024


QUICK = Settings(cap_s=0.2, min_samples=MIN_ROUNDS, max_samples=50, sample_s=0.002, rel_error=0.02)


@dataclass(frozen=True)
class Timing:
    """The time of one call over ``samples`` rounds of ``number`` calls each (pytest-benchmark's
    rounds and iterations): median and quartiles, extremes, and the rounds beyond Tukey's fences."""

    median_s: float
    q25_s: float
    q75_s: float
    min_s: float
    max_s: float
    samples: int             # rounds
    number: int              # calls per round
    outliers: int            # rounds outside [q25 − 1.5·IQR, q75 + 1.5·IQR]

    @property
    def iqr_s(self) -> float:
        """The interquartile range q75 − q25."""
        return self.q75_s - self.q25_s

    @property
    def spread(self) -> float:
        """Interquartile range over the median."""
        return self.iqr_s / self.median_s if self.median_s > 0 else 0.0

    @property
    def unsteady(self) -> bool:
        """Too few rounds or too wide a spread to trust (see the module docstring)."""
        return is_unsteady(self.samples, self.spread)

    def to_json(self) -> dict[str, Any]:
        """bench.json's ``time``: the fields, the IQR, the spread and the verdict."""
        return asdict(self) | {"iqr_s": self.iqr_s, "spread": self.spread, "unsteady": self.unsteady}


def is_unsteady(rounds: int, spread: float) -> bool:
    """rounds < :data:`MIN_ROUNDS` or IQR / median > :data:`MAX_SPREAD`."""
    return rounds < MIN_ROUNDS or spread > MAX_SPREAD


def unsteady(time: dict | None) -> bool | None:
    """Whether a record's ``time`` (as bench.json holds it) is unsteady: its own verdict, else the
    verdict from its rounds and quartiles; None when it states neither (older files)."""
    if not time:
        return None
    if "unsteady" in time:
        return bool(time["unsteady"])
    if not {"samples", "q25_s", "q75_s", "median_s"} <= time.keys():
        return None
    return is_unsteady(time["samples"], (time["q75_s"] - time["q25_s"]) / time["median_s"])


def summarize(samples: list[float], number: int) -> Timing:
    """The statistics of rounds of ``number`` calls (``samples``: seconds per call). Quartiles
    interpolate linearly between order statistics (``statistics.quantiles``, inclusive), so
    min ≤ q25 ≤ median ≤ q75 ≤ max for any n ≥ 1; an outlier lies beyond 1.5·IQR from them."""
    q25, _, q75 = statistics.quantiles(samples, n=4, method="inclusive") if len(samples) > 1 else samples * 3
    fence = 1.5 * (q75 - q25)
    outliers = sum(s < q25 - fence or s > q75 + fence for s in samples)
    return Timing(statistics.median(samples), q25, q75, min(samples), max(samples), len(samples), number, outliers)


def _stable(samples: list[float], rel: float) -> bool:
    """Whether the median's standard error (≈ 1.253 · 1.4826 · MAD / √n) is under ``rel`` of it."""
    med = statistics.median(samples)
    mad = statistics.median(abs(s - med) for s in samples)
    return 1.2533 * 1.4826 * mad / math.sqrt(len(samples)) <= rel * med


def measure(fns: list[Callable[[], Any]], sync: Callable[[], None], s: Settings = Settings()) -> list[Timing]:
    """Median time of one call of each of ``fns`` (see the module docstring for the method).

    Several calls are sampled in turn (a, b, a, b, ...), so a change in the machine's load
    during the measurement affects their ratio as little as possible.
    """
    clock = time.perf_counter
    numbers = []
    for fn in fns:
        fn()
        sync()                                      # warm-up: compilation, caches, allocations
        t0 = clock()
        fn()
        sync()
        numbers.append(max(1, min(10_000, int(s.sample_s / max(clock() - t0, 1e-7)))))
    samples: list[list[float]] = [[] for _ in fns]
    start = clock()
    while len(samples[0]) < s.max_samples:
        for fn, number, out in zip(fns, numbers, samples, strict=True):
            t0 = clock()
            for _ in range(number):
                fn()
            sync()
            out.append((clock() - t0) / number)
        if len(samples[0]) >= s.min_samples and (
                clock() - start > s.cap_s or all(_stable(x, s.rel_error) for x in samples)):
            break
    return [summarize(x, n) for x, n in zip(samples, numbers, strict=True)]


# ------------------------------------------------------------------------------ machine load

@dataclass(frozen=True)
class CpuClock:
    """How much CPU the machine and this process have used so far, at a wall-clock instant."""

    wall_s: float
    busy_s: float            # every CPU's non-idle time since boot (/proc/stat), steal included
    own_s: float             # this process's user + system time, all its threads


def cpu_clock() -> CpuClock | None:
    """Now, on Linux; None where /proc/stat cannot be read."""
    try:
        head = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    except OSError:
        return None
    if head[:1] != ["cpu"] or len(head) < 9:
        return None
    ticks = [int(v) for v in head[1:9]]          # user nice system idle iowait irq softirq steal
    t = os.times()
    busy = (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")   # all but idle and iowait
    return CpuClock(time.monotonic(), busy, t.user + t.system)


def machine_load(start: CpuClock | None, end: CpuClock | None, cores: int) -> dict | None:
    """The cores' worth that other processes used between two clocks, (Δbusy − Δown) / Δwall, and
    whether that makes the machine loaded (more than :data:`LOADED_SHARE` of ``cores``)."""
    if start is None or end is None or end.wall_s <= start.wall_s:
        return None
    wall = end.wall_s - start.wall_s
    others = max(0.0, (end.busy_s - start.busy_s) - (end.own_s - start.own_s)) / wall
    return {"cores": cores, "others": round(others, 2), "seconds": round(wall, 1),
            "loaded": others > LOADED_SHARE * cores}
