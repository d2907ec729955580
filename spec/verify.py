"""``nutshell spec verify``: re-derive every stored golden with both oracles.

For every vector (those of ``concepts.yaml`` and the low-precision ones of ``lowp.yaml``), the
float64 NumPy reference and TensorFlow (float64 end to end) each recompute
the outputs and the vjp. A golden is accepted when both agree with it to 1e-10, measured normwise
per array: max |oracle − golden| / max |golden| over the finite elements (non-finite elements
must match exactly).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from nutshell import spec as spec_mod
from nutshell.spec import lowp, validate

ACCEPT = 1e-10


def normwise(a: np.ndarray, golden: np.ndarray) -> float:
    """max |a − golden| / max |golden| over finite elements; inf if the non-finite ones differ."""
    a, golden = np.asarray(a, np.float64), np.asarray(golden, np.float64)
    if a.shape != golden.shape:
        return float("inf")
    finite = np.isfinite(golden)
    if not np.array_equal(np.isnan(a), np.isnan(golden)) or not np.array_equal(a[~finite & ~np.isnan(golden)],
                                                                               golden[~finite & ~np.isnan(golden)]):
        return float("inf")
    if not finite.any():
        return 0.0
    scale = float(np.abs(golden[finite]).max())
    err = float(np.abs(a[finite] - golden[finite]).max())
    return err / scale if scale > 0 else err


@dataclass
class ConceptReport:
    concept: str
    vectors: int = 0
    reference: float = 0.0
    tensorflow: float = 0.0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def _oracle_results(fn_fwd: Callable, fn_vjp: Callable, cid: str, arrays: dict, cots: dict, attrs: dict,
                    grad: bool) -> dict[str, np.ndarray]:
    out = {f"out.{k}": getattr(v, "v", v) for k, v in fn_fwd(cid, arrays, attrs).items()}
    if grad:
        out |= {f"grad.{k}": getattr(v, "v", v) for k, v in fn_vjp(cid, arrays, cots, attrs).items()}
    return out


def verify(s: spec_mod.Spec, use_tf: bool = True, concepts: list[str] | None = None) -> list[ConceptReport]:
    """One report per concept with the largest normwise disagreement of each oracle; a name in
    ``concepts`` that ``s`` lacks is a SpecError (with the closest name) before anything runs."""
    spec_mod.check_names(concepts, s.concepts)
    from nutshell.spec import reference

    oracles = {"reference": (reference.forward, reference.vjp)}
    if use_tf:
        from nutshell.spec import tf_oracle
        oracles["tensorflow"] = (tf_oracle.forward, tf_oracle.vjp)
    reports = []
    for concept in s.concepts.values():
        if concepts and concept.id not in concepts:
            continue
        rep = ConceptReport(concept.id)
        for vec in (*concept.vectors, *(lv.vector for lv in lowp.load() if lv.concept == concept.id)):
            data = vec.load()
            inputs = {k[3:]: v for k, v in data.items() if k.startswith("in.")}
            cots = {k[4:]: v for k, v in data.items() if k.startswith("cot.")}
            arrays, attrs, _ = validate.check(concept, inputs, vec.attrs)
            rep.vectors += 1
            for oname, (fwd, vjp) in oracles.items():
                got = _oracle_results(fwd, vjp, concept.id, arrays, cots, attrs, vec.grad)
                for key, value in got.items():
                    d = normwise(value, data[key])
                    setattr(rep, oname, max(getattr(rep, oname), d))
                    if d > ACCEPT:
                        rep.problems.append(f"{vec.name} {key}: {oname} disagrees by {d:.3g}")
        reports.append(rep)
    if not concepts:
        from nutshell.spec import generate_models
        reports += generate_models.verify(use_tf)
    return reports
