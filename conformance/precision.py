"""Low-precision checks: every concept in float16 and bfloat16 on every backend (spec/lowp.yaml).

One item per backend × low-precision vector × format, forward and (where the vector has one) vjp,
with ids like ``dense[torch-accumulation_probe_f16-float16]`` and ``conv2d[torch-c64_k3-bfloat16-vjp]``.
Each result is compared with the float64 golden under both bounds of the tolerance model
(nutshell.spec.tolerance): it passes within the storage-format bound, and its record holds the
usage under each bound and the accumulation the result is consistent with (``consistent_with``):
float32 accumulation when it also lies within the float32-accumulation bound, storage-format
accumulation when only within the looser one.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import numpy as np

from nutshell import spec as spec_mod
from nutshell.backends.base import Backend
from nutshell.conformance import checks, probe
from nutshell.conformance.results import Section
from nutshell.spec import lowp, models, tolerance
from nutshell.spec.reference import models as ref_models
from nutshell.spec.reference import tracked
from nutshell.spec.signatures import DTYPES, LOW_PRECISION

LOOSENESS = (tolerance.FLOAT32, tolerance.STORAGE, tolerance.NEITHER)
"""The accumulations a result may agree with, tightest first; a record names its loosest output's."""


@dataclass(frozen=True)
class ProbeVector:
    """What a probe item carries as its vector: the probe's designed inputs have a name only."""

    name: str = "probe"


PROBE_VECTOR = ProbeVector()


def _split(data: dict[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    return {k[len(prefix):]: v for k, v in data.items() if k.startswith(prefix)}


def cast(arrays: dict[str, np.ndarray], concept: spec_mod.Concept, dtype: str) -> dict[str, np.ndarray]:
    """Float inputs in ``dtype`` (exact: the vectors' values are representable there); labels untouched."""
    return {k: (v.astype(DTYPES[dtype]) if concept.input(k).dtype == "float" else v) for k, v in arrays.items()}


def compare_both(actual: np.ndarray, data: dict, kind: str, name: str, dtype: str, tol: dict
                 ) -> tuple[tolerance.Comparison, tolerance.Comparison]:
    """``actual`` against golden ``{kind}.{name}`` within the storage-format bound and within the
    float32-accumulation bound (kind "out" or "grad", whose bounds are "err*" or "gerr*")."""
    golden, e = data[f"{kind}.{name}"], "err" if kind == "out" else "gerr"
    f = data[f"{e}_f.{name}"]
    storage = tolerance.compare(actual, golden, data[f"{e}.{name}"], dtype, tol, f)
    tight = tolerance.bound_float32_accumulation(data[f"{e}_r.{name}"], data[f"{e}_a.{name}"], dtype, tol, f)
    return storage, tolerance.compare_within(actual, golden, tight, dtype)


def judge(results: dict, data: dict, kind: str, dtype: str, tol: dict, computed_in: str) -> checks.Record:
    """Every result against its golden under both bounds; CheckFailed outside the storage-format
    bound or in another dtype. The record's usage is the storage-format bound's; its details also
    say what the backend computes in (``computed_in``: the dtype, or its reason for a wider one)."""
    rec, failures, usage32, agree = checks.Record(details={"computed_in": computed_in}), [], 0.0, []
    for name in _split(data, f"{kind}."):
        if name not in results:
            failures.append(f"'{name}' missing from the backend's result")
            continue
        storage, tight = compare_both(results[name], data, kind, name, dtype, tol)
        rec.merge(name, storage)
        rec.details[f"{name}@float32"] = tight.to_dict()
        usage32, agree = max(usage32, tight.usage), [*agree, tolerance.consistent_with(storage, tight)]
        got = np.asarray(results[name]).dtype
        if not storage.ok:
            failures.append(f"'{name}': {storage.describe()}")
        elif got != np.dtype(DTYPES[dtype]):
            failures.append(f"'{name}' came back as {got}, not {dtype}")
    rec.details["usage_by_bound"] = {tolerance.STORAGE: rec.usage, tolerance.FLOAT32: usage32}
    rec.details["consistent_with"] = max(agree, key=LOOSENESS.index, default=tolerance.NEITHER)
    if failures:
        raise checks.CheckFailed("; ".join(failures), {"usage": rec.usage, "details": rec.details})
    return rec


def forward(backend: Backend, concept: spec_mod.Concept, lv: lowp.LowpVector, dtype: str, tol: dict
            ) -> checks.Record:
    """The backend's forward in ``dtype`` on a low-precision vector against the float64 golden."""
    _guard(backend, concept.id, dtype)
    data = lv.vector.load()
    out = backend.run(concept.id, cast(_split(data, "in."), concept, dtype), lv.vector.attrs)
    return judge(out, data, "out", dtype, tol, backend.widened(concept.id, dtype) or dtype)


def vjp(backend: Backend, concept: spec_mod.Concept, lv: lowp.LowpVector, dtype: str, tol: dict) -> checks.Record:
    """The backend's vjp in ``dtype`` for the vector's cotangent against the float64 gradients."""
    _guard(backend, concept.id, dtype)
    data = lv.vector.load()
    cots = {k: v.astype(DTYPES[dtype]) for k, v in _split(data, "cot.").items()}
    grads = backend.vjp(concept.id, cast(_split(data, "in."), concept, dtype), cots, lv.vector.attrs)
    return judge(grads, data, "grad", dtype, tol, backend.widened(concept.id, dtype) or dtype)


def _guard(backend: Backend, concept: str, dtype: str) -> None:
    why = backend.unsupported(concept, dtype)
    if why is not None:
        raise checks.Unsupported(f"{backend.name} declares {concept} in {dtype} unsupported: {why}")


def probe_check(backend: Backend, concept: str, dtype: str) -> checks.Record:
    """The precision probe (nutshell.conformance.probe) as a check: float32 work must be full
    float32 products; float16 and bfloat16 may accumulate either way, and the record says which."""
    _guard(backend, concept, dtype)
    verdict = probe.probe(backend, concept, dtype)
    details = {"verdict": verdict, "computed_in": backend.widened(concept, dtype) or dtype}
    if dtype == "float32" and verdict != probe.FLOAT32:
        raise checks.CheckFailed(f"float32 {concept} computes with {verdict}, not full float32 products",
                                 {"usage": None, "details": details})
    if dtype != "float32" and verdict not in (probe.ACC32, probe.ACC_STORAGE):
        raise checks.CheckFailed(f"{dtype} {concept}: the accumulation probe gave {verdict}",
                                 {"usage": None, "details": details})
    return checks.Record(details=details)


def _probe_items(parent, st: dict, item_cls):
    """One probe per backend × probed concept × dtype: ``dense[torch-probe-float16]``."""
    for concept in (c for c in probe.PROBED if c in st["spec"].concepts):
        for bname, backend in st["backends"].items():
            for dtype in ("float32", *LOW_PRECISION):
                def run(_st, b=backend, c=concept, d=dtype):
                    return probe_check(b, c, d)
                yield item_cls.from_parent(parent, name=f"{concept}[{bname}-probe-{dtype}]", backend=bname,
                                           concept=st["spec"].concept(concept), check="probe", vec=PROBE_VECTOR,
                                           dtype=dtype, section=Section.OPS, fn=run)


SMALLEST = 2.0**-14
"""Model values below float16's smallest normal become 0: rounded to bfloat16's 8 bits they would
need more bits than float16's subnormals hold."""


def _exact_both(a: np.ndarray) -> np.ndarray:
    """``a`` on bfloat16's 8-bit grid, magnitudes below 2⁻¹⁴ set to 0: exact in both formats."""
    g = lowp.to_grid(a)
    return np.where(np.abs(g) < SMALLEST, 0.0, g)


@functools.lru_cache(maxsize=16)
def model_golden(model_id: str, spec_path: str) -> dict[str, Any]:
    """A spec model's vector batch with its parameters and input made exact in both formats, the
    float64 logits with both bounds (as a vector file's keys)."""
    spec = models.get(model_id).vector_model()
    data = spec.vectors.load()
    params = {k[len("param."):]: _exact_both(v) for k, v in data.items() if k.startswith("param.")}
    x = _exact_both(data["in.x"])
    with tracked.constants_exact_in(np.float32, np.float16, DTYPES["bfloat16"]):
        values = ref_models.forward(spec, {k: tracked.T(v) for k, v in params.items()}, tracked.T(x))
    logits = values[spec.output]
    return {"params": params, "x": x, "out.logits": logits.v, "err.logits": logits.e, "err_r.logits": logits.r,
            "err_a.logits": logits.a, "err_f.logits": logits.f}


def model_forward(backend: Backend, model_id: str, dtype: str, st: dict) -> checks.Record:
    """A spec model's logits in ``dtype`` against the float64 forward, under both bounds.

    A ReLU or max-pool decision within its bound needs no margin here: max is 1-Lipschitz,
    |max(â, b̂) − max(a, b)| ≤ max(|â − a|, |b̂ − b|), and the tracked maximum carries the larger of
    the two bounds, so the logits stay bounded whichever branch a backend takes (the gradients do
    not: model_checks.grads requires the margin)."""
    spec = models.get(model_id)
    golden = model_golden(model_id, str(st["spec"].path))
    m = backend.model(model_id, params={k: v.astype(DTYPES[dtype]) for k, v in golden["params"].items()},
                      dtype=dtype, dims=spec.vectors.dims or None)
    why = m.unsupported()
    if why is not None:
        raise checks.Unsupported(f"{backend.name} cannot run model {model_id}: {why}")
    logits = m.forward(golden["x"].astype(DTYPES[dtype]))
    return judge({"logits": logits}, golden, "out", dtype, st["spec"].tolerance, dtype)


def _model_items(parent, st: dict, item_cls):
    """One forward check per spec model × backend × low-precision format: ``model_mlp[torch-forward-float16]``."""
    from nutshell.conformance.model_checks import Ref

    for model_id in models.load():
        ref = Ref(f"model_{model_id}")
        for bname in st["backends"]:
            for dtype in LOW_PRECISION:
                def run(_st, b=bname, m=model_id, d=dtype):
                    return model_forward(_st["backends"][b], m, d, _st)
                yield item_cls.from_parent(parent, name=f"{ref.id}[{bname}-forward-{dtype}]", backend=bname,
                                           concept=ref, check="forward", vec=Ref(model_id, "forward"), dtype=dtype,
                                           section=Section.MODELS, fn=run)


def items(parent, st: dict):
    """The plugin's provider hook: one item per backend × low-precision vector × format (× vjp),
    the precision probes, and every spec model's forward in each format; a concept the run's spec
    (``--spec``) lacks has no items."""
    from nutshell.conformance.plugin import CheckItem

    yield from _probe_items(parent, st, CheckItem)
    yield from _model_items(parent, st, CheckItem)
    s = st["spec"]
    for lv in (v for v in lowp.load() if v.concept in s.concepts):
        concept = s.concept(lv.concept)
        for bname, backend in st["backends"].items():
            for dtype in lv.dtypes:
                base = f"{concept.id}[{bname}-{lv.vector.name}-{dtype}"
                checks_here = [("forward", forward, "]")] + ([("vjp", vjp, "-vjp]")] if lv.vector.grad else [])
                for check, fn, tail in checks_here:
                    def run(_st, b=backend, c=concept, v=lv, d=dtype, f=fn):
                        return f(b, c, v, d, _st["spec"].tolerance)
                    yield CheckItem.from_parent(parent, name=base + tail, backend=bname, concept=concept,
                                                check=check, vec=lv.vector, dtype=dtype, section=Section.OPS,
                                                fn=run)
