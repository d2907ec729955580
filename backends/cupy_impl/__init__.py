"""The CuPy backend: every concept written from array operations, on a CUDA GPU or on NumPy."""

from nutshell.backends.cupy_impl.backend import CupyBackend

__all__ = ["CupyBackend"]
