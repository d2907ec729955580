"""The glossary's claims (``spec/claims.yaml``) as checks on every backend.

Each claim has one small function ``check(backend, claim, tol) -> Record`` that runs its
experiment through the backend contract only (``run``, ``vjp``, ``model``), puts every measured
number in the record's details and raises :class:`~conformance.checks.CheckFailed` when a
threshold of the claim is missed. :func:`items` turns them into one conformance item per claim ×
backend, ``claim_<id>[<backend>]``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import pytest

from nutshell import spec as spec_mod
from nutshell.backends.base import Backend
from nutshell.conformance.checks import CheckFailed, Record, Unsupported
from nutshell.conformance.results import Section
from nutshell.errors import SpecError, UnsupportedConcept
from nutshell.spec import models, reference, tolerance, validate
from nutshell.spec.graph import Model
from nutshell.spec.reference import tracked
from nutshell.training import datasets
from nutshell.training import fit as train

CLAIMS_FILE = spec_mod.SPEC_DIR / "claims.yaml"


@dataclass(frozen=True)
class ClaimRef:
    """What a conformance item needs of a claim: its id (as concept) and a name (as vector)."""

    id: str

    @property
    def name(self) -> str:
        return "claim"


def load() -> list[dict]:
    """The claims of spec/claims.yaml, validated against the schema."""
    return spec_mod.load_document(CLAIMS_FILE)["claims"]


# --- helpers ---------------------------------------------------------------------------------

def _exact(a: np.ndarray) -> np.ndarray:
    """Round to float32 and hold in float64: exactly representable in every tested dtype."""
    return np.asarray(a, np.float32).astype(np.float64)


def _verdict(failures: list[str], details: dict, usage: float = 0.0) -> Record:
    """The record, or CheckFailed naming every missed threshold with the numbers."""
    if failures:
        raise CheckFailed("; ".join(failures), {"usage": usage, "details": details})
    return Record(usage=usage, details=details)


def _golden(spec: spec_mod.Spec, concept: str, inputs: dict[str, np.ndarray], attrs: dict) -> tracked.T:
    """The reference's value and error bound for ``concept`` of ``spec`` (the run's, which the
    backend was built on) on float64 inputs."""
    arrays, full, _ = validate.check(spec.concept(concept), inputs, attrs)
    return reference.forward(concept, arrays, full)["y"]


def _conv_inputs(rng: np.random.Generator, cfg: dict) -> dict[str, np.ndarray]:
    """Seeded x, w and b (one per output channel) for a configuration {x, w, attrs}."""
    return {"x": _exact(rng.standard_normal(cfg["x"])), "w": _exact(rng.standard_normal(cfg["w"])),
            "b": _exact(rng.standard_normal(cfg["w"][0]))}


def _cast(arrays: dict[str, np.ndarray], dtype: str) -> dict[str, np.ndarray]:
    return {k: v.astype(dtype) for k, v in arrays.items()}


# --- 1. linear collapse ----------------------------------------------------------------------

def _near_identity_factors(p: dict) -> tuple[np.ndarray, np.ndarray]:
    """(x (N, I), W (L, I, I)): W_k = (1 − α)·I + α·S_k with S_k row-stochastic, all ≥ 0."""
    rng = np.random.default_rng(p["seed"])
    n = p["width"]
    s = rng.random((p["layers"], n, n))
    s /= s.sum(-1, keepdims=True)
    ws = _exact((1 - p["alpha"]) * np.eye(n) + p["alpha"] * s)
    return _exact(rng.random((p["batch"], n)) + 0.5), ws


def _tracked_bounds(x: np.ndarray, ws: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Error bounds (units of u) of the chain x·W1···WL and of x·(W1···WL), tracked arithmetic."""
    chain = tracked.T(x)
    for w in ws:
        chain = tracked.einsum("ni,io->no", chain, tracked.T(w))
    prod = tracked.T(ws[0])
    for w in ws[1:]:
        prod = tracked.einsum("ij,jk->ik", prod, tracked.T(w))
    return chain.e, tracked.einsum("ni,io->no", tracked.T(x), prod).e


def linear_collapse(b: Backend, claim: dict, tol: dict) -> Record:
    """chain = (((x·W1)·W2)···WL), collapsed = x·P with P = W1···WL; both on the backend."""
    p, th, dt = claim["parameters"], claim["threshold"], claim["dtype"]
    x, ws = _near_identity_factors(p)
    chain = x.astype(dt)
    for w in ws:
        chain = b.run("dense", {"x": chain, "w": w.astype(dt)})["y"]
    prod = ws[0].astype(dt)
    for w in ws[1:]:
        prod = b.run("dense", {"x": prod, "w": w.astype(dt)})["y"]
    collapsed = b.run("dense", {"x": x.astype(dt), "w": prod})["y"]
    e_chain, e_collapsed = _tracked_bounds(x, ws)
    allowed = tolerance.bound(e_chain, dt, tol) + tolerance.bound(e_collapsed, dt, tol)
    diff = np.abs(chain.astype(np.float64) - collapsed)
    usage = float((diff / allowed).max())
    change = float(np.abs(chain - x).max() / np.abs(x).max())
    details = {"layers": len(ws), "bound_usage": usage, "max_abs_diff": float(diff.max()),
               "max_allowed": float(allowed.max()), "relative_change": change,
               "product_distance_from_identity": float(np.abs(prod - np.eye(len(prod))).max())}
    failures = []
    if usage > th["bound_usage_max"]:
        failures.append(f"{len(ws)} layers and their product differ by {diff.max():.3g}: bound usage {usage:.3g}")
    if change < th["min_relative_change"]:
        failures.append(f"the stack moved the batch by only {change:.3g} (relative), below {th['min_relative_change']}")
    return _verdict(failures, details, usage)


# --- 2. XOR needs a non-linearity ------------------------------------------------------------

def _grid(lo: float, hi: float, step: float) -> np.ndarray:
    return np.arange(lo, hi + step / 2, step)


def _linear_models(p: dict) -> tuple[np.ndarray, np.ndarray]:
    """Every (w1, w2, b) of the grid as one dense weight (2, M) and bias (M,)."""
    w1, w2, bias = np.meshgrid(_grid(*p["grid"]["weights"]), _grid(*p["grid"]["weights"]),
                               _grid(*p["grid"]["biases"]), indexing="ij")
    return np.stack([w1.ravel(), w2.ravel()]), bias.ravel()


def xor_needs_nonlinearity(b: Backend, claim: dict, tol: dict) -> Record:
    """The two-unit ReLU network is exact on XOR; the best linear model of the grid gets 3 of 4."""
    p, th, dt = claim["parameters"], claim["threshold"], claim["dtype"]
    x, t = np.array(p["points"], dt), np.array(p["targets"])
    net = {k: np.array(v, dt) for k, v in p["relu_net"].items()}
    h = b.run("layer", {"x": x, "w": net["w1"], "b": net["b1"]}, {"activation": "relu"})["y"]
    y = b.run("dense", {"x": h, "w": net["w2"], "b": net["b2"]})["y"][:, 0]
    relu_correct, relu_err = int(((y > 0.5) == (t == 1)).sum()), float(np.abs(y - t).max())
    w, bias = _linear_models(p)
    z = b.run("dense", {"x": x, "w": w.astype(dt), "b": bias.astype(dt)})["y"]  # (4, M)
    pred = z > 0
    correct = (pred == (t[:, None] == 1)).sum(axis=0)  # (M,)
    labellings = int(np.unique(pred, axis=1).shape[1])
    best = int(correct.argmax())
    details = {"relu_outputs": y.tolist(), "relu_correct": relu_correct, "relu_max_abs_error": relu_err,
               "linear_models": int(w.shape[1]), "linear_best_correct": int(correct[best]),
               "linear_best_model": {"w": w[:, best].tolist(), "b": float(bias[best])},
               "linear_labellings": labellings}
    failures = []
    if relu_correct < th["relu_correct_min"] or relu_err > th["relu_max_abs_error"]:
        failures.append(f"the ReLU network gives {y.tolist()} for XOR {t.tolist()}")
    if correct[best] > th["linear_correct_max"]:
        failures.append(f"a linear model {details['linear_best_model']} got {correct[best]} of 4 XOR points")
    if labellings != th["linear_labellings"]:
        failures.append(f"the grid realises {labellings} labellings of the square, not {th['linear_labellings']}")
    return _verdict(failures, details)


# --- 3. the convolution theorem --------------------------------------------------------------

def convolution_theorem(b: Backend, claim: dict, tol: dict) -> Record:
    """conv2d_fft against conv2d, within the sum of their two bounds."""
    p, th, dt = claim["parameters"], claim["threshold"], claim["dtype"]
    rng = np.random.default_rng(p["seed"])
    usage, details, failures = 0.0, {}, []
    for i, cfg in enumerate(p["configs"]):
        inputs = _conv_inputs(rng, cfg)
        direct = b.run("conv2d", _cast(inputs, dt), cfg["attrs"])["y"]
        fft = b.run("conv2d_fft", _cast(inputs, dt), cfg["attrs"])["y"]
        allowed = sum(tolerance.bound(_golden(b.spec, c, inputs, cfg["attrs"]).e, dt, tol)
                      for c in ("conv2d", "conv2d_fft"))
        diff = np.abs(fft.astype(np.float64) - direct)
        u = float((diff / allowed).max())
        usage = max(usage, u)
        details[f"config{i}"] = {"bound_usage": u, "max_abs_diff": float(diff.max()), "shape": list(direct.shape)}
        if u > th["bound_usage_max"]:
            failures.append(f"config {i}: conv2d_fft and conv2d differ by {diff.max():.3g}, bound usage {u:.3g}")
    details["bound_usage"] = usage
    return _verdict(failures, details, usage)


# --- 4. convolution is cross-correlation with a flipped kernel --------------------------------

def convolution_is_flipped_correlation(b: Backend, claim: dict, tol: dict) -> Record:
    """convolve2d(x, w) against conv2d(x, flip(w)); conv2d(x, w) must miss."""
    p, th, dt = claim["parameters"], claim["threshold"], claim["dtype"]
    rng = np.random.default_rng(p["seed"])
    usage, details, failures = 0.0, {}, []
    for i, cfg in enumerate(p["configs"]):
        inputs = _conv_inputs(rng, cfg)
        flipped = {**inputs, "w": np.ascontiguousarray(inputs["w"][:, :, ::-1, ::-1])}
        conv = b.run("convolve2d", _cast(inputs, dt), cfg["attrs"])["y"].astype(np.float64)
        corr_flipped = b.run("conv2d", _cast(flipped, dt), cfg["attrs"])["y"]
        corr = b.run("conv2d", _cast(inputs, dt), cfg["attrs"])["y"]
        allowed = 2 * tolerance.bound(_golden(b.spec, "conv2d", flipped, cfg["attrs"]).e, dt, tol)
        u, miss = float((np.abs(conv - corr_flipped) / allowed).max()), float((np.abs(conv - corr) / allowed).max())
        usage = max(usage, u)
        details[f"config{i}"] = {"bound_usage": u, "unflipped_usage": miss,
                                 "max_abs_diff": float(np.abs(conv - corr_flipped).max()),
                                 "unflipped_max_abs_diff": float(np.abs(conv - corr).max())}
        if u > th["bound_usage_max"]:
            failures.append(f"config {i}: convolve2d(x, w) and conv2d(x, flip(w)) differ: bound usage {u:.3g}")
        if miss <= th["unflipped_usage_min"]:
            failures.append(f"config {i}: convolve2d(x, w) equals conv2d(x, w) too (usage {miss:.3g}): no flip")
    details["bound_usage"] = usage
    return _verdict(failures, details, usage)


# --- 5. pooling ignores small shifts ---------------------------------------------------------

def _sparse_features(p: dict) -> np.ndarray:
    """(N, C, H, W) zeros with a feature at the top-left corner of a random half of the windows."""
    rng = np.random.default_rng(p["seed"])
    k, (n, c, hh, ww) = p["kernel"], p["shape"]
    present = rng.random((n, c, hh // k, ww // k)) < 0.5
    x = np.zeros(p["shape"])
    x[:, :, ::k, ::k] = np.where(present, _exact(rng.uniform(0.5, 1.0, present.shape)), 0.0)
    return x


def pooling_shift_invariance(b: Backend, claim: dict, tol: dict) -> Record:
    """max_pool2d of every translation by less than a window equals the original's, bitwise."""
    p, th, dt = claim["parameters"], claim["threshold"], claim["dtype"]
    k, x = p["kernel"], _sparse_features(p).astype(dt)

    def pool(a: np.ndarray) -> np.ndarray:
        return b.run("max_pool2d", {"x": a}, {"kernel": [k, k]})["y"]

    base = pool(x)
    within = {f"{dr},{dc}": int((pool(np.roll(x, (dr, dc), axis=(2, 3))) != base).sum())
              for dr in range(k) for dc in range(k)}
    whole = int((pool(np.roll(x, k, axis=2)) != base).sum())
    changed = sum(within.values())
    details = {"features": int((x > 0).sum()), "pooled_outputs": int(base.size), "shifts": len(within),
               "changed_within_window": changed, "changed_by_whole_window": whole}
    failures = []
    if changed > th["changed_within_window_max"]:
        failures.append(f"shifts inside the window changed pooled outputs: {within}")
    if whole < th["changed_by_whole_window_min"]:
        failures.append("a shift by a whole window left the pooled map unchanged")
    return _verdict(failures, details)


# --- 6. vanishing gradients ------------------------------------------------------------------

def _weight_grad_norms(b: Backend, activation: str, std: float, p: dict, dtype: str) -> list[float]:
    """‖∂L/∂W_l‖ for l = 1..depth of a stack of `layer`s, L = ⟨g, y_depth⟩, g standard normal."""
    rng = np.random.default_rng(p["seed"])
    n, depth = p["width"], p["depth"]
    x = _exact(rng.standard_normal((p["batch"], n))).astype(dtype)
    ws = [_exact(std * rng.standard_normal((n, n))).astype(dtype) for _ in range(depth)]
    zero, attrs = np.zeros(n, dtype), {"activation": activation}
    hs = [x]
    for w in ws:
        hs.append(b.run("layer", {"x": hs[-1], "w": w, "b": zero}, attrs)["y"])
    g = _exact(rng.standard_normal(hs[-1].shape)).astype(dtype)
    norms = []
    for h, w in zip(reversed(hs[:-1]), reversed(ws), strict=True):
        grads = b.vjp("layer", {"x": h, "w": w, "b": zero}, {"y": g}, attrs)
        norms.append(float(np.linalg.norm(grads["w"].astype(np.float64))))
        g = grads["x"]
    return norms[::-1]


def vanishing_gradients(b: Backend, claim: dict, tol: dict) -> Record:
    """First-to-last weight-gradient norm ratio: sigmoid with Glorot init, ReLU with He init."""
    p, th, dt = claim["parameters"], claim["threshold"], claim["dtype"]
    n = p["width"]
    sig = _weight_grad_norms(b, "sigmoid", np.sqrt(2 / (n + n)), p, dt)
    relu = _weight_grad_norms(b, "relu", np.sqrt(2 / n), p, dt)
    r_sig, r_relu = sig[0] / sig[-1], relu[0] / relu[-1]
    details = {"sigmoid_ratio": r_sig, "relu_ratio": r_relu, "sigmoid_grad_norms": sig, "relu_grad_norms": relu}
    failures = []
    if not r_sig <= th["sigmoid_ratio_max"]:
        failures.append(f"sigmoid first/last gradient norm ratio {r_sig:.3g} > {th['sigmoid_ratio_max']}")
    if not th["relu_ratio_min"] <= r_relu <= th["relu_ratio_max"]:
        failures.append(f"ReLU first/last gradient norm ratio {r_relu:.3g} outside "
                        f"[{th['relu_ratio_min']}, {th['relu_ratio_max']}]")
    return _verdict(failures, details)


# --- 7. inception's 1×1 reduction ------------------------------------------------------------

@dataclass
class CountingBackend:
    """Forwards ``run`` to a backend and writes down every call: concept, shapes, multiply-adds.

    A conv2d call costs y.size · w.shape[1] · w.shape[2] · w.shape[3] multiply-adds, that is
    N·O·oH·oW·(C/groups)·kh·kw; other concepts count none.
    """

    backend: Backend
    calls: list[dict] = field(default_factory=list)

    def run(self, concept: str, inputs: dict[str, np.ndarray], attrs: dict | None = None) -> dict[str, np.ndarray]:
        out = self.backend.run(concept, inputs, attrs)
        macs = int(out["y"].size * np.prod(inputs["w"].shape[1:])) if concept == "conv2d" else 0
        self.calls.append({"concept": concept, "inputs": {k: list(v.shape) for k, v in inputs.items()},
                           "y": list(out["y"].shape), "macs": macs})
        return out

    def macs(self, start: int = 0) -> int:
        return sum(c["macs"] for c in self.calls[start:])


def _conv_relu(cb: CountingBackend, x: np.ndarray, w: np.ndarray, pad: int) -> np.ndarray:
    y = cb.run("conv2d", {"x": x, "w": w, "b": np.zeros(len(w), x.dtype)}, {"pads": [pad] * 4})["y"]
    return cb.run("relu", {"x": y})["y"]


def inception_reduction(b: Backend, claim: dict, tol: dict) -> Record:
    """The 5×5 branch with and without the 1×1 reduction, multiply-adds counted on the calls."""
    p, th, dt = claim["parameters"], claim["threshold"], claim["dtype"]
    rng = np.random.default_rng(p["seed"])
    c, r, o, k = p["input"][1], p["reduced_channels"], p["out_channels"], p["kernel"]
    x = _exact(rng.random(p["input"])).astype(dt)
    w_direct, w_reduce, w_5x5 = (_exact(rng.standard_normal(s) * 0.05).astype(dt)
                                 for s in ((o, c, k, k), (r, c, 1, 1), (o, r, k, k)))
    cb = CountingBackend(b)
    started = time.perf_counter()
    _conv_relu(cb, x, w_direct, k // 2)
    direct, mid, n_direct = cb.macs(), time.perf_counter(), len(cb.calls)
    reduced = _conv_relu(cb, x, w_reduce, 0)
    reduction, n_reduction = cb.macs(n_direct), len(cb.calls)
    _conv_relu(cb, reduced, w_5x5, k // 2)
    after = cb.macs(n_reduction)
    details = {"direct_macs": direct, "reduction_macs": reduction, "reduced_5x5_macs": after,
               "reduced_macs": reduction + after, "saving": direct / (reduction + after),
               "reduced_shape": list(reduced.shape), "seconds_direct": mid - started,
               "seconds_reduced": time.perf_counter() - mid, "calls": cb.calls}
    failures = [f"{key}: measured {details[key]}, the spec states {th[key]}"
                for key in ("direct_macs", "reduction_macs", "reduced_5x5_macs", "reduced_macs", "reduced_shape")
                if details[key] != th[key]]
    return _verdict(failures, details)


# --- 8. learned features beat engineered ones ------------------------------------------------

def ink_profiles(x: np.ndarray) -> np.ndarray:
    """(N, 1, 8, 8) images -> (N, 16): the mean ink of each row, then of each column."""
    img = x[:, 0]
    return np.concatenate([img.mean(axis=2), img.mean(axis=1)], axis=1)


def _fit(b: Backend, name: str, data: datasets.Dataset, recipe: dict, seed: int, **dims: int) -> train.History:
    model = b.model(name, seed=seed, dims=dims)
    return train.fit(model, data, recipe["epochs"], recipe["batch_size"], recipe["lr"], recipe["momentum"], seed=seed)


def learned_features_beat_engineered(b: Backend, claim: dict, tol: dict) -> Record:
    """Test accuracy of digits_cnn on pixels against softmax regression on ink profiles."""
    p, th = claim["parameters"], claim["threshold"]
    eng, lrn = p["engineered"], p["learned"]
    pixels = datasets.load(models.get(lrn["model"]))
    profiles = datasets.Dataset("digits_profiles", ink_profiles(pixels.x_train), pixels.y_train,
                                ink_profiles(pixels.x_test), pixels.y_test, pixels.classes)
    h_eng = _fit(b, eng["model"], profiles, eng, p["seed"], I=profiles.x_train.shape[1])
    h_lrn = _fit(b, lrn["model"], pixels, lrn, p["seed"])
    margin = h_lrn.test_accuracy - h_eng.test_accuracy
    details = {"engineered_accuracy": h_eng.test_accuracy, "learned_accuracy": h_lrn.test_accuracy,
               "margin": margin, "engineered_steps": h_eng.steps, "learned_steps": h_lrn.steps,
               "engineered_seconds": h_eng.seconds, "learned_seconds": h_lrn.seconds,
               "test_examples": len(pixels.y_test)}
    failures = [] if margin >= th["learned_margin_min"] else [
        f"the CNN reached {h_lrn.test_accuracy:.2%}, the engineered features {h_eng.test_accuracy:.2%}: "
        f"margin {margin:.3f} < {th['learned_margin_min']}"]
    return _verdict(failures, details)


# --- 9. the last layer is a logistic regression ---------------------------------------------

def _tracked_features(ms: models.ModelSpec, params: dict[str, np.ndarray], x: np.ndarray) -> tracked.T:
    """The model's "features" value with its error bound: the graph run on the reference."""
    values = {models.INPUT: tracked.T(x)} | {k: tracked.T(v) for k, v in params.items()}
    for node in ms.nodes:
        ins = {k: values[ref] for k, ref in node.inputs.items()}
        if node.structural:
            values[node.id] = models.structural(node.op, ins["x"], node.attrs)
        else:
            out = reference.CONCEPTS[node.op].forward(ins, node.attrs)
            values.update({f"{node.id}.{k}": v for k, v in out.items()})
        if node.id == "features":
            return values[node.id]
    raise SpecError(f"model {ms.id} has no node 'features'")


def last_layer_is_logistic_regression(b: Backend, claim: dict, tol: dict) -> Record:
    """softmax(model logits) against softmax_regression(features, fc_w, fc_b)."""
    p, th, dt = claim["parameters"], claim["threshold"], claim["dtype"]
    ms = models.get(p["model"])
    x = datasets.load(ms).x_test[:p["batch"]].astype(np.float64)
    params = models.init_params(ms, p["seed"], "float64")
    logits = b.model(ms.id, params=_cast(params, dt)).forward(x.astype(dt))
    probs = b.run("softmax", {"x": logits})["y"]
    feats = Model(b, ms, params=_cast(params, dt)).forward(x.astype(dt), output="features")
    last = {"w": params["fc_w"], "b": params["fc_b"]}
    lr = b.run("softmax_regression", {"x": feats, **_cast(last, dt)})["p"]
    tracked_last = {k: tracked.T(v) for k, v in last.items()}
    feats_t = _tracked_features(ms, params, x)
    golden = reference.CONCEPTS["softmax_regression"].forward({"x": feats_t, **tracked_last}, {})["p"]
    allowed = 2 * tolerance.bound(golden.e, dt, tol)
    diff = np.abs(probs.astype(np.float64) - lr)
    usage = float((diff / allowed).max())
    details = {"bound_usage": usage, "max_abs_diff": float(diff.max()), "features": list(feats.shape),
               "argmax_agree": float((probs.argmax(1) == lr.argmax(1)).mean()),
               "max_abs_from_reference": float(np.abs(lr - golden.v).max())}
    failures = [] if usage <= th["bound_usage_max"] else [
        f"softmax of the CNN's logits and softmax_regression of its features differ by {diff.max():.3g}: "
        f"bound usage {usage:.3g}"]
    return _verdict(failures, details, usage)


# --- 10. LSTM memory -------------------------------------------------------------------------

def recall_delays(delay: int) -> list[int]:
    """The delays the trained LSTM is tested at: from one step to twice the claim's ``delay``
    (50: 1, 10, 20, 30, 40, 50, 75, 100), so the picture shows how its memory fades."""
    return sorted({max(1, round(delay * f)) for f in (0.02, 0.2, 0.4, 0.6, 0.8, 1.0, 1.5, 2.0)})


def _recall(b: Backend, ms: models.ModelSpec, params: dict[str, np.ndarray], delay: int) -> float:
    """The test accuracy of the model with ``params`` on delayed-recall sequences of that delay."""
    length = delay + 1
    test = datasets.load(models.get(ms.id, T=length))
    return train.accuracy(b.model(ms.id, params=params, dims={"T": length}), test.x_test, test.y_test)


def lstm_long_memory(b: Backend, claim: dict, tol: dict) -> Record:
    """Delayed recall over ``delay`` steps after a curriculum of sequence lengths, and the same
    trained model's recall at other delays (:func:`recall_delays`)."""
    p, th = claim["parameters"], claim["threshold"]
    ms = models.get(p["model"])
    params = models.init_params(ms, p["seed"])
    blocks = np.zeros((4, ms.dims["H"]), np.float32)  # gate blocks i, f, g, o
    blocks[1] = p["forget_bias"]
    params["b"] = blocks.ravel()
    stages = []
    for stage in p["curriculum"]:
        model = b.model(ms.id, params=params, dims={"T": stage["length"]})
        hist = train.fit(model, datasets.load(models.get(ms.id, T=stage["length"])), stage["epochs"],
                         p["batch_size"], p["lr"], p["momentum"], seed=p["seed"])
        params = model.params()
        stages.append({"length": stage["length"], "test_accuracy": hist.test_accuracy,
                       "final_loss": hist.final_loss, "steps": hist.steps, "seconds": hist.seconds})
    recall = [{"delay": d, "accuracy": _recall(b, ms, params, d)} for d in recall_delays(p["delay"])]
    acc = next(r["accuracy"] for r in recall if r["delay"] == p["delay"])
    details = {"delay": p["delay"], "accuracy": acc, "chance": 1 / ms.classes,
               "test_sequences": models.get(ms.id).dataset["test"], "stages": stages, "recall": recall,
               "seconds": sum(s["seconds"] for s in stages)}
    failures = [] if acc >= th["accuracy_min"] else [
        f"recall after {p['delay']} steps: {acc:.2%} < {th['accuracy_min']:.0%} (chance {1 / ms.classes:.0%})"]
    return _verdict(failures, details)


# --- running ---------------------------------------------------------------------------------

CHECKS: dict[str, Callable[[Backend, dict, dict], Record]] = {
    "linear_collapse": linear_collapse,
    "xor_needs_nonlinearity": xor_needs_nonlinearity,
    "convolution_theorem": convolution_theorem,
    "convolution_is_flipped_correlation": convolution_is_flipped_correlation,
    "pooling_shift_invariance": pooling_shift_invariance,
    "vanishing_gradients": vanishing_gradients,
    "inception_reduction": inception_reduction,
    "learned_features_beat_engineered": learned_features_beat_engineered,
    "last_layer_is_logistic_regression": last_layer_is_logistic_regression,
    "lstm_long_memory": lstm_long_memory,
}


def run_claim(b: Backend, claim: dict, tol: dict) -> Record:
    """Run one claim on one backend; a concept the backend does not offer makes it Unsupported."""
    if claim["id"] not in CHECKS:
        raise SpecError(f"{CLAIMS_FILE}: claim {claim['id']} has no check in conformance/claims.py")
    needed = set(claim["uses"].get("concepts", []))
    needed.update(*(models.get(m).concepts for m in claim["uses"].get("models", [])))
    for concept in sorted(needed):
        why = b.unsupported(concept, claim["dtype"])
        if why is not None:
            raise Unsupported(f"{b.name} declares {concept} in {claim['dtype']} unsupported: {why}")
    try:
        return CHECKS[claim["id"]](b, claim, tol)
    except UnsupportedConcept as exc:
        raise Unsupported(str(exc)) from None


def _fmt(v) -> str:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return str(v)
    return f"{v:,}" if isinstance(v, int) else f"{v:.3g}"


def headline(claim_id: str, details: dict) -> str:
    """The numbers a summary shows for a claim (its ``report`` list), e.g.
    ``sigmoid_ratio 1.77e-12, relu_ratio 1.01``."""
    claim = next((c for c in load() if c["id"] == claim_id), None)
    if claim is None:
        raise SpecError(f"{CLAIMS_FILE}: no claim '{claim_id}'")
    return ", ".join(f"{k} {_fmt(details[k])}" for k in claim["report"] if k in details)


def items(spec_file, state: dict) -> Iterator:
    """One item per claim × backend: ``claim_<id>[<backend>]``; claims marked slow get the mark."""
    from nutshell.conformance.plugin import CheckItem

    for claim in load():
        ref = ClaimRef(claim["id"])
        for name in state["backends"]:
            item = CheckItem.from_parent(
                spec_file, name=f"claim_{claim['id']}[{name}]", backend=name, concept=ref, check="claim", vec=ref,
                dtype=claim["dtype"], section=Section.CLAIMS,
                fn=lambda st, claim=claim, name=name: run_claim(st["backends"][name], claim, st["spec"].tolerance))
            if claim.get("slow"):
                item.add_marker(pytest.mark.slow)
            yield item
