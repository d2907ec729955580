"""The second oracle: every concept in float64 TensorFlow, to confirm the NumPy reference's goldens.

TensorFlow is not a backend of nutshell. This module recomputes each golden with another
library's kernels (convolutions, softmax, matmul, elementwise math) and its autodiff
(``tf.GradientTape``), so that a slip in ``spec/reference`` cannot pass unnoticed.

Everything stays float64 end to end. TF CPU's ``max_pool2d`` and ``local_response_normalization``
return float32 for float64 input and ``rfft2d`` returns complex64, so pooling, LRN and the FFT
convolution are built here from primitives that keep float64 (strided slices, ``argmax`` +
``gather``, sums, ``conv2d``). TF CPU has no NCHW ``conv2d`` and no dilated ``conv2d`` gradient,
so convolutions run in NHWC on a kernel with explicit zeros between its taps.

>>> from nutshell.spec import tf_oracle
>>> tf_oracle.forward("relu", {"x": np.array([-1.0, 2.0])}, {})["y"]
array([0., 2.])
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Callable
from typing import Any

import numpy as np

from nutshell.errors import BackendUnavailable
from nutshell.spec import load, shapes

Tensors = dict[str, Any]       # name -> tf.Tensor
Op = Callable[[Tensors, dict], Tensors]


@functools.cache
def tensorflow() -> Any:
    """The ``tensorflow`` module, imported on first use with its start-up logging silenced."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")   # plain Eigen kernels, and no start-up banner
    try:
        import tensorflow as tf
    except ImportError:
        raise BackendUnavailable("the TensorFlow oracle needs TensorFlow: pip install 'nutshell[tf]'") from None
    tf.get_logger().setLevel("ERROR")
    return tf


# --- public API -------------------------------------------------------------------------------

def forward(concept: str, inputs: dict[str, np.ndarray], attrs: dict) -> dict[str, np.ndarray]:
    """Outputs of ``concept`` for validated float64 ``inputs`` and FULL ``attrs``."""
    tf = tensorflow()
    t = {k: tf.constant(v) for k, v in inputs.items()}
    return {k: _to_float64(concept, k, y) for k, y in OPS[concept](t, attrs).items()}


def vjp(concept: str, inputs: dict[str, np.ndarray], cotangents: dict[str, np.ndarray],
        attrs: dict) -> dict[str, np.ndarray]:
    """Σ_out cotangent[out] · ∂out/∂input, one gradient per differentiable input that was given.

    A missing cotangent counts as zeros.
    """
    tf = tensorflow()
    t = {k: tf.constant(v) for k, v in inputs.items()}
    wrt = [k for k in load().concept(concept).differentiable if k in t]
    with tf.GradientTape() as tape:
        tape.watch([t[k] for k in wrt])
        out = OPS[concept](t, attrs)
    cots = [tf.constant(cotangents[k]) if k in cotangents else tf.zeros_like(y) for k, y in out.items()]
    grads = tape.gradient(list(out.values()), [t[k] for k in wrt], output_gradients=cots,
                          unconnected_gradients=tf.UnconnectedGradients.ZERO)
    return {k: _to_float64(concept, k, tf.convert_to_tensor(g)) for k, g in zip(wrt, grads, strict=True)}


def _to_float64(concept: str, name: str, y: Any) -> np.ndarray:
    """The tensor as NumPy, refusing anything that is not float64 (the oracle's one promise)."""
    a = y.numpy()
    if a.dtype != np.float64:
        raise TypeError(f"tf_oracle: {concept}: '{name}' came out {a.dtype}, not float64")
    return a


# --- activations ------------------------------------------------------------------------------

ACTIVATIONS = {
    "relu": lambda z: tensorflow().nn.relu(z),        # relu'(0) = 0: TF's ReluGrad tests z > 0
    "sigmoid": lambda z: tensorflow().sigmoid(z),
    "tanh": lambda z: tensorflow().tanh(z),
    "identity": lambda z: z,
}


def _first_max(z: Any) -> Any:
    """max over the last axis, taken as z[..., argmax]: ties go to the first index, and so does
    the gradient (a gather sends it to one element). A NaN anywhere on the axis gives NaN."""
    tf = tensorflow()
    y = tf.gather(z, tf.argmax(z, axis=-1), batch_dims=z.shape.rank - 1)
    return tf.where(tf.reduce_any(tf.math.is_nan(z), axis=-1), tf.constant(np.nan, z.dtype), y)


def _softmax(t: Tensors, attrs: dict) -> Tensors:
    """y_i = exp(x_i − m) / Σ_j exp(x_j − m) along ``axis``."""
    return {"y": tensorflow().nn.softmax(t["x"], axis=attrs["axis"])}


def _log_softmax(t: Tensors, attrs: dict) -> Tensors:
    """y_i = (x_i − m) − log Σ_j exp(x_j − m) along ``axis``."""
    return {"y": tensorflow().nn.log_softmax(t["x"], axis=attrs["axis"])}


# --- dense, units, regressions ----------------------------------------------------------------

def _affine(t: Tensors) -> Any:
    """x · w (+ b): (N, I) · (I, O) -> (N, O), or (N, I) · (I,) -> (N,)."""
    tf = tensorflow()
    z = tf.matmul(t["x"], t["w"]) if t["w"].shape.rank == 2 else tf.linalg.matvec(t["x"], t["w"])
    return z + t["b"] if "b" in t else z


def _layer(t: Tensors, attrs: dict) -> Tensors:
    """y = act(x · w + b)."""
    return {"y": ACTIVATIONS[attrs["activation"]](_affine(t))}


def _maxout(t: Tensors, attrs: dict) -> Tensors:
    """y = (x · w + b).reshape(N, O, k).max(−1), ties to the first piece."""
    z = _affine(t)
    n, ok = z.shape
    return {"y": _first_max(tensorflow().reshape(z, (n, ok // attrs["pieces"], attrs["pieces"])))}  # (N, O, k)


def _binary_cross_entropy(t: Tensors, attrs: dict) -> Tensors:
    """mean(max(z, 0) − z·t + log1p(exp(−|z|))).

    The two halves z ≥ 0 and z < 0 are written out separately (each with a safe argument), so
    that the gradient at z = 0 is σ(0) − t = ½ − t rather than a one-sided subgradient.
    """
    tf = tensorflow()
    z, y = t["logits"], t["targets"]
    pos = z >= 0
    zp, zn = tf.where(pos, z, 0.0), tf.where(pos, 0.0, z)
    softplus = tf.where(pos, zp + tf.math.log1p(tf.exp(-zp)), tf.math.log1p(tf.exp(zn)))
    return {"loss": tf.reduce_mean(softplus - z * y)}


def _cross_entropy(t: Tensors, attrs: dict) -> Tensors:
    """mean_n(−log_softmax(logits)[n, labels[n]])."""
    tf = tensorflow()
    picked = tf.gather(tf.nn.log_softmax(t["logits"], axis=-1), t["labels"], batch_dims=1)  # (N,)
    return {"loss": -tf.reduce_mean(picked)}


# --- convolution ------------------------------------------------------------------------------

def _dilate(w: Any, dilation: list[int]) -> Any:
    """HWIO kernel with d − 1 zero rows/columns between taps: (kh, kw, I, O) -> (d·(k−1)+1, …, I, O)."""
    tf = tensorflow()
    (dh, dw), (kh, kw, ci, co) = dilation, w.shape
    w = tf.pad(tf.reshape(w, (kh, 1, kw, 1, ci, co)), [[0, 0], [0, dh - 1], [0, 0], [0, dw - 1], [0, 0], [0, 0]])
    return tf.reshape(w, (kh * dh, kw * dw, ci, co))[: dh * (kh - 1) + 1, : dw * (kw - 1) + 1]  # (keh, kew, I, O)


def _conv(x: Any, w: Any, b: Any | None, attrs: dict) -> Any:
    """y[n,o,i,j] = b[o] + Σ_{c,p,q} w[o,c,p,q] · xpad[n, g·C/G + c, i·sh + p·dh, j·sw + q·dw].

    NHWC ``tf.nn.conv2d`` on the zero-padded input, one call per group (channels split in order).
    """
    tf = tensorflow()
    top, left, bottom, right = attrs["pads"]
    xp = tf.pad(tf.transpose(x, (0, 2, 3, 1)), [[0, 0], [top, bottom], [left, right], [0, 0]])  # (N, Hp, Wp, C)
    wk = _dilate(tf.transpose(w, (2, 3, 1, 0)), attrs["dilation"])                          # (keh, kew, C/G, O)
    g, (sh, sw) = attrs["groups"], attrs["stride"]
    parts = [tf.nn.conv2d(xg, wg, strides=[1, sh, sw, 1], padding="VALID")
             for xg, wg in zip(tf.split(xp, g, axis=3), tf.split(wk, g, axis=3), strict=True)]
    y = tf.transpose(tf.concat(parts, axis=3), (0, 3, 1, 2))                                  # (N, O, oH, oW)
    return y if b is None else y + tf.reshape(b, (1, -1, 1, 1))


def _conv2d(t: Tensors, attrs: dict) -> Tensors:
    """Cross-correlation; conv2d_fft shares it (the convolution theorem gives the same numbers)."""
    return {"y": _conv(t["x"], t["w"], t.get("b"), attrs)}


def _convolve2d(t: Tensors, attrs: dict) -> Tensors:
    """True convolution: conv2d with the kernel flipped on both spatial axes."""
    return {"y": _conv(t["x"], tensorflow().reverse(t["w"], axis=[2, 3]), t.get("b"), attrs)}


# --- pooling ----------------------------------------------------------------------------------

def _padded(x: Any, attrs: dict, value: float) -> tuple[Any, tuple[int, int]]:
    """x padded by ``pads``, plus the end padding ceil mode needs so every window fits; (oH, oW).

    The extra end padding is max(0, reach − (n + p_begin + p_end)) per axis, with the window reach
    (o − 1)·s + d·(k − 1) + 1 of ``shapes.window_reach``.
    """
    tf = tensorflow()
    (kh, kw), (sh, sw), dil = attrs["kernel"], attrs["stride"], attrs.get("dilation", [1, 1])
    top, left, bottom, right = attrs["pads"]
    _, _, oh, ow = shapes.pool2d_out_shape(x.shape, attrs["kernel"], attrs["stride"], attrs["pads"], dil,
                                           attrs["ceil_mode"])
    eh = max(0, shapes.window_reach(oh, kh, sh, dil[0]) - (x.shape[2] + top + bottom))
    ew = max(0, shapes.window_reach(ow, kw, sw, dil[1]) - (x.shape[3] + left + right))
    xp = tf.pad(x, [[0, 0], [0, 0], [top, bottom + eh], [left, right + ew]], constant_values=value)
    return xp, (oh, ow)


def _windows(xp: Any, out: tuple[int, int], attrs: dict) -> Any:
    """win[n, c, i, j, p·kw + q] = xp[n, c, i·sh + p·dh, j·sw + q·dw] (row-major window order)."""
    tf = tensorflow()
    (kh, kw), (sh, sw), (dh, dw) = attrs["kernel"], attrs["stride"], attrs.get("dilation", [1, 1])
    (oh, ow) = out
    views = [xp[:, :, p * dh: p * dh + (oh - 1) * sh + 1: sh, q * dw: q * dw + (ow - 1) * sw + 1: sw]
             for p in range(kh) for q in range(kw)]
    return tf.stack(views, axis=-1)  # (N, C, oH, oW, kh·kw)


def _max_pool(x: Any, attrs: dict) -> Any:
    """y = first max of each window of the −inf-padded input."""
    xp, out = _padded(x, attrs, -np.inf)
    return _first_max(_windows(xp, out, attrs))


def _avg_pool(x: Any, attrs: dict) -> Any:
    """y = window sum / divisor, divisor = window positions inside the input (count_include_pad:
    inside the input padded by ``pads``; the ceil-mode extra padding never counts)."""
    tf = tensorflow()
    xp, out = _padded(x, attrs, 0.0)
    (h, w), (top, left, bottom, right) = x.shape[2:], attrs["pads"]
    inside = np.zeros((1, 1, *xp.shape[2:]))                                 # (1, 1, Hp, Wp)
    if attrs["count_include_pad"]:
        inside[:, :, : top + h + bottom, : left + w + right] = 1.0
    else:
        inside[:, :, top: top + h, left: left + w] = 1.0
    divisor = tf.reduce_sum(_windows(tf.constant(inside), out, attrs), axis=-1)  # (1, 1, oH, oW)
    return tf.reduce_sum(_windows(xp, out, attrs), axis=-1) / divisor


def _global_avg_pool(t: Tensors, attrs: dict) -> Tensors:
    """y[n, c, 0, 0] = mean over H, W of x[n, c]."""
    return {"y": tensorflow().reduce_mean(t["x"], axis=[2, 3], keepdims=True)}


def _lrn(t: Tensors, attrs: dict) -> Tensors:
    """y = x / (bias + alpha/size · s)^beta, s[c] = Σ x[i]² for i in [c − ⌊(size−1)/2⌋, c + ⌈(size−1)/2⌉] ∩ [0, C)."""
    tf = tensorflow()
    x, size = t["x"], attrs["size"]
    lo, hi = (size - 1) // 2, math.ceil((size - 1) / 2)
    sq = tf.pad(tf.square(x), [[0, 0], [lo, hi], [0, 0], [0, 0]])  # (N, C + size − 1, H, W)
    s = tf.add_n([sq[:, i: i + x.shape[1]] for i in range(size)])
    return {"y": x / tf.pow(attrs["bias"] + attrs["alpha"] / size * s, attrs["beta"])}


# --- recurrent --------------------------------------------------------------------------------

def _cell(x: Any, h: Any, c: Any, t: Tensors) -> tuple[Any, Any]:
    """z = x·w_ihᵀ + h·w_hhᵀ + b -> blocks i, f, g, o; c' = σ(f)·c + σ(i)·tanh(g); h' = σ(o)·tanh(c')."""
    tf = tensorflow()
    z = tf.matmul(x, t["w_ih"], transpose_b=True) + tf.matmul(h, t["w_hh"], transpose_b=True) + t["b"]  # (N, 4H)
    i, f, g, o = tf.split(z, 4, axis=1)
    c2 = tf.sigmoid(f) * c + tf.sigmoid(i) * tf.tanh(g)
    return tf.sigmoid(o) * tf.tanh(c2), c2


def _lstm_cell(t: Tensors, attrs: dict) -> Tensors:
    h, c = _cell(t["x"], t["h"], t["c"], t)
    return {"h": h, "c": c}


def _lstm(t: Tensors, attrs: dict) -> Tensors:
    """h_t, c_t = cell(x_t, h_{t−1}, c_{t−1}); y stacks h_1 … h_T."""
    h, c, ys = t["h0"], t["c0"], []
    for x in tensorflow().unstack(t["x"]):
        h, c = _cell(x, h, c, t)
        ys.append(h)
    return {"y": tensorflow().stack(ys), "h": h, "c": c}


# --- inception --------------------------------------------------------------------------------

def _inception(t: Tensors, attrs: dict) -> Tensors:
    """concat(relu(1×1), relu(3×3 pad 1 ∘ relu 1×1), relu(5×5 pad 2 ∘ relu 1×1), relu(1×1 ∘ maxpool 3 s1 p1))."""
    tf = tensorflow()

    def unit(x: Any, name: str, pad: int) -> Any:
        conv = {"stride": [1, 1], "pads": [pad] * 4, "dilation": [1, 1], "groups": 1}
        return tf.nn.relu(_conv(x, t["w" + name], t["b" + name], conv))

    pool = {"kernel": [3, 3], "stride": [1, 1], "pads": [1, 1, 1, 1], "dilation": [1, 1], "ceil_mode": False}
    x = t["x"]
    branches = [unit(x, "1", 0), unit(unit(x, "3r", 0), "3", 1), unit(unit(x, "5r", 0), "5", 2),
                unit(_max_pool(x, pool), "p", 0)]
    return {"y": tf.concat(branches, axis=1)}


def _elementwise(name: str) -> Op:
    return lambda t, attrs: {"y": ACTIVATIONS[name](t["x"])}


OPS: dict[str, Op] = {
    "sigmoid": _elementwise("sigmoid"), "relu": _elementwise("relu"), "tanh": _elementwise("tanh"),
    "softmax": _softmax, "log_softmax": _log_softmax,
    "dense": lambda t, attrs: {"y": _affine(t)},
    "layer": _layer, "maxout": _maxout,
    "logistic_regression": lambda t, attrs: {"p": tensorflow().sigmoid(_affine(t))},
    "softmax_regression": lambda t, attrs: {"p": tensorflow().nn.softmax(_affine(t), axis=-1)},
    "binary_cross_entropy": _binary_cross_entropy, "cross_entropy": _cross_entropy,
    "conv2d": _conv2d, "convolve2d": _convolve2d, "conv2d_fft": _conv2d,
    "max_pool2d": lambda t, attrs: {"y": _max_pool(t["x"], attrs)},
    "avg_pool2d": lambda t, attrs: {"y": _avg_pool(t["x"], attrs)},
    "global_avg_pool2d": _global_avg_pool, "lrn": _lrn,
    "lstm_cell": _lstm_cell, "lstm": _lstm, "inception": _inception,
}
