"""A command line a CI can trust (issue 19): exit 0 only when the command did what was asked, 2 with
the valid names and the closest one for a name that does not exist, 1 when nothing ran or a
requested backend cannot; no earlier result lost to a typo; help with its examples line by line."""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from nutshell import backends, cli
from nutshell.conformance import bench
from nutshell.errors import AttrError
from nutshell.training import fit

ROOT = Path(__file__).resolve().parents[1]
BROKEN = "broken=nutshell_no_such_module:Backend"   # registered, but it cannot load


@pytest.fixture
def broken(monkeypatch) -> str:
    """A backend that is registered (NUTSHELL_BACKENDS) but cannot load here."""
    monkeypatch.setenv("NUTSHELL_BACKENDS", BROKEN)
    return "broken"


def main(capsys, *argv: str) -> tuple[int, str, str]:
    """``nutshell ARGV`` in this process: (exit status, stdout, stderr); argparse's exits included."""
    try:
        code = cli.main(list(argv))
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


# --- names that do not exist: exit 2, the valid names and the closest, before anything runs -----------

@pytest.mark.parametrize(("argv", "closest", "valid"), [
    (["spec", "verify", "--no-tf", "--concept", "conv3d"], "conv2d", "conv2d_fft"),
    (["spec", "generate", "--check", "--concept", "conv3d"], "conv2d", "max_pool2d"),
    (["list", "-b", "torhc"], "torch", "onnx"),
    (["bench", "-b", "torhc", "--concept", "conv2d"], "torch", "cupy"),
    (["bench", "--concept", "conv2dd"], "conv2d", "traffic_sign_cnn"),
    (["train", "digits_cnm"], "digits_cnn", "lstm_classifier"),
    (["train", "mlp", "-b", "torhc"], "torch", "onnx"),
    (["export", "googlenat", "-o", "never.onnx"], "googlenet", "digits_cnn"),
    (["check", "never.onnx", "-b", "torhc"], "torch", "cupy"),
])
def test_an_unknown_name_exits_2_with_the_closest_and_the_valid_names(capsys, tmp_path, monkeypatch, argv, closest,
                                                                     valid):
    monkeypatch.chdir(tmp_path)
    code, out, err = main(capsys, *argv)
    assert code == 2, out + err
    assert f"did you mean '{closest}'?" in err and valid in err
    assert len(err.strip().splitlines()) == 1                  # one line of reason
    assert list(tmp_path.iterdir()) == []                      # nothing written, not even reports/


def test_a_misspelt_device_as_backend_points_at_device(capsys):
    code, _, err = main(capsys, "list", "-b", "cuda")
    assert code == 2 and "--device cuda" in err


def test_a_valid_concept_is_still_verified(capsys):
    code, out, _ = main(capsys, "spec", "verify", "--no-tf", "--concept", "relu")
    assert code == 0 and re.search(r"^relu\s+\d+\s", out, re.M) and "1/1 concepts" in out


# --- a requested backend that cannot run: exit 1 ---------------------------------------------------

def test_list_exits_1_when_the_requested_backend_cannot_load(capsys, broken):
    code, out, err = main(capsys, "list", "-b", broken)
    assert code == 1 and "broken" in out and "unavailable" in out and "unavailable" in err


def test_bench_that_measures_nothing_keeps_the_earlier_figures(capsys, tmp_path, broken):
    earlier = tmp_path / "bench.json"
    earlier.write_text('{"kind": "nutshell-bench", "results": ["8.7 minutes of figures"]}')
    before = earlier.read_bytes()
    code, _, err = main(capsys, "bench", "-b", broken, "--concept", "relu", "--quick", "--reports", str(tmp_path))
    assert code == 1 and "nothing was measured" in err
    assert earlier.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bench.json"]   # no partial file left behind


def test_bench_replaces_its_figures_only_when_it_measured_something(tmp_path):
    out = tmp_path / "bench.json"
    out.write_text("earlier figures")
    tiny = bench.Settings(cap_s=0.02, min_samples=3, max_samples=5, sample_s=0.001, peak_n_cpu=64, peak_n_gpu=64)
    doc = bench.run_bench(["cupy"], ["relu"], ["small"], tiny, out, device="cpu")
    written = json.loads(out.read_text())
    assert written["complete"] and len(written["results"]) == len(doc["results"]) == 2
    assert not bench.partial_path(out).exists()


def test_bench_reports_option_places_bench_json():
    args = cli.parser().parse_args(["bench", "--reports", "elsewhere"])
    assert args.reports == Path("elsewhere") and args.output is None


def test_check_exits_1_when_no_backend_can_run_the_model(capsys, tmp_path, broken):
    model = tmp_path / "mlp.onnx"
    assert main(capsys, "export", "mlp", "-o", str(model))[0] == 0
    code, _, err = main(capsys, "check", str(model), "-b", broken)
    assert code == 1 and "no backend" in err


# --- train ----------------------------------------------------------------------------------------

def test_train_json_writes_one_json_document_on_stdout(capsys, tmp_path):
    code, out, err = main(capsys, "train", "logistic_regression", "-b", "cupy", "--epochs", "1",
                          "-o", str(tmp_path / "p.npz"), "--json")
    assert code == 0
    doc = json.loads(out)                                      # the whole of stdout
    assert doc["model"] == "logistic_regression" and doc["backend"] == "cupy" and doc["steps"] > 0
    assert "epoch   1/1" in err


@pytest.mark.parametrize("epochs", ["0", "-3", "two"])
def test_train_refuses_fewer_than_one_epoch(capsys, epochs):
    code, _, err = main(capsys, "train", "logistic_regression", "-b", "cupy", "--epochs", epochs)
    assert code == 2 and "--epochs" in err and "≥ 1" in err


def test_the_library_refuses_zero_epochs_instead_of_the_spec_default():
    with pytest.raises(AttrError, match="epochs"):
        fit.train(backends.load("cupy", "cpu"), "logistic_regression", epochs=0)


# --- check --input and export googlenet -------------------------------------------------------------

def test_check_refuses_an_input_the_model_does_not_have(capsys, tmp_path):
    model = tmp_path / "mlp.onnx"
    assert main(capsys, "export", "mlp", "-o", str(model))[0] == 0
    np.save(tmp_path / "y.npy", np.zeros((1, 2), np.float32))
    code, _, err = main(capsys, "check", str(model), "-b", "cupy", "--input", f"y={tmp_path / 'y.npy'}")
    assert code == 2 and "no input named 'y'" in err and "inputs: x" in err


@pytest.mark.slow
def test_export_googlenet_writes_the_published_topology_and_check_runs_on_it(capsys, tmp_path):
    onnx = pytest.importorskip("onnx")
    path = tmp_path / "googlenet.onnx"
    assert main(capsys, "export", "googlenet", "-o", str(path))[0] == 0
    proto = onnx.load(path)
    ops = [n.op_type for n in proto.graph.node]
    assert ops.count("Conv") == 57 and ops.count("Concat") == 9 and ops.count("LRN") == 2   # Table 1, no aux heads

    def dims(v):
        return [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]

    assert dims(proto.graph.input[0]) == ["N", 3, 224, 224] and dims(proto.graph.output[0]) == ["N", 1000]
    code, out, _ = main(capsys, "check", str(path), "-b", "torch")
    assert code == 0 and "output prob:" in out and re.search(r"torch .* 0/1000 ", out)


def test_googlenet_refuses_parameters_it_cannot_take(capsys, tmp_path):
    code, _, err = main(capsys, "export", "googlenet", "-o", str(tmp_path / "g.onnx"), "--dtype", "float64")
    assert code == 2 and "--seed" in err and not (tmp_path / "g.onnx").exists()


# --- version and help -------------------------------------------------------------------------------

def test_version_is_the_package_version(capsys):
    declared = re.search(r'^version = "([^"]+)"$', (ROOT / "pyproject.toml").read_text(), re.M).group(1)
    code, out, _ = main(capsys, "--version")
    assert code == 0 and out.strip() == f"nutshell {declared}"


def _subparsers(p: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    return next(a.choices for a in p._actions if isinstance(a, argparse._SubParsersAction))


@pytest.mark.parametrize("command", ["list", "bench", "train", "check"])
def test_backend_and_device_options_have_help(command):
    options = {s: a for a in _subparsers(cli.parser())[command]._actions for s in a.option_strings}
    for flag in ("--backend", "--device"):
        assert options[flag].help, f"{command} {flag}"


@pytest.mark.parametrize("command", ["list", "run", "bench", "report", "compare", "train", "export", "check",
                                     "new-backend"])
def test_help_shows_examples_one_per_line(capsys, command):
    code, out, _ = main(capsys, command, "--help")
    assert code == 0
    examples = out.split("\nexamples:\n", 1)[1].splitlines()
    assert len(examples) >= 2 and all(line.startswith(("  nutshell ", "  pip ")) for line in examples), examples


def test_help_keeps_the_description_layout(capsys):
    _, out, _ = main(capsys, "train", "--help")
    assert "\n    nutshell train digits_cnn -b torch -o digits.npz --json\n" in out


def _commands(lines: list[str]) -> list[str]:
    """Every ``nutshell ...`` command in ``lines`` (and their && chains), comments and redirections cut."""
    parts = (part.split(" > ")[0].strip() for line in lines for part in line.split("#")[0].split("&&"))
    return list(dict.fromkeys(part for part in parts if part.startswith("nutshell ") and "COMMAND" not in part))


def _documented() -> list[str]:
    """The commands of the README's sh blocks and of every command's examples."""
    blocks = re.findall(r"```sh\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    return _commands([line for b in blocks for line in b.splitlines()]
                     + [line for lines in cli.EXAMPLES.values() for line in lines])


@pytest.mark.parametrize("command", _documented())
def test_every_documented_command_parses_and_names_real_backends(command):
    args = cli.parser().parse_args(shlex.split(command)[1:])
    requested = args.backend if isinstance(getattr(args, "backend", None), list) else [getattr(args, "backend", None)]
    backends.check_names([b for b in requested if b and b not in ("mybackend", "name")])


def _readme_blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", (ROOT / "README.md").read_text(), re.S)


# a file a README block reads, made as the README's commands before the block make it
_MADE_BY = {"digits.onnx": ["export", "digits_cnn", "-o", "digits.onnx"]}   # the spec's initialisation, not
#                                                                              --params digits.npz: no training


@pytest.mark.slow
@pytest.mark.parametrize("block", _readme_blocks("python"), ids=lambda b: b.splitlines()[-1][:40].strip())
def test_every_readme_python_block_runs_on_its_own(block, tmp_path):
    """Each ```python block of the README, alone in a fresh interpreter (its imports its own), in an
    empty folder that holds only the files the README's commands before it write."""
    wanted = sorted(set(re.findall(r'nutshell\.load\("(\w+)"', block)))
    missing = backends.available(wanted)[1]
    if missing:
        pytest.skip(f"a backend the block loads cannot load here: {missing}")
    for name, argv in _MADE_BY.items():
        if f'"{name}"' in block:
            made = subprocess.run([sys.executable, "-m", "nutshell.cli", *argv], cwd=tmp_path, capture_output=True,
                                  text=True, timeout=300)
            assert made.returncode == 0, made.stdout + made.stderr
    r = subprocess.run([sys.executable, "-c", block], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, block + r.stderr[-3000:]


def _readme_pytest_commands() -> list[str]:
    lines = (line.split("#")[0].strip() for b in _readme_blocks("sh") for line in b.splitlines())
    return [line for line in lines if line.startswith("pytest conformance")]


def test_the_readme_documents_pytest_commands_of_the_conformance_suite():
    assert len(_readme_pytest_commands()) >= 2


@pytest.mark.slow
@pytest.mark.parametrize("command", _readme_pytest_commands())
def test_every_readme_pytest_conformance_command_selects_checks(command):
    """Run from the repository's root, as the README means: every option exists and the -k
    expression selects at least one check (collected only, nothing run or written)."""
    r = subprocess.run([sys.executable, "-m", *shlex.split(command), "--collect-only", "-q", "-p", "no:cacheprovider"],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    collected = re.search(r"^(\d+)(?:/\d+)? tests? collected", r.stdout, re.M)
    assert collected and int(collected[1]) > 0, r.stdout[-3000:]


# --- TensorFlow's start-up log ------------------------------------------------------------------------

@pytest.mark.slow
def test_the_tf_backend_silences_tensorflow_start_up_lines():
    pytest.importorskip("nutshell_tf_backend", reason="pip install --no-deps -e examples/tf_backend")
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    code = "import os, nutshell_tf_backend; print(os.environ['TF_CPP_MIN_LOG_LEVEL'])"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "2"                             # errors still print
    assert "cpu_feature_guard" not in r.stderr and "InitializeLog" not in r.stderr, r.stderr
