"""The PyTorch backend (``backends.load("torch")``)."""

from backends.torch_impl.backend import TorchBackend

__all__ = ["TorchBackend"]
