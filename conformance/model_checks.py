"""The spec's models (``spec/models.yaml``) as conformance checks on every backend.

Items, per model × backend (``model_`` keeps a model apart from the concept of the same name):

* ``model_<id>[<backend>-forward-<dtype>]``, ``-loss-``, ``-grads-``: the logits, the loss and
  every parameter gradient for the vector's parameters and batch, against the float64 goldens;
* ``model_<id>[<backend>-train-<dtype>]``: the vector's SGD steps from its parameters; every
  step's loss and the final parameters against the reference's trajectory, whose tracked bounds
  cover all the steps to first order;
* ``model_<id>[<backend>-train-digits]`` for the models whose spec sets ``min_accuracy``: the
  spec's training recipe on the real digits, the test accuracy in the details;
* ``model_<id>[train-agree]`` (backend ``cross``): the trajectories of every selected backend
  side by side, each against the reference, and the largest difference between every two
  backends in the same dtype in the details.

A gradient or training check in a dtype is unsupported where the backend lacks a concept of the
model in that dtype, or where the vector's decision margin in that dtype is not above 1: a ReLU
or max-pool decision then lies within its own bound, which no first-order bound can cover
(spec/generate_models.py). Forward values are continuous through those kinks, so forward and
loss checks always run.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from nutshell.backends.base import Backend
from nutshell.conformance.checks import CheckFailed, Record, Unsupported, _compare_all, pairwise_max_abs
from nutshell.conformance.results import Section
from nutshell.spec import models

DTYPES = ("float32", "float64")


@dataclass(frozen=True)
class Ref:
    """What a conformance item needs: an ``id`` (as its concept) and a ``name`` (as its vector)."""

    id: str
    name: str = ""


def _split(data: dict[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    return {k[len(prefix):]: v for k, v in data.items() if k.startswith(prefix)}


def _model(b: Backend, spec: models.ModelSpec, params: dict[str, np.ndarray], dtype: str):
    """The vector's model on ``b`` in ``dtype``, or Unsupported naming the missing concept."""
    m = b.model(spec.id, params={k: v.astype(dtype) for k, v in params.items()}, dtype=dtype,
                dims=spec.vectors.dims or None)
    why = m.unsupported()
    if why is not None:
        raise Unsupported(f"{b.name} cannot run model {spec.id}: {why}")
    return m


def _require_margin(data: dict[str, np.ndarray], key: str, spec: models.ModelSpec, dtype: str) -> None:
    m = float(data[f"{key}.{dtype}"])
    if not m > 1.0:
        what = "gradients" if key == "margin" else "training trajectory"
        raise Unsupported(f"the tolerance model cannot bound the {what} of {spec.id} in {dtype}: a ReLU or max-pool "
                          f"decision lies within its {dtype} bound (margin {m:.3g} ≤ 1), so a correct backend may "
                          "take the other branch")


def forward(b: Backend, spec: models.ModelSpec, dtype: str, tol: dict) -> Record:
    """The logits of the vector's batch against the golden."""
    data = spec.vectors.load()
    m = _model(b, spec, _split(data, "param."), dtype)
    out = {"logits": m.forward(data["in.x"].astype(dtype))}
    return _compare_all(out, {"logits": data["out.logits"]}, {"logits": data["err.logits"]}, dtype, tol, "output")


def loss(b: Backend, spec: models.ModelSpec, dtype: str, tol: dict) -> Record:
    """The batch-mean loss against the golden."""
    data = spec.vectors.load()
    m = _model(b, spec, _split(data, "param."), dtype)
    value, _ = m.loss_and_grads(data["in.x"].astype(dtype), data["in.labels"])
    return _compare_all({"loss": np.asarray(value, dtype)}, {"loss": data["out.loss"]}, {"loss": data["err.loss"]},
                        dtype, tol, "loss")


def grads(b: Backend, spec: models.ModelSpec, dtype: str, tol: dict) -> Record:
    """Every parameter gradient against its golden."""
    data = spec.vectors.load()
    m = _model(b, spec, _split(data, "param."), dtype)
    _require_margin(data, "margin", spec, dtype)
    _, g = m.loss_and_grads(data["in.x"].astype(dtype), data["in.labels"])
    return _compare_all(g, _split(data, "grad."), _split(data, "gerr."), dtype, tol, "gradient")


def trajectory(b: Backend, spec: models.ModelSpec, dtype: str) -> dict[str, np.ndarray]:
    """The vector's SGD steps on ``b``: {"loss": per-step losses, <param>: final values}."""
    data = spec.vectors.load()
    m = _model(b, spec, _split(data, "param."), dtype)
    _require_margin(data, "train.margin", spec, dtype)
    lr = spec.vector_model().vectors.train.lr
    losses = [m.step(x.astype(dtype), y, lr) for x, y in zip(data["train.x"], data["train.labels"], strict=True)]
    return {"loss": np.asarray(losses, dtype)} | m.params()


def _against_reference(result: dict[str, np.ndarray], data: dict[str, np.ndarray], dtype: str, tol: dict) -> Record:
    goldens = {"loss": data["train.loss"]} | _split(data, "train.param.")
    errs = {"loss": data["train.lerr"]} | _split(data, "train.perr.")
    return _compare_all(result, goldens, errs, dtype, tol, "training")


def _cached(cache: dict, b: Backend, spec: models.ModelSpec, dtype: str) -> dict[str, np.ndarray]:
    key = (b.name, spec.id, dtype)
    if key not in cache:
        cache[key] = trajectory(b, spec, dtype)
    return cache[key]


def train(b: Backend, spec: models.ModelSpec, dtype: str, tol: dict, cache: dict) -> Record:
    """The vector's trajectory against the reference's (the result is kept for train-agree)."""
    return _against_reference(_cached(cache, b, spec, dtype), spec.vectors.load(), dtype, tol)


def train_agree(backends: dict[str, Backend], spec: models.ModelSpec, tol: dict, cache: dict) -> Record:
    """Every selected backend's trajectory in each dtype against the reference, and pairwise."""
    data = spec.vectors.load()
    rec, failures, runs, skipped = Record(), [], {}, {}
    for name, b in backends.items():
        for dtype in DTYPES:
            try:
                runs[f"{name}-{dtype}"] = result = _cached(cache, b, spec, dtype)
                sub = _against_reference(result, data, dtype, tol)
                rec.usage = max(rec.usage, sub.usage)
                rec.details[f"{name}-{dtype}.usage"] = sub.usage
            except Unsupported as exc:
                skipped[f"{name}-{dtype}"] = str(exc)
            except CheckFailed as exc:
                failures.append(f"{name} {dtype}: {exc}")
    rec.details["pairwise_max_abs"] = pairwise_max_abs(
        runs, comparable=lambda a, c: a.rsplit("-", 1)[1] == c.rsplit("-", 1)[1])   # same dtype only
    rec.details["skipped"] = skipped
    if failures:
        raise CheckFailed("; ".join(failures), {"usage": rec.usage, "details": rec.details})
    if not runs:
        raise Unsupported(f"no selected backend can check the trajectory of {spec.id}")
    return rec


FILTER_CELLS = 1024   # the most weights of a first convolution a record keeps


def first_filters(spec: models.ModelSpec, params: dict[str, np.ndarray], seed: int) -> dict:
    """{"first_filters": the weights of the model's first convolution, its parameter name and the
    seed of the initialisation}, for the report to draw as the glossary's Figure 1 draws learned
    features; {} for a model without a convolution or with more than FILTER_CELLS weights in it."""
    node = next((n for n in spec.nodes if n.op == "conv2d"), None)
    name = node.inputs.get("w") if node is not None else None
    if name not in params or params[name].size > FILTER_CELLS:
        return {}
    return {"first_filters": {"param": name, "seed": seed, "values": params[name].tolist()}}


def digits(b: Backend, spec: models.ModelSpec, seed: int = 0) -> Record:
    """The spec's training recipe on its dataset; the test accuracy must reach ``min_accuracy``.
    The record keeps the trained first-layer filters (:func:`first_filters`)."""
    from nutshell.training import fit as trainer

    missing = [c for c in sorted(spec.concepts) if b.unsupported(c, "float32") is not None]
    if missing:
        raise Unsupported(f"{b.name} does not offer {missing[0]} in float32")
    model, hist = trainer.train(b, spec.id, seed=seed)
    details = {"test_accuracy": hist.test_accuracy, "min_accuracy": spec.training.min_accuracy,
               "steps": hist.steps, "final_loss": hist.final_loss, "seconds": hist.seconds,
               "epochs": [round(e["test_accuracy"], 4) for e in hist.epochs],
               "epoch_losses": [round(e["loss"], 6) for e in hist.epochs]} | \
        first_filters(spec, model.params(), seed)
    if hist.test_accuracy < spec.training.min_accuracy:
        raise CheckFailed(f"test accuracy {hist.test_accuracy:.2%} < {spec.training.min_accuracy:.0%} after "
                          f"{hist.steps} steps", {"usage": 0.0, "details": details})
    return Record(details=details)


# --- the items ------------------------------------------------------------------------------------

CHECKS = {"forward": forward, "loss": loss, "grads": grads}


def items(spec_file, st: dict) -> Iterator:
    """One conformance item per model × backend × check × dtype (see the module docstring)."""
    from nutshell.conformance.plugin import CheckItem

    tol, cache = st["spec"].tolerance, st.setdefault("model_trajectories", {})
    for spec in models.load().values():
        ref = Ref(f"model_{spec.id}")
        for bname in st["backends"]:
            for dtype in DTYPES:
                for check, fn in CHECKS.items():
                    yield CheckItem.from_parent(
                        spec_file, name=f"{ref.id}[{bname}-{check}-{dtype}]", backend=bname, concept=ref,
                        check=check, vec=Ref(spec.id, check), dtype=dtype, section=Section.MODELS,
                        fn=lambda st, b=bname, f=fn, d=dtype, s=spec: f(st["backends"][b], s, d, tol))
                yield CheckItem.from_parent(
                    spec_file, name=f"{ref.id}[{bname}-train-{dtype}]", backend=bname, concept=ref, check="train",
                    vec=Ref(spec.id, "train"), dtype=dtype, section=Section.MODELS,
                    fn=lambda st, b=bname, d=dtype, s=spec: train(st["backends"][b], s, d, tol, cache))
            if spec.training.min_accuracy is not None:
                yield CheckItem.from_parent(
                    spec_file, name=f"{ref.id}[{bname}-train-digits]", backend=bname, concept=ref, check="digits",
                    vec=Ref(spec.id, "digits"), dtype="float32", section=Section.MODELS,
                    fn=lambda st, b=bname, s=spec: digits(st["backends"][b], s))
        if st["backends"]:
            yield CheckItem.from_parent(
                spec_file, name=f"{ref.id}[train-agree]", backend="cross", concept=ref, check="train-agree",
                vec=Ref(spec.id, "train"), dtype=None, section=Section.MODELS,
                fn=lambda st, s=spec: train_agree(st["backends"], s, tol, cache))
