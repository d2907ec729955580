"""``nutshell hunt``: its draws, its worker isolation, and a planted bug the project's fuzz misses.

The planted backend (tests/hunt_backends.py, ``blocked``) loses one input channel of conv2d when
a group has 17…31 or 33 channels; everything else is CuPy's backend (NumPy without a GPU).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

from nutshell import backends
from nutshell import spec as spec_mod
from nutshell.conformance import fuzz, hunt, hunt_cases
from nutshell.conformance.hunt_cases import Case
from nutshell.conformance.hunt_minimise import Minimiser, Verdict, judge
from nutshell.conformance.hunt_worker import Died, Request, Worker

HERE = Path(__file__).resolve().parent
PLANTED = "blocked=hunt_backends:BlockedBackend"
POISONED = "poisoned=hunt_backends:PoisonedBackend"
FAULTY = "faulty=faulty_backend:FaultyBackend"
SKEWED = "skewed=planted_backends:SkewedBackend"
SPEC = spec_mod.load()


@pytest.fixture
def registered(monkeypatch):
    """The planted and the faulty backend registered for this process and the workers it starts."""
    monkeypatch.setenv("NUTSHELL_BACKENDS", f"{PLANTED},{FAULTY},{POISONED}")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.syspath_prepend(str(HERE))


def conv_case(cg: int, **dims) -> Case:
    d = {"N": 1, "Cg": cg, "Og": 2, "kh": 1, "kw": 1, "bias": 0, "H": 2, "W": 2} | dims
    return Case("conv2d", "forward", "float32", d, {"stride": [1, 1], "pads": [0, 0, 0, 0], "dilation": [1, 1],
                                                     "groups": 1})


@pytest.mark.parametrize("cid", sorted(SPEC.concepts))
def test_every_draw_is_a_valid_call(cid):
    concept = SPEC.concept(cid)

    @settings(max_examples=15, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(hunt_cases.cases(concept, "vjp", "float64"))
    def prop(case):
        assert hunt_cases.valid(concept, case) and hunt_cases.work(case) <= hunt_cases.MAX_WORK
        data = hunt_cases.data(concept, case)
        assert {f"in.{k}" for k in case.shapes()} <= set(data)

    prop()


@settings(max_examples=30, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(hunt_cases.cases(SPEC.concept("conv2d"), "vjp", "float32"))
def test_neighbours_are_valid_and_simpler(case):
    concept = SPEC.concept("conv2d")
    for n in hunt_cases.neighbours(concept, case):
        assert hunt_cases.valid(concept, n) and n != case
        assert sum(n.dims.values()) <= sum(case.dims.values())


def test_conv_draws_reach_both_sides_of_the_simd_blocks():
    seen = set()

    @settings(max_examples=300, deadline=None, database=None, derandomize=True, suppress_health_check=list(HealthCheck))
    @given(hunt_cases.cases(SPEC.concept("conv2d"), "vjp", "float32"))
    def prop(case):
        seen.update({("Cg", case.dims["Cg"]), ("k", case.dims["kh"]), ("g", case.attrs["groups"])})

    prop()
    assert {("Cg", 15), ("Cg", 16), ("Cg", 17), ("Cg", 32), ("Cg", 33), ("k", 1), ("g", 2)} <= seen


@pytest.mark.parametrize("text, seconds", [("90", 90), ("90s", 90), ("10m", 600), ("1.5h", 5400)])
def test_budget(text, seconds):
    assert hunt.budget(text) == seconds


@pytest.mark.parametrize("text", ["0", "-1m", "ten", "10d"])
def test_budget_refuses(text):
    with pytest.raises(Exception, match="--budget"):
        hunt.budget(text)


def test_the_planted_bug_is_real_and_the_fuzz_misses_it(registered):
    b = backends.load("blocked", device="cpu")
    concept = SPEC.concept("conv2d")
    count = fuzz.fuzz_concept(b, concept, SPEC.tolerance, examples=40)   # raises AssertionError if it caught it
    assert count.valid > 0
    w = Worker("blocked", "cpu")
    try:
        assert judge(w, concept, conv_case(17), SPEC.tolerance).kind == "wrong"
        assert judge(w, concept, conv_case(16), SPEC.tolerance).kind is None
    finally:
        w.close()


def test_a_crash_and_a_hang_are_caught_and_attributed(registered):
    w = Worker("faulty", "cpu", timeout=5)
    relu = SPEC.concept("relu")
    ok = Case("relu", "forward", "float32", {"d0": 2})
    assert judge(w, relu, ok, SPEC.tolerance).kind is None
    v = judge(w, relu, Case("relu", "forward", "float32", {"d0": 3}), SPEC.tolerance)
    assert v.kind == "crash" and "SIGSEGV" in v.message and [c.dims for c in v.history] == [{"d0": 2}, {"d0": 3}]
    w = Worker("faulty", "cpu", timeout=3)
    v = judge(w, SPEC.concept("sigmoid"), Case("sigmoid", "forward", "float32", {"d0": 4}), SPEC.tolerance)
    assert v.kind == "hang" and w.proc.returncode == -signal.SIGKILL


def test_a_crash_is_pinned_on_the_culprit_in_fresh_processes(registered):
    """The worker died on a harmless call after the culprit: replaying the history finds the culprit."""
    relu = SPEC.concept("relu")
    culprit, after = Case("relu", "forward", "float32", {"d0": 3}), Case("relu", "forward", "float32", {"d0": 5})
    m = Minimiser("faulty", "cpu", relu, SPEC.tolerance, timeout=10, deadline=float("inf"), log=lambda s: None)
    died = Verdict(after, float("inf"), "crash", "worker crash", history=[after, culprit, after])
    v = m.culprit(died, repeat=1)
    assert v is not None and v.kind == "crash" and v.case == culprit and m.fresh_runs >= 2


def test_a_delayed_abort_is_pinned_on_the_call_that_caused_it(registered):
    """Heap damage noticed one call later: the worker dies on an innocent call; delta debugging over
    its history in fresh workers, then the culprit repeated alone, names the call that did it."""
    relu = SPEC.concept("relu")
    ok, culprit, innocent = (Case("relu", "forward", "float32", {"d0": n}) for n in (2, 3, 5))
    w = Worker("poisoned", "cpu")
    for case in (ok, culprit):
        assert judge(w, relu, case, SPEC.tolerance).kind is None
    died = judge(w, relu, innocent, SPEC.tolerance)
    assert died.kind == "crash" and "SIGABRT" in died.message and died.case == innocent
    m = Minimiser("poisoned", "cpu", relu, SPEC.tolerance, timeout=10, deadline=float("inf"), log=lambda s: None)
    v = m.culprit(died, repeat=len(died.history))
    assert v is not None and v.kind == "crash" and v.case == culprit


def test_a_worker_answers_each_request_by_its_id(registered):
    w = Worker("blocked", "cpu")
    try:
        reply = w.call(Request(7, "relu", "forward", {"x": np.array([-1.0, 2.0], np.float32)}, {}))
        assert not isinstance(reply, Died) and reply.id == 7 and reply.out["y"].tolist() == [0.0, 2.0]
        assert w.hello["unsupported"]["conv2d"] == {"float32": None, "float64": None}
    finally:
        w.close()


def run_cli(tmp_path: Path, *args: str, timeout: float = 900, registry: str = PLANTED) -> subprocess.CompletedProcess:
    env = dict(os.environ, NUTSHELL_BACKENDS=registry,
               PYTHONPATH=os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]))
    return subprocess.run([sys.executable, "-m", "nutshell.cli", *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_hunt_finds_minimises_and_bundles_the_planted_bug(tmp_path):
    r = run_cli(tmp_path, "hunt", "-b", "blocked", "--concept", "conv2d", "--budget", "120s", "--seed", "0")
    assert r.returncode == 1, r.stdout + r.stderr
    last = r.stdout.strip().splitlines()[-1]
    folder = tmp_path / last.split("bundle: ")[1]
    report = json.loads((tmp_path / "reports" / "hunt.json").read_text())["backends"]["blocked"]
    found = Case.from_json(report["found"][0]["case"])
    assert found.dims["Cg"] > 16 and found.dims["Cg"] % 16 and found.concept == "conv2d"
    assert found.dims["N"] == 1 and found.dims["H"] == 1 and found.dims["W"] == 1 and found.dims["kh"] == 1
    assert json.loads((folder / "bundle.json").read_text())["fault"] == "backend"
    script = (folder / "repro.py").read_text()
    assert len(script.splitlines()) <= 25 and "through nutshell" in script and "import nutshell" in script
    again = subprocess.run([sys.executable, "repro.py"], cwd=folder, capture_output=True, text=True, timeout=300,
                           env=dict(os.environ, NUTSHELL_BACKENDS=PLANTED, PYTHONPATH=str(HERE)))
    assert again.returncode == 1 and "bound usage" in again.stderr, again.stderr
    assert set(np.load(folder / "case.npz").files) >= {"in.x", "in.w", "out.y", "err.y"}
    assert report["worst_usage"]["conv2d"]["usage"] <= 1


@pytest.mark.slow
def test_repro_of_a_failed_check_writes_a_failing_bundle(tmp_path):
    run = run_cli(tmp_path, "run", "-b", "skewed", "-k", "relu and grid and float32 and not vjp",
                  timeout=600, registry=SKEWED)
    assert run.returncode == 1, run.stdout + run.stderr
    r = run_cli(tmp_path, "repro", "relu[skewed-grid-float32]", registry=SKEWED)
    assert r.returncode == 0, r.stdout + r.stderr
    folder = tmp_path / r.stdout.strip().splitlines()[-1].split("bundle: ")[1]
    again = subprocess.run([sys.executable, "repro.py"], cwd=folder, capture_output=True, text=True, timeout=300,
                           env=dict(os.environ, NUTSHELL_BACKENDS=SKEWED, PYTHONPATH=str(HERE)))
    assert again.returncode == 1 and "bound usage" in again.stderr, again.stderr


def test_repro_without_a_run_is_refused(tmp_path):
    r = run_cli(tmp_path, "repro", "relu[torch-grid-float32]")
    assert r.returncode == 2 and "nutshell:" in r.stderr


@pytest.mark.parametrize("args, words", [(["-b", "nosuch"], "nosuch"),
                                         (["-b", "blocked", "--concept", "conv2dd"], "conv2d"),
                                         (["-b", "blocked", "--budget", "soon"], "--budget")])
def test_bad_arguments_are_refused_with_one_line(tmp_path, args, words):
    r = run_cli(tmp_path, "hunt", *args)
    assert r.returncode == 2 and words in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert not (tmp_path / "reports").exists()


def test_a_winner_or_a_kink_decided_by_rounding_is_not_a_finding():
    """10.37499967 and 10.3750003 are one float32 number: which piece wins, and on which side of
    relu's kink their difference falls, is rounding's choice."""
    arrays = {"in.x": np.ones((1, 1)), "in.w": np.array([[10.37499967, 10.3750003, 1.0, 2.0]]), "in.b": np.zeros(4)}
    case = Case("maxout", "vjp", "float32", {"N": 1, "I": 1, "O": 2}, {"pieces": 2})
    tol = SPEC.tolerance
    assert hunt_cases.ambiguous(case, arrays, tol)
    assert not hunt_cases.ambiguous(replace(case, dtype="float64"), arrays, tol)
    assert not hunt_cases.ambiguous(case, arrays | {"in.w": np.array([[10.0, 10.5, 1.0, 2.0]])}, tol)
    layer = Case("layer", "vjp", "float32", {"N": 1, "I": 2, "O": 1}, {"activation": "relu"})
    kink = {"in.x": np.array([[1.0, 1.0]]), "in.w": np.array([[10.37499967], [-10.3750003]]), "in.b": np.zeros(1)}
    assert hunt_cases.ambiguous(layer, kink, tol)
    assert not hunt_cases.ambiguous(replace(layer, dtype="float64"), kink, tol)
    assert not hunt_cases.ambiguous(replace(layer, attrs={"activation": "tanh"}), kink, tol)
    bce = Case("binary_cross_entropy", "vjp", "float32", {"N": 1})           # no x: nothing to decide
    assert not hunt_cases.ambiguous(bce, {"in.logits": np.zeros(1), "in.targets": np.zeros(1)}, tol)


def test_a_relu_kink_inside_an_inception_module_decided_by_rounding_is_not_a_finding():
    """The 3×3 branch's 1×1 reduce gives z = 10.37499967 − 10.3750003, 0 in float32: its ReLU's
    side, and every gradient behind it, is rounding's choice there, not in float64."""
    concept = SPEC.concept("inception")
    dims = {"N": 1, "C": 1, "H": 3, "W": 3, **dict.fromkeys(("o1", "r3", "o3", "r5", "o5", "op"), 1)}
    case = Case("inception", "vjp", "float32", dims)
    arrays = {f"in.{k}": np.full(s, 0.5) for k, s in case.shapes().items()}
    arrays |= {"in.x": np.ones((1, 1, 3, 3)), "in.w3r": np.full((1, 1, 1, 1), 10.37499967),
               "in.b3r": np.array([-10.3750003])}
    assert hunt_cases.valid(concept, case)
    assert hunt_cases.ambiguous(case, arrays, SPEC.tolerance)
    assert not hunt_cases.ambiguous(replace(case, dtype="float64"), arrays, SPEC.tolerance)
    assert not hunt_cases.ambiguous(case, arrays | {"in.b3r": np.array([-5.0])}, SPEC.tolerance)


def test_a_backend_that_cannot_load_is_one_line(tmp_path):
    r = run_cli(tmp_path, "hunt", "-b", "broken", registry="broken=no_such_module_here:Nothing")
    assert r.returncode == 2 and "broken" in r.stderr and "Traceback" not in r.stderr, r.stderr
