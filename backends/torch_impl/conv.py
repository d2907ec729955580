"""2-D convolutions: cross-correlation, true convolution, and the FFT route to the same result."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as nnf

from nutshell.spec.signatures import Impl


def pad2d(x: torch.Tensor, pads: Sequence[int], value: float = 0.0) -> torch.Tensor:
    """Pad (or, for negative entries, crop) the last two axes by pads = [top, left, bottom, right]."""
    top, left, bottom, right = pads
    if not any(pads):
        return x
    return nnf.pad(x, (left, right, top, bottom), value=value)


def conv2d(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None = None, stride: Sequence[int] = (1, 1),
           pads: Sequence[int] = (0, 0, 0, 0), dilation: Sequence[int] = (1, 1), groups: int = 1) -> torch.Tensor:
    """y[n,o,i,j] = b[o] + Σ_{c,p,q} w[o,c,p,q] · xpad[n, g·C/G + c, i·sh + p·dh, j·sw + q·dw].

    Cross-correlation (the kernel is not flipped). Symmetric pads go to torch directly,
    asymmetric ones through an explicit zero border.
    """
    top, left, bottom, right = pads
    if (top, left) == (bottom, right):
        return nnf.conv2d(x, w, b, tuple(stride), (top, left), tuple(dilation), groups)
    return nnf.conv2d(pad2d(x, pads), w, b, tuple(stride), 0, tuple(dilation), groups)


def convolve2d(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None = None, stride: Sequence[int] = (1, 1),
               pads: Sequence[int] = (0, 0, 0, 0), dilation: Sequence[int] = (1, 1), groups: int = 1) -> torch.Tensor:
    """True convolution: conv2d(x, w[:, :, ::−1, ::−1])."""
    return conv2d(x, w.flip((2, 3)), b, stride, pads, dilation, groups)


def dilate_kernel(w: torch.Tensor, dilation: Sequence[int]) -> torch.Tensor:
    """Spread the taps d apart with zeros between them: (O, Cg, kh, kw) -> (O, Cg, dh(kh−1)+1, dw(kw−1)+1)."""
    dh, dw = dilation
    if (dh, dw) == (1, 1):
        return w
    o, cg, kh, kw = w.shape
    wd = w.new_zeros(o, cg, dh * (kh - 1) + 1, dw * (kw - 1) + 1)
    wd[:, :, ::dh, ::dw] = w
    return wd


HALF = (torch.float16, torch.bfloat16)


def conv2d_fft(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None = None, stride: Sequence[int] = (1, 1),
               pads: Sequence[int] = (0, 0, 0, 0), dilation: Sequence[int] = (1, 1), groups: int = 1) -> torch.Tensor:
    """conv2d through the convolution theorem.

    With xp the zero-padded input (Hp × Wp) and k the dilated kernel (kh × kw), the linear
    convolution xp ∗ flip(k) has size (Hp + kh − 1) × (Wp + kw − 1); transforms of that size
    make the circular product equal to it (no wrap-around). Its entry [i + kh − 1, j + kw − 1]
    is Σ_{p,q} xp[i + p, j + q] k[p, q], the cross-correlation; the stride subsamples it.
    Channels contract inside each group in the frequency domain. torch.fft has no float16 or
    bfloat16 kernels on the CPU ("Unsupported dtype Half"): such inputs are transformed in float32
    and the result rounded once into their format (TorchBackend.widened says so).
    """
    if x.dtype in HALF:
        wide = conv2d_fft(x.float(), w.float(), None if b is None else b.float(), stride, pads, dilation, groups)
        return wide.to(x.dtype)
    xp = pad2d(x, pads)                                           # (N, C, Hp, Wp)
    wd = dilate_kernel(w, dilation)                               # (O, Cg, kh, kw)
    n, _, hp, wp = xp.shape
    o, cg, kh, kw = wd.shape
    size = (hp + kh - 1, wp + kw - 1)
    if n == 0:  # no transform of an empty batch; keep x and w in the graph for their (empty, zero) gradients
        out = (0, o, (hp - kh) // stride[0] + 1, (wp - kw) // stride[1] + 1)
        y = xp.new_zeros(out) + xp.sum() * 0 + wd.sum() * 0
        return y if b is None else y + b[:, None, None]
    xf = torch.fft.rfft2(xp, s=size)                              # (N, C, P1, P2//2+1)
    wf = torch.fft.rfft2(wd.flip((2, 3)), s=size)                 # (O, Cg, P1, P2//2+1)
    xf = xf.reshape(n, groups, cg, *xf.shape[-2:])                # (N, G, Cg, P1, F)
    wf = wf.reshape(groups, o // groups, cg, *wf.shape[-2:])      # (G, O/G, Cg, P1, F)
    yf = torch.einsum("ngcuv,gocuv->ngouv", xf, wf)               # (N, G, O/G, P1, F)
    full = torch.fft.irfft2(yf.reshape(n, o, *yf.shape[-2:]), s=size)   # (N, O, P1, P2)
    y = full[:, :, kh - 1:hp:stride[0], kw - 1:wp:stride[1]]      # (N, O, oH, oW)
    return y if b is None else y + b[:, None, None]


# concept -> Impl(forward(inputs, attrs)); no vjp: autograd differentiates the forward (backend.py)
CONCEPTS: dict[str, Impl] = {
    "conv2d": Impl(lambda i, a: {"y": conv2d(i["x"], i["w"], i.get("b"), **a)}),
    "convolve2d": Impl(lambda i, a: {"y": convolve2d(i["x"], i["w"], i.get("b"), **a)}),
    "conv2d_fft": Impl(lambda i, a: {"y": conv2d_fft(i["x"], i["w"], i.get("b"), **a)}),
}
