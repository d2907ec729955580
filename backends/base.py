"""The backend contract.

A backend subclasses :class:`Backend` and implements four hooks on validated input:

* ``_forward(concept, inputs, attrs) -> {output: ndarray}``
* ``_vjp(concept, inputs, cotangents, attrs) -> {input: ndarray}`` (differentiable inputs only)
* ``_op(concept, attrs) -> callable`` on native arrays, plus ``to_native``/``to_numpy``/``synchronize``
* ``unsupported(concept, dtype) -> str | None``: why a concept × dtype is not offered
* ``widened(concept, dtype) -> str | None``: why a concept × dtype it offers is computed in a wider
  format (a library without a float16 or bfloat16 kernel) and rounded once into ``dtype``

``inputs`` reaching a hook are C-contiguous NumPy arrays of one float dtype (labels int64),
optional inputs that were not given are absent, and ``attrs`` hold every attribute with the
spec's defaults filled in (pooling ``stride`` resolved from ``kernel``). Output cotangents are
complete: an output the caller left out arrives as zeros.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from typing import Any, ClassVar

import numpy as np

from nutshell import spec as spec_mod
from nutshell.backends.baseline import Baseline
from nutshell.errors import BackendFailure, BackendUnavailable, NutshellError, UnsupportedConcept
from nutshell.spec import validate
from nutshell.spec.signatures import LOW_PRECISION


def low_precision(dtype: str | None, params: Mapping[str, np.ndarray] | None) -> bool:
    """Whether a model is asked for in float16 or bfloat16: by ``dtype``, else by its parameters."""
    if dtype is None and params:
        dtype = str(np.asarray(next(iter(params.values()))).dtype)
    return dtype in LOW_PRECISION


class Backend:
    """One implementation of every concept of the spec, behind one uniform API."""

    name: str = "?"
    device: str = "cpu"

    def __init__(self, device: str | None = None, spec: spec_mod.Spec | None = None):
        self.spec = spec if spec is not None else spec_mod.load()

    # --- what it offers ----------------------------------------------------------------------

    @property
    def concepts(self) -> frozenset[str]:
        """Concept ids this backend implements in at least one dtype."""
        return frozenset(c for c in self.spec.concepts if any(
            self.unsupported(c, dt) is None for dt in ("float32", "float64")))

    def unsupported(self, concept: str, dtype: str) -> str | None:
        """None when ``concept`` runs in ``dtype`` here, else the reason it does not."""
        return None

    @contextlib.contextmanager
    def library_defaults(self) -> Iterator[None]:
        """Within the block, the library's own precision defaults (TF32 where it enables it) instead
        of the full float32 a backend pins for conformance; ``nutshell probe --library-defaults``
        shows what they do. A backend with nothing pinned changes nothing."""
        yield

    def widened(self, concept: str, dtype: str) -> str | None:
        """None when ``concept`` computes in ``dtype`` itself, else why (and in what) it computes in
        a wider format, its inputs widened exactly and its outputs rounded once into ``dtype``.
        The low-precision checks record it; ``nutshell list`` prints it."""
        return None

    # Known deviations from the spec, as data: check-id pattern ("*" matches anything; brackets are
    # literal, as in check ids) -> the reason. A matching
    # check that fails is reported unsupported with the reason; one that passes fails, so a stale
    # entry is noticed and removed. Example: {"*[tf-subnormal]": "TensorFlow flushes subnormals"}.
    deviations: ClassVar[dict[str, str]] = {}

    @classmethod
    def flushes_subnormals(cls, why: str) -> dict[str, str]:
        """The deviations of float32 kernels that flush subnormals to zero: the catalogue's subnormal
        checks (inputs × 2⁻¹⁴⁰) of the concepts whose outputs stay subnormal through elementwise or
        pooling kernels, and the float32 vectors ``nutshell hunt`` found whose goldens hold an
        exp-made subnormal (σ, softmax and the LSTM's gates of a large negative argument). Seen
        identically for TensorFlow's CPU kernels and CuPy's GPU kernels; their matrix products
        (BLAS) kept subnormals, so conv2d and dense are not among them."""
        concepts = ("relu", "tanh", "max_pool2d", "avg_pool2d", "global_avg_pool2d", "lrn")
        found = ("layer[{}-found_torch_2026_12_04_1-float32]", "softmax_regression[{}-found_onnx_2026_12_04_1-float32]",
                 "lstm_cell[{}-found_torch_2026_12_04_1-float32]", "lstm[{}-found_torch_2026_12_04_1-float32]")
        return {f"{c}[{cls.name}-subnormal]": why for c in concepts} | {f.format(cls.name): why for f in found}

    def deviation(self, check_id: str) -> str | None:
        """The declared reason why check ``check_id`` is expected to fail here, if any."""
        import re

        def matches(pattern: str) -> bool:
            return re.fullmatch(".*".join(map(re.escape, pattern.split("*"))), check_id) is not None

        return next((why for pat, why in self.deviations.items() if matches(pat)), None)

    # --- the public calls --------------------------------------------------------------------

    def run(self, concept: str, inputs: Mapping[str, Any], attrs: Mapping[str, Any] | None = None
            ) -> dict[str, np.ndarray]:
        """Forward: NumPy in, dict of NumPy out."""
        c = self.spec.concept(concept)
        arrays, full, dtype = validate.check(c, inputs, attrs)
        self._require(concept, dtype)
        return self._guard(concept, lambda: self._forward(concept, arrays, full))

    def vjp(self, concept: str, inputs: Mapping[str, Any], cotangents: Mapping[str, Any],
            attrs: Mapping[str, Any] | None = None) -> dict[str, np.ndarray]:
        """Vector-Jacobian product: one gradient per differentiable input that was given."""
        c = self.spec.concept(concept)
        arrays, full, dtype = validate.check(c, inputs, attrs)
        self._require(concept, dtype)
        out_shapes = self.output_shapes(concept, arrays, full)
        cots = validate.check_cotangents(c, cotangents, out_shapes, dtype)
        return self._guard(concept, lambda: self._vjp(concept, arrays, cots, full))

    def op(self, concept: str, attrs: Mapping[str, Any] | None = None, *, dtype: str = "float32"
           ) -> Callable[..., Any]:
        """Benchmark level: a callable taking native arrays (by input name), returning native outputs."""
        c = self.spec.concept(concept)
        full = validate._check_attrs(c, attrs or {})
        self._require(concept, dtype)
        return self._guard(concept, lambda: self._op(concept, full))

    def model(self, name: str, params: Mapping[str, np.ndarray] | None = None, seed: int = 0,
              dtype: str | None = None, dims: Mapping[str, int] | None = None):
        """A spec model (spec/models.yaml) on this backend: ``forward``, ``loss_and_grads``, ``step``,
        ``params``. ``params`` None: the spec's initialisation with ``seed``, in ``dtype`` (float32
        unless given; with ``params``, their dtype). ``dims`` override the model's dimensions. The
        default runs the graph node by node through this backend's validated ``run`` and ``vjp``
        (nutshell.spec.graph.Model); a backend may override it with a native whole-model subclass
        (the CuPy and ONNX backends do) that keeps the API, the errors and the results."""
        from nutshell.spec import models
        from nutshell.spec.graph import Model

        return Model(self, models.get(name, **(dims or {})), params=params, seed=seed, dtype=dtype)

    def import_onnx(self, source: Any):
        """An ONNX model (a path, its bytes, or a graph from ``nutshell.onnxio.codec.reader.parse``) on this
        backend: ``g.run({"input": x})`` returns {output name: array}. The file is read, validated and
        lowered to spec concepts once (nutshell/onnxio/codec/reader.py); the default runs those concepts with
        this backend's ops; a backend may override it with a native whole-graph runtime."""
        try:
            from nutshell.onnxio.codec import reader as onnx_import
        except ImportError as exc:
            raise BackendUnavailable(f"importing ONNX needs the onnx package ({exc.name or exc}); "
                                     "pip install 'nutshell[onnx]'") from None
        return onnx_import.Imported(onnx_import.graph_of(source), self)

    # --- benchmark-level hooks (native arrays) -----------------------------------------------

    def to_native(self, a: np.ndarray) -> Any:
        return a

    def to_numpy(self, t: Any) -> np.ndarray:
        return np.asarray(t)

    def synchronize(self) -> None:
        """Wait for queued device work; a no-op on the CPU."""

    def warmup(self) -> None:
        """Compile or load whatever the first call would (kernels, sessions); benchmarks call it
        before timing. A no-op unless a backend needs it."""

    def baseline(self) -> Baseline | None:
        """The same work called directly on this backend's library, which the bench times beside
        the backend's call to measure its overhead (see nutshell/backends/baseline.py); None: none."""
        return None

    # --- hooks a backend implements ----------------------------------------------------------

    def _forward(self, concept: str, inputs: dict[str, np.ndarray], attrs: dict[str, Any]) -> dict[str, np.ndarray]:
        raise UnsupportedConcept(f"backend '{self.name}' does not implement it", concept=concept)

    def _vjp(self, concept: str, inputs: dict[str, np.ndarray], cotangents: dict[str, np.ndarray],
             attrs: dict[str, Any]) -> dict[str, np.ndarray]:
        raise UnsupportedConcept(f"backend '{self.name}' has no vjp for it", concept=concept)

    def _op(self, concept: str, attrs: dict[str, Any]) -> Callable[..., Any]:
        def call(**native):
            return self._forward(concept, {k: self.to_numpy(v) for k, v in native.items()}, attrs)
        return call

    # --- helpers -----------------------------------------------------------------------------

    def output_shapes(self, concept: str, inputs: dict[str, np.ndarray], attrs: dict) -> dict[str, tuple]:
        """Output shapes from the spec's shape arithmetic (backend-neutral)."""
        from nutshell.spec.signatures import output_shapes
        return output_shapes(concept, {k: v.shape for k, v in inputs.items()}, attrs)

    def _require(self, concept: str, dtype: str) -> None:
        why = self.unsupported(concept, dtype)
        if why is not None:
            raise UnsupportedConcept(f"backend '{self.name}' does not offer it in {dtype}: {why}",
                                     concept=concept)

    def _guard(self, concept: str, fn: Callable[[], Any]) -> Any:
        """Run a hook; a library exception becomes a NutshellError instead of escaping raw."""
        try:
            return fn()
        except NutshellError:
            raise
        except Exception as exc:
            raise BackendFailure(f"backend '{self.name}' failed: {type(exc).__name__}: {exc}",
                                 concept=concept) from exc

    def __repr__(self) -> str:
        return f"<nutshell backend {self.name} on {self.device}>"
