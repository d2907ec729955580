"""Published architectures rebuilt with onnx.helper and seeded weights (nothing is downloaded).

>>> from nutshell.onnxio.tools import zoo as onnx_zoo
>>> full = onnx_zoo.googlenet()                      # Inception v1 at 224×224, 1000 classes
>>> narrow = onnx_zoo.googlenet(width=0.125, size=64, classes=10)   # same topology, for CI

GoogLeNet (Szegedy et al., "Going deeper with convolutions", 2014, Table 1), in the layout of
the Caffe model it was published as: a 7×7/2 convolution, 3×3/2 max pool, LRN, a 1×1 and a 3×3
convolution, LRN, 3×3/2 max pool, inception modules 3a–3b, max pool, 4a–4e, max pool, 5a–5b, an
average pool over the last 7×7 map, dropout (40 %), a fully connected layer and the softmax. Max
pools use ceil mode (112 → 56 → 28 → 14 → 7 at 224×224). Each inception module has four
branches concatenated on channels: 1×1; 1×1 → 3×3; 1×1 → 5×5; 3×3/1 max pool → 1×1, with a
ReLU after every convolution. ``width`` scales every channel count (at least 1 channel each);
``size`` is the input's height and width, and the average pool covers whatever the last map is.

Weights are He-uniform, biases uniform in ±0.05, drawn from one seeded generator and rounded to
float32, so every run builds the same model.
"""

from __future__ import annotations

import math

import numpy as np
import onnx
from onnx import helper, numpy_helper

from nutshell.spec import shapes

# (name, 1×1, 3×3 reduce, 3×3, 5×5 reduce, 5×5, pool projection): Table 1 of the paper
INCEPTION = (
    ("3a", 64, 96, 128, 16, 32, 32), ("3b", 128, 128, 192, 32, 96, 64), "pool",
    ("4a", 192, 96, 208, 16, 48, 64), ("4b", 160, 112, 224, 24, 64, 64), ("4c", 128, 128, 256, 24, 64, 64),
    ("4d", 112, 144, 288, 32, 64, 64), ("4e", 256, 160, 320, 32, 128, 128), "pool",
    ("5a", 256, 160, 320, 32, 128, 128), ("5b", 384, 192, 384, 48, 128, 128),
)
LRN = {"size": 5, "alpha": 1e-4, "beta": 0.75, "bias": 1.0}


class _Net:
    """Nodes and seeded initializers of one network; tracks the channels and spatial size."""

    def __init__(self, width: float, seed: int):
        self.width, self.rng = width, np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []

    def ch(self, c: int) -> int:
        return max(1, round(c * self.width))

    def node(self, op: str, inputs: list[str], name: str, **attrs) -> str:
        self.nodes.append(helper.make_node(op, inputs, [name], name=name, **attrs))
        return name

    def weight(self, name: str, shape: tuple[int, ...], fan_in: int) -> str:
        bound = math.sqrt(6.0 / fan_in)
        self.inits.append(numpy_helper.from_array(self.rng.uniform(-bound, bound, shape).astype(np.float32), name))
        return name

    def bias(self, name: str, n: int) -> str:
        self.inits.append(numpy_helper.from_array(self.rng.uniform(-0.05, 0.05, n).astype(np.float32), name))
        return name

    def conv(self, x: str, c_in: int, c_out: int, k: int, name: str, stride: int = 1, pad: int = 0) -> str:
        """Conv + ReLU."""
        w = self.weight(f"{name}_w", (c_out, c_in, k, k), c_in * k * k)
        y = self.node("Conv", [x, w, self.bias(f"{name}_b", c_out)], name, kernel_shape=[k, k],
                      strides=[stride, stride], pads=[pad] * 4)
        return self.node("Relu", [y], f"{name}_relu")

    def pool(self, x: str, name: str) -> str:
        return self.node("MaxPool", [x], name, kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1)

    def inception(self, x: str, c_in: int, spec: tuple) -> tuple[str, int]:
        name, o1, r3, o3, r5, o5, op = spec
        o1, r3, o3, r5, o5, op = (self.ch(c) for c in (o1, r3, o3, r5, o5, op))
        p = f"inception_{name}"
        b1 = self.conv(x, c_in, o1, 1, f"{p}_1x1")
        b3 = self.conv(self.conv(x, c_in, r3, 1, f"{p}_3x3_reduce"), r3, o3, 3, f"{p}_3x3", pad=1)
        b5 = self.conv(self.conv(x, c_in, r5, 1, f"{p}_5x5_reduce"), r5, o5, 5, f"{p}_5x5", pad=2)
        pooled = self.node("MaxPool", [x], f"{p}_pool", kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1])
        bp = self.conv(pooled, c_in, op, 1, f"{p}_pool_proj")
        return self.node("Concat", [b1, b3, b5, bp], f"{p}_output", axis=1), o1 + o3 + o5 + op


def _after_pool(n: int) -> int:
    return shapes.pool_out(n, 3, 2, 0, 0, 1, ceil=True)


def googlenet(width: float = 1.0, size: int = 224, classes: int = 1000, seed: int = 0) -> onnx.ModelProto:
    """GoogLeNet as an ONNX model (opset 13): input ``data`` (N, 3, size, size), output ``prob``."""
    net = _Net(width, seed)
    c1, c2r, c2 = net.ch(64), net.ch(64), net.ch(192)
    y = net.pool(net.conv("data", 3, c1, 7, "conv1_7x7_s2", stride=2, pad=3), "pool1_3x3_s2")
    y = net.node("LRN", [y], "pool1_norm1", **LRN)
    y = net.conv(net.conv(y, c1, c2r, 1, "conv2_3x3_reduce"), c2r, c2, 3, "conv2_3x3", pad=1)
    y = net.pool(net.node("LRN", [y], "conv2_norm2", **LRN), "pool2_3x3_s2")
    side = _after_pool(_after_pool(shapes.conv_out(size, 7, 2, 3, 3)))
    channels, pools = c2, 3
    for spec in INCEPTION:
        if spec == "pool":
            y, side, pools = net.pool(y, f"pool{pools}_3x3_s2"), _after_pool(side), pools + 1
        else:
            y, channels = net.inception(y, channels, spec)
    y = net.node("AveragePool", [y], "pool5_7x7_s1", kernel_shape=[side, side], strides=[1, 1])
    y = net.node("Dropout", [y], "pool5_drop_7x7_s1")
    y = net.node("Flatten", [y], "pool5_flatten", axis=1)
    w = net.weight("loss3_classifier_w", (classes, channels), channels)
    y = net.node("Gemm", [y, w, net.bias("loss3_classifier_b", classes)], "loss3_classifier", transB=1)
    net.node("Softmax", [y], "prob", axis=1)
    graph = helper.make_graph(
        net.nodes, f"googlenet_w{width:g}_s{size}", [helper.make_tensor_value_info("data", onnx.TensorProto.FLOAT,
                                                                                   ["N", 3, size, size])],
        [helper.make_tensor_value_info("prob", onnx.TensorProto.FLOAT, ["N", classes])], initializer=net.inits)
    opsets = [helper.make_opsetid("", 13)]
    model = helper.make_model(graph, opset_imports=opsets, ir_version=helper.find_min_ir_version_for(opsets),
                              producer_name="nutshell-zoo")
    onnx.checker.check_model(model, full_check=True)
    return model
