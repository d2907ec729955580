"""``nutshell new-backend``, and backends added from outside through the ``nutshell.backends`` entry point.

The scaffold is written to a fresh directory, ``pip install -e``-ed into this environment for the
module's tests and uninstalled at the end, together with a package whose import raises.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import json
import subprocess
import sys

import pytest

from nutshell import scaffold
from nutshell import spec as spec_mod
from nutshell.errors import UnsupportedConcept

NAME, BROKEN = "scaffold_probe", "broken_probe"
DISTRIBUTIONS = ("nutshell-scaffold-probe-backend", "nutshell-broken-probe")
BROKEN_PYPROJECT = """\
[build-system]
requires = ["setuptools>=64"]
build-backend = "setuptools.build_meta"

[project]
name = "nutshell-broken-probe"
version = "0.0.1"

[project.entry-points."nutshell.backends"]
broken_probe = "nutshell_broken_probe:Backend"
"""


def nutshell(*args: str, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nutshell.cli", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=900)


def pip(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pip", "-q", *args], capture_output=True, text=True, timeout=600)


def cannot_build_editables() -> str | None:
    """Why ``pip install --no-build-isolation -e`` cannot work here, or None."""
    try:
        version = tuple(int(p) for p in importlib.metadata.version("setuptools").split(".")[:2])
    except importlib.metadata.PackageNotFoundError:
        return "setuptools is not installed (pip install 'setuptools>=70.1')"
    if version < (64, 0):
        return "setuptools < 64 cannot build editable wheels (pip install 'setuptools>=70.1')"
    if version < (70, 1) and importlib.util.find_spec("wheel") is None:
        return "setuptools < 70.1 needs the wheel package to build editables (pip install 'setuptools>=70.1')"
    return None


def scaffold_args(name: str, target) -> argparse.Namespace:
    return argparse.Namespace(name=name, dir=target)


# --- the scaffold on its own -------------------------------------------------------------------

@pytest.mark.parametrize("name", ["9lives", "My", "has-dash", "x" * 33, "torch"])
def test_bad_or_taken_names_are_refused(tmp_path, capsys, name):
    assert scaffold.run(scaffold_args(name, tmp_path / "pkg")) == 2
    assert not (tmp_path / "pkg").exists()
    assert name[:10] in capsys.readouterr().err


def test_an_existing_directory_is_never_overwritten(tmp_path, capsys):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "keep.txt").write_text("mine")
    assert scaffold.run(scaffold_args("fresh_name", tmp_path / "pkg")) == 2
    assert "already exists" in capsys.readouterr().err
    assert [p.name for p in (tmp_path / "pkg").iterdir()] == ["keep.txt"]


@pytest.mark.skipif(not (scaffold.CHECKOUT / "pyproject.toml").is_file(), reason="nutshell is not run from a checkout")
def test_the_checkout_is_refused(capsys):
    assert scaffold.run(scaffold_args("fresh_name", scaffold.CHECKOUT / "nutshell-fresh-name-backend")) == 2
    assert "inside the nutshell checkout" in capsys.readouterr().err


def test_every_concept_is_present_and_unsupported(tmp_path, monkeypatch):
    assert scaffold.run(scaffold_args("inproc_probe", tmp_path / "pkg")) == 0
    monkeypatch.syspath_prepend(str(tmp_path / "pkg"))
    try:
        module = importlib.import_module("nutshell_inproc_probe_backend")
        ops = importlib.import_module("nutshell_inproc_probe_backend.ops")
        b = module.InprocProbeBackend()
        concepts = spec_mod.load().concepts
        assert b.name == "inproc_probe" and b.device == "cpu" and b.concepts == frozenset()
        assert set(ops.CONCEPTS) == set(module.backend.CONCEPTS) == set(concepts)
        for cid in concepts:
            impl = ops.CONCEPTS[cid]
            assert impl == (getattr(ops, cid), getattr(ops, f"{cid}_vjp")), cid
            with pytest.raises(UnsupportedConcept, match="not implemented yet"):
                impl.forward({}, {})
            with pytest.raises(UnsupportedConcept, match="not implemented yet"):
                impl.vjp({}, {}, {})
    finally:
        for mod in [m for m in sys.modules if m.startswith("nutshell_inproc_probe_backend")]:
            del sys.modules[mod]


# --- installed from outside --------------------------------------------------------------------

@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """The scaffold and a broken package, pip-installed (editable) for this module, then removed."""
    why = cannot_build_editables()
    if why:
        pytest.skip(why)
    pip("uninstall", "-y", *DISTRIBUTIONS)                  # leftovers of an interrupted run
    root = tmp_path_factory.mktemp("outside")
    made = nutshell("new-backend", NAME, "--dir", str(root / "pkg"), cwd=root)
    assert made.returncode == 0, made.stderr
    broken = root / "broken"
    (broken / "nutshell_broken_probe").mkdir(parents=True)
    (broken / "pyproject.toml").write_text(BROKEN_PYPROJECT)
    (broken / "nutshell_broken_probe" / "__init__.py").write_text(
        'raise RuntimeError("this backend package is broken on purpose")\n')
    try:
        for where in (root / "pkg", broken):
            r = pip("install", "--no-deps", "--no-build-isolation", "-e", str(where))
            assert r.returncode == 0, r.stdout + r.stderr
        yield root / "pkg"
    finally:
        pip("uninstall", "-y", *DISTRIBUTIONS)


@pytest.fixture(scope="module")
def listing(installed, tmp_path_factory) -> str:
    r = nutshell("list", cwd=tmp_path_factory.mktemp("list"))
    assert r.returncode == 0, r.stderr
    return r.stdout


@pytest.mark.slow
def test_scaffold_is_listed_as_a_backend(listing):
    assert f"  {NAME:<8} on cpu" in listing


@pytest.mark.slow
def test_scaffold_lists_every_concept_unsupported(installed, tmp_path):
    r = nutshell("list", "-b", NAME, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    rows = {line.split()[0]: line.split()[1:] for line in r.stdout.splitlines() if line.split()}
    for cid in spec_mod.load().concepts:
        assert rows[cid] == ["-"], (cid, rows.get(cid))
        assert f"{NAME} {cid} float32: not implemented yet" in r.stdout


@pytest.mark.slow
def test_scaffold_run_reports_every_concept_unsupported_and_none_passed(installed, tmp_path):
    r = nutshell("run", "-b", NAME, cwd=tmp_path)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    doc = json.loads((tmp_path / "reports" / "results.json").read_text())
    mine = [rec for rec in doc["results"] if rec["backend"] == NAME]
    assert set(spec_mod.load().concepts) <= {rec["concept"] for rec in mine}       # and the models and claims
    assert {rec["outcome"] for rec in doc["results"]} == {"unsupported"}
    assert doc["summary"][NAME]["unsupported"] == doc["summary"][NAME]["total"] == len(mine) > 0


@pytest.mark.slow
def test_the_generated_tests_run_from_the_package_directory(installed):
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", "relu"],
                       capture_output=True, text=True, cwd=installed, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    last = r.stdout.strip().splitlines()[-1]
    assert "skipped" in last and "passed" not in last and "failed" not in last, last


@pytest.mark.slow
def test_a_broken_package_is_listed_as_unavailable_with_the_reason(listing):
    line = next(line for line in listing.splitlines() if line.strip().startswith(BROKEN))
    assert "unavailable" in line and "RuntimeError: this backend package is broken on purpose" in line


@pytest.mark.slow
def test_a_broken_package_does_not_stop_a_run_of_torch(installed, tmp_path):
    pytest.importorskip("torch")
    r = nutshell("run", "-b", "torch", "-b", BROKEN, "-k", "relu", cwd=tmp_path)
    assert r.returncode == 1, r.stdout[-3000:] + r.stderr[-3000:]     # a requested backend is missing
    doc = json.loads((tmp_path / "reports" / "results.json").read_text())
    assert "broken on purpose" in doc["unavailable"][BROKEN]
    assert doc["summary"]["torch"]["pass"] > 10
    assert doc["summary"]["torch"]["fail"] == doc["summary"]["torch"]["error"] == 0
