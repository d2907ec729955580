"""The GoogLeNet inception module."""

from __future__ import annotations

import tensorflow as tf

from nutshell.spec.signatures import Impl
from nutshell_tf_backend.conv import conv2d
from nutshell_tf_backend.pooling import max_pool2d


def _conv_relu(x: tf.Tensor, w: tf.Tensor, b: tf.Tensor, pad: int = 0) -> tf.Tensor:
    """relu(conv2d(x, w) + b), stride 1, ``pad`` zeros on every side."""
    return tf.nn.relu(conv2d(x, w, b, pads=(pad, pad, pad, pad)))


def inception(x: tf.Tensor, w1: tf.Tensor, b1: tf.Tensor, w3r: tf.Tensor, b3r: tf.Tensor,
              w3: tf.Tensor, b3: tf.Tensor, w5r: tf.Tensor, b5r: tf.Tensor, w5: tf.Tensor,
              b5: tf.Tensor, wp: tf.Tensor, bp: tf.Tensor) -> tf.Tensor:
    """concat on channels of: 1×1; 1×1 → 3×3 pad 1; 1×1 → 5×5 pad 2; 3×3 max pool s1 p1 → 1×1.

    ReLU follows every convolution; (N, C, H, W) -> (N, o1 + o3 + o5 + op, H, W).
    """
    branches = (
        _conv_relu(x, w1, b1),
        _conv_relu(_conv_relu(x, w3r, b3r), w3, b3, pad=1),
        _conv_relu(_conv_relu(x, w5r, b5r), w5, b5, pad=2),
        _conv_relu(max_pool2d(x, (3, 3), (1, 1), (1, 1, 1, 1)), wp, bp),
    )
    return tf.concat(branches, axis=1)


# concept -> Impl(forward(inputs, attrs)); no vjp: tf.GradientTape differentiates the forward (backend.py)
CONCEPTS: dict[str, Impl] = {"inception": Impl(lambda i, a: {"y": inception(**i)})}
