"""The CuPy backend on its NumPy path: the tricky parts, each against plain loops written here.

Every expected value is derived in this file, by loops that follow the spec's definition
element by element, or by hand; none of them calls the backend's own helpers.
"""

from __future__ import annotations

import itertools
import math
import subprocess
import sys
import warnings

import numpy as np
import pytest

from nutshell import backends
from nutshell.backends.cupy_impl import CupyBackend, conv, im2col
from nutshell.backends.cupy_impl.backend import BUDGET_ENV
from nutshell.errors import BackendUnavailable


@pytest.fixture(scope="module")
def b() -> CupyBackend:
    return CupyBackend(device="cpu")


RNG = np.random.default_rng(20240611)


def rand(*shape: int, dtype=np.float64) -> np.ndarray:
    return RNG.standard_normal(shape).astype(dtype)


# --- plain loops --------------------------------------------------------------------------------

def out_len(n: int, k: int, s: int, p0: int, p1: int, d: int, ceil: bool = False) -> int:
    """Count window positions by walking them, not by the closed formula."""
    k_eff, length, count, start = d * (k - 1) + 1, n + p0 + p1, 0, 0
    while start + k_eff <= length:            # windows wholly inside the padded input
        count += 1
        start += s
    tail_uncovered = (count - 1) * s + k_eff < length
    if ceil and tail_uncovered and start < n + p0:
        count += 1                            # ceil mode: one partial window, unless it starts in the end pad
    return count


def conv_loop(x, w, bias, stride=(1, 1), pads=(0, 0, 0, 0), dil=(1, 1), groups=1):
    n_, _, h_, w_ = x.shape
    o_, cg, kh, kw = w.shape
    oh = out_len(h_, kh, stride[0], pads[0], pads[2], dil[0])
    ow = out_len(w_, kw, stride[1], pads[1], pads[3], dil[1])
    y = np.zeros((n_, o_, oh, ow))
    for n, o, i, j in itertools.product(range(n_), range(o_), range(oh), range(ow)):
        g = o // (o_ // groups)
        acc = 0.0 if bias is None else float(bias[o])
        for c, p, q in itertools.product(range(cg), range(kh), range(kw)):
            r, s = i * stride[0] - pads[0] + p * dil[0], j * stride[1] - pads[1] + q * dil[1]
            if 0 <= r < h_ and 0 <= s < w_:
                acc += float(w[o, c, p, q]) * float(x[n, g * cg + c, r, s])
        y[n, o, i, j] = acc
    return y


def conv_grads_loop(x, w, gy, stride=(1, 1), pads=(0, 0, 0, 0), dil=(1, 1), groups=1):
    """gx and gw by walking every product x·w of the forward loop once."""
    gx, gw = np.zeros(x.shape), np.zeros(w.shape)
    o_, cg, kh, kw = w.shape
    for n, o, i, j in itertools.product(*(range(e) for e in gy.shape)):
        g = o // (o_ // groups)
        for c, p, q in itertools.product(range(cg), range(kh), range(kw)):
            r, s = i * stride[0] - pads[0] + p * dil[0], j * stride[1] - pads[1] + q * dil[1]
            if 0 <= r < x.shape[2] and 0 <= s < x.shape[3]:
                gx[n, g * cg + c, r, s] += gy[n, o, i, j] * w[o, c, p, q]
                gw[o, c, p, q] += gy[n, o, i, j] * x[n, g * cg + c, r, s]
    return gx, gw


def pool_windows(x, k, s, pads, dil=(1, 1), ceil=False):
    """Yield (n, c, i, j, [(r, q, inside_x, inside_padded), ...]) for every window."""
    n_, c_, h_, w_ = x.shape
    oh = out_len(h_, k[0], s[0], pads[0], pads[2], dil[0], ceil)
    ow = out_len(w_, k[1], s[1], pads[1], pads[3], dil[1], ceil)
    for n, c, i, j in itertools.product(range(n_), range(c_), range(oh), range(ow)):
        taps = []
        for p, q in itertools.product(range(k[0]), range(k[1])):
            r, t = i * s[0] - pads[0] + p * dil[0], j * s[1] - pads[1] + q * dil[1]
            inside = 0 <= r < h_ and 0 <= t < w_
            in_pad = -pads[0] <= r < h_ + pads[2] and -pads[1] <= t < w_ + pads[3]
            taps.append((r, t, inside, in_pad))
        yield n, c, i, j, taps, (oh, ow)


def max_pool_loop(x, gy, k, s, pads, dil=(1, 1), ceil=False):
    """(y, gx): the first strict maximum in row-major order wins; NaN beats everything."""
    out, gx = None, np.zeros(x.shape)
    for n, c, i, j, taps, shape in pool_windows(x, k, s, pads, dil, ceil):
        if out is None:
            out = np.zeros((*x.shape[:2], *shape))
        best, where = -math.inf, None
        for r, t, inside, _ in taps:
            v = x[n, c, r, t] if inside else -math.inf
            if where is None or (not math.isnan(best) and (math.isnan(v) or v > best)):
                best, where = v, (r, t, inside)
        out[n, c, i, j] = best
        if where[2]:
            gx[n, c, where[0], where[1]] += gy[n, c, i, j]
    return out, gx


def avg_pool_loop(x, gy, k, s, pads, ceil, include_pad):
    out, gx = None, np.zeros(x.shape)
    for n, c, i, j, taps, shape in pool_windows(x, k, s, pads, (1, 1), ceil):
        if out is None:
            out = np.zeros((*x.shape[:2], *shape))
        count = sum(1 for _, _, inside, in_pad in taps if (in_pad if include_pad else inside))
        out[n, c, i, j] = sum(x[n, c, r, t] for r, t, inside, _ in taps if inside) / count
        for r, t, inside, _ in taps:
            if inside:
                gx[n, c, r, t] += gy[n, c, i, j] / count
    return out, gx


def sig(v: float) -> float:
    return 1 / (1 + math.exp(-v)) if v > -700 else 0.0


def fd_grads(b, concept, inputs, attrs, cots, names, h=1e-6):
    """Central differences of Σ cot·f in float64 (a check of the vjp, independent of it)."""
    def loss(d):
        out = b.run(concept, d, attrs)
        return sum(float((out[k] * cots[k]).sum()) for k in out)
    grads = {}
    for name in names:
        a, g = inputs[name], np.zeros(inputs[name].shape)
        for idx in np.ndindex(a.shape):
            up, dn = a.copy(), a.copy()
            up[idx] += h
            dn[idx] -= h
            g[idx] = (loss({**inputs, name: up}) - loss({**inputs, name: dn})) / (2 * h)
        grads[name] = g
    return grads


# --- convolution ----------------------------------------------------------------------------------

FIG3_X = np.array([[1, 1, 1, 0, 0], [0, 1, 1, 1, 0], [0, 0, 1, 1, 1], [0, 0, 1, 1, 0], [0, 1, 1, 0, 0]], float)
FIG3_W = np.array([[1, 0, 1], [0, 1, 0], [1, 0, 1]], float)


@pytest.mark.parametrize("concept", ["conv2d", "convolve2d", "conv2d_fft"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_figure3(b, concept, dtype):
    y = b.run(concept, {"x": FIG3_X[None, None].astype(dtype), "w": FIG3_W[None, None].astype(dtype)})["y"]
    assert y.dtype == dtype
    np.testing.assert_allclose(y[0, 0], [[4, 3, 4], [2, 4, 3], [2, 3, 4]], atol=1e-5)


def test_convolve2d_flips_the_kernel(b):
    w = np.zeros((1, 1, 3, 3))
    w[0, 0, 0, 0] = 1.0                                    # a tap at the top left
    x = np.arange(25.0).reshape(1, 1, 5, 5)
    # cross-correlation reads x[i + 0, j + 0]; true convolution reads x[i + 2, j + 2]
    np.testing.assert_array_equal(b.run("conv2d", {"x": x, "w": w})["y"][0, 0], x[0, 0, :3, :3])
    np.testing.assert_array_equal(b.run("convolve2d", {"x": x, "w": w})["y"][0, 0], x[0, 0, 2:, 2:])


CONV_CASES = [
    ((2, 4, 7, 6), (6, 2, 3, 2), {"stride": [2, 1], "pads": [1, 0, 2, 1], "dilation": [1, 2], "groups": 2}),
    ((1, 3, 9, 8), (4, 3, 3, 3), {"stride": [3, 2], "pads": [0, 2, 1, 0], "dilation": [2, 1], "groups": 1}),
    ((2, 4, 5, 5), (4, 1, 2, 3), {"stride": [1, 1], "pads": [2, 2, 1, 2], "dilation": [2, 2], "groups": 4}),
    ((2, 3, 6, 5), (2, 3, 1, 1), {"stride": [2, 2], "pads": [0, 0, 0, 0], "dilation": [1, 1], "groups": 1}),
    ((1, 2, 4, 4), (3, 2, 4, 4), {"stride": [1, 1], "pads": [0, 1, 0, 0], "dilation": [1, 1], "groups": 1}),
]


def _conv_ref(concept, x, w, bias, attrs):
    wk = w[:, :, ::-1, ::-1] if concept == "convolve2d" else w
    return conv_loop(x, wk, bias, attrs["stride"], attrs["pads"], attrs["dilation"], attrs["groups"])


@pytest.mark.parametrize("concept", ["conv2d", "convolve2d", "conv2d_fft"])
@pytest.mark.parametrize("case", range(len(CONV_CASES)))
def test_conv_forward_matches_loops(b, concept, case):
    xs, ws, attrs = CONV_CASES[case]
    x, w, bias = rand(*xs), rand(*ws), rand(ws[0])
    want = _conv_ref(concept, x, w, bias, attrs)
    np.testing.assert_allclose(b.run(concept, {"x": x, "w": w, "b": bias}, attrs)["y"], want, rtol=0, atol=1e-12)
    f32 = {"x": x.astype(np.float32), "w": w.astype(np.float32), "b": bias.astype(np.float32)}
    y32 = b.run(concept, f32, attrs)["y"]
    assert y32.dtype == np.float32
    np.testing.assert_allclose(y32, want, rtol=0, atol=2e-5)


@pytest.mark.parametrize("concept", ["conv2d", "convolve2d", "conv2d_fft"])
@pytest.mark.parametrize("case", range(len(CONV_CASES)))
def test_conv_gradients_match_loops(b, concept, case):
    xs, ws, attrs = CONV_CASES[case]
    x, w, bias = rand(*xs), rand(*ws), rand(ws[0])
    gy = rand(*_conv_ref(concept, x, w, None, attrs).shape)
    wk = w[:, :, ::-1, ::-1] if concept == "convolve2d" else w
    gx, gw = conv_grads_loop(x, wk, gy, attrs["stride"], attrs["pads"], attrs["dilation"], attrs["groups"])
    if concept == "convolve2d":
        gw = gw[:, :, ::-1, ::-1]
    got = b.vjp(concept, {"x": x, "w": w, "b": bias}, {"y": gy}, attrs)
    np.testing.assert_allclose(got["x"], gx, atol=1e-11)
    np.testing.assert_allclose(got["w"], gw, atol=1e-11)
    np.testing.assert_allclose(got["b"], gy.sum(axis=(0, 2, 3)), atol=1e-12)


def test_im2col_against_loops_and_col2im_is_its_adjoint():
    x = rand(2, 3, 7, 6)
    win = im2col.Window.make((7, 6), (3, 2), (2, 1), (1, 2, 0, 1), (2, 2))
    col = im2col.im2col(x, win)
    assert col.shape == (3, 3, 2, 2, win.oh, win.ow)                 # (C, kh, kw, N, oH, oW)
    for c, p, q, n, i, j in np.ndindex(col.shape):
        r, s = i * 2 - 1 + p * 2, j * 1 - 2 + q * 2
        want = x[n, c, r, s] if 0 <= r < 7 and 0 <= s < 6 else 0.0
        assert col[c, p, q, n, i, j] == want
    g = rand(*col.shape)
    gx = im2col.col2im(g, win)
    assert gx.shape == x.shape
    # <im2col(x), g> = <x, col2im(g)> for every x, g: col2im is the exact adjoint
    assert math.isclose(float((col * g).sum()), float((x * gx).sum()), rel_tol=1e-12)


def test_col2im_gathers_overlapping_taps():
    """k3 s1: an interior pixel of a 5×5 plane sits in up to 9 windows; all contributions add."""
    win = im2col.Window.make((5, 5), (3, 3), (1, 1), (0, 0, 0, 0), (1, 1))
    gx = im2col.col2im(np.ones((1, 3, 3, 1, 3, 3)), win)[0, 0]
    counts = np.array([[sum(1 for i in range(3) for p in range(3) if i + p == r) for r in range(5)]]).T
    np.testing.assert_array_equal(gx, counts @ counts.T)


def test_chunking_respects_the_budget_and_changes_nothing(b, monkeypatch):
    x, w, gy = rand(9, 3, 8, 8), rand(4, 3, 3, 3), rand(9, 4, 8, 8)
    attrs = {"pads": [1, 1, 1, 1]}
    whole = b.vjp("conv2d", {"x": x, "w": w}, {"y": gy}, attrs), b.run("conv2d", {"x": x, "w": w}, attrs)
    sizes: list[int] = []
    real = conv.im2col

    def spy(xc, win, value=0.0):
        col = real(xc, win, value)
        sizes.append(col.nbytes)
        return col

    monkeypatch.setattr(conv, "im2col", spy)
    small = CupyBackend(device="cpu")
    per_sample = 8 * (3 * 9 * 64 + 2 * 3 * 10 * 10 + 4 * 64)  # columns, two padded planes, output chunk
    small.mem_budget_mb = 2.5 * per_sample / 2**20             # two samples per chunk
    parts = small.vjp("conv2d", {"x": x, "w": w}, {"y": gy}, attrs), small.run("conv2d", {"x": x, "w": w}, attrs)
    assert len(sizes) == 2 * 5 and max(sizes) == 2 * 3 * 9 * 64 * 8 <= small.budget_bytes
    for k in ("x", "w"):
        np.testing.assert_allclose(parts[0][k], whole[0][k], atol=1e-12)
    np.testing.assert_allclose(parts[1]["y"], whole[1]["y"], atol=1e-12)


def test_budget_from_environment(monkeypatch):
    monkeypatch.setenv(BUDGET_ENV, "12.5")
    assert CupyBackend(device="cpu").budget_bytes == int(12.5 * 2**20)
    monkeypatch.setenv(BUDGET_ENV, "lots")
    with pytest.raises(BackendUnavailable, match=BUDGET_ENV):
        CupyBackend(device="cpu")


def test_fast_len_against_brute_force():
    def smooth(m):
        for f in (2, 3, 5):
            while m % f == 0:
                m //= f
        return m == 1
    for n in range(1, 200):
        assert conv.fast_len(n) == next(m for m in range(n, 10 * n) if smooth(m))


def test_fft_kernel_as_wide_as_the_padded_input(b):
    """The zero-padding to n + k − 1 matters most when k ≈ n: no wrap-around may leak in."""
    x, w = rand(1, 1, 4, 4), rand(1, 1, 4, 4)
    attrs = {"pads": [1, 1, 1, 1]}
    want = conv_loop(x, w, None, pads=(1, 1, 1, 1))
    np.testing.assert_allclose(b.run("conv2d_fft", {"x": x, "w": w}, attrs)["y"], want, atol=1e-12)


# --- pooling -------------------------------------------------------------------------------------

POOL_CASES = [
    ([3, 2], [2, 1], [1, 1, 2, 0], [1, 2], True),
    ([2, 2], [2, 2], [0, 0, 0, 0], [1, 1], True),
    ([3, 3], [2, 2], [1, 1, 1, 1], [1, 1], True),
    ([3, 3], [1, 1], [1, 1, 1, 1], [1, 1], False),
    ([2, 3], [1, 2], [1, 2, 1, 0], [2, 1], False),
]


@pytest.mark.parametrize("case", POOL_CASES)
def test_max_pool_matches_loops(b, case):
    k, s, pads, dil, ceil = case
    x = rand(2, 3, 5, 7)
    x[1, 1, 2, :] = 0.5                                    # ties inside windows
    x[1, 2] = -1.0                                          # an all-equal plane: first tap wins
    x[0, 1] = -np.abs(x[0, 1]) - 1                          # all negative: −inf padding, never 0
    attrs = {"kernel": k, "stride": s, "pads": pads, "dilation": dil, "ceil_mode": ceil}
    y = b.run("max_pool2d", {"x": x}, attrs)["y"]
    gy = rand(*y.shape)
    want_y, want_gx = max_pool_loop(x, gy, k, s, pads, dil, ceil)
    np.testing.assert_array_equal(y, want_y)
    assert (y[0, 1] < 0).all()
    np.testing.assert_allclose(b.vjp("max_pool2d", {"x": x}, {"y": gy}, attrs)["x"], want_gx, atol=1e-14)


def test_max_pool_nan_propagates_and_first_maximum_wins(b):
    x = np.array([[[[1.0, 3.0, 3.0], [3.0, 0.0, np.nan], [2.0, 2.0, 2.0]]]])
    attrs = {"kernel": [2, 2], "stride": [1, 1]}
    y = b.run("max_pool2d", {"x": x}, attrs)["y"][0, 0]
    assert y[0, 0] == 3.0 and np.isnan(y[0, 1]) and np.isnan(y[1, 1]) and y[1, 0] == 3.0
    gx = b.vjp("max_pool2d", {"x": x}, {"y": np.ones((1, 1, 2, 2))}, attrs)["x"][0, 0]
    # window (0,0): first 3 at (0,1); (1,0): the 3 at (1,0); both NaN windows send theirs to the NaN
    np.testing.assert_array_equal(gx, [[0, 1, 0], [1, 0, 2], [0, 0, 0]])


@pytest.mark.parametrize("case", POOL_CASES)
@pytest.mark.parametrize("include_pad", [False, True])
def test_avg_pool_matches_loops(b, case, include_pad):
    k, s, pads, dil, ceil = case
    if dil != [1, 1]:
        pytest.skip("average pooling has no dilation")
    x = rand(2, 3, 5, 7)
    attrs = {"kernel": k, "stride": s, "pads": pads, "ceil_mode": ceil, "count_include_pad": include_pad}
    y = b.run("avg_pool2d", {"x": x}, attrs)["y"]
    gy = rand(*y.shape)
    want_y, want_gx = avg_pool_loop(x, gy, k, s, pads, ceil, include_pad)
    np.testing.assert_allclose(y, want_y, atol=1e-14)
    np.testing.assert_allclose(b.vjp("avg_pool2d", {"x": x}, {"y": gy}, attrs)["x"], want_gx, atol=1e-14)


@pytest.mark.parametrize(("include_pad", "first"), [(True, 12 / 9), (False, 3.0)])
def test_avg_pool_divisor_rules_on_arange(b, include_pad, first):
    x = np.arange(25.0).reshape(1, 1, 5, 5)
    attrs = {"kernel": [3, 3], "stride": [2, 2], "pads": [1, 1, 1, 1], "count_include_pad": include_pad}
    assert b.run("avg_pool2d", {"x": x}, attrs)["y"][0, 0, 0, 0] == pytest.approx(first, abs=1e-15)


def test_global_avg_pool(b):
    x = rand(2, 3, 4, 5)
    np.testing.assert_allclose(b.run("global_avg_pool2d", {"x": x})["y"][:, :, 0, 0],
                               [[x[n, c].sum() / 20 for c in range(3)] for n in range(2)], atol=1e-14)


# --- activations, softmax, losses ----------------------------------------------------------------

def test_sigmoid_saturates_exactly_without_warnings(b):
    x = np.array([-1000, -80, -20, 0, 20, 100, 1000], np.float32)   # σ(−80) ≈ 1.8e-35 is still normal
    with warnings.catch_warnings(), np.errstate(over="raise", invalid="raise", divide="raise"):
        warnings.simplefilter("error")
        y = b.run("sigmoid", {"x": x})["y"]
        g = b.vjp("sigmoid", {"x": x}, {"y": np.ones(7, np.float32)})["x"]
    assert y.dtype == np.float32 and y[0] == 0.0 and y[-1] == 1.0 and y[3] == 0.5
    np.testing.assert_allclose(y[1:6], [sig(float(v)) for v in x[1:6]], rtol=1e-6)
    # σ'(20) = σ(20)σ(−20) ≈ 2.06e-9; the naive y(1 − y) gives 0 in float32
    assert g[4] == pytest.approx(math.exp(-20) / (1 + math.exp(-20)) ** 2, rel=1e-5)
    assert g[0] == 0.0 and np.isnan(b.run("sigmoid", {"x": np.array([np.nan])})["y"][0])


def test_tanh_gradient_stays_accurate_where_tanh_rounds_to_one(b):
    g = b.vjp("tanh", {"x": np.array([12.0], np.float32)}, {"y": np.ones(1, np.float32)})["x"]
    assert g[0] == pytest.approx(1 / math.cosh(12.0) ** 2, rel=1e-5)     # 1 − tanh² would be 0


def test_relu_derivative_at_zero_is_zero(b):
    g = b.vjp("relu", {"x": np.array([-1.0, 0.0, 2.0])}, {"y": np.array([5.0, 5.0, 5.0])})["x"]
    np.testing.assert_array_equal(g, [0.0, 0.0, 5.0])


def test_softmax_rows_with_minus_infinity(b):
    x = np.array([[-np.inf, 3.0, -np.inf], [1000.0, 1000.0, -1000.0]])
    with np.errstate(over="raise", invalid="raise"):
        p = b.run("softmax", {"x": x})["y"]
        lp = b.run("log_softmax", {"x": x})["y"]
    np.testing.assert_array_equal(p[0], [0, 1, 0])
    np.testing.assert_array_equal(lp[0], [-np.inf, 0, -np.inf])
    np.testing.assert_allclose(p[1], [0.5, 0.5, 0.0], atol=1e-300)
    np.testing.assert_allclose(lp[1], [-math.log(2), -math.log(2), -2000 - math.log(2)], rtol=1e-15)


def test_softmax_along_an_axis(b):
    x = rand(3, 4, 2)
    p = b.run("softmax", {"x": x}, {"axis": 1})["y"]
    for i, k in itertools.product(range(3), range(2)):
        e = [math.exp(v) for v in x[i, :, k]]
        np.testing.assert_allclose(p[i, :, k], [v / sum(e) for v in e], rtol=1e-14)


def test_binary_cross_entropy_is_finite_at_large_logits(b):
    z, t = np.array([100.0, -100.0, 0.5, -2.0], np.float32), np.array([0.0, 1.0, 1.0, 0.25], np.float32)
    loss = b.run("binary_cross_entropy", {"logits": z, "targets": t})["loss"]
    want = sum(-(tt * math.log(sig(zz)) + (1 - tt) * math.log(sig(-zz))) if abs(zz) < 50 else abs(zz)
               for zz, tt in zip(z.astype(float), t.astype(float), strict=True)) / 4
    assert loss.dtype == np.float32 and loss.shape == ()
    assert float(loss) == pytest.approx(want, rel=1e-6)


def test_cross_entropy_against_loops(b):
    z, labels = rand(4, 3), np.array([2, 0, 1, 2])
    loss = b.run("cross_entropy", {"logits": z, "labels": labels})["loss"]
    want = sum(math.log(sum(math.exp(v) for v in z[n])) - z[n, labels[n]] for n in range(4)) / 4
    assert float(loss) == pytest.approx(want, rel=1e-14)
    g = b.vjp("cross_entropy", {"logits": z, "labels": labels}, {"loss": np.array(2.0)})
    assert set(g) == {"logits"}
    for n, k in itertools.product(range(4), range(3)):
        p = math.exp(z[n, k]) / sum(math.exp(v) for v in z[n])
        assert g["logits"][n, k] == pytest.approx(2.0 * (p - (k == labels[n])) / 4, abs=1e-15)


def test_maxout_ties_go_to_the_first_piece(b):
    x, w, bias = np.array([[1.0, 2.0]]), np.array([[1.0, 1, 0, 2], [0, 0, 1, 0]]), np.zeros(4)
    y = b.run("maxout", {"x": x, "w": w, "b": bias}, {"pieces": 2})["y"]
    np.testing.assert_array_equal(y, [[1.0, 2.0]])          # pieces (1, 1) and (2, 2): ties
    g = b.vjp("maxout", {"x": x, "w": w, "b": bias}, {"y": np.array([[3.0, 5.0]])}, {"pieces": 2})
    np.testing.assert_array_equal(g["b"], [3.0, 0.0, 5.0, 0.0])


# --- LRN, LSTM, inception -------------------------------------------------------------------------

@pytest.mark.parametrize("size", [1, 2, 3, 4, 5, 9])
def test_lrn_matches_loops(b, size):
    x, attrs = rand(2, 7, 3, 2), {"size": size, "alpha": 0.3, "beta": 0.75, "bias": 1.5}
    want = np.zeros(x.shape)
    for n, c, i, j in np.ndindex(x.shape):
        lo, hi = max(0, c - (size - 1) // 2), min(6, c + math.ceil((size - 1) / 2))
        s = sum(x[n, k, i, j] ** 2 for k in range(lo, hi + 1))
        want[n, c, i, j] = x[n, c, i, j] / (1.5 + 0.3 / size * s) ** 0.75
    np.testing.assert_allclose(b.run("lrn", {"x": x}, attrs)["y"], want, rtol=1e-14)
    gy = rand(*x.shape)
    fd = fd_grads(b, "lrn", {"x": x}, attrs, {"y": gy}, ["x"])
    np.testing.assert_allclose(b.vjp("lrn", {"x": x}, {"y": gy}, attrs)["x"], fd["x"], atol=1e-8)


def _lstm_inputs(t_len, n, i, h):
    # gate blocks i, f, g, o get distinct bias offsets so a permutation of the blocks cannot pass
    bias = rand(4 * h) + np.repeat([0.5, -1.0, 1.5, -2.0], h)
    return {"x": rand(t_len, n, i), "h0": rand(n, h), "c0": rand(n, h), "w_ih": rand(4 * h, i),
            "w_hh": rand(4 * h, h), "b": bias}


def _lstm_loop(d):
    x, hid = d["x"], d["h0"].shape[1]
    h, c, ys = d["h0"].copy(), d["c0"].copy(), []
    for t in range(x.shape[0]):
        hn, cn = np.zeros(h.shape), np.zeros(c.shape)
        for n, j in np.ndindex(h.shape):
            z = [d["b"][k * hid + j] + sum(d["w_ih"][k * hid + j, m] * x[t, n, m] for m in range(x.shape[2]))
                 + sum(d["w_hh"][k * hid + j, m] * h[n, m] for m in range(hid)) for k in range(4)]
            cn[n, j] = sig(z[1]) * c[n, j] + sig(z[0]) * math.tanh(z[2])
            hn[n, j] = sig(z[3]) * math.tanh(cn[n, j])
        h, c = hn, cn
        ys.append(h)
    return np.array(ys), h, c


def test_lstm_and_cell_match_loops(b):
    d = _lstm_inputs(3, 2, 4, 3)
    ys, h, c = _lstm_loop(d)
    out = b.run("lstm", d)
    np.testing.assert_allclose(out["y"], ys, atol=1e-14)
    np.testing.assert_allclose(out["h"], h, atol=1e-14)
    np.testing.assert_allclose(out["c"], c, atol=1e-14)
    cell = b.run("lstm_cell", {"x": d["x"][0], "h": d["h0"], "c": d["c0"], "w_ih": d["w_ih"], "w_hh": d["w_hh"],
                               "b": d["b"]})
    np.testing.assert_allclose(cell["h"], ys[0], atol=1e-14)


def test_lstm_backward_through_time_against_finite_differences(b):
    d = _lstm_inputs(4, 2, 3, 2)
    out = b.run("lstm", d)
    cots = {k: rand(*v.shape) for k, v in out.items()}
    got = b.vjp("lstm", d, cots)
    fd = fd_grads(b, "lstm", d, {}, cots, list(d))
    for k in d:
        np.testing.assert_allclose(got[k], fd[k], atol=1e-7, err_msg=k)


def test_inception_matches_composed_loops(b):
    c = 2
    d = {"x": rand(1, c, 5, 5), "w1": rand(2, c, 1, 1), "b1": rand(2), "w3r": rand(2, c, 1, 1), "b3r": rand(2),
         "w3": rand(1, 2, 3, 3), "b3": rand(1), "w5r": rand(1, c, 1, 1), "b5r": rand(1), "w5": rand(2, 1, 5, 5),
         "b5": rand(2), "wp": rand(1, c, 1, 1), "bp": rand(1)}
    relu = lambda a: np.maximum(a, 0)                      # noqa: E731 - a one-line helper for the loops
    pooled, _ = max_pool_loop(d["x"], np.zeros((1, c, 5, 5)), (3, 3), (1, 1), (1, 1, 1, 1))
    branches = [
        relu(conv_loop(d["x"], d["w1"], d["b1"])),
        relu(conv_loop(relu(conv_loop(d["x"], d["w3r"], d["b3r"])), d["w3"], d["b3"], pads=(1, 1, 1, 1))),
        relu(conv_loop(relu(conv_loop(d["x"], d["w5r"], d["b5r"])), d["w5"], d["b5"], pads=(2, 2, 2, 2))),
        relu(conv_loop(pooled, d["wp"], d["bp"])),
    ]
    y = b.run("inception", d)["y"]
    np.testing.assert_allclose(y, np.concatenate(branches, axis=1), atol=1e-13)
    gy = rand(*y.shape)
    got = b.vjp("inception", d, {"y": gy})
    fd = fd_grads(b, "inception", d, {}, {"y": gy}, ["x", "w3", "b5", "wp"])
    for k, v in fd.items():
        np.testing.assert_allclose(got[k], v, atol=1e-7, err_msg=k)
    assert set(got) == set(d)


# --- every concept: gradients, dtypes --------------------------------------------------------------

ALL_CASES = {
    "sigmoid": ({"x": (3, 4)}, {}), "relu": ({"x": (3, 4)}, {}), "tanh": ({"x": (3, 4)}, {}),
    "softmax": ({"x": (3, 4)}, {"axis": 0}), "log_softmax": ({"x": (2, 4, 3)}, {"axis": 1}),
    "dense": ({"x": (3, 4), "w": (4, 5), "b": (5,)}, {}),
    "layer": ({"x": (3, 4), "w": (4, 5), "b": (5,)}, {"activation": "tanh"}),
    "maxout": ({"x": (3, 4), "w": (4, 6), "b": (6,)}, {"pieces": 3}),
    "logistic_regression": ({"x": (3, 4), "w": (4,), "b": ()}, {}),
    "softmax_regression": ({"x": (3, 4), "w": (4, 5), "b": (5,)}, {}),
    "binary_cross_entropy": ({"logits": (5,), "targets": (5,)}, {}),
    "cross_entropy": ({"logits": (5, 3)}, {}),
    "conv2d": ({"x": (2, 4, 6, 5), "w": (6, 2, 3, 2), "b": (6,)}, CONV_CASES[0][2]),
    "convolve2d": ({"x": (2, 4, 6, 5), "w": (6, 2, 3, 2), "b": (6,)}, CONV_CASES[0][2]),
    "conv2d_fft": ({"x": (2, 4, 6, 5), "w": (6, 2, 3, 2), "b": (6,)}, CONV_CASES[0][2]),
    "max_pool2d": ({"x": (2, 2, 5, 6)}, {"kernel": [3, 2], "stride": [2, 1], "pads": [1, 1, 2, 0], "ceil_mode": True}),
    "avg_pool2d": ({"x": (2, 2, 5, 6)}, {"kernel": [3, 2], "stride": [2, 1], "pads": [1, 1, 2, 0], "ceil_mode": True}),
    "global_avg_pool2d": ({"x": (2, 3, 4, 5)}, {}),
    "lrn": ({"x": (2, 6, 3, 2)}, {"size": 3, "alpha": 0.5, "beta": 0.6, "bias": 2.0}),
    "lstm_cell": ({"x": (3, 4), "h": (3, 2), "c": (3, 2), "w_ih": (8, 4), "w_hh": (8, 2), "b": (8,)}, {}),
    "lstm": ({"x": (3, 2, 2), "h0": (2, 3), "c0": (2, 3), "w_ih": (12, 2), "w_hh": (12, 3), "b": (12,)}, {}),
    "inception": ({"x": (1, 2, 4, 4), "w1": (1, 2, 1, 1), "b1": (1,), "w3r": (2, 2, 1, 1), "b3r": (2,),
                   "w3": (1, 2, 3, 3), "b3": (1,), "w5r": (1, 2, 1, 1), "b5r": (1,), "w5": (1, 1, 5, 5),
                   "b5": (1,), "wp": (1, 2, 1, 1), "bp": (1,)}, {}),
}


def _inputs(concept: str, dtype) -> dict:
    shapes, _ = ALL_CASES[concept]
    d = {k: rand(*s, dtype=dtype) for k, s in shapes.items()}
    if concept == "binary_cross_entropy":
        d["targets"] = RNG.uniform(size=5).astype(dtype)
    if concept == "cross_entropy":
        d["labels"] = np.array([0, 2, 1, 1, 0])
    return d


def test_every_concept_is_covered(b):
    assert set(ALL_CASES) == set(b.spec.concepts) == set(b.concepts)


@pytest.mark.parametrize("concept", sorted(ALL_CASES))
def test_vjp_against_finite_differences(b, concept):
    d, attrs = _inputs(concept, np.float64), ALL_CASES[concept][1]
    out = b.run(concept, d, attrs)
    cots = {k: rand(*v.shape) for k, v in out.items()}
    got = b.vjp(concept, d, cots, attrs)
    names = list(b.spec.concept(concept).differentiable)
    assert set(got) == {n for n in names if n in d}
    for name, g in fd_grads(b, concept, d, attrs, cots, list(got)).items():
        np.testing.assert_allclose(got[name], g, atol=1e-7 * max(1.0, np.abs(g).max()), err_msg=name)


@pytest.mark.parametrize("concept", sorted(ALL_CASES))
def test_float32_stays_float32(b, concept):
    d, attrs = _inputs(concept, np.float32), ALL_CASES[concept][1]
    out = b.run(concept, d, attrs)
    grads = b.vjp(concept, d, {k: np.ones_like(v) for k, v in out.items()}, attrs)
    for k, v in {**out, **grads}.items():
        assert v.dtype == np.float32, k
    for k, v in grads.items():
        assert v.shape == d[k].shape, k


@pytest.mark.parametrize("concept", ["maxout", "conv2d", "conv2d_fft", "max_pool2d", "lstm", "cross_entropy"])
def test_empty_batch(b, concept):
    d, attrs = _inputs(concept, np.float32), ALL_CASES[concept][1]
    axis = {"lstm": {"x": 1, "h0": 0, "c0": 0}}.get(concept, {"x": 0, "logits": 0, "labels": 0})
    d = {k: np.take(v, [], axis=axis[k]) if k in axis else v for k, v in d.items()}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = b.run(concept, d, attrs)
        grads = b.vjp(concept, d, {k: np.zeros_like(v) for k, v in out.items()}, attrs)
    for k, v in out.items():
        assert np.isnan(v) if v.ndim == 0 else v.size == 0, k      # a mean over nothing is 0/0
    assert all(grads[k].shape == d[k].shape for k in grads)


# --- device selection, benchmark level, independence -----------------------------------------------

def test_device_selection():
    assert CupyBackend(device="cpu").device == "cpu (numpy)"
    assert backends.load("cupy", device="cpu").name == "cupy"
    with pytest.raises(BackendUnavailable, match="unknown device"):
        CupyBackend(device="tpu")
    assert CupyBackend(device="cpu").deviations == {}          # the NumPy path keeps subnormals
    if CupyBackend().device == "cpu (numpy)":
        for dev in ("cuda", "cuda:0", "cuda:3"):
            with pytest.raises(BackendUnavailable):
                CupyBackend(device=dev)


def test_benchmark_level_calls(b):
    x, w = rand(2, 3, 5, 5, dtype=np.float32), rand(4, 3, 3, 3, dtype=np.float32)
    op = b.op("conv2d", {"pads": [1, 1, 1, 1]})
    y = op(x=b.to_native(x), w=b.to_native(w))["y"]
    b.synchronize()
    np.testing.assert_allclose(b.to_numpy(y), conv_loop(x, w, None, pads=(1, 1, 1, 1)), atol=1e-5)
    b.warmup()


_INDEPENDENCE = """
import sys
{block}
import numpy as np
from nutshell.backends.cupy_impl import CupyBackend
b = CupyBackend()
y = b.run("conv2d", {{"x": np.ones((1, 1, 3, 3)), "w": np.ones((1, 1, 2, 2))}})["y"]
assert y.sum() == 16.0, y
banned = [m for m in ("torch", "onnxruntime", "onnx", "tensorflow", "jax", "keras", "chainer") if m in sys.modules]
assert not banned, banned
print(b.device)
"""


@pytest.mark.parametrize("without_cupy", [False, True])
def test_imports_no_deep_learning_library_and_runs_without_cupy(without_cupy):
    block = "sys.modules['cupy'] = None  # as if not installed" if without_cupy else ""
    run = subprocess.run([sys.executable, "-c", _INDEPENDENCE.format(block=block)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    if without_cupy:
        assert run.stdout.strip() == "cpu (numpy)"
