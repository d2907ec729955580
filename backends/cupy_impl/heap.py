"""Keeping freed memory in the process between a CPU model step's large temporaries.

A training step on NumPy allocates and frees tens of MiB of temporaries (columns, padded planes,
activations). glibc's malloc hands blocks above its mmap threshold to fresh ``mmap`` calls and
trims the top of the heap back to the OS once it holds more than its trim threshold, so the
next step faults every page in again. In a virtual machine a page fault is expensive: measured
on the 2-core benchmark VM, an inception_net step (batch 512) took 19 000 minor faults and 74 ms
of system time, about a quarter of the step; a digits_cnn step (batch 1024) 5 000 and 16 ms.

:func:`keep_freed_memory` sets, once for the process, the mmap threshold to 32 MiB (the ceiling
that glibc's own adaptive threshold reaches on 64-bit systems) and the trim threshold to
DEFAULT_BUDGET_MB (256 MiB, this backend's working-memory budget): blocks up to 32 MiB come
from the heap and freed memory up to 256 MiB stays there for the next step, with no faults. The
settings are process-wide and last (glibc has no way back to its adaptive thresholds); other
libraries in the process allocate under them too. Without glibc's ``mallopt`` nothing changes.
"""

from __future__ import annotations

import ctypes
import functools

from nutshell.backends.cupy_impl.im2col import DEFAULT_BUDGET_MB, MIB

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3        # glibc's malloc.h
MMAP_THRESHOLD_BYTES = 32 * MIB


@functools.cache
def keep_freed_memory() -> bool:
    """Set glibc's mmap and trim thresholds (once); whether this C library has ``mallopt``."""
    libc = ctypes.CDLL(None)
    if not hasattr(libc, "mallopt"):
        return False
    libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)
    libc.mallopt(M_TRIM_THRESHOLD, int(DEFAULT_BUDGET_MB * MIB))
    return True
