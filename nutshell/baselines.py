"""Native baselines for ``nutshell bench``: the same work called directly on each backend's library.

The ratio of a backend's time to its baseline's is the wrapper's overhead. A baseline runs on
the backend's device with the backend's native arrays, so only the wrapper differs:

* torch: ``torch.nn.functional`` and friends, backward through ``torch.autograd.grad``;
* cupy: the array module it runs on (NumPy on a machine without CUDA, else CuPy), written as a
  user would write it (im2col by strided views); there is no array-level autograd, so no vjp;
* onnx: a bare ``InferenceSession.run`` of the backend's own graph, forward and vjp.

This is tooling, not a backend: it imports the libraries freely. A concept without an obvious
direct call (``conv2d_fft`` on torch and NumPy) has no baseline; its overhead is left blank.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from nutshell.spec.shapes import window_reach
from nutshell.spec.signatures import output_shapes

Call = Callable[[], Any]


def for_backend(b: Any) -> Baseline | None:
    """The baseline of a built-in backend, None for any other."""
    maker = {"torch": TorchBaseline, "cupy": ArrayBaseline, "onnx": OrtBaseline}.get(b.name)
    return maker(b) if maker is not None else None


class Baseline:
    """``forward``/``vjp`` return a zero-argument call doing the work, or None when there is none.
    A call may raise for attributes the library's own function does not take (torch's pooling
    with asymmetric pads); the bench then drops the baseline and says why."""

    library = "?"

    def __init__(self, b: Any):
        self.b = b

    def forward(self, concept: str, attrs: dict, inputs: dict[str, np.ndarray]) -> Call | None:
        return None

    def vjp(self, concept: str, attrs: dict, inputs: dict[str, np.ndarray], cots: dict[str, np.ndarray]
            ) -> Call | None:
        return None

    def step(self, model: str, params: dict[str, np.ndarray], x: np.ndarray, labels: np.ndarray, lr: float
             ) -> Call | None:
        """One SGD step of a spec model (the call returns the loss before the step)."""
        return None


# --------------------------------------------------------------------------------------- torch

class TorchBaseline(Baseline):
    library = "torch"

    def forward(self, concept, attrs, inputs):
        import torch

        fn = _torch_table().get(concept)
        if fn is None:
            return None
        t = {k: self.b.to_native(v) for k, v in inputs.items()}

        def call():
            with torch.no_grad():
                return fn(**t, **attrs)
        return call

    def vjp(self, concept, attrs, inputs, cots):
        """Forward then ``torch.autograd.grad`` for every differentiable input (the vjp's work)."""
        import torch

        fn = _torch_table().get(concept)
        if fn is None:
            return None
        diff = [k for k in self.b.spec.concept(concept).differentiable if k in inputs]
        t = {k: self.b.to_native(v).requires_grad_(k in diff) for k, v in inputs.items()}
        names = self.b.spec.concept(concept).outputs
        g = [self.b.to_native(cots[k]) for k in names]

        def call():
            out = fn(**t, **attrs)
            outs = out if isinstance(out, tuple) else (out,)
            return torch.autograd.grad(outs, [t[k] for k in diff], g, allow_unused=True)
        return call

    def step(self, model, params, x, labels, lr):
        """The model's graph (spec/models.yaml) with the same torch functions, autograd, SGD."""
        import torch

        from nutshell.spec import models

        m, table = models.get(model), _torch_table()
        if any(n.op not in table for n in m.nodes if not n.structural):
            return None
        p = {k: self.b.to_native(v).requires_grad_() for k, v in params.items()}
        xs, ys = self.b.to_native(x), self.b.to_native(labels)
        target = ys if m.loss == "cross_entropy" else ys.to(xs.dtype)

        def call():
            values = {"x": xs, **p}
            for n in m.nodes:
                args = {k: values[v] for k, v in n.inputs.items()}
                out = _torch_structural(n, args) if n.structural else table[n.op](**args, **n.attrs)
                values.update(zip(n.outputs, out if isinstance(out, tuple) else (out,), strict=True))
            loss = table[m.loss](values[m.output], target)
            grads = torch.autograd.grad(loss, list(p.values()))
            with torch.no_grad():
                for t, g in zip(p.values(), grads, strict=True):
                    t -= lr * g
            return loss.detach()
        return call


def _torch_structural(node, args):
    """flatten, reshape, transpose and zeros of spec/models.py on tensors."""
    import torch

    from nutshell.spec import models

    a = next(iter(args.values()))
    if node.op == "zeros":
        return torch.zeros((a.shape[0], *node.attrs["shape"]), dtype=a.dtype, device=a.device)
    if node.op == "transpose":
        return a.permute(*node.attrs["perm"])
    return models.structural(node.op, a, node.attrs)


def _torch_table() -> dict[str, Callable]:
    import torch
    import torch.nn.functional as nnf

    def conv(x, w, b=None, stride=(1, 1), pads=(0, 0, 0, 0), dilation=(1, 1), groups=1):
        top, left, bottom, right = pads
        if (top, left) != (bottom, right):
            x, top, left = nnf.pad(x, (left, right, top, bottom)), 0, 0
        return nnf.conv2d(x, w, b, tuple(stride), (top, left), tuple(dilation), groups)

    def max_pool(x, kernel, stride, pads, dilation, ceil_mode):
        top, left, bottom, right = pads
        if (top, left) != (bottom, right) or 2 * top > kernel[0] or 2 * left > kernel[1]:
            x, top, left = nnf.pad(x, (left, right, top, bottom), value=-float("inf")), 0, 0
        return nnf.max_pool2d(x, kernel, stride, (top, left), dilation, ceil_mode)

    def avg_pool(x, kernel, stride, pads, ceil_mode, count_include_pad):
        top, left, bottom, right = pads
        if (top, left) != (bottom, right) or 2 * top > kernel[0] or 2 * left > kernel[1]:
            raise NotImplementedError("torch's avg_pool2d takes symmetric pads of at most half the kernel")
        return nnf.avg_pool2d(x, kernel, stride, (top, left), ceil_mode, count_include_pad)

    def lstm_cell(x, h, c, w_ih, w_hh, b):
        return torch.lstm_cell(x, (h, c), w_ih, w_hh, b, torch.zeros_like(b))

    def lstm(x, h0, c0, w_ih, w_hh, b):
        y, h, c = torch.lstm(x, (h0[None], c0[None]), [w_ih, w_hh, b, torch.zeros_like(b)],
                             True, 1, 0.0, False, False, False)
        return y, h[0], c[0]

    def inception(x, w1, b1, w3r, b3r, w3, b3, w5r, b5r, w5, b5, wp, bp):
        relu = torch.relu
        y1 = relu(nnf.conv2d(x, w1, b1))
        y3 = relu(nnf.conv2d(relu(nnf.conv2d(x, w3r, b3r)), w3, b3, padding=1))
        y5 = relu(nnf.conv2d(relu(nnf.conv2d(x, w5r, b5r)), w5, b5, padding=2))
        yp = relu(nnf.conv2d(nnf.max_pool2d(x, 3, 1, 1), wp, bp))
        return torch.cat([y1, y3, y5, yp], 1)

    acts = {"relu": torch.relu, "sigmoid": torch.sigmoid, "tanh": torch.tanh, "identity": lambda z: z}
    return {
        "sigmoid": torch.sigmoid, "relu": torch.relu, "tanh": torch.tanh,
        "softmax": lambda x, axis: torch.softmax(x, axis),
        "log_softmax": lambda x, axis: torch.log_softmax(x, axis),
        "dense": lambda x, w, b=None: x @ w if b is None else torch.addmm(b, x, w),
        "layer": lambda x, w, b, activation: acts[activation](torch.addmm(b, x, w)),
        "maxout": lambda x, w, b, pieces: torch.addmm(b, x, w).unflatten(1, (-1, pieces)).amax(-1),
        "logistic_regression": lambda x, w, b: torch.sigmoid(torch.addmv(b, x, w)),
        "softmax_regression": lambda x, w, b: torch.softmax(torch.addmm(b, x, w), -1),
        "binary_cross_entropy": lambda logits, targets: nnf.binary_cross_entropy_with_logits(logits, targets),
        "cross_entropy": lambda logits, labels: nnf.cross_entropy(logits, labels),
        "conv2d": conv,
        "convolve2d": lambda x, w, b=None, **a: conv(x, w.flip((2, 3)), b, **a),
        "max_pool2d": max_pool,
        "avg_pool2d": avg_pool,
        "global_avg_pool2d": lambda x: x.mean((2, 3), keepdim=True),
        "lrn": lambda x, size, alpha, beta, bias: nnf.local_response_norm(x, size, alpha, beta, bias),
        "lstm_cell": lstm_cell,
        "lstm": lstm,
        "inception": inception,
    }


# ------------------------------------------------------------------------------ NumPy / CuPy

class ArrayBaseline(Baseline):
    """Forward only, on the backend's array module (``b.xp``)."""

    @property
    def library(self) -> str:
        return self.b.xp.__name__

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


# ----------------------------------------------------------------------------- ONNX Runtime

class OrtBaseline(Baseline):
    """A bare ``InferenceSession`` of the backend's own graph (``b.build``)."""

    library = "onnxruntime"

    def forward(self, concept, attrs, inputs):
        return self._session_call(concept, attrs, inputs, {}, "forward")

    def vjp(self, concept, attrs, inputs, cots):
        return self._session_call(concept, attrs, inputs, {f"cot.{k}": v for k, v in cots.items()}, "vjp")

    def _session_call(self, concept, attrs, inputs, extra, direction) -> Call | None:
        import onnxruntime as ort

        if not hasattr(self.b, "build"):
            return None
        shapes = {k: v.shape for k, v in inputs.items()}
        dtype = next(str(v.dtype) for v in inputs.values() if v.dtype.kind == "f")
        model = self.b.build(concept, attrs, shapes, dtype, direction)
        feeds = {**inputs, **extra}
        if not self.b.device.startswith("cuda"):
            sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
            return lambda: sess.run(None, feeds)
        index = int(self.b.device.partition(":")[2] or 0)
        sess = ort.InferenceSession(model.SerializeToString(),
                                    providers=[("CUDAExecutionProvider", {"device_id": index})])
        io = sess.io_binding()
        for k, v in feeds.items():
            io.bind_ortvalue_input(k, ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(v), "cuda", index))
        for out in sess.get_outputs():
            io.bind_output(out.name, "cuda", index)

        def call():
            sess.run_with_iobinding(io)
            return io.get_outputs()
        return call
