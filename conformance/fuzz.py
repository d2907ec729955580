"""Property-based checks (Hypothesis): random valid and invalid shapes, attrs and dtypes for every
concept on every backend.

The shared validator decides what a draw is: valid draws must agree with the float64 reference
under the tolerance model (forward and vjp); invalid draws must raise the very error class and
name the very argument the validator does. Nothing may crash and no raw library exception may
escape. The counts of draws tried, valid, invalid and passed go into the result's details.
``NUTSHELL_FUZZ_EXAMPLES`` sets the draws per concept (default 20); draws are derandomized, so a
run is repeatable.
"""

from __future__ import annotations

import os

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nutshell import spec as spec_mod
from nutshell.backends.base import Backend
from nutshell.conformance import checks
from nutshell.conformance.results import Section
from nutshell.errors import NutshellError
from nutshell.spec import generate, tolerance, validate

EXAMPLES = int(os.environ.get("NUTSHELL_FUZZ_EXAMPLES", "20"))


def _attr_value(draw, a: spec_mod.AttrSpec, template):
    """Mostly sensible values, sometimes out of range or of the wrong type."""
    roll = draw(st.integers(0, 9))
    if roll == 0:
        return draw(st.sampled_from(["x", 1.5, None, [1], True]))
    if roll <= 4 and template is not None:
        return template
    if a.type == "ints":
        lo = -1 if roll == 5 else (0 if a.name == "pads" else 1)
        return draw(st.lists(st.integers(lo, 3), min_size=a.length, max_size=a.length))
    if a.type == "int":
        return draw(st.integers(-1 if roll == 5 else 1, 3)) if a.name != "axis" else draw(st.integers(-4, 3))
    if a.type == "float":
        return draw(st.sampled_from([0.5, 1.0, 2.0, 1e-4, 0.75]))
    if a.type == "bool":
        return draw(st.booleans())
    return draw(st.sampled_from(list(a.choices)))


def _shapes(draw, concept, template: dict) -> dict:
    n = draw(st.integers(0, 3))
    h, w = draw(st.integers(1, 9)), draw(st.integers(1, 9))
    out = {}
    for name, shape in template.items():
        shape = list(shape)
        if concept.id == "lstm":
            if name == "x":
                shape[0], shape[1] = draw(st.integers(1, 4)), n
            elif name in ("h0", "c0"):
                shape[0] = n
        elif name in ("x", "logits", "labels", "targets", "h", "c") and shape:
            shape[0] = n
            if len(shape) == 4:
                shape[2], shape[3] = h, w
        out[name] = shape
    if draw(st.integers(0, 9)) == 0:                                  # a wrong rank now and then
        victim = draw(st.sampled_from(sorted(out)))
        out[victim] = [*out[victim], 1]
    return out


def _arrays(draw, concept, shapes: dict, dtype: str) -> dict:
    rng = np.random.default_rng(draw(st.integers(0, 2**31)))
    arrays = {}
    for name, shape in shapes.items():
        if concept.input(name).dtype == "int64":
            k = shapes.get("logits", [1, 1])[-1]
            arrays[name] = rng.integers(0, max(k, 1), size=shape).astype(np.int64)
        elif name == "targets":
            arrays[name] = rng.uniform(0, 1, size=shape).astype(dtype)
        else:
            arrays[name] = generate.shuffled_linspace(shape, 2.0, rng).astype(dtype)
    if draw(st.integers(0, 9)) == 0:                                  # a wrong dtype now and then
        victim = draw(st.sampled_from(sorted(arrays)))
        arrays[victim] = arrays[victim].astype(draw(st.sampled_from(["int32", "complex64", "float64"])))
    return arrays


def _draw_case(draw, concept):
    vec = draw(st.sampled_from([v for v in concept.vectors if v.kind == "generated"]))
    dtype = draw(st.sampled_from(["float32", "float64"]))
    shapes = _shapes(draw, concept, vec.shapes)
    attrs = {a.name: _attr_value(draw, a, vec.attrs.get(a.name)) for a in concept.attrs}
    attrs = {k: v for k, v in attrs.items() if v is not None}
    return _arrays(draw, concept, shapes, dtype), attrs, dtype


class Counter:
    def __init__(self):
        self.tried = self.valid = self.invalid = self.passed = self.unsupported = 0


def _check_one(b: Backend, concept, inputs, attrs, tol, count: Counter) -> None:
    from nutshell.spec import reference

    count.tried += 1
    try:
        arrays, full, dtype = validate.check(concept, inputs, attrs)
    except NutshellError as expected:
        count.invalid += 1
        try:
            b.run(concept.id, inputs, attrs)
        except NutshellError as got:
            assert type(got) is type(expected) and got.argument == expected.argument, \
                f"expected {type(expected).__name__}({expected.argument}), got {type(got).__name__}: {got}"
            count.passed += 1
            return
        raise AssertionError(f"invalid input accepted; the validator says: {expected}") from None
    count.valid += 1
    if b.unsupported(concept.id, dtype) is not None:
        count.unsupported += 1
        return
    as64 = {k: (v.astype(np.float64) if v.dtype.kind == "f" else v) for k, v in arrays.items()}
    golden = reference.forward(concept.id, as64, full)
    out = b.run(concept.id, inputs, attrs)
    for name, t in golden.items():
        cmp = tolerance.compare(out[name], t.v, t.e, dtype, tol, t.f)
        assert cmp.ok, f"output {name}: {cmp.describe()}"
    count.passed += 1


def fuzz_concept(b: Backend, concept, tol, examples: int = EXAMPLES) -> Counter:
    count = Counter()

    @settings(max_examples=examples, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck), print_blob=False)
    @given(st.data())
    def prop(data):
        inputs, attrs, _ = data.draw(st.composite(lambda draw: _draw_case(draw, concept))())
        _check_one(b, concept, inputs, attrs, tol, count)

    prop()
    return count


def items(parent, state: dict):
    from nutshell.conformance.plugin import CheckItem

    for concept in state["spec"].concepts.values():
        for bname, backend in state["backends"].items():
            def run(_st, b=backend, c=concept):
                try:
                    count = fuzz_concept(b, c, b.spec.tolerance)
                except AssertionError as exc:
                    raise checks.CheckFailed(f"property-based draw failed: {exc}", {"usage": 0.0}) from None
                return checks.Record(details=vars(count))
            yield CheckItem.from_parent(parent, name=f"{concept.id}[{bname}-fuzz]", backend=bname, concept=concept,
                                        check="fuzz", vec=type("V", (), {"name": "fuzz"})(), dtype=None,
                                        section=Section.RELIABILITY, fn=run)
