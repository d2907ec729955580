"""The LSTM cell and the LSTM layer over a sequence, forward and backward through time.

One step, with the four gate blocks stacked i, f, g, o in the columns of z (N, 4H):

    z  = x·w_ihᵀ + h·w_hhᵀ + b                  one matmul for all four gates
    c' = σ(z_f)·c + σ(z_i)·tanh(z_g),  h' = σ(z_o)·tanh(c')

and its adjoint, given gh' and gc' (the gate arithmetic is fused: one pass, or one GPU kernel):

    dc     = gc' + gh'·σ(z_o)·tanh'(c')
    dz_i   = dc·tanh(z_g)·σ'(z_i)      dz_f = dc·c·σ'(z_f)
    dz_g   = dc·σ(z_i)·tanh'(z_g)      dz_o = gh'·tanh(c')·σ'(z_o)
    gc     = dc·σ(z_f);   [gx, gh] = dz·[w_ih, w_hh];   [gw_ih, gw_hh] = dzᵀ·[x, h];   gb = Σ_n dz

The layer runs the step T times; backward walks t = T … 1, adding the output gradient gy[t] to
the hidden-state gradient carried back from step t + 1.
"""

from __future__ import annotations

from typing import Any

from nutshell.backends.cupy_impl import kernels
from nutshell.backends.cupy_impl.activations import dsigmoid, dtanh, sigmoid
from nutshell.backends.cupy_impl.xp import array_module, matmul, on_gpu
from nutshell.spec.signatures import Impl

Arrays = dict[str, Any]


def _blocks(z: Any) -> tuple[Any, Any, Any, Any]:
    """The i, f, g, o column blocks of z (N, 4H)."""
    h = z.shape[1] // 4
    return z[:, :h], z[:, h:2 * h], z[:, 2 * h:3 * h], z[:, 3 * h:]


def gates(z: Any, c: Any) -> tuple[Any, Any]:
    """(h', c') from the pre-activations z (N, 4H) and the cell state c (N, H)."""
    if on_gpu(z):
        return kernels.lstm_gates(z, c)
    xp = array_module(z)
    zi, zf, zg, zo = _blocks(z)
    c_new = sigmoid(zf) * c + sigmoid(zi) * xp.tanh(zg)
    return sigmoid(zo) * xp.tanh(c_new), c_new


def gates_vjp(z: Any, c: Any, c_new: Any, gh: Any, gc: Any) -> tuple[Any, Any]:
    """(dz (N, 4H), gc (N, H)) of one step, from gh' and gc'."""
    if on_gpu(z):
        return kernels.lstm_gates_grad(z, c, c_new, gh, gc)
    xp = array_module(z)
    zi, zf, zg, zo = _blocks(z)
    dc = gc + gh * sigmoid(zo) * dtanh(c_new)
    dz = xp.concatenate([dc * xp.tanh(zg) * dsigmoid(zi), dc * c * dsigmoid(zf),
                         dc * sigmoid(zi) * dtanh(zg), gh * xp.tanh(c_new) * dsigmoid(zo)], axis=1)
    return dz, dc * sigmoid(zf)


def _cell_z(inputs: Arrays) -> tuple[Any, Any]:
    """[x, h] (N, I + H) and z = [x, h]·[w_ih, w_hh]ᵀ + b (N, 4H): one matmul for the four gates."""
    xp = array_module(inputs["x"])
    xh = xp.concatenate([inputs["x"], inputs["h"]], axis=1)
    w = xp.concatenate([inputs["w_ih"], inputs["w_hh"]], axis=1)              # (4H, I + H)
    return xh, matmul(xh, w.T) + inputs["b"]


def lstm_cell(inputs: Arrays, attrs: dict) -> Arrays:
    _, z = _cell_z(inputs)
    h_new, c_new = gates(z, inputs["c"])
    return {"h": h_new, "c": c_new}


def lstm_cell_vjp(inputs: Arrays, cots: Arrays, attrs: dict) -> Arrays:
    xp = array_module(inputs["x"])
    xh, z = _cell_z(inputs)
    _, c_new = gates(z, inputs["c"])
    dz, gc = gates_vjp(z, inputs["c"], c_new, cots["h"], cots["c"])
    n_in = inputs["x"].shape[1]
    gxh = matmul(dz, xp.concatenate([inputs["w_ih"], inputs["w_hh"]], axis=1))  # (N, I + H)
    gw = matmul(dz.T, xh)                                                   # (4H, I + H)
    return {"x": gxh[:, :n_in], "h": gxh[:, n_in:], "c": gc,
            "w_ih": gw[:, :n_in], "w_hh": gw[:, n_in:], "b": dz.sum(axis=0)}


def _run(inputs: Arrays) -> tuple[Any, Any, Any]:
    """The forward sweep, keeping what backward needs: z (T, N, 4H), h and c (T + 1, N, H)."""
    xp = array_module(inputs["x"])
    x, w_hh = inputs["x"], inputs["w_hh"]
    t_len, n, n_in = x.shape
    hid = w_hh.shape[1]
    zx = (matmul(x.reshape(t_len * n, n_in), inputs["w_ih"].T) + inputs["b"]).reshape(t_len, n, 4 * hid)
    zs = xp.empty_like(zx)
    hs = xp.empty((t_len + 1, n, hid), dtype=x.dtype)
    cs = xp.empty_like(hs)
    hs[0], cs[0] = inputs["h0"], inputs["c0"]
    for t in range(t_len):
        zs[t] = zx[t] + matmul(hs[t], w_hh.T)
        hs[t + 1], cs[t + 1] = gates(zs[t], cs[t])
    return zs, hs, cs


def lstm(inputs: Arrays, attrs: dict) -> Arrays:
    _, hs, cs = _run(inputs)
    return {"y": hs[1:], "h": hs[-1], "c": cs[-1]}


def lstm_vjp(inputs: Arrays, cots: Arrays, attrs: dict) -> Arrays:
    """Backward through time; the weight gradients are one matmul over all T·N rows at the end."""
    xp = array_module(inputs["x"])
    zs, hs, cs = _run(inputs)
    x, w_hh = inputs["x"], inputs["w_hh"]
    t_len, n, n_in = x.shape
    dzs = xp.empty_like(zs)
    dh, dc = cots["h"], cots["c"]
    for t in reversed(range(t_len)):
        dh = dh + cots["y"][t]
        dzs[t], dc = gates_vjp(zs[t], cs[t], cs[t + 1], dh, dc)
        dh = matmul(dzs[t], w_hh)
    dz = dzs.reshape(t_len * n, zs.shape[2])                                 # (T·N, 4H)
    return {"x": matmul(dz, inputs["w_ih"]).reshape(x.shape), "h0": dh, "c0": dc,
            "w_ih": matmul(dz.T, x.reshape(t_len * n, n_in)),
            "w_hh": matmul(dz.T, hs[:-1].reshape(t_len * n, w_hh.shape[1])),
            "b": dz.sum(axis=0)}


CONCEPTS: dict[str, Impl] = {"lstm_cell": Impl(lstm_cell, lstm_cell_vjp), "lstm": Impl(lstm, lstm_vjp)}
