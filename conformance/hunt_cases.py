"""What ``nutshell hunt`` draws: one valid call of a concept, as a small value that shrinks.

A :class:`Case` is a concept, a direction (``forward`` or ``vjp``), a dtype, the named sizes of
the call (``dims``: batch, channels per group, spatial size, kernel, sequence length, ...) and its
attrs, plus the seed and scale of its values. The shapes follow from dims and attrs
(:data:`SHAPES`), and the values from the spec's own generator (``generate.vector_inputs``: a
shuffled linspace over (−scale, scale), distinct, never 0, float32-exact), so a case is a few
numbers that rebuild the same arrays anywhere, and a found case can become a spec vector.

The strategies cover each concept's whole attribute space: kernels from 1×1, every mix of
stride, asymmetric pads, dilation and groups, channel counts on both sides of the SIMD block
sizes (1…33), odd and even spatial sizes, empty and larger batches, ceil mode, the padding
divisor, sequence lengths. Nothing in them names a known bug: they draw from the spec's domain.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from hypothesis import assume
from hypothesis import strategies as st

from nutshell import spec as spec_mod
from nutshell.errors import NutshellError
from nutshell.spec import generate, validate
from nutshell.spec.reference import models as ref_models
from nutshell.spec.reference import tracked

MAX_WORK = 3_000_000
"""The most multiply-adds one drawn call may need (about 0.3 s for the float64 reference's vjp of a
conv2d): the search spends its budget on many calls rather than on a few large ones."""

SIMD = (1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 23, 24, 25, 31, 32, 33)
"""Channel counts around the block sizes vectorised kernels tile by (4, 8, 16, 32 lanes)."""


@dataclass(frozen=True)
class Case:
    """One call: ``concept`` in ``mode`` ("forward" or "vjp") and ``dtype`` on the shapes that ``dims``
    and ``attrs`` give, with values seeded by ``seed`` in (−scale, scale)."""

    concept: str
    mode: str
    dtype: str
    dims: dict[str, int]
    attrs: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    scale: float = 1.0

    def shapes(self) -> dict[str, tuple[int, ...]]:
        """Each input's shape (only the inputs this call passes)."""
        return SHAPES[self.concept](self.dims, self.attrs)

    def vector(self, concept: spec_mod.Concept, name: str = "hunt") -> spec_mod.Vector:
        """The case as a spec vector (kind ``generated``): the spec's generator builds its arrays."""
        scale = {k: self.scale for k in self.shapes() if concept.input(k).dtype == "float" and k != "targets"}
        return spec_mod.Vector(name=name, kind="generated", attrs=dict(self.attrs), file="", sha256="",
                               shapes={k: list(v) for k, v in self.shapes().items()}, seed=self.seed,
                               scale=scale, grad=self.mode == "vjp", concept=concept.id)

    def to_json(self) -> dict:
        return {"concept": self.concept, "mode": self.mode, "dtype": self.dtype, "dims": dict(self.dims),
                "attrs": dict(self.attrs), "seed": self.seed, "scale": self.scale}

    @classmethod
    def from_json(cls, d: dict) -> Case:
        return cls(d["concept"], d["mode"], d["dtype"], dict(d["dims"]), dict(d["attrs"]), int(d["seed"]),
                   float(d["scale"]))

    def describe(self) -> str:
        shapes = " ".join(f"{k}{list(v)}" for k, v in self.shapes().items())
        attrs = " ".join(f"{k}={v}" for k, v in self.attrs.items())
        return f"{self.concept} {self.mode} {self.dtype} {shapes} {attrs}".strip()


def data(concept: spec_mod.Concept, case: Case) -> dict[str, np.ndarray]:
    """The call's arrays in the spec's .npz layout, from the float64 reference: ``in.*`` inputs,
    ``out.*``/``err.*`` goldens and bounds, and for a vjp ``cot.*`` and ``grad.*``/``gerr.*``."""
    return generate.compute(concept, case.vector(concept))


def ambiguous(case: Case, arrays: dict[str, np.ndarray], tol: dict) -> bool:
    """Whether rounding, not the backend, decides a discontinuity of the call: a maxout winner
    between two pieces, or the side of relu's kink (a ``layer`` with relu, or a ReLU inside an
    inception module), closer than the rounding error of what decides it. The spec's inputs are
    distinct so that every max has one winner; z = x·w + b can still hold two pieces that differ by
    less than a float32 product can tell (10.37499967 and 10.3750003 both round to 10.375), or a
    z within rounding of 0, and then the gradient goes wherever rounding sends it: not a finding.
    A layer's or maxout's z is within twice a dot product's rounding error, (I + 2)·u·(Σ|x·w| +
    |b|); an inception module's decisions are measured against their tracked bounds in the case's
    dtype (:func:`nutshell.spec.reference.models.inception_margin`)."""
    relu = case.concept == "layer" and case.attrs.get("activation", "relu") == "relu"
    if (case.concept not in ("maxout", "inception") and not relu) or arrays["in.x"].size == 0:
        return False
    if case.concept == "inception":
        ins = {k[len("in."):]: tracked.T(v) for k, v in arrays.items() if k.startswith("in.")}
        return not ref_models.inception_margin(ins, tol, case.dtype) > 1.0
    x, w, b = arrays["in.x"], arrays["in.w"], arrays["in.b"]
    n, i = x.shape
    z, scale = x @ w + b, np.abs(x) @ np.abs(w) + np.abs(b)            # (N, O·k)
    near = 2 * (i + 2) * tol["unit_roundoff"][case.dtype] * scale
    if relu:
        return bool((np.abs(z) <= near).any())
    k = case.attrs.get("pieces", 2)
    top = np.sort(z.reshape(n, -1, k), axis=-1)                          # (N, O, k)
    return bool(k > 1 and ((top[..., -1] - top[..., -2]) <= near.reshape(n, -1, k).max(-1)).any())


def valid(concept: spec_mod.Concept, case: Case) -> bool:
    """Whether the spec's validator accepts the call (shapes, attrs and the memory budget)."""
    try:
        arrays = {k: np.zeros(s, np.int64 if concept.input(k).dtype == "int64" else np.float32)
                  for k, s in case.shapes().items()}
        validate.check_views(concept, arrays, case.attrs)
    except NutshellError:
        return False
    return True


def work(case: Case) -> int:
    """Multiply-adds of the call, roughly: for a convolution N·O·H·W·Cg·kh·kw (stride 1), else
    Σ input sizes × the largest trailing size (a matrix product's inner loop) × the LRN window."""
    shapes = case.shapes()
    if case.concept.startswith("conv"):
        n, _, h, w = shapes["x"]
        return n * h * w * math.prod(shapes["w"])                  # N·H·W · O·Cg·kh·kw
    size = sum(math.prod(s) for s in shapes.values())
    return size * max((s[-1] for s in shapes.values() if s), default=1) * case.attrs.get("size", 1)


# --- shapes of each concept from its named sizes --------------------------------------------------

def _nchw(d: dict, a: dict) -> dict:
    return {"x": (d["N"], d["C"], d["H"], d["W"])}


def _conv(d: dict, a: dict) -> dict:
    """x (N, G·Cg, H, W), w (G·Og, Cg, kh, kw), b (G·Og,) when ``bias``."""
    g = a.get("groups", 1)
    out = {"x": (d["N"], g * d["Cg"], d["H"], d["W"]), "w": (g * d["Og"], d["Cg"], d["kh"], d["kw"])}
    return out | ({"b": (g * d["Og"],)} if d["bias"] else {})


def _dense(d: dict, a: dict) -> dict:
    return {"x": (d["N"], d["I"]), "w": (d["I"], d["O"])} | ({"b": (d["O"],)} if d.get("bias", 1) else {})


def _maxout(d: dict, a: dict) -> dict:
    k = a.get("pieces", 2)
    return {"x": (d["N"], d["I"]), "w": (d["I"], d["O"] * k), "b": (d["O"] * k,)}


def _lstm_weights(d: dict) -> dict:
    h = d["Hd"]
    return {"w_ih": (4 * h, d["I"]), "w_hh": (4 * h, h), "b": (4 * h,)}


def _inception(d: dict, a: dict) -> dict:
    c, out = d["C"], {"x": (d["N"], d["C"], d["H"], d["W"])}
    for w, o, i, k in (("w1", "o1", c, 1), ("w3r", "r3", c, 1), ("w3", "o3", d["r3"], 3), ("w5r", "r5", c, 1),
                       ("w5", "o5", d["r5"], 5), ("wp", "op", c, 1)):
        out[w], out["b" + w[1:]] = (d[o], i, k, k), (d[o],)
    return out


SHAPES: dict[str, Callable[[dict, dict], dict]] = {
    **dict.fromkeys(("sigmoid", "relu", "tanh", "softmax", "log_softmax"),
                    lambda d, a: {"x": tuple(d[f"d{i}"] for i in range(len(d)))}),
    "dense": _dense,
    "layer": lambda d, a: _dense(d | {"bias": 1}, a),
    "maxout": _maxout,
    "logistic_regression": lambda d, a: {"x": (d["N"], d["I"]), "w": (d["I"],), "b": ()},
    "softmax_regression": lambda d, a: {"x": (d["N"], d["I"]), "w": (d["I"], d["K"]), "b": (d["K"],)},
    "binary_cross_entropy": lambda d, a: {"logits": (d["N"],), "targets": (d["N"],)},
    "cross_entropy": lambda d, a: {"logits": (d["N"], d["K"]), "labels": (d["N"],)},
    **dict.fromkeys(("conv2d", "convolve2d", "conv2d_fft"), _conv),
    **dict.fromkeys(("max_pool2d", "avg_pool2d", "global_avg_pool2d", "lrn"), _nchw),
    "lstm_cell": lambda d, a: {"x": (d["N"], d["I"]), "h": (d["N"], d["Hd"]), "c": (d["N"], d["Hd"])}
    | _lstm_weights(d),
    "lstm": lambda d, a: {"x": (d["T"], d["N"], d["I"]), "h0": (d["N"], d["Hd"]), "c0": (d["N"], d["Hd"])}
    | _lstm_weights(d),
    "inception": _inception,
}


# --- the strategies -----------------------------------------------------------------------------

channels = st.one_of(st.sampled_from(SIMD), st.integers(1, 33))
batch = st.one_of(st.integers(1, 8), st.integers(1, 8), st.integers(0, 8))   # an empty batch now and then
spatial = st.integers(1, 20)


def _pair(lo: int, hi: int) -> st.SearchStrategy:
    return st.lists(st.integers(lo, hi), min_size=2, max_size=2)


@st.composite
def _conv_draw(draw) -> tuple[dict, dict]:
    """Groups 1–4 or depthwise-like (up to 33), kernels 1–7 (square as often as not, as most real
    ones are: 1×1, 3×3, 5×5), strides 1–4, dilations 1–3, four independent pads 0–3; spatial sizes
    from the smallest that leaves one output upwards."""
    groups = draw(st.one_of(st.integers(1, 4), st.integers(1, 33)))
    kh = draw(st.integers(1, 7))
    kw = draw(st.one_of(st.just(kh), st.integers(1, 7)))
    attrs = {"stride": draw(_pair(1, 4)), "pads": draw(st.lists(st.integers(0, 3), min_size=4, max_size=4)),
             "dilation": draw(_pair(1, 3)), "groups": groups}
    top, left, bottom, right = attrs["pads"]
    dh, dw = attrs["dilation"]
    dims = {"N": draw(batch), "Cg": draw(channels), "Og": draw(channels), "kh": kh, "kw": kw,
            "bias": int(draw(st.booleans())),
            "H": max(1, dh * (kh - 1) + 1 - top - bottom) + draw(st.integers(0, 16)),
            "W": max(1, dw * (kw - 1) + 1 - left - right) + draw(st.integers(0, 16))}
    return dims, attrs


@st.composite
def _pool_draw(draw, dilation: bool, divisor: bool) -> tuple[dict, dict]:
    """Kernels 1–5, strides 1–4, pads below the kernel on each axis, ceil mode either way."""
    kernel = draw(_pair(1, 5))
    pads = [draw(st.integers(0, k - 1)) for k in (*kernel, *kernel)]
    attrs = {"kernel": kernel, "stride": draw(_pair(1, 4)), "pads": pads, "ceil_mode": draw(st.booleans())}
    attrs |= {"dilation": draw(_pair(1, 3))} if dilation else {}
    attrs |= {"count_include_pad": draw(st.booleans())} if divisor else {}
    reach = [d * (k - 1) + 1 for d, k in zip(attrs.get("dilation", [1, 1]), kernel, strict=True)]
    dims = {"N": draw(batch), "C": draw(channels),
            "H": max(1, reach[0] - pads[0] - pads[2]) + draw(st.integers(0, 16)),
            "W": max(1, reach[1] - pads[1] - pads[3]) + draw(st.integers(0, 16))}
    return dims, attrs


@st.composite
def _elementwise_draw(draw, axis: bool) -> tuple[dict, dict]:
    rank = draw(st.integers(0, 4))
    dims = {f"d{i}": draw(st.one_of(st.integers(1, 9), channels)) for i in range(rank)}
    return dims, ({"axis": draw(st.integers(-max(rank, 1), max(rank, 1) - 1))} if axis else {})


def _fixed(**dims: st.SearchStrategy) -> st.SearchStrategy:
    return st.fixed_dictionaries(dims).map(lambda d: (d, {}))


FLOATS = {"alpha": (1e-4, 1e-2, 0.5, 1.0, 2.0), "beta": (0.5, 0.75, 1.0, 2.0), "bias": (0.5, 1.0, 2.0)}

DRAWS: dict[str, Callable[[], st.SearchStrategy]] = {
    **dict.fromkeys(("sigmoid", "relu", "tanh"), lambda: _elementwise_draw(False)),
    **dict.fromkeys(("softmax", "log_softmax"), lambda: _elementwise_draw(True)),
    "dense": lambda: _fixed(N=batch, I=channels, O=channels, bias=st.integers(0, 1)),
    "layer": lambda: st.tuples(st.fixed_dictionaries({"N": batch, "I": channels, "O": channels}),
                               st.fixed_dictionaries({"activation": st.sampled_from(["relu", "sigmoid", "tanh",
                                                                                     "identity"])})),
    "maxout": lambda: st.tuples(st.fixed_dictionaries({"N": batch, "I": channels, "O": channels}),
                                st.fixed_dictionaries({"pieces": st.integers(1, 5)})),
    "logistic_regression": lambda: _fixed(N=batch, I=channels),
    "softmax_regression": lambda: _fixed(N=batch, I=channels, K=channels),
    "binary_cross_entropy": lambda: _fixed(N=st.integers(1, 40)),
    "cross_entropy": lambda: _fixed(N=st.integers(1, 40), K=channels),
    **dict.fromkeys(("conv2d", "convolve2d", "conv2d_fft"), _conv_draw),
    "max_pool2d": lambda: _pool_draw(True, False),
    "avg_pool2d": lambda: _pool_draw(False, True),
    "global_avg_pool2d": lambda: _fixed(N=batch, C=channels, H=spatial, W=spatial),
    "lrn": lambda: st.tuples(st.fixed_dictionaries({"N": batch, "C": channels, "H": spatial, "W": spatial}),
                             st.fixed_dictionaries({"size": st.integers(1, 9)}
                                                   | {k: st.sampled_from(v) for k, v in FLOATS.items()})),
    "lstm_cell": lambda: _fixed(N=batch, I=channels, Hd=channels),
    "lstm": lambda: _fixed(T=st.integers(1, 12), N=batch, I=channels, Hd=channels),
    "inception": lambda: _fixed(N=st.integers(1, 3), C=channels, H=st.integers(1, 9), W=st.integers(1, 9),
                                **dict.fromkeys(("o1", "r3", "o3", "r5", "o5", "op"), st.integers(1, 9))),
}


@st.composite
def cases(draw, concept: spec_mod.Concept, mode: str, dtype: str) -> Case:
    """A valid call of ``concept`` in ``mode`` and ``dtype``: its sizes and attrs, a seed, a scale."""
    dims, attrs = draw(DRAWS[concept.id]())
    case = Case(concept.id, mode, dtype, dims, attrs, draw(st.integers(0, 2**31 - 1)),
                draw(st.sampled_from([1.0, 4.0, 30.0])))
    assume(work(case) <= MAX_WORK and valid(concept, case))
    return case


# --- smaller neighbours, for the minimiser --------------------------------------------------------

def _smaller_ints(v: int, floor: int) -> list[int]:
    return sorted({x for x in (floor, v // 2, v - 1) if floor <= x < v})


def _attr_candidates(a: spec_mod.AttrSpec, v: Any) -> list[Any]:
    """Values of one attr closer to the spec's default (or to the smallest sensible value)."""
    if a.type == "ints":
        floor = 0 if a.name == "pads" else 1
        return [[*v[:i], x, *v[i + 1:]] for i in range(len(v)) for x in _smaller_ints(v[i], floor)]
    if a.type == "int":
        return [x for x in _smaller_ints(v, 1)] if a.name != "axis" else ([-1] if v != -1 else [])
    if a.type == "bool":
        return [False] if v else []
    return [a.default] if a.default is not None and v != a.default else []


def neighbours(concept: spec_mod.Concept, case: Case) -> list[Case]:
    """Every case one step simpler than ``case`` that the validator accepts, simplest changes first:
    forward instead of vjp, each size and attr toward its smallest value, seed 0, scale 1."""
    out = [replace(case, mode="forward")] if case.mode == "vjp" else []
    for k, v in case.dims.items():
        out += [replace(case, dims=case.dims | {k: x}) for x in _smaller_ints(v, 0 if k in ("N", "bias") else 1)]
    for name, v in case.attrs.items():
        out += [replace(case, attrs=case.attrs | {name: x}) for x in _attr_candidates(concept.attr(name), v)]
    out += [replace(case, seed=0)] if case.seed else []
    out += [replace(case, scale=1.0)] if case.scale != 1.0 else []
    return [c for c in out if valid(concept, c)]
