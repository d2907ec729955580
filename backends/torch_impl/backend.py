"""The PyTorch backend: every concept as torch operations, every vjp through autograd.

Each area module (activations.py, conv.py, ...) exports ``CONCEPTS``, concept id ->
:class:`~nutshell.spec.signatures.Impl` whose ``forward(inputs, attrs)`` returns the outputs by
the spec's names; they merge into one table here. No area writes a vjp: it is generic, run the
forward with ``requires_grad`` on the differentiable inputs, then
``torch.autograd.grad(outputs, inputs, cotangents)``.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import ml_dtypes
import numpy as np
import torch

from nutshell.backends.base import Backend, low_precision
from nutshell.backends.torch_impl import activations, conv, dense, inception, losses, normalization, pooling, recurrent
from nutshell.backends.torch_impl.baseline import TorchBaseline
from nutshell.backends.torch_impl.model import TorchModel
from nutshell.errors import BackendUnavailable
from nutshell.spec import models
from nutshell.spec.signatures import LOW_PRECISION, Impl

CONCEPTS: dict[str, Impl] = {
    **activations.CONCEPTS, **dense.CONCEPTS, **losses.CONCEPTS, **conv.CONCEPTS, **pooling.CONCEPTS,
    **normalization.CONCEPTS, **recurrent.CONCEPTS, **inception.CONCEPTS,
}


def _select_device(device: str | None) -> torch.device:
    """None -> "cuda:0" when CUDA is usable, else "cpu"; "cpu", "cuda" and "cuda:N" are accepted."""
    if device is None:
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    if device == "cpu":
        return torch.device("cpu")
    if device != "cuda" and not (device.startswith("cuda:") and device[5:].isdigit()):
        raise BackendUnavailable(f"backend 'torch': unknown device {device!r}; use 'cpu', 'cuda' or 'cuda:N'")
    if not torch.cuda.is_available():
        raise BackendUnavailable(f"backend 'torch': device {device!r} requested but this PyTorch build sees no "
                                 f"CUDA device (torch {torch.__version__}, CUDA {torch.version.cuda}); "
                                 "use device='cpu' or install a CUDA build of torch")
    index = int(device[5:]) if device.startswith("cuda:") else 0
    count = torch.cuda.device_count()
    if index >= count:
        raise BackendUnavailable(f"backend 'torch': device {device!r} requested but only {count} CUDA device(s)")
    return torch.device("cuda", index)


def _from_numpy(a: np.ndarray) -> torch.Tensor:
    """A tensor sharing ``a``'s memory; an ml_dtypes bfloat16 array is read as its 16 bits."""
    if a.dtype == ml_dtypes.bfloat16:
        return torch.from_numpy(a.view(np.int16)).view(torch.bfloat16)
    return torch.from_numpy(a)


def _conformance_mode(device: torch.device) -> None:
    """No TF32, deterministic kernels: results that can be compared run to run and to the spec.
    The deterministic-algorithms switch matters for CUDA kernels (atomics); turning it on imports
    torch's compiler stack (about a second), so a CPU backend leaves it alone."""
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    if device.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)


class TorchBackend(Backend):
    """Every concept of the spec on PyTorch, on the CPU or one CUDA device."""

    name = "torch"

    def __init__(self, device: str | None = None, spec=None):
        super().__init__(device, spec)
        self._device = _select_device(device)
        self.device = str(self._device)
        _conformance_mode(self._device)

    # --- numpy <-> torch ------------------------------------------------------------------

    def _tensor(self, a: np.ndarray, requires_grad: bool = False) -> torch.Tensor:
        t = _from_numpy(a if a.flags.writeable else a.copy()).to(self._device)
        return t.requires_grad_() if requires_grad else t

    def to_native(self, a: np.ndarray) -> torch.Tensor:
        return _from_numpy(np.array(a, copy=True, order="C")).to(self._device)

    def to_numpy(self, t: torch.Tensor) -> np.ndarray:
        t = t.detach().cpu()
        if t.dtype == torch.bfloat16:   # NumPy has no bfloat16 of its own: the same 16 bits, as ml_dtypes'
            return t.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
        return t.numpy()

    def model(self, name: str, params: Mapping[str, np.ndarray] | None = None, seed: int = 0,
              dtype: str | None = None, dims: Mapping[str, int] | None = None) -> Any:
        """A spec model run natively: the nodes on torch tensors, one autograd tape per step,
        validated once at the model's boundary (model.py). In float16 and bfloat16 it runs node
        by node through :meth:`run` and :meth:`vjp` (nutshell.spec.graph's generic model): the
        native model's state tensors are float32 or float64 only."""
        if low_precision(dtype, params):
            return super().model(name, params, seed, dtype, dims)
        return TorchModel(self, models.get(name, **(dims or {})), params=params, seed=seed, dtype=dtype,
                          impls=CONCEPTS)

    def baseline(self) -> TorchBaseline:
        return TorchBaseline(self)

    def synchronize(self) -> None:
        if self._device.type == "cuda":
            torch.cuda.synchronize(self._device)

    # --- the hooks ------------------------------------------------------------------------

    def _forward(self, concept: str, inputs: dict[str, np.ndarray], attrs: dict[str, Any]) -> dict[str, np.ndarray]:
        tensors = {k: self._tensor(v) for k, v in inputs.items()}
        with torch.no_grad():
            out = CONCEPTS[concept].forward(tensors, attrs)
        return {k: self.to_numpy(v) for k, v in out.items()}

    def _vjp(self, concept: str, inputs: dict[str, np.ndarray], cotangents: dict[str, np.ndarray],
             attrs: dict[str, Any]) -> dict[str, np.ndarray]:
        """Σ_out cot_out · ∂out/∂input for every differentiable input given, by reverse-mode autograd."""
        diff = [k for k in self.spec.concept(concept).differentiable if k in inputs]
        tensors = {k: self._tensor(v, requires_grad=k in diff) for k, v in inputs.items()}
        with torch.enable_grad():
            out = CONCEPTS[concept].forward(tensors, attrs)
            used = [k for k, v in out.items() if v.requires_grad]
            grads = torch.autograd.grad([out[k] for k in used], [tensors[k] for k in diff],
                                        grad_outputs=[self._tensor(cotangents[k]) for k in used],
                                        allow_unused=True)
        return {k: np.zeros_like(inputs[k]) if g is None else self.to_numpy(g)
                for k, g in zip(diff, grads, strict=True)}

    def _op(self, concept: str, attrs: dict[str, Any]) -> Callable[..., dict[str, torch.Tensor]]:
        forward = CONCEPTS[concept].forward

        def call(**native: torch.Tensor) -> dict[str, torch.Tensor]:
            with torch.no_grad():
                return forward(native, attrs)
        return call

    def unsupported(self, concept: str, dtype: str) -> str | None:
        """Every concept runs in every dtype of the spec on the CPU and on CUDA."""
        if concept not in CONCEPTS:
            return "not implemented by the torch backend"
        return None

    @contextlib.contextmanager
    def library_defaults(self) -> Iterator[None]:
        """torch's own defaults: cuDNN convolutions may use TF32 (``cudnn.allow_tf32`` is True unless
        changed), cuBLAS matrix products may not (``cuda.matmul.allow_tf32`` False). The pinned
        settings (both off) come back after the block. No effect on the CPU."""
        pinned = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = False, True
        try:
            yield
        finally:
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = pinned

    def widened(self, concept: str, dtype: str) -> str | None:
        """conv2d_fft in float16 and bfloat16 transforms in float32 (conv.py): torch.fft has no
        half-precision kernels on the CPU. Everything else runs in the dtype itself."""
        if concept == "conv2d_fft" and dtype in LOW_PRECISION:
            return f"float32: torch.fft has no {dtype} kernels on the CPU; the result is rounded once into {dtype}"
        return None
