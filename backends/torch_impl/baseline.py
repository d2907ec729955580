"""The bench's native baseline for torch: ``torch.nn.functional`` and friends, backward through
``torch.autograd.grad``, a spec model's step as the same functions with autograd and SGD.

This is also the canonical call a torch user writes for each concept, so :meth:`canonical` returns
the baseline itself: for torch the ratio to the canonical call is the overhead."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as nnf

from nutshell.backends.baseline import Baseline
from nutshell.spec import models


class TorchBaseline(Baseline):
    library = "torch"
    call = "torch.nn.functional (torch.autograd.grad for the vjp)"

    def canonical(self) -> TorchBaseline:
        """The functional call is the canonical one: this baseline."""
        return self

    def forward(self, concept, attrs, inputs):
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
    a = next(iter(args.values()))
    if node.op == "zeros":
        return torch.zeros((a.shape[0], *node.attrs["shape"]), dtype=a.dtype, device=a.device)
    if node.op == "transpose":
        return a.permute(*node.attrs["perm"])
    return models.structural(node.op, a, node.attrs)


def _torch_table() -> dict[str, Callable]:
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
