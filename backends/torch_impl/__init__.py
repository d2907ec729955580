"""The PyTorch backend (``backends.load("torch")``)."""

from nutshell.backends.torch_impl.backend import TorchBackend

__all__ = ["TorchBackend"]
