"""The ONNX backend: every concept, and every vjp, as an ONNX graph run by ONNX Runtime.

A call looks up a session under (concept, direction, attrs, input shapes, dtype) in a bounded
LRU cache; on a miss the area module (activations.py, conv.py, ...) builds the graph, which
passes the full ONNX checker and strict shape inference before a session is made. Each area
module exports ``CONCEPTS``, concept id -> :class:`~nutshell.spec.signatures.Impl`, with the
graph first: ``forward(g, inputs, attrs)`` and ``vjp(g, inputs, cotangents, attrs)`` add nodes
to ``g`` and return value names. Forward graphs take the concept's inputs and give
``out.<output>``; vjp graphs also take ``cot.<output>`` and give ``grad.<input>``, recomputing
the forward values they need. A spec model (:meth:`OnnxBackend.model`) composes these graphs into
one forward and one backward session (model.py). Nothing here imports torch or cupy.
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np
import onnx
import onnxruntime as ort

from nutshell.backends.base import Backend, low_precision
from nutshell.backends.onnx_impl import (
    activations,
    conv,
    dense,
    graph,
    inception,
    losses,
    normalization,
    pooling,
    recurrent,
)
from nutshell.backends.onnx_impl.baseline import OrtBaseline
from nutshell.backends.onnx_impl.model import OnnxModel
from nutshell.errors import BackendUnavailable, ShapeError
from nutshell.spec import models, validate
from nutshell.spec.signatures import Impl, output_shapes

CONCEPTS: dict[str, Impl] = {
    **activations.CONCEPTS, **dense.CONCEPTS, **losses.CONCEPTS, **conv.CONCEPTS, **pooling.CONCEPTS,
    **normalization.CONCEPTS, **recurrent.CONCEPTS, **inception.CONCEPTS,
}

# Where ONNX Runtime (CPU provider) has no kernel for an operator a concept needs. The CUDA
# provider has more float64 kernels, but that is unverified here, so the list holds everywhere.
_NO_FLOAT64 = {
    "conv2d": "ONNX Runtime has no float64 Conv or ConvTranspose kernel",
    "convolve2d": "ONNX Runtime has no float64 Conv or ConvTranspose kernel",
    "inception": "ONNX Runtime has no float64 Conv or ConvTranspose kernel",
    "avg_pool2d": "ONNX Runtime has no float64 AveragePool or ConvTranspose kernel",
    "global_avg_pool2d": "ONNX Runtime has no float64 GlobalAveragePool kernel",
}
UNSUPPORTED: dict[tuple[str, str], str] = {(c, "float64"): why for c, why in _NO_FLOAT64.items()}

# Low precision. ONNX Runtime's CPU provider has float16 kernels for Conv, MatMul, pooling, Relu,
# Softmax and more, and for an operator without one its graph optimiser puts Casts around the node
# and runs it in float32; that holds for every float16 forward and vjp graph here except those
# that scatter gradients (ScatterElements with reduction "add" fails at run time in float16).
# There are no bfloat16 kernels at all (Conv, MaxPool: invalid graph; Relu, Softmax, MatMul: no
# kernel). Those graphs are built and run in float32: the inputs widen exactly, the outputs are
# rounded once, to nearest even, as an ONNX Cast would round them.
_WIDE_FLOAT16_VJP = {
    "max_pool2d": "ONNX Runtime has no float16 ScatterElements(reduction='add') kernel for the gradient",
    "inception": "ONNX Runtime has no float16 ScatterElements(reduction='add') kernel for its max pool's gradient",
}
_NO_BFLOAT16 = "ONNX Runtime's CPU provider has no bfloat16 kernels"

CACHE_SIZE = 256


class Compiled:
    """One ONNX Runtime session and the names of its outputs; ``keys`` are the names the
    contract returns them under (``out.y`` -> ``y``, ``grad.x`` -> ``x``)."""

    __slots__ = ("_run", "device_id", "keys", "names", "session")

    def __init__(self, session: ort.InferenceSession, names: list[str], device_id: int = 0):
        self.session, self.names, self.device_id = session, names, device_id
        self._run = session._sess.run
        self.keys = [n.partition(".")[2] for n in names]

    def __call__(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """Run on host arrays. Straight to the session's binding: InferenceSession.run would
        re-check the input names on every call, which the cache key has already fixed."""
        return self._run(self.names, feeds, None)

    def bound(self, native: dict[str, ort.OrtValue]) -> list[ort.OrtValue]:
        """Run with I/O binding: inputs and outputs stay on the GPU."""
        io = self.session.io_binding()
        for k, a in native.items():
            io.bind_ortvalue_input(k, a)
        for name in self.names:
            io.bind_output(name, "cuda", self.device_id)
        self.session.run_with_iobinding(io)
        return io.get_outputs()


class SessionCache:
    """A least-recently-used map from a graph key to its runner, holding at most ``size``."""

    def __init__(self, size: int = CACHE_SIZE):
        self.size = size
        self._entries: OrderedDict[tuple, Compiled] = OrderedDict()
        self.builds = 0

    def get(self, key: tuple, build: Callable[[], Compiled]) -> Compiled:
        entry = self._entries.get(key)
        if entry is None:
            entry = self._entries[key] = build()
            self.builds += 1
            if len(self._entries) > self.size:
                self._entries.popitem(last=False)
        else:
            self._entries.move_to_end(key)
        return entry

    def __len__(self) -> int:
        return len(self._entries)


def _freeze(attrs: dict) -> tuple:
    return tuple((k, tuple(v) if isinstance(v, list) else v) for k, v in attrs.items())


def _cuda_works(index: int) -> bool:
    """Whether a session really runs on CUDA device ``index`` (onnxruntime-gpu and a GPU)."""
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return False
    g = graph.Graph("float32", "probe")
    g.output("y", g.input("x", [1]), [1])
    try:
        sess = graph.session(g.model(), [("CUDAExecutionProvider", {"device_id": index})])
    except Exception:
        return False
    return sess.get_providers()[0] == "CUDAExecutionProvider"


def _select_device(device: str | None) -> tuple[str, list]:
    """(device name, ONNX Runtime providers) for a requested device; None picks cuda:0 when it works."""
    if device is None:
        device = "cuda:0" if _cuda_works(0) else "cpu"
    if device == "cpu":
        return "cpu", ["CPUExecutionProvider"]
    kind, _, index = device.partition(":")
    index = index or "0"
    if kind != "cuda" or not index.isdigit():
        raise BackendUnavailable(f"backend 'onnx' has no device {device!r}; use 'cpu' or 'cuda[:N]'")
    if not _cuda_works(int(index)):
        raise BackendUnavailable(f"backend 'onnx' cannot use {device}: it needs onnxruntime-gpu and a CUDA GPU; "
                                 "pip install 'nutshell[onnx-gpu]'")
    cuda = {"device_id": int(index), "use_tf32": 0}                          # full float32 in Conv and Gemm
    return f"cuda:{index}", [("CUDAExecutionProvider", cuda), "CPUExecutionProvider"]


class OnnxBackend(Backend):
    """Every concept of the spec as an ONNX graph run by ONNX Runtime."""

    name = "onnx"

    def __init__(self, device: str | None = None, spec=None, cache_size: int = CACHE_SIZE):
        super().__init__(device, spec)
        self.device, self._providers = _select_device(device)
        self._device_id = int(self.device.partition(":")[2] or 0)
        self.sessions = SessionCache(cache_size)
        self._outputs = {c.id: c.outputs for c in self.spec.concepts.values()}
        self._float32_ops: dict[str, tuple[str, ...]] = {}

    def unsupported(self, concept: str, dtype: str) -> str | None:
        return UNSUPPORTED.get((concept, dtype))

    @contextlib.contextmanager
    def library_defaults(self) -> Iterator[None]:
        """ONNX Runtime's own defaults: its CUDA provider runs Conv and MatMul in TF32 unless
        ``use_tf32`` is 0, which the backend pins. Within the block sessions are built (in a cache
        of their own) without that pin; no effect on the CPU provider."""
        pinned, cache = self._providers, self.sessions
        self._providers = [(p[0], {k: v for k, v in p[1].items() if k != "use_tf32"}) if isinstance(p, tuple) else p
                           for p in pinned]
        self.sessions = SessionCache(cache.size)
        try:
            yield
        finally:
            self._providers, self.sessions = pinned, cache

    def widened(self, concept: str, dtype: str) -> str | None:
        """bfloat16 always, and the float16 gradients that scatter, compute in float32 (see
        _WIDE_FLOAT16_VJP); the result is rounded once into ``dtype``. In the other float16 graphs
        ONNX Runtime itself runs every operator without a float16 kernel in float32, between Casts
        its optimiser inserts (:meth:`float32_ops` names them)."""
        why = _NO_BFLOAT16 if dtype == "bfloat16" else _WIDE_FLOAT16_VJP.get(concept) if dtype == "float16" else None
        if why is not None:
            return f"float32: {why}; the result is rounded once into {dtype}"
        ops = self.float32_ops(concept) if dtype == "float16" else ()
        if not ops:
            return None
        return (f"partly float32: ONNX Runtime runs {', '.join(ops)} in float32, between Casts its optimiser "
                "inserts around nodes without a float16 kernel; the rest in float16")

    def float32_ops(self, concept: str) -> tuple[str, ...]:
        """The operators of ``concept``'s float16 forward and vjp graphs that ONNX Runtime runs in
        float32: its optimiser wraps a node without a float16 kernel in Casts named
        ``InsertedPrecisionFreeCast_*``, read here from the optimised graphs of the concept's first
        generated low-precision vector (spec/lowp.yaml). Measured once per concept."""
        if concept not in self._float32_ops:
            from nutshell.spec import lowp

            lv = next((v.vector for v in lowp.load() if v.concept == concept and v.vector.kind == "generated"), None)
            ops: set[str] = set()
            if lv is not None:
                full = validate._check_attrs(self.spec.concept(concept), lv.attrs)
                for direction in ("forward", "vjp"):
                    model = self.build(concept, full, {k: tuple(s) for k, s in lv.shapes.items()}, "float16", direction)
                    ops |= graph.float32_ops(model, self._providers)
            self._float32_ops[concept] = tuple(sorted(ops))
        return self._float32_ops[concept]

    def _wide(self, concept: str, direction: str, dtype: np.dtype) -> bool:
        """Whether this graph runs in float32 for a low-precision ``dtype`` (see :meth:`widened`)."""
        return dtype == _BFLOAT16 or (dtype == np.float16 and direction == "vjp" and concept in _WIDE_FLOAT16_VJP)

    # --- graphs ---------------------------------------------------------------------------------

    def build(self, concept: str, attrs: dict, shapes: dict[str, tuple], dtype: str, direction: str
              ) -> onnx.ModelProto:
        """The checked forward or vjp graph of ``concept`` for full ``attrs`` and input ``shapes``."""
        c = self.spec.concept(concept)
        g = graph.Graph(dtype, f"{concept}_{direction}")
        v = {k: g.input(k, s, None if c.input(k).dtype == "float" else c.input(k).dtype) for k, s in shapes.items()}
        impl = CONCEPTS[concept]
        outs = output_shapes(concept, shapes, attrs)
        if direction == "forward":
            for name, value in impl.forward(g, v, attrs).items():
                g.output(f"out.{name}", value, outs[name])
        else:
            cot = {name: g.input(f"cot.{name}", outs[name]) for name in c.outputs}
            grads = impl.vjp(g, v, cot, attrs)
            for name in c.differentiable:
                if name in v:
                    g.output(f"grad.{name}", grads[name], shapes[name])
        return graph.check(g.model())

    def save_graph(self, concept: str, attrs: dict | None, shapes: dict[str, tuple], dtype: str = "float32",
                   direction: str = "forward", path: str | Path = "graph.onnx") -> Path:
        """Write the forward or vjp graph of ``concept`` to an .onnx file (for a viewer such as Netron)."""
        full = validate._check_attrs(self.spec.concept(concept), attrs or {})
        path = Path(path)
        onnx.save(self.build(concept, full, {k: tuple(s) for k, s in shapes.items()}, dtype, direction), path)
        return path

    def _compiled(self, concept: str, direction: str, akey: tuple, attrs: dict, shapes: tuple, dtype: np.dtype
                  ) -> Compiled:
        """The cached session of one graph, built on the first call with this key."""
        def build() -> Compiled:
            model = self.build(concept, attrs, dict(shapes), str(dtype), direction)
            return Compiled(graph.session(model, self._providers), [o.name for o in model.graph.output],
                            self._device_id)
        return self.sessions.get((concept, direction, akey, shapes, dtype), build)

    # --- the hooks of the contract ----------------------------------------------------------------

    def _empty(self, concept: str, inputs: dict[str, np.ndarray], attrs: dict[str, Any]) -> dict[str, tuple] | None:
        """The output shapes when every output has no element (an empty batch), else None. Such a
        call needs no session (ONNX Runtime's Reshape and FFT kernels fail or trap on it): the
        outputs are empty, and every gradient is Σ over no cotangent entries, exactly 0."""
        shapes = self.output_shapes(concept, inputs, attrs)
        return shapes if all(0 in tuple(s) for s in shapes.values()) else None

    def _forward(self, concept: str, inputs: dict[str, np.ndarray], attrs: dict[str, Any]) -> dict[str, np.ndarray]:
        dtype = _dtype(inputs)
        if (empty := self._empty(concept, inputs, attrs)) is not None:
            return {k: np.zeros(s, dtype) for k, s in empty.items()}
        if self._wide(concept, "forward", dtype):
            return _narrowed(self._forward(concept, _widened(inputs), attrs), dtype)
        run = self._compiled(concept, "forward", _freeze(attrs), attrs, _shapes(inputs), dtype)
        return dict(zip(run.keys, run(inputs), strict=True))

    def _vjp(self, concept: str, inputs: dict[str, np.ndarray], cotangents: dict[str, np.ndarray],
             attrs: dict[str, Any]) -> dict[str, np.ndarray]:
        dtype = _dtype(inputs)
        if self._empty(concept, inputs, attrs) is not None:
            return {k: np.zeros_like(inputs[k]) for k in self.spec.concept(concept).differentiable if k in inputs}
        if self._wide(concept, "vjp", dtype):
            return _narrowed(self._vjp(concept, _widened(inputs), _widened(cotangents), attrs), dtype)
        run = self._compiled(concept, "vjp", _freeze(attrs), attrs, _shapes(inputs), dtype)
        feeds = dict(inputs)
        feeds.update({f"cot.{k}": v for k, v in cotangents.items()})
        return dict(zip(run.keys, run(feeds), strict=True))

    def _op(self, concept: str, attrs: dict[str, Any]) -> Callable[..., dict]:
        """A callable on native arrays (numpy on the CPU, OrtValue on CUDA). It keeps the session
        of the last (name, shape, dtype) signature at hand, so a repeated call costs one list
        comparison on top of the session run."""
        akey, outputs, on_cuda = _freeze(attrs), self._outputs[concept], self.device.startswith("cuda")
        signature = _ortvalue_signature if on_cuda else _numpy_signature
        last: list = [None, None]                                            # signature, run

        def call(**native: Any) -> dict:
            sig = signature(native)
            if sig != last[0]:
                self._check_names(concept, [k for k, _, _ in sig])
                shapes = tuple((k, s) for k, s, _ in sig)
                dtype = next(d for _, _, d in sig if d.kind == "f")
                run = self._compiled(concept, "forward", akey, attrs, shapes, dtype)
                last[:] = sig, run.bound if on_cuda else run
            return dict(zip(outputs, last[1](native), strict=True))
        return call

    def _check_names(self, concept: str, names: list[str]) -> None:
        """The op callable's inputs: known names, every required one present."""
        c = self.spec.concept(concept)
        for name in names:
            if name not in {i.name for i in c.inputs}:
                raise ShapeError(f"unexpected input; inputs are {[i.name for i in c.inputs]}", concept=concept,
                                 argument=name)
        for i in c.inputs:
            if not i.optional and i.name not in names:
                raise ShapeError("required input is missing", concept=concept, argument=i.name)

    # --- spec models ---------------------------------------------------------------------------------

    def model(self, name: str, params: Mapping[str, np.ndarray] | None = None, seed: int = 0,
              dtype: str | None = None, dims: Mapping[str, int] | None = None) -> Any:
        """A spec model run whole: one session for the forward pass and the loss, one for the
        backward pass, composed from this backend's concept graphs (model.py). In float16 and
        bfloat16 it runs node by node through :meth:`run` and :meth:`vjp` instead (the generic
        model of nutshell.spec.graph), whose graphs compute in float32 where ONNX Runtime has no
        kernel (:meth:`widened`); the whole-model sessions are built for float32 and float64."""
        if low_precision(dtype, params):
            return super().model(name, params, seed, dtype, dims)
        return OnnxModel(self, models.get(name, **(dims or {})), params=params, seed=seed, dtype=dtype)

    # --- imported ONNX models -------------------------------------------------------------------------

    def import_onnx(self, source: Any, direct: bool = True):
        """An ONNX model validated and lowered like on every backend, then run by ONNX Runtime whole
        (``direct``, see imported.py), or with ``direct=False`` concept by concept like elsewhere."""
        from nutshell.backends.onnx_impl.imported import OrtImported
        from nutshell.onnxio.codec.reader import graph_of

        if not direct:
            return super().import_onnx(source)
        return OrtImported(graph_of(source), self)

    # --- benchmark level ----------------------------------------------------------------------------

    def to_native(self, a: np.ndarray) -> Any:
        a = np.ascontiguousarray(a)
        if self.device.startswith("cuda"):
            return ort.OrtValue.ortvalue_from_numpy(a, "cuda", self._device_id)
        return a

    def to_numpy(self, t: Any) -> np.ndarray:
        return t.numpy() if isinstance(t, ort.OrtValue) else np.asarray(t)

    def baseline(self) -> OrtBaseline:
        return OrtBaseline(self)

    def synchronize(self) -> None:
        """Nothing to wait for: ONNX Runtime returns from a run (I/O-bound runs on CUDA included)
        only after its device work has finished."""


def _shapes(inputs: dict[str, np.ndarray]) -> tuple:
    return tuple((k, a.shape) for k, a in inputs.items())


def _dtype(inputs: dict[str, np.ndarray]) -> np.dtype:
    """The float dtype of a call (a dtype object: str(dtype) costs microseconds); ml_dtypes'
    bfloat16 is of kind "V", labels of kind "i"."""
    return next(a.dtype for a in inputs.values() if a.dtype.kind != "i")


_BFLOAT16 = np.dtype(ml_dtypes.bfloat16)


def _widened(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Float arrays in float32 (exact from float16 and bfloat16); labels as they are."""
    return {k: a if a.dtype.kind == "i" else a.astype(np.float32) for k, a in arrays.items()}


def _narrowed(arrays: dict[str, np.ndarray], dtype: np.dtype) -> dict[str, np.ndarray]:
    """Every result rounded once into ``dtype``, to nearest even; past its range, ±inf."""
    with np.errstate(over="ignore"):
        return {k: a.astype(dtype) for k, a in arrays.items()}


_ORT_TYPES = {"tensor(float)": np.dtype(np.float32), "tensor(double)": np.dtype(np.float64),
              "tensor(int64)": np.dtype(np.int64)}


def _numpy_signature(native: dict[str, np.ndarray]) -> list:
    return [(k, a.shape, a.dtype) for k, a in native.items()]


def _ortvalue_signature(native: dict[str, ort.OrtValue]) -> list:
    return [(k, tuple(a.shape()), _ORT_TYPES[a.data_type()]) for k, a in native.items()]
