"""The bench's native baseline for the CuPy backend: the array module it runs on (NumPy on a
machine without CUDA, else CuPy), written as a user would write it (im2col by strided views, one
BLAS contraction). There is no array-level autograd, so forward only.

This straightforward im2col + matrix product is also the canonical call a NumPy or CuPy user
writes (the backend's own path differs: batch chunks under a memory budget, one batched matmul
over the groups, hand-written kernels on the GPU), so :meth:`canonical` returns the baseline itself."""

from __future__ import annotations

from collections.abc import Callable

from nutshell.backends.baseline import Baseline
from nutshell.spec.shapes import window_reach
from nutshell.spec.signatures import output_shapes


class ArrayBaseline(Baseline):
    """Forward only, on the backend's array module (``b.xp``)."""

    call = "the array module's functions (a convolution: im2col as strided views, one tensordot)"

    @property
    def library(self) -> str:
        return self.b.xp.__name__

    def canonical(self) -> ArrayBaseline:
        """The straightforward array code is the canonical call: this baseline."""
        return self

    def forward(self, concept, attrs, inputs):
        xp = self.b.xp
        fn = _array_table().get(concept)
        if fn is None:
            return None
        a = {k: self.b.to_native(v) for k, v in inputs.items()}
        return lambda: fn(xp, **a, **attrs)


def _windows(xp, x, kernel, stride, dilation, out_hw):
    """A strided view of every window: (N, C, H, W) -> (N, C, kh, kw, oH, oW), no copy."""
    s = x.strides
    view = (*x.shape[:2], *kernel, *out_hw)
    steps = (s[0], s[1], s[2] * dilation[0], s[3] * dilation[1], s[2] * stride[0], s[3] * stride[1])
    return xp.lib.stride_tricks.as_strided(x, view, steps)


def _pad(xp, x, pads, value=0.0, extra=(0, 0)):
    top, left, bottom, right = pads
    width = ((0, 0), (0, 0), (top, bottom + extra[0]), (left, right + extra[1]))
    return xp.pad(x, width, constant_values=value) if any(pads) or any(extra) else x


def _np_conv(xp, x, w, b=None, stride=(1, 1), pads=(0, 0, 0, 0), dilation=(1, 1), groups=1):
    """im2col as a strided view, then one BLAS contraction (tensordot) per group."""
    o, cg = w.shape[:2]
    oh, ow = output_shapes("conv2d", {"x": x.shape, "w": w.shape}, {"stride": stride, "pads": pads,
                                                                     "dilation": dilation})["y"][2:]
    cols = _windows(xp, _pad(xp, x, pads), w.shape[2:], stride, dilation, (oh, ow))   # (N, C, kh, kw, oH, oW)
    og = o // groups
    ys = [xp.tensordot(w[g * og:(g + 1) * og], cols[:, g * cg:(g + 1) * cg], axes=([1, 2, 3], [1, 2, 3]))
          for g in range(groups)]                                                       # G × (O/G, N, oH, oW)
    y = xp.concatenate(ys, axis=0).transpose(1, 0, 2, 3)                                # (N, O, oH, oW)
    return y if b is None else y + b[:, None, None]


def _np_pool(xp, x, kernel, stride, pads, dilation, ceil_mode, value):
    """Windows of the padded input; ceil mode pads the end further so the last window fits."""
    oh, ow = output_shapes("max_pool2d", {"x": x.shape}, {"kernel": kernel, "stride": stride, "pads": pads,
                                                          "dilation": dilation, "ceil_mode": ceil_mode})["y"][2:]
    extra = [max(0, window_reach(o, k, s, d) - (n + pb + pe)) for o, s, d, k, n, pb, pe in
             zip((oh, ow), stride, dilation, kernel, x.shape[2:], pads[:2], pads[2:], strict=True)]
    return _windows(xp, _pad(xp, x, pads, value, extra), kernel, stride, dilation, (oh, ow)), extra


def _np_max_pool(xp, x, kernel, stride, pads, dilation, ceil_mode):
    win, _ = _np_pool(xp, x, kernel, stride, pads, dilation, ceil_mode, -xp.inf)
    return win.max(axis=(2, 3))


def _np_avg_pool(xp, x, kernel, stride, pads, ceil_mode, count_include_pad):
    """Window sums over counts: of real elements, or of positions inside the explicit padding."""
    win, extra = _np_pool(xp, x, kernel, stride, pads, (1, 1), ceil_mode, 0.0)
    ones = xp.ones((1, 1, *x.shape[2:]), x.dtype)
    if count_include_pad:
        ones = _pad(xp, ones, pads, 1.0)
        count = _windows(xp, _pad(xp, ones, (0, 0, 0, 0), 0.0, extra), kernel, stride, (1, 1), win.shape[4:])
    else:
        count, _ = _np_pool(xp, ones, kernel, stride, pads, (1, 1), ceil_mode, 0.0)
    return win.sum(axis=(2, 3)) / count.sum(axis=(2, 3))


def _np_lrn(xp, x, size, alpha, beta, bias):
    """Window sums of squares over channels by a cumulative sum."""
    before, after = (size - 1) // 2, size // 2
    sq = xp.pad(x * x, ((0, 0), (before + 1, after), (0, 0), (0, 0)))                 # (N, C + size, H, W)
    cs = xp.cumsum(sq, axis=1)
    s = cs[:, size:] - cs[:, :-size]                                                    # (N, C, H, W)
    return x / (bias + alpha / size * s) ** beta


def _np_lstm_cell(xp, x, h, c, w_ih, w_hh, b):
    z = x @ w_ih.T + h @ w_hh.T + b                                                     # (N, 4H)
    i, f, g, o = (z[:, k * h.shape[1]:(k + 1) * h.shape[1]] for k in range(4))
    c = _sig(xp, f) * c + _sig(xp, i) * xp.tanh(g)
    return _sig(xp, o) * xp.tanh(c), c


def _np_lstm(xp, x, h0, c0, w_ih, w_hh, b):
    h, c, ys = h0, c0, []
    for x_t in x:
        h, c = _np_lstm_cell(xp, x_t, h, c, w_ih, w_hh, b)
        ys.append(h)
    return xp.stack(ys), h, c


def _np_inception(xp, x, w1, b1, w3r, b3r, w3, b3, w5r, b5r, w5, b5, wp, bp):
    relu = lambda z: xp.maximum(z, 0)  # noqa: E731
    conv = lambda z, w, b, p=0: relu(_np_conv(xp, z, w, b, pads=(p,) * 4))  # noqa: E731
    pooled = _np_max_pool(xp, x, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), False)
    return xp.concatenate([conv(x, w1, b1), conv(conv(x, w3r, b3r), w3, b3, 1), conv(conv(x, w5r, b5r), w5, b5, 2),
                           conv(pooled, wp, bp)], axis=1)


def _sig(xp, z):
    return 1 / (1 + xp.exp(-z))


def _np_softmax(xp, z, axis):
    e = xp.exp(z - z.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def _np_log_softmax(xp, z, axis):
    z = z - z.max(axis=axis, keepdims=True)
    return z - xp.log(xp.exp(z).sum(axis=axis, keepdims=True))


def _array_table() -> dict[str, Callable]:
    acts = {"relu": lambda xp, z: xp.maximum(z, 0), "sigmoid": _sig, "tanh": lambda xp, z: xp.tanh(z),
            "identity": lambda xp, z: z}
    return {
        "sigmoid": lambda xp, x: _sig(xp, x),
        "relu": lambda xp, x: xp.maximum(x, 0),
        "tanh": lambda xp, x: xp.tanh(x),
        "softmax": lambda xp, x, axis: _np_softmax(xp, x, axis),
        "log_softmax": lambda xp, x, axis: _np_log_softmax(xp, x, axis),
        "dense": lambda xp, x, w, b=None: x @ w if b is None else x @ w + b,
        "layer": lambda xp, x, w, b, activation: acts[activation](xp, x @ w + b),
        "maxout": lambda xp, x, w, b, pieces: (x @ w + b).reshape(x.shape[0], -1, pieces).max(-1),
        "logistic_regression": lambda xp, x, w, b: _sig(xp, x @ w + b),
        "softmax_regression": lambda xp, x, w, b: _np_softmax(xp, x @ w + b, -1),
        "binary_cross_entropy": lambda xp, logits, targets: xp.mean(
            xp.maximum(logits, 0) - logits * targets + xp.log1p(xp.exp(-xp.abs(logits)))),
        "cross_entropy": lambda xp, logits, labels: -xp.mean(
            _np_log_softmax(xp, logits, -1)[xp.arange(logits.shape[0]), labels]),
        "conv2d": _np_conv,
        "convolve2d": lambda xp, x, w, b=None, **a: _np_conv(xp, x, w[:, :, ::-1, ::-1], b, **a),
        "max_pool2d": _np_max_pool,
        "avg_pool2d": _np_avg_pool,
        "global_avg_pool2d": lambda xp, x: x.mean(axis=(2, 3), keepdims=True),
        "lrn": _np_lrn,
        "lstm_cell": _np_lstm_cell,
        "lstm": _np_lstm,
        "inception": _np_inception,
    }
