"""The GoogLeNet inception module as ONNX graphs, forward and vjp, composed from conv.py and
pooling.py:

    y = concat_C( relu(conv1x1(x)),
                  relu(conv3x3, pad 1(relu(conv1x1(x)))),
                  relu(conv5x5, pad 2(relu(conv1x1(x)))),
                  relu(conv1x1(max_pool 3x3, stride 1, pad 1(x))) )

The vjp splits gy by branch, runs each branch backward (ReLU mask, conv2d vjp, max-pool vjp)
and adds the four contributions to gx.
"""

from __future__ import annotations

from nutshell.backends.onnx_impl.activations import relu_grad
from nutshell.backends.onnx_impl.conv import conv, conv_grad
from nutshell.backends.onnx_impl.graph import Graph
from nutshell.backends.onnx_impl.pooling import max_pool, max_pool_grad
from nutshell.spec.signatures import Impl

POOL = {"kernel": [3, 3], "stride": [1, 1], "pads": [1, 1, 1, 1], "dilation": [1, 1], "ceil_mode": False}


def _conv_attrs(pad: int) -> dict:
    return {"stride": [1, 1], "pads": [pad] * 4, "dilation": [1, 1], "groups": 1}


# the branches: (input, weight, bias, pad) of each conv in forward order; "a<w>" is relu(conv(·, w))
BRANCHES = (
    (("x", "w1", "b1", 0),),
    (("x", "w3r", "b3r", 0), ("aw3r", "w3", "b3", 1)),
    (("x", "w5r", "b5r", 0), ("aw5r", "w5", "b5", 2)),
    (("pool", "wp", "bp", 0),),
)


def _forward(g: Graph, v: dict) -> dict:
    """Every value by name: "z<w>" before and "a<w>" after the ReLU of each conv, and the pool."""
    vals = {"x": v["x"], "pool": max_pool(g, v["x"], g.shapes["x"], POOL)}
    for branch in BRANCHES:
        for src, w, b, pad in branch:
            vals["z" + w] = conv(g, vals[src], v[w], v[b], _conv_attrs(pad), _shape(g, src), g.shapes[w])
            vals["a" + w] = g.op("Relu", vals["z" + w])
    return vals


def _shape(g: Graph, name: str) -> tuple:
    """Shape of a conv's input: x, the pool (x's shape) or a reduce conv's output."""
    n, c, h, w = g.shapes["x"]
    return (n, g.shapes[name[1:]][0], h, w) if name.startswith("a") else (n, c, h, w)


def _inception(g: Graph, v: dict, attrs: dict) -> dict:
    vals = _forward(g, v)
    return {"y": g.op("Concat", *(vals["a" + branch[-1][1]] for branch in BRANCHES), axis=1)}


def _inception_vjp(g: Graph, v: dict, cot: dict, attrs: dict) -> dict:
    vals = _forward(g, v)
    sizes = [g.shapes[branch[-1][1]][0] for branch in BRANCHES]
    parts = g.op("Split", cot["y"], g.ints(sizes), axis=1, outputs=4)
    grads, gx = {}, []
    for branch, gy in zip(BRANCHES, parts, strict=True):
        for src, w, b, pad in reversed(branch):
            gz = relu_grad(g, vals["z" + w], gy)
            step = conv_grad(g, vals[src], v[w], gz, _shape(g, src), g.shapes[w], _conv_attrs(pad), True)
            grads[w], grads[b], gy = step["w"], step["b"], step["x"]
        gx.append(gy if branch[0][0] == "x" else max_pool_grad(g, v["x"], gy, g.shapes["x"], POOL))
    grads["x"] = g.op("Sum", *gx)
    return grads


CONCEPTS: dict[str, Impl] = {"inception": Impl(_inception, _inception_vjp)}
