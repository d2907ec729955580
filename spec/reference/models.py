"""A spec model's forward, loss, gradients and SGD training in tracked float64: the oracle.

Every node runs the reference's own concept functions (``CONCEPTS`` of
:mod:`spec.reference`) on :class:`~spec.reference.tracked.T` values, so the error bound of a
value carries the bounds of everything upstream: parameters, earlier nodes, earlier steps.
Training updates the parameters with T arithmetic, p ← p − lr·g (lr a rounded constant, one
product and one difference per element), so after N steps the bound of every parameter and of
every step's loss covers the whole trajectory to first order.

A first-order bound cannot cover a kink: where a ReLU input or the gap between the two largest
entries of a max-pool window is within its own bound, a correct backend may take the other
branch, and its gradients then differ by more than any first-order bound. :func:`margin`
measures the smallest such gap in units of its bound in a dtype; the generator records it per
dtype and requires it above 1 in float64 (in float32 the bounds of a deep network's trajectory
grow too fast: the conformance checks then say so instead of passing or failing).

>>> from nutshell.spec import models
>>> from nutshell.spec.reference import models as ref
>>> m = models.get("mlp")
>>> loss, grads, values = ref.loss_and_grads(m, params, x, labels)    # T values
"""

from __future__ import annotations

import numpy as np

from nutshell.spec import tolerance
from nutshell.spec.models import INPUT, ModelSpec, structural, structural_shape, structural_vjp
from nutshell.spec.reference import CONCEPTS, tracked
from nutshell.spec.reference.dense import dense
from nutshell.spec.reference.inception import CHAINS, POOL, _branch
from nutshell.spec.reference.pooling import _padded
from nutshell.spec.reference.tracked import T


def forward(model: ModelSpec, params: dict[str, T], x: T) -> dict[str, T]:
    """Every value of the graph (the input, the parameters and each node's outputs)."""
    values: dict[str, T] = {INPUT: x, **params}
    for node in model.nodes:
        ins = {k: values[ref] for k, ref in node.inputs.items()}
        if node.op == "zeros":
            values[node.id] = tracked.zeros(structural_shape("zeros", ins["like"].shape, node.attrs))
        elif node.structural:
            values[node.id] = structural(node.op, ins["x"], node.attrs)
        else:
            values.update({f"{node.id}.{k}": t for k, t in CONCEPTS[node.op].forward(ins, node.attrs).items()})
    return values


def _loss_inputs(model: ModelSpec, logits: T, labels: np.ndarray) -> dict:
    if model.loss == "binary_cross_entropy":
        return {"logits": logits, "targets": T(labels.astype(np.float64))}
    return {"logits": logits, "labels": labels.astype(np.int64)}


def loss_and_grads(model: ModelSpec, params: dict[str, T], x: T, labels: np.ndarray
                   ) -> tuple[T, dict[str, T], dict[str, T]]:
    """(loss, {param: gradient}, every forward value): the loss's vjp with cotangent 1, then each
    node's vjp in reverse; a value read by several nodes sums their cotangents."""
    values = forward(model, params, x)
    ins = _loss_inputs(model, values[model.output], labels)
    loss = CONCEPTS[model.loss].forward(ins, {})["loss"]
    cot = {model.output: CONCEPTS[model.loss].vjp(ins, {"loss": T(np.array(1.0))}, {})["logits"]}
    for node in reversed(model.nodes):
        if node.op == "zeros" or not any(o in cot for o in node.outputs):
            continue
        if node.structural:
            src = node.inputs["x"]
            _accumulate(cot, src, structural_vjp(node.op, cot[node.id], values[src].shape, node.attrs))
            continue
        node_ins = {k: values[ref] for k, ref in node.inputs.items()}
        cots = {o.split(".", 1)[1]: cot.get(o, tracked.zeros(values[o].shape)) for o in node.outputs}
        for k, g in CONCEPTS[node.op].vjp(node_ins, cots, node.attrs).items():
            _accumulate(cot, node.inputs[k], g)
    return loss, {p.name: cot[p.name] for p in model.params}, values


def _accumulate(cot: dict[str, T], ref: str, g: T) -> None:
    cot[ref] = cot[ref] + g if ref in cot else g


DTYPES = ("float32", "float64")


def train(model: ModelSpec, params: dict[str, T], xs: list[T], labels: list[np.ndarray], lr: float, tol: dict
          ) -> tuple[list[T], dict[str, T], dict[str, float]]:
    """(per-step losses, final parameters, {dtype: smallest decision margin over the trajectory})
    of one SGD step p ← p − lr·g per batch."""
    rate = T.const(lr)
    losses, worst = [], dict.fromkeys(DTYPES, float("inf"))
    for x, y in zip(xs, labels, strict=True):
        loss, grads, values = loss_and_grads(model, params, x, y)
        worst = {dt: min(m, margin(model, values, tol, dt)) for dt, m in worst.items()}
        losses.append(loss)
        params = {k: p - rate * grads[k] for k, p in params.items()}
    return losses, params, worst


# --- decision margins ---------------------------------------------------------------------------

def _kink_margin(z: T, tol: dict, dtype: str) -> float:
    """min |z| / bound(z) over the ReLU inputs; an exact 0 (every term of its sum 0) is computed
    exactly by every backend, and relu'(0) = 0 settles it."""
    b = tolerance.bound(z.e, dtype, tol, z.f)
    open_ = z.v != 0
    return float(np.min(np.abs(z.v[open_]) / b[open_], initial=np.inf))


def _pool_margin(x: T, attrs: dict, tol: dict, dtype: str) -> float:
    """min (first − second largest) / bound(first + second) over the windows of a max pool.

    Exact ties (equal in float64) come from identical computations, which a backend repeats
    identically, and the first wins everywhere; an exact 0 is a ReLU's clamp (error 0 once its
    decision, checked apart, is right).
    """
    k, s, p, d, ceil = attrs["kernel"], attrs["stride"], attrs["pads"], attrs["dilation"], attrs["ceil_mode"]
    xp, out = _padded(x, k, s, p, d, ceil, -np.inf)
    cols = tracked.windows(xp, k, s, d, out)
    n, c = x.shape[:2]
    v = cols.v.reshape(n, c, k[0] * k[1], -1)  # (N, C, kh*kw, oH*oW)
    e = np.where(v == 0, 0.0, cols.e.reshape(v.shape))
    order = np.argsort(-v, axis=2, kind="stable")[:, :, :2]
    top = np.take_along_axis(v, order, 2)
    gap, err = top[:, :, 0] - top[:, :, 1], np.take_along_axis(e, order, 2).sum(axis=2)
    open_ = (gap > 0) & np.isfinite(gap)
    b = tolerance.bound(err, dtype, tol)
    with np.errstate(over="ignore"):                                 # a gap over a floor-sized bound
        return float(np.min(gap[open_] / b[open_], initial=np.inf))


def inception_margin(ins: dict[str, T], tol: dict, dtype: str) -> float:
    """The smallest decision gap of an inception module's max pool and its branches' ReLUs, in
    units of its bound in ``dtype`` (see :func:`margin`)."""
    worst = _pool_margin(ins["x"], POOL, tol, dtype)
    for chain in CHAINS:
        worst = min([worst, *(_kink_margin(z, tol, dtype) for _, _, z in _branch(ins, chain))])
    return worst


def margin(model: ModelSpec, values: dict[str, T], tol: dict, dtype: str = "float32") -> float:
    """The smallest ReLU or max-pool decision gap of one forward pass, in units of its bound in
    ``dtype``; above 1, every correct backend computing in ``dtype`` takes the golden's branch
    everywhere."""
    worst = float("inf")
    for node in model.nodes:
        ins = {k: values[ref] for k, ref in node.inputs.items()}
        if node.op == "relu":
            worst = min(worst, _kink_margin(ins["x"], tol, dtype))
        elif node.op == "layer" and node.attrs["activation"] == "relu":
            worst = min(worst, _kink_margin(dense(ins["x"], ins["w"], ins["b"]), tol, dtype))
        elif node.op == "max_pool2d":
            worst = min(worst, _pool_margin(ins["x"], node.attrs, tol, dtype))
        elif node.op == "inception":
            worst = min(worst, inception_margin(ins, tol, dtype))
    return worst
