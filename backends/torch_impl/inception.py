"""The GoogLeNet inception module."""

from __future__ import annotations

import torch

from nutshell.backends.torch_impl.conv import conv2d
from nutshell.backends.torch_impl.pooling import max_pool2d
from nutshell.spec.signatures import Impl


def _conv_relu(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor, pad: int = 0) -> torch.Tensor:
    """relu(conv2d(x, w) + b), stride 1, ``pad`` zeros on every side."""
    return torch.relu(conv2d(x, w, b, pads=(pad, pad, pad, pad)))


def inception(x: torch.Tensor, w1: torch.Tensor, b1: torch.Tensor, w3r: torch.Tensor, b3r: torch.Tensor,
              w3: torch.Tensor, b3: torch.Tensor, w5r: torch.Tensor, b5r: torch.Tensor, w5: torch.Tensor,
              b5: torch.Tensor, wp: torch.Tensor, bp: torch.Tensor) -> torch.Tensor:
    """concat on channels of: 1×1; 1×1 → 3×3 pad 1; 1×1 → 5×5 pad 2; 3×3 max pool s1 p1 → 1×1.

    ReLU follows every convolution; (N, C, H, W) -> (N, o1 + o3 + o5 + op, H, W).
    """
    branches = (
        _conv_relu(x, w1, b1),
        _conv_relu(_conv_relu(x, w3r, b3r), w3, b3, pad=1),
        _conv_relu(_conv_relu(x, w5r, b5r), w5, b5, pad=2),
        _conv_relu(max_pool2d(x, (3, 3), (1, 1), (1, 1, 1, 1)), wp, bp),
    )
    return torch.cat(branches, dim=1)


# concept -> Impl(forward(inputs, attrs)); no vjp: autograd differentiates the forward (backend.py)
CONCEPTS: dict[str, Impl] = {"inception": Impl(lambda i, a: {"y": inception(**i)})}
