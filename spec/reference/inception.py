"""The GoogLeNet inception module, composed from the oracle's conv2d, max pool and ReLU.

Four branches on the same x, concatenated on channels in this order:

    relu(conv1x1(x; w1, b1))
    relu(conv3x3 pad 1(relu(conv1x1(x; w3r, b3r)); w3, b3))
    relu(conv5x5 pad 2(relu(conv1x1(x; w5r, b5r)); w5, b5))
    relu(conv1x1(max_pool 3x3 stride 1 pad 1(x); wp, bp))

Its vjp runs each branch's chain backwards (relu', then conv2d's vjp per stage, then max pool's
for the last branch) and sums the four input gradients: gx = Σ_branches gx_branch.
"""

from __future__ import annotations

from nutshell.spec.reference import tracked
from nutshell.spec.reference.activations import relu, relu_grad
from nutshell.spec.reference.conv import conv2d, conv2d_grad
from nutshell.spec.reference.pooling import max_pool2d, max_pool2d_grad
from nutshell.spec.reference.tracked import T
from nutshell.spec.signatures import Impl

CHAINS = (("w1",), ("w3r", "w3"), ("w5r", "w5"), ("wp",))
"""Each branch's convolutions in order (the bias of wN is bN); "wp" follows the max pool."""

PADS = {"w1": 0, "w3r": 0, "w3": 1, "w5r": 0, "w5": 2, "wp": 0}

POOL = {"kernel": (3, 3), "stride": (1, 1), "pads": (1, 1, 1, 1), "dilation": (1, 1), "ceil_mode": False}


def _bias(w_name: str) -> str:
    return "b" + w_name[1:]


def _branch(p: dict[str, T], chain: tuple[str, ...]) -> list[tuple[str, T, T]]:
    """(w name, stage input, pre-activation z) for each convolution of one branch."""
    a = max_pool2d(p["x"], **POOL)[0] if chain[0] == "wp" else p["x"]
    stages = []
    for name in chain:
        z = conv2d(a, p[name], p[_bias(name)], pads=(PADS[name],) * 4)
        stages.append((name, a, z))
        a = relu(z)
    return stages


def inception(p: dict[str, T]) -> T:
    """y = the four branch outputs relu(z_last) concatenated on channels."""
    return tracked.concat([relu(_branch(p, chain)[-1][2]) for chain in CHAINS], axis=1)


def inception_grad(p: dict[str, T], gy: T) -> dict[str, T]:
    """Per branch, from its slice of gy: gz = gy·[z > 0], then conv2d's vjp gives gw, gb and the
    stage input's cotangent, repeated down the chain (and through the max pool for the last)."""
    grads, gxs, start = {}, [], 0
    for chain in CHAINS:
        width = p[chain[-1]].shape[0]
        g = gy[:, start:start + width]
        start += width
        for name, a, z in reversed(_branch(p, chain)):
            cg = conv2d_grad(a, p[name], p[_bias(name)], relu_grad(z, g), pads=(PADS[name],) * 4)
            grads[name], grads[_bias(name)], g = cg["w"], cg["b"], cg["x"]
        gxs.append(max_pool2d_grad(p["x"], g, **POOL) if chain[0] == "wp" else g)
    grads["x"] = tracked.stack(gxs).sum(axis=0)
    return grads


CONCEPTS: dict[str, Impl] = {
    "inception": Impl(lambda i, a: {"y": inception(i)}, lambda i, g, a: inception_grad(i, g["y"])),
}
