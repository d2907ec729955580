"""ONNX's own backend tests on a nutshell backend: the node cases that ship with the onnx package
for the operators nutshell imports, run through :mod:`nutshell.onnxio.tools.adapter` with ONNX's
own criterion (same shape and dtype, ``np.testing.assert_allclose`` with the case's rtol/atol).

The installed onnx package builds its node cases in memory when
``onnx.backend.test.case.node.<op>`` is imported (its wheel has no ``data/node`` folder); the cases
on disk (``data/simple``, ``data/pytorch-converted``, ``data/pytorch-operator``: model.onnx and
test_data_set_*/input_*.pb, output_*.pb) are read here directly. A case counts as executed when it
imports; a case refused with UnsupportedOnnxOp (a 1-D or 3-D window, an integer type, a reverse
LSTM ...) or a dtype the backend declares unsupported counts as unsupported; any other refusal at
import (a typed error) or at run time is a failure. Every failure must be a documented difference
(:data:`DIFFERENCES`, docs/onnx-node-tests.md).
"""

from __future__ import annotations

import glob
import importlib
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

from nutshell.backends.base import Backend
from nutshell.errors import NutshellError, UnsupportedConcept, UnsupportedOnnxOp
from nutshell.onnxio.codec.reader import SUPPORTED
from nutshell.onnxio.tools.adapter import adapter

NODE_MODULES = ("conv", "maxpool", "averagepool", "globalaveragepool", "relu", "sigmoid", "tanh", "softmax",
                "logsoftmax", "gemm", "matmul", "add", "mul", "concat", "flatten", "reshape", "dropout", "lrn",
                "lstm", "constant", "constantofshape", "identity", "transpose", "squeeze", "unsqueeze")
DATA_KINDS = ("simple", "pytorch-converted", "pytorch-operator")

# test name -> the spec section that explains why a correct backend differs from ONNX's expectation
DIFFERENCES: dict[str, str] = {}


@dataclass(frozen=True)
class Case:
    """One ONNX backend test: a model and its (inputs, expected outputs) data sets."""

    name: str
    kind: str
    model: Any                  # onnx.ModelProto
    data_sets: tuple
    rtol: float = 1e-3
    atol: float = 1e-7


def supported(model) -> bool:
    """Every node is an operator nutshell imports (attribute values may still be refused)."""
    return all(n.domain in ("", "ai.onnx") and n.op_type in SUPPORTED for n in model.graph.node)


def node_cases(modules: tuple[str, ...] = NODE_MODULES) -> list[Case]:
    """ONNX's node cases of ``modules``; importing ``onnx.backend.test.case.node.<m>`` builds them."""
    import onnx.backend.test.case.node as pkg

    with np.errstate(all="ignore"):
        for m in modules:
            importlib.import_module(f"{pkg.__name__}.{m}")
    cases = getattr(pkg, "_NodeTestCases", None)
    if cases is None:                                    # another onnx layout: the public loader
        from onnx.backend.test.loader import load_model_tests
        cases = load_model_tests(kind="node")
    return [Case(c.name, "node", c.model, tuple(c.data_sets), c.rtol, c.atol) for c in cases if supported(c.model)]


def _read(path: str) -> np.ndarray:
    t = onnx.TensorProto()
    with open(path, "rb") as f:
        t.ParseFromString(f.read())
    return numpy_helper.to_array(t)


def data_cases(kinds: tuple[str, ...] = DATA_KINDS) -> list[Case]:
    """The on-disk cases of the onnx package whose operators nutshell imports."""
    from onnx.backend.test.loader import DATA_DIR

    cases = []
    for kind in kinds:
        for folder in sorted(glob.glob(os.path.join(DATA_DIR, kind, "*", ""))):
            path = os.path.join(folder, "model.onnx")
            if not os.path.exists(path):
                continue
            model = onnx.load(path)
            if not supported(model):
                continue
            sets = tuple(([_read(p) for p in sorted(glob.glob(os.path.join(d, "input_*.pb")))],
                          [_read(p) for p in sorted(glob.glob(os.path.join(d, "output_*.pb")))])
                         for d in sorted(glob.glob(os.path.join(folder, "test_data_set_*"))))
            cases.append(Case(os.path.basename(folder.rstrip(os.sep)), kind, model, sets))
    return cases


def _array(a) -> np.ndarray:
    return numpy_helper.to_array(a) if isinstance(a, TensorProto) else np.asarray(a)


def _similar(got: tuple, want: list, rtol: float, atol: float) -> None:
    """ONNX's runner's criterion: as many outputs, each of the same shape and dtype, floats
    allclose (rtol, atol; NaN equals NaN), anything else equal."""
    np.testing.assert_equal(len(got), len(want))
    for k, (g, w) in enumerate(zip(got, want, strict=True)):
        g, w = np.asarray(g), _array(w)
        np.testing.assert_array_equal(g.shape, w.shape, err_msg=f"output {k} has the wrong shape")
        np.testing.assert_equal(g.dtype, w.dtype, err_msg=f"output {k} has the wrong dtype")
        if w.dtype.kind in "fc":
            np.testing.assert_allclose(g, w, rtol=rtol, atol=atol, err_msg=f"output {k}")
        else:
            np.testing.assert_array_equal(g, w, err_msg=f"output {k}")


@dataclass
class Outcome:
    name: str
    status: str             # passed, failed, unsupported
    message: str = ""
    plumbing: bool = False  # the lowered graph has structural steps only (no concept of the backend)


def run_case(backend_cls, case: Case) -> Outcome:
    """One case on one adapter class: prepare, run every data set, compare."""
    try:
        rep = backend_cls.prepare(case.model)
    except UnsupportedOnnxOp as exc:
        return Outcome(case.name, "unsupported", str(exc))
    except NutshellError as exc:                      # refused at import for another reason: counted
        return Outcome(case.name, "failed", f"import refused: {type(exc).__name__}: {str(exc).strip()[:400]}")
    for inputs, outputs in case.data_sets:
        try:
            got = rep.run([_array(a) for a in inputs])
            _similar(got, list(outputs), case.rtol, case.atol)
        except UnsupportedConcept as exc:
            return Outcome(case.name, "unsupported", str(exc))
        except (NutshellError, AssertionError) as exc:
            return Outcome(case.name, "failed", f"{type(exc).__name__}: {str(exc).strip()[:400]}")
        except Exception as exc:                      # a raw library exception escaped: a bug, counted
            return Outcome(case.name, "failed", f"raw {type(exc).__name__} escaped: {str(exc).strip()[:400]}")
    return Outcome(case.name, "passed", plumbing=all(s.structural for s in rep.imported.graph.steps))


@dataclass
class Summary:
    """Counts of one backend over ONNX's cases."""

    backend: str
    outcomes: list[Outcome] = field(default_factory=list)

    def count(self, status: str) -> int:
        return sum(o.status == status for o in self.outcomes)

    def details(self) -> dict:
        failed = {o.name: o.message for o in self.outcomes if o.status == "failed"}
        return {"executed": self.count("passed") + self.count("failed"), "passed": self.count("passed"),
                "failed": self.count("failed"), "unsupported": self.count("unsupported"),
                "passed_plumbing_only": sum(o.plumbing for o in self.outcomes if o.status == "passed"),
                "passed_cases": sorted(o.name for o in self.outcomes if o.status == "passed"),
                "differences": {k: DIFFERENCES[k] for k in failed if k in DIFFERENCES},
                "failures": {k: v for k, v in failed.items() if k not in DIFFERENCES},
                "unsupported_cases": {o.name: o.message[:200] for o in self.outcomes if o.status == "unsupported"}}


def run_suite(backend: Backend, cases: list[Case], **import_kwargs) -> Summary:
    cls = adapter(backend, **import_kwargs)
    return Summary(backend.name, [run_case(cls, c) for c in cases])
