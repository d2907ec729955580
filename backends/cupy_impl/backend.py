"""The CuPy backend: every concept from array operations, on a CUDA device or on NumPy.

The device is chosen once, at construction: CuPy when it imports and sees a CUDA device
(``device`` "cuda:N"), NumPy otherwise ("cpu (numpy)"). Inputs are moved to that module with
:meth:`CupyBackend.to_native`; the area modules find the module from the arrays they receive, so
one code path serves both. No deep-learning library is imported, and neither is CuPy when it is
not installed. A spec model (:meth:`CupyBackend.model`) runs on these arrays from its input to its
gradients (model.py). Each area module (activations.py, conv.py, ...) exports ``CONCEPTS``, concept id ->
:class:`~nutshell.spec.signatures.Impl` with a hand-written ``forward(inputs, attrs)`` and
``vjp(inputs, cotangents, attrs)``; they merge into one table here.

Memory: convolution works through the batch in chunks so that the extra memory of one call stays
under ``mem_budget_mb`` (an attribute; default 256 MiB or the environment variable
``NUTSHELL_CUPY_MEM_BUDGET_MB``), set around every call like the CUDA device (:meth:`_scope`).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Mapping
from types import ModuleType
from typing import Any

import numpy as np

from nutshell.backends.base import Backend
from nutshell.backends.cupy_impl import (
    activations,
    conv,
    dense,
    inception,
    kernels,
    losses,
    normalization,
    pooling,
    recurrent,
)
from nutshell.backends.cupy_impl.baseline import ArrayBaseline
from nutshell.backends.cupy_impl.im2col import DEFAULT_BUDGET_MB, MIB, memory_budget
from nutshell.backends.cupy_impl.model import CupyModel
from nutshell.backends.cupy_impl.xp import device_count, to_numpy, usable_cupy
from nutshell.errors import BackendUnavailable, SpecError
from nutshell.spec import models, validate
from nutshell.spec.signatures import LOW_PRECISION, Impl

BUDGET_ENV = "NUTSHELL_CUPY_MEM_BUDGET_MB"

CONCEPTS: dict[str, Impl] = {
    **activations.CONCEPTS, **dense.CONCEPTS, **losses.CONCEPTS, **conv.CONCEPTS, **pooling.CONCEPTS,
    **normalization.CONCEPTS, **recurrent.CONCEPTS, **inception.CONCEPTS,
}


def select_device(device: str | None) -> tuple[ModuleType, str, int | None]:
    """(array module, device name, CUDA index or None) for a requested ``device``.

    None picks "cuda:0" when a CUDA device is usable, else NumPy; "cpu" forces NumPy; "cuda" or
    "cuda:N" without such a device raises BackendUnavailable.
    """
    if device in ("cpu", "cpu (numpy)") or (device is None and device_count() == 0):
        return np, "cpu (numpy)", None
    if device is None:
        device = "cuda:0"
    name, _, index = device.partition(":")
    if name != "cuda" or not (index == "" or index.isdigit()):
        raise BackendUnavailable(f"backend 'cupy': unknown device {device!r}; use 'cpu', 'cuda' or 'cuda:N'")
    idx, count = int(index or 0), device_count()
    if idx >= count:
        raise BackendUnavailable(
            f"backend 'cupy': device {device!r} is not usable here ({count} CUDA device(s) visible to CuPy); "
            "pip install 'nutshell[cupy]' on a machine with an NVIDIA driver, or use device='cpu'")
    if os.environ.get("CUPY_TF32", "0") != "0":
        raise BackendUnavailable("backend 'cupy': CUPY_TF32 is set; unset it, float32 matmuls must stay IEEE float32")
    return usable_cupy(), f"cuda:{idx}", idx


def _budget_from_env() -> float:
    """MiB that one call's intermediates may hold: $NUTSHELL_CUPY_MEM_BUDGET_MB, else the default."""
    try:
        size = validate.env_bytes(BUDGET_ENV)
    except SpecError as exc:
        raise BackendUnavailable(f"backend 'cupy': {exc}") from None
    return DEFAULT_BUDGET_MB if size is None else size / MIB


GPU_KERNEL_CONCEPTS = frozenset({
    "sigmoid", "tanh", "layer", "logistic_regression", "binary_cross_entropy", "lstm_cell", "lstm",
    "conv2d", "convolve2d", "max_pool2d", "avg_pool2d", "inception"})
"""The concepts whose GPU path runs a kernel of kernels.py, which computes float16 in float32."""


class CupyBackend(Backend):
    """Every concept written once against ``xp``: CuPy on a CUDA device, NumPy elsewhere."""

    name = "cupy"

    def __init__(self, device: str | None = None, spec: Any = None):
        super().__init__(device, spec)
        self.xp, self.device, self._cuda_index = select_device(device)
        self.mem_budget_mb: float = _budget_from_env()
        if self._cuda_index is not None:
            # CuPy compiles every GPU kernel, its own and this backend's, with -ftz=true
            # (cupy/cuda/compiler.py); seen on an H200 with CuPy 14.2. float64 and NumPy keep subnormals.
            self.deviations = self.flushes_subnormals("CuPy compiles its GPU kernels with -ftz=true: "
                                                      "float32 subnormals are flushed to zero")

    @property
    def budget_bytes(self) -> int:
        """The working-memory budget of one convolution call, in bytes."""
        return int(self.mem_budget_mb * MIB)

    def unsupported(self, concept: str, dtype: str) -> str | None:
        """Every concept in every dtype on NumPy; on a GPU no bfloat16 (CuPy has no such dtype)."""
        if concept not in CONCEPTS:
            return f"backend '{self.name}' does not implement '{concept}'"
        if dtype == "bfloat16" and self._cuda_index is not None:
            return "CuPy has no bfloat16 dtype: ml_dtypes' bfloat16 arrays cannot go to the GPU"
        return None

    def widened(self, concept: str, dtype: str) -> str | None:
        """conv2d_fft transforms float16 and bfloat16 in float32: NumPy's and CuPy's FFTs have no
        half-precision transform (they return complex64). On a GPU, float16 goes through this
        backend's CUDA kernels (kernels.py) as float32. Matrix products of bfloat16 accumulate in
        float32 and round once (xp.matmul); every other step stays in the dtype."""
        if concept == "conv2d_fft" and dtype in LOW_PRECISION:
            return f"float32: the FFT has no {dtype} transform; the result is rounded once into {dtype}"
        if dtype == "float16" and self._cuda_index is not None and concept in GPU_KERNEL_CONCEPTS:
            return "float32 in this backend's CUDA kernels (σ, tanh′, LSTM gates, im2col/col2im), " \
                "rounded once into float16"
        return None

    def model(self, name: str, params: Mapping[str, np.ndarray] | None = None, seed: int = 0,
              dtype: str | None = None, dims: Mapping[str, int] | None = None) -> CupyModel:
        """A spec model run natively: every node on this backend's arrays, validated once at the
        model's boundary (model.py)."""
        return CupyModel(self, models.get(name, **(dims or {})), params=params, seed=seed, dtype=dtype,
                         impls=CONCEPTS)

    # --- native arrays ------------------------------------------------------------------------

    def to_native(self, a: np.ndarray) -> Any:
        return self.xp.asarray(a)

    def to_numpy(self, t: Any) -> np.ndarray:
        a = to_numpy(t)                       # a 0-d array stays 0-d (ascontiguousarray would make it 1-d)
        return a if a.flags.c_contiguous else np.ascontiguousarray(a)

    def baseline(self) -> ArrayBaseline:
        return ArrayBaseline(self)

    def synchronize(self) -> None:
        if self._cuda_index is not None:
            usable_cupy().cuda.Device(self._cuda_index).synchronize()

    def warmup(self) -> None:
        """Compile the GPU kernels (and CuPy's own) before anything is timed; a no-op on NumPy."""
        if self._cuda_index is None:
            return
        with self._scope():
            kernels.warmup()
            for dtype in (np.float32, np.float64):
                x, w = np.ones((1, 2, 4, 4), dtype), np.ones((2, 2, 3, 3), dtype)
                attrs = {"stride": [1, 1], "pads": [1, 1, 1, 1], "dilation": [1, 1], "groups": 1}
                for concept in ("conv2d", "conv2d_fft"):
                    self._forward(concept, {"x": x, "w": w}, attrs)
                    self._vjp(concept, {"x": x, "w": w}, {"y": x}, attrs)
        self.synchronize()

    # --- dispatch -----------------------------------------------------------------------------

    @contextlib.contextmanager
    def _scope(self) -> Iterator[None]:
        """What one call runs under: this backend's CUDA device (none on NumPy) and memory budget."""
        device = contextlib.nullcontext() if self._cuda_index is None else usable_cupy().cuda.Device(self._cuda_index)
        with device, memory_budget(self.budget_bytes):
            yield

    def _forward(self, concept: str, inputs: dict[str, np.ndarray], attrs: dict[str, Any]) -> dict[str, np.ndarray]:
        with self._scope():
            native = {k: self.to_native(v) for k, v in inputs.items()}
            return {k: self.to_numpy(v) for k, v in CONCEPTS[concept].forward(native, attrs).items()}

    def _vjp(self, concept: str, inputs: dict[str, np.ndarray], cotangents: dict[str, np.ndarray],
             attrs: dict[str, Any]) -> dict[str, np.ndarray]:
        with self._scope():
            native = {k: self.to_native(v) for k, v in inputs.items()}
            cots = {k: self.to_native(v) for k, v in cotangents.items()}
            return {k: self.to_numpy(v) for k, v in CONCEPTS[concept].vjp(native, cots, attrs).items()}

    def _op(self, concept: str, attrs: dict[str, Any]) -> Callable[..., dict[str, Any]]:
        """A callable on native arrays (by input name) returning native outputs: no host copies."""
        forward = CONCEPTS[concept].forward

        def call(**native: Any) -> dict[str, Any]:
            with self._scope():
                return forward(native, attrs)
        return call
