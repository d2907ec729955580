"""Local response normalisation (ONNX LRN): the float64 oracle.

s[c] = Σ x[i]² over the channel window i ∈ [c − ⌊(size−1)/2⌋, c + ⌈(size−1)/2⌉] ∩ [0, C),
d = bias + (alpha/size)·s and y = x · d^(−beta), all per (n, h, w).
"""

from __future__ import annotations

import math

from nutshell.spec.reference import tracked
from nutshell.spec.reference.tracked import T
from nutshell.spec.signatures import Impl


def _window_sum(a: T, before: int, after: int) -> T:
    """out[:, c] = Σ a[:, i] over i ∈ [c − before, c + after] ∩ [0, C) (a sum per channel)."""
    channels = a.shape[1]
    parts = [a[:, max(0, c - before):min(channels, c + after + 1)].sum(axis=1) for c in range(channels)]
    return tracked.stack(parts, axis=1)


def _offsets(size: int) -> tuple[int, int]:
    """The window reaches ⌊(size−1)/2⌋ channels back and ⌈(size−1)/2⌉ forward."""
    return (size - 1) // 2, math.ceil((size - 1) / 2)


def _denominator(x: T, size: int, alpha: float, bias: float) -> T:
    """d = bias + (alpha/size)·s; alpha, bias and alpha/size are rounded into the format."""
    before, after = _offsets(size)
    s = _window_sum(x * x, before, after)
    return T.const(bias) + (T.const(alpha) / T.const(float(size))) * s


def lrn(x: T, size: int, alpha: float, beta: float, bias: float) -> T:
    """y = x / d^beta (a power and a division; beta is taken as exact)."""
    return x / tracked.power(_denominator(x, size, alpha, bias), beta)


def lrn_grad(x: T, gy: T, size: int, alpha: float, beta: float, bias: float) -> T:
    """With k = alpha/size, ∂y_c/∂x_j = δ_cj·d_c^(−β) − 2kβ·x_j·x_c·d_c^(−β−1) for j in c's window, so

    gx_j = gy_j / d_j^β − 2kβ·x_j · Σ_{c : j ∈ window(c)} gy_c·y_c / d_c.

    j lies in c's window exactly when c ∈ [j − ⌈(size−1)/2⌉, j + ⌊(size−1)/2⌋]: the reversed window.
    """
    d = _denominator(x, size, alpha, bias)
    p = tracked.power(d, beta)
    y = x / p
    before, after = _offsets(size)
    back = _window_sum(gy * y / d, after, before)
    coef = T.const(2.0 * beta) * (T.const(alpha) / T.const(float(size)))
    return gy / p - coef * x * back


def _attrs(a: dict) -> tuple:
    return a["size"], a["alpha"], a["beta"], a["bias"]


CONCEPTS: dict[str, Impl] = {
    "lrn": Impl(lambda i, a: {"y": lrn(i["x"], *_attrs(a))},
                lambda i, g, a: {"x": lrn_grad(i["x"], g["y"], *_attrs(a))}),
}
