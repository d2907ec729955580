"""``nutshell bench``: the spec's shapes and FLOP formulas, the timer, the progress bar, the table,
and a real run that writes bench.json."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nutshell import spec as spec_mod
from nutshell.conformance import bench
from nutshell.conformance.results import BenchOutcome, BenchResult
from nutshell.errors import SpecError


def test_every_concept_and_model_has_three_sizes():
    entries = bench.load_entries()
    from nutshell.spec import models

    assert set(spec_mod.load().concepts) <= set(entries)
    assert set(models.names()) <= {e.get("model", name) for name, e in entries.items() if e["kind"] == "model"}
    for name, e in entries.items():
        assert set(e["sizes"]) == set(bench.SIZES), name


def test_inception_reduction_and_figure5_step_are_benchmarked():
    cases = {(c.target, c.size): c for c in bench.cases(bench.load_entries(), None, None)}
    reduction = cases[("conv2d", "medium")]
    assert reduction.shapes["x"][1:] == [192, 28, 28] and reduction.shapes["w"] == [64, 192, 1, 1]
    step = cases[("traffic_sign_cnn", "medium")]
    assert step.kind == "model" and step.shapes["x"][1:] == [3, 32, 32] and step.flops > 0


def test_flop_formulas_evaluate_at_every_shape():
    from nutshell.spec import validate
    from nutshell.spec.signatures import output_shapes

    s = spec_mod.load()
    for case in bench.cases(bench.load_entries(), None, None):
        if case.kind == "model":
            continue
        attrs = validate._check_attrs(s.concept(case.name), case.attrs)
        outs = output_shapes(case.name, {k: tuple(v) for k, v in case.shapes.items()}, attrs)
        fwd = bench.flops(case.entry, "flops", case.shapes, outs, attrs)
        back = bench.flops(case.entry, "flops_vjp", case.shapes, outs, attrs)
        assert 0 < fwd < back, (case.name, case.size)


def test_conv2d_flops_are_two_per_multiply_add():
    case = next(c for c in bench.cases(bench.load_entries(), ["conv2d"], ["medium"]))
    outs = {"y": (16, 64, 28, 28)}
    attrs = {"stride": [1, 1], "pads": [0, 0, 0, 0], "dilation": [1, 1], "groups": 1}
    assert bench.flops(case.entry, "flops", case.shapes, outs, attrs) == 2 * 16 * 64 * 784 * 192 + 16 * 64 * 784


@pytest.mark.parametrize("expr", ["__import__('os')", "x.shape", "open('f')", "[1][0]()", "lambda: 1"])
def test_formulas_cannot_run_code(expr):
    with pytest.raises(SpecError, match="bench formula"):
        bench.evaluate(expr, {"x": (1, 2)})


def test_unknown_benchmark_names_are_refused():
    with pytest.raises(SpecError, match="no benchmark named 'nonsense'"):
        bench.cases(bench.load_entries(), ["nonsense"], None)


def test_measure_reports_the_median_and_interleaves():
    calls = []

    def slow():
        calls.append("a")
        time.sleep(0.002)

    def fast():
        calls.append("b")

    t_slow, t_fast = bench.measure([slow, fast], lambda: None, bench.Settings(cap_s=0.3, min_samples=5))
    assert 0.002 <= t_slow.median_s < 0.02 and t_fast.median_s < 0.001
    assert t_slow.samples == t_fast.samples >= 5 and t_fast.number > 1
    assert "ab" in "".join(calls[4:]) and t_slow.q25_s <= t_slow.median_s <= t_slow.q75_s


def test_measure_stops_at_the_time_cap():
    start = time.perf_counter()
    t, = bench.measure([lambda: time.sleep(0.02)], lambda: None, bench.Settings(cap_s=0.1, min_samples=3))
    assert time.perf_counter() - start < 1.0 and t.samples >= 3


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_only_on_a_terminal_and_never_in_ci(monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    out = Tty()
    p = bench.Progress(4, out)
    for label in ("a", "b", "c"):
        p.tick(label)
    assert "[" in out.getvalue() and "3/4" not in out.getvalue() and "2/4 ETA" in out.getvalue()
    assert all(len(line) <= 80 for line in out.getvalue().split("\r"))
    quiet = io.StringIO()
    bench.Progress(4, quiet).tick("a")
    assert quiet.getvalue() == ""
    monkeypatch.setenv("CI", "true")
    ci = Tty()
    bench.Progress(4, ci).tick("a")
    assert ci.getvalue() == ""


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> tuple[dict, Path]:
    """A real quick run: relu and conv2d (small) and the Figure 5 step on every backend that loads;
    the document it returned and the bench.json it wrote."""
    out = tmp_path_factory.mktemp("bench") / "bench.json"
    settings = bench.Settings(cap_s=0.05, min_samples=3, max_samples=10, sample_s=0.001, peak_n_cpu=256,
                              peak_n_gpu=1024, stream_mib_cpu=16, stream_mib_gpu=64)
    doc = bench.run_bench(None, ["relu", "conv2d", "traffic_sign_cnn"], ["small"], settings, out, stream=io.StringIO())
    return doc, out


@pytest.fixture(scope="module")
def doc(run) -> dict:
    return run[0]


def test_bench_json_has_machine_devices_versions_and_date(doc):
    assert doc["complete"] and doc["kind"] == "nutshell-bench" and doc["spec_version"] == spec_mod.load().version
    assert doc["machine"]["cpus"] and "cpu" in doc["devices"] and doc["versions"]["numpy"] and doc["date"]
    assert doc["peak"]["cpu"]["gflops"] > 0 and doc["peak"]["cpu"]["library"] in doc["peak"]["cpu"]["libraries"]
    assert doc["peak"]["cpu"]["bandwidth_gbs"] > 0 and doc["peak"]["cpu"]["bandwidth_library"] == "numpy"


def test_every_backend_is_measured_or_says_why(doc):
    for name in doc["backends"]:
        mine = [r for r in doc["results"] if r.backend == name]
        assert len(mine) == 5, name                 # relu and conv2d forward + vjp, one model step
        for r in mine:
            if r.outcome is BenchOutcome.OK:
                assert r.gflops > 0 and r.time["median_s"] > 0 and r.flops > 0
            else:
                assert r.message


def test_bench_json_reads_back_as_the_records_written(run):
    """bench.json holds every record as the run made it; the report and compare read it back."""
    from nutshell.conformance.report import load_bench

    doc, out = run
    assert load_bench(out)["results"] == doc["results"]
    ok = next(r for r in json.loads(out.read_text())["results"] if r["outcome"] == "ok")
    assert {"flops", "time", "gflops", "peak_share", "baseline", "overhead"} <= set(ok) and "message" not in ok


def test_forward_has_a_native_baseline_that_agrees(doc):
    for r in doc["results"]:
        if r.outcome is BenchOutcome.OK and r.direction == "forward" and r.backend in ("torch", "cupy", "onnx"):
            assert r.level == "native" and r.overhead > 0, r
            assert "skipped" not in r.baseline, r.baseline


def test_table_fits_80_columns(doc):
    text = bench.table(doc)
    assert "conv2d" in text and "%peak" in text
    assert max(len(line) for line in text.splitlines()) <= 80


def test_ratios_are_reference_time_over_backend_time():
    def rec(backend, direction, ms, outcome=BenchOutcome.OK):
        return BenchResult(backend=backend, concept="conv2d", size="large", direction=direction, outcome=outcome,
                           time={"median_s": ms / 1e3})

    results = [rec("cupy", "forward", 20.0), rec("torch", "forward", 10.0), rec("onnx", "forward", 5.0),
               rec("cupy", "vjp", 1.0, BenchOutcome.ERROR), rec("torch", "vjp", 4.0), rec("onnx", "vjp", 8.0)]
    lines = bench.ratios(results)
    assert lines[0].startswith("throughput relative to torch")
    assert [(line.split()[2], line.split()[3], line.split()[4]) for line in lines[1:]] == [
        ("forward", "cupy", "0.50×"), ("forward", "onnx", "2.00×"), ("vjp", "onnx", "0.50×")]
    assert bench.ratios([r for r in results if r.backend != "torch"]) == []


def test_a_failing_backend_is_recorded_and_the_run_goes_on(tmp_path):
    """A backend whose conv2d raises: its records say error, the others still run."""
    env_backend = "broken=bench_broken_backend:BrokenBackend"
    (tmp_path / "bench_broken_backend.py").write_text(
        "from nutshell.backends.torch_impl import TorchBackend\n\n\n"
        "class BrokenBackend(TorchBackend):\n"
        "    name = 'broken'\n\n"
        "    def _op(self, concept, attrs):\n"
        "        raise RuntimeError('no kernel today')\n")
    import os

    env = dict(os.environ, NUTSHELL_BACKENDS=env_backend, PYTHONPATH=f"{tmp_path}:{os.environ.get('PYTHONPATH', '')}",
               CI="true")
    r = subprocess.run([sys.executable, "-m", "nutshell.cli", "bench", "--quick", "-b", "broken", "-b", "torch",
                        "--concept", "relu", "--size", "small", "-o", str(tmp_path / "b.json")],
                       capture_output=True, text=True, env=env, timeout=600, cwd=tmp_path)
    assert r.returncode == 1, r.stdout + r.stderr
    doc = json.loads((tmp_path / "b.json").read_text())
    broken = [x for x in doc["results"] if x["backend"] == "broken"]
    assert broken and all(x["outcome"] == "error" and "no kernel today" in x["message"] for x in broken)
    assert all(x["outcome"] == "ok" for x in doc["results"] if x["backend"] == "torch")
    assert "error: BackendFailure" in r.stdout          # the table (80 columns) names the error class
