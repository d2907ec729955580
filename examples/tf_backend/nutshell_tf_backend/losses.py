"""Batch-mean losses computed from logits."""

from __future__ import annotations

import tensorflow as tf

from nutshell.spec.signatures import Impl


@tf.custom_gradient
def _stable_bce(z: tf.Tensor, t: tf.Tensor):
    """ℓ(z, t) = max(z, 0) − z·t + log1p(exp(−|z|)) elementwise; ∂ℓ/∂z = σ(z) − t, ∂ℓ/∂t = −z.

    The gradient is given in closed form: differentiating max and |·| at z = 0 would give −t
    instead of σ(0) − t = 1/2 − t.
    """
    loss = tf.nn.relu(z) - z * t + tf.math.log1p(tf.math.exp(-tf.math.abs(z)))

    def grad(g: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        return g * (tf.math.sigmoid(z) - t), -g * z
    return loss, grad


def binary_cross_entropy(logits: tf.Tensor, targets: tf.Tensor) -> tf.Tensor:
    """mean_n(max(z, 0) − z·t + log1p(exp(−|z|))): finite at |z| = 100 in either dtype."""
    return tf.math.reduce_mean(_stable_bce(logits, targets))


def cross_entropy(logits: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
    """mean_n(−log_softmax(logits)[n, labels[n]]): (N, K), (N,) int64 -> ()."""
    picked = tf.gather(tf.nn.log_softmax(logits, axis=-1), labels, axis=1, batch_dims=1)   # (N,)
    return -tf.math.reduce_mean(picked)


# concept -> Impl(forward(inputs, attrs)); no vjp: tf.GradientTape differentiates the forward (backend.py)
CONCEPTS: dict[str, Impl] = {
    "binary_cross_entropy": Impl(lambda i, a: {"loss": binary_cross_entropy(i["logits"], i["targets"])}),
    "cross_entropy": Impl(lambda i, a: {"loss": cross_entropy(i["logits"], i["labels"])}),
}
