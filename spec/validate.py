"""Input validation shared by every backend, driven by the spec's signatures.

``check(concept, inputs, attrs)`` runs before any numerical work. It returns the inputs as
C-contiguous NumPy arrays (non-contiguous and negatively strided views are copied) and the
attrs with every default filled in, or raises the contract's error naming concept and argument.
Nothing is copied before the call's size is known to fit the memory budget (:func:`memory_budget`):
an input may be a broadcast view of one number that a copy would turn into a hundred GiB.
:func:`check_views` is all of it but the copy; the ONNX importer runs it on zero-strided views of
inferred shapes, before anything is allocated.
"""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from nutshell.errors import AttrError, DTypeError, ShapeError, SpecError
from nutshell.spec import shapes
from nutshell.spec.signatures import DTYPES, output_shapes

if TYPE_CHECKING:
    from nutshell.spec import AttrSpec, Concept, InputSpec

FLOAT_DTYPES = tuple(np.dtype(d) for d in DTYPES.values())
MEMORY_ENV = "NUTSHELL_MAX_MEMORY_MB"
FALLBACK_BUDGET = 8 * 2**30          # where the platform does not report its physical memory
INT_ATTR_RANGE = (-2**31, 2**31 - 1)
"""Integer attributes must fit in 32 bits: the range every backend's library holds. PyTorch's
pooling kernels take window parameters as a C ``int`` (a stride of 2**31 fails there, while ONNX
Runtime and NumPy take it), the CuPy backend overflows a C ``long`` at 2**62, and no backend can
pass 2**63 to its library at all. Refusing what lies outside makes a call behave the same on every
backend, and within it a product of two attributes (dilation × kernel, stride × output length)
stays exact in the 64-bit shape arithmetic of them all. Real windows, strides and paddings are
many orders of magnitude smaller."""


def memory_budget() -> int:
    """The most bytes one call may need (or, for an imported ONNX graph, all the values one run
    holds together): $NUTSHELL_MAX_MEMORY_MB MiB, by default half of the machine's physical memory
    (8 GiB where the platform does not report it).

    Why half: a call that needs more than the machine has cannot succeed, and would end after
    minutes of swapping in a raw MemoryError or with the whole process killed by the kernel.
    Every backend holds at least one more copy of a call's data than the call itself (its
    library's tensors, a device copy), so one call gets half, the other half is left to that copy
    and the rest of the process. Set the variable to run larger calls on purpose, or smaller ones
    to keep a shared machine safe."""
    return env_bytes(MEMORY_ENV) or _default_budget()


def env_bytes(name: str) -> int | None:
    """The positive number of MiB in environment variable ``name``, in bytes; None when unset."""
    raw = os.environ.get(name)
    if raw is None:
        return None
    try:
        mb = float(raw)
    except ValueError:
        raise SpecError(f"${name} must be a number of MiB, got {raw!r}") from None
    if not mb > 0:
        raise SpecError(f"${name} must be positive, got {raw!r}")
    return int(mb * 2**20)


def _default_budget() -> int:
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 2
    except (AttributeError, ValueError, OSError):
        return FALLBACK_BUDGET


def check(concept: Concept, inputs: Mapping[str, Any], attrs: Mapping[str, Any] | None):
    """Validate and normalise one call. Returns (arrays, attrs, dtype name)."""
    given, full, dtype = check_views(concept, inputs, attrs)
    arrays = {k: _normalised(concept.input(k), a) for k, a in given.items()}
    if "labels" in arrays:
        _check_labels(concept.id, arrays)
    return arrays, full, dtype


def check_views(concept: Concept, inputs: Mapping[str, Any], attrs: Mapping[str, Any] | None, budget: bool = True):
    """Everything :func:`check` validates but the labels' values, copying nothing: input names,
    dtypes and ranks, the attrs (returned with their defaults), the shape relations, and (unless
    ``budget`` is false: the ONNX importer sizes a whole graph's values itself) the memory the call
    needs (inputs, outputs and a window concept's padded input) against :func:`memory_budget`.
    Returns (the inputs as given, as arrays; attrs; dtype name)."""
    if not isinstance(inputs, Mapping):
        raise ShapeError("inputs must be a dict of arrays", concept=concept.id, argument="inputs")
    given = _check_inputs(concept, inputs)
    dtype = _common_float_dtype(concept, given)
    for name, a in given.items():
        _check_rank(concept.id, concept.input(name), a.shape)
    full = _check_attrs(concept, attrs or {})
    s = {k: a.shape for k, a in given.items()}
    rule = SHAPE_RULES.get(concept.id)
    if rule is not None:
        rule(concept.id, s, full)
    if budget:
        _check_budget(concept, s, full, np.dtype(dtype))
    return given, full, dtype


def check_cotangents(concept: Concept, cotangents: Mapping[str, Any], out_shapes: Mapping[str, tuple],
                     dtype: str) -> dict[str, np.ndarray]:
    """Validate output cotangents: one per output, each of the output's shape and dtype."""
    if not isinstance(cotangents, Mapping):
        raise ShapeError("cotangents must be a dict of arrays", concept=concept.id, argument="cotangents")
    extra = set(cotangents) - set(concept.outputs)
    if extra:
        raise ShapeError(f"unknown outputs {sorted(extra)}; outputs are {list(concept.outputs)}",
                         concept=concept.id, argument=sorted(extra)[0])
    out = {}
    for name in concept.outputs:
        shape = tuple(out_shapes[name])
        if name not in cotangents or cotangents[name] is None:
            out[name] = np.zeros(shape, dtype=dtype)
            continue
        g = _as_array(concept.id, name, cotangents[name])
        if g.dtype != np.dtype(dtype):
            raise DTypeError(f"cotangent has dtype {g.dtype}, the inputs are {dtype}",
                             concept=concept.id, argument=name)
        if g.shape != shape:
            raise ShapeError(f"cotangent has shape {g.shape}, the output has {shape}",
                             concept=concept.id, argument=name)
        out[name] = _contiguous(g)
    return out


def _contiguous(a: np.ndarray) -> np.ndarray:
    """A C-contiguous array with the same shape (np.ascontiguousarray would turn 0-d into 1-d)."""
    return a if a.flags.c_contiguous else a.copy(order="C")


def _as_array(cid: str, name: str, value: Any) -> np.ndarray:
    try:
        a = np.asarray(value)
    except Exception as exc:
        raise DTypeError(f"cannot be read as an array ({exc})", concept=cid, argument=name) from None
    if a.dtype == object:
        raise DTypeError("is not a numeric array", concept=cid, argument=name)
    return a


def _check_inputs(concept: Concept, inputs: Mapping[str, Any]) -> dict[str, np.ndarray]:
    known = {i.name for i in concept.inputs}
    extra = sorted(set(inputs) - known)
    if extra:
        raise ShapeError(f"unexpected input; inputs are {sorted(known)}", concept=concept.id, argument=extra[0])
    arrays = {}
    for spec_in in concept.inputs:
        value = inputs.get(spec_in.name)
        if value is None:
            if spec_in.optional:
                continue
            raise ShapeError("required input is missing", concept=concept.id, argument=spec_in.name)
        arrays[spec_in.name] = _check_dtype(concept.id, spec_in, _as_array(concept.id, spec_in.name, value))
    return arrays


def _check_dtype(cid: str, s: InputSpec, a: np.ndarray) -> np.ndarray:
    """``a`` as given (a view, not copied) when its dtype is one ``s`` accepts."""
    if s.dtype == "int64":
        if not np.issubdtype(a.dtype, np.integer):
            raise DTypeError(f"must hold integer class indices, got {a.dtype}", concept=cid, argument=s.name)
    elif a.dtype not in FLOAT_DTYPES:
        raise DTypeError(f"must be one of {', '.join(DTYPES)}, got {a.dtype}", concept=cid, argument=s.name)
    return a


def _check_rank(cid: str, s: InputSpec, shape: tuple) -> None:
    if s.rank is not None and len(shape) != s.rank:
        raise ShapeError(f"must have rank {s.rank} {s.shape}, got shape {shape}", concept=cid, argument=s.name)
    if len(shape) < s.min_rank:
        raise ShapeError(f"must have rank ≥ {s.min_rank}, got shape {shape}", concept=cid, argument=s.name)


def _normalised(s: InputSpec, a: np.ndarray) -> np.ndarray:
    """The copy (if any) a backend's hook gets: int64 labels, C-contiguous."""
    return _contiguous(a.astype(np.int64, copy=False) if s.dtype == "int64" else a)


def _common_float_dtype(concept: Concept, arrays: dict[str, np.ndarray]) -> str:
    floats = {k: a.dtype for k, a in arrays.items() if concept.input(k).dtype == "float"}
    kinds = sorted({str(d) for d in floats.values()})
    if len(kinds) > 1:
        odd = next(k for k, d in floats.items() if str(d) != kinds[0])
        raise DTypeError(f"mixed float dtypes {kinds}; give every input the same dtype",
                         concept=concept.id, argument=odd)
    return kinds[0] if kinds else "float32"


def _check_attrs(concept: Concept, attrs: Mapping[str, Any]) -> dict[str, Any]:
    if not isinstance(attrs, Mapping):
        raise AttrError("attrs must be a dict", concept=concept.id, argument="attrs")
    known = {a.name for a in concept.attrs}
    extra = sorted(set(attrs) - known)
    if extra:
        raise AttrError(f"unknown attribute; attributes are {sorted(known)}", concept=concept.id, argument=extra[0])
    full: dict[str, Any] = {}
    for a in concept.attrs:
        if a.name in attrs and attrs[a.name] is not None:
            full[a.name] = _check_attr(concept.id, a, attrs[a.name])
        elif a.required:
            raise AttrError("required attribute is missing", concept=concept.id, argument=a.name)
        elif a.default_from is None:
            full[a.name] = a.default
    for a in concept.attrs:
        if a.name not in full:
            full[a.name] = list(full[a.default_from])
    return full


def _is_int(v: Any) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, (bool, np.bool_))


def _check_attr(cid: str, a: AttrSpec, v: Any) -> Any:
    bad = AttrError
    if a.type == "int":
        if not _is_int(v):
            raise bad(f"must be an integer, got {v!r}", concept=cid, argument=a.name)
        v = int(v)
    elif a.type == "ints":
        if isinstance(v, (str, bytes)) or not hasattr(v, "__len__") or not all(_is_int(e) for e in v):
            raise bad(f"must be a list of {a.length} integers, got {v!r}", concept=cid, argument=a.name)
        if len(v) != a.length:
            raise bad(f"must have {a.length} entries, got {len(v)}", concept=cid, argument=a.name)
        v = [int(e) for e in v]
    elif a.type == "float":
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Real) or not np.isfinite(v):
            raise bad(f"must be a finite number, got {v!r}", concept=cid, argument=a.name)
        v = float(v)
    elif a.type == "bool":
        if not isinstance(v, (bool, np.bool_)):
            raise bad(f"must be true or false, got {v!r}", concept=cid, argument=a.name)
        v = bool(v)
    elif a.type == "string":
        if v not in a.choices:
            raise bad(f"must be one of {list(a.choices)}, got {v!r}", concept=cid, argument=a.name)
    if a.type in ("int", "ints"):
        _check_int_range(cid, a.name, v)
    if a.minimum is not None:
        vals = v if isinstance(v, list) else [v]
        if any(e < a.minimum for e in vals):
            raise bad(f"must be ≥ {a.minimum:g}, got {v!r}", concept=cid, argument=a.name)
    return v


def _check_int_range(cid: str, name: str, v: int | list[int]) -> None:
    lo, hi = INT_ATTR_RANGE
    if any(not lo <= e <= hi for e in (v if isinstance(v, list) else [v])):
        raise AttrError(f"must lie in the 32-bit range [{lo}, {hi}] that every backend's window arithmetic "
                        f"holds, got {v!r}", concept=cid, argument=name)


def _check_labels(cid: str, arrays: dict[str, np.ndarray]) -> None:
    labels, k = arrays["labels"], arrays["logits"].shape[-1]
    if labels.size and (labels.min() < 0 or labels.max() >= k):
        raise ShapeError(f"class indices must lie in [0, {k}), got [{labels.min()}, {labels.max()}]",
                         concept=cid, argument="labels")


# --- the memory a call needs -------------------------------------------------------------------

def _check_budget(concept: Concept, s: dict[str, tuple], attrs: dict, dtype: np.dtype) -> None:
    """ShapeError naming the size when the call's tensors exceed :func:`memory_budget`."""
    terms = _memory_terms(concept, s, attrs, dtype)
    total, budget = sum(n for _, _, n in terms), memory_budget()
    if total <= budget:
        return
    arg, _, _ = max(terms, key=lambda t: t[2])
    parts = ", ".join(f"{what}: {_gib(n)}" for _, what, n in sorted(terms, key=lambda t: -t[2]) if n)
    raise ShapeError(f"the call needs {_gib(total)} ({parts}), over the memory budget of {_gib(budget)} "
                     f"(set ${MEMORY_ENV} to change it)", concept=concept.id, argument=arg)


def _memory_terms(concept: Concept, s: dict[str, tuple], attrs: dict, dtype: np.dtype
                  ) -> list[tuple[str, str, int]]:
    """(argument to blame, what, bytes) for every tensor the call holds: each input as a dense
    array, each output from the shape arithmetic, and the padded input of a window concept."""
    def size(shape: tuple, itemsize: int) -> int:
        return math.prod(shape) * itemsize

    terms = [(k, f"{k} {v}", size(v, 8 if concept.input(k).dtype == "int64" else dtype.itemsize))
             for k, v in s.items()]
    terms += [(k, f"output {k} {v}", size(v, dtype.itemsize))
              for k, v in output_shapes(concept.id, s, attrs).items()]
    padded = PADDED.get(concept.id)
    if padded is not None:
        arg, shape = padded(s["x"], attrs)
        terms.append((arg, f"x padded by {arg} {shape}", size(shape, dtype.itemsize)))
    return terms


def _gib(n: int) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"


def _padded_window(x: tuple, attrs: dict) -> tuple[str, tuple]:
    """x (N, C, H, W) padded by pads [top, left, bottom, right], as the window concepts define it."""
    n, c, h, w = x
    t, lf, b, r = attrs["pads"]
    return "pads", (n, c, h + t + b, w + lf + r)


def _padded_channels(x: tuple, attrs: dict) -> tuple[str, tuple]:
    """x padded by size − 1 channels: the window of every channel's sum of squares (LRN)."""
    return "size", (x[0], x[1] + attrs["size"] - 1, *x[2:])


PADDED: dict[str, Callable[[tuple, dict], tuple[str, tuple]]] = {
    "conv2d": _padded_window, "convolve2d": _padded_window, "conv2d_fft": _padded_window,
    "max_pool2d": _padded_window, "avg_pool2d": _padded_window, "lrn": _padded_channels,
}


# --- shape relations, one small function per family -------------------------------------------

def _need(cond: bool, cid: str, arg: str, msg: str, cls=ShapeError) -> None:
    if not cond:
        raise cls(msg, concept=cid, argument=arg)


def _dense(cid: str, s: dict, attrs: dict) -> None:
    n_in, n_out = s["w"][0], s["w"][-1] if len(s["w"]) > 1 else 1
    _need(s["x"][1] == n_in, cid, "w", f"w has {n_in} rows but x has {s['x'][1]} features")
    if "b" in s:
        want = () if len(s["w"]) == 1 else (n_out,)
        _need(tuple(s["b"]) == want, cid, "b", f"b must have shape {want}, got {s['b']}")


def _maxout(cid: str, s: dict, attrs: dict) -> None:
    _dense(cid, s, attrs)
    k = attrs["pieces"]
    _need(s["w"][1] % k == 0, cid, "w", f"w has {s['w'][1]} columns, not a multiple of pieces={k}")


def _conv(cid: str, s: dict, attrs: dict) -> None:
    (_, c, h, w), (o, cg, kh, kw) = s["x"], s["w"]
    g = attrs["groups"]
    _need(c % g == 0 and o % g == 0, cid, "groups",
          f"groups={g} must divide input channels {c} and output channels {o}", AttrError)
    _need(cg * g == c, cid, "w", f"w has {cg} input channels per group, x needs {c // g}")
    if "b" in s:
        _need(tuple(s["b"]) == (o,), cid, "b", f"b must have shape ({o},), got {s['b']}")
    out = shapes.conv2d_out_shape(s["x"], s["w"], attrs["stride"], attrs["pads"], attrs["dilation"])
    _need(min(out[2:]) >= 1, cid, "w",
          f"the dilated kernel {kh}x{kw} is larger than the padded input {h}x{w}")


def _pool(cid: str, s: dict, attrs: dict) -> None:
    kernel, pads = attrs["kernel"], attrs["pads"]
    dilation = attrs.get("dilation", [1, 1])
    for axis in (0, 1):
        k_eff = dilation[axis] * (kernel[axis] - 1) + 1
        _need(pads[axis] < k_eff and pads[axis + 2] < k_eff, cid, "pads",
              f"pads {pads} must be smaller than the kernel {kernel}", AttrError)
    out = shapes.pool2d_out_shape(s["x"], kernel, attrs["stride"], pads, dilation, attrs["ceil_mode"])
    _need(min(out[2:]) >= 1, cid, "kernel",
          f"the kernel {kernel} is larger than the padded input {tuple(s['x'][2:])}")


def _axis(cid: str, s: dict, attrs: dict) -> None:
    r = len(s["x"])
    _need(-r <= attrs["axis"] < r, cid, "axis", f"axis {attrs['axis']} is outside rank {r}", AttrError)


def _bce(cid: str, s: dict, attrs: dict) -> None:
    _need(s["targets"] == s["logits"], cid, "targets", f"targets {s['targets']} must match logits {s['logits']}")


def _ce(cid: str, s: dict, attrs: dict) -> None:
    _need(s["labels"][0] == s["logits"][0], cid, "labels", "one label per row of logits")


def _lstm_common(cid: str, s: dict, n_in: int, n: int) -> None:
    hid = s["w_hh"][1]
    state = ("h", "c") if "h" in s else ("h0", "c0")
    wants = {"w_hh": (4 * hid, hid), "w_ih": (4 * hid, n_in), "b": (4 * hid,), state[0]: (n, hid), state[1]: (n, hid)}
    for name, want in wants.items():
        _need(tuple(s[name]) == want, cid, name, f"must have shape {want} (H = {hid}), got {s[name]}")


def _lstm_cell(cid: str, s: dict, attrs: dict) -> None:
    _lstm_common(cid, s, s["x"][1], s["x"][0])


def _lstm(cid: str, s: dict, attrs: dict) -> None:
    _lstm_common(cid, s, s["x"][2], s["x"][1])


def _inception(cid: str, s: dict, attrs: dict) -> None:
    c = s["x"][1]
    branches = {"w1": (c, 1), "w3r": (c, 1), "w3": (s["w3r"][0], 3), "w5r": (c, 1), "w5": (s["w5r"][0], 5),
                "wp": (c, 1)}
    for name, (cin, k) in branches.items():
        want = (s[name][0], cin, k, k)
        _need(tuple(s[name]) == want, cid, name, f"must have shape (O, {cin}, {k}, {k}), got {s[name]}")
        bname = "b" + name[1:]
        _need(tuple(s[bname]) == (s[name][0],), cid, bname, f"must have shape ({s[name][0]},), got {s[bname]}")


SHAPE_RULES: dict[str, Callable[[str, dict, dict], None]] = {
    "dense": _dense, "layer": _dense, "logistic_regression": _dense, "softmax_regression": _dense,
    "maxout": _maxout,
    "conv2d": _conv, "convolve2d": _conv, "conv2d_fft": _conv,
    "max_pool2d": _pool, "avg_pool2d": _pool,
    "softmax": _axis, "log_softmax": _axis,
    "binary_cross_entropy": _bce, "cross_entropy": _ce,
    "lstm_cell": _lstm_cell, "lstm": _lstm, "inception": _inception,
}
