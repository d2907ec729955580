"""A spec model run natively on the PyTorch backend: one autograd tape per training step.

The executor of ``nutshell.spec.graph.Model`` (its graph walk and SGD step), with the nodes run
straight through this package's concept table on torch tensors instead of ``backend.run``/``vjp``.
``loss_and_grads`` runs the forward pass once with the parameters as leaves that require grad,
then one ``torch.autograd.grad(loss, parameters)``: the gradient of every parameter,

    ∂loss/∂p = Σ over the paths from p to the loss of the product of the nodes' Jacobians,

accumulated by autograd in reverse topological order, where the node-by-node executor runs every
concept's forward again inside its vjp. Validation happens once, at the model's boundary: the
graph for each new input shape (every node, on phantom arrays, as ``backend.run`` would check it)
and the labels on every call. Only the input, the labels, the loss and the gradients cross between
NumPy and torch.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping

import numpy as np
import torch

from nutshell.spec.graph import Model
from nutshell.spec.models import ModelSpec, Node
from nutshell.spec.signatures import Impl


class TorchModel(Model):
    """A spec model whose nodes run on torch tensors through ``impls`` (the backend's CONCEPTS)."""

    def __init__(self, backend, spec: ModelSpec, params: Mapping[str, np.ndarray] | None = None, seed: int = 0,
                 dtype: str | None = None, *, impls: Mapping[str, Impl]):
        self._impls = impls
        super().__init__(backend, spec, params=params, seed=seed, dtype=dtype)

    # --- native tensors, validated at the boundary ----------------------------------------------------

    def _native(self, a: np.ndarray) -> torch.Tensor:
        return self.backend.to_native(a)

    def _host(self, a: torch.Tensor) -> np.ndarray:
        return self.backend.to_numpy(a)

    def _context(self) -> contextlib.AbstractContextManager:
        return torch.no_grad()

    def _input(self, x: np.ndarray) -> torch.Tensor:
        x = super()._input(x)
        self._shapes(x.shape)
        return self._native(x)

    def _labels(self, labels: np.ndarray, x_shape: tuple[int, ...]) -> torch.Tensor:
        return self._native(self._loss_input(x_shape, labels))

    def _zeros(self, shape: tuple[int, ...]) -> torch.Tensor:
        return torch.zeros(shape, dtype=self._torch_dtype(), device=self.backend._device)

    def _contiguous(self, a: torch.Tensor) -> torch.Tensor:
        return a.contiguous()

    def _structural(self, op: str, a: torch.Tensor, attrs: dict) -> torch.Tensor:
        """A transpose is torch's ``permute`` (its ``transpose`` swaps two axes); the rest reshape."""
        return a.permute(*attrs["perm"]) if op == "transpose" else super()._structural(op, a, attrs)

    def _torch_dtype(self) -> torch.dtype:
        return torch.float64 if self.dtype == np.float64 else torch.float32

    # --- the nodes ------------------------------------------------------------------------------------

    def _apply(self, concept: str, ins: dict[str, torch.Tensor], attrs: dict) -> dict[str, torch.Tensor]:
        forward, full = self._impls[concept].forward, self._attrs(concept, attrs)
        return self.backend._guard(concept, lambda: forward(ins, full))

    def _run_node(self, node: Node, ins: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return self._apply(node.op, ins, node.attrs)

    # --- one tape -------------------------------------------------------------------------------------

    def _loss_and_grads(self, x: torch.Tensor, labels: torch.Tensor) -> tuple[float, dict[str, torch.Tensor]]:
        """The loss and every parameter's gradient from one forward pass and one reverse sweep."""
        fixed, leaves = self._params, {k: v.detach().requires_grad_() for k, v in self._params.items()}
        self._params = leaves
        try:
            with torch.enable_grad():
                logits = self._forward(x)[self.spec.output]
                loss = self._apply(self.spec.loss, {"logits": logits, self._loss_key(): labels}, {})["loss"]
                grads = self.backend._guard(self.spec.id, lambda: torch.autograd.grad(
                    loss, list(leaves.values()), allow_unused=True))
        finally:
            self._params = fixed
        return float(loss), {k: torch.zeros_like(p) if g is None else g
                             for (k, p), g in zip(leaves.items(), grads, strict=True)}

    def _rate(self, lr: float) -> torch.Tensor:
        """lr rounded to the model's dtype, as a 0-d tensor: the step's product and difference are
        rounded in that dtype, as in NumPy."""
        return torch.tensor(self.dtype.type(lr).item(), dtype=self._torch_dtype(), device=self.backend._device)
