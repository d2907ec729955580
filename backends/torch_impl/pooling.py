"""2-D pooling with the spec's padding, ceil-mode and divisor rules made explicit.

torch is asked only for plain floor-mode sweeps with padding 0: the border (−inf for max,
0 for average) and any ceil-mode extension are added here, so the set of windows is exactly
the one :func:`nutshell.spec.shapes.pool_out` describes, the drop rule included.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as nnf

from nutshell.backends.torch_impl.conv import pad2d
from nutshell.spec import shapes
from nutshell.spec.signatures import Impl


def _sweep_pads(x: torch.Tensor, kernel: Sequence[int], stride: Sequence[int], pads: Sequence[int],
                dilation: Sequence[int], ceil_mode: bool) -> tuple[list[int], tuple[int, int]]:
    """Border [top, left, bottom', right'] whose floor sweep gives the spec's output size.

    The end entries make the padded length exactly the windows' reach (:func:`shapes.window_reach`):
    longer than the explicit padding when ceil mode adds a window, shorter (a crop) when trailing
    pixels fall in no window. Returns (border, (oH, oW)).
    """
    out, ends = [], []
    for axis in (0, 1):
        n, k, s, d = x.shape[2 + axis], kernel[axis], stride[axis], dilation[axis]
        begin, end = pads[axis], pads[axis + 2]
        o = shapes.pool_out(n, k, s, begin, end, d, ceil_mode)
        out.append(o)
        ends.append(shapes.window_reach(o, k, s, d) - n - begin)
    return [pads[0], pads[1], ends[0], ends[1]], (out[0], out[1])


def max_pool2d(x: torch.Tensor, kernel: Sequence[int], stride: Sequence[int], pads: Sequence[int] = (0, 0, 0, 0),
               dilation: Sequence[int] = (1, 1), ceil_mode: bool = False) -> torch.Tensor:
    """y[n,c,i,j] = max_{p,q} xpad[n, c, i·sh + p·dh, j·sw + q·dw], xpad bordered with −inf.

    torch scans each window in row-major order and replaces the running maximum only on a
    strictly larger value (or a NaN): ties go to the first element, NaN propagates.
    """
    border, _ = _sweep_pads(x, kernel, stride, pads, dilation, ceil_mode)
    xp = pad2d(x, border, value=float("-inf"))
    return nnf.max_pool2d(xp, tuple(kernel), tuple(stride), 0, tuple(dilation))


def _counts(out: int, k: int, s: int, lo: int, hi: int, like: torch.Tensor) -> torch.Tensor:
    """Per window along one axis, how many of its k positions fall in [lo, hi): min(i·s + k, hi) − max(i·s, lo).

    Built on the device in the input's dtype (small integers, exact), so no host copy is made.
    """
    start = torch.arange(out, dtype=like.dtype, device=like.device) * s     # (out,)
    return (start + k).clamp(max=hi) - start.clamp(min=lo)


def avg_pool2d(x: torch.Tensor, kernel: Sequence[int], stride: Sequence[int], pads: Sequence[int] = (0, 0, 0, 0),
               ceil_mode: bool = False, count_include_pad: bool = False) -> torch.Tensor:
    """y = (Σ of the window over the zero-bordered input) / divisor.

    divisor = the window positions inside the input [p_begin, p_begin + n) on each axis, or,
    with count_include_pad, inside the explicitly padded input [0, n + p_begin + p_end);
    positions a ceil-mode window reaches beyond that never count.
    """
    border, out = _sweep_pads(x, kernel, stride, pads, (1, 1), ceil_mode)
    total = nnf.avg_pool2d(pad2d(x, border), tuple(kernel), tuple(stride), 0, divisor_override=1)
    per_axis = []
    for axis in (0, 1):
        n, begin, end = x.shape[2 + axis], pads[axis], pads[axis + 2]
        lo, hi = (0, n + begin + end) if count_include_pad else (begin, n + begin)
        per_axis.append(_counts(out[axis], kernel[axis], stride[axis], lo, hi, x))
    return total / (per_axis[0][:, None] * per_axis[1][None, :])   # (N, C, oH, oW) / (oH, oW)


def global_avg_pool2d(x: torch.Tensor) -> torch.Tensor:
    """y[n, c] = mean of x[n, c] over H and W: (N, C, H, W) -> (N, C, 1, 1)."""
    return x.mean(dim=(2, 3), keepdim=True)


# concept -> Impl(forward(inputs, attrs)); no vjp: autograd differentiates the forward (backend.py)
CONCEPTS: dict[str, Impl] = {
    "max_pool2d": Impl(lambda i, a: {"y": max_pool2d(i["x"], **a)}),
    "avg_pool2d": Impl(lambda i, a: {"y": avg_pool2d(i["x"], **a)}),
    "global_avg_pool2d": Impl(lambda i, a: {"y": global_avg_pool2d(i["x"])}),
}
