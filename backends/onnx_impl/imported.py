"""An imported ONNX graph handed to ONNX Runtime whole (the ONNX backend's ``import_onnx``).

The model is read, validated and lowered by nutshell/onnxio/codec/reader.py first, exactly as on every
other backend, so the same files are refused with the same errors; then the validated model (every
tensor's data inline) becomes one ONNX Runtime session on this backend's device. ``run(feeds,
every=True)`` uses a second session that also exposes every value an ONNX node defines. ONNX
Runtime logs only fatal errors here: a model it cannot take is not an error (see OrtImported).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper

from nutshell.errors import BackendFailure, NutshellError
from nutshell.onnxio.codec import inference
from nutshell.onnxio.codec.reader import Graph, Imported


def with_outputs(model: onnx.ModelProto, names: list[str], types: dict[str, int]) -> onnx.ModelProto:
    """A copy of ``model`` whose graph also outputs ``names`` (the typed ones among them)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    have = {o.name for o in out.graph.output}
    out.graph.output.extend(helper.make_tensor_value_info(n, types[n], None)
                            for n in names if n not in have and n in types)
    return out


def _diverges(graph: Graph) -> str | None:
    """Why ONNX Runtime would not follow the ONNX specification on this graph, if it would not: it
    refuses a dilated SAME Conv and pads a dilated SAME MaxPool for the undilated kernel (ONNX
    asks for out = ⌈n / s⌉ with the dilated kernel, as backends/shapes.same_pads computes)."""
    for step in graph.steps:
        if step.rule.startswith("SAME") and step.attrs.get("dilation", [1, 1]) != [1, 1]:
            return f"ONNX Runtime pads a dilated {step.rule} window differently from ONNX ({step.node})"
    return None


def _session(model: onnx.ModelProto, providers: list) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.log_severity_level = 4
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(model.SerializeToString(), options, providers=providers)


class OrtImported(Imported):
    """Runs the validated model in one ONNX Runtime session (two with ``every``). Where ONNX Runtime
    cannot take the model whole (it dropped the kernels of old opsets, e.g. Add-6 and Gemm-6, and
    has no batch-first LSTM) or would not follow ONNX (:func:`_diverges`), the graph runs concept by
    concept instead, like on every backend; ``fallback`` then says why."""

    def __init__(self, graph: Graph, backend):
        super().__init__(graph, backend)
        self._sessions: dict[bool, Any] = {}
        self.fallback: str | None = None

    def _session(self, every: bool):
        if self.fallback is None:
            self.fallback = _diverges(self.graph)
        if self.fallback is not None:
            return None
        if every not in self._sessions:
            model = with_outputs(self.graph.model, list(self.graph.values), self.graph.types) if every \
                else self.graph.model
            try:
                self._sessions[every] = _session(model, self.backend._providers)
            except Exception as exc:
                self._sessions[every] = None
                self.fallback = f"ONNX Runtime cannot take the model whole: {type(exc).__name__}: {exc}"
        return self._sessions[every]

    def run(self, feeds: Mapping[str, Any], every: bool = False) -> dict[str, np.ndarray]:
        sess = self._session(every)
        if sess is None:
            return super().run(feeds, every)
        names = [o.name for o in sess.get_outputs()]
        arrays = self.graph.check_feeds(feeds)
        # the feeds' actual shapes fix every dynamic dimension: every value's size passes the
        # memory limits before ONNX Runtime allocates anything
        inference.infer(self.graph, {k: inference.LIMITS.meta(v) for k, v in arrays.items()})
        try:
            arrays = sess.run(names, arrays)
        except NutshellError:
            raise
        except Exception as exc:
            raise BackendFailure(f"backend 'onnx': ONNX Runtime failed on graph {self.graph.name!r}: "
                                 f"{type(exc).__name__}: {exc}") from None
        return dict(zip(names, arrays, strict=True))
