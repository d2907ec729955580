"""The bench's native baseline for the ONNX backend: a bare ``InferenceSession.run`` of the
backend's own graph, forward and vjp."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort

from nutshell.backends.baseline import Baseline, Call


class OrtBaseline(Baseline):
    """A bare ``InferenceSession`` of the backend's own graph (``b.build``)."""

    library = "onnxruntime"

    def forward(self, concept, attrs, inputs):
        return self._session_call(concept, attrs, inputs, {}, "forward")

    def vjp(self, concept, attrs, inputs, cots):
        return self._session_call(concept, attrs, inputs, {f"cot.{k}": v for k, v in cots.items()}, "vjp")

    def _session_call(self, concept, attrs, inputs, extra, direction) -> Call | None:
        shapes = {k: v.shape for k, v in inputs.items()}
        dtype = next(str(v.dtype) for v in inputs.values() if v.dtype.kind == "f")
        model = self.b.build(concept, attrs, shapes, dtype, direction)
        feeds = {**inputs, **extra}
        if not self.b.device.startswith("cuda"):
            sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
            return lambda: sess.run(None, feeds)
        index = int(self.b.device.partition(":")[2] or 0)
        sess = ort.InferenceSession(model.SerializeToString(),
                                    providers=[("CUDAExecutionProvider", {"device_id": index})])
        io = sess.io_binding()
        for k, v in feeds.items():
            io.bind_ortvalue_input(k, ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(v), "cuda", index))
        for out in sess.get_outputs():
            io.bind_output(out.name, "cuda", index)

        def call():
            sess.run_with_iobinding(io)
            return io.get_outputs()
        return call
