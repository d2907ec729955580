"""Choosing the array module once: CuPy when it imports and a CUDA device is usable, else NumPy.

Every numerical function of this backend is written once against ``xp`` and finds its module
with :func:`array_module` from the arrays it is given, so the same code runs on the GPU (CuPy
arrays in) and on the CPU (NumPy arrays in). Importing this module does not import CuPy; the
first call of :func:`usable_cupy` tries, once, and remembers the answer.
"""

from __future__ import annotations

import functools
from types import ModuleType
from typing import Any

import numpy


@functools.cache
def usable_cupy() -> ModuleType | None:
    """The ``cupy`` module when it imports and sees at least one CUDA device, else None.

    A CuPy wheel without a driver (or with one too old for its runtime) imports fine and then
    raises from ``getDeviceCount``; that counts as "no device", like a missing package.
    """
    try:
        import cupy
    except Exception:  # ImportError, or a broken CUDA install failing at import
        return None
    try:
        return cupy if cupy.cuda.runtime.getDeviceCount() > 0 else None
    except Exception:  # CUDARuntimeError and friends: no usable device
        return None


def device_count() -> int:
    """How many CUDA devices CuPy can use here (0 without CuPy or a driver)."""
    cp = usable_cupy()
    return 0 if cp is None else int(cp.cuda.runtime.getDeviceCount())


def array_module(*arrays: Any) -> ModuleType:
    """``cupy`` if any of ``arrays`` is a CuPy array, else ``numpy``."""
    cp = usable_cupy()
    if cp is not None and any(isinstance(a, cp.ndarray) for a in arrays):
        return cp
    return numpy


def matmul(a: Any, b: Any) -> Any:
    """a @ b in the inputs' dtype. NumPy has no bfloat16 matrix product: on ml_dtypes' bfloat16 it
    multiplies and sums in float32 and returns float32, which is rounded here once into bfloat16
    (float32 accumulation, as a GPU's bfloat16 GEMM does). Every other dtype comes back as it went in."""
    with numpy.errstate(over="ignore"):     # past the format's range a product is ±inf, as the spec pins
        c = a @ b
    return c if c.dtype == a.dtype else c.astype(a.dtype)


# the signed integer of each float width: a float's +0 is all zero bits
_BITS = {2: numpy.int16, 4: numpy.int32, 8: numpy.int64}


def kept(mask: Any, a: Any) -> Any:
    """``where(mask, a, 0)``, bit for bit (+0 where ``mask`` is false, NaN payloads kept).

    On NumPy, with a mask of a's shape, as a bitwise and of a's bits with the mask spread to all
    ones or zeros: NumPy's where branches per element, and on the unpredictable masks of a ReLU
    or a max pool's first maxima it ran about seven times slower than the three branchless
    passes (cast, and, view). Elsewhere (CuPy, broadcast masks, other dtypes) it is ``where``.
    """
    xp = array_module(a)
    bits = _BITS.get(a.dtype.itemsize)
    if xp is not numpy or bits is None or mask.shape != a.shape or not (
            a.dtype.kind == "f" or a.dtype.name == "bfloat16"):
        return xp.where(mask, a, 0)
    spread = numpy.subtract(0, mask, dtype=bits)                 # true → −1: all ones; false → 0
    return numpy.bitwise_and(a.view(bits), spread, out=spread).view(a.dtype)


def on_gpu(a: Any) -> bool:
    """Whether ``a`` lives on a CUDA device."""
    return array_module(a) is not numpy


def to_numpy(a: Any) -> numpy.ndarray:
    """A NumPy copy of a CuPy array, or ``a`` itself (as an ndarray) when it already is one."""
    return a.get() if on_gpu(a) else numpy.asarray(a)
