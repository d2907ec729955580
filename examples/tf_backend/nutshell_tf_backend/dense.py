"""Dense transformations and the units, layers and regressions built on them."""

from __future__ import annotations

import tensorflow as tf

from nutshell.spec.signatures import Impl
from nutshell_tf_backend.activations import ACTIVATIONS
from nutshell_tf_backend.pooling import first_max


def dense(x: tf.Tensor, w: tf.Tensor, b: tf.Tensor | None = None) -> tf.Tensor:
    """y = x · w + b: (N, I) · (I, O) + (O,) -> (N, O)."""
    y = tf.linalg.matmul(x, w)
    return y if b is None else y + b


def layer(x: tf.Tensor, w: tf.Tensor, b: tf.Tensor, activation: str = "relu") -> tf.Tensor:
    """y = act(x · w + b)."""
    return ACTIVATIONS[activation](dense(x, w, b))


def maxout(x: tf.Tensor, w: tf.Tensor, b: tf.Tensor, pieces: int = 2) -> tf.Tensor:
    """y = z.reshape(N, O, k).max(−1), z = x · w + b; ties: the first piece wins and alone gets gradient."""
    z = dense(x, w, b)
    return first_max(tf.reshape(z, (z.shape[0], z.shape[1] // pieces, pieces)))    # (N, O, k) -> (N, O)


def logistic_regression(x: tf.Tensor, w: tf.Tensor, b: tf.Tensor) -> tf.Tensor:
    """p = σ(x · w + b): (N, I) · (I,) + () -> (N,)."""
    return tf.math.sigmoid(tf.linalg.matvec(x, w) + b)


def softmax_regression(x: tf.Tensor, w: tf.Tensor, b: tf.Tensor) -> tf.Tensor:
    """p = softmax(x · w + b) along the classes: (N, K)."""
    return tf.nn.softmax(dense(x, w, b), axis=-1)


# concept -> Impl(forward(inputs, attrs)); no vjp: tf.GradientTape differentiates the forward (backend.py)
CONCEPTS: dict[str, Impl] = {
    "dense": Impl(lambda i, a: {"y": dense(i["x"], i["w"], i.get("b"))}),
    "layer": Impl(lambda i, a: {"y": layer(i["x"], i["w"], i["b"], a["activation"])}),
    "maxout": Impl(lambda i, a: {"y": maxout(i["x"], i["w"], i["b"], a["pieces"])}),
    "logistic_regression": Impl(lambda i, a: {"p": logistic_regression(i["x"], i["w"], i["b"])}),
    "softmax_regression": Impl(lambda i, a: {"p": softmax_regression(i["x"], i["w"], i["b"])}),
}
