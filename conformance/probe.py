"""``nutshell probe -b NAME``: in what precision a backend really computes, measured from designed inputs.

For each concept built on dot products (dense, layer, conv2d, convolve2d) and each dtype:

* **float32: the products.** Inputs x = 1 + 2⁻⁹ and x = 1 + 2⁻¹² against weights of 1 (every
  other term 0), so each output is exactly x. Full float32 keeps both (23 fraction bits); TF32
  rounds its inputs to 10 fraction bits and keeps 1 + 2⁻⁹ only; bfloat16 products (7 fraction
  bits) keep neither. The call is a GEMM of 128 × 64 × 16 (for the convolutions, 2 samples of 64
  channels on an 8 × 8 plane into 16), large enough for a GPU library to choose its tensor-core
  kernels, which is where TF32 appears. The spec wants full float32: anything else fails the check.
* **float16 and bfloat16: the accumulation.** One output sums B + eight ones, B = 2048 in float16
  and 256 in bfloat16, where the format's spacing is 2: B + 1 rounds back to B. Accumulated in the
  storage format, one term after another, the sum stays B; accumulated in float32 and rounded once
  it is B + 8, exact. Both are legitimate (the storage-format bound admits either); the check
  records which ran. (A storage-format accumulator that happens to add the ones first would read
  as float32: the probe tells what the order it uses does to these inputs.)

The backends pin full float32 (TF32 off); ``--library-defaults`` runs the probes under the
library's own defaults instead (``Backend.library_defaults``), which on a GPU is where TF32 shows.
"""

from __future__ import annotations

import argparse
import contextlib

import numpy as np

from nutshell import backends
from nutshell.backends.base import Backend
from nutshell.conformance.tables import Column, Table
from nutshell.spec.signatures import DTYPES, LOW_PRECISION

PROBED = ("dense", "layer", "conv2d", "convolve2d")
PRODUCT_ROWS = (1 + 2.0**-9, 1 + 2.0**-12)   # kept by: float32 both; TF32 the first; bfloat16 neither
TERMS = 8                                    # the ones added to B
BIG = {"float16": 2048.0, "bfloat16": 256.0}  # B: the format's spacing there is 2, so B + 1 rounds to B

FLOAT32, TF32, BF16_PRODUCTS = "float32 products", "TF32 products", "bfloat16 products"
ACC32, ACC_STORAGE = "float32 accumulation", "storage-format accumulation"
UNSUPPORTED = "unsupported"         # the backend declares the concept × dtype unsupported (Backend.unsupported)


def _call(concept: str, column: np.ndarray) -> tuple[dict[str, np.ndarray], dict]:
    """Inputs (float64) and attrs under which ``concept``'s outputs are the dot products of each
    row of ``column`` (R, K) with K weights of 1, and no bias: y[r] = Σ_k column[r, k]."""
    r, k = column.shape
    if concept in ("dense", "layer"):
        ins = {"x": column, "w": np.ones((k, 1))}                          # y (R, 1)
        return (ins | {"b": np.zeros(1)}, {"activation": "identity"}) if concept == "layer" else (ins, {})
    x = column.reshape(r, k, 1, 1)                                        # (N = R, C = K, 1, 1)
    return {"x": x, "w": np.ones((1, k, 1, 1))}, {}                       # y (R, 1, 1, 1)


def _outputs(backend: Backend, concept: str, column: np.ndarray, dtype: str) -> np.ndarray:
    ins, attrs = _call(concept, column)
    out = backend.run(concept, {k: v.astype(DTYPES[dtype]) for k, v in ins.items()}, attrs)
    return np.asarray(out["y"]).astype(np.float64).reshape(-1)


def _product_call(concept: str) -> tuple[dict[str, np.ndarray], dict, np.ndarray]:
    """Inputs, attrs and, per output element, which probe value it must equal (0 or 1)."""
    k, o = 64, 16
    if concept in ("dense", "layer"):
        which = np.arange(128) % 2                                          # (R,)
        x = np.zeros((128, k))
        x[:, 0] = np.take(PRODUCT_ROWS, which)
        ins = {"x": x, "w": np.ones((k, o))}                                # y (R, O)
        attrs = {"activation": "identity"} if concept == "layer" else {}
        return (ins | {"b": np.zeros(o)} if concept == "layer" else ins), attrs, np.repeat(which, o)
    x = np.zeros((2, k, 8, 8))
    x[:, 0] = np.array(PRODUCT_ROWS)[:, None, None]
    return {"x": x, "w": np.ones((o, k, 1, 1))}, {}, np.repeat([0, 1], o * 64)   # y (2, O, 8, 8)


def products(backend: Backend, concept: str) -> str:
    """The float32 verdict: full float32, TF32 or bfloat16 products (else the values seen)."""
    ins, attrs, which = _product_call(concept)
    y = np.asarray(backend.run(concept, {k: v.astype(np.float32) for k, v in ins.items()}, attrs)["y"])
    y = y.astype(np.float64).reshape(-1)
    seen = tuple(float(v[0]) if (v == v[0]).all() else float("nan") for v in (y[which == 0], y[which == 1]))
    verdicts = {PRODUCT_ROWS: FLOAT32, (PRODUCT_ROWS[0], 1.0): TF32, (1.0, 1.0): BF16_PRODUCTS}
    return verdicts.get(seen, f"other products: {seen} for {PRODUCT_ROWS}")


def accumulation(backend: Backend, concept: str, dtype: str) -> str:
    """The float16/bfloat16 verdict: float32 or storage-format accumulation (else the value seen)."""
    big = BIG[dtype]
    column = np.array([[big] + [1.0] * TERMS])                             # (1, K = 9)
    y = float(_outputs(backend, concept, column, dtype)[0])
    return {big + TERMS: ACC32, big: ACC_STORAGE}.get(y, f"other: {big} + {TERMS}·1 gave {y}")


def probe(backend: Backend, concept: str, dtype: str) -> str:
    """What ``concept`` computes in for ``dtype`` inputs, or why it was not probed."""
    if backend.unsupported(concept, dtype) is not None:
        return UNSUPPORTED
    return products(backend, concept) if dtype == "float32" else accumulation(backend, concept, dtype)


def table(backend: Backend, dtypes: tuple[str, ...] = ("float32", *LOW_PRECISION)) -> list[tuple[str, str, str]]:
    """(concept, dtype, verdict) for every probed concept and dtype."""
    return [(c, dt, probe(backend, c, dt)) for c in PROBED for dt in dtypes]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("-b", "--backend", action="append", required=True,
                   help=f"a backend to probe (repeatable): {', '.join(backends.names())}")
    p.add_argument("--device", choices=["cpu", "cuda"], help="where the backend runs (default: the best)")
    p.add_argument("--library-defaults", action="store_true",
                   help="probe under the library's own precision defaults (TF32 where the library enables it)")


def report_table(b: Backend, library_defaults: bool = False) -> tuple[Table, int]:
    """The table of one backend, and how many of its float32 verdicts are not full float32."""
    with b.library_defaults() if library_defaults else contextlib.nullcontext():
        rows = table(b)
    t = Table([Column("concept", 12), Column("dtype", 9), Column("computes in")], indent=2, header=False,
              title=f"{b.name} on {b.device}" + (" (library defaults)" if library_defaults else ""))
    for concept, dtype, verdict in rows:
        wide = b.widened(concept, dtype)
        why = b.unsupported(concept, dtype) if verdict == UNSUPPORTED else None
        if why:   # a reason can be long: it wraps at word boundaries
            t.row(concept, dtype, span=f"{verdict}: {why}")
        else:
            t.row(concept, dtype, f"{verdict}  [computes in {wide}]" if wide else verdict)
    return t, sum(dt == "float32" and v not in (FLOAT32, UNSUPPORTED) for _, dt, v in rows)


def report(b: Backend, library_defaults: bool = False) -> tuple[list[str], int]:
    """:func:`report_table` as plain lines."""
    t, wrong = report_table(b, library_defaults)
    return t.lines(), wrong


def run(args: argparse.Namespace) -> int:
    """Print one table per backend; 1 when a backend's float32 products are not full float32 (as
    pinned: under ``--library-defaults`` TF32 is what the table is there to show, and 0)."""
    backends.check_names(args.backend)
    bad = 0
    for name in args.backend:
        t, wrong = report_table(backends.load(name, args.device), args.library_defaults)
        t.show()
        bad += wrong
    return 1 if bad and not args.library_defaults else 0
