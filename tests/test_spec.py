"""The spec file, its schema, its vector files and their regeneration."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from nutshell import spec
from nutshell.errors import SpecError
from nutshell.spec import generate
from nutshell.spec.reference import tracked


@pytest.fixture(scope="module")
def s() -> spec.Spec:
    return spec.load()


CONTRACT_CONCEPTS = {
    "sigmoid", "relu", "tanh", "softmax", "log_softmax", "dense", "layer", "maxout", "logistic_regression",
    "softmax_regression", "binary_cross_entropy", "cross_entropy", "conv2d", "convolve2d", "conv2d_fft",
    "max_pool2d", "avg_pool2d", "global_avg_pool2d", "lrn", "lstm_cell", "lstm", "inception",
}


def test_every_contract_concept_has_hand_generated_and_error_vectors(s):
    assert set(s.concepts) == CONTRACT_CONCEPTS
    for c in s.concepts.values():
        kinds = {v.kind for v in c.vectors}
        assert {"hand", "generated"} <= kinds <= {"hand", "generated", "found"}, c.id   # found: nutshell hunt --save
        assert c.errors, c.id
        assert len(c.definition) > 60, c.id


def test_tolerance_constants_agree_with_the_tracker(s):
    assert s.tolerance["transcendental_ulps"] == tracked.TRANSCENDENTAL_ULPS
    assert s.tolerance["unit_roundoff"]["float32"] == 2.0 ** -24
    assert s.tolerance["unit_roundoff"]["float64"] == 2.0 ** -53


def _write(tmp_path: Path, doc: dict) -> Path:
    p = tmp_path / "concepts.yaml"
    p.write_text(yaml.safe_dump(doc))
    return p


def _doc() -> dict:
    return yaml.safe_load(spec.SPEC_FILE.read_text())


def test_malformed_yaml_is_a_spec_error(tmp_path):
    p = tmp_path / "concepts.yaml"
    p.write_text("concepts: [\n  - id: x\n   bad indent")
    with pytest.raises(SpecError, match="not valid YAML"):
        spec.load(p)


def test_schema_error_names_file_concept_and_field(tmp_path):
    doc = _doc()
    conv = next(c for c in doc["concepts"] if c["id"] == "conv2d")
    conv["attrs"][0]["type"] = "integerlist"
    p = _write(tmp_path, doc)
    with pytest.raises(SpecError) as e:
        spec.load(p)
    msg = str(e.value)
    assert str(p) in msg and "concept conv2d" in msg and "attrs/0/type" in msg


def test_missing_field_is_named(tmp_path):
    doc = _doc()
    del doc["concepts"][0]["definition"]
    with pytest.raises(SpecError, match=r"concept sigmoid: .*'definition' is a required property"):
        spec.load(_write(tmp_path, doc))


def test_unknown_schema_version(tmp_path):
    doc = _doc()
    doc["schema_version"] = 99
    with pytest.raises(SpecError, match="schema_version 99"):
        spec.load(_write(tmp_path, doc))


def test_unknown_concept_is_a_spec_error(s):
    with pytest.raises(SpecError, match="unknown concept 'convolution'"):
        s.concept("convolution")


def test_vector_sha256_mismatch_and_missing_file(s, tmp_path):
    vec = s.concept("conv2d").vectors[0]
    bad = tmp_path / "v.npz"
    shutil.copy(spec.SPEC_DIR / vec.file, bad)
    bad.write_bytes(bad.read_bytes() + b"\0")
    with pytest.raises(SpecError, match="has sha256"):
        spec.load_npz(bad, vec.sha256)
    with pytest.raises(SpecError, match="is missing"):
        spec.load_npz(tmp_path / "nope.npz", vec.sha256)


def test_every_vector_file_loads_with_its_sha(s):
    n = 0
    for c in s.concepts.values():
        for v in c.vectors:
            data = v.load()
            assert any(k.startswith("out.") for k in data), (c.id, v.name)
            n += 1
    assert n >= 2 * len(s.concepts)


def test_generated_inputs_are_float32_exact_and_distinct(s):
    c = s.concept("max_pool2d")
    vec = next(v for v in c.vectors if v.kind == "generated")
    x = generate.vector_inputs(c, vec)["x"]
    assert np.array_equal(x.astype(np.float32).astype(np.float64), x)
    assert len(np.unique(x)) == x.size and not (x == 0).any()


def test_regeneration_is_byte_identical(s):
    c = s.concept("lstm_cell")
    for vec in c.vectors:
        blob = generate.npz_bytes(generate.compute(c, vec))
        assert blob == (spec.SPEC_DIR / vec.file).read_bytes()


def test_hand_vector_disagreeing_with_reference_is_refused(s):
    c = s.concept("conv2d")
    vec = next(v for v in c.vectors if v.name == "figure3")
    wrong = spec.Vector(**{**vec.__dict__, "expected": {"y": [[[[4, 3, 4], [2, 4, 3], [2, 3, 5]]]]}})
    data = generate.compute(c, wrong)
    with pytest.raises(SpecError, match="pencil value of y disagrees"):
        generate.check_hand(c, wrong, data, s.tolerance)


# --- hostile YAML (issue 17, item 5): bounded before it costs time or memory -------------------------

def _billion_laughs() -> str:
    """Ten levels of ten aliases each: 520 bytes that expand to 10¹⁰ strings."""
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"a{k}: &a{k} [" + ", ".join([f"*a{k - 1}"] * 10) + "]" for k in range(1, 10)]
    return "\n".join(lines) + "\n"


def _refused_quickly(path: Path, match: str) -> None:
    """spec.load raises SpecError within a second of CPU time (the machine may be shared), and
    spec.load_document (models, claims, bench) too, allocating little (measured apart: tracing
    allocations slows the loader down)."""
    import time
    import tracemalloc

    start = time.process_time()
    with pytest.raises(SpecError, match=match):
        spec.load(path)
    assert time.process_time() - start < 1.0
    tracemalloc.start()
    try:
        with pytest.raises(SpecError, match=match):
            spec.load_document(path)
        assert tracemalloc.get_traced_memory()[1] < 64 * 2**20
    finally:
        tracemalloc.stop()


def test_billion_laughs_is_refused_in_under_a_second(tmp_path):
    """It took 45 s and 3.3 GB before a MemoryError."""
    p = tmp_path / "laughs.yaml"
    p.write_text(_billion_laughs())
    _refused_quickly(p, r"laughs\.yaml: line 6: expands to 1,111,111 nodes")


@pytest.mark.parametrize("text", [
    "[" * 50_000 + "]" * 50_000,
    "a: " + "{b: " * 50_000 + "1" + "}" * 50_000,
    "- " * 50_000 + "1\n",
], ids=["flow sequences", "flow mappings", "block sequences"])
def test_deep_nesting_is_refused_without_recursion_error(tmp_path, text):
    """50,000 levels ended in a RecursionError."""
    p = tmp_path / "deep.yaml"
    p.write_text(text)
    _refused_quickly(p, f"nested more than {spec.MAX_DEPTH} levels deep")


def test_aliases_nesting_deep_only_once_expanded(tmp_path):
    """Each alias one level deeper than the last: shallow text, 50,000 levels expanded."""
    p = tmp_path / "chain.yaml"
    p.write_text("a0: &a0 [1]\n" + "".join(f"a{k}: &a{k} [*a{k - 1}]\n" for k in range(1, 50_000)))
    _refused_quickly(p, f"nested {spec.MAX_DEPTH + 1} deep")


def test_alias_inside_the_node_it_names(tmp_path):
    p = tmp_path / "loop.yaml"
    p.write_text("a: &x [1, *x]\n")
    _refused_quickly(p, "an alias inside the node it names")


def test_spec_file_that_is_no_regular_file_or_too_large(tmp_path):
    fifo = tmp_path / "pipe.yaml"
    os.mkfifo(fifo)
    _refused_quickly(fifo, "not a regular file")                 # read, it would wait forever
    big = tmp_path / "big.yaml"
    big.write_text("#" * (spec.MAX_BYTES + 1))
    _refused_quickly(big, "more than the limit")


def test_a_spec_with_aliases_within_the_bounds_loads(tmp_path, s):
    """The bounds leave ordinary YAML alone: concepts sharing one tolerance note by an alias."""
    doc = _doc()
    shared = doc["concepts"][0]["tolerance"]
    for c in doc["concepts"][:3]:
        c["tolerance"] = shared
    text = yaml.safe_dump(doc)
    assert "&id" in text and "*id" in text
    loaded = spec.load(_write(tmp_path, doc))
    assert loaded.concepts["relu"].tolerance == s.concepts["sigmoid"].tolerance
