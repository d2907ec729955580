"""The catalogue of awkward inputs, derived from every concept's signature and generated vectors.

Per backend and concept:

* ``views``: every input as a non-contiguous and as a negatively strided view gives bit-identical
  results to the contiguous input;
* ``empty``: an empty batch (N = 0) is valid and returns empty outputs (a batch-mean loss over
  nothing is NaN, as 0/0);
* ``huge`` / ``subnormal``: the data input (x or logits) scaled by 2^50 or 2^−140 (exact in
  float32) agrees with the reference under the tolerance model (whose underflow floor covers
  gradual underflow);
* ``bad-*``: an attribute of the wrong type, a bias that would need broadcasting, mixed float
  dtypes: the same error class from every backend, naming the argument;
* ``determinism``: two runs give bit-identical outputs (recorded; the report marks differences).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np

from nutshell import spec as spec_mod
from nutshell.backends.base import Backend
from nutshell.conformance import checks
from nutshell.conformance.results import Section
from nutshell.errors import ALL as ERROR_CLASSES
from nutshell.errors import NutshellError
from nutshell.spec import generate, tolerance, validate

WRONG_TYPE = {"int": 1.5, "ints": "1", "float": "x", "bool": 1, "string": 3}
BATCH_AXIS = {"lstm": {"x": 1, "h0": 0, "c0": 0}}   # default: axis 0 of every batched input


def _first_generated(concept: spec_mod.Concept) -> spec_mod.Vector:
    return next(v for v in concept.vectors if v.kind == "generated")


def _inputs(concept, vec, dtype="float32") -> dict[str, np.ndarray]:
    return checks.cast(generate.vector_inputs(concept, vec), concept, dtype)


def _same(a: dict, b: dict) -> bool:
    return all(np.array_equal(a[k], b[k], equal_nan=True) and a[k].dtype == b[k].dtype for k in a)


def views(b: Backend, concept, vec) -> checks.Record:
    base = _inputs(concept, vec)
    want = b.run(concept.id, base, vec.attrs)
    strided = {k: np.repeat(v, 2, axis=-1)[..., ::2] if v.ndim else v for k, v in base.items()}
    flipped = {k: np.flip(np.flip(v).copy()) for k, v in base.items()}
    assert any(not v.flags.c_contiguous for v in strided.values() if v.ndim)
    for label, inputs in (("non-contiguous", strided), ("negatively strided", flipped)):
        got = b.run(concept.id, inputs, vec.attrs)
        if not _same(got, want):
            raise checks.CheckFailed(f"{label} inputs change the result", {"usage": 0.0, "details": {}})
    return checks.Record(details={"views": 2})


def _batch_axes(concept) -> dict[str, int]:
    if concept.id in BATCH_AXIS:
        return BATCH_AXIS[concept.id]
    batched = {"x", "logits", "labels", "targets", "h", "c"}
    return {i.name: 0 for i in concept.inputs if i.name in batched}


def empty(b: Backend, concept, vec) -> checks.Record:
    inputs = _inputs(concept, vec)
    for name, axis in _batch_axes(concept).items():
        if name in inputs and inputs[name].ndim > axis:
            inputs[name] = np.take(inputs[name], [], axis=axis)
    out = b.run(concept.id, inputs, vec.attrs)
    for name, v in out.items():
        if v.ndim == 0:
            if not np.isnan(v):
                raise checks.CheckFailed(f"mean over an empty batch must be NaN, got {v}", {"usage": 0.0})
        elif v.size != 0:
            raise checks.CheckFailed(f"output {name} of an empty batch has shape {v.shape}", {"usage": 0.0})
    return checks.Record(details={"shapes": {k: list(v.shape) for k, v in out.items()}})


def scaled(factor: float) -> Callable:
    def check(b: Backend, concept, vec) -> checks.Record:
        from nutshell.spec import reference

        raw = generate.vector_inputs(concept, vec)
        data = concept.inputs[0].name            # the data (x or logits), not the weights
        raw[data] = raw[data] * factor
        arrays, attrs, _ = validate.check(concept, raw, vec.attrs)
        golden = reference.forward(concept.id, arrays, attrs)
        out = b.run(concept.id, checks.cast(raw, concept, "float32"), vec.attrs)
        rec = checks.Record()
        for name, t in golden.items():
            cmp = tolerance.compare(out[name], t.v, t.e, "float32", b.spec.tolerance, t.f)
            rec.merge(name, cmp)
            if not cmp.ok:
                raise checks.CheckFailed(f"inputs × {factor:g}: {name}: {cmp.describe()}",
                                         {"usage": rec.usage, "details": rec.details})
        return rec
    return check


def determinism(b: Backend, concept, vec) -> checks.Record:
    inputs = _inputs(concept, vec)
    first, second = b.run(concept.id, inputs, vec.attrs), b.run(concept.id, inputs, vec.attrs)
    return checks.Record(details={"identical": _same(first, second)})


def _expect(b: Backend, concept, inputs, attrs, cls: str, argument: str) -> checks.Record:
    ev = spec_mod.ErrorVector(name="catalogue", inputs={}, attrs=attrs, raises=cls, argument=argument)
    try:
        b.run(concept.id, inputs, attrs)
    except NutshellError as exc:
        if isinstance(exc, ERROR_CLASSES[cls]) and exc.argument == argument:
            return checks.Record(details={"raised": type(exc).__name__})
        raise checks.CheckFailed(f"expected {cls} naming '{argument}', got {type(exc).__name__}: {exc}",
                                 {"usage": 0.0}) from None
    except Exception as exc:
        raise checks.CheckFailed(f"a raw {type(exc).__name__} escaped: {exc}", {"usage": 0.0}) from None
    raise checks.CheckFailed(f"expected {ev.raises} naming '{argument}', nothing was raised", {"usage": 0.0})


def bad_cases(concept, vec) -> Iterator[tuple[str, Callable]]:
    """(name, check) for every wrong-type attribute, broadcast bias and mixed dtype of a concept."""
    for a in concept.attrs:
        def wrong(b, c, v, a=a):
            return _expect(b, c, _inputs(c, v), {**v.attrs, a.name: WRONG_TYPE[a.type]}, "AttrError", a.name)
        yield f"bad-type-{a.name}", wrong
    for i in concept.inputs:
        if i.rank == 1 and i.name.startswith("b") and concept.id not in ("binary_cross_entropy",):
            def broadcast(b, c, v, name=i.name):
                inputs = _inputs(c, v)
                if name not in inputs:
                    inputs[name] = np.zeros(1, np.float32)
                inputs[name] = inputs[name][:1]
                return _expect(b, c, inputs, v.attrs, "ShapeError", name)
            yield f"bad-broadcast-{i.name}", broadcast
    floats = [i.name for i in concept.inputs if i.dtype == "float"]
    if len(floats) >= 2:
        def mixed(b, c, v, name=floats[1]):
            inputs = _inputs(c, v)
            inputs[name] = inputs[name].astype(np.float64)
            return _expect(b, c, inputs, v.attrs, "DTypeError", name)
        yield "bad-mixed-dtypes", mixed


EDGE_CASES: dict[str, Callable] = {
    "views": views, "empty": empty, "huge": scaled(2.0 ** 50), "subnormal": scaled(2.0 ** -140),
    "determinism": determinism,
}


def cases(concept) -> Iterator[tuple[str, Callable]]:
    yield from EDGE_CASES.items()
    yield from bad_cases(concept, _first_generated(concept))


def items(parent, st: dict):
    from nutshell.conformance.plugin import CheckItem

    for concept in st["spec"].concepts.values():
        vec = _first_generated(concept)
        for bname, backend in st["backends"].items():
            for case, fn in cases(concept):
                def run(_st, b=backend, c=concept, v=vec, f=fn, name=case):
                    why = b.unsupported(c.id, "float32")
                    if why is not None:
                        raise checks.Unsupported(why)
                    return f(b, c, v)
                yield CheckItem.from_parent(parent, name=f"{concept.id}[{bname}-{case}]", backend=bname,
                                            concept=concept, check="catalogue", vec=vec, dtype="float32",
                                            section=Section.RELIABILITY, fn=run)
