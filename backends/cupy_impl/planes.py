"""A CPU model step's image activations as (C, H, W, N) planes: channels outermost, batch innermost.

On NumPy the (N, C, H, W) layout makes every window op move rows of oW elements (2 to 16 in the
spec's CNNs), and NumPy's cost per inner loop, not per element, dominated a step: im2col, the
transpose of a convolution's (O, N·oH·oW) product back to (N, O, oH, oW), the max pool's tap
views and col2im. Held as ``a[c, h, w, n] = x[n, c, h, w]`` instead:

    conv:  col[c, p, q, i, j, n] = xpad[c, i·sh + p·dh, j·sw + q·dw, n]      # rows of oW·N (stride 1) or N
           y (O, oH·oW·N) = w (O, K) @ col (K, oH·oW·N)  is already (O, oH, oW, N): nothing to transpose
           gw = gy @ colᵀ,  gcol = wᵀ @ gy,  gx = col2im(gcol) by one shifted add per tap (gather order)
           a 1×1 kernel, stride 1, unpadded: col is x itself
    pool:  each tap's view xpad[:, p·dh + i·sh, q·dw + j·sw, :] has rows of N; the running max and
           the first-maximum walk of :mod:`.pooling` run on them unchanged (same order, same ties)
    inception: :mod:`.inception` on these ops; its concatenation and split are on axis 0, whole blocks

A :class:`Planar` wraps such an array with the (N, C, H, W) shape of the value it holds, so that
the model (model.py) can tell a value's layout and convert at the edges: the ops here read and
return bare planes arrays. The batch goes through whole; a convolution's columns are cut into
chunks of output rows that fit the working-memory budget (:func:`.conv._chunk_budget`).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from nutshell.backends.cupy_impl import inception
from nutshell.backends.cupy_impl.activations import relu, relu_vjp
from nutshell.backends.cupy_impl.conv import _chunk_budget
from nutshell.backends.cupy_impl.im2col import Window, current_budget
from nutshell.backends.cupy_impl.pooling import _first_hits, _taps, _tiles
from nutshell.backends.cupy_impl.pooling import window as pool_window
from nutshell.backends.cupy_impl.xp import kept, matmul

Arrays = dict[str, Any]


class Planar:
    """An (N, C, H, W) value held as a C-contiguous (C, H, W, N) array ``a``."""

    __slots__ = ("a",)

    def __init__(self, a: np.ndarray):
        self.a = a

    @classmethod
    def of(cls, x: np.ndarray) -> Planar:
        """The planes of an (N, C, H, W) array."""
        return cls(np.ascontiguousarray(x.transpose(1, 2, 3, 0)))

    def nchw(self) -> np.ndarray:
        """The value as a C-contiguous (N, C, H, W) array."""
        return np.ascontiguousarray(self.a.transpose(3, 0, 1, 2))

    @property
    def shape(self) -> tuple[int, ...]:
        c, h, w, n = self.a.shape
        return (n, c, h, w)

    @property
    def dtype(self) -> np.dtype:
        return self.a.dtype

    def __add__(self, other: Planar) -> Planar:
        return Planar(self.a + other.a)


def _pad(x: np.ndarray, win: Window, value: float) -> np.ndarray:
    """x (C, H, W, N) inside a (C, Hp, Wp, N) plane filled with ``value`` (x itself without padding)."""
    hp, wp = win.padded
    if (hp, wp) == (win.h, win.w):
        return x
    out = np.full((x.shape[0], hp, wp, x.shape[3]), value, x.dtype)
    out[:, win.pt:win.pt + win.h, win.pl:win.pl + win.w] = x
    return out


def _crop(gxpad: np.ndarray, win: Window) -> np.ndarray:
    if gxpad.shape[1:3] == (win.h, win.w):
        return gxpad
    return np.ascontiguousarray(gxpad[:, win.pt:win.pt + win.h, win.pl:win.pl + win.w])


# --- convolution -----------------------------------------------------------------------------------

def conv_window(x: np.ndarray, w: np.ndarray, attrs: dict) -> Window:
    return Window.make(x.shape[1:3], w.shape[2:], attrs["stride"], attrs["pads"], attrs["dilation"])


def _pointwise(win: Window) -> bool:
    """A 1×1 kernel at stride 1 without padding: the columns are x itself."""
    return (win.kh, win.kw, win.sh, win.sw) == (1, 1, 1, 1) and win.padded == (win.h, win.w)


def _row_chunks(x: np.ndarray, win: Window, budget: int) -> list[tuple[int, int]]:
    """Ranges of output rows whose columns fit the (CPU) chunk budget, at least one row each."""
    row = x.itemsize * x.shape[0] * win.taps * win.ow * x.shape[3]
    step = max(1, _chunk_budget(x, budget) // max(row, 1))
    return [(i, min(win.oh, i + step)) for i in range(0, win.oh, step)]


def _tap(plane: np.ndarray, win: Window, p: int, q: int, i0: int, i1: int) -> np.ndarray:
    """The view of a padded (C, Hp, Wp, N) plane under tap (p, q) for output rows i0:i1: (C, i1 − i0, oW, N)."""
    y0, x0 = p * win.dh + i0 * win.sh, q * win.dw
    return plane[:, y0:y0 + win.sh * (i1 - i0 - 1) + 1:win.sh, x0:x0 + win.sw * (win.ow - 1) + 1:win.sw]


def _columns(xpad: np.ndarray, win: Window, i0: int, i1: int) -> np.ndarray:
    """col (C, kh, kw, i1 − i0, oW, N) of output rows i0:i1."""
    col = np.empty((xpad.shape[0], win.kh, win.kw, i1 - i0, win.ow, xpad.shape[3]), xpad.dtype)
    for p in range(win.kh):
        for q in range(win.kw):
            col[:, p, q] = _tap(xpad, win, p, q, i0, i1)
    return col


def conv_forward(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, attrs: dict,
                 budget: int) -> tuple[np.ndarray, list | None]:
    """(y (O, oH, oW, N), the columns of every row chunk when all of them fit the budget, else None)."""
    win, g = conv_window(x, w, attrs), attrs["groups"]
    o, n = w.shape[0], x.shape[3]
    wg = w.reshape(g, o // g, math.prod(w.shape[1:]))                           # (G, Og, K)
    if _pointwise(win):
        col = x.reshape(g, wg.shape[2], -1)                                     # no copy: kept for free
        y, cols = matmul(wg, col).reshape(o, win.oh, win.ow, n), [col]
    else:
        xpad, parts = _pad(x, win, 0.0), _row_chunks(x, win, budget)
        keep = x.itemsize * x.shape[0] * win.taps * win.out_size * n <= budget
        y = np.empty((o, win.oh, win.ow, n), x.dtype) if len(parts) > 1 else None
        cols = []
        for i0, i1 in parts:
            col = _columns(xpad, win, i0, i1).reshape(g, wg.shape[2], -1)      # (G, K, rows·oW·N)
            yc = matmul(wg, col).reshape(o, i1 - i0, win.ow, n)
            if y is None:
                y = yc
            else:
                y[:, i0:i1] = yc
            if keep:
                cols.append(col)
            del col
        cols = cols if keep else None
    if b is not None:
        y += b[:, None, None, None]
    return y, cols


def conv_backward(x: np.ndarray, w: np.ndarray, gy: np.ndarray, attrs: dict, budget: int,
                  cols: list | None = None, need_x: bool = True) -> tuple[np.ndarray | None, np.ndarray]:
    """(gx (C, H, W, N) when ``need_x``, else None; gw), by row chunks as :func:`conv_forward` cut them."""
    win, g = conv_window(x, w, attrs), attrs["groups"]
    c, o = x.shape[0], w.shape[0]
    wg = w.reshape(g, o // g, math.prod(w.shape[1:]))
    if _pointwise(win):
        gy2 = gy.reshape(g, o // g, -1)
        col = x.reshape(g, wg.shape[2], -1)
        gw = matmul(gy2, col.transpose(0, 2, 1))
        gx = matmul(wg.transpose(0, 2, 1), gy2).reshape(x.shape) if need_x else None
        return gx, gw.reshape(w.shape)
    parts = _row_chunks(x, win, budget)
    xpad = _pad(x, win, 0.0) if cols is None else None
    gxpad = np.zeros((c, *win.padded, x.shape[3]), x.dtype) if need_x else None
    gw = None
    for k, (i0, i1) in enumerate(parts):
        gyc = gy[:, i0:i1].reshape(g, o // g, -1)                               # (G, Og, rows·oW·N), a view
        col = _columns(xpad, win, i0, i1).reshape(g, wg.shape[2], -1) if cols is None else cols[k]
        part = matmul(gyc, col.transpose(0, 2, 1))                              # (G, Og, K)
        gw = part if gw is None else gw + part
        del col
        if need_x:
            gcol = matmul(wg.transpose(0, 2, 1), gyc).reshape(c, win.kh, win.kw, i1 - i0, win.ow, -1)
            for p in range(win.kh):
                for q in range(win.kw):
                    _tap(gxpad, win, p, q, i0, i1)[...] += gcol[:, p, q]
    return (_crop(gxpad, win) if need_x else None), gw.reshape(w.shape)


def conv2d_saving(inputs: Arrays, attrs: dict) -> tuple[Arrays, Any]:
    y, cols = conv_forward(inputs["x"], inputs["w"], inputs.get("b"), attrs, current_budget())
    return {"y": y}, (inputs["x"], cols)


def conv2d_vjp_saved(inputs: Arrays, saved: Any, cots: Arrays, attrs: dict, wanted: set[str]) -> Arrays:
    (x, cols), gy = saved, cots["y"]
    gx, gw = conv_backward(x, inputs["w"], gy, attrs, current_budget(), cols, "x" in wanted)
    grads = {"w": gw} if gx is None else {"x": gx, "w": gw}
    if "b" in inputs:
        grads["b"] = gy.sum(axis=(1, 2, 3))
    return grads


# --- max pooling -------------------------------------------------------------------------------------

def pool_forward(x: np.ndarray, win: Window) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
    """y (C, oH, oW, N) as the running maximum of the tap views of x padded with −inf; saves
    (the padded plane, y). The order and the NaN rule are those of :func:`.pooling._running_max`."""
    xpad = _pad(x, win, -math.inf)
    views = _taps(xpad, win, 1)
    y = next(views).copy()
    for v in views:
        np.maximum(y, v, out=y)
    return y, (xpad, y)


def pool_backward(gy: np.ndarray, saved: tuple[np.ndarray, np.ndarray], win: Window) -> np.ndarray:
    """gx (C, H, W, N): each window's gy goes to its first maximum (:func:`.pooling._first_hits`).
    Where the windows tile the plane each pixel has one window, and each tap's share is written,
    not added, into an uninitialised gx."""
    xpad, y = saved
    tiled = _tiles(win)
    gxp = np.empty(xpad.shape, gy.dtype) if tiled else np.zeros(xpad.shape, gy.dtype)
    for hit, g in zip(_first_hits(_taps(xpad, win, 1), y), _taps(gxp, win, 1), strict=True):
        if tiled:
            g[...] = kept(hit, gy)
        else:
            g += kept(hit, gy)
    return _crop(gxp, win)


def max_pool2d_saving(inputs: Arrays, attrs: dict) -> tuple[Arrays, Any]:
    x = inputs["x"]
    y, saved = pool_forward(x, pool_window(Planar(x).shape, attrs))
    return {"y": y}, saved


def max_pool2d_vjp_saved(inputs: Arrays, saved: Any, cots: Arrays, attrs: dict, wanted: set[str]) -> Arrays:
    if "x" not in wanted:
        return {}
    return {"x": pool_backward(cots["y"], saved, pool_window(Planar(inputs["x"]).shape, attrs))}


# --- the rest of a CNN ------------------------------------------------------------------------------

def relu_saving(inputs: Arrays, attrs: dict) -> tuple[Arrays, Any]:
    return {"y": relu(inputs["x"])}, None


def relu_vjp_saved(inputs: Arrays, saved: Any, cots: Arrays, attrs: dict, wanted: set[str]) -> Arrays:
    return {"x": relu_vjp(inputs["x"], cots["y"])} if "x" in wanted else {}


def global_avg_pool2d_saving(inputs: Arrays, attrs: dict) -> tuple[Arrays, Any]:
    """y (N, C, 1, 1), an ordinary array: the mean of each (H, W) plane."""
    x = inputs["x"]
    y = x.mean(axis=(1, 2))                                                     # (C, N)
    return {"y": np.ascontiguousarray(y.T).reshape(x.shape[3], x.shape[0], 1, 1)}, None


def global_avg_pool2d_vjp_saved(inputs: Arrays, saved: Any, cots: Arrays, attrs: dict, wanted: set[str]) -> Arrays:
    if "x" not in wanted:
        return {}
    x, gy = inputs["x"], cots["y"]
    share = (gy / (x.shape[1] * x.shape[2])).reshape(x.shape[3], x.shape[0]).T    # (C, N)
    return {"x": np.broadcast_to(share[:, None, None, :], x.shape).copy()}


OPS = inception.Ops(conv_forward, conv_backward, pool_forward, pool_backward, 0)


def inception_saving(inputs: Arrays, attrs: dict) -> tuple[Arrays, Any]:
    return inception.forward_saving(inputs, attrs, OPS)


def inception_vjp_saved(inputs: Arrays, saved: Any, cots: Arrays, attrs: dict, wanted: set[str]) -> Arrays:
    return inception.vjp_saved(inputs, saved, cots, attrs, wanted, OPS)


# concept -> (forward(inputs, attrs) -> (outputs, saved), vjp(inputs, saved, cots, attrs, wanted) -> grads,
# whether its output y is planes). Their x, and the cotangent of a planes y, are bare planes arrays.
CONCEPTS = {
    "conv2d": (conv2d_saving, conv2d_vjp_saved, True),
    "relu": (relu_saving, relu_vjp_saved, True),
    "max_pool2d": (max_pool2d_saving, max_pool2d_vjp_saved, True),
    "inception": (inception_saving, inception_vjp_saved, True),
    "global_avg_pool2d": (global_avg_pool2d_saving, global_avg_pool2d_vjp_saved, False),
}


def starts_planes(concept: str, x: Any) -> bool:
    """Whether a node on an ordinary array x moves it into planes: a 4-D convolution's input."""
    return concept == "conv2d" and getattr(x, "ndim", 0) == 4
