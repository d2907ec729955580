"""Local response normalisation across channels (ONNX LRN)."""

from __future__ import annotations

import torch
import torch.nn.functional as nnf

from nutshell.spec.signatures import Impl


def lrn(x: torch.Tensor, size: int = 5, alpha: float = 1e-4, beta: float = 0.75, bias: float = 1.0) -> torch.Tensor:
    """y = x / (bias + alpha/size · s)^beta, s[c] = Σ x[i]² for i in [c − ⌊(size−1)/2⌋, c + ⌈(size−1)/2⌉] ∩ [0, C).

    The squares get ⌊(size−1)/2⌋ zero channels before and ⌈(size−1)/2⌉ after, then every
    window of ``size`` consecutive channels is summed (torch's own local_response_norm
    centres even windows the other way, so it is not used).
    """
    before, after = (size - 1) // 2, size // 2
    sq = nnf.pad(x * x, (0, 0, 0, 0, before, after))               # (N, C + size − 1, H, W)
    s = sq.unfold(1, size, 1).sum(-1)                              # (N, C, H, W)
    return x / (bias + alpha / size * s) ** beta


# concept -> Impl(forward(inputs, attrs)); no vjp: autograd differentiates the forward (backend.py)
CONCEPTS: dict[str, Impl] = {"lrn": Impl(lambda i, a: {"y": lrn(i["x"], **a)})}
