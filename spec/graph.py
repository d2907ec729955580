"""The backend-neutral model executor: a spec model run node by node through a backend's ops.

>>> import nutshell
>>> b = nutshell.load("torch")
>>> m = b.model("digits_cnn", seed=0)                 # params None: the spec's init with that seed
>>> logits = m.forward(x)                              # x (N, 1, 8, 8) -> logits (N, 10)
>>> feats = m.forward(x, output="features")            # any value of the graph, by name
>>> loss, grads = m.loss_and_grads(x, labels)          # float, {param name: gradient}
>>> loss_before = m.step(x, labels, lr=0.05)           # one SGD step in place: p ← p − lr·g
>>> m.params()                                         # {param name: array} (copies)

Forward runs each concept node with ``backend.run`` and each structural node (flatten, reshape,
transpose, zeros) with NumPy; the loss is the spec's ``cross_entropy`` (integer labels) or
``binary_cross_entropy`` (labels 0/1 as targets). Backward seeds the loss's cotangent 1, gets the
logits' cotangent from the loss's vjp, then visits the nodes in reverse with ``backend.vjp``; a
value read by several nodes receives the sum of their cotangents. Only nodes downstream of a
parameter are differentiated. Everything is computed in the model's dtype (float32 by default,
or the dtype of the given parameters); ``x`` is cast to it.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from nutshell.errors import DTypeError, ShapeError
from nutshell.spec import models as spec_models
from nutshell.spec.models import INPUT, ModelSpec, Node


def _float_dtype(params: Mapping[str, np.ndarray], model_id: str) -> str:
    kinds = sorted({str(np.asarray(v).dtype) for v in params.values()})
    if len(kinds) != 1 or kinds[0] not in ("float32", "float64"):
        raise DTypeError(f"parameters must all be float32 or all float64, got {kinds}", concept=model_id,
                         argument="params")
    return kinds[0]


class Model:
    """A spec model on one backend, with its parameters."""

    def __init__(self, backend, spec: ModelSpec, params: Mapping[str, np.ndarray] | None = None, seed: int = 0,
                 dtype: str | None = None):
        self.backend, self.spec = backend, spec
        if params is None:
            params = spec_models.init_params(spec, seed, dtype or "float32")
        self.dtype = np.dtype(dtype or _float_dtype(params, spec.id))
        self._params: dict[str, np.ndarray] = {}
        self.set_params(params)
        self._differentiable = self._downstream_of_params()

    @property
    def name(self) -> str:
        return self.spec.id

    # --- parameters ---------------------------------------------------------------------------------

    def params(self) -> dict[str, np.ndarray]:
        """Every parameter (a copy), by name."""
        return {k: v.copy() for k, v in self._params.items()}

    def set_params(self, params: Mapping[str, np.ndarray]) -> None:
        """Replace the parameters; every one the spec names, of its shape, cast to the model's dtype."""
        want = {p.name: p.shape for p in self.spec.params}
        missing, extra = sorted(set(want) - set(params)), sorted(set(params) - set(want))
        if missing or extra:
            name = (missing or extra)[0]
            raise ShapeError(f"parameters must be exactly {sorted(want)}: missing {missing}, unknown {extra}",
                             concept=self.spec.id, argument=name)
        for name, shape in want.items():
            a = np.asarray(params[name])
            if a.shape != shape:
                raise ShapeError(f"must have shape {shape}, got {a.shape}", concept=self.spec.id, argument=name)
            self._params[name] = np.array(a, dtype=self.dtype, order="C")

    def unsupported(self) -> str | None:
        """None when the backend offers every concept of the model in its dtype, else why not."""
        for concept in sorted(self.spec.concepts):
            why = self.backend.unsupported(concept, str(self.dtype))
            if why is not None:
                return f"{concept} in {self.dtype}: {why}"
        return None

    # --- the contract -------------------------------------------------------------------------------

    def forward(self, x: np.ndarray, output: str | None = None) -> np.ndarray:
        """The logits for ``x`` (N, *input), or the graph value named ``output`` (e.g. "features")."""
        values = self._forward(x)
        return values[self.spec.value(output) if output else self.spec.output]

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Class indices: argmax of the logits, or logit > 0 for a binary model."""
        z = self.forward(x)
        return (z > 0).astype(np.int64) if z.ndim == 1 else np.argmax(z, axis=1)

    def loss_and_grads(self, x: np.ndarray, labels: np.ndarray) -> tuple[float, dict[str, np.ndarray]]:
        """(the batch-mean loss, {param name: ∂loss/∂param})."""
        values = self._forward(x)
        loss, g_logits = self._loss(values[self.spec.output], labels)
        return loss, self._backward(values, g_logits)

    def step(self, x: np.ndarray, labels: np.ndarray, lr: float) -> float:
        """One SGD step in place, p ← p − lr·g, each product and difference rounded in the model's
        dtype; returns the loss before the step."""
        loss, grads = self.loss_and_grads(x, labels)
        rate = self.dtype.type(lr)
        for name, g in grads.items():
            self._params[name] = self._params[name] - rate * g
        return loss

    # --- the graph ----------------------------------------------------------------------------------

    def _downstream_of_params(self) -> set[str]:
        """The values that depend on a parameter: the only ones worth a cotangent."""
        live = set(self._params)
        for node in self.spec.nodes:
            if node.op != "zeros" and any(ref in live for ref in node.inputs.values()):
                live.update(node.outputs)
        return live

    def _forward(self, x: np.ndarray) -> dict[str, np.ndarray]:
        values: dict[str, np.ndarray] = {INPUT: np.ascontiguousarray(x, dtype=self.dtype), **self._params}
        for node in self.spec.nodes:
            ins = {k: values[ref] for k, ref in node.inputs.items()}
            if node.op == "zeros":
                like = ins["like"]
                values[node.id] = np.zeros(spec_models.structural_shape("zeros", like.shape, node.attrs), self.dtype)
            elif node.structural:
                values[node.id] = np.ascontiguousarray(spec_models.structural(node.op, ins["x"], node.attrs))
            else:
                outs = self.backend.run(node.op, ins, node.attrs)
                values.update({f"{node.id}.{k}": v for k, v in outs.items()})
        return values

    def _loss(self, logits: np.ndarray, labels: np.ndarray) -> tuple[float, np.ndarray]:
        """(loss, ∂loss/∂logits) from the spec's loss concept and its vjp."""
        labels = np.asarray(labels)
        if self.spec.loss == "binary_cross_entropy":
            ins = {"logits": logits, "targets": labels.astype(self.dtype)}
        else:
            ins = {"logits": logits, "labels": labels.astype(np.int64)}
        loss = self.backend.run(self.spec.loss, ins)["loss"]
        g = self.backend.vjp(self.spec.loss, ins, {"loss": np.ones((), self.dtype)})["logits"]
        return float(loss), g

    def _backward(self, values: dict[str, np.ndarray], g_logits: np.ndarray) -> dict[str, np.ndarray]:
        cot: dict[str, np.ndarray] = {self.spec.output: g_logits}
        for node in reversed(self.spec.nodes):
            if node.op == "zeros" or not any(o in cot for o in node.outputs):
                continue
            for ref, g in self._node_vjp(node, values, cot):
                if ref in self._differentiable:
                    cot[ref] = cot[ref] + g if ref in cot else g
        return {name: cot.get(name, np.zeros_like(p)) for name, p in self._params.items()}

    def _node_vjp(self, node: Node, values: dict[str, np.ndarray], cot: dict[str, np.ndarray]
                  ) -> list[tuple[str, np.ndarray]]:
        """(input value name, its cotangent contribution) for each input of one node."""
        if node.structural:
            src = node.inputs["x"]
            g = spec_models.structural_vjp(node.op, cot[node.id], values[src].shape, node.attrs)
            return [(src, np.ascontiguousarray(g))]
        ins = {k: values[ref] for k, ref in node.inputs.items()}
        cots = {o.split(".", 1)[1]: cot[o] for o in node.outputs if o in cot}
        grads = self.backend.vjp(node.op, ins, cots, node.attrs)
        return [(node.inputs[k], g) for k, g in grads.items()]

    def __repr__(self) -> str:
        return f"<nutshell model {self.spec.id} on {self.backend.name}, {self.dtype}>"
