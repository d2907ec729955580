"""The GoogLeNet inception module, composed from this backend's own conv, ReLU and max pool.

Four branches read the same x and are concatenated on channels, in this order:

    1×1:        relu(conv(x, w1))
    3×3:        relu(conv(relu(conv(x, w3r)), w3, pad 1))
    5×5:        relu(conv(relu(conv(x, w5r)), w5, pad 2))
    pool:       relu(conv(max_pool 3×3 stride 1 pad 1 (x), wp))

Backward splits gy by branch, walks each chain of (conv, ReLU) stages in reverse with the same
ops' vjps, sends the pool branch's gradient through the max pool, and adds the four gradients of x.
The forward pass keeps each convolution's columns (:func:`.conv.conv2d_forward_saving`) for its
backward. The vjp runs the module forward again for what it needs; a model (model.py) keeps it
from its own forward pass instead (:func:`forward_saving`, :func:`vjp_saved`). The same code runs
on the (C, H, W, N) planes of a CPU model step (:mod:`.planes`), given their ops (:class:`Ops`).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from nutshell.backends.cupy_impl.activations import relu, relu_vjp
from nutshell.backends.cupy_impl.conv import conv2d_backward, conv2d_forward_saving
from nutshell.backends.cupy_impl.im2col import Window, current_budget
from nutshell.backends.cupy_impl.pooling import max_pool_backward, max_pool_forward
from nutshell.backends.cupy_impl.xp import array_module
from nutshell.spec.signatures import Impl

Arrays = dict[str, Any]

@dataclass(frozen=True)
class Ops:
    """The module's building blocks for one layout of its activations."""

    conv_forward: Callable      # (x, w, b, attrs, budget) -> (y, what conv_backward reuses)
    conv_backward: Callable     # (x, w, gy, attrs, budget, reused, need_x) -> (gx or None, gw)
    pool_forward: Callable      # (x, window) -> (y, saved)
    pool_backward: Callable     # (gy, saved, window) -> gx
    channels: int               # the channel axis; the (H, W) axes follow it


NCHW = Ops(conv2d_forward_saving, conv2d_backward, max_pool_forward, max_pool_backward, 1)

# (weight, bias, padding) of each stage, branch by branch; the last branch starts with the pool.
CHAINS = (
    (("w1", "b1", 0),),
    (("w3r", "b3r", 0), ("w3", "b3", 1)),
    (("w5r", "b5r", 0), ("w5", "b5", 2)),
    (("wp", "bp", 0),),
)


def _conv_attrs(pad: int) -> dict:
    return {"stride": [1, 1], "pads": [pad] * 4, "dilation": [1, 1], "groups": 1}


def _pool_window(x: Any, ops: Ops) -> Window:
    return Window.make(x.shape[ops.channels + 1:ops.channels + 3], (3, 3), (1, 1), (1, 1, 1, 1), (1, 1))


def _chain(h: Any, stages: tuple, inputs: Arrays, budget: int, ops: Ops) -> tuple[Any, list]:
    """Run (conv, ReLU) stages from h; the tape keeps each stage's input, pre-activation and
    columns (None where they were over the budget)."""
    tape = []
    for w, b, pad in stages:
        a, cols = ops.conv_forward(h, inputs[w], inputs[b], _conv_attrs(pad), budget)
        tape.append((h, a, cols))
        h = relu(a)
    return h, tape


def _chain_vjp(g: Any, stages: tuple, tape: list, inputs: Arrays, budget: int, grads: Arrays,
               need_input: bool, ops: Ops) -> Any | None:
    """Walk the stages back from the branch output's gradient g; returns the gradient of its
    input, or None when not ``need_input``."""
    for i, ((w, b, pad), (h, a, cols)) in reversed(list(enumerate(zip(stages, tape, strict=True)))):
        ga = relu_vjp(a, g)
        g, grads[w] = ops.conv_backward(h, inputs[w], ga, _conv_attrs(pad), budget, cols, need_input or i > 0)
        grads[b] = ga.sum(axis=tuple(k for k in range(4) if k != ops.channels))
    return g


def _branches(inputs: Arrays, budget: int, ops: Ops) -> tuple[list, list, Any]:
    """The four branch outputs, their tapes, and what the pool's backward needs."""
    x = inputs["x"]
    pooled, saved = ops.pool_forward(x, _pool_window(x, ops))
    outs, tapes = [], []
    for stages, start in zip(CHAINS, (x, x, x, pooled), strict=True):
        out, tape = _chain(start, stages, inputs, budget, ops)
        outs.append(out)
        tapes.append(tape)
    return outs, tapes, saved


def forward_saving(inputs: Arrays, attrs: dict, ops: Ops = NCHW) -> tuple[Arrays, Any]:
    """The outputs, and what :func:`vjp_saved` needs: the branch tapes, the pool's and the branch widths."""
    outs, tapes, pool = _branches(inputs, current_budget(), ops)
    widths = [o.shape[ops.channels] for o in outs]
    return {"y": array_module(inputs["x"]).concatenate(outs, axis=ops.channels)}, (tapes, pool, widths)


def vjp_saved(inputs: Arrays, saved: Any, cots: Arrays, attrs: dict, wanted: set[str], ops: Ops = NCHW) -> Arrays:
    """The vjp from what :func:`forward_saving` kept, without running the module again; the
    gradient of x only when "x" is ``wanted``."""
    xp = array_module(inputs["x"])
    tapes, pool, widths = saved
    edges = list(itertools.accumulate(widths[:-1]))                          # channel offsets of branches 2-4
    grads: Arrays = {}
    gxs = [_chain_vjp(g, stages, tape, inputs, current_budget(), grads, "x" in wanted, ops)
           for g, stages, tape in zip(xp.split(cots["y"], edges, axis=ops.channels), CHAINS, tapes, strict=True)]
    if "x" in wanted:
        gxs[-1] = ops.pool_backward(gxs[-1], pool, _pool_window(inputs["x"], ops))
        gx = gxs[0] + gxs[1]                          # then in place, in the same order: no more temporaries
        gx += gxs[2]
        gx += gxs[3]
        grads["x"] = gx
    return grads


def inception(inputs: Arrays, attrs: dict) -> Arrays:
    return forward_saving(inputs, attrs)[0]


def inception_vjp(inputs: Arrays, cots: Arrays, attrs: dict) -> Arrays:
    return vjp_saved(inputs, forward_saving(inputs, attrs)[1], cots, attrs, {"x"})


CONCEPTS: dict[str, Impl] = {"inception": Impl(inception, inception_vjp)}
