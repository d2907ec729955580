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

A backend may run a model natively (``Backend.model`` returns a subclass): the hooks below
(``_native``/``_host``, ``_context``, ``_input``/``_labels``, ``_rate``, ``_structural``,
``_apply``/``_apply_vjp`` and their per-node forms ``_run_node``/``_vjp_node``, or whole
``_value``/``_loss_and_grads``) change how the
work is done, never the API or its errors. Such a
subclass validates once at the model's boundary (:meth:`Model._shapes`, :meth:`Model._loss_input`)
exactly as ``backend.run`` would validate every node, then runs without per-node validation.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any

import numpy as np

from nutshell.errors import DTypeError, ShapeError
from nutshell.spec import models as spec_models
from nutshell.spec import validate
from nutshell.spec.models import INPUT, ModelSpec, Node
from nutshell.spec.signatures import output_shapes


def _float_dtype(params: Mapping[str, np.ndarray], model_id: str) -> str:
    kinds = sorted({str(np.asarray(v).dtype) for v in params.values()})
    if len(kinds) != 1 or kinds[0] not in ("float32", "float64"):
        raise DTypeError(f"parameters must all be float32 or all float64, got {kinds}", concept=model_id,
                         argument="params")
    return kinds[0]


def phantom(shape: tuple[int, ...], dtype: Any) -> np.ndarray:
    """A read-only array of ``shape`` that costs no memory: validation looks only at its shape and dtype."""
    return np.broadcast_to(np.zeros((), dtype), shape)


class Model:
    """A spec model on one backend, with its parameters."""

    def __init__(self, backend, spec: ModelSpec, params: Mapping[str, np.ndarray] | None = None, seed: int = 0,
                 dtype: str | None = None):
        self.backend, self.spec = backend, spec
        if params is None:
            params = spec_models.init_params(spec, seed, dtype or "float32")
        self.dtype = np.dtype(dtype or _float_dtype(params, spec.id))
        self._params: dict[str, Any] = {}
        self._checked: dict[tuple[int, ...], dict[str, tuple[int, ...]]] = {}
        self._defaults: dict[str, dict] = {}      # concept -> its attributes' defaults (_attrs)
        self.set_params(params)
        self._differentiable = self._downstream_of_params()

    @property
    def name(self) -> str:
        return self.spec.id

    # --- parameters ---------------------------------------------------------------------------------

    def params(self) -> dict[str, np.ndarray]:
        """Every parameter (a copy), by name."""
        return {k: np.array(self._host(v)) for k, v in self._params.items()}

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
        with self._context():
            for name in want:
                self._params[name] = self._native(np.array(params[name], dtype=self.dtype, order="C"))

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
        name = self.spec.value(output) if output else self.spec.output
        with self._context():
            return self._host(self._value(self._input(x), name))

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Class indices: argmax of the logits, or logit > 0 for a binary model."""
        z = self.forward(x)
        return (z > 0).astype(np.int64) if z.ndim == 1 else np.argmax(z, axis=1)

    def loss_and_grads(self, x: np.ndarray, labels: np.ndarray) -> tuple[float, dict[str, np.ndarray]]:
        """(the batch-mean loss, {param name: ∂loss/∂param})."""
        with self._context():
            xn = self._input(x)
            loss, grads = self._loss_and_grads(xn, self._labels(labels, xn.shape))
            return loss, {k: self._host(g) for k, g in grads.items()}

    def step(self, x: np.ndarray, labels: np.ndarray, lr: float) -> float:
        """One SGD step in place, p ← p − lr·g, each product and difference rounded in the model's
        dtype; returns the loss before the step."""
        rate = self._rate(lr)
        with self._context():
            xn = self._input(x)
            loss, grads = self._loss_and_grads(xn, self._labels(labels, xn.shape))
            for name, g in grads.items():
                self._params[name] = self._params[name] - rate * g
        return loss

    # --- hooks of a native executor (here: NumPy, each node through the backend's validated calls) ------

    def _native(self, a: np.ndarray) -> Any:
        """A host array as the executor's own array type."""
        return a

    def _host(self, a: Any) -> np.ndarray:
        """An executor array as NumPy."""
        return np.asarray(a)

    def _context(self) -> contextlib.AbstractContextManager:
        """What every call runs under (a device, a memory budget)."""
        return contextlib.nullcontext()

    def _input(self, x: np.ndarray) -> Any:
        """``x`` cast to the model's dtype (a native executor also validates it and moves it)."""
        return np.ascontiguousarray(x, dtype=self.dtype)

    def _labels(self, labels: np.ndarray, x_shape: tuple[int, ...]) -> Any:
        """The labels for a batch ``x_shape`` as the loss takes them (a native executor also
        validates them and moves them)."""
        return self._cast_labels(labels)

    def _cast_labels(self, labels: np.ndarray) -> np.ndarray:
        """int64 classes, or the model's dtype for binary targets."""
        labels = np.asarray(labels)
        return labels.astype(self.dtype if self.spec.loss == "binary_cross_entropy" else np.int64)

    def _attrs(self, concept: str, attrs: dict) -> dict:
        """Every attribute of a node (graph nodes carry them all); the loss is called without any:
        the spec's defaults, looked up once. For native executors, whose calls skip ``backend.run``."""
        if attrs:
            return attrs
        if concept not in self._defaults:
            self._defaults[concept] = validate._check_attrs(self.backend.spec.concept(concept), {})
        return self._defaults[concept]

    def _rate(self, lr: float) -> Any:
        """The learning rate rounded to the model's dtype, as a scalar the executor multiplies by."""
        return self.dtype.type(lr)

    def _structural(self, op: str, a: Any, attrs: dict) -> Any:
        """flatten, reshape or transpose of a value (spec.models.structural, on NumPy's methods)."""
        return spec_models.structural(op, a, attrs)

    def _apply(self, concept: str, ins: dict[str, Any], attrs: dict) -> dict[str, Any]:
        return self.backend.run(concept, ins, attrs)

    def _apply_vjp(self, concept: str, ins: dict[str, Any], cots: dict[str, Any], attrs: dict) -> dict[str, Any]:
        """The gradients of ``ins``; ``cots`` may leave outputs out (they count as zeros)."""
        return self.backend.vjp(concept, ins, cots, attrs)

    def _value(self, x: Any, name: str) -> Any:
        return self._forward(x)[name]

    def _loss_and_grads(self, x: Any, labels: Any) -> tuple[float, dict[str, Any]]:
        values = self._forward(x)
        loss, g_logits = self._loss(values[self.spec.output], labels)
        return loss, self._backward(values, g_logits)

    # --- boundary validation for native executors ---------------------------------------------------------

    def _shapes(self, x_shape: tuple[int, ...]) -> dict[str, tuple[int, ...]]:
        """Every value's shape for an input of ``x_shape``. The first time a shape is seen, every node
        is validated as ``backend.run`` validates it (same errors, same order: the node's inputs,
        attrs and memory, then whether the backend offers it in the model's dtype), on phantom
        arrays that copy nothing."""
        shapes = self._checked.get(x_shape)
        if shapes is None:
            shapes = self._checked[x_shape] = self._check_graph(x_shape)
        return shapes

    def _check_graph(self, x_shape: tuple[int, ...]) -> dict[str, tuple[int, ...]]:
        shapes = {INPUT: x_shape, **{p.name: p.shape for p in self.spec.params}}
        for node in self.spec.nodes:
            ins = {k: shapes[ref] for k, ref in node.inputs.items()}
            if node.structural:
                shapes[node.id] = spec_models.structural_shape(node.op, next(iter(ins.values())), node.attrs)
                continue
            concept = self.backend.spec.concept(node.op)
            arrays = {k: phantom(s, np.int64 if concept.input(k).dtype == "int64" else self.dtype)
                      for k, s in ins.items()}
            validate.check_views(concept, arrays, node.attrs)
            self.backend._require(node.op, str(self.dtype))
            shapes.update({f"{node.id}.{k}": tuple(s) for k, s in output_shapes(node.op, ins, node.attrs).items()})
        return shapes

    def _loss_input(self, x_shape: tuple[int, ...], labels: np.ndarray) -> np.ndarray:
        """The labels or targets for a batch ``x_shape``, validated as ``backend.run`` validates the
        loss (their dtype, shape and class range); the graph is validated first (:meth:`_shapes`)."""
        key, logits = self._loss_key(), self._shapes(x_shape)[self.spec.output]
        concept = self.backend.spec.concept(self.spec.loss)
        ins = {"logits": phantom(logits, self.dtype), key: self._cast_labels(labels)}
        arrays, _, _ = validate.check(concept, ins, None)
        self.backend._require(self.spec.loss, str(self.dtype))
        return arrays[key]

    def _loss_key(self) -> str:
        return "targets" if self.spec.loss == "binary_cross_entropy" else "labels"

    # --- the graph ----------------------------------------------------------------------------------

    def _downstream_of_params(self) -> set[str]:
        """The values that depend on a parameter: the only ones worth a cotangent."""
        live = set(self._params)
        for node in self.spec.nodes:
            if node.op != "zeros" and any(ref in live for ref in node.inputs.values()):
                live.update(node.outputs)
        return live

    def _zeros(self, shape: tuple[int, ...]) -> Any:
        return np.zeros(shape, self.dtype)

    def _contiguous(self, a: Any) -> Any:
        return np.ascontiguousarray(a)

    def _forward(self, x: Any) -> dict[str, Any]:
        values: dict[str, Any] = {INPUT: x, **self._params}
        for node in self.spec.nodes:
            ins = {k: values[ref] for k, ref in node.inputs.items()}
            if node.op == "zeros":
                values[node.id] = self._zeros(spec_models.structural_shape("zeros", ins["like"].shape, node.attrs))
            elif node.structural:
                values[node.id] = self._contiguous(self._structural(node.op, ins["x"], node.attrs))
            else:
                outs = self._run_node(node, ins)
                values.update({f"{node.id}.{k}": v for k, v in outs.items()})
        return values

    def _run_node(self, node: Node, ins: dict[str, Any]) -> dict[str, Any]:
        return self._apply(node.op, ins, node.attrs)

    def _vjp_node(self, node: Node, ins: dict[str, Any], cots: dict[str, Any]) -> dict[str, Any]:
        return self._apply_vjp(node.op, ins, cots, node.attrs)

    def _loss(self, logits: Any, labels: Any) -> tuple[float, Any]:
        """(loss, ∂loss/∂logits) from the spec's loss concept and its vjp."""
        ins = {"logits": logits, self._loss_key(): labels}
        loss = self._apply(self.spec.loss, ins, {})["loss"]
        ones = self._native(np.ones((), self.dtype))
        g = self._apply_vjp(self.spec.loss, ins, {"loss": ones}, {})["logits"]
        return float(loss), g

    def _backward(self, values: dict[str, Any], g_logits: Any) -> dict[str, Any]:
        cot: dict[str, Any] = {self.spec.output: g_logits}
        for node in reversed(self.spec.nodes):
            if node.op == "zeros" or not any(o in cot for o in node.outputs):
                continue
            for ref, g in self._node_vjp(node, values, cot):
                if ref in self._differentiable:
                    cot[ref] = cot[ref] + g if ref in cot else g
        return {name: cot[name] if name in cot else self._zeros(p.shape) for name, p in self._params.items()}

    def _node_vjp(self, node: Node, values: dict[str, Any], cot: dict[str, Any]) -> list[tuple[str, Any]]:
        """(input value name, its cotangent contribution) for each input of one node."""
        if node.structural:
            src = node.inputs["x"]
            g = spec_models.structural_vjp(node.op, cot[node.id], values[src].shape, node.attrs)
            return [(src, self._contiguous(g))]
        ins = {k: values[ref] for k, ref in node.inputs.items()}
        cots = {o.split(".", 1)[1]: cot[o] for o in node.outputs if o in cot}
        grads = self._vjp_node(node, ins, cots)
        return [(node.inputs[k], g) for k, g in grads.items()]

    def __repr__(self) -> str:
        return f"<nutshell model {self.spec.id} on {self.backend.name}, {self.dtype}>"
