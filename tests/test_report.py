"""The HTML report and ``nutshell report``: merging runs, refusing foreign files, staying offline."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from nutshell import spec as spec_mod
from nutshell.conformance import figures, report
from nutshell.conformance.results import CheckResult, Outcome, Section
from nutshell.errors import SpecError
from nutshell.spec import models

SPEC = spec_mod.load()
VERSION = SPEC.version
SECTION_OF = {"forward": "ops", "vjp": "ops", "fd": "ops", "error": "ops", "cross": "cross", "train": "models",
              "claim": "claims", "digits": "models", "onnx-node-tests": "node-tests", "catalogue": "reliability",
              "export": "onnx"}
# What each claim of spec/claims.yaml records (conformance/claims.py), as a run on torch measured it.
CLAIM_DETAILS = {
    "linear_collapse": {"layers": 1000, "bound_usage": 0.0016, "max_abs_diff": 5.36e-06, "max_allowed": 0.00431,
                        "relative_change": 0.2856, "product_distance_from_identity": 0.811},
    "xor_needs_nonlinearity": {"relu_outputs": [0.0, 1.0, 1.0, 0.0], "relu_correct": 4, "relu_max_abs_error": 0.0,
                               "linear_models": 5202, "linear_best_correct": 3,
                               "linear_best_model": {"w": [-2.0, -2.0], "b": 2.125}, "linear_labellings": 14},
    "convolution_theorem": {"config0": {"bound_usage": 0.00236, "max_abs_diff": 7.63e-06, "shape": [2, 4, 16, 16]},
                            "config1": {"bound_usage": 0.00245, "max_abs_diff": 1.91e-06, "shape": [1, 6, 7, 10]},
                            "bound_usage": 0.00245},
    "convolution_is_flipped_correlation": {
        "config0": {"bound_usage": 0.0, "unflipped_usage": 190339.4, "max_abs_diff": 0.0,
                    "unflipped_max_abs_diff": 17.5},
        "config1": {"bound_usage": 0.0, "unflipped_usage": 266856.5, "max_abs_diff": 0.0,
                    "unflipped_max_abs_diff": 16.4},
        "bound_usage": 0.0},
    "pooling_shift_invariance": {"features": 44, "pooled_outputs": 96, "shifts": 9, "changed_within_window": 0,
                                 "changed_by_whole_window": 70},
    "vanishing_gradients": {"sigmoid_ratio": 1.77e-12, "relu_ratio": 1.008,
                            "sigmoid_grad_norms": [9.1e-11 * 4.1 ** k for k in range(20)],
                            "relu_grad_norms": [230.9, 226.6, 228.7, 209.7, 201.8, 209.6, 200.3, 193.4, 189.6, 214.4,
                                                260.9, 229.4, 269.8, 291.4, 240.0, 176.2, 179.1, 238.3, 246.3, 229.2]},
    "inception_reduction": {"direct_macs": 120422400, "reduction_macs": 9633792, "reduced_5x5_macs": 40140800,
                            "reduced_macs": 49774592, "saving": 2.4194, "reduced_shape": [1, 64, 28, 28],
                            "seconds_direct": 0.0315, "seconds_reduced": 0.0763,
                            "calls": [{"concept": "conv2d", "inputs": {"x": [1, 192, 28, 28], "w": [32, 192, 5, 5]},
                                       "y": [1, 32, 28, 28], "macs": 120422400}]},
    "learned_features_beat_engineered": {"engineered_accuracy": 0.8663, "learned_accuracy": 0.9805, "margin": 0.1142,
                                         "engineered_steps": 540, "learned_steps": 135, "engineered_seconds": 20.8,
                                         "learned_seconds": 3.32, "test_examples": 359},
    "last_layer_is_logistic_regression": {"bound_usage": 0.0, "max_abs_diff": 0.0, "features": [64, 128],
                                          "argmax_agree": 1.0, "max_abs_from_reference": 2.25e-07},
    "lstm_long_memory": {"delay": 50, "accuracy": 0.9875, "chance": 0.25, "test_sequences": 400,
                         "stages": [{"length": 12, "test_accuracy": 1.0, "final_loss": 0.0014, "steps": 320,
                                     "seconds": 3.0},
                                    {"length": 51, "test_accuracy": 0.9875, "final_loss": 0.0009, "steps": 96,
                                     "seconds": 7.0}],
                         "recall": [{"delay": d, "accuracy": a} for d, a in ((1, 1.0), (10, 1.0), (20, 0.995),
                                                                            (30, 0.9925), (40, 0.99), (50, 0.9875),
                                                                            (75, 0.8125), (100, 0.5))],
                         "seconds": 10.0},
}
NODE_TESTS = {   # onnx_node_tests[<backend>] (nutshell/onnxio/tools/nodetests.py), a few cases
    "executed": 4, "passed": 3, "failed": 1, "unsupported": 2, "passed_plumbing_only": 1,
    "differences": {}, "failures": {"test_relu_weird": "AssertionError: output 0 differs"},
    "unsupported_cases": {"test_conv_1d": "ONNX operator Conv: a 1-D window is not supported",
                          "test_Conv3d": "ONNX operator Conv: a 3-D window is not supported"},
    "passed_cases": ["test_conv_with_strides", "test_conv_basic", "test_maxpool_2d_default"],
}


def _cmp(max_abs: float, usage: float) -> dict:
    return {"ok": usage <= 1, "usage": usage, "mismatched": 0, "total": 4, "max_abs": max_abs, "max_rel": max_abs,
            "where": [0], "actual_at": 0.5, "golden_at": 0.5, "bound_at": 1e-7, "shape_ok": True}


def results_doc(host: str, gpu: bool = False, pictures: bool = True) -> dict:
    """A results.json as a run on ``host`` would write it: every concept on torch and onnx, one
    failure, one crash, onnx's float64 gaps, cross checks, and a few records of other checks; with
    ``pictures``, also every claim, the digits training and ONNX's node tests (the page's pictures)."""
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
    add("torch", "linear_collapse", "claim", "claim", "float64", details=CLAIM_DETAILS["linear_collapse"])
    if pictures:
        add_pictured(add)
    return {"spec_version": VERSION, "backends": {"torch": {"device": device}, "onnx": {"device": device}},
            "unavailable": {"cupy": "backend 'cupy' needs a package that is not installed (cupy)"},
            "machine": {"host": host, "system": "Linux", "cpus": 2, "python": "3.11.7"},
            "started": "2026-01-01T00:00:00+00:00", "finished": "2026-01-01T00:10:00+00:00", "complete": True,
            "results": recs}


FIGURE3 = [[[[4.0, 3.0, 4.0], [2.0, 4.0, 3.0], [2.0, 3.0, 4.0]]]]
EDGES = {"torch": [[[[0.0, 3.0, 3.0, 0.0], [0.0, 3.0, 3.0, 0.0]]]],
         "onnx": [[[[0.0, -3.0, -3.0, 0.0], [0.0, -3.0, -3.0, 0.0]]]]}     # onnx flips the kernel here


def trained_filters(shift: float) -> dict:
    """digits_cnn's first-layer filters as the digits check keeps them: the seed-0 initialisation,
    moved by training (here: by a fixed pattern), plus ``shift``."""
    w = models.init_params(models.get("digits_cnn"), 0)["conv1_w"].astype(float)
    return {"param": "conv1_w", "seed": 0, "values": (w + 0.3 * np.sin(np.arange(w.size)).reshape(w.shape) + shift)
            .tolist()}


def add_pictured(add) -> None:
    """The records the page draws: the other nine claims (one failed on onnx), the image vectors
    as each backend computed them (onnx flipping the edge detector's kernel), the digits training
    on both backends (only torch's with a loss per epoch) with its filters, and ONNX's node tests."""
    for cid, details in CLAIM_DETAILS.items():
        if cid != "linear_collapse":
            add("torch", cid, "claim", "claim", "float32", details=details)
    add("onnx", "vanishing_gradients", "claim", "claim", "float32", "fail", None, details={},
        message="sigmoid first/last gradient norm ratio 0.5 > 0.001")
    for backend, losses, shift in (("torch", [0.61, 0.22, 0.12, 0.08], 0.0), ("onnx", None, 2e-7)):
        add(backend, "conv2d", "forward", "figure3", "float32", details={"y": _cmp(0.0, 0.0),
                                                                         "computed": {"y": FIGURE3}})
        bad = backend == "onnx"
        add(backend, "conv2d", "forward", "edge_detector", "float32", "fail" if bad else "pass", 9e6 if bad else 0.0,
            details={"y": _cmp(6.0 if bad else 0.0, 9e6 if bad else 0.0), "computed": {"y": EDGES[backend]}})
        add(backend, "model_digits_cnn", "digits", "digits", "float32",
            details={"test_accuracy": 0.9805, "min_accuracy": 0.97, "steps": 270, "final_loss": 0.0289,
                     "seconds": 3.2, "epochs": [0.9331, 0.961, 0.9721, 0.9805], "first_filters": trained_filters(shift)}
            | ({"epoch_losses": losses} if losses else {}))
        add(backend, "onnx_node_tests", "onnx-node-tests", "node", "None", details=NODE_TESTS)
        add(backend, "tanh", "catalogue", "nan_input", "float32",
            details={"y": _cmp(0.0, 0.0), "nan_where_expected": [[0, 1], [2, 3]], "raised": None})
        add(backend, "digits_cnn", "export", "export", "float32",
            details={"onnxruntime": _cmp(1e-7, 0.01), "imported": _cmp(2e-7, 0.02), "nodes": 12})


def bench_doc() -> dict:
    """A bench.json as ``nutshell bench`` writes it, two backends, two concepts."""
    results = []
    shapes = {"conv2d": ({"x": [32, 64, 28, 28], "w": [64, 64, 3, 3]}, {"pads": [1, 1, 1, 1]}),
              "relu": ({"x": [32, 64, 56, 56]}, {})}
    for backend, scale in (("torch", 1.0), ("onnx", 0.8)):
        for concept in ("conv2d", "relu"):
            for direction in ("forward", "vjp"):
                t = 0.01 * scale * (2 if direction == "vjp" else 1)
                results.append({
                    "backend": backend, "device": "cpu", "concept": concept, "kind": "concept", "size": "medium",
                    "direction": direction, "level": "native" if direction == "forward" else "api",
                    "dtype": "float32", "outcome": "ok", "flops": 1e9, "shapes": shapes[concept][0],
                    "attrs": shapes[concept][1],
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


class Parsed(HTMLParser):
    """What a reader sees of a page: the text outside SVG, style and script, and per <figure> its
    id, its title (the first figcaption) and whether it holds an SVG picture."""

    def __init__(self, page: str):
        super().__init__(convert_charrefs=True)
        self.text, self.figures, self._skip, self._title = [], [], 0, False
        self.feed(page)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag in ("svg", "style", "script"):
            self._skip += 1
            if tag == "svg" and self.figures:
                self.figures[-1]["svg"] = True
        elif tag == "figure":
            self.figures.append({"id": a.get("id"), "title": "", "svg": False})
        elif tag == "figcaption" and a.get("class") == "title":
            self._title = True

    def handle_endtag(self, tag):
        if tag in ("svg", "style", "script"):
            self._skip -= 1
        elif tag == "figcaption":
            self._title = False

    def handle_data(self, data):
        if self._title:
            self.figures[-1]["title"] += data
        if not self._skip:
            self.text.append(data)

    def words(self) -> str:
        return " ".join(" ".join(self.text).split())


def section(page: str, key: str) -> str:
    """The HTML of the page's top-level section ``key``."""
    start = page.index(f'<section id="{key}">')
    end = page.find('<section id="', start + 1)
    return page[start:end if end > 0 else len(page)]


def figure(page: str, key: str) -> str:
    """The HTML of <figure id="fig-<key>">."""
    start = page.index(f'<figure id="fig-{key}">')
    return page[start:page.index("</figure>", start)]


@pytest.fixture(scope="module")
def page_a(tmp_path_factory) -> str:
    """The page of one run on box-a (every section has records) with the bench: rendered once."""
    return render(tmp_path_factory.mktemp("page"), [results_doc("box-a")], bench_doc())


def test_report_is_one_offline_file(page_a):
    assert page_a.startswith("<!DOCTYPE html>") and len(page_a.encode()) < 2_000_000
    for external in ("<script", "<link", "<img", "src=", "@import", "url(http", "href='http", 'href="http'):
        assert external not in page_a, external
    assert not re.search(r"<!DOCTYPE svg|<\?xml|<metadata", page_a)
    ids = re.findall(r"\bid=['\"]([^'\"]+)", page_a)
    assert len(ids) == len(set(ids)), "duplicate element ids"
    for href in set(re.findall(r"href=['\"]#([^'\"]+)", page_a)):
        assert href in ids, f"link to #{href} has no target"
    figures = Parsed(page_a).figures
    assert len(figures) >= 16 and page_a.count("<svg") == len(figures)
    assert all(f["svg"] and f["title"].strip() for f in figures), [f for f in figures if not f["title"].strip()]


def test_no_markup_in_python():
    """The page's markup lives in the templates; Python prepares data and pictures only."""
    tag = re.compile(r"</?(html|head|body|table|tr|td|th|div|section|article|nav|header|p|a|h[1-6]|ul|li|details|"
                     r"summary|figure|figcaption|span|br|small|code|b|style)(\s[^<>]*)?>", re.I)
    folder = Path(report.__file__).parent
    offending = {f.name: tag.findall(f.read_text()) for f in folder.glob("*.py")}
    assert not {k: v for k, v in offending.items() if v}
    assert (folder / "templates" / "report.css").is_file() and (folder / "templates" / "report.html.j2").is_file()


def test_coverage_counts_every_outcome(page_a):
    matrix = section(page_a, "coverage")
    fft = matrix[matrix.index(">conv2d_fft</a>"):]
    # onnx: 2 float32 checks pass, 2 float64 unsupported, the error check passes: 3/5
    assert re.search(r'<td class="partial"><a href="#c-conv2d_fft-b1">3/5</a><br><small>2 unsupported</small></td>',
                     fft)
    conv = matrix[matrix.index(">conv2d</a>"):]      # and its two image vectors, the edge detector failed
    assert re.search(r'<td class="bad"><a href="#c-conv2d-b1">4/7</a><br><small>2 unsupported · 1 fail</small></td>',
                     conv)
    relu = matrix[matrix.index(">relu</a>"):]
    assert re.search(r'<td class="bad"><a href="#c-relu-b0">5/6</a><br><small>1 fail</small></td>', relu)
    assert "unavailable" in matrix and "not a concept of concepts.yaml" not in page_a
    text = Parsed(page_a).words()
    assert "finite difference 1.0 vs vjp 2.0" in text and "--backend torch" in text
    assert " ".join(spec_mod.load().concepts["conv2d"].definition.split()) in text


def test_every_claim_has_its_picture_and_its_numbers_in_words(page_a):
    claims = section(page_a, "claims")
    text = Parsed(claims).words()
    for cid in CLAIM_DETAILS:
        fig = Parsed(figure(claims, f"claim-{cid}")).figures[0]
        assert fig["svg"] and len(fig["title"]) > 20, cid
    statements = {c["id"]: " ".join(c["claim"].split()) for c in spec_mod.load_document(
        spec_mod.SPEC_DIR / "claims.yaml")["claims"]}
    assert all(statements[cid] in text for cid in CLAIM_DETAILS)
    for sentence in ("120,422,400 multiply-adds directly; 49,774,592 with the 1×1 reduction (9,633,792 + 40,140,800): "
                     "2.42 times fewer",
                     "The first layer's weight gradient is 1.77e-12 times the last layer's with sigmoid and 1.01 "
                     "times with ReLU",
                     "Of 96 pooled outputs, 0 changed under the 9 shifts inside a window and 70 under a shift by a "
                     "whole window",
                     "The CNN on the pixels reaches 98.0% test accuracy, softmax regression on the ink profiles "
                     "86.6%: 11.4 points better",
                     "misses it by 1.90e+05 times and 2.67e+05 times that allowance",
                     "for 98.8% of 400 unseen sequences (chance: 25.0%); at the other delays it recalls 100.0% "
                     "after 1, 100.0% after 10, 99.5% after 20, 99.2% after 30, 99.0% after 40, 81.2% after 75, "
                     "50.0% after 100 steps.",
                     "sigmoid first/last gradient norm ratio 0.5 > 0.001"):
        assert sentence in text, sentence
    for key in ("claims", "training", "node-tests", "performance", "reliability", "onnx"):    # measured numbers
        shown = Parsed(section(page_a, key)).words()
        assert not re.search(r"\{\s*['\"]?\w+['\"]?\s*:|\[\s*[\[{]|\[-?\d+(\.\d+)?,", shown), key


def test_claim_pictures_label_their_axes(page_a):
    claims = section(page_a, "claims")
    expected = {"vanishing_gradients": ("layer (1 = first, next to the input)", "Frobenius norm, log scale",
                                        "sigmoid · torch", "ReLU · torch"),
                "xor_needs_nonlinearity": ("x₁", "x₂", "3 of 4 right", "4 of 4 right"),
                "inception_reduction": ("million multiply-adds", "2.42× fewer"),
                "lstm_long_memory": ("recall: test accuracy (%)", "delay (distractor steps", "the claim's threshold",
                                     "the claim's delay (50 steps)", "chance"),
                "convolution_is_flipped_correlation": ("the bound is 1", "exactly 0")}
    for cid, labels in expected.items():
        svg_text = figure(claims, f"claim-{cid}")
        assert all(label in svg_text for label in labels), cid


def test_training_has_a_chart_per_model_and_the_final_accuracies(page_a):
    training = section(page_a, "training")
    chart = figure(training, "training-model_digits_cnn")
    for label in ("epoch", "test accuracy (%)", "mean minibatch loss", "torch", "onnx"):
        assert label in chart, label
    text = Parsed(training).words()
    assert "final test accuracy" in text and "98.0%" in text and "97.0%" in text
    assert "losses (5 values, from 2.3 to 0.3)" in text          # the other model records, in words


def test_node_tests_are_an_operator_by_backend_matrix(page_a):
    nodes = section(page_a, "node-tests")
    rows = {m.group(1): m.group(2) for m in re.finditer(r"<tr[^>]*><th>([^<]+)</th>\s*(.*?)</tr>", nodes, re.S)}
    assert set(rows) >= {"conv", "maxpool", "relu", "Conv3d (PyTorch module)", "operator", "all cases"}
    assert rows["conv"].count(">2 passed · 1 unsupported<") == 2
    assert "a 1-D window is not supported" in rows["conv"]                   # the reason, on hover
    assert rows["relu"].count('<td class="bad" title="test_relu_weird: failed — AssertionError') == 2
    assert rows["all cases"].count("3 passed · 2 unsupported · 1 failed of 6") == 2
    assert "AssertionError: output 0 differs" in Parsed(nodes.split("<details>")[1]).words()   # the details list


def test_performance_draws_a_roofline_and_throughput_against_torch(tmp_path, page_a):
    perf = section(page_a, "performance")
    roof = figure(perf, "roofline-cpu")
    assert "arithmetic intensity" in roof and "peak 200 GFLOP/s" in roof and "no measured memory bandwidth" in roof
    assert "onnx" in figure(perf, "relative-forward") and "BackendFailure: out of memory" in perf
    bench = loaded_bench(tmp_path, bench_doc())
    bench["peak"]["cpu"]["bandwidth_gbs"] = 50.0
    (roofline,) = report.performance(bench, SPEC, figures.Looks())["rooflines"]
    assert "memory bandwidth 50 GB/s" in roofline["svg"] and "50 GB/s." in roofline["caption"]
    assert "ridge 4 FLOP/byte" in roofline["svg"], "the roofs' meeting point (200 GFLOP/s / 50 GB/s) is on the chart"


def test_unsteady_figures_are_marked_and_explained(tmp_path, page_a):
    steady = Parsed(section(page_a, "performance")).words()
    assert " ~" not in steady and "hollow" not in steady and "vs canonical call" not in steady and "†" not in steady
    doc = bench_doc()
    doc["results"][0]["time"]["unsteady"] = True              # torch conv2d forward
    doc["results"][5]["baseline"]["time"]["unsteady"] = True  # onnx conv2d vjp's baseline: its overhead only
    doc["load"] = {"cores": 2, "others": 0.9, "seconds": 60.0, "loaded": True}
    perf = section(render(tmp_path, [results_doc("box-a", pictures=False)], doc), "performance")
    rows = {(m.group(1), m.group(2), m.group(3)): m.group(4) for m in re.finditer(
        r"<tr><td>(\w+)</td><td>medium</td><td>(\w+)\*?</td><td>(\w+)</td>(.*?)</tr>", perf, re.S)}
    marked = {k: v.count(" ~<") for k, v in rows.items() if " ~<" in v}
    assert marked == {("conv2d", "forward", "torch"): 2, ("conv2d", "vjp", "onnx"): 1}, marked   # time and overhead
    words = Parsed(perf).words()
    assert "marks a figure resting on a time the bench found unsteady" in words
    assert "other processes used 0.9 of the machine's 2 cores: the machine was loaded" in words
    assert "hollow: spread too wide to trust" in figure(perf, "roofline-cpu")


def test_a_rate_counted_at_another_algorithms_flops_is_marked(tmp_path):
    doc = bench_doc()
    doc["results"][0]["flops_basis"] = "direct convolution"      # torch conv2d forward
    perf = section(render(tmp_path, [results_doc("box-a", pictures=False)], doc), "performance")
    assert perf.count(">†</span>") == 1 and "<td>torch</td>" in perf[perf.rindex("<tr>", 0, perf.index(">†</span>")):]
    assert "† % of peak counted at a direct convolution's FLOPs: an effective rate" in Parsed(perf).words()


def test_the_ratio_to_the_canonical_call_gets_a_column(tmp_path):
    doc = bench_doc()
    call = {"library": "torch", "call": "torch.nn.functional.conv2d", "time": {"median_s": 0.01 / 1.5}}
    doc["results"][0] |= {"canonical_ratio": 1.5, "canonical": call}
    doc["results"][2] |= {"canonical_ratio": 1.05, "canonical": {"library": "torch", "same_as": "baseline"}}
    doc["results"][4] |= {"canonical": {"library": "onnxruntime", "skipped": "no one-node model of this concept"}}
    perf = section(render(tmp_path, [results_doc("box-a", pictures=False)], doc), "performance")
    assert "<th>vs canonical call</th>" in perf
    assert "1.5×<br><small>torch.nn.functional.conv2d</small>" in perf
    assert "1.05×<br><small>the baseline</small>" in perf
    assert "—<br><small>skipped: no one-node model of this concept</small>" in perf


def test_traffic_counts_every_input_and_output_once():
    assert report.traffic(SPEC, "relu", {"x": [2, 3]}, {}) == 2 * 6 * 4
    assert report.traffic(SPEC, "conv2d", {"x": [1, 1, 5, 5], "w": [1, 1, 3, 3]}, {}) == (25 + 9 + 9) * 4
    padded = {"pads": [1, 1, 1, 1]}
    assert report.traffic(SPEC, "conv2d", {"x": [1, 1, 5, 5], "w": [1, 1, 3, 3]}, padded) == (25 + 9 + 25) * 4
    assert report.traffic(SPEC, "cross_entropy", {"logits": [4, 10], "labels": [4]}, {}) == 40 * 4 + 4 * 8 + 4
    assert report.traffic(SPEC, "conv2d", {"x": [1, 2, 5, 5], "w": [1, 1, 3, 3]}, {}) is None   # a shape error
    assert report.traffic(SPEC, "digits_cnn", {"x": [8, 1, 8, 8]}, {}) is None                 # not a concept


def test_details_read_as_words():
    details = {"y": {"max_abs": 1e-7, "usage": 0.1, "mismatched": 0, "total": 4},
               "pairwise_max_abs": {"onnx~torch": 2e-7}, "epochs": [0.9, 0.95, 0.97, 0.98, 0.99], "shape": [2, 3],
               "identical": True}
    assert report.words(details) == ("y: largest |error| 1.00e-07, 10.0% of its bound; pairwise max abs: onnx~torch "
                                     "2.00e-07; epochs (5 values, from 0.9 to 0.99); shape 2, 3; identical yes")


def test_image_vectors_are_drawn_as_each_backend_computed_them(page_a):
    concepts = section(page_a, "concepts")
    for vector in ("figure3", "edge_detector"):
        fig = figure(concepts, f"image-conv2d-{vector}")
        assert all(label in fig for label in ("input x", "kernel w", "expected output y", "the spec", "as computed",
                                              "torch (float32)", "onnx (float32)")), vector
    edges = figure(concepts, "image-conv2d-edge_detector")
    assert ">-3<" in edges and "torch exactly 0; onnx 6 (fail)" in Parsed(edges).words()   # onnx's wrong output
    fft = figure(concepts, "image-conv2d_fft-figure3")       # no backend output recorded: the spec's row alone
    assert "the spec" in fft and "as computed" not in fft and "not run" in Parsed(fft).words()


def test_forward_keeps_the_output_of_an_image_vector_only():
    import nutshell
    from nutshell.conformance import checks

    b, conv = nutshell.load("cupy"), SPEC.concepts["conv2d"]
    vectors = {v.name: v for v in conv.vectors}
    tol = SPEC.tolerance
    figure3 = checks.forward(b, conv, vectors["figure3"], "float32", tol)
    assert figure3.details["computed"] == {"y": FIGURE3}
    assert "computed" not in checks.forward(b, conv, vectors["basic"], "float32", tol).details
    data = vectors["edge_detector"].load()
    wrong, keep = {"y": -data["out.y"]}, {"computed": {"y": (-data["out.y"]).tolist()}}
    with pytest.raises(checks.CheckFailed) as failed:           # a wrong output is kept too: it is the one to see
        checks._compare_all(wrong, {"y": data["out.y"]}, {"y": data["err.y"]}, "float32", tol, "output", keep)
    assert failed.value.record["details"]["computed"] == keep["computed"]


def test_the_trained_first_filters_are_drawn_per_backend_under_the_initialisation(page_a):
    from nutshell.conformance import model_checks

    fig = figure(section(page_a, "concepts"), "filters-model_digits_cnn")
    assert all(row in fig for row in ("initialisation", "torch", "onnx", "filter (each 3×3)"))
    text = Parsed(fig).words()
    assert "16 filters (conv1_w)" in text and "the largest difference between two backends' weights is 2.00e-07" in text
    assert 'href="#fig-filters-model_digits_cnn"' in section(page_a, "training")
    params = models.init_params(models.get("digits_cnn"), 3)
    kept = model_checks.first_filters(models.get("digits_cnn"), params, 3)["first_filters"]
    assert kept["param"] == "conv1_w" and np.array_equal(kept["values"], params["conv1_w"]) and kept["seed"] == 3
    assert model_checks.first_filters(models.get("mlp"), models.init_params(models.get("mlp")), 0) == {}


def test_sections_render_whatever_exists(tmp_path):
    empty = render(tmp_path, [results_doc("box-a") | {"results": []}])
    assert Parsed(empty).words().count("not run") > 25
    assert {f["id"].split("-")[1] for f in Parsed(empty).figures} == {"image"}   # only the spec's image vectors


def test_two_machines_merge_with_distinct_columns(tmp_path):
    page = render(tmp_path, [results_doc("box-a", pictures=False), results_doc("box-b", gpu=True, pictures=False)])
    head = page[page.index('<table class="matrix">'):page.index("</tr>", page.index('<table class="matrix">'))]
    assert "torch (cpu)" in head and "torch (cuda:0)" in head
    assert "cupy (unavailable, box-a)" in head and "cupy (unavailable, box-b)" in head
    assert "box-a" in page and "box-b" in page
    assert "onnx (cpu) ~ torch (cpu)" in page          # pairs stay within one machine


def test_report_command_merges_and_refuses(tmp_path):
    a = write(tmp_path / "a.json", results_doc("box-a", pictures=False))
    b = write(tmp_path / "b.json", results_doc("box-b", gpu=True, pictures=False))
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



def test_report_without_files_rebuilds_the_folders_page_with_the_bench(tmp_path):
    folder = tmp_path / "runs"
    folder.mkdir()
    write(folder / "results.json", results_doc("box-a", pictures=False))
    r = nutshell("report", "--reports", str(folder))
    assert r.returncode == 0, r.stderr
    before = (folder / "index.html").read_text()
    assert "roofline" not in before.lower()
    write(folder / "bench.json", bench_doc())
    r = nutshell("report", "--reports", str(folder))
    after = (folder / "index.html").read_text()
    assert r.returncode == 0 and after != before and "roofline" in after.lower(), r.stderr
    r = nutshell("report", "--reports", str(folder), "--bench", str(folder / "bench.json"))
    assert r.returncode == 2 and "go with results files" in r.stderr

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
    assert determinism([rec("relu", True), rec("conv2d", True)], cols) == {"pairs": 2, "differ": []}
    assert determinism([rec("relu", True), rec("conv2d", False)], cols) == {"pairs": 2, "differ": [("conv2d", "torch")]}
    doc = results_doc("box-a", pictures=False)
    doc["results"].append({"id": "conv2d[onnx-determinism]", "backend": "onnx", "concept": "conv2d",
                           "check": "catalogue", "section": "reliability", "vector": "grid", "dtype": "float32",
                           "outcome": "pass", "details": {"identical": False}})
    text = Parsed(section(render(tmp_path, [doc]), "determinism")).words()
    assert "1 of 1 concept × backend pairs gave different bits on two runs: concept backend conv2d onnx" in text


def test_old_results_without_a_section_load_with_one(tmp_path):
    """A results.json written before records carried a section still loads: the section is
    derived from the names once, on loading, and the report places the records by it."""
    doc = results_doc("box-a", pictures=False)
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
    assert "linear_collapse" in section(page, "claims")


def test_a_record_is_shown_in_the_section_it_names(tmp_path):
    """The report places a record by its section, not by words in its names: this ONNX record's
    concept says 'training', which the names alone would have put under training."""
    doc = results_doc("box-a", pictures=False)
    doc["results"].append({"id": "training_import[torch]", "backend": "torch", "concept": "training_import",
                           "check": "onnx-import", "section": "onnx", "vector": "googlenet", "dtype": "float32",
                           "outcome": "pass", "details": {"nodes": 3}})
    page = render(tmp_path, [doc])
    assert "training_import[torch]" in section(page, "onnx")
    assert "training_import[torch]" not in section(page, "training")


def _lowp(check: str, dtype: str, outcome: Outcome, storage: float, f32: float, acc: str, computed: str) -> CheckResult:
    return CheckResult(id=f"conv2d[torch-v-{dtype}-{check}]", backend="torch", concept="conv2d", check=check,
                       section=Section.OPS, outcome=outcome, dtype=dtype, usage=storage,
                       details={"usage_by_bound": {report.STORAGE_ACC: storage, report.FLOAT32_ACC: f32},
                                "consistent_with": acc, "computed_in": computed})


def test_the_precision_matrix_gives_usage_accumulation_and_probe_per_dtype():
    """Worst usage under the storage-format bound, the accumulation every result is consistent
    with (storage as soon as one needs it), a wider format named, the probe's verdict; a dtype
    without records is blank and a failed check marks its cell."""
    recs = [_lowp("forward", "float16", Outcome.PASS, 0.2, 0.9, report.FLOAT32_ACC, "float16"),
            _lowp("vjp", "float16", Outcome.PASS, 0.4, 31.0, report.STORAGE_ACC, "float16"),
            CheckResult(id="conv2d[torch-probe-float16]", backend="torch", concept="conv2d", check="probe",
                        section=Section.OPS, outcome=Outcome.PASS, dtype="float16",
                        details={"verdict": "float32 accumulation"}),
            _lowp("forward", "bfloat16", Outcome.FAIL, 3.0, 40.0, report.STORAGE_ACC, "float32: no kernel")]
    cols = [{"key": "b0", "label": "torch", "why": None}]
    m = report.precision(spec_mod.load(), {("conv2d", "b0"): recs}, cols)
    assert [c["dtype"] for c in m["columns"]] == ["float16", "bfloat16"]
    (row,) = m["rows"]
    f16, bf16 = row["cells"]
    assert f16["cls"] == "good" and f16["text"] == "2/2 · 0.4" and "storage acc." in f16["extra"]
    assert "probe: float32 accumulation" in f16["extra"] and "wider" not in f16["extra"]
    assert bf16["cls"] == "bad" and bf16["text"] == "0/1 · 3" and "wider" in bf16["extra"]
    assert "float32: no kernel" in bf16["title"]
    assert report.precision(spec_mod.load(), {("conv2d", "b0"): recs[2:3]}, cols) is None
    unsupported = [CheckResult(id=f"conv2d[torch-{c}-float16]", backend="torch", concept="conv2d", check=c,
                               section=Section.OPS, outcome=Outcome.UNSUPPORTED, dtype="float16")
                   for c in ("probe", "forward")]                                  # no details at all
    (row,) = report.precision(spec_mod.load(), {("conv2d", "b0"): unsupported}, cols)["rows"]
    assert row["cells"][0]["text"] == "0/1 · —" and row["cells"][0]["cls"] != "good"
