"""The ONNX backend: every concept as an ONNX graph run by ONNX Runtime, gradients included."""

from nutshell.backends.onnx_impl.backend import OnnxBackend

__all__ = ["OnnxBackend"]
