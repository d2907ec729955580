"""``nutshell hunt --save``: a found case becomes a spec vector of kind ``found`` with its provenance,
rebuilt byte for byte by ``nutshell spec generate`` and checked on every backend by the suite."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from nutshell import spec as spec_mod
from nutshell.conformance import hunt_cases
from nutshell.conformance.hunt_cases import Case
from nutshell.conformance.runner import suite_file
from nutshell.errors import SpecError
from nutshell.spec import generate

PROVENANCE = {"backend": "tf", "library": "tensorflow", "version": "2.21.0", "date": "2026-12-04", "seed": 3}


@pytest.fixture
def spec_copy(tmp_path) -> Path:
    """The concepts file and relu's vector files in a folder of their own."""
    (tmp_path / "vectors").mkdir()
    shutil.copy(spec_mod.SPEC_FILE, tmp_path / "concepts.yaml")
    for f in spec_mod.SPEC_DIR.glob("vectors/relu__*.npz"):
        shutil.copy(f, tmp_path / "vectors" / f.name)
    return tmp_path / "concepts.yaml"


def save(spec_file: Path, case: Case) -> str:
    concept = spec_mod.parse(spec_file.read_text(), spec_file).concept(case.concept)
    return generate.add_found(concept, case.vector(concept), PROVENANCE, "tf: gradient 'x' 'wrong'",
                              spec_path=spec_file)


def test_a_found_case_becomes_a_vector_with_its_provenance(spec_copy):
    case = Case("relu", "vjp", "float32", {"d0": 3, "d1": 17}, seed=11, scale=4.0)
    name = save(spec_copy, case)
    relu = spec_mod.parse(spec_copy.read_text(), spec_copy).concept("relu")
    vec = next(v for v in relu.vectors if v.name == name)
    assert vec.kind == "found" and vec.shapes == {"x": [3, 17]} and vec.seed == 11 and vec.grad
    assert vec.note == "tf: gradient 'x' 'wrong'"
    assert 'provenance: {"backend": "tf"' in spec_copy.read_text()
    data = np.load(spec_copy.parent / vec.file)
    want = hunt_cases.data(relu, case)
    assert set(data.files) == set(want) and all(np.array_equal(data[k], want[k]) for k in want)
    assert generate.generate(spec_copy, concepts=["relu"], check=True, log=lambda s: None) == []


def test_a_second_find_gets_its_own_name(spec_copy):
    first = save(spec_copy, Case("relu", "forward", "float64", {"d0": 5}))
    second = save(spec_copy, Case("relu", "forward", "float64", {"d0": 6}))
    assert first != second and first.startswith("found_tf_2026_12_04")


def test_a_found_vector_without_provenance_is_refused(spec_copy):
    save(spec_copy, Case("relu", "forward", "float32", {"d0": 5}))
    text = "\n".join(line for line in spec_copy.read_text().splitlines() if "provenance:" not in line)
    with pytest.raises(SpecError, match="provenance"):
        spec_mod.parse(text, spec_copy)


def test_the_suite_checks_every_backend_on_found_vectors(spec_copy):
    name = save(spec_copy, Case("relu", "vjp", "float32", {"d0": 4}))
    r = subprocess.run([sys.executable, "-m", "pytest", str(suite_file()), "--spec", str(spec_copy),
                        "--backend", "cupy", "--backend", "torch", "-k", f"relu and {name}", "--collect-only", "-q",
                        "-p", "no:cacheprovider"],
                       capture_output=True, text=True, timeout=300)
    ids = {line.split("::")[-1] for line in r.stdout.splitlines() if "::" in line}
    want = {f"relu[{b}-{name}-{dt}{vjp}]" for b in ("cupy", "torch") for dt in ("float32", "float64")
            for vjp in ("", "-vjp")}
    assert want <= ids, r.stdout + r.stderr
