"""LSTM cell and LSTM layer: the float64 oracle, with backward through time.

Gate blocks are stacked in the order i, f, g, o (H rows each) in w_ih (4H, I), w_hh (4H, H) and
the one bias b (4H):

    z = x·w_ihᵀ + h·w_hhᵀ + b = [x, h]·[w_ih, w_hh]ᵀ + b   (one dot product of I + H + 1 terms)
    i, f, o = σ(z_i), σ(z_f), σ(z_o);  g = tanh(z_g)
    c' = f·c + i·g;  h' = o·tanh(c')
"""

from __future__ import annotations

from dataclasses import dataclass

from nutshell.spec.reference import tracked
from nutshell.spec.reference.activations import sigmoid, sigmoid_grad, tanh, tanh_grad
from nutshell.spec.reference.tracked import T
from nutshell.spec.signatures import Impl


@dataclass
class Step:
    """One cell evaluation and the intermediates its backward reuses."""

    xh: T   # (N, I + H): [x, h]
    c: T    # (N, H): the incoming memory
    i: T
    f: T
    g: T
    o: T
    c_new: T
    tc: T   # tanh(c')
    h_new: T


def cell(x: T, h: T, c: T, w: T, b: T) -> Step:
    """One step with w = [w_ih, w_hh] (4H, I + H)."""
    xh = tracked.concat([x, h], axis=1)
    z = tracked.einsum("nk,gk->ng", xh, w, b)  # (N, 4H)
    hid = h.shape[1]
    i, f, o = (sigmoid(z[:, k * hid:(k + 1) * hid]) for k in (0, 1, 3))
    g = tanh(z[:, 2 * hid:3 * hid])
    c_new = f * c + i * g
    tc = tanh(c_new)
    return Step(xh, c, i, f, g, o, c_new, tc, o * tc)


def cell_grad(s: Step, gh: T, gc: T, w: T) -> tuple[T, T, T]:
    """(gz, gxh, gc_prev) for the cotangents gh of h' and gc of c':

    go = gh·tanh(c'); gc' = gc + gh·o·(1 − tanh²(c'));
    gi = gc'·g, gf = gc'·c, gg = gc'·i, gc_prev = gc'·f;
    gz = [gi·i(1 − i), gf·f(1 − f), gg·(1 − g²), go·o(1 − o)] (N, 4H);
    g[x, h] = gz·w (a dot product of 4H terms).
    """
    total = gc + tanh_grad(s.tc, gh * s.o)
    gz = tracked.concat([sigmoid_grad(s.i, total * s.g), sigmoid_grad(s.f, total * s.c),
                         tanh_grad(s.g, total * s.i), sigmoid_grad(s.o, gh * s.tc)], axis=1)
    return gz, tracked.einsum("ng,gk->nk", gz, w), total * s.f


def _weights_grad(gzs: list[T], xhs: list[T], n_in: int) -> dict[str, T]:
    """gw = Σ_t gz_tᵀ·[x_t, h_{t−1}] and gb = Σ_{t, n} gz_t, each one sum over all T·N terms."""
    gz, xh = tracked.stack(gzs), tracked.stack(xhs)  # (T, N, 4H), (T, N, I + H)
    gw = tracked.einsum("tng,tnk->gk", gz, xh)
    return {"w_ih": gw[:, :n_in], "w_hh": gw[:, n_in:], "b": gz.sum(axis=(0, 1))}


def lstm(x: T, h0: T, c0: T, w_ih: T, w_hh: T, b: T) -> list[Step]:
    """The cell over x (T, N, I), state carried: h_t, c_t = cell(x_t, h_{t−1}, c_{t−1})."""
    w = tracked.concat([w_ih, w_hh], axis=1)
    steps, h, c = [], h0, c0
    for t in range(x.shape[0]):
        steps.append(cell(x[t], h, c, w, b))
        h, c = steps[-1].h_new, steps[-1].c_new
    return steps


def lstm_grad(x: T, h0: T, c0: T, w_ih: T, w_hh: T, b: T, gy: T, gh: T, gc: T) -> dict[str, T]:
    """Backward through time: from t = T−1 down to 0 the step's h cotangent is gy_t plus what
    step t+1 sent back (gh for the last step), its c cotangent what step t+1 sent back (gc for the
    last); each step returns g[x_t, h_{t−1}] and gc_{t−1}. The weight gradients sum over steps."""
    w = tracked.concat([w_ih, w_hh], axis=1)
    steps = lstm(x, h0, c0, w_ih, w_hh, b)
    n_in = x.shape[2]
    gxs, gzs = [], []
    for t in reversed(range(len(steps))):
        gz, gxh, gc = cell_grad(steps[t], gy[t] + gh, gc, w)
        gh = gxh[:, n_in:]
        gxs.insert(0, gxh[:, :n_in])
        gzs.insert(0, gz)
    grads = {"x": tracked.stack(gxs), "h0": gh, "c0": gc}
    return grads | _weights_grad(gzs, [s.xh for s in steps], n_in)


def _lstm_forward(i: dict, a: dict) -> dict:
    steps = lstm(i["x"], i["h0"], i["c0"], i["w_ih"], i["w_hh"], i["b"])
    return {"y": tracked.stack([s.h_new for s in steps]), "h": steps[-1].h_new, "c": steps[-1].c_new}


def _lstm_vjp(i: dict, g: dict, a: dict) -> dict:
    return lstm_grad(i["x"], i["h0"], i["c0"], i["w_ih"], i["w_hh"], i["b"], g["y"], g["h"], g["c"])


def _cell_forward(i: dict, a: dict) -> dict:
    s = cell(i["x"], i["h"], i["c"], tracked.concat([i["w_ih"], i["w_hh"]], axis=1), i["b"])
    return {"h": s.h_new, "c": s.c_new}


def _cell_vjp(i: dict, g: dict, a: dict) -> dict:
    w = tracked.concat([i["w_ih"], i["w_hh"]], axis=1)
    s = cell(i["x"], i["h"], i["c"], w, i["b"])
    gz, gxh, gc = cell_grad(s, g["h"], g["c"], w)
    n_in = i["x"].shape[1]
    return {"x": gxh[:, :n_in], "h": gxh[:, n_in:], "c": gc} | _weights_grad([gz], [s.xh], n_in)


CONCEPTS: dict[str, Impl] = {"lstm_cell": Impl(_cell_forward, _cell_vjp), "lstm": Impl(_lstm_forward, _lstm_vjp)}
