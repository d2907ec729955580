"""The cheaper ONNX graphs behind the ONNX model's training step (issue 18, item 5).

Each fast formulation must be taken where it applies and give what the spec says, checked here
against NumPy in float64 (the conformance vectors hold no pointwise conv2d of their own):

* a pointwise conv2d's vjp: Conv(gy, wᵀ) and one Einsum instead of ConvTranspose and the
  swapped-roles Conv; both sums carry at most K·u·Σ|terms| of rounding, K the terms per sum;
* conv2d with 8 or more channels (stride 1, one group): y and gw through one im2col matrix;
  with stride 1 and one group gx is a Conv of gy, not a ConvTranspose;
* max_pool2d's vjp through MaxUnpool where no two windows share an element (float32), exact;
  ScatterElements where they do, and in float64;
* max_pool2d's NaN propagation through y + √(−m): exact, −0 included.

No wall-clock assertion: the speed is what ``nutshell bench`` shows.
"""

from __future__ import annotations

import numpy as np
import pytest

from nutshell import backends
from nutshell.spec import validate


@pytest.fixture(scope="module")
def b() -> backends.Backend:
    try:
        return backends.load("onnx", "cpu")
    except backends.BackendUnavailable as exc:
        pytest.skip(str(exc))


def _ops(b, concept: str, attrs: dict, shapes: dict, dtype: str = "float32") -> set[str]:
    full = validate._check_attrs(b.spec.concept(concept), attrs)
    return {n.op_type for n in b.build(concept, full, shapes, dtype, "vjp").graph.node}


def _within(got: np.ndarray, want: np.ndarray, magnitude: np.ndarray, terms: int) -> None:
    """|got − want| ≤ terms·u·Σ|products| elementwise (want in float64)."""
    u = np.finfo(np.float32).eps / 2
    assert np.all(np.abs(got.astype(np.float64) - want) <= terms * u * magnitude)


POINTWISE = {"stride": [1, 1], "pads": [0, 0, 0, 0], "dilation": [1, 1], "groups": 1}


def test_pointwise_conv_vjp_graph(b):
    shapes = {"x": (2, 5, 4, 3), "w": (6, 5, 1, 1), "b": (6,)}
    assert {"Einsum"} <= _ops(b, "conv2d", POINTWISE, shapes)
    assert not {"ConvTranspose"} & _ops(b, "conv2d", POINTWISE, shapes)
    strided = dict(POINTWISE, stride=[2, 2])
    assert "ConvTranspose" in _ops(b, "conv2d", strided, shapes)


def test_pointwise_conv_vjp_values(b):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((3, 5, 4, 3)).astype(np.float32)
    w = rng.standard_normal((6, 5, 1, 1)).astype(np.float32)
    gy = rng.standard_normal((3, 6, 4, 3)).astype(np.float32)
    got = b.vjp("conv2d", {"x": x, "w": w}, {"y": gy}, POINTWISE)
    x64, w64, gy64 = (a.astype(np.float64) for a in (x, w, gy))
    gx = np.einsum("nohw,oc->nchw", gy64, w64[:, :, 0, 0])
    _within(got["x"], gx, np.einsum("nohw,oc->nchw", abs(gy64), abs(w64[:, :, 0, 0])), 6)
    gw = np.einsum("nohw,nchw->oc", gy64, x64)[:, :, None, None]
    _within(got["w"], gw, np.einsum("nohw,nchw->oc", abs(gy64), abs(x64))[:, :, None, None], 3 * 4 * 3)


COLUMNS = {"stride": [1, 1], "pads": [2, 0, 1, 1], "dilation": [2, 1], "groups": 1}


def test_columns_conv_graphs(b):
    shapes = {"x": (2, 8, 7, 6), "w": (5, 8, 3, 2), "b": (5,)}
    full = validate._check_attrs(b.spec.concept("conv2d"), COLUMNS)
    forward = {n.op_type for n in b.build("conv2d", full, shapes, "float32", "forward").graph.node}
    assert "MatMul" in forward and "Conv" not in forward
    assert "Gemm" in _ops(b, "conv2d", COLUMNS, shapes)                        # gw = gyᵀ · cols
    assert "Conv" in _ops(b, "conv2d", COLUMNS, {"x": (2, 7, 7, 6), "w": (5, 7, 3, 2), "b": (5,)})


def test_stride_one_input_grad_is_a_conv(b):
    """gx of a stride-1, one-group conv2d is a Conv of gy (the conformance vectors check its values)."""
    shapes = {"x": (2, 3, 7, 6), "w": (5, 3, 3, 2)}
    assert "ConvTranspose" not in _ops(b, "conv2d", COLUMNS, shapes)
    assert "ConvTranspose" in _ops(b, "conv2d", dict(COLUMNS, stride=[2, 1]), shapes)
    assert "ConvTranspose" in _ops(b, "conv2d", dict(COLUMNS, pads=[5, 0, 0, 0]), shapes)


def test_columns_conv_values(b):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 8, 7, 6)).astype(np.float32)
    w = rng.standard_normal((5, 8, 3, 2)).astype(np.float32)
    bias = rng.standard_normal(5).astype(np.float32)
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (2, 1), (0, 1)))       # pads [top, left, bottom, right]
    taps = np.stack([xp[:, :, 2 * p:2 * p + 6, q:q + 6] for p in range(3) for q in range(2)], 2)  # (N, C, 6, 6, 6)
    w64 = w.astype(np.float64).reshape(5, 8, 6)
    y = b.run("conv2d", {"x": x, "w": w, "b": bias}, COLUMNS)["y"]
    _within(y, np.einsum("nckhw,ock->nohw", taps, w64) + bias[None, :, None, None],
            np.einsum("nckhw,ock->nohw", abs(taps), abs(w64)) + abs(bias)[None, :, None, None], 8 * 6 + 1)
    gy = rng.standard_normal(y.shape).astype(np.float32)
    gw = b.vjp("conv2d", {"x": x, "w": w, "b": bias}, {"y": gy}, COLUMNS)["w"]
    gy64 = gy.astype(np.float64)
    _within(gw, np.einsum("nohw,nckhw->ock", gy64, taps).reshape(w.shape),
            np.einsum("nohw,nckhw->ock", abs(gy64), abs(taps)).reshape(w.shape), 2 * 6 * 6)

def _max_pool_grad(x: np.ndarray, gy: np.ndarray, k: int, s: int) -> np.ndarray:
    """The spec's vjp, unpadded: each gy onto the first largest element (row-major) of its window."""
    gx = np.zeros_like(x)
    for n, c, i, j in np.ndindex(*gy.shape):
        window = x[n, c, i * s:i * s + k, j * s:j * s + k]
        p, q = np.unravel_index(np.argmax(window), window.shape)
        gx[n, c, i * s + p, j * s + q] += gy[n, c, i, j]
    return gx


@pytest.mark.parametrize(("k", "s", "dtype", "op"), [(2, 2, "float32", "MaxUnpool"),
                                                     (3, 2, "float32", "ScatterElements"),
                                                     (2, 2, "float64", "ScatterElements")])
def test_max_pool_vjp(b, k, s, dtype, op):
    attrs = {"kernel": [k, k], "stride": [s, s]}
    assert op in _ops(b, "max_pool2d", attrs, {"x": (2, 3, 7, 7)}, dtype)
    rng = np.random.default_rng(k * 10 + s)
    x = rng.integers(-2, 3, (2, 3, 7, 7)).astype(dtype)                     # many ties
    out = (7 - k) // s + 1
    gy = rng.standard_normal((2, 3, out, out)).astype(dtype)
    got = b.vjp("max_pool2d", {"x": x}, {"y": gy}, attrs)["x"]
    np.testing.assert_array_equal(got, _max_pool_grad(x, gy, k, s))


def test_max_pool_nan_and_signed_zero(b):
    x = np.array([[[[-0.0, -1.0, 1.0, np.nan], [-2.0, -0.0, 0.5, 0.25]]]], np.float32)
    y = b.run("max_pool2d", {"x": x}, {"kernel": [2, 2]})["y"]
    assert y[0, 0, 0, 0] == 0 and np.signbit(y[0, 0, 0, 0])
    assert np.isnan(y[0, 0, 0, 1])
