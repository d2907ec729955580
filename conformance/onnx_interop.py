"""ONNX interoperability as conformance items: ONNX's own node tests, the export round trip, and
GoogLeNet imported on every backend.

* ``onnx_node_tests[<backend>]``: the node tests that ship with the onnx package for the operators
  nutshell imports, run through :mod:`backends.onnx_backend_adapter` with ONNX's own criterion
  (same shape and dtype, ``np.testing.assert_allclose`` with the case's rtol/atol). The installed
  onnx package builds its node cases in memory when ``onnx.backend.test.case.node.<op>`` is
  imported (its wheel has no ``data/node`` folder); the cases on disk (``data/simple``,
  ``data/pytorch-converted``, ``data/pytorch-operator``: model.onnx and
  test_data_set_*/input_*.pb, output_*.pb) are read here directly. A case counts as executed when
  it imports; a case refused with UnsupportedOnnxOp (a 1-D or 3-D window, an integer type, a
  reverse LSTM ...) or a dtype the backend declares unsupported counts as unsupported. Every
  failure must be a documented difference (:data:`DIFFERENCES`, docs/onnx-node-tests.md).
* ``export[<model>-<backend>]``: the model with its vector's parameters exported to ONNX (full
  checker), run by ONNX Runtime and imported back onto the backend; both logits must lie within
  the tolerance model's bounds of the vector's float64 goldens, like the backend's own model.
* ``onnx_import[googlenet-<backend>]``: a narrow GoogLeNet (the published topology, 1/8 of the
  channels, 64×64) imported and run; every node, run on ONNX Runtime's values of its inputs, must
  lie within its own bound, and the output within the end-to-end bound.

Without onnx and onnxruntime installed (the torch-only tox environment) there are no such items.
"""

from __future__ import annotations

import glob
import importlib
import importlib.util
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from nutshell.backends.base import Backend
from nutshell.conformance.checks import CheckFailed, Record, Unsupported, _compare_all
from nutshell.conformance.results import Section
from nutshell.errors import NutshellError, UnsupportedConcept, UnsupportedOnnxOp
from nutshell.spec import models

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
    from nutshell.onnxio.codec.reader import SUPPORTED

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
    import onnx
    from onnx import numpy_helper

    t = onnx.TensorProto()
    with open(path, "rb") as f:
        t.ParseFromString(f.read())
    return numpy_helper.to_array(t)


def data_cases(kinds: tuple[str, ...] = DATA_KINDS) -> list[Case]:
    """The on-disk cases of the onnx package whose operators nutshell imports."""
    import onnx
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
    from onnx import TensorProto, numpy_helper

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
                "differences": {k: DIFFERENCES[k] for k in failed if k in DIFFERENCES},
                "failures": {k: v for k, v in failed.items() if k not in DIFFERENCES},
                "unsupported_cases": {o.name: o.message[:200] for o in self.outcomes if o.status == "unsupported"}}


def run_suite(backend: Backend, cases: list[Case], **import_kwargs) -> Summary:
    from nutshell.onnxio.tools.adapter import adapter

    cls = adapter(backend, **import_kwargs)
    return Summary(backend.name, [run_case(cls, c) for c in cases])


def node_tests(backend: Backend, cases: list[Case]) -> Record:
    """The record of ``onnx_node_tests[<backend>]``: failures beyond the documented differences fail.
    A backend offering none of the concepts ONNX graphs are lowered to has nothing to check (the
    cases made of plumbing alone would pass without it)."""
    from nutshell.onnxio.codec.lowering import CONCEPTS

    if not backend.concepts & CONCEPTS:
        raise Unsupported(f"{backend.name} offers none of the concepts ONNX graphs are lowered to")
    details = run_suite(backend, cases).details()
    if details["failures"]:
        names = ", ".join(sorted(details["failures"])[:8])
        raise CheckFailed(f"{len(details['failures'])} of ONNX's node tests fail without a documented reason: {names}",
                          {"usage": 0.0, "details": details})
    return Record(details=details)


# --- export round trip ---------------------------------------------------------------------------

def export_round_trip(backend: Backend, model_id: str, tol: dict) -> Record:
    """Export the vector's model with its parameters; ONNX Runtime and the backend's import both
    within the goldens' bounds (float32)."""
    import onnxruntime as ort

    from nutshell.onnxio.codec import writer as onnx_export

    spec = models.get(model_id).vector_model()
    if any(backend.unsupported(c, "float32") for c in spec.concepts):
        raise Unsupported(f"{backend.name} does not offer every concept of {model_id} in float32")
    data = spec.vectors.load()
    params = {k[len("param."):]: v.astype(np.float32) for k, v in data.items() if k.startswith("param.")}
    proto = onnx_export.export(spec, params)
    x = data["in.x"].astype(np.float32)
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    results = {"onnxruntime": sess.run(["logits"], {"x": x})[0]}
    results["imported"] = backend.import_onnx(proto.SerializeToString()).run({"x": x})["logits"]
    results["model"] = backend.model(model_id, params=params, dims=spec.vectors.dims or None).forward(x)
    goldens = {k: data["out.logits"] for k in results}
    errs = {k: data["err.logits"] for k in results}
    rec = _compare_all(results, goldens, errs, "float32", tol, "logits")
    rec.details["nodes"] = len(proto.graph.node)
    return rec


# --- GoogLeNet ------------------------------------------------------------------------------------

def googlenet_check(backend: Backend, tol: dict, width: float = 0.125, size: int = 64) -> Record:
    """The narrow GoogLeNet on ``backend``: every node within its own bound, the output within the
    end-to-end bound (both against ONNX Runtime, see nutshell/onnx_compare.py)."""
    from nutshell.onnxio.codec import reader as onnx_import
    from nutshell.onnxio.tools import compare
    from nutshell.onnxio.tools import zoo as onnx_zoo

    graph = onnx_import.parse(onnx_zoo.googlenet(width, size, classes=10).SerializeToString())
    missing = sorted({s.op for s in graph.steps if not s.structural and backend.unsupported(s.op, "float32")})
    if missing:
        raise Unsupported(f"{backend.name} does not offer {', '.join(missing)} in float32")
    feeds = compare.inputs_for(graph, {}, seed=0)
    imp = backend.import_onnx(graph)
    ort = compare.ort_values(graph, feeds, every=True)
    run = imp.run(feeds)
    d = compare.difference(run["prob"], ort["prob"], compare.reference(graph, feeds)["prob"], tol)
    local = compare.local_usages(graph, {backend.name: imp}, feeds, ort, tol)
    worst = max(local, key=lambda r: r[1][backend.name])
    details = {"nodes": len(local), "max_abs": d.max_abs, "outside": d.outside, "local_usage": worst[1][backend.name],
               "worst_node": worst[0], "onnxruntime_local_usage": max(u[compare.ORT] for _, u in local)}
    if d.outside or worst[1][backend.name] > 1.0:
        raise CheckFailed(f"GoogLeNet on {backend.name}: {d.outside} outputs outside the bound; node {worst[0]} at "
                          f"{worst[1][backend.name]:.3g} of its bound", {"usage": details["local_usage"],
                                                                         "details": details})
    return Record(usage=details["local_usage"], details=details)


# --- the items ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Ref:
    id: str
    name: str = ""


def items(spec_file, st: dict) -> Iterator:
    """onnx_node_tests[<backend>], export[<model>-<backend>], onnx_import[googlenet-<backend>]."""
    from nutshell.conformance.plugin import CheckItem

    if any(importlib.util.find_spec(m) is None for m in ("onnx", "onnxruntime")):
        return                                           # nothing to check without them (tox env torch)
    tol = st["spec"].tolerance

    def cases() -> list[Case]:
        if "onnx_cases" not in st:
            st["onnx_cases"] = node_cases() + data_cases()
        return st["onnx_cases"]

    for bname in st["backends"]:
        yield CheckItem.from_parent(spec_file, name=f"onnx_node_tests[{bname}]", backend=bname,
                                    concept=_Ref("onnx_node_tests"), check="onnx-node-tests", vec=_Ref("onnx", "node"),
                                    dtype=None, section=Section.NODE_TESTS,
                                    fn=lambda st, b=bname: node_tests(st["backends"][b], cases()))
        for mid in models.names():
            yield CheckItem.from_parent(spec_file, name=f"export[{mid}-{bname}]", backend=bname, concept=_Ref("export"),
                                        check="onnx-export", vec=_Ref(mid, mid), dtype="float32",
                                        section=Section.ONNX,
                                        fn=lambda st, b=bname, m=mid: export_round_trip(st["backends"][b], m, tol))
        yield CheckItem.from_parent(spec_file, name=f"onnx_import[googlenet-{bname}]", backend=bname,
                                    concept=_Ref("onnx_import"), check="onnx-import",
                                    vec=_Ref("googlenet", "googlenet"), dtype="float32", section=Section.ONNX,
                                    fn=lambda st, b=bname: googlenet_check(st["backends"][b], tol))
