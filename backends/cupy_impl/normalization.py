"""Local response normalisation across channels (ONNX LRN), forward and vjp.

With a = ⌊(size − 1)/2⌋ channels before and b = ⌈(size − 1)/2⌉ after each channel c,

    s[c] = Σ_{i = c − a}^{c + b} x[i]²   (channels outside [0, C) left out)
    d    = bias + (alpha / size)·s,       y = x / d^beta

and, since y_c depends on x_j through d_c whenever j lies in the window of c (that is, c lies
in [j − b, j + a], the window mirrored),

    gx_j = gy_j / d_j^beta − (2·alpha·beta / size)·x_j·Σ_{c = j − b}^{j + a} gy_c·y_c / d_c
"""

from __future__ import annotations

from typing import Any

from nutshell.backends.cupy_impl.xp import array_module
from nutshell.spec.signatures import Impl

Arrays = dict[str, Any]


def channel_window_sum(a: Any, before: int, after: int) -> Any:
    """out[:, c] = Σ a[:, i] for i in [c − before, c + after] ∩ [0, C), one shifted add per offset."""
    xp = array_module(a)
    c = a.shape[1]
    padded = xp.zeros((a.shape[0], c + before + after, *a.shape[2:]), dtype=a.dtype)
    padded[:, before:before + c] = a
    out = padded[:, 0:c].copy()
    for k in range(1, before + after + 1):
        out += padded[:, k:k + c]
    return out


def _offsets(size: int) -> tuple[int, int]:
    """(a, b): channels summed before and after the centre."""
    return (size - 1) // 2, size - 1 - (size - 1) // 2


def _constant(value: float, like: Any) -> Any:
    """``value`` rounded into ``like``'s dtype as a 0-d array, so that the arithmetic stays in that
    dtype: ml_dtypes before 0.7 promotes a bfloat16 array with a Python float to float32."""
    return array_module(like).asarray(value, dtype=like.dtype)


def _denominator(x: Any, attrs: dict) -> Any:
    before, after = _offsets(attrs["size"])
    bias, scale = _constant(attrs["bias"], x), _constant(attrs["alpha"] / attrs["size"], x)
    return bias + scale * channel_window_sum(x * x, before, after)


def lrn(inputs: Arrays, attrs: dict) -> Arrays:
    x = inputs["x"]
    return {"y": x / _denominator(x, attrs) ** _constant(attrs["beta"], x)}


def lrn_vjp(inputs: Arrays, cots: Arrays, attrs: dict) -> Arrays:
    x, gy = inputs["x"], cots["y"]
    before, after = _offsets(attrs["size"])
    d = _denominator(x, attrs)
    scale = d ** _constant(attrs["beta"], x)
    y = x / scale
    back = channel_window_sum(gy * y / d, after, before)           # the mirrored window
    return {"x": gy / scale - _constant(2 * attrs["alpha"] * attrs["beta"] / attrs["size"], x) * x * back}


CONCEPTS: dict[str, Impl] = {"lrn": Impl(lrn, lrn_vjp)}
