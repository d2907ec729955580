"""The LSTM cell and the LSTM layer over a sequence (gate blocks i, f, g, o; one bias)."""

from __future__ import annotations

import tensorflow as tf

from nutshell.spec.signatures import Impl


def lstm_cell(x: tf.Tensor, h: tf.Tensor, c: tf.Tensor, w_ih: tf.Tensor, w_hh: tf.Tensor,
              b: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """One step: z = x·w_ihᵀ + h·w_hhᵀ + b split into i, f, g, o (H columns each);
    c' = σ(f)·c + σ(i)·tanh(g), h' = σ(o)·tanh(c').

    (Keras packs its gates i, f, c, o with its own weight layout, so its LSTM layer is not used.)
    """
    z = tf.linalg.matmul(x, w_ih, transpose_b=True) + tf.linalg.matmul(h, w_hh, transpose_b=True) + b   # (N, 4H)
    i, f, g, o = tf.split(z, 4, axis=1)                                                              # 4 × (N, H)
    c_next = tf.math.sigmoid(f) * c + tf.math.sigmoid(i) * tf.math.tanh(g)
    return tf.math.sigmoid(o) * tf.math.tanh(c_next), c_next


def lstm(x: tf.Tensor, h0: tf.Tensor, c0: tf.Tensor, w_ih: tf.Tensor, w_hh: tf.Tensor,
         b: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """h_t, c_t = lstm_cell(x_t, h_{t−1}, c_{t−1}) for t = 1 … T; returns (y = [h_1 … h_T], h_T, c_T)."""
    h, c, ys = h0, c0, []
    for x_t in tf.unstack(x, axis=0):                              # T × (N, I)
        h, c = lstm_cell(x_t, h, c, w_ih, w_hh, b)
        ys.append(h)
    return tf.stack(ys), h, c                                      # (T, N, H), (N, H), (N, H)


# concept -> Impl(forward(inputs, attrs)); no vjp: tf.GradientTape differentiates the forward (backend.py)
CONCEPTS: dict[str, Impl] = {
    "lstm_cell": Impl(lambda i, a: dict(zip(("h", "c"), lstm_cell(**i), strict=True))),
    "lstm": Impl(lambda i, a: dict(zip(("y", "h", "c"), lstm(**i), strict=True))),
}
