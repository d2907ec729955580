"""ONNX interoperability as conformance items: ONNX's own node tests, the export round trip, and
GoogLeNet imported on every backend.

* ``onnx_node_tests[<backend>]``: ONNX's own node tests for the operators nutshell imports, with
  ONNX's own criterion (nutshell/onnxio/tools/nodetests.py); every failure must be a documented
  difference (``nodetests.DIFFERENCES``, docs/onnx-node-tests.md).
* ``export[<model>-<backend>]``: the model with its vector's parameters exported to ONNX (full
  checker), run by ONNX Runtime and imported back onto the backend; both logits must lie within
  the tolerance model's bounds of the vector's float64 goldens, like the backend's own model.
* ``onnx_import[googlenet-<backend>]``: a narrow GoogLeNet (the published topology, 1/8 of the
  channels, 64×64) imported and run; every node, run on ONNX Runtime's values of its inputs, must
  lie within its own bound, and the output within the end-to-end bound.

Without onnx and onnxruntime installed (the torch-only tox environment) there are no such items.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from nutshell.backends.base import Backend
from nutshell.conformance.checks import CheckFailed, Record, Unsupported, _compare_all
from nutshell.conformance.results import Section
from nutshell.spec import models

if TYPE_CHECKING:                                    # onnx may be missing (the tox env torch)
    from nutshell.onnxio.tools import nodetests


def node_tests(backend: Backend, cases: list[nodetests.Case]) -> Record:
    """The record of ``onnx_node_tests[<backend>]``: failures beyond the documented differences fail.
    A backend offering none of the concepts ONNX graphs are lowered to has nothing to check (the
    cases made of plumbing alone would pass without it)."""
    from nutshell.onnxio.codec.lowering import CONCEPTS
    from nutshell.onnxio.tools import nodetests

    if not backend.concepts & CONCEPTS:
        raise Unsupported(f"{backend.name} offers none of the concepts ONNX graphs are lowered to")
    details = nodetests.run_suite(backend, cases).details()
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
    end-to-end bound (both against ONNX Runtime, see nutshell/onnxio/tools/compare.py)."""
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

    def cases() -> list[nodetests.Case]:
        from nutshell.onnxio.tools import nodetests

        if "onnx_cases" not in st:
            st["onnx_cases"] = nodetests.node_cases() + nodetests.data_cases()
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
