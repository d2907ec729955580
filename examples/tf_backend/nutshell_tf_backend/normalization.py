"""Local response normalisation across channels (ONNX LRN).

``tf.nn.local_response_normalization`` is not used: it normalises the last axis with a
symmetric radius (so no even sizes) and returns float32 for float64 input.
"""

from __future__ import annotations

import tensorflow as tf

from nutshell.spec.signatures import Impl


def lrn(x: tf.Tensor, size: int = 5, alpha: float = 1e-4, beta: float = 0.75, bias: float = 1.0) -> tf.Tensor:
    """y = x / (bias + alpha/size · s)^beta, s[c] = Σ x[i]² for i in [c − ⌊(size−1)/2⌋, c + ⌈(size−1)/2⌉] ∩ [0, C).

    The squares get ⌊(size−1)/2⌋ zero channels before and ⌈(size−1)/2⌉ after; the sum of the
    ``size`` shifted copies is then every window of consecutive channels.
    """
    channels = x.shape[1]
    sq = tf.pad(x * x, [[0, 0], [(size - 1) // 2, size // 2], [0, 0], [0, 0]])   # (N, C + size − 1, H, W)
    s = tf.math.add_n([sq[:, i:i + channels] for i in range(size)])            # (N, C, H, W)
    return x / tf.math.pow(bias + alpha / size * s, beta)


# concept -> Impl(forward(inputs, attrs)); no vjp: tf.GradientTape differentiates the forward (backend.py)
CONCEPTS: dict[str, Impl] = {"lrn": Impl(lambda i, a: {"y": lrn(i["x"], **a)})}
