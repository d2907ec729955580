"""What every implementation of a concept looks like: its output shapes, and its calling convention.

:func:`output_shapes` is backend-neutral shape arithmetic. :class:`Impl` is the one convention
of every backend's area modules (activations, dense, losses, conv, pooling, normalization,
recurrent, inception) and of the float64 reference: each exports ``CONCEPTS: dict[str, Impl]``,
and its backend merges them into one table it dispatches through.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import ml_dtypes
import numpy as np

from nutshell.spec import shapes

DTYPES: dict[str, type] = {"float32": np.float32, "float64": np.float64,
                           "float16": np.float16, "bfloat16": ml_dtypes.bfloat16}
"""Every float dtype a concept takes, by the name the spec and the results use: NumPy's own formats
and ml_dtypes' bfloat16 (8 exponent bits like float32, 8 significant bits). Outputs come in the
inputs' dtype."""
LOW_PRECISION = ("float16", "bfloat16")


class Impl(NamedTuple):
    """One concept on one backend: ``CONCEPTS[concept_id] = Impl(forward, vjp)``.

    * ``forward(inputs, attrs) -> {output name: A}``
    * ``vjp(inputs, cotangents, attrs) -> {input name: A}``, one gradient per differentiable input given

    ``inputs`` maps the spec's input names to arrays (an optional input that was not given is
    absent), ``cotangents`` the spec's output names, ``attrs`` holds every attribute with the
    spec's defaults filled in. ``A`` is the backend's own array: a torch or TensorFlow tensor, a
    CuPy or NumPy array, the reference's tracked float64 ``T``. ``vjp`` is None where the backend
    derives gradients generically from ``forward`` (torch's autograd, TensorFlow's GradientTape).

    The one difference: the ONNX backend builds graphs, so its functions take the graph first,
    ``forward(g, inputs, attrs)`` and ``vjp(g, inputs, cotangents, attrs)``, and ``A`` is the
    name of a value in ``g``.
    """

    forward: Callable[..., dict[str, Any]]
    vjp: Callable[..., dict[str, Any]] | None = None


def output_shapes(concept: str, s: dict[str, tuple], attrs: dict) -> dict[str, tuple]:
    """{output name: shape} for validated input shapes ``s`` and full ``attrs``."""
    if concept in ("sigmoid", "relu", "tanh", "softmax", "log_softmax", "lrn"):
        return {"y": tuple(s["x"])}
    if concept in ("dense", "layer", "softmax_regression"):
        return {"y" if concept != "softmax_regression" else "p": (s["x"][0], s["w"][1])}
    if concept == "logistic_regression":
        return {"p": (s["x"][0],)}
    if concept == "maxout":
        return {"y": (s["x"][0], s["w"][1] // attrs["pieces"])}
    if concept in ("binary_cross_entropy", "cross_entropy"):
        return {"loss": ()}
    if concept in ("conv2d", "convolve2d", "conv2d_fft"):
        return {"y": shapes.conv2d_out_shape(s["x"], s["w"], attrs["stride"], attrs["pads"], attrs["dilation"])}
    if concept in ("max_pool2d", "avg_pool2d"):
        dil = attrs.get("dilation", [1, 1])
        return {"y": shapes.pool2d_out_shape(s["x"], attrs["kernel"], attrs["stride"], attrs["pads"], dil,
                                             attrs["ceil_mode"])}
    if concept == "global_avg_pool2d":
        return {"y": (*s["x"][:2], 1, 1)}
    if concept == "lstm_cell":
        return {"h": tuple(s["h"]), "c": tuple(s["c"])}
    if concept == "lstm":
        t, n, hid = s["x"][0], s["x"][1], s["w_hh"][1]
        return {"y": (t, n, hid), "h": (n, hid), "c": (n, hid)}
    if concept == "inception":
        n, _, h, w = s["x"]
        o = s["w1"][0] + s["w3"][0] + s["w5"][0] + s["wp"][0]
        return {"y": (n, o, h, w)}
    raise KeyError(concept)
