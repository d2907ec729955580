"""The TensorFlow float64 oracle against pencil values, plain NumPy loops and finite differences."""

from __future__ import annotations

import numpy as np
import pytest

from nutshell import spec
from nutshell.errors import BackendUnavailable
from nutshell.spec import shapes, tf_oracle, validate

try:  # through the oracle, so TF's start-up logging is silenced before the import
    tf_oracle.tensorflow()
except BackendUnavailable:
    pytest.skip("tensorflow is not installed", allow_module_level=True)

CONV = {"stride": [2, 1], "pads": [1, 0, 2, 1], "dilation": [1, 2], "groups": 2}
CONV_IN = {"x": (2, 4, 7, 6), "w": (6, 2, 3, 2), "b": (6,)}
LSTM_W = {"w_ih": (8, 4), "w_hh": (8, 2), "b": (8,)}

# concept -> (input shapes, attrs): every concept of the spec, with non-default attrs where they exist
CASES: dict[str, tuple[dict, dict]] = {
    "sigmoid": ({"x": (3, 4)}, {}),
    "relu": ({"x": (3, 4)}, {}),
    "tanh": ({"x": (3, 4)}, {}),
    "softmax": ({"x": (2, 5, 3)}, {"axis": 1}),
    "log_softmax": ({"x": (4, 5)}, {}),
    "dense": ({"x": (3, 4), "w": (4, 5), "b": (5,)}, {}),
    "layer": ({"x": (3, 4), "w": (4, 5), "b": (5,)}, {"activation": "tanh"}),
    "maxout": ({"x": (3, 4), "w": (4, 6), "b": (6,)}, {"pieces": 3}),
    "logistic_regression": ({"x": (5, 3), "w": (3,), "b": ()}, {}),
    "softmax_regression": ({"x": (5, 3), "w": (3, 4), "b": (4,)}, {}),
    "binary_cross_entropy": ({"logits": (6,), "targets": (6,)}, {}),
    "cross_entropy": ({"logits": (5, 4), "labels": (5,)}, {}),
    "conv2d": (CONV_IN, CONV),
    "convolve2d": (CONV_IN, CONV),
    "conv2d_fft": (CONV_IN, CONV),
    "max_pool2d": ({"x": (2, 3, 8, 7)}, {"kernel": [3, 2], "stride": [2, 2], "pads": [1, 0, 1, 1],
                                         "dilation": [1, 2], "ceil_mode": True}),
    "avg_pool2d": ({"x": (2, 3, 8, 7)}, {"kernel": [3, 3], "stride": [2, 2], "pads": [1, 1, 1, 0],
                                         "ceil_mode": True, "count_include_pad": True}),
    "global_avg_pool2d": ({"x": (2, 3, 4, 5)}, {}),
    "lrn": ({"x": (2, 6, 3, 3)}, {"size": 4, "alpha": 0.5, "beta": 0.75, "bias": 2.0}),
    "lstm_cell": ({"x": (3, 4), "h": (3, 2), "c": (3, 2), **LSTM_W}, {}),
    "lstm": ({"x": (3, 2, 4), "h0": (2, 2), "c0": (2, 2), **LSTM_W}, {}),
    "inception": ({"x": (1, 3, 5, 5), "w1": (2, 3, 1, 1), "b1": (2,), "w3r": (2, 3, 1, 1), "b3r": (2,),
                   "w3": (3, 2, 3, 3), "b3": (3,), "w5r": (1, 3, 1, 1), "b5r": (1,), "w5": (2, 1, 5, 5),
                   "b5": (2,), "wp": (2, 3, 1, 1), "bp": (2,)}, {}),
}


def full(cid: str, inputs: dict, attrs: dict | None = None) -> tuple[dict, dict]:
    """Validated inputs and attrs with every default filled, as the oracle expects them."""
    arrays, attrs, _ = validate.check(spec.load().concept(cid), inputs, attrs)
    return arrays, attrs


def case(cid: str, seed: int = 0) -> tuple[dict, dict]:
    """Random float64 inputs for CASES[cid]: normal values, targets in [0, 1], labels in [0, K)."""
    rng = np.random.default_rng(seed)
    in_shapes, attrs = CASES[cid]
    inputs = {k: rng.standard_normal(s) for k, s in in_shapes.items()}
    if cid == "binary_cross_entropy":
        inputs["targets"] = rng.uniform(size=in_shapes["targets"])
    if cid == "cross_entropy":
        inputs["labels"] = rng.integers(0, in_shapes["logits"][1], size=in_shapes["labels"])
    return full(cid, inputs, attrs)


# --- plain float64 loops ----------------------------------------------------------------------

def conv_loop(x, w, b, stride, pads, dilation, groups):
    """y[n,o,i,j] = b[o] + Σ w[o,c,p,q] · xpad[n, g·C/G + c, i·sh + p·dh, j·sw + q·dw]."""
    (n, _, h, wd), (o, cg, kh, kw) = x.shape, w.shape
    xp = np.pad(x, [(0, 0), (0, 0), (pads[0], pads[2]), (pads[1], pads[3])])
    oh = shapes.conv_out(h, kh, stride[0], pads[0], pads[2], dilation[0])
    ow = shapes.conv_out(wd, kw, stride[1], pads[1], pads[3], dilation[1])
    y = np.zeros((n, o, oh, ow))
    for ni, oi, i, j, ci, p, q in np.ndindex(n, o, oh, ow, cg, kh, kw):
        c = oi // (o // groups) * cg + ci
        y[ni, oi, i, j] += w[oi, ci, p, q] * xp[ni, c, i * stride[0] + p * dilation[0], j * stride[1] + q * dilation[1]]
    return y + b[None, :, None, None]


def pool_loop(x, kernel, stride, pads, ceil_mode, dilation=(1, 1), mode="max", count_include_pad=False):
    """Max or average of the real pixels of each window (max: −inf for a window of padding only);
    the average divides by the pixels inside the input, or (count_include_pad) inside the input
    padded by ``pads``."""
    n, c, h, w = x.shape
    oh = shapes.pool_out(h, kernel[0], stride[0], pads[0], pads[2], dilation[0], ceil_mode)
    ow = shapes.pool_out(w, kernel[1], stride[1], pads[1], pads[3], dilation[1], ceil_mode)
    y = np.zeros((n, c, oh, ow))
    for ni, ci, i, j in np.ndindex(n, c, oh, ow):
        vals, padded = [], 0
        for p, q in np.ndindex(*kernel):
            r, s = i * stride[0] + p * dilation[0] - pads[0], j * stride[1] + q * dilation[1] - pads[1]
            if 0 <= r < h and 0 <= s < w:
                vals.append(x[ni, ci, r, s])
            padded += -pads[0] <= r < h + pads[2] and -pads[1] <= s < w + pads[3]
        divisor = padded if count_include_pad else len(vals)
        y[ni, ci, i, j] = max(vals, default=-np.inf) if mode == "max" else sum(vals) / divisor
    return y


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


# --- pencil values and loops ------------------------------------------------------------------

def test_figure3_convolution():
    x = np.array([[1, 1, 1, 0, 0], [0, 1, 1, 1, 0], [0, 0, 1, 1, 1], [0, 0, 1, 1, 0], [0, 1, 1, 0, 0]], float)
    w = np.array([[1, 0, 1], [0, 1, 0], [1, 0, 1]], float)
    for cid in ("conv2d", "convolve2d", "conv2d_fft"):  # w is symmetric: flipping changes nothing
        y = tf_oracle.forward(cid, *full(cid, {"x": x[None, None], "w": w[None, None]}))["y"]
        np.testing.assert_array_equal(y[0, 0], [[4, 3, 4], [2, 4, 3], [2, 3, 4]])


@pytest.mark.parametrize("attrs", [CONV, {"stride": [1, 2], "pads": [2, 1, 0, 3], "dilation": [2, 1], "groups": 1}])
def test_conv_matches_loop(attrs):
    inputs, attrs = case("conv2d") if attrs is CONV else full("conv2d", {
        "x": np.random.default_rng(1).standard_normal((1, 3, 6, 5)),
        "w": np.random.default_rng(2).standard_normal((2, 3, 2, 3)), "b": np.ones(2)}, attrs)
    loop = conv_loop(inputs["x"], inputs["w"], inputs["b"], **attrs)
    np.testing.assert_allclose(tf_oracle.forward("conv2d", inputs, attrs)["y"], loop, rtol=1e-13, atol=1e-13)
    flipped = conv_loop(inputs["x"], inputs["w"][:, :, ::-1, ::-1], inputs["b"], **attrs)
    np.testing.assert_allclose(tf_oracle.forward("convolve2d", inputs, attrs)["y"], flipped, rtol=1e-13, atol=1e-13)


def test_avg_pool_divisor():
    x = np.arange(25, dtype=float).reshape(1, 1, 5, 5)
    for include, first in ((True, 4 * 3 / 9), (False, 3.0)):  # (0 + 1 + 5 + 6) / 9 or / 4
        inputs, attrs = full("avg_pool2d", {"x": x}, {"kernel": [3, 3], "stride": [2, 2], "pads": [1, 1, 1, 1],
                                                      "count_include_pad": include})
        assert tf_oracle.forward("avg_pool2d", inputs, attrs)["y"][0, 0, 0, 0] == pytest.approx(first, rel=1e-15)


@pytest.mark.parametrize("include", [False, True])
def test_pools_match_loop(include):
    inputs, attrs = case("avg_pool2d")
    attrs = attrs | {"count_include_pad": include}
    loop = pool_loop(inputs["x"], attrs["kernel"], attrs["stride"], attrs["pads"], True, mode="avg",
                     count_include_pad=include)
    np.testing.assert_allclose(tf_oracle.forward("avg_pool2d", inputs, attrs)["y"], loop, rtol=1e-13, atol=1e-15)
    inputs, attrs = case("max_pool2d")
    loop = pool_loop(inputs["x"], attrs["kernel"], attrs["stride"], attrs["pads"], True, attrs["dilation"])
    np.testing.assert_array_equal(tf_oracle.forward("max_pool2d", inputs, attrs)["y"], loop)


def test_max_pool_ties_and_padding():
    inputs, attrs = full("max_pool2d", {"x": np.ones((1, 1, 3, 3))}, {"kernel": [2, 2], "stride": [1, 1]})
    g = tf_oracle.vjp("max_pool2d", inputs, {"y": np.ones((1, 1, 2, 2))}, attrs)["x"]
    np.testing.assert_array_equal(g[0, 0], [[1, 1, 0], [1, 1, 0], [0, 0, 0]])  # each window's first element
    inputs, attrs = full("max_pool2d", {"x": -5 * np.ones((1, 1, 2, 2))}, {"kernel": [2, 2], "pads": [1, 1, 1, 1]})
    np.testing.assert_array_equal(tf_oracle.forward("max_pool2d", inputs, attrs)["y"], -5.0)  # −inf padding


def test_maxout_ties_go_to_first_piece():
    inputs, attrs = full("maxout", {"x": np.ones((1, 2)), "w": np.zeros((2, 4)), "b": np.zeros(4)}, {"pieces": 2})
    g = tf_oracle.vjp("maxout", inputs, {"y": np.ones((1, 2))}, attrs)
    np.testing.assert_array_equal(g["b"], [1, 0, 1, 0])


def test_lstm_cell_gate_order():
    gates = np.array([0.5, -1.0, 2.0, 0.25])  # i, f, g, o: one constant per block
    c = np.array([[0.3, -0.7]])
    inputs, attrs = full("lstm_cell", {"x": np.ones((1, 3)), "h": np.ones((1, 2)), "c": c, "w_ih": np.zeros((8, 3)),
                                       "w_hh": np.zeros((8, 2)), "b": np.repeat(gates, 2)})
    out = tf_oracle.forward("lstm_cell", inputs, attrs)
    i, f, g, o = gates
    c2 = sigmoid(f) * c + sigmoid(i) * np.tanh(g)
    np.testing.assert_allclose(out["c"], c2, rtol=1e-15)
    np.testing.assert_allclose(out["h"], sigmoid(o) * np.tanh(c2), rtol=1e-15)


def test_lstm_matches_loop():
    inputs, attrs = case("lstm")
    h, c = inputs["h0"], inputs["c0"]
    for x in inputs["x"]:
        i, f, g, o = np.split(x @ inputs["w_ih"].T + h @ inputs["w_hh"].T + inputs["b"], 4, axis=1)
        c = sigmoid(f) * c + sigmoid(i) * np.tanh(g)
        h = sigmoid(o) * np.tanh(c)
    out = tf_oracle.forward("lstm", inputs, attrs)
    np.testing.assert_allclose(out["h"], h, rtol=1e-13)
    np.testing.assert_allclose(out["c"], c, rtol=1e-13)


def test_extremes():
    logits = np.array([0.0, 100.0, -100.0])
    inputs, attrs = full("binary_cross_entropy", {"logits": logits, "targets": np.full(3, 0.25)})
    g = tf_oracle.vjp("binary_cross_entropy", inputs, {"loss": np.array(1.0)}, attrs)["logits"]
    assert g[0] == pytest.approx((0.5 - 0.25) / 3, rel=1e-15)  # σ(0) − t at the kink of |z|
    assert np.isfinite(tf_oracle.forward("binary_cross_entropy", inputs, attrs)["loss"])
    row = {"x": np.array([[-np.inf, 1.0, -np.inf]])}
    np.testing.assert_array_equal(tf_oracle.forward("softmax", *full("softmax", row))["y"], [[0, 1, 0]])
    np.testing.assert_array_equal(tf_oracle.forward("log_softmax", *full("log_softmax", row))["y"],
                                  [[-np.inf, 0, -np.inf]])
    np.testing.assert_array_equal(tf_oracle.forward("sigmoid", *full("sigmoid", {"x": np.array([-1e3, 1e3])}))["y"],
                                  [0, 1])
    inputs, attrs = full("relu", {"x": np.zeros(1)})
    assert tf_oracle.vjp("relu", inputs, {"y": np.ones(1)}, attrs)["x"][0] == 0  # relu'(0) = 0


# --- every concept: float64 out, vjp against finite differences -------------------------------

def test_cases_cover_the_spec():
    assert set(CASES) == set(spec.load().concepts) == set(tf_oracle.OPS)


@pytest.mark.parametrize("cid", sorted(CASES))
def test_vjp_matches_finite_differences(cid):
    """⟨vjp(ȳ), v⟩ = d/dε ⟨ȳ, f(x + ε v)⟩ by central differences, one input at a time."""
    inputs, attrs = case(cid)
    rng = np.random.default_rng(7)
    out = tf_oracle.forward(cid, inputs, attrs)
    cots = {k: rng.standard_normal(y.shape) for k, y in out.items()}
    grads = tf_oracle.vjp(cid, inputs, cots, attrs)
    assert all(a.dtype == np.float64 for a in (*out.values(), *grads.values()))
    assert set(grads) == {k for k in spec.load().concept(cid).differentiable if k in inputs}

    def phi(name, v, eps):
        moved = tf_oracle.forward(cid, inputs | {name: inputs[name] + eps * v}, attrs)
        return sum(float(np.sum(cots[k] * y)) for k, y in moved.items())

    eps = 1e-6
    for name, g in grads.items():
        assert g.shape == inputs[name].shape
        v = rng.standard_normal(g.shape)
        fd = (phi(name, v, eps) - phi(name, v, -eps)) / (2 * eps)
        assert float(np.sum(g * v)) == pytest.approx(fd, rel=1e-6, abs=1e-8), name


@pytest.mark.parametrize("cid", sorted(CASES))
def test_agrees_with_numpy_reference(cid):
    """The two oracles agree normwise, max|a − b| / max|b| ≤ 1e-10, on outputs and vjp."""
    reference = pytest.importorskip("nutshell.spec.reference")
    inputs, attrs = case(cid, seed=1)
    out, ref = tf_oracle.forward(cid, inputs, attrs), reference.forward(cid, inputs, attrs)
    cots = {k: np.random.default_rng(2).standard_normal(y.shape) for k, y in out.items()}
    grads, ref_grads = tf_oracle.vjp(cid, inputs, cots, attrs), reference.vjp(cid, inputs, cots, attrs)
    assert set(out) == set(ref) and set(grads) == set(ref_grads)
    for name, a, b in [*((k, out[k], ref[k].v) for k in out), *((k, grads[k], ref_grads[k].v) for k in grads)]:
        assert np.max(np.abs(a - b)) <= 1e-10 * np.max(np.abs(b)), name
