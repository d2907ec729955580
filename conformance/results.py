"""Results as the run goes: one JSON line per check appended to ``results.jsonl``, and
``results.json`` rewritten atomically (a temporary file, then a rename) at most once a second and
at the end, so a killed run always leaves a valid file for what finished."""

from __future__ import annotations

import json
import os
import platform
import time
from collections import defaultdict
from datetime import datetime, timezone
from pathlib import Path

OUTCOMES = ("pass", "fail", "unsupported", "error")


def atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


_DISTRIBUTIONS = ("numpy", "torch", "onnx", "onnxruntime", "onnxruntime-gpu", "cupy-cuda12x", "cupy-cuda11x",
                  "cupy", "tensorflow-cpu", "tensorflow", "matplotlib", "nutshell")


def library_versions() -> dict[str, str]:
    """Python and the installed version of every library a backend or the report may use."""
    from importlib import metadata

    out = {"python": platform.python_version()}
    for dist in _DISTRIBUTIONS:
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return out


def machine_info() -> dict:
    return {"machine": platform.machine(), "processor": platform.processor(), "system": platform.platform(),
            "python": platform.python_version(), "cpus": os.cpu_count(), "host": platform.node()}


class ResultsWriter:
    """Collects check records and keeps results.json / results.jsonl current."""

    def __init__(self, path: Path, header: dict, every_s: float = 1.0, records: list[dict] | None = None):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.lines = self.path.with_suffix(".jsonl")
        self.lines.write_text("".join(json.dumps(r) + "\n" for r in records or []))
        self.header = header | {"started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                                "machine": machine_info(), "versions": library_versions()}
        self.records: list[dict] = list(records or [])
        self.every_s, self._last = every_s, 0.0
        self.flush(final=False)

    def add(self, record: dict) -> None:
        self.records.append(record)
        with self.lines.open("a") as f:
            f.write(json.dumps(record) + "\n")
        if time.monotonic() - self._last >= self.every_s:
            self.flush(final=False)

    def flush(self, final: bool = True) -> None:
        self._last = time.monotonic()
        doc = self.header | {"complete": final, "summary": summarize(self.records), "results": self.records}
        if final:
            doc["finished"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
        atomic_write(self.path, json.dumps(doc, indent=1, default=_jsonable))


class EventWriter:
    """Worker mode: a JSON line when each check starts and one with its record when it ends,
    flushed at once, so the parent can tell which check a crash or a hang interrupted."""

    def __init__(self, path: Path, header: dict):
        self.path = Path(path)
        self.records: list[dict] = []
        self._f = self.path.open("a", buffering=1)
        self._write({"event": "header", **header})

    def _write(self, obj: dict) -> None:
        self._f.write(json.dumps(obj, default=_jsonable) + "\n")
        self._f.flush()

    def start(self, check_id: str) -> None:
        self._write({"event": "start", "id": check_id, "t": time.time()})

    def add(self, record: dict) -> None:
        self.records.append(record)
        self._write({"event": "record", **record})

    def flush(self, final: bool = True) -> None:
        self._f.flush()
        if final:
            self._f.close()


def _jsonable(o):
    if hasattr(o, "item"):
        return o.item()
    return str(o)


def summarize(records: list[dict]) -> dict:
    """Per backend: counts by outcome, the total, and the worst bound usage among passes."""
    out: dict = defaultdict(lambda: {k: 0 for k in (*OUTCOMES, "total")} | {"worst_usage": 0.0})
    for r in records:
        s = out[r["backend"]]
        s[r["outcome"]] += 1
        s["total"] += 1
        if r["outcome"] == "pass" and r.get("usage") is not None:
            s["worst_usage"] = max(s["worst_usage"], r["usage"])
    return dict(out)


def summary_table(summary: dict, unavailable: dict | None = None) -> str:
    """A table readable in 80 columns."""
    rows = [f"{'backend':<10} {'passed':>7} {'failed':>7} {'unsupp.':>8} {'errors':>7} {'total':>7}  worst usage"]
    for name in sorted(summary):
        s = summary[name]
        rows.append(f"{name:<10} {s['pass']:>7} {s['fail']:>7} {s['unsupported']:>8} {s['error']:>7} "
                    f"{s['total']:>7}  {s['worst_usage']:.3g}")
    for name, why in sorted((unavailable or {}).items()):
        rows.append(f"{name:<10} unavailable: {why[:60]}")
    return "\n".join(rows)


def write_junit(records: list[dict], path: Path) -> None:
    """A JUnit XML file of the records (one testsuite per backend), written atomically."""
    from xml.etree import ElementTree as ET

    root = ET.Element("testsuites", name="nutshell")
    by_backend: dict[str, list[dict]] = defaultdict(list)
    for r in records:
        by_backend[r["backend"]].append(r)
    for backend, recs in sorted(by_backend.items()):
        counts = summarize(recs)[backend]
        suite = ET.SubElement(root, "testsuite", name=backend, tests=str(len(recs)), failures=str(counts["fail"]),
                              errors=str(counts["error"]), skipped=str(counts["unsupported"]))
        for r in recs:
            case = ET.SubElement(suite, "testcase", classname=f"{backend}.{r['concept']}", name=r["id"],
                                 time=str(r.get("seconds", 0)))
            tag = {"fail": "failure", "error": "error", "unsupported": "skipped"}.get(r["outcome"])
            if tag:
                ET.SubElement(case, tag, message=str(r.get("message", ""))[:2000])
    atomic_write(Path(path), ET.tostring(root, encoding="unicode"))
