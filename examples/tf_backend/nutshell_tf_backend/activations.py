"""Activation functions and the normalising maps softmax / log-softmax."""

from __future__ import annotations

import tensorflow as tf

from nutshell.spec.signatures import Impl


def sigmoid(x: tf.Tensor) -> tf.Tensor:
    """σ(x) = 1 / (1 + e^(−x)); TensorFlow's kernel saturates to exactly 0 and 1 at ∓1000."""
    return tf.math.sigmoid(x)


def relu(x: tf.Tensor) -> tf.Tensor:
    """max(x, 0); the gradient passes only where x > 0, so relu'(0) = 0. NaN propagates."""
    return tf.nn.relu(x)


def tanh(x: tf.Tensor) -> tf.Tensor:
    """tanh(x) = (e^x − e^(−x)) / (e^x + e^(−x))."""
    return tf.math.tanh(x)


def softmax(x: tf.Tensor, axis: int = -1) -> tf.Tensor:
    """exp(x − m) / Σ exp(x − m) along ``axis``, m the maximum (the kernel subtracts it)."""
    return tf.nn.softmax(x, axis=axis)


def log_softmax(x: tf.Tensor, axis: int = -1) -> tf.Tensor:
    """(x − m) − log Σ exp(x − m) along ``axis``."""
    return tf.nn.log_softmax(x, axis=axis)


ACTIVATIONS = {"relu": relu, "sigmoid": sigmoid, "tanh": tanh, "identity": tf.identity}


# concept -> Impl(forward(inputs, attrs)); no vjp: tf.GradientTape differentiates the forward (backend.py)
CONCEPTS: dict[str, Impl] = {
    "sigmoid": Impl(lambda i, a: {"y": sigmoid(i["x"])}),
    "relu": Impl(lambda i, a: {"y": relu(i["x"])}),
    "tanh": Impl(lambda i, a: {"y": tanh(i["x"])}),
    "softmax": Impl(lambda i, a: {"y": softmax(i["x"], a["axis"])}),
    "log_softmax": Impl(lambda i, a: {"y": log_softmax(i["x"], a["axis"])}),
}
