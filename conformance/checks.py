"""The five checks of the conformance suite, each a plain function returning a result record.

A check raises :class:`CheckFailed` (the numbers of the mismatch) or :class:`Unsupported` (the
backend declared the concept × dtype unsupported). A vector file that is missing or does not match
its sha256 raises :class:`nutshell.spec.SpecFileError` before the backend is called: the spec is
broken, not the backend. Any other exception is the backend crashing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from nutshell import spec as spec_mod
from nutshell.backends.base import Backend
from nutshell.errors import ALL as ERROR_CLASSES
from nutshell.errors import NutshellError, UnsupportedConcept
from nutshell.spec import generate, tolerance


class Unsupported(Exception):
    """The backend declares this concept × dtype unsupported (never counted as a pass)."""


class CheckFailed(AssertionError):
    """A result outside its bound, or the wrong error; carries the record."""

    def __init__(self, message: str, record: dict):
        super().__init__(message)
        self.record = record


@dataclass
class Record:
    """What one check measured."""

    usage: float = 0.0
    details: dict = field(default_factory=dict)

    def merge(self, name: str, cmp: tolerance.Comparison) -> None:
        self.usage = max(self.usage, cmp.usage)
        self.details[name] = cmp.to_dict()


def cast(arrays: dict[str, np.ndarray], concept: spec_mod.Concept, dtype: str) -> dict[str, np.ndarray]:
    """Float inputs in ``dtype`` (exact: vector values are float32-representable); labels untouched."""
    return {k: (v.astype(dtype) if concept.input(k).dtype == "float" else v) for k, v in arrays.items()}


def _split(data: dict[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    return {k[len(prefix):]: v for k, v in data.items() if k.startswith(prefix)}


def _guard_unsupported(backend: Backend, concept: str, dtype: str) -> None:
    why = backend.unsupported(concept, dtype)
    if why is not None:
        raise Unsupported(f"{backend.name} declares {concept} in {dtype} unsupported: {why}")


def _compare_all(results: dict, goldens: dict, errs: dict, dtype: str, tol: dict, what: str,
                 keep: dict | None = None, underflows: dict | None = None) -> Record:
    """Each result against its golden; ``keep``: more details the record carries, passed or not;
    ``underflows``: each golden's underflow count f (``err_f.*``), where the vector holds one."""
    rec, failures = Record(details=dict(keep or {})), []
    for name, golden in goldens.items():
        if name not in results:
            failures.append(f"{what} '{name}' missing from the backend's result")
            continue
        cmp = tolerance.compare(results[name], golden, errs[name], dtype, tol, (underflows or {}).get(name))
        rec.merge(name, cmp)
        if cmp.ok and np.asarray(results[name]).dtype != np.dtype(dtype):
            failures.append(f"{what} '{name}' came back as {np.asarray(results[name]).dtype}, not {dtype}")
        elif not cmp.ok:
            failures.append(f"{what} '{name}': {cmp.describe()}")
    if failures:
        raise CheckFailed("; ".join(failures), {"usage": rec.usage, "details": rec.details})
    return rec


IMAGE = ("x", "w", "y")      # an image vector's input, kernel and output
IMAGE_CELLS = 1024           # the most values one of them may have


def is_image(arrays: dict[str, np.ndarray]) -> bool:
    """Whether a vector's input, kernel and output are each one small picture, shape (1, 1, H, W)
    with at most IMAGE_CELLS values: the glossary's Figure 3 and its edge detector are such vectors."""
    planes = [np.shape(arrays[k]) for k in IMAGE if k in arrays]
    return len(planes) == len(IMAGE) and all(len(s) == 4 and s[:2] == (1, 1) and np.prod(s) <= IMAGE_CELLS
                                             for s in planes)


def forward(backend: Backend, concept: spec_mod.Concept, vec: spec_mod.Vector, dtype: str, tol: dict) -> Record:
    """1. The backend's forward on a spec vector against the float64 golden. For an image vector
    the record keeps the output too (``computed``), so that the report can draw it."""
    _guard_unsupported(backend, concept.id, dtype)
    data = vec.load()
    inputs, goldens = _split(data, "in."), _split(data, "out.")
    out = backend.run(concept.id, cast(inputs, concept, dtype), vec.attrs)
    keep = {"computed": {k: np.asarray(out[k]).tolist() for k in goldens if k in out}} \
        if vec.kind == "hand" and is_image(inputs | goldens) else None
    return _compare_all(out, goldens, _split(data, "err."), dtype, tol, "output", keep, _split(data, "err_f."))


def vjp(backend: Backend, concept: spec_mod.Concept, vec: spec_mod.Vector, dtype: str, tol: dict) -> Record:
    """2. The backend's vjp for the vector's cotangent against the float64 gradient goldens."""
    _guard_unsupported(backend, concept.id, dtype)
    data = vec.load()
    cots = {k: v.astype(dtype) for k, v in _split(data, "cot.").items()}
    grads = backend.vjp(concept.id, cast(_split(data, "in."), concept, dtype), cots, vec.attrs)
    return _compare_all(grads, _split(data, "grad."), _split(data, "gerr."), dtype, tol, "gradient",
                        underflows=_split(data, "gerr_f."))


def finite_difference(backend: Backend, concept: spec_mod.Concept, vec: spec_mod.Vector, tol: dict) -> Record:
    """3. A float64 central difference along a random direction against the backend's own vjp.

    f(θ) = Σ_outputs ⟨cot, out(θ)⟩; D(h) = (f(θ + h·v) − f(θ − h·v)) / 2h should equal ⟨vjp, v⟩.
    Allowed: |D(h) − D(2h)| (the truncation error estimate: D(2h) − D(h) ≈ 3·c·h², four times
    D(h)'s own) + 8·u·F/h (rounding in the two evaluations, F = Σ|cot|·|out|) + rtol_floor·|⟨vjp, v⟩|.
    """
    _guard_unsupported(backend, concept.id, "float64")
    data = vec.load()
    inputs, cots = _split(data, "in."), _split(data, "cot.")
    diff = [k for k in inputs if k in concept.differentiable]
    rng = np.random.default_rng(vec.seed or 0)
    direction = {k: rng.standard_normal(inputs[k].shape) for k in diff}
    grads = backend.vjp(concept.id, inputs, cots, vec.attrs)
    analytic = float(sum(np.sum(grads[k] * direction[k]) for k in diff))
    h = tol["fd"]["step"] * max(1.0, max(float(np.abs(inputs[k]).max(initial=0.0)) for k in diff))

    def f(t: float) -> tuple[float, float]:
        moved = {k: (v + t * direction[k] if k in direction else v) for k, v in inputs.items()}
        out = backend.run(concept.id, moved, vec.attrs)
        return (float(sum(np.sum(cots[k] * out[k]) for k in cots)),
                float(sum(np.sum(np.abs(cots[k] * out[k])) for k in cots)))

    (fp, mag), (fm, _), (fp2, _), (fm2, _) = f(h), f(-h), f(2 * h), f(-2 * h)
    d1, d2 = (fp - fm) / (2 * h), (fp2 - fm2) / (4 * h)
    u = tol["unit_roundoff"]["float64"]
    allowed = abs(d1 - d2) + 8 * u * mag / h + tol["fd"]["rtol_floor"] * abs(analytic)
    usage = abs(d1 - analytic) / allowed if allowed > 0 else (0.0 if d1 == analytic else float("inf"))
    rec = Record(usage=usage, details={"fd": d1, "analytic": analytic, "allowed": allowed, "h": h})
    if usage > 1:
        raise CheckFailed(f"finite difference {d1!r} vs vjp {analytic!r}: |diff| {abs(d1 - analytic):.3g} "
                          f"> allowed {allowed:.3g} (usage {usage:.3g})", {"usage": usage, "details": rec.details})
    return rec


def error_inputs(concept: spec_mod.Concept, ev: spec_mod.ErrorVector) -> dict[str, np.ndarray]:
    """Arrays for an error vector: a shape list, or {shape, dtype} / {values, dtype}."""
    out = {}
    for name, d in ev.inputs.items():
        known = name in {i.name for i in concept.inputs}
        default = "int64" if known and concept.input(name).dtype == "int64" else "float32"
        if isinstance(d, dict):
            dt = d.get("dtype", default)
            out[name] = np.array(d["values"], dtype=dt) if "values" in d else np.full(d["shape"], 0.5).astype(dt)
        else:
            out[name] = np.zeros(d, dtype=default) if default == "int64" else np.full(d, 0.5, dtype=default)
    return out


def error(backend: Backend, concept: spec_mod.Concept, ev: spec_mod.ErrorVector) -> Record:
    """4. A bad input must raise the spec's error class, naming the concept and the argument."""
    want = ERROR_CLASSES[ev.raises]
    inputs = error_inputs(concept, ev)
    try:
        backend.run(concept.id, inputs, ev.attrs)
    except UnsupportedConcept as exc:
        raise Unsupported(str(exc)) from None
    except NutshellError as exc:  # the expected path: check the class and the argument named
        ok = isinstance(exc, want) and getattr(exc, "concept", None) == concept.id and \
            getattr(exc, "argument", None) == ev.argument
        rec = {"usage": 0.0, "details": {"raised": type(exc).__name__, "message": str(exc)}}
        if not ok:
            named = getattr(exc, "argument", None)
            raise CheckFailed(f"expected {ev.raises} naming argument '{ev.argument}', got "
                              f"{type(exc).__name__} (argument {named!r}): {exc}", rec) from None
        return Record(details=rec["details"])
    except Exception as exc:
        raise CheckFailed(f"expected {ev.raises}, a raw {type(exc).__name__} escaped: {exc}",
                          {"usage": 0.0, "details": {"raised": type(exc).__name__}}) from exc
    raise CheckFailed(f"expected {ev.raises} naming '{ev.argument}', nothing was raised",
                      {"usage": 0.0, "details": {"raised": None}})


def pairwise_max_abs(runs: dict[str, dict[str, np.ndarray]], comparable=lambda a, b: True) -> dict[str, float]:
    """{"a~b": the largest |difference| over every array two runs share}, for each comparable pair."""
    keys = sorted(runs)
    return {f"{a}~{b}": max((float(np.max(np.abs(runs[a][k].astype(np.float64) - runs[b][k]), initial=0.0))
                             for k in runs[a] if k in runs[b]), default=0.0)
            for i, a in enumerate(keys) for b in keys[i + 1:] if comparable(a, b)}


def cross(backends: dict[str, Backend], concept: spec_mod.Concept, vec: spec_mod.Vector, dtype: str,
          tol: dict) -> Record:
    """5. Every backend on fresh inputs of the vector's shapes against the reference, computed now.

    Records each backend's bound usage and the pairwise largest absolute differences.
    """
    from nutshell.spec import reference, validate

    fresh = spec_mod.Vector(**{**vec.__dict__, "seed": (vec.seed or 0) + 5000})
    inputs = generate.vector_inputs(concept, fresh)
    arrays, attrs, _ = validate.check(concept, inputs, vec.attrs)
    golden = reference.forward(concept.id, arrays, attrs)
    outs, rec, failures, skipped = {}, Record(), [], []
    for name, b in backends.items():
        if b.unsupported(concept.id, dtype) is not None:
            skipped.append(name)
            continue
        outs[name] = b.run(concept.id, cast(inputs, concept, dtype), vec.attrs)
        for out_name, t in golden.items():
            cmp = tolerance.compare(outs[name][out_name], t.v, t.e, dtype, tol, t.f)
            rec.merge(f"{name}.{out_name}", cmp)
            if not cmp.ok:
                failures.append(f"{name} '{out_name}': {cmp.describe()}")
    rec.details["pairwise_max_abs"] = pairwise_max_abs(outs)
    rec.details["skipped"] = skipped
    if failures:
        raise CheckFailed("; ".join(failures), {"usage": rec.usage, "details": rec.details})
    if not outs:
        raise Unsupported(f"no selected backend offers {concept.id} in {dtype}")
    return rec
