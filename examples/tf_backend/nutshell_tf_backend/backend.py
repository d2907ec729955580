"""The TensorFlow backend: every concept as TensorFlow operations, every vjp through ``tf.GradientTape``.

Each area module (activations.py, conv.py, ...) exports ``CONCEPTS``, concept id ->
:class:`~nutshell.spec.signatures.Impl` whose ``forward(inputs, attrs)`` returns the outputs by
the spec's names, the convention of nutshell's own backends; they merge into one table here. No
area writes a vjp: it is generic, run the forward under a tape watching the differentiable
inputs, then ``tape.gradient(outputs, inputs, output_gradients=cotangents)``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import tensorflow as tf

from nutshell import Backend, BackendUnavailable
from nutshell.spec.signatures import Impl
from nutshell_tf_backend import activations, conv, dense, inception, losses, normalization, pooling, recurrent

CONCEPTS: dict[str, Impl] = {
    **activations.CONCEPTS, **dense.CONCEPTS, **losses.CONCEPTS, **conv.CONCEPTS, **pooling.CONCEPTS,
    **normalization.CONCEPTS, **recurrent.CONCEPTS, **inception.CONCEPTS,
}


def select_device(device: str | None) -> str:
    """None -> "gpu:0" when TensorFlow sees a GPU, else "cpu"; "cpu", "gpu[:N]" and "cuda[:N]" are accepted."""
    gpus = len(tf.config.list_logical_devices("GPU"))
    if device is None:
        return "gpu:0" if gpus else "cpu"
    if device == "cpu":
        return "cpu"
    kind, _, index = device.partition(":")
    if kind not in ("gpu", "cuda") or not (index == "" or index.isdigit()):
        raise BackendUnavailable(f"backend 'tf': unknown device {device!r}; use 'cpu', 'gpu:N' or 'cuda:N'")
    if int(index or 0) >= gpus:
        raise BackendUnavailable(f"backend 'tf': device {device!r} requested but TensorFlow {tf.__version__} "
                                 f"sees {gpus} GPU(s); use device='cpu' or install 'tensorflow[and-cuda]'")
    return f"gpu:{int(index or 0)}"


class TfBackend(Backend):
    """Every concept of the spec on TensorFlow, on the CPU or one GPU."""

    name = "tf"

    def __init__(self, device: str | None = None, spec=None):
        super().__init__(device, spec)
        # TensorFlow's CPU kernels flush subnormal float32 values to zero (by design, with no switch).
        self.deviations = {**self.flushes_subnormals("TensorFlow flushes subnormal float32 values to zero"),
                           "dense[tf-subnormal_result_bf16-bfloat16]":
                               "TensorFlow's bfloat16 matrix product flushes a subnormal result to zero",
                           **self._found_elsewhere()}
        self.device = select_device(device)
        self._placement = "/CPU:0" if self.device == "cpu" else "/" + self.device.upper()   # "/GPU:0"
        tf.config.experimental.enable_tensor_float_32_execution(False)   # full float32 matmuls on the GPU

    @staticmethod
    def _found_elsewhere() -> dict[str, str]:
        """The float64 vectors ``nutshell hunt`` found on other backends that TensorFlow fails as
        well (the float32 ones are among :meth:`flushes_subnormals`): its Exp, Sigmoid and Softmax
        kernels flush subnormal results to zero in float64 too (σ(−709.7) = 3.3e−309 comes back
        0), and its float64 Tanh is up to 7·u·|y| off near ±1, as ONNX Runtime's was."""
        flush = "TensorFlow's Exp, Sigmoid and Softmax kernels flush subnormal results to zero (float64 too)"
        ids = ["logistic_regression[tf-found_torch_2026_12_04_1-float64]",
               "lstm[tf-found_cupy_2026_12_04_1-float64*]"]
        return dict.fromkeys(ids, flush) | {
            "tanh[tf-found_onnx_2026_12_04_1-float64]": "TensorFlow's float64 Tanh is up to 7·u·|y| off near ±1"}

    # --- numpy <-> tensorflow -------------------------------------------------------------

    def to_native(self, a: np.ndarray) -> tf.Tensor:
        with tf.device(self._placement):
            return tf.identity(tf.convert_to_tensor(np.array(a, copy=True, order="C")))

    def to_numpy(self, t: tf.Tensor) -> np.ndarray:
        return np.asarray(t.numpy())                               # a 0-d tensor gives a 0-d array

    def synchronize(self) -> None:
        if self.device != "cpu":
            tf.test.experimental.sync_devices()

    # --- the hooks ------------------------------------------------------------------------

    def _forward(self, concept: str, inputs: dict[str, np.ndarray], attrs: dict[str, Any]) -> dict[str, np.ndarray]:
        with tf.device(self._placement):
            tensors = {k: tf.convert_to_tensor(v) for k, v in inputs.items()}
            out = CONCEPTS[concept].forward(tensors, attrs)
        return {k: self.to_numpy(v) for k, v in out.items()}

    def _vjp(self, concept: str, inputs: dict[str, np.ndarray], cotangents: dict[str, np.ndarray],
             attrs: dict[str, Any]) -> dict[str, np.ndarray]:
        """Σ_out cot_out · ∂out/∂input for every differentiable input given, by reverse-mode autodiff."""
        diff = [k for k in self.spec.concept(concept).differentiable if k in inputs]
        with tf.device(self._placement):
            tensors = {k: tf.convert_to_tensor(v) for k, v in inputs.items()}
            with tf.GradientTape() as tape:
                tape.watch([tensors[k] for k in diff])
                out = CONCEPTS[concept].forward(tensors, attrs)
            grads = tape.gradient(list(out.values()), [tensors[k] for k in diff],
                                  output_gradients=[tf.convert_to_tensor(cotangents[k]) for k in out],
                                  unconnected_gradients=tf.UnconnectedGradients.ZERO)
        return {k: self.to_numpy(tf.convert_to_tensor(g)) for k, g in zip(diff, grads, strict=True)}

    def _op(self, concept: str, attrs: dict[str, Any]) -> Callable[..., dict[str, tf.Tensor]]:
        """The forward as one traced ``tf.function`` (traced again for each new input signature)."""
        forward = CONCEPTS[concept].forward
        traced = tf.function(lambda **native: forward(native, attrs), autograph=False)

        def call(**native: tf.Tensor) -> dict[str, tf.Tensor]:
            with tf.device(self._placement):
                return traced(**native)
        return call

    def widened(self, concept: str, dtype: str) -> str | None:
        """conv2d_fft in float16 and bfloat16 runs its FFTs in float32 (TensorFlow's take no other)."""
        if concept == "conv2d_fft" and dtype in ("float16", "bfloat16"):
            return "float32: TensorFlow's FFTs take float32 or float64 only; the result is rounded once"
        return None

    def unsupported(self, concept: str, dtype: str) -> str | None:
        """Every concept runs in float32 and float64: the ops whose TensorFlow kernels lack float64
        (max pooling, LRN) are written from primitives that keep it."""
        if concept not in CONCEPTS:
            return "not implemented by the tf backend"
        return None
