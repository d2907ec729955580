"""Focused checks of the torch backend's own tricky paths, against hand values or plain NumPy."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from nutshell import backends  # noqa: E402
from nutshell.errors import BackendUnavailable  # noqa: E402


@pytest.fixture(scope="module")
def b():
    return backends.load("torch", device="cpu")


def direct_conv(x, w, stride, pads, dilation, groups):
    """y[n,o,i,j] = Σ_{c,p,q} w[o,c,p,q] · xpad[n, g·Cg + c, i·sh + p·dh, j·sw + q·dw], by loops."""
    xp = np.pad(x, ((0, 0), (0, 0), (pads[0], pads[2]), (pads[1], pads[3])))
    (n, _, hp, wp), (o, cg, kh, kw) = xp.shape, w.shape
    oh = (hp - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    ow = (wp - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    y = np.zeros((n, o, oh, ow))
    for oc in range(o):
        g = oc // (o // groups)
        for i in range(oh):
            for j in range(ow):
                rows = i * stride[0] + dilation[0] * np.arange(kh)
                cols = j * stride[1] + dilation[1] * np.arange(kw)
                patch = xp[:, g * cg:(g + 1) * cg][:, :, rows][:, :, :, cols]     # (N, Cg, kh, kw)
                y[:, oc, i, j] = (patch * w[oc]).sum((1, 2, 3))
    return y


FIG3_X = np.array([[1, 1, 1, 0, 0], [0, 1, 1, 1, 0], [0, 0, 1, 1, 1], [0, 0, 1, 1, 0], [0, 1, 1, 0, 0]], float)
FIG3_W = np.array([[1, 0, 1], [0, 1, 0], [1, 0, 1]], float)


@pytest.mark.parametrize("concept", ["conv2d", "convolve2d", "conv2d_fft"])
def test_glossary_figure3(b, concept):
    y = b.run(concept, {"x": FIG3_X[None, None], "w": FIG3_W[None, None]})["y"]
    np.testing.assert_allclose(y[0, 0], [[4, 3, 4], [2, 4, 3], [2, 3, 4]], rtol=0, atol=1e-12)


def test_convolve2d_flips_the_kernel(b):
    x = np.arange(9.0).reshape(1, 1, 3, 3)
    w = np.array([[1.0, 2.0], [3.0, 4.0]])[None, None]
    # true convolution: 0·4 + 1·3 + 3·2 + 4·1 = 13; cross-correlation: 0·1 + 1·2 + 3·3 + 4·4 = 27
    assert b.run("convolve2d", {"x": x, "w": w})["y"][0, 0, 0, 0] == 13.0
    assert b.run("conv2d", {"x": x, "w": w})["y"][0, 0, 0, 0] == 27.0


def test_conv2d_fft_strided_dilated_grouped_asymmetric(b):
    rng = np.random.default_rng(0)
    x, w, bias = rng.standard_normal((2, 4, 11, 10)), rng.standard_normal((6, 2, 3, 3)), rng.standard_normal(6)
    attrs = {"stride": [2, 2], "pads": [1, 0, 2, 1], "dilation": [2, 2], "groups": 2}
    want = direct_conv(x, w, attrs["stride"], attrs["pads"], attrs["dilation"], 2) + bias[:, None, None]
    got = b.run("conv2d_fft", {"x": x, "w": w, "b": bias}, attrs)["y"]
    assert got.shape == want.shape == (2, 6, 5, 4)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_conv2d_fft_vjp_matches_finite_differences(b):
    rng = np.random.default_rng(1)
    ins = {"x": rng.standard_normal((1, 4, 6, 7)), "w": rng.standard_normal((2, 2, 2, 3)), "b": rng.standard_normal(2)}
    attrs = {"stride": [2, 1], "pads": [0, 2, 1, 0], "dilation": [1, 2], "groups": 2}
    gy = rng.standard_normal(b.run("conv2d_fft", ins, attrs)["y"].shape)
    grads = b.vjp("conv2d_fft", ins, {"y": gy}, attrs)
    h = 1e-6
    for name, a in ins.items():
        u = rng.standard_normal(a.shape)
        up = b.run("conv2d_fft", {**ins, name: a + h * u}, attrs)["y"]
        down = b.run("conv2d_fft", {**ins, name: a - h * u}, attrs)["y"]
        numeric = ((up - down) * gy).sum() / (2 * h)
        assert abs(numeric - (grads[name] * u).sum()) < 1e-6 * (1 + abs(numeric)), name


def test_avg_pool_divisor_5x5_arange(b):
    x = np.arange(25.0).reshape(1, 1, 5, 5)
    attrs = {"kernel": [3, 3], "stride": [2, 2], "pads": [1, 1, 1, 1]}
    assert b.run("avg_pool2d", {"x": x}, attrs)["y"][0, 0, 0, 0] == 3.0                 # 12 / 4
    with_pad = b.run("avg_pool2d", {"x": x}, {**attrs, "count_include_pad": True})["y"]
    assert with_pad[0, 0, 0, 0] == pytest.approx(12 / 9, rel=1e-15)


@pytest.mark.parametrize(("include", "want"), [(False, [0.5, 2.0, 4.0, 5.0]), (True, [1 / 3, 2.0, 4.0, 2.5])])
def test_avg_pool_ceil_window_beyond_padding_never_counts(b, include, want):
    # n=6, k=3, s=2, pads 1/1, ceil: 4 windows; the last covers [x5, pad, beyond]
    x = np.arange(6.0).reshape(1, 1, 1, 6)
    attrs = {"kernel": [1, 3], "stride": [1, 2], "pads": [0, 1, 0, 1], "ceil_mode": True, "count_include_pad": include}
    np.testing.assert_allclose(b.run("avg_pool2d", {"x": x}, attrs)["y"].ravel(), want, rtol=1e-15)


def test_max_pool_ceil_drops_window_starting_in_end_padding(b):
    # n=5, k=3, s=3, pads 1/1: ⌈(5 + 2 − 3)/3⌉ + 1 = 3, but the third window starts at 6 = n + p_begin
    x = np.arange(5.0).reshape(1, 1, 1, 5) - 10.0
    y = b.run("max_pool2d", {"x": x}, {"kernel": [1, 3], "stride": [1, 3], "pads": [0, 1, 0, 1], "ceil_mode": True})
    np.testing.assert_array_equal(y["y"].ravel(), [-9.0, -6.0])      # −inf padding, not 0


def test_max_pool_ties_and_nan(b):
    x = np.array([[1.0, 5.0, 5.0], [5.0, 2.0, 5.0], [0.0, 0.0, 0.0]])[None, None]
    gx = b.vjp("max_pool2d", {"x": x}, {"y": np.ones((1, 1, 1, 1))}, {"kernel": [3, 3]})["x"]
    want = np.zeros((1, 1, 3, 3))
    want[0, 0, 0, 1] = 1.0
    np.testing.assert_array_equal(gx, want)
    x[0, 0, 2, 2] = np.nan
    assert np.isnan(b.run("max_pool2d", {"x": x}, {"kernel": [3, 3]})["y"]).all()


def test_maxout_tie_gradient_goes_to_first_piece(b):
    x, w, bias = np.array([[1.0]]), np.array([[2.0, 5.0, 5.0, 5.0]]), np.zeros(4)
    gw = b.vjp("maxout", {"x": x, "w": w, "b": bias}, {"y": np.ones((1, 1))}, {"pieces": 4})["w"]
    np.testing.assert_array_equal(gw, [[0.0, 1.0, 0.0, 0.0]])


def test_sigmoid_saturates_exactly_without_warnings(b):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y = b.run("sigmoid", {"x": np.array([-1000.0, 1000.0, 0.0], np.float32)})["y"]
    assert y.dtype == np.float32
    assert y.tolist() == [0.0, 1.0, 0.5]


def test_binary_cross_entropy_stable_value_and_gradient_at_zero(b):
    z, t = np.array([100.0, -100.0, 0.0]), np.array([1.0, 0.0, 1.0])
    loss = b.run("binary_cross_entropy", {"logits": z[:2], "targets": t[:2]})["loss"]
    assert loss == pytest.approx(np.log1p(np.exp(-100.0)), rel=1e-14)      # ≈ 3.7e-44, not 0
    g = b.vjp("binary_cross_entropy", {"logits": z, "targets": t}, {"loss": np.array(1.0)})["logits"]
    np.testing.assert_allclose(g, [0.0, np.exp(-100.0) / 3, (0.5 - 1.0) / 3], rtol=1e-14, atol=0)


def onnx_lrn(x, size, alpha, beta, bias):
    """y[c] = x[c] / (bias + alpha/size · Σ_{i=c−⌊(size−1)/2⌋}^{c+⌈(size−1)/2⌉} x[i]²)^beta."""
    y = np.empty_like(x)
    channels = x.shape[1]
    for c in range(channels):
        lo, hi = max(0, c - (size - 1) // 2), min(channels - 1, c + size // 2)
        y[:, c] = x[:, c] / (bias + alpha / size * (x[:, lo:hi + 1] ** 2).sum(1)) ** beta
    return y


@pytest.mark.parametrize("size", [2, 5])
def test_lrn_matches_onnx_window(b, size):
    x = np.random.default_rng(2).standard_normal((2, 6, 3, 2))
    attrs = {"size": size, "alpha": 0.7, "beta": 0.75, "bias": 1.5}
    np.testing.assert_allclose(b.run("lrn", {"x": x}, attrs)["y"], onnx_lrn(x, **attrs), rtol=1e-14)


def s(v):
    return 1 / (1 + np.exp(-v))


def test_lstm_cell_gate_order_i_f_g_o(b):
    hidden = 2
    x, h, c = np.ones((1, 1)), np.zeros((1, hidden)), np.full((1, hidden), 0.5)
    w_ih, w_hh = np.zeros((4 * hidden, 1)), np.zeros((4 * hidden, hidden))
    gates = np.repeat([0.3, -1.2, 0.7, 2.0], hidden)                 # a distinct constant per block
    out = b.run("lstm_cell", {"x": x, "h": h, "c": c, "w_ih": w_ih, "w_hh": w_hh, "b": gates})
    c_next = s(-1.2) * 0.5 + s(0.3) * np.tanh(0.7)
    np.testing.assert_allclose(out["c"], np.full((1, hidden), c_next), rtol=1e-15)
    np.testing.assert_allclose(out["h"], np.full((1, hidden), s(2.0) * np.tanh(c_next)), rtol=1e-15)


def test_float32_stays_float32(b):
    x = np.ones((1, 2, 4, 4), np.float32)
    w = np.ones((2, 1, 3, 3), np.float32)
    for concept in ("conv2d_fft", "conv2d"):
        assert b.run(concept, {"x": x, "w": w}, {"groups": 2})["y"].dtype == np.float32
    assert b.vjp("conv2d_fft", {"x": x, "w": w}, {"y": np.ones((1, 2, 2, 2), np.float32)},
                 {"groups": 2})["w"].dtype == np.float32


def test_op_returns_native_tensors(b):
    call = b.op("avg_pool2d", {"kernel": [2, 2]})
    out = call(x=b.to_native(np.arange(16.0, dtype=np.float32).reshape(1, 1, 4, 4)))
    b.synchronize()
    assert isinstance(out["y"], torch.Tensor) and not out["y"].requires_grad
    np.testing.assert_array_equal(b.to_numpy(out["y"])[0, 0], [[2.5, 4.5], [10.5, 12.5]])


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_cuda_is_unavailable():
    with pytest.raises(BackendUnavailable, match="CUDA"):
        backends.load("torch", device="cuda")


def test_unknown_device_is_unavailable():
    with pytest.raises(BackendUnavailable, match="unknown device"):
        backends.load("torch", device="tpu")
