"""The float64 oracle (spec/reference): pencil values, finite differences, and its error bounds.

Every vjp is checked against a central finite difference of its own forward; every bound is
checked to be finite and non-negative, positive where a rounding happens, and (for conv2d, dense,
softmax, lstm, inception, conv2d_fft) to cover a plain float32 NumPy computation of the same thing.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from nutshell import spec
from nutshell.spec import validate
from nutshell.spec.reference import forward, vjp
from nutshell.spec.signatures import output_shapes

SPEC = spec.load()
U32 = SPEC.tolerance["unit_roundoff"]["float32"]
FLOOR32 = SPEC.tolerance["underflow_floor"]["float32"]
FD_STEP = SPEC.tolerance["fd"]["step"]

EXACT = {"relu", "max_pool2d"}
"""Concepts whose forward does no rounding: their bound is 0."""


def checked(cid: str, inputs: dict, attrs: dict | None) -> tuple[dict, dict]:
    """(inputs, attrs) validated, attrs with every default filled in, as a backend receives them."""
    arrays, full, _ = validate.check(SPEC.concept(cid), inputs, attrs or {})
    return arrays, full


def fwd(cid: str, inputs: dict, attrs: dict | None = None) -> dict:
    return forward(cid, *checked(cid, inputs, attrs))


def back(cid: str, inputs: dict, cots: dict, attrs: dict | None = None) -> dict:
    arrays, full = checked(cid, inputs, attrs)
    return vjp(cid, arrays, cots, full)


# --- generic cases: every concept on small random inputs ----------------------------------------

def f32(a) -> np.ndarray:
    """Values exactly representable in float32, held in float64."""
    return np.asarray(a, np.float32).astype(np.float64)


def normal(rng, *shape, scale: float = 1.0) -> np.ndarray:
    return f32(scale * rng.standard_normal(shape))


def distinct(rng, *shape) -> np.ndarray:
    """A shuffled linspace: distinct values, none within 0.1 of 0 (no kink of relu or max)."""
    n = math.prod(shape)
    mags = np.linspace(0.1, 2.0, n)
    signs = np.where(np.arange(n) % 2 == 0, 1.0, -1.0)
    return f32(rng.permutation(mags * signs).reshape(shape))


def _conv_inputs(rng, groups: int = 1, bias: bool = True) -> dict:
    d = {"x": normal(rng, 2, 4, 9, 9), "w": normal(rng, 4, 4 // groups, 3, 3)}
    return d | ({"b": normal(rng, 4)} if bias else {})


def _lstm_inputs(rng, steps: int | None) -> dict:
    t, n, i, h = steps or 1, 3, 4, 5
    d = {"w_ih": normal(rng, 4 * h, i, scale=0.5), "w_hh": normal(rng, 4 * h, h, scale=0.5), "b": normal(rng, 4 * h)}
    if steps is None:
        return d | {"x": normal(rng, n, i), "h": normal(rng, n, h), "c": normal(rng, n, h)}
    return d | {"x": normal(rng, t, n, i), "h0": normal(rng, n, h), "c0": normal(rng, n, h)}


def _inception_inputs(rng) -> dict:
    c = 8
    d = {"x": distinct(rng, 2, c, 7, 7)}
    for name, cin, k, out in (("1", c, 1, 4), ("3r", c, 1, 5), ("3", 5, 3, 6), ("5r", c, 1, 4), ("5", 4, 5, 5),
                              ("p", c, 1, 6)):
        d["w" + name] = normal(rng, out, cin, k, k, scale=0.3)
        d["b" + name] = normal(rng, out, scale=0.1)
    return d


CASES = {
    "sigmoid": ("sigmoid", lambda r: {"x": normal(r, 3, 4, scale=3)}, {}),
    "relu": ("relu", lambda r: {"x": distinct(r, 3, 4)}, {}),
    "tanh": ("tanh", lambda r: {"x": normal(r, 2, 3, 2)}, {}),
    "softmax": ("softmax", lambda r: {"x": normal(r, 3, 5, scale=2)}, {}),
    "softmax-axis0": ("softmax", lambda r: {"x": normal(r, 3, 5, 2)}, {"axis": 0}),
    "log_softmax": ("log_softmax", lambda r: {"x": normal(r, 3, 5, scale=2)}, {"axis": 1}),
    "dense": ("dense", lambda r: {"x": normal(r, 3, 4), "w": normal(r, 4, 5), "b": normal(r, 5)}, {}),
    "dense-nobias": ("dense", lambda r: {"x": normal(r, 3, 4), "w": normal(r, 4, 5)}, {}),
    **{f"layer-{act}": ("layer", lambda r: {"x": normal(r, 3, 4), "w": normal(r, 4, 5), "b": normal(r, 5)},
                        {"activation": act}) for act in ("relu", "sigmoid", "tanh", "identity")},
    "maxout": ("maxout", lambda r: {"x": normal(r, 3, 4), "w": normal(r, 4, 6), "b": normal(r, 6)}, {"pieces": 3}),
    "logistic_regression": ("logistic_regression",
                            lambda r: {"x": normal(r, 4, 3), "w": normal(r, 3), "b": np.array(0.25)}, {}),
    "softmax_regression": ("softmax_regression",
                           lambda r: {"x": normal(r, 3, 4), "w": normal(r, 4, 5), "b": normal(r, 5)}, {}),
    "binary_cross_entropy": ("binary_cross_entropy",
                             lambda r: {"logits": normal(r, 6, scale=3), "targets": f32(r.random(6))}, {}),
    "cross_entropy": ("cross_entropy",
                      lambda r: {"logits": normal(r, 4, 5), "labels": np.array([0, 4, 2, 2])}, {}),
    "conv2d": ("conv2d", _conv_inputs, {}),
    "conv2d-strided": ("conv2d", lambda r: _conv_inputs(r, groups=2),
                       {"stride": [2, 1], "pads": [1, 0, 2, 1], "dilation": [1, 2], "groups": 2}),
    "conv2d-nobias": ("conv2d", lambda r: _conv_inputs(r, bias=False), {"stride": [3, 2], "pads": [2, 2, 2, 2]}),
    "convolve2d": ("convolve2d", lambda r: _conv_inputs(r, groups=4), {"pads": [1, 1, 0, 0], "groups": 4}),
    "conv2d_fft": ("conv2d_fft", lambda r: _conv_inputs(r, groups=2),
                   {"stride": [2, 2], "pads": [1, 2, 1, 0], "dilation": [2, 1], "groups": 2}),
    "max_pool2d": ("max_pool2d", lambda r: {"x": distinct(r, 2, 3, 7, 7)}, {"kernel": [3, 3], "stride": [2, 2]}),
    "max_pool2d-ceil-dil": ("max_pool2d", lambda r: {"x": distinct(r, 2, 3, 7, 8)},
                            {"kernel": [3, 2], "stride": [2, 1], "pads": [1, 0, 2, 1], "dilation": [2, 1],
                             "ceil_mode": True}),
    "avg_pool2d": ("avg_pool2d", lambda r: {"x": normal(r, 2, 3, 7, 7)},
                   {"kernel": [3, 3], "stride": [2, 2], "pads": [1, 1, 1, 1], "ceil_mode": True}),
    "avg_pool2d-include": ("avg_pool2d", lambda r: {"x": normal(r, 2, 3, 6, 7)},
                           {"kernel": [2, 3], "stride": [2, 2], "pads": [1, 1, 0, 2], "ceil_mode": True,
                            "count_include_pad": True}),
    "global_avg_pool2d": ("global_avg_pool2d", lambda r: {"x": normal(r, 2, 3, 4, 5)}, {}),
    "lrn": ("lrn", lambda r: {"x": normal(r, 2, 7, 3, 3)}, {"size": 3, "alpha": 0.5, "beta": 0.6, "bias": 1.5}),
    "lrn-even": ("lrn", lambda r: {"x": normal(r, 1, 6, 2, 2)}, {"size": 4, "alpha": 0.3, "beta": 0.75}),
    "lstm_cell": ("lstm_cell", lambda r: _lstm_inputs(r, None), {}),
    "lstm": ("lstm", lambda r: _lstm_inputs(r, 5), {}),
    "inception": ("inception", _inception_inputs, {}),
}


def make_case(case: str, seed: int = 0) -> tuple[str, dict, dict, dict]:
    """(concept, inputs, attrs, cotangents) for one generic case."""
    cid, build, attrs = CASES[case]
    rng = np.random.default_rng(seed)
    inputs = build(rng)
    shapes = output_shapes(cid, {k: v.shape for k, v in inputs.items()}, checked(cid, inputs, attrs)[1])
    cots = {k: normal(rng, *s) for k, s in shapes.items()}
    return cid, inputs, attrs, cots


def test_every_concept_has_a_case():
    assert {c for c, _, _ in CASES.values()} == set(SPEC.concepts)


# --- finite differences --------------------------------------------------------------------------

def _objective(cid: str, inputs: dict, attrs: dict, cots: dict) -> float:
    """φ = Σ_outputs ⟨cotangent, output⟩, whose gradient is the vjp."""
    out = fwd(cid, inputs, attrs)
    return sum(float(np.sum(cots[k] * out[k].v)) for k in cots)


@pytest.mark.parametrize("case", sorted(CASES))
def test_vjp_matches_central_finite_difference(case):
    cid, inputs, attrs, cots = make_case(case)
    grads = back(cid, inputs, cots, attrs)
    diff = {i.name for i in SPEC.concept(cid).inputs if i.differentiable and i.name in inputs}
    assert set(grads) == diff
    rng = np.random.default_rng(1)
    for name, g in grads.items():
        assert g.v.shape == inputs[name].shape, name
        d = rng.standard_normal(inputs[name].shape)
        plus = _objective(cid, inputs | {name: inputs[name] + FD_STEP * d}, attrs, cots)
        minus = _objective(cid, inputs | {name: inputs[name] - FD_STEP * d}, attrs, cots)
        fd = (plus - minus) / (2 * FD_STEP)
        analytic = float(np.sum(g.v * d))
        scale = float(np.sum(np.abs(g.v * d))) + 1e-12
        assert abs(fd - analytic) <= 1e-6 * scale, f"{case}: d/d{name}: fd {fd!r} vs vjp {analytic!r}"


# --- bounds ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("case", sorted(CASES))
def test_bounds_are_finite_nonnegative_and_positive_where_rounded(case):
    cid, inputs, attrs, cots = make_case(case)
    results = {f"out.{k}": t for k, t in fwd(cid, inputs, attrs).items()}
    results |= {f"grad.{k}": t for k, t in back(cid, inputs, cots, attrs).items()}
    for key, t in results.items():
        assert np.isfinite(t.v).all() and np.isfinite(t.e).all(), key
        assert (t.e >= 0).all(), key
        if cid in EXACT and key.startswith("out."):
            assert (t.e == 0).all(), key
        elif cid not in EXACT:
            assert (t.e[t.v != 0] > 0).all(), f"{case}: {key} has a zero bound on a rounded value"


# plain float32 NumPy versions of a few concepts, to check that a bound covers a real float32 run

def conv32(x, w, b, stride=(1, 1), pads=(0, 0, 0, 0), dilation=(1, 1), groups=1) -> np.ndarray:
    x = np.pad(x.astype(np.float32), ((0, 0), (0, 0), (pads[0], pads[2]), (pads[1], pads[3])))
    w = w.astype(np.float32)
    (n, _, hp, wp), (o, cg, kh, kw) = x.shape, w.shape
    (sh, sw), (dh, dw), og = stride, dilation, o // groups
    oh, ow = (hp - dh * (kh - 1) - 1) // sh + 1, (wp - dw * (kw - 1) - 1) // sw + 1
    y = np.zeros((n, o, oh, ow), np.float32)
    for g in range(groups):
        for p in range(kh):
            for q in range(kw):
                rows = slice(p * dh, p * dh + sh * (oh - 1) + 1, sh)
                cols = slice(q * dw, q * dw + sw * (ow - 1) + 1, sw)
                patch = x[:, g * cg:(g + 1) * cg, rows, cols]  # (N, Cg, oH, oW)
                y[:, g * og:(g + 1) * og] += np.einsum("ncij,oc->noij", patch, w[g * og:(g + 1) * og, :, p, q])
    return y + b.astype(np.float32)[:, None, None]


def fft_conv32(x, w, b, pads) -> np.ndarray:
    """conv2d (stride 1, groups 1) through float32 FFTs at the linear-convolution size."""
    x = np.pad(x.astype(np.float32), ((0, 0), (0, 0), (pads[0], pads[2]), (pads[1], pads[3])))
    (_, _, hp, wp), (_, _, kh, kw) = x.shape, w.shape
    size = (hp + kh - 1, wp + kw - 1)
    spectrum = np.einsum("ncuv,ocuv->nouv", np.fft.rfft2(x, size),
                         np.fft.rfft2(w[:, :, ::-1, ::-1].astype(np.float32), size))
    y = np.fft.irfft2(spectrum, size)[:, :, kh - 1:hp, kw - 1:wp]
    return (y + b.astype(np.float32)[:, None, None]).astype(np.float32)


def softmax32(x) -> np.ndarray:
    e = np.exp(x.astype(np.float32) - x.astype(np.float32).max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def sigmoid32(z) -> np.ndarray:
    return np.float32(1) / (np.float32(1) + np.exp(-z))


def lstm32(x, h0, c0, w_ih, w_hh, b) -> dict:
    x, h, c, w_ih, w_hh, b = (a.astype(np.float32) for a in (x, h0, c0, w_ih, w_hh, b))
    hid, ys = h.shape[1], []
    for xt in x:
        z = xt @ w_ih.T + h @ w_hh.T + b
        i, f, g, o = (z[:, k * hid:(k + 1) * hid] for k in range(4))
        c = sigmoid32(f) * c + sigmoid32(i) * np.tanh(g)
        h = sigmoid32(o) * np.tanh(c)
        ys.append(h)
    return {"y": np.stack(ys), "h": h, "c": c}


def maxpool3x3_32(x) -> np.ndarray:
    xp = np.pad(x.astype(np.float32), ((0, 0), (0, 0), (1, 1), (1, 1)), constant_values=-np.inf)
    h, w = x.shape[2:]
    return np.max([xp[:, :, p:p + h, q:q + w] for p in range(3) for q in range(3)], axis=0)


def inception32(p: dict) -> np.ndarray:
    def unit(a, name, pad):
        return np.maximum(conv32(a, p[name], p["b" + name[1:]], pads=(pad,) * 4), np.float32(0))
    x = p["x"]
    return np.concatenate([unit(x, "w1", 0), unit(unit(x, "w3r", 0), "w3", 1), unit(unit(x, "w5r", 0), "w5", 2),
                           unit(maxpool3x3_32(x), "wp", 0)], axis=1)


FLOAT32_RUNS = {
    "conv2d": lambda i, a: {"y": conv32(i["x"], i["w"], i["b"])},
    "conv2d-strided": lambda i, a: {"y": conv32(i["x"], i["w"], i["b"], **a)},
    "dense": lambda i, a: {"y": i["x"].astype(np.float32) @ i["w"].astype(np.float32) + i["b"].astype(np.float32)},
    "softmax": lambda i, a: {"y": softmax32(i["x"])},
    "log_softmax": lambda i, a: {"y": np.log(softmax32(i["x"]))},
    "lstm": lambda i, a: lstm32(**i),
    "inception": lambda i, a: {"y": inception32(i)},
    "conv2d_fft-stride1": lambda i, a: {"y": fft_conv32(i["x"], i["w"], i["b"], [1, 2, 0, 1])},
}


@pytest.mark.parametrize("case", sorted(FLOAT32_RUNS))
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_bound_covers_a_float32_computation(case, seed):
    if case == "conv2d_fft-stride1":
        cid, inputs, attrs = "conv2d_fft", _conv_inputs(np.random.default_rng(seed)), {"pads": [1, 2, 0, 1]}
    else:
        cid, inputs, attrs, _ = make_case(case, seed)
    golden = fwd(cid, inputs, attrs)
    with np.errstate(over="ignore"):
        got = FLOAT32_RUNS[case](inputs, checked(cid, inputs, attrs)[1])
    for k, t in golden.items():
        assert got[k].dtype == np.float32
        excess = np.abs(got[k] - t.v) - (2 * U32 * t.e + FLOOR32)
        assert (excess <= 0).all(), f"{case}.{k}: float32 misses the bound by up to {excess.max():.3g}"


# --- pencil values ---------------------------------------------------------------------------------

def test_glossary_figure_3_convolution():
    x = np.array([[1, 1, 1, 0, 0], [0, 1, 1, 1, 0], [0, 0, 1, 1, 1], [0, 0, 1, 1, 0], [0, 1, 1, 0, 0]], float)
    w = np.array([[1, 0, 1], [0, 1, 0], [1, 0, 1]], float)
    y = fwd("conv2d", {"x": x[None, None], "w": w[None, None]})["y"]
    np.testing.assert_array_equal(y.v[0, 0], [[4, 3, 4], [2, 4, 3], [2, 3, 4]])


def test_sigmoid_values():
    y = fwd("sigmoid", {"x": np.array([0.0, -1000.0, 1000.0])})["y"].v
    assert y.tolist() == [0.5, 0.0, 1.0]


def test_sigmoid_keeps_relative_accuracy_in_the_lower_tail():
    want = math.exp(-30.0) / (1.0 + math.exp(-30.0))
    got = fwd("sigmoid", {"x": np.array([-30.0])})["y"].v[0]
    assert abs(got - want) <= 1e-15 * want


def test_relu_values_and_zero_derivative_at_zero():
    x = np.array([-1.0, 0.0, 1.0])
    assert fwd("relu", {"x": x})["y"].v.tolist() == [0.0, 0.0, 1.0]
    assert back("relu", {"x": x}, {"y": np.ones(3)})["x"].v.tolist() == [0.0, 0.0, 1.0]


def test_nan_propagates_through_relu_and_max_pool():
    assert np.isnan(fwd("relu", {"x": np.array([np.nan])})["y"].v[0])
    x = np.arange(16.0).reshape(1, 1, 4, 4)
    x[0, 0, 0, 1] = np.nan
    y = fwd("max_pool2d", {"x": x}, {"kernel": [2, 2]})["y"].v[0, 0]
    assert np.isnan(y).tolist() == [[True, False], [False, False]]


@pytest.mark.parametrize(("include", "first"), [(True, 12 / 9), (False, 3.0)])
def test_avg_pool_divisor(include, first):
    x = np.arange(25.0).reshape(1, 1, 5, 5)
    attrs = {"kernel": [3, 3], "stride": [2, 2], "pads": [1, 1, 1, 1], "count_include_pad": include}
    assert fwd("avg_pool2d", {"x": x}, attrs)["y"].v[0, 0, 0, 0] == pytest.approx(first, rel=1e-15)


def test_avg_pool_ceil_window_past_the_padding_counts_only_real_positions():
    x = np.arange(5.0).reshape(1, 1, 1, 5)
    attrs = {"kernel": [1, 2], "ceil_mode": True, "count_include_pad": True}
    assert fwd("avg_pool2d", {"x": x}, attrs)["y"].v[0, 0, 0].tolist() == [0.5, 2.5, 4.0]


def test_ceil_mode_output_size():
    x = np.arange(5.0).reshape(1, 1, 1, 5)
    y = fwd("max_pool2d", {"x": x}, {"kernel": [1, 2], "ceil_mode": True})["y"].v
    assert y[0, 0, 0].tolist() == [1.0, 3.0, 4.0]


def test_max_pool_tie_gradient_goes_to_the_first_element():
    x = np.ones((1, 1, 2, 2))
    g = back("max_pool2d", {"x": x}, {"y": np.full((1, 1, 1, 1), 3.0)}, {"kernel": [2, 2]})["x"].v
    assert g[0, 0].tolist() == [[3.0, 0.0], [0.0, 0.0]]


def test_max_pool_overlapping_windows_accumulate_and_the_sum_is_bounded():
    """Windows [0, 5], [5, 1], [1, 0]: the 5 collects two cotangents. In float32 1 + 2⁻³⁰ rounds
    to 1, which the bound of that sum must cover; a single cotangent passes through exactly."""
    x = np.array([[[[0.0, 5.0, 1.0, 0.0]]]])
    gy = np.array([[[[1.0, 2.0**-30, 4.0]]]])
    g = back("max_pool2d", {"x": x}, {"y": gy}, {"kernel": [1, 2], "stride": [1, 1]})["x"]
    assert g.v[0, 0, 0].tolist() == [0.0, 1.0 + 2.0**-30, 4.0, 0.0]
    assert g.e[0, 0, 0, 2] == 0.0
    float32_sum = float(np.float32(1.0) + np.float32(2.0**-30))
    assert abs(float32_sum - g.v[0, 0, 0, 1]) <= 2 * U32 * g.e[0, 0, 0, 1]


def test_maxout_tie_goes_to_the_first_piece():
    x, w, b = np.ones((1, 1)), np.array([[1.0, 1.0, 0.0]]), np.zeros(3)
    g = back("maxout", {"x": x, "w": w, "b": b}, {"y": np.ones((1, 1))}, {"pieces": 3})
    assert g["b"].v.tolist() == [1.0, 0.0, 0.0]


def test_softmax_of_a_minus_inf_row_is_exactly_one_hot():
    x = np.array([[-np.inf, 2.0, -np.inf]])
    y = fwd("softmax", {"x": x})["y"]
    assert y.v.tolist() == [[0.0, 1.0, 0.0]] and np.isfinite(y.e).all()
    g = back("softmax", {"x": x}, {"y": np.array([[1.0, 2.0, 3.0]])})["x"]
    assert np.isfinite(g.v).all() and np.isfinite(g.e).all()


def test_log_softmax_of_a_minus_inf_row_is_zero_and_minus_inf():
    x = np.array([[-np.inf, 2.0, -np.inf]])
    y = fwd("log_softmax", {"x": x})["y"]
    assert y.v.tolist() == [[-np.inf, 0.0, -np.inf]] and y.e[0, [0, 2]].tolist() == [0.0, 0.0]
    assert np.isfinite(y.e).all()
    g = back("log_softmax", {"x": x}, {"y": np.array([[1.0, 2.0, 3.0]])})["x"]
    assert g.v.tolist() == [[1.0, -4.0, 3.0]]


def test_cross_entropies_at_pencil_points():
    assert fwd("cross_entropy", {"logits": np.zeros((2, 4)), "labels": np.array([1, 3])})["loss"].v == math.log(4)
    bce = fwd("binary_cross_entropy", {"logits": np.array([100.0, -100.0]), "targets": np.array([0.0, 1.0])})
    assert bce["loss"].v == pytest.approx(100.0, rel=1e-15)


def test_lrn_window_is_onnx_asymmetric_for_even_size():
    """size 2: channel c sums c and c + 1 (ONNX), so y = [1/(1 + 5), 2/(1 + 4)]."""
    x = np.array([1.0, 2.0]).reshape(1, 2, 1, 1)
    y = fwd("lrn", {"x": x}, {"size": 2, "alpha": 2.0, "beta": 1.0, "bias": 1.0})["y"].v
    assert y.ravel().tolist() == pytest.approx([1 / 6, 2 / 5], rel=1e-15)


def test_lstm_gate_order_is_i_f_g_o():
    """x = h = 0, so z = b: i = σ(0) = ½, f = σ(−1000) = 0, g = tanh(1000) = 1, o = σ(1000) = 1;
    c' = 0·3 + ½·1 = ½ and h' = tanh(½)."""
    z = np.zeros((1, 1))
    inputs = {"x": z, "h": z, "c": np.full((1, 1), 3.0), "w_ih": np.zeros((4, 1)), "w_hh": np.zeros((4, 1)),
              "b": np.array([0.0, -1000.0, 1000.0, 1000.0])}
    out = fwd("lstm_cell", inputs)
    assert out["c"].v[0, 0] == 0.5 and out["h"].v[0, 0] == pytest.approx(math.tanh(0.5), rel=1e-15)


# --- identities between the convolutions ------------------------------------------------------------

@pytest.mark.parametrize("case", ["conv2d", "conv2d-strided", "conv2d_fft", "convolve2d"])
def test_conv2d_fft_equals_conv2d_and_convolve2d_flips(case):
    _, inputs, attrs, cots = make_case(case)
    flipped = inputs | {"w": inputs["w"][:, :, ::-1, ::-1].copy()}
    conv, fft = fwd("conv2d", inputs, attrs)["y"], fwd("conv2d_fft", inputs, attrs)["y"]
    np.testing.assert_array_equal(fft.v, conv.v)
    np.testing.assert_array_equal(fwd("convolve2d", inputs, attrs)["y"].v, fwd("conv2d", flipped, attrs)["y"].v)
    g_conv, g_fft = back("conv2d", inputs, cots, attrs), back("conv2d_fft", inputs, cots, attrs)
    for k in g_conv:
        np.testing.assert_array_equal(g_fft[k].v, g_conv[k].v)
    g_flip = back("conv2d", flipped, cots, attrs)
    np.testing.assert_array_equal(back("convolve2d", inputs, cots, attrs)["w"].v, g_flip["w"].v[:, :, ::-1, ::-1])
