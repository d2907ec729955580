"""Problems with the spec's own files (a vector file that is missing, or whose sha256 is not the
one the spec names) are the spec's problems: a SpecFileError naming the concept and the file,
recorded with the outcome ``spec`` and counted apart from the backend crashes ("errors")."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from nutshell import spec as spec_mod
from nutshell.conformance import checks, runner
from nutshell.errors import SpecError
from nutshell.spec import models

SPEC = spec_mod.load()
RELU = SPEC.concept("relu")
GRID = next(v for v in RELU.vectors if v.name == "grid")
WRONG = "0" * 64


def test_a_vector_whose_sha256_differs_is_a_spec_file_error_naming_concept_and_file():
    with pytest.raises(spec_mod.SpecFileError, match=rf"concept relu: vector grid: vector file .*{GRID.file} has "
                                                     rf"sha256 {GRID.sha256}, the spec says {WRONG}"):
        dataclasses.replace(GRID, sha256=WRONG).load()
    assert issubclass(spec_mod.SpecFileError, SpecError)


def test_a_missing_vector_is_a_spec_file_error_naming_concept_and_file():
    with pytest.raises(spec_mod.SpecFileError, match=r"concept relu: vector grid: vector file .*relu__gone\.npz is "
                                                     r"missing"):
        dataclasses.replace(GRID, file="vectors/relu__gone.npz").load()


def test_a_model_vector_file_is_checked_the_same_way():
    spec = next(iter(models.load().values()))
    with pytest.raises(spec_mod.SpecFileError, match=f"has sha256 {spec.vectors.sha256}, the spec says {WRONG}"):
        dataclasses.replace(spec.vectors, sha256=WRONG).load()


def test_the_check_stops_at_the_spec_file_before_the_backend_runs():
    import nutshell

    b = nutshell.load("cupy", spec=SPEC)
    with pytest.raises(spec_mod.SpecFileError, match="concept relu: vector grid"):
        checks.forward(b, RELU, dataclasses.replace(GRID, sha256=WRONG), "float32", SPEC.tolerance)


def broken_copy(tmp_path: Path) -> Path:
    """spec/concepts.yaml with relu's grid vector naming a wrong sha256 and its kink vector a
    file that does not exist (vector files are still found beside the repository's spec)."""
    doc = yaml.safe_load(spec_mod.SPEC_FILE.read_text())
    relu = next(c for c in doc["concepts"] if c["id"] == "relu")
    for v in relu["vectors"]:
        if v["name"] == "grid":
            v["sha256"] = WRONG
        if v["name"] == "kink":
            v["file"] = "vectors/relu__gone.npz"
    path = tmp_path / "concepts.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True))
    return path


def test_the_suite_records_spec_problems_as_such_not_as_crashes(tmp_path):
    suite = runner.suite_file()
    r = subprocess.run([sys.executable, "-m", "pytest", f"{suite}::relu[cupy-grid-float32]",
                        f"{suite}::relu[cupy-kink-float32]", "--backend", "cupy", "--spec", str(broken_copy(tmp_path)),
                        "--results", str(tmp_path / "results.json"), "-p", "no:cacheprovider", "-q"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert r.returncode == 1, r.stdout + r.stderr
    doc = json.loads((tmp_path / "results.json").read_text())
    recs = {rec["id"]: rec for rec in doc["results"]}
    assert recs["relu[cupy-grid-float32]"]["outcome"] == "spec", recs
    assert f"has sha256 {GRID.sha256}, the spec says {WRONG}" in recs["relu[cupy-grid-float32]"]["message"]
    assert recs["relu[cupy-kink-float32]"]["outcome"] == "spec" and "missing" in recs["relu[cupy-kink-float32]"][
        "message"]
    assert doc["summary"]["cupy"]["error"] == 0 and doc["summary"]["cupy"]["spec"] == 2
    assert "spec problems: 2 check(s) not run" in r.stdout
