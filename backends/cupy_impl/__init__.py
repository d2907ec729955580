"""The CuPy backend: every concept written from array operations, on a CUDA GPU or on NumPy."""

from backends.cupy_impl.backend import CupyBackend

__all__ = ["CupyBackend"]
