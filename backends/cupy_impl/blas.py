"""One BLAS thread for NumPy's matrix products while a model step runs on the CPU.

A spec model's products are small (K = Cg·kh·kw ≤ a few hundred), so a second OpenBLAS thread
saves little of a step, most of which is single-threaded NumPy anyway; and OpenBLAS threads
spin-wait for each other, so on a machine whose other core is busy every product waits for a
preempted thread. Measured on 2 shared cores, one of them loaded: the matmuls of a digits_cnn
step (batch 1024) took 0.5 s with two threads and 14 ms with one.

threadpoolctl finds the BLAS libraries loaded in the process (NumPy's bundled OpenBLAS, MKL, …)
and sets their thread count for the block, restoring it after.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator

from threadpoolctl import ThreadpoolController


@functools.cache
def _controller() -> ThreadpoolController:
    """The process's thread pools, inspected once (NumPy's BLAS is loaded by then)."""
    return ThreadpoolController()


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Inside the block the BLAS libraries run on one thread; their earlier counts are restored after."""
    with _controller().limit(limits=1, user_api="blas"):
        yield
