"""The bench's baselines for the ONNX backend, both run by a bare ``InferenceSession``:

* its own baseline, :class:`OrtBaseline`: the backend's own graph (``b.build``), forward and vjp.
  The ratio to it is the wrapper's overhead, and it cannot reveal a graph slower than need be;
* the canonical call, :class:`OrtCanonical`: the model a user writes, one node of the standard
  operator (``canonical.py``), forward only (ONNX has no gradient operators).
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort

from nutshell.backends.baseline import Baseline, Call
from nutshell.backends.onnx_impl import canonical


def bare_call(model: onnx.ModelProto, feeds: dict[str, np.ndarray], device: str) -> Call:
    """A call of a bare session of ``model`` on ``device`` with these feeds: ``sess.run`` on the
    CPU; on CUDA the feeds bound once on the device and the outputs left there."""
    if not device.startswith("cuda"):
        sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        return lambda: sess.run(None, feeds)
    index = int(device.partition(":")[2] or 0)
    sess = ort.InferenceSession(model.SerializeToString(), providers=[("CUDAExecutionProvider", {"device_id": index})])
    io = sess.io_binding()
    for k, v in feeds.items():
        io.bind_ortvalue_input(k, ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(v), "cuda", index))
    for out in sess.get_outputs():
        io.bind_output(out.name, "cuda", index)

    def call():
        sess.run_with_iobinding(io)
        return io.get_outputs()
    return call


class OrtBaseline(Baseline):
    """A bare ``InferenceSession`` of the backend's own graph (``b.build``)."""

    library = "onnxruntime"
    call = "a bare InferenceSession of the backend's own graph"

    def canonical(self) -> OrtCanonical:
        return OrtCanonical(self.b)

    def forward(self, concept, attrs, inputs):
        return self._session_call(concept, attrs, inputs, {}, "forward")

    def vjp(self, concept, attrs, inputs, cots):
        return self._session_call(concept, attrs, inputs, {f"cot.{k}": v for k, v in cots.items()}, "vjp")

    def _session_call(self, concept, attrs, inputs, extra, direction) -> Call | None:
        shapes = {k: v.shape for k, v in inputs.items()}
        dtype = next(str(v.dtype) for v in inputs.values() if v.dtype.kind == "f")
        model = self.b.build(concept, attrs, shapes, dtype, direction)
        return bare_call(model, {**inputs, **extra}, self.b.device)


class OrtCanonical(Baseline):
    """A bare ``InferenceSession`` of the concept's canonical model (see ``canonical.py``)."""

    library = "onnxruntime"
    call = "a bare InferenceSession of the standard operator's model"

    def canonical(self) -> OrtCanonical:
        return self

    def describe(self, concept, attrs, inputs):
        built = canonical.model(concept, attrs, inputs)
        if built is None:
            return self.call
        nodes = len(built[0].graph.node)
        return f"{'one' if nodes == 1 else nodes}-node ONNX model: {canonical.ops(built[0])}"

    def forward(self, concept, attrs, inputs):
        built = canonical.model(concept, attrs, inputs)
        return None if built is None else bare_call(*built, self.b.device)
