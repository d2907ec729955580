"""LSTM as ONNX graphs: lstm_cell and lstm (unrolled over T), forward and vjp.

Built from Gemm, Split and elementwise operators rather than ONNX's LSTM operator, so that the
gate values exist for the backward graph and the spec's packing holds: one bias b (4H), gate
blocks i, f, g, o. One step, z = x·w_ihᵀ + b + h·w_hhᵀ split into (zi, zf, zg, zo):

    i, f, o = σ(zi), σ(zf), σ(zo);  g = tanh(zg);  c' = f·c + i·g;  h' = o·tanh(c')

Backward through one step, with gh', gc' the cotangents of h', c':

    go = gh'·tanh(c');  gĉ = gc' + gh'·o·(1 − tanh²(c'))
    gi = gĉ·g;  gf = gĉ·c;  gg = gĉ·i;  gc = gĉ·f;  gz = (gi·i(1−i), gf·f(1−f), gg·(1−g²), go·o(1−o))
    gh = gz·w_hh;  gx = gz·w_ih;  gw_ih = gzᵀ·x;  gw_hh = gzᵀ·h;  gb = Σ_n gz

lstm unrolls the step T times in the graph (T is part of every cache key, through the shapes)
and sums the weight gradients over time with one Einsum each.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from nutshell.backends.onnx_impl.activations import sigmoid, sigmoid_grad, tanh, tanh_grad
from nutshell.backends.onnx_impl.graph import Graph, reduce_sum, unsqueeze
from nutshell.spec.signatures import Impl


@dataclass
class Step:
    """The values of one cell step that its backward needs."""

    i: str
    f: str
    g: str
    o: str
    c_prev: str
    tanh_c: str
    h: str
    c: str


def step(g: Graph, xw: str, h: str, c: str, w_hh: str, hidden: int) -> Step:
    """One cell step; xw = x·w_ihᵀ + b is given (N, 4H)."""
    z = g.op("Add", xw, g.op("Gemm", h, w_hh, transB=1))                      # (N, 4H)
    zi, zf, zg, zo = g.op("Split", z, g.ints([hidden] * 4), axis=1, outputs=4)
    i, f, cand, o = sigmoid(g, zi), sigmoid(g, zf), tanh(g, zg), sigmoid(g, zo)
    c2 = g.op("Add", g.op("Mul", f, c), g.op("Mul", i, cand))
    tanh_c = tanh(g, c2)
    return Step(i, f, cand, o, c, tanh_c, g.op("Mul", o, tanh_c), c2)


def step_grad(g: Graph, s: Step, gh: str, gc: str) -> tuple[str, str]:
    """(gz (N, 4H), gc for the previous c) from the cotangents of this step's h and c."""
    gct = g.op("Add", gc, tanh_grad(g, s.tanh_c, g.op("Mul", gh, s.o)))
    gz = g.op("Concat",
              sigmoid_grad(g, s.i, g.op("Mul", gct, s.g)),
              sigmoid_grad(g, s.f, g.op("Mul", gct, s.c_prev)),
              tanh_grad(g, s.g, g.op("Mul", gct, s.i)),
              sigmoid_grad(g, s.o, g.op("Mul", gh, s.tanh_c)), axis=1)
    return gz, g.op("Mul", gct, s.f)


def _hidden(g: Graph) -> int:
    return g.shapes["w_hh"][1]


def _lstm_cell_step(g: Graph, v: dict) -> Step:
    xw = g.op("Gemm", v["x"], v["w_ih"], v["b"], transB=1)                    # (N, 4H)
    return step(g, xw, v["h"], v["c"], v["w_hh"], _hidden(g))


def _lstm_cell(g: Graph, v: dict, attrs: dict) -> dict:
    s = _lstm_cell_step(g, v)
    return {"h": s.h, "c": s.c}


def _lstm_cell_vjp(g: Graph, v: dict, cot: dict, attrs: dict) -> dict:
    s = _lstm_cell_step(g, v)
    gz, gc = step_grad(g, s, cot["h"], cot["c"])
    return {"x": g.op("MatMul", gz, v["w_ih"]), "h": g.op("MatMul", gz, v["w_hh"]), "c": gc,
            "w_ih": g.op("Gemm", gz, v["x"], transA=1), "w_hh": g.op("Gemm", gz, v["h"], transA=1),
            "b": reduce_sum(g, gz, [0])}


def _at(g: Graph, a: str, t: int) -> str:
    """a[t] along the first axis."""
    return g.op("Gather", a, g.const(np.array(t, np.int64)), axis=0)


def _unroll(g: Graph, v: dict) -> list[Step]:
    """Every step of the sequence; x·w_ihᵀ + b is one MatMul for all T."""
    xw = g.op("Add", g.op("MatMul", v["x"], g.op("Transpose", v["w_ih"])), v["b"])  # (T, N, 4H)
    steps, h, c = [], v["h0"], v["c0"]
    for t in range(g.shapes["x"][0]):
        steps.append(step(g, _at(g, xw, t), h, c, v["w_hh"], _hidden(g)))
        h, c = steps[-1].h, steps[-1].c
    return steps


def _stack(g: Graph, values: list[str]) -> str:
    return g.op("Concat", *(unsqueeze(g, a, [0]) for a in values), axis=0)


def _lstm(g: Graph, v: dict, attrs: dict) -> dict:
    steps = _unroll(g, v)
    return {"y": _stack(g, [s.h for s in steps]), "h": steps[-1].h, "c": steps[-1].c}


def _lstm_vjp(g: Graph, v: dict, cot: dict, attrs: dict) -> dict:
    """Backward through time: gh_t = gy_t + (gh from step t+1), gc carried the same way."""
    steps = _unroll(g, v)
    gh, gc, gzs = cot["h"], cot["c"], []
    for t in reversed(range(len(steps))):
        gz, gc = step_grad(g, steps[t], g.op("Add", gh, _at(g, cot["y"], t)), gc)
        gh = g.op("MatMul", gz, v["w_hh"])
        gzs.insert(0, gz)
    gz_all = _stack(g, gzs)                                                  # (T, N, 4H)
    h_prev = _stack(g, [v["h0"]] + [s.h for s in steps[:-1]])                # (T, N, H)
    return {"x": g.op("MatMul", gz_all, v["w_ih"]), "h0": gh, "c0": gc,
            "w_ih": g.op("Einsum", gz_all, v["x"], equation="tnk,tni->ki"),
            "w_hh": g.op("Einsum", gz_all, h_prev, equation="tnk,tnh->kh"),
            "b": reduce_sum(g, gz_all, [0, 1])}


CONCEPTS: dict[str, Impl] = {
    "lstm_cell": Impl(_lstm_cell, _lstm_cell_vjp),
    "lstm": Impl(_lstm, _lstm_vjp),
}
