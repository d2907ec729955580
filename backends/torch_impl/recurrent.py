"""The LSTM cell and the LSTM layer over a sequence (gate blocks i, f, g, o; one bias)."""

from __future__ import annotations

import torch

from nutshell.backends.torch_impl.activations import sigmoid
from nutshell.spec.signatures import Impl


def lstm_cell(x: torch.Tensor, h: torch.Tensor, c: torch.Tensor, w_ih: torch.Tensor, w_hh: torch.Tensor,
              b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One step: z = x·w_ihᵀ + h·w_hhᵀ + b split into i, f, g, o (H columns each);
    c' = σ(f)·c + σ(i)·tanh(g), h' = σ(o)·tanh(c').
    """
    z = x @ w_ih.T + h @ w_hh.T + b                                # (N, 4H)
    i, f, g, o = z.chunk(4, dim=1)                                 # 4 × (N, H)
    c_next = sigmoid(f) * c + sigmoid(i) * torch.tanh(g)
    return sigmoid(o) * torch.tanh(c_next), c_next


def lstm(x: torch.Tensor, h0: torch.Tensor, c0: torch.Tensor, w_ih: torch.Tensor, w_hh: torch.Tensor,
         b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """h_t, c_t = lstm_cell(x_t, h_{t−1}, c_{t−1}) for t = 1 … T; returns (y = [h_1 … h_T], h_T, c_T)."""
    h, c, ys = h0, c0, []
    for x_t in x.unbind(0):                                        # T × (N, I)
        h, c = lstm_cell(x_t, h, c, w_ih, w_hh, b)
        ys.append(h)
    return torch.stack(ys), h, c                                   # (T, N, H), (N, H), (N, H)


# concept -> Impl(forward(inputs, attrs)); no vjp: autograd differentiates the forward (backend.py)
CONCEPTS: dict[str, Impl] = {
    "lstm_cell": Impl(lambda i, a: dict(zip(("h", "c"), lstm_cell(**i), strict=True))),
    "lstm": Impl(lambda i, a: dict(zip(("y", "h", "c"), lstm(**i), strict=True))),
}
