"""The HTML report and ``nutshell report``: merging runs, refusing foreign files, staying offline."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from nutshell import spec as spec_mod
from nutshell.conformance import report
from nutshell.conformance.results import CheckResult, Outcome, Section
from nutshell.errors import SpecError

SPEC = spec_mod.load()
VERSION = SPEC.version
SECTION_OF = {"forward": "ops", "vjp": "ops", "fd": "ops", "error": "ops", "cross": "cross", "train": "models",
              "claim": "claims"}


def _cmp(max_abs: float, usage: float) -> dict:
    return {"ok": usage <= 1, "usage": usage, "mismatched": 0, "total": 4, "max_abs": max_abs, "max_rel": max_abs,
            "where": [0], "actual_at": 0.5, "golden_at": 0.5, "bound_at": 1e-7, "shape_ok": True}


def results_doc(host: str, gpu: bool = False) -> dict:
    """A results.json as a run on ``host`` would write it: every concept on torch and onnx, one
    failure, one crash, onnx's float64 gaps, cross checks, and a few records of other checks."""
    device = "cuda:0" if gpu else "cpu"
    recs = []

    def add(backend, concept, check, vector, dtype, outcome="pass", usage=0.1, **extra):
        details = extra.pop("details") if "details" in extra else {"y": _cmp(1e-7, usage)}
        rid = f"{concept}[{backend}-{vector}-{dtype}{'' if check == 'forward' else '-' + check}]"
        recs.append({"id": rid, "backend": backend, "concept": concept, "check": check, "section": SECTION_OF[check],
                     "vector": vector, "dtype": dtype, "outcome": outcome, "usage": usage, "seconds": 0.01,
                     "details": details, **extra})

    for k, cid in enumerate(spec_mod.load().concepts):
        for backend in ("torch", "onnx"):
            for dtype in ("float32", "float64"):
                gap = backend == "onnx" and dtype == "float64" and cid.startswith("conv")
                outcome = "unsupported" if gap else "pass"
                add(backend, cid, "forward", "basic", dtype, outcome, 0.01 * (k + 1))
                add(backend, cid, "vjp", "basic", dtype, outcome, 0.02 * (k + 1))
            add(backend, cid, "error", "bad_rank", "None", details={"raised": "ShapeError"})
        add("cross", cid, "cross", "basic", "float32", usage=0.2,
            details={"torch.y": _cmp(1e-7, 0.2), "pairwise_max_abs": {"onnx~torch": 10.0 ** -(3 + k % 5)}})
    add("torch", "relu", "fd", "basic", "float64", "fail", 3.5, message="finite difference 1.0 vs vjp 2.0",
        rerun="pytest 'conformance/spec.nutshell::relu[torch-basic-float64-fd]' --backend torch")
    add("onnx", "lstm", "fd", "basic", "float64", "error", None, message="BackendFailure: boom", details={})
    add("torch", "traffic_sign_cnn", "train", "digits", "float32",
        details={"losses": [2.3, 1.2, 0.7, 0.4, 0.3], "test_accuracy": 0.981})
    add("onnx", "traffic_sign_cnn", "train", "digits", "float32",
        details={"losses": [2.3, 1.25, 0.72, 0.41, 0.31], "test_accuracy": 0.978})
    add("torch", "linear_collapse", "claim", "claim", "float64", details={"layers": 1000, "max_abs": 2e-15})
    return {"spec_version": VERSION, "backends": {"torch": {"device": device}, "onnx": {"device": device}},
            "unavailable": {"cupy": "backend 'cupy' needs a package that is not installed (cupy)"},
            "machine": {"host": host, "system": "Linux", "cpus": 2, "python": "3.11.7"},
            "started": "2026-01-01T00:00:00+00:00", "finished": "2026-01-01T00:10:00+00:00", "complete": True,
            "results": recs}


def bench_doc() -> dict:
    """A bench.json as ``nutshell bench`` writes it, two backends, two concepts."""
    results = []
    for backend, scale in (("torch", 1.0), ("onnx", 0.8)):
        for concept in ("conv2d", "relu"):
            for direction in ("forward", "vjp"):
                t = 0.01 * scale * (2 if direction == "vjp" else 1)
                results.append({
                    "backend": backend, "device": "cpu", "concept": concept, "kind": "concept", "size": "medium",
                    "direction": direction, "level": "native" if direction == "forward" else "api",
                    "dtype": "float32", "outcome": "ok", "flops": 1e9,
                    "time": {"median_s": t, "q25_s": t, "q75_s": t * 1.02, "min_s": t, "samples": 5, "number": 1,
                             "spread": 0.02},
                    "gflops": 1e9 / t / 1e9, "peak_share": 0.5 * scale, "overhead": 1.05 * scale,
                    "baseline": {"library": backend, "time": {"median_s": t / 1.05}}})
    results.append({"backend": "onnx", "device": "cpu", "concept": "traffic_sign_cnn", "kind": "model",
                    "size": "medium", "direction": "step", "level": "api", "dtype": "float32", "outcome": "error",
                    "message": "BackendFailure: out of memory"})
    return {"kind": "nutshell-bench", "schema_version": 1, "spec_version": VERSION, "date": "2026-01-01T00:00:00",
            "complete": True, "machine": {"host": "box-a"}, "devices": {"cpu": "Test CPU"},
            "versions": {"numpy": "2.0"}, "backends": {"torch": {"device": "cpu"}, "onnx": {"device": "cpu"}},
            "unavailable": {}, "peak": {"cpu": {"n": 2048, "dtype": "float32", "gflops": 200.0, "library": "numpy",
                                                "libraries": {"numpy": 200.0, "torch": 150.0}}},
            "results": results}


def write(path: Path, doc: dict) -> Path:
    path.write_text(json.dumps(doc))
    return path


def loaded(tmp_path: Path, doc: dict, name: str = "results.json") -> dict:
    """A results document as the report takes it: written, then read back by load_results."""
    return report.load_results(write(tmp_path / name, doc), VERSION)


def loaded_bench(tmp_path: Path, doc: dict) -> dict:
    return report.load_bench(write(tmp_path / "bench.json", doc), VERSION)


def write_page(tmp_path: Path, docs: list[dict], bench: dict | None = None) -> Path:
    """tmp_path/index.html of ``docs`` (results documents as a run writes them) and ``bench``."""
    runs = [loaded(tmp_path, d, f"results{i}.json") for i, d in enumerate(docs)]
    return report.write_report(runs, loaded_bench(tmp_path, bench) if bench else None, tmp_path / "index.html",
                               spec=SPEC)


def render(tmp_path: Path, docs: list[dict], bench: dict | None = None) -> str:
    """The text of that page."""
    return write_page(tmp_path, docs, bench).read_text()


def nutshell(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nutshell.cli", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=600)


def test_report_is_one_offline_file(tmp_path):
    page = render(tmp_path, [results_doc("box-a")], bench_doc())
    assert page.startswith("<!DOCTYPE html>") and page.count("<svg") >= 4
    for external in ("<script", "<link", "<img", "src=", "@import", "url(http", "href='http", 'href="http'):
        assert external not in page, external
    assert not re.search(r"<!DOCTYPE svg|<\?xml|<metadata", page)
    ids = re.findall(r"\bid=['\"]([^'\"]+)", page)
    assert len(ids) == len(set(ids)), "duplicate element ids"
    for href in set(re.findall(r"href=['\"]#([^'\"]+)", page)):
        assert href in ids, f"link to #{href} has no target"


def test_coverage_counts_every_outcome(tmp_path):
    page = render(tmp_path, [results_doc("box-a")])
    matrix = page[page.index("<table class='matrix'>"):]
    conv = matrix[matrix.index(">conv2d</a>"):]
    # onnx: 2 float32 checks pass, 2 float64 unsupported, the error check passes: 3/5
    assert re.search(r"<a href='#c-conv2d-b1'>3/5</a><br><small>2 unsupported</small>", conv)
    relu = matrix[matrix.index(">relu</a>"):]
    assert re.search(r"class='bad'><a href='#c-relu-b0'>5/6</a><br><small>1 fail</small>", relu)
    assert "unavailable" in matrix and "not a concept of concepts.yaml" not in page
    assert "finite difference 1.0 vs vjp 2.0" in page and "--backend torch" in page
    assert "Sigmoid" in page or "sigmoid" in page
    definition = spec_mod.load().concepts["conv2d"].definition
    assert report.esc(definition) in page


def test_sections_render_whatever_exists(tmp_path):
    page = render(tmp_path, [results_doc("box-a")], bench_doc())
    training = page[page.index("id='training'"):page.index("id='claims'")]
    assert "test_accuracy = 0.981" in training and "<svg" in training      # the loss curves
    claims = page[page.index("id='claims'"):page.index("id='node-tests'")]
    assert "linear_collapse" in claims
    assert "not run" in page[page.index("id='node-tests'"):page.index("id='concepts'")]
    perf = page[page.index("id='performance'"):page.index("id='training'")]
    assert "200 GFLOP/s" in perf and "BackendFailure: out of memory" in perf and "1.05" in perf
    empty = render(tmp_path, [results_doc("box-a") | {"results": []}])
    assert empty.count("not run") > 25


def test_two_machines_merge_with_distinct_columns(tmp_path):
    page = render(tmp_path, [results_doc("box-a"), results_doc("box-b", gpu=True)])
    head = page[page.index("<table class='matrix'>"):page.index("</tr>", page.index("<table class='matrix'>"))]
    assert "torch (cpu)" in head and "torch (cuda:0)" in head
    assert "cupy (unavailable, box-a)" in head and "cupy (unavailable, box-b)" in head
    assert "box-a" in page and "box-b" in page
    assert "onnx (cpu) ~ torch (cpu)" in page          # pairs stay within one machine


def test_report_command_merges_and_refuses(tmp_path):
    a = write(tmp_path / "a.json", results_doc("box-a"))
    b = write(tmp_path / "b.json", results_doc("box-b", gpu=True))
    bench = write(tmp_path / "bench.json", bench_doc())
    out = tmp_path / "out" / "index.html"
    r = nutshell("report", str(a), str(b), "--bench", str(bench), "-o", str(out))
    assert r.returncode == 0, r.stderr
    assert out.is_file() and "box-b" in out.read_text() and str(out) in r.stdout
    old = write(tmp_path / "old.json", results_doc("box-c") | {"spec_version": "0.0.1"})
    r = nutshell("report", str(a), str(old), "-o", str(tmp_path / "x.html"))
    assert r.returncode == 2 and "spec version 0.0.1" in r.stderr and VERSION in r.stderr
    assert not (tmp_path / "x.html").exists()
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    r = nutshell("report", str(bad), "-o", str(tmp_path / "y.html"))
    assert r.returncode == 2 and "not a JSON file" in r.stderr
    r = nutshell("report", str(a), "--bench", str(a), "-o", str(tmp_path / "z.html"))
    assert r.returncode == 2 and "not a nutshell bench file" in r.stderr


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d.pop("results"), "not a nutshell results file"),
    (lambda d: d["results"][0].pop("outcome"), r"results\[0\] \(sigmoid\[torch-basic-float32\]\): field outcome is "
                                                r"missing"),
    (lambda d: d["results"][0].update(outcome="maybe"), "field outcome: 'maybe' is not one of pass, fail"),
    (lambda d: d["results"][1].update(section="misc"), r"results\[1\] .*field section: 'misc' is not one of ops"),
    (lambda d: d["results"][2].update(usage="small"), "field usage: expected int or float or null, got 'small'"),
    (lambda d: d["results"][3].update(colour="red"), "field colour: not a field of a check result"),
    (lambda d: d["results"].__setitem__(0, ["sigmoid"]), r"results\[0\]: a check result must be a JSON object"),
])
def test_malformed_results_are_refused(tmp_path, mutate, message):
    doc = results_doc("box-a")
    mutate(doc)
    with pytest.raises(SpecError, match=message):
        report.load_results(write(tmp_path / "r.json", doc), VERSION)


def test_run_writes_index_html_from_a_real_run(tmp_path):
    pytest.importorskip("torch")
    r = nutshell("run", "-b", "torch", "-k", "relu", cwd=tmp_path)
    assert (tmp_path / "reports" / "results.json").is_file(), r.stdout + r.stderr
    write(tmp_path / "reports" / "bench.json", bench_doc())
    page = report.write_from_reports_dir(tmp_path / "reports")
    assert page == tmp_path / "reports" / "index.html"
    text = page.read_text()
    assert "relu" in text and "200 GFLOP/s" in text and VERSION in text
    write(tmp_path / "reports" / "bench.json", bench_doc() | {"spec_version": "0.0.1"})
    text = report.write_from_reports_dir(tmp_path / "reports").read_text()   # a stale bench.json is left out
    assert "relu" in text and "200 GFLOP/s" not in text


def test_determinism_differences_are_marked(tmp_path):
    from nutshell.conformance.report import Entry, determinism

    def rec(concept, identical):
        return Entry(0, CheckResult(id=f"{concept}[torch-determinism]", concept=concept, backend="torch",
                                    check="catalogue", section=Section.RELIABILITY, vector="grid",
                                    outcome=Outcome.PASS, details={"identical": identical}))

    cols = [{"key": "b0", "run": 0, "name": "torch", "label": "torch"}]
    same = determinism([rec("relu", True), rec("conv2d", True)], cols)
    assert "bit-identical" in same and "2 concept" in same
    marked = determinism([rec("relu", True), rec("conv2d", False)], cols)
    assert "1 of 2" in marked and "conv2d" in marked and "relu</td>" not in marked


def test_old_results_without_a_section_load_with_one(tmp_path):
    """A results.json written before records carried a section still loads: the section is
    derived from the names once, on loading, and the report places the records by it."""
    doc = results_doc("box-a")
    for r in doc["results"]:
        del r["section"]
    doc["results"].append({"id": "model_lenet[torch-forward-float32]", "backend": "torch", "concept": "model_lenet",
                           "check": "forward", "vector": "forward", "dtype": "float32", "outcome": "pass"})
    sections = {r.id: r.section for r in loaded(tmp_path, doc)["results"]}
    assert sections["relu[torch-basic-float32]"] is Section.OPS
    assert sections["relu[cross-basic-float32-cross]"] is Section.CROSS
    assert sections["traffic_sign_cnn[torch-digits-float32-train]"] is Section.MODELS
    assert sections["linear_collapse[torch-claim-float64-claim]"] is Section.CLAIMS
    assert sections["model_lenet[torch-forward-float32]"] is Section.MODELS
    page = render(tmp_path, [doc])
    assert "linear_collapse" in page[page.index("id='claims'"):page.index("id='node-tests'")]


def test_a_record_is_shown_in_the_section_it_names(tmp_path):
    """The report places a record by its section, not by words in its names: this ONNX record's
    concept says 'training', which the names alone would have put under training."""
    doc = results_doc("box-a")
    doc["results"].append({"id": "training_import[torch]", "backend": "torch", "concept": "training_import",
                           "check": "onnx-import", "section": "onnx", "vector": "googlenet", "dtype": "float32",
                           "outcome": "pass", "details": {"nodes": 3}})
    page = render(tmp_path, [doc])
    assert "training_import[torch]" in page[page.index("id='onnx'"):page.index("id='concepts'")]
    assert "training_import[torch]" not in page[page.index("id='training'"):page.index("id='claims'")]
