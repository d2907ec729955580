"""A spec model run natively on the CuPy backend: every node on this backend's own arrays.

The executor of ``nutshell.spec.graph.Model`` (its graph walk, cotangent sums and SGD step), with
the nodes run straight through this package's concept table instead of ``backend.run``/``vjp``:
the values stay CuPy arrays on the backend's device (NumPy arrays on a CPU) from the input to
the gradients, and nothing is validated or copied per node. Validation happens once, at the
model's boundary: the graph for each new input shape (every node, on phantom arrays, as
``backend.run`` would check it) and the labels on every call. Only the input, the labels, the
loss and the gradients cross between host and device.

Where a concept's vjp would redo work of its forward pass (the inception module, max pooling,
and convolution, whose vjp would extract its im2col columns again), a ``loss_and_grads`` keeps
what the forward pass computed for it instead, as an autograd tape does, and drops it once the
gradients are out. Those vjps compute only the gradients the graph uses: none for the model's
input x. On the CPU the step runs NumPy's BLAS on one thread (:mod:`.blas`), and freed memory
stays in the process for the next step (:mod:`.heap`).

On the CPU a convolution also moves its input into (C, H, W, N) planes (:mod:`.planes`), and the
ReLUs, max pools, convolutions and inception modules that follow stay in them; a value is held
as a :class:`.planes.Planar`, and a node that takes ordinary arrays gets it back as (N, C, H, W)
(a value's cotangents arrive in the layout of the value).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from nutshell.backends.cupy_impl import blas, conv, heap, inception, planes, pooling
from nutshell.backends.cupy_impl.planes import Planar
from nutshell.spec.graph import Model
from nutshell.spec.models import ModelSpec, Node
from nutshell.spec.signatures import Impl, output_shapes

# concept -> (forward returning (outputs, saved), vjp from saved and the wanted inputs): the
# concepts whose vjp would otherwise repeat work of their forward pass
SAVING: dict[str, tuple[Callable, Callable]] = {
    "conv2d": (conv.conv2d_saving, conv.conv2d_vjp_saved),
    "inception": (inception.forward_saving, inception.vjp_saved),
    "max_pool2d": (pooling.max_pool2d_saving, pooling.max_pool2d_vjp_saved),
}


class CupyModel(Model):
    """A spec model whose nodes run on native arrays through ``impls`` (the backend's CONCEPTS)."""

    def __init__(self, backend, spec: ModelSpec, params: Mapping[str, np.ndarray] | None = None, seed: int = 0,
                 dtype: str | None = None, *, impls: Mapping[str, Impl]):
        self._impls = impls
        self._tape: dict[str, Any] | None = None          # node id -> what its vjp needs, inside loss_and_grads
        super().__init__(backend, spec, params=params, seed=seed, dtype=dtype)

    # --- native arrays, validated at the boundary -----------------------------------------------------

    def _native(self, a: np.ndarray) -> Any:
        return self.backend.to_native(a)

    def _host(self, a: Any) -> np.ndarray:
        return self.backend.to_numpy(a.nchw() if isinstance(a, Planar) else a)

    def _context(self) -> contextlib.AbstractContextManager:
        stack = contextlib.ExitStack()
        stack.enter_context(self.backend._scope())
        if self.backend.xp is np:
            stack.enter_context(blas.one_thread())
            heap.keep_freed_memory()
        return stack

    def _input(self, x: np.ndarray) -> Any:
        x = super()._input(x)
        self._shapes(x.shape)
        return self._native(x)

    def _labels(self, labels: np.ndarray, x_shape: tuple[int, ...]) -> Any:
        return self._native(self._loss_input(x_shape, labels))

    def _zeros(self, shape: tuple[int, ...]) -> Any:
        return self.backend.xp.zeros(shape, self.dtype)

    def _contiguous(self, a: Any) -> Any:
        """``a`` itself when C-contiguous, else a C-ordered copy (a 0-d array stays 0-d); planes
        as an (N, C, H, W) array."""
        if isinstance(a, Planar):
            return a.nchw()
        return a if a.flags.c_contiguous else a.copy(order="C")

    def _structural(self, op: str, a: Any, attrs: dict) -> Any:
        return super()._structural(op, a.nchw() if isinstance(a, Planar) else a, attrs)

    # --- the nodes ------------------------------------------------------------------------------------

    def _apply(self, concept: str, ins: dict[str, Any], attrs: dict) -> dict[str, Any]:
        forward, full = self._impls[concept].forward, self._attrs(concept, attrs)
        native = {k: self._contiguous(v) for k, v in ins.items()}
        return self.backend._guard(concept, lambda: forward(native, full))

    def _apply_vjp(self, concept: str, ins: dict[str, Any], cots: dict[str, Any], attrs: dict) -> dict[str, Any]:
        """The concept's vjp with every output's cotangent: those left out are zeros, as the
        backend contract promises its hooks."""
        vjp, full = self._impls[concept].vjp, self._attrs(concept, attrs)
        native = {k: self._contiguous(v) for k, v in ins.items()}
        outputs = self.backend.spec.concept(concept).outputs
        if any(o not in cots for o in outputs):
            shapes = output_shapes(concept, {k: v.shape for k, v in native.items()}, full)
            cots = {o: cots[o] if o in cots else self._zeros(tuple(shapes[o])) for o in outputs}
        complete = {k: self._contiguous(v) for k, v in cots.items()}
        return self.backend._guard(concept, lambda: vjp(native, complete, full))

    # --- the tape -------------------------------------------------------------------------------------

    def _loss_and_grads(self, x: Any, labels: Any) -> tuple[float, dict[str, Any]]:
        self._tape = {}
        try:
            return super()._loss_and_grads(x, labels)
        finally:
            self._tape = None

    def _planar(self, node: Node, ins: dict[str, Any]) -> bool:
        """Whether the node runs on planes: on the CPU, a planes op whose x is planes, or a convolution."""
        if self.backend.xp is not np or node.op not in planes.CONCEPTS:
            return False
        x = ins.get("x")
        return isinstance(x, Planar) or planes.starts_planes(node.op, x)

    def _run_planar(self, node: Node, ins: dict[str, Any]) -> dict[str, Any]:
        forward, _, planar_out = planes.CONCEPTS[node.op]
        native = {k: v.a if isinstance(v, Planar) else v for k, v in ins.items()}
        native["x"] = ins["x"].a if isinstance(ins["x"], Planar) else Planar.of(ins["x"]).a
        native = {k: self._contiguous(v) for k, v in native.items()}
        attrs = self._attrs(node.op, node.attrs)
        outs, saved = self.backend._guard(node.op, lambda: forward(native, attrs))
        if self._tape is not None:
            self._tape[node.id] = (native, saved)
        return {k: Planar(v) for k, v in outs.items()} if planar_out else outs

    def _vjp_planar(self, node: Node, cots: dict[str, Any]) -> dict[str, Any]:
        _, vjp, planar_out = planes.CONCEPTS[node.op]
        native, saved = self._tape.pop(node.id)
        if planar_out:
            cots = {k: (v if isinstance(v, Planar) else Planar.of(v)).a for k, v in cots.items()}
        complete = {k: self._contiguous(v) for k, v in cots.items()}     # each of them has one output, y
        wanted = {k for k, ref in node.inputs.items() if ref in self._differentiable}
        attrs = self._attrs(node.op, node.attrs)
        grads = self.backend._guard(node.op, lambda: vjp(native, saved, complete, attrs, wanted))
        if "x" in grads:
            grads["x"] = Planar(grads["x"])
        return grads

    def _node_vjp(self, node: Node, values: dict[str, Any], cot: dict[str, Any]) -> list[tuple[str, Any]]:
        """Each contribution in the layout of the value it belongs to, so that they add up."""
        out = []
        for ref, g in super()._node_vjp(node, values, cot):
            planar = isinstance(values[ref], Planar)
            if planar and not isinstance(g, Planar):
                g = Planar.of(g)
            elif isinstance(g, Planar) and not planar:
                g = g.nchw()
            out.append((ref, g))
        return out

    def _run_node(self, node: Node, ins: dict[str, Any]) -> dict[str, Any]:
        if self._planar(node, ins):
            return self._run_planar(node, ins)
        if self._tape is None or node.op not in SAVING:
            return super()._run_node(node, ins)
        forward = SAVING[node.op][0]
        native = {k: self._contiguous(v) for k, v in ins.items()}
        outs, self._tape[node.id] = self.backend._guard(node.op, lambda: forward(native, node.attrs))
        return outs

    def _vjp_node(self, node: Node, ins: dict[str, Any], cots: dict[str, Any]) -> dict[str, Any]:
        if not self._tape or node.id not in self._tape:
            return super()._vjp_node(node, ins, cots)
        if self._planar(node, ins):
            return self._vjp_planar(node, cots)
        vjp, saved = SAVING[node.op][1], self._tape.pop(node.id)
        native = {k: self._contiguous(v) for k, v in ins.items()}
        complete = {k: self._contiguous(v) for k, v in cots.items()}   # each of them has one output, y
        wanted = {k for k, ref in node.inputs.items() if ref in self._differentiable}
        return self.backend._guard(node.op, lambda: vjp(native, saved, complete, node.attrs, wanted))
