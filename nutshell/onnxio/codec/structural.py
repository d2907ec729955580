"""The structural steps of an imported ONNX graph: NumPy plumbing that only moves numbers.

Each step is ``function(inputs, attrs) -> outputs`` on arrays; none does arithmetic on the values
(every rounding belongs to a backend). :data:`STRUCTURAL` also says whether a step *makes* its
results (new exact constants: ones, zeros, ConstantOfShape) or moves its inputs' elements, which
is what a tracked reference needs to know to carry error bounds through it.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from nutshell.errors import NutshellError, ShapeError
from nutshell.onnxio.codec import files as onnx_files

ONNX_GATES = (0, 2, 3, 1)   # spec block k (i, f, g, o) is ONNX block ONNX_GATES[k] of (i, o, f, c)


def _reshape(i: dict, a: dict) -> dict:
    """ONNX Reshape: 0 copies the input's dim (unless allowzero), one −1 is inferred."""
    x = i["x"]
    target = [int(s) for s in np.asarray(a["shape"] if "shape" in a else i["shape"]).ravel()]
    if not a.get("allowzero"):
        target = [x.shape[k] if s == 0 and k < x.ndim else s for k, s in enumerate(target)]
    known = math.prod(s for s in target if s != -1)
    if target.count(-1) > 1 or min(target, default=0) < -1 or \
            (-1 not in target and known != x.size) or (-1 in target and (known == 0 or x.size % known)):
        raise ShapeError(f"cannot reshape {x.shape} to {target}", argument="shape")
    return {"y": x.reshape(target)}


def _flatten(i: dict, a: dict) -> dict:
    x = i["x"]
    axis = a["axis"] + x.ndim if a["axis"] < 0 else a["axis"]
    return {"y": x.reshape(math.prod(x.shape[:axis]), math.prod(x.shape[axis:]))}  # (outer, inner)


def _axes(i: dict, a: dict) -> tuple[int, ...] | None:
    """Squeeze/Unsqueeze axes: an attribute (``axis``, or ``axes`` before opset 13) or an input."""
    axes = a.get("axis", a.get("axes", i.get("axes")))
    return None if axes is None else tuple(int(k) for k in np.asarray(axes).ravel())


def _squeeze(i: dict, a: dict) -> dict:
    x, axes = i["x"], _axes(i, a)
    if axes is not None and any(x.shape[k] != 1 for k in axes):
        raise ShapeError(f"cannot squeeze axes {list(axes)} of {x.shape}: they must have size 1")
    return {"y": np.squeeze(x, axes)}


def _unsqueeze(i: dict, a: dict) -> dict:
    x, axes = i["x"], _axes(i, a)
    rank = x.ndim + len(axes)
    return {"y": np.expand_dims(x, tuple(k + rank if k < 0 else k for k in axes))}


def _concat(i: dict, a: dict) -> dict:
    parts = [i[f"x{k}"] for k in range(len(i))]
    try:
        return {"y": np.concatenate(parts, axis=a["axis"])}
    except ValueError as exc:                                     # AxisError is one
        raise ShapeError(f"cannot concatenate {[p.shape for p in parts]} on axis {a['axis']}: {exc}") from None


def limit(shape: tuple[int, ...], dtype: np.dtype, what: str) -> None:
    """A result a step is about to allocate must fit the tensor limit (a hostile graph can ask
    broadcasting or ConstantOfShape for far more memory than its file holds)."""
    dims = [int(d) for d in shape]
    onnx_files.check_declared(math.prod(dims) * np.dtype(dtype).itemsize, dims, what, onnx_files.max_tensor_bytes())


def _broadcast(i: dict, a: dict) -> dict:
    try:
        shape = np.broadcast_shapes(i["a"].shape, i["b"].shape)
    except ValueError:
        raise ShapeError(f"shapes {i['a'].shape} and {i['b'].shape} do not broadcast") from None
    limit(shape, i["a"].dtype, "a broadcast")
    return {"a": np.broadcast_to(i["a"], shape), "b": np.broadcast_to(i["b"], shape)}


def _legacy(i: dict, a: dict) -> dict:
    """Opset < 7 broadcast=1: b's dims line up with ``like``'s from ``axis`` on (default: the end)."""
    b, n = i["b"], i["like"].ndim
    axis = n - b.ndim if a["axis"] is None else (a["axis"] + n if a["axis"] < 0 else a["axis"])
    return {"y": b.reshape((*b.shape, *[1] * max(n - axis - b.ndim, 0)))}


def _gates(w: np.ndarray) -> np.ndarray:
    """(1, 4H, K) in ONNX's block order (i, o, f, c) -> (4H, K) in the spec's (i, f, g, o)."""
    h = w.shape[1] // 4
    return w[0].reshape(4, h, -1)[list(ONNX_GATES)].reshape(4 * h, -1)  # (4, H, K) -> (4H, K)


def _bias(i: dict, a: dict) -> dict:
    """ONNX B (1, 8H) = [Wb; Rb], each in ONNX's block order -> Wb, Rb (4H,) in the spec's."""
    b = i["b"][0].reshape(2, 4, -1)[:, list(ONNX_GATES)].reshape(2, -1)  # (2, 4, H) -> (2, 4H)
    return {"wb": b[0], "rb": b[1]}


def _matmul_shape(a: tuple, b: tuple) -> tuple[int, ...]:
    """np.matmul's result shape (1-D operands promoted, then their axis dropped)."""
    a2, b2 = (a if len(a) > 1 else (1, *a)), (b if len(b) > 1 else (*b, 1))
    out = (*np.broadcast_shapes(a2[:-2], b2[:-2]), a2[-2], b2[-1])
    if len(b) == 1:
        out = out[:-1]
    if len(a) == 1:
        out = out[:-2] + out[-1:] if len(b) > 1 else out[:-1]
    return out


def _batched(i: dict, a: dict) -> dict:
    """A (G…, M, K) @ B (G…, K, N) as grouped-conv operands: x (1, G·K, M, 1), w (G·N, K, 1, 1)."""
    am = i["a"] if i["a"].ndim > 1 else i["a"][None]
    bm = i["b"]
    batch = np.broadcast_shapes(am.shape[:-2], bm.shape[:-2])
    limit((*batch, *am.shape[-2:]), am.dtype, "a batched MatMul's A")
    limit((*batch, *bm.shape[-2:]), bm.dtype, "a batched MatMul's B")
    am = np.broadcast_to(am, (*batch, *am.shape[-2:])).reshape(-1, *am.shape[-2:])  # (G, M, K)
    bm = np.broadcast_to(bm, (*batch, *bm.shape[-2:])).reshape(-1, *bm.shape[-2:])  # (G, K, N)
    g, m, k = am.shape
    x = am.transpose(0, 2, 1).reshape(1, g * k, m, 1)                                  # (1, G·K, M, 1)
    w = bm.transpose(0, 2, 1).reshape(g * bm.shape[2], k, 1, 1)                        # (G·N, K, 1, 1)
    return {"x": x, "w": w}


def _batched_out(i: dict, a: dict) -> dict:
    """conv's y (1, G·N, M, 1) back to the matmul's (G…, M, N)."""
    out = _matmul_shape(i["a"].shape, i["b"].shape)
    n = i["b"].shape[-1]
    y = i["y"].reshape(-1, n, i["y"].shape[2]).transpose(0, 2, 1)                    # (G, M, N)
    return {"y": y.reshape(out)}


def fill_dims(shape: np.ndarray) -> list[int]:
    """ConstantOfShape's dims, from its input's data; ShapeError for a negative one."""
    dims = [int(d) for d in np.asarray(shape).ravel()]
    if min(dims, default=0) < 0:
        raise ShapeError(f"ConstantOfShape of negative dims {dims}", argument="input")
    return dims


def _fill(i: dict, a: dict) -> dict:
    """ConstantOfShape: a new array of the given shape, every element ``value`` (size-limited)."""
    dims, value = fill_dims(i["shape"]), a["value"]
    limit(dims, value.dtype, "ConstantOfShape")
    return {"y": np.full(dims, value.reshape(()), value.dtype)}


# op -> (function(inputs, attrs) -> outputs, makes): a step that "makes" creates exact constants
# (its results carry no rounding error); every other one only moves its inputs' elements.
STRUCTURAL: dict[str, tuple[Callable[[dict, dict], dict], bool]] = {
    "identity": (lambda i, a: {"y": i["x"]}, False),
    "reshape": (_reshape, False),
    "flatten": (_flatten, False),
    "transpose": (lambda i, a: {"y": i["x"].transpose(a["perm"])}, False),
    "squeeze": (_squeeze, False),
    "unsqueeze": (_unsqueeze, False),
    "concat": (_concat, False),
    "broadcast": (_broadcast, False),
    "legacy_broadcast": (_legacy, False),
    "pair": (lambda i, a: {"y": np.stack([i["a"].ravel(), i["b"].ravel()]).reshape(1, 2, -1, 1)}, False),
    "channels": (lambda i, a: {"y": i["x"].reshape(1, -1, 1, 1)}, False),      # (1, M, 1, 1)
    "kernels": (lambda i, a: {"y": i["x"].reshape(-1, 1, 1, 1)}, False),       # (M, 1, 1, 1)
    "column": (lambda i, a: {"y": i["x"].reshape(1, 1, -1, 1)}, False),        # (1, 1, M, 1)
    "like": (lambda i, a: {"y": i["x"].reshape(i["like"].shape)}, False),
    "rows": (lambda i, a: {"y": i["x"].reshape(-1, i["x"].shape[-1])}, False),  # (…, K) -> (P, K)
    "matmul_out": (lambda i, a: {"y": i["y"].reshape(_matmul_shape(i["a"].shape, i["b"].shape))}, False),
    "batched": (_batched, False),
    "batched_out": (_batched_out, False),
    "gates": (lambda i, a: {"y": _gates(i["x"])}, False),
    "lstm_bias": (_bias, False),
    "full": (lambda i, a: {"y": np.full(a["shape"], a["value"], i["x"].dtype)}, True),
    "zero_bias": (lambda i, a: {"y": np.zeros(i["w"].shape[1], i["w"].dtype)}, True),          # (4H,)
    "zero_state": (lambda i, a: {"y": np.zeros((i["x"].shape[1], i["w"].shape[1] // 4), i["w"].dtype)}, True),
    "mask": (lambda i, a: {"y": np.ones(i["x"].shape, a["dtype"])}, True),
    "fill": (_fill, True),
}


def apply(op: str, ins: dict, attrs: dict) -> dict:
    """Run one structural step on NumPy arrays; a failure is a ShapeError."""
    try:
        return STRUCTURAL[op][0](ins, attrs)
    except NutshellError:
        raise
    except (ValueError, IndexError, TypeError) as exc:
        raise ShapeError(f"{op}: {exc}") from None
