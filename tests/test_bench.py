"""``nutshell bench``: the spec's shapes and FLOP formulas, the timer, the progress bar, the table,
and a real run that writes bench.json."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from nutshell import spec as spec_mod
from nutshell.conformance import bench, timing
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


# ------------------------------------------------------------------ spread, steadiness, load

def test_summary_states_rounds_quartiles_iqr_and_outliers():
    """Inclusive quartiles of 1..9 and 100: positions 2.25 and 6.75 of the sorted rounds."""
    t = timing.summarize([float(v) for v in (7, 1, 2, 100, 3, 4, 5, 6, 8, 9)], number=4)
    assert (t.samples, t.number, t.min_s, t.max_s, t.median_s) == (10, 4, 1.0, 100.0, 5.5)
    assert (t.q25_s, t.q75_s, t.iqr_s) == (3.25, 7.75, 4.5)
    assert t.outliers == 1                        # 100 > 7.75 + 1.5·4.5; 1 > 3.25 − 6.75
    assert t.spread == pytest.approx(4.5 / 5.5) and t.unsteady
    d = t.to_json()
    assert d["iqr_s"] == 4.5 and d["outliers"] == 1 and d["unsteady"] is True and d["samples"] == 10


def test_a_tight_figure_of_enough_rounds_is_steady():
    rounds = [1.0 + 0.001 * (i % 7) for i in range(40)]
    t = timing.summarize(rounds, number=1)
    assert not t.unsteady and t.outliers == 0 and t.spread < 0.01


def test_zero_spread_over_too_few_rounds_is_unsteady():
    """The issue's "32.00 ms ± 0 %": three equal rounds say nothing about the median."""
    three = timing.summarize([0.032] * 3, number=1)
    assert three.spread == 0 and three.unsteady
    assert not timing.summarize([0.032] * timing.MIN_ROUNDS, number=1).unsteady


@pytest.mark.parametrize("rounds, spread, expected", [
    (timing.MIN_ROUNDS - 1, 0.0, True), (timing.MIN_ROUNDS, 0.0, False), (50, timing.MAX_SPREAD, False),
    (50, timing.MAX_SPREAD * 1.001, True), (1000, 13.18, True)])
def test_unsteady_below_the_rounds_or_above_the_spread(rounds, spread, expected):
    assert timing.is_unsteady(rounds, spread) is expected


def test_unsteady_reads_a_records_verdict_or_derives_it():
    assert timing.unsteady({"median_s": 1.0, "unsteady": False, "samples": 2}) is False
    assert timing.unsteady({"median_s": 1.0, "q25_s": 0.5, "q75_s": 1.5, "samples": 40}) is True
    assert timing.unsteady({"median_s": 1.0, "q25_s": 0.99, "q75_s": 1.01, "samples": 40}) is False
    assert timing.unsteady({"median_s": 1.0}) is None and timing.unsteady(None) is None


def test_machine_load_is_the_cores_other_processes_used():
    start = timing.CpuClock(wall_s=0.0, busy_s=100.0, own_s=10.0)
    busy = timing.machine_load(start, timing.CpuClock(10.0, 125.0, 20.0), cores=2)
    assert busy == {"cores": 2, "others": 1.5, "seconds": 10.0, "loaded": True}      # (25 − 10) / 10 s
    quiet = timing.machine_load(start, timing.CpuClock(10.0, 111.0, 20.0), cores=2)
    assert quiet["others"] == 0.1 and not quiet["loaded"]                            # 5% of two cores
    assert timing.machine_load(None, start, 2) is None and timing.machine_load(start, start, 2) is None


def test_cpu_clock_counts_this_process():
    a = timing.cpu_clock()
    if a is None:
        pytest.skip("no /proc/stat here")
    sum(i * i for i in range(300_000))
    b = timing.cpu_clock()
    assert b.own_s > a.own_s and b.busy_s >= a.busy_s and b.wall_s > a.wall_s


# ------------------------------------------------------------------------- the printed table

def _time(ms: float, rounds: int = 40, spread: float = 0.02) -> dict:
    t = timing.summarize([ms / 1e3 * (1 + spread * (i / (rounds - 1) - 0.5) * 2) for i in range(rounds)], 1)
    return t.to_json()


def _doc(load: dict | None) -> dict:
    def rec(backend, concept, ms, base_ms, canon, **kw):
        canon_s = canon(base_ms).get("time", {"median_s": base_ms / 1e3})["median_s"]
        return BenchResult(backend=backend, concept=concept, size="large", direction="forward", flops=1e9,
                           gflops=1e9 / (ms / 1e3) / 1e9, peak_share=0.5, time=_time(ms, **kw),
                           baseline={"library": backend, "call": "own", "time": _time(base_ms)},
                           overhead=ms / base_ms, canonical=canon(base_ms),
                           canonical_ratio=ms / 1e3 / canon_s,
                           flops_basis="direct convolution" if concept == "conv2d_fft" else None)

    same = lambda ms: {"library": "torch", "call": "F", "same_as": "baseline"}  # noqa: E731
    onnx = lambda ms: {"library": "onnxruntime", "call": "one-node ONNX model: Conv",  # noqa: E731
                       "time": _time(ms / 1.25, rounds=3)}
    results = [rec("torch", "conv2d", 10.0, 10.0, same), rec("onnx", "conv2d", 12.0, 11.0, onnx, spread=0.4),
               rec("torch", "conv2d_fft", 30.0, 30.0, same)]
    return {"peak": {}, "results": results, "unavailable": {}, "load": load}


def test_the_table_shows_both_ratios_and_marks_unsteady_and_effective_figures():
    text = bench.table(_doc({"cores": 2, "others": 1.5, "seconds": 60.0, "loaded": True}))
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 80
    assert "own×" in lines[0] and "can×" in lines[0] and "rounds" in lines[0] and "out" in lines[0]
    torch_row = lines[2].split()
    assert torch_row[:2] == ["fwd", "torch"] and torch_row[5:7] == ["1.000", "1.000"] and torch_row[-2:] == ["40", "0"]
    onnx_row = lines[3]
    assert "1.091 " in onnx_row and "1.364~" in onnx_row and "40%~" in onnx_row   # canonical: 3 rounds
    assert "50.00†" in lines[5] and "50.00 " in lines[2]
    assert any(line.startswith("† %peak at a direct convolution's FLOPs") for line in lines)
    assert any("(can× = own× for torch" in line for line in lines)
    assert "~ unsteady: 2 of 7 figures (< 5 rounds or ±IQR > 10%)" in text
    assert "machine loaded: other processes used 1.5 of 2 cores" in text


def test_a_quiet_machine_says_so_and_nothing_is_marked():
    doc = _doc({"cores": 2, "others": 0.01, "seconds": 60.0, "loaded": False})
    doc["results"] = [doc["results"][0]]
    text = bench.table(doc)
    summary = "~ unsteady: 0 of 2 figures (< 5 rounds or ±IQR > 10%)"
    assert summary in text and "~" not in text.replace(summary, "") and "machine quiet" in text
    assert "†" not in text and "machine loaded" not in text


# ----------------------------------------------------------- the bare calls beside the backend

def test_a_bare_call_that_disagrees_is_not_timed_and_says_why():
    pytest.importorskip("torch")
    from nutshell import backends

    b = backends.load("torch", device="cpu")
    x = np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 4)
    job = bench.Job("forward", "native", lambda: None, 12.0, lambda base: base.forward("relu", {}, {"x": x}),
                    lambda base: base.call)
    entry, call = bench._bare(job, b.baseline(), [np.maximum(x, 0)])
    assert call is not None and entry == {"library": "torch", "call": b.baseline().call}
    entry, call = bench._bare(job, b.baseline(), [np.maximum(x, 0) + 1])
    assert call is None and entry["skipped"] == "its result disagrees with the backend's"


def test_conv2d_fft_records_its_flops_basis():
    pytest.importorskip("torch")
    from nutshell import backends

    b = backends.load("torch", device="cpu")
    fft, conv = (next(iter(bench.cases(bench.load_entries(), [name], ["small"]))) for name in ("conv2d_fft", "conv2d"))
    assert bench._record(b, fft, "forward", "native").flops_basis == "direct convolution"
    assert bench._record(b, conv, "forward", "native").flops_basis is None


def test_every_figure_states_its_spread(doc):
    for r in doc["results"]:
        if r.outcome is not BenchOutcome.OK:
            continue
        for t in (r.time, (r.baseline or {}).get("time"), (r.canonical or {}).get("time")):
            if t is not None:
                assert isinstance(t["unsteady"], bool) and t["outliers"] >= 0 and t["q25_s"] <= t["q75_s"], r
                assert t["iqr_s"] == pytest.approx(t["q75_s"] - t["q25_s"]) and t["samples"] >= 3
    assert doc["load"] is None or doc["load"]["cores"] >= 1


def test_canonical_calls_beside_the_own_baseline(doc):
    """ONNX: a one-node Conv model timed on its own; torch and cupy: the own baseline is the
    canonical call, said once; no canonical vjp for ONNX (no gradient operators)."""
    found = set()
    for r in doc["results"]:
        if r.outcome is not BenchOutcome.OK or r.concept != "conv2d":
            continue
        if r.backend == "onnx" and r.direction == "forward":
            assert r.canonical["call"] == "one-node ONNX model: Conv" and "skipped" not in r.canonical, r.canonical
            assert r.canonical_ratio == pytest.approx(r.time["median_s"] / r.canonical["time"]["median_s"])
            found.add("onnx")
        elif r.backend == "onnx":
            assert r.canonical is None and r.canonical_ratio is None
        elif r.backend in ("torch", "cupy") and r.direction == "forward":
            assert r.canonical["same_as"] == "baseline" and "time" not in r.canonical
            assert r.canonical_ratio == r.overhead
            found.add(r.backend)
    assert found == {"onnx", "torch", "cupy"} & set(doc["backends"]), found
