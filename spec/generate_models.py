"""Regenerate every model's vector file from spec/models.yaml and the tracked reference.

``nutshell spec generate`` calls :func:`generate`, which writes ``spec/vectors/models/<model>.npz``
and the ``sha256`` lines of ``spec/models.yaml``; the same spec always gives the same bytes.

A model's .npz holds

* ``in.x``, ``in.labels``: a fixed batch (a shuffled linspace over ±scale, float32-exact; labels
  seeded) and ``param.<name>``: the parameters (the model's init, or the vectors' own, with the
  vectors' seed), all float64 holding float32-exact values;
* ``out.logits``/``err.logits``, ``out.loss``/``err.loss``, ``grad.<name>``/``gerr.<name>``: the
  goldens and their bounds (units of u) for those parameters and that batch;
* ``train.x`` (steps, batch, ...), ``train.labels``: the batches of the training vector;
  ``train.loss``/``train.lerr``: each step's loss (before its update) and its bound;
  ``train.param.<name>``/``train.perr.<name>``: the parameters after the last step, and their bounds;
* ``margin.<dtype>``, ``train.margin.<dtype>``: the smallest ReLU or max-pool decision gap in
  units of its bound (:func:`spec.reference.models.margin`). Above 1, every correct backend takes
  the golden's branches and the gradient (or trajectory) bounds hold; the float64 margins must be
  above 1, while a float32 margin at or below 1 makes the float32 gradient (or training) check
  unsupported by the tolerance model.

A model's vectors use ``vectors.dims`` where given (a shorter LSTM sequence, a smaller image), so
the first-order bounds stay meaningful; the parameters are the same for any such dims.

:func:`verify` (``nutshell spec verify``) re-derives every model golden twice: with the
reference, and with TensorFlow's float64 ops driven node by node by the backend-neutral executor
(spec/graph.py) — a second library and a second implementation of the graph's backward.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from nutshell import spec as spec_mod
from nutshell.errors import SpecError
from nutshell.spec import models, validate
from nutshell.spec.generate import _set_sha, npz_bytes, shuffled_linspace
from nutshell.spec.reference import models as ref
from nutshell.spec.reference.tracked import T


def _batch(model: models.ModelSpec, size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    x = shuffled_linspace((size, *model.input_shape), model.vectors.scale, rng)
    return x, rng.integers(0, model.classes, size).astype(np.int64)


def _margins(model: models.ModelSpec, what: str, margins: dict[str, float]) -> dict[str, np.ndarray]:
    """The margins as arrays; a float64 margin must clear 1 (a float32 one may not: the checks of
    gradients in float32 then say the tolerance model cannot cover them)."""
    if not margins["float64"] > 1.0:
        raise SpecError(f"model {model.id}: the {what} vector has a ReLU or max-pool decision within its float64 "
                        f"bound (margin {margins['float64']:.3g} ≤ 1); choose another seed in spec/models.yaml")
    return {f"{'train.' if what == 'training' else ''}margin.{dt}": np.array(m) for dt, m in margins.items()}


def compute(model: models.ModelSpec, tol: dict) -> dict[str, np.ndarray]:
    """Every array of one model's vector file (see the module docstring)."""
    model = model.vector_model()
    v = model.vectors
    params = models.init_params(model, v.seed, "float64", v.init)
    tracked = {k: T(p) for k, p in params.items()}
    x, labels = _batch(model, v.batch, np.random.default_rng(v.seed))
    loss, grads, values = ref.loss_and_grads(model, tracked, T(x), labels)
    logits = values[model.output]
    data = {"in.x": x, "in.labels": labels, "out.logits": logits.v, "err.logits": logits.e,
            "out.loss": loss.v, "err.loss": loss.e}
    data |= {f"param.{k}": p for k, p in params.items()}
    data |= {f"grad.{k}": g.v for k, g in grads.items()} | {f"gerr.{k}": g.e for k, g in grads.items()}
    data |= _margins(model, "gradient", {dt: ref.margin(model, values, tol, dt) for dt in ref.DTYPES})
    return data | _training(model, tracked, tol)


def _training(model: models.ModelSpec, params: dict[str, T], tol: dict) -> dict[str, np.ndarray]:
    tv = model.vectors.train
    rng = np.random.default_rng(tv.seed)
    xs, ys = zip(*(_batch(model, tv.batch, rng) for _ in range(tv.steps)), strict=True)
    losses, final, margins = ref.train(model, params, [T(x) for x in xs], list(ys), tv.lr, tol)
    data = {"train.x": np.stack(xs), "train.labels": np.stack(ys),
            "train.loss": np.array([t.v for t in losses]), "train.lerr": np.array([t.e for t in losses])}
    data |= {f"train.param.{k}": t.v for k, t in final.items()} | {f"train.perr.{k}": t.e for k, t in final.items()}
    return data | _margins(model, "training", margins)


def generate(path: Path | None = None, names: list[str] | None = None, check: bool = False, log=print) -> list[str]:
    """Write (or, with ``check``, compare) every model's vector file; returns the problems found."""
    path = Path(path) if path else models.MODELS_FILE
    tol = spec_mod.load().tolerance
    text, problems = path.read_text(), []
    for name in models.names(path):
        if names and name not in names:
            continue
        model = models.get(name, path)
        blob = npz_bytes(compute(model, tol))
        digest = hashlib.sha256(blob).hexdigest()
        target = path.parent / model.vectors.file
        if check:
            if digest != model.vectors.sha256 or not target.is_file() or target.read_bytes() != blob:
                problems.append(f"model {name}: regenerated bytes differ from {model.vectors.file}")
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(blob)
        text = _set_sha(text, model.vectors.file, digest)
        log(f"  model {name:<22} {digest[:12]}")
    if not check:
        path.write_text(text)
        models.document.cache_clear()
        models._get.cache_clear()
    return problems


# --- verification ---------------------------------------------------------------------------------

GOLDENS = ("out.", "grad.", "train.loss", "train.param.")

class _Oracle:
    """A float64 oracle (forward, vjp by concept) behind the ``run``/``vjp`` calls the executor makes."""

    def __init__(self, name: str, forward, vjp):
        self.name, self._forward, self._vjp = name, forward, vjp

    def run(self, concept: str, inputs: dict, attrs: dict | None = None) -> dict[str, np.ndarray]:
        arrays, full, _ = validate.check(spec_mod.load().concept(concept), inputs, attrs)
        return self._forward(concept, arrays, full)

    def vjp(self, concept: str, inputs: dict, cotangents: dict, attrs: dict | None = None) -> dict[str, np.ndarray]:
        arrays, full, _ = validate.check(spec_mod.load().concept(concept), inputs, attrs)
        return self._vjp(concept, arrays, cotangents, full)

    def unsupported(self, concept: str, dtype: str) -> None:
        return None


def _executor_goldens(oracle: _Oracle, model: models.ModelSpec, data: dict[str, np.ndarray]) -> dict:
    """The goldens of one vector file recomputed by ``oracle`` through the neutral executor."""
    from nutshell.spec.graph import Model

    params = {k[6:]: v for k, v in data.items() if k.startswith("param.")}
    m = Model(oracle, model, params, dtype="float64")
    loss, grads = m.loss_and_grads(data["in.x"], data["in.labels"])
    out = {"out.logits": m.forward(data["in.x"]), "out.loss": np.array(loss)}
    out |= {f"grad.{k}": g for k, g in grads.items()}
    lr = model.vectors.train.lr
    losses = [m.step(x, y, lr) for x, y in zip(data["train.x"], data["train.labels"], strict=True)]
    return out | {"train.loss": np.array(losses)} | {f"train.param.{k}": v for k, v in m.params().items()}


def verify(use_tf: bool = True) -> list:
    """One report per model (as ``spec.verify.ConceptReport``): the largest normwise disagreement
    of each oracle with the stored goldens of logits, loss, gradients and the training vector."""
    from nutshell.spec.verify import ACCEPT, ConceptReport, normwise

    tol = spec_mod.load().tolerance
    reports = []
    for spec in models.load().values():
        data, vm = spec.vectors.load(), spec.vector_model()
        rep = ConceptReport(f"model {spec.id}", vectors=1)
        fresh = {"reference": compute(spec, tol)}
        if use_tf:
            from nutshell.spec import tf_oracle
            fresh["tensorflow"] = _executor_goldens(_Oracle("tensorflow", tf_oracle.forward, tf_oracle.vjp), vm, data)
        for oname, got in fresh.items():
            for key in [k for k in got if k.startswith(GOLDENS)]:
                d = normwise(got[key], data[key])
                setattr(rep, oname, max(getattr(rep, oname), d))
                if d > ACCEPT:
                    rep.problems.append(f"{key}: {oname} disagrees by {d:.3g}")
        reports.append(rep)
    return reports
