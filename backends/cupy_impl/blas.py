"""One BLAS thread for NumPy's matrix products while a model step runs on the CPU.

A spec model's products are small (K = Cg·kh·kw ≤ a few hundred), so a second OpenBLAS thread
saves little of a step, most of which is single-threaded NumPy anyway; and OpenBLAS threads
spin-wait for each other, so on a machine whose other core is busy every product waits for a
preempted thread. Measured on 2 shared cores, one of them loaded: the matmuls of a digits_cnn
step (batch 1024) took 0.5 s with two threads and 14 ms with one.

The thread count is set through the OpenBLAS that NumPy's wheel ships (``numpy.libs``, or
``.dylibs`` on macOS), found by its exported setter; with any other BLAS nothing changes.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import glob
import os
from collections.abc import Iterator

import numpy

# (setter, getter) names in the builds NumPy's wheels have shipped: scipy-openblas (ILP64 or
# not), then the plain OpenBLAS of older wheels.
_NAMES = (
    ("scipy_openblas_set_num_threads64_", "scipy_openblas_get_num_threads64_"),
    ("scipy_openblas_set_num_threads", "scipy_openblas_get_num_threads"),
    ("openblas_set_num_threads64_", "openblas_get_num_threads64_"),
    ("openblas_set_num_threads", "openblas_get_num_threads"),
)


@functools.cache
def _openblas() -> tuple[ctypes._CFuncPtr, ctypes._CFuncPtr] | None:
    """(set_num_threads, get_num_threads) of NumPy's bundled OpenBLAS, or None without one."""
    root = os.path.dirname(numpy.__file__)
    paths = glob.glob(os.path.join(root, os.pardir, "numpy.libs", "*openblas*"))
    paths += glob.glob(os.path.join(root, ".dylibs", "*openblas*"))
    for path in sorted(paths):
        lib = ctypes.CDLL(path)                       # already loaded by NumPy: the same handle
        for setter, getter in _NAMES:
            if hasattr(lib, setter) and hasattr(lib, getter):
                return getattr(lib, setter), getattr(lib, getter)
    return None


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Inside the block NumPy's OpenBLAS runs on one thread; its earlier count is restored after."""
    found = _openblas()
    if found is None:
        yield
        return
    set_threads, get_threads = found
    before = get_threads()
    set_threads(1)
    try:
        yield
    finally:
        set_threads(before)
