"""The float64 NumPy oracle that produces the spec's goldens and their error bounds.

>>> import numpy as np
>>> from nutshell.spec.reference import forward
>>> forward("relu", {"x": np.array([-1.0, 2.0])}, {})["y"].v
array([0., 2.])

``forward`` and ``vjp`` take validated inputs (float64 arrays, labels int64) and FULL attrs
(``nutshell.spec.validate.check`` fills the defaults) and return :class:`~spec.reference.tracked.T`
values: ``.v`` the float64 golden, ``.e`` its first-order rounding-error bound in units of u.
Written for clarity, not speed, and independent of every backend: each vjp is derived by hand.
Each area module exports ``CONCEPTS``, concept id -> :class:`~nutshell.spec.signatures.Impl` on
T values, the convention of every backend; :data:`CONCEPTS` here merges them.
"""

from __future__ import annotations

import numpy as np

from nutshell.errors import SpecError
from nutshell.spec.reference import activations, conv, dense, inception, losses, normalization, pooling, recurrent
from nutshell.spec.reference.tracked import T
from nutshell.spec.signatures import Impl

CONCEPTS: dict[str, Impl] = {
    **activations.CONCEPTS, **dense.CONCEPTS, **losses.CONCEPTS, **conv.CONCEPTS, **pooling.CONCEPTS,
    **normalization.CONCEPTS, **recurrent.CONCEPTS, **inception.CONCEPTS,
}


def _tracked(arrays: dict[str, np.ndarray]) -> dict:
    """Float arrays become exact T values (error 0); integer labels stay plain arrays."""
    return {k: a if np.issubdtype(a.dtype, np.integer) else T(a) for k, a in arrays.items()}


def _lookup(concept: str) -> Impl:
    if concept not in CONCEPTS:
        raise SpecError(f"the reference has no '{concept}'; it knows: {', '.join(sorted(CONCEPTS))}")
    return CONCEPTS[concept]


def forward(concept: str, inputs: dict[str, np.ndarray], attrs: dict) -> dict[str, T]:
    """Every output of ``concept`` as a T (value and bound)."""
    return _lookup(concept).forward(_tracked(inputs), attrs)


def vjp(concept: str, inputs: dict[str, np.ndarray], cotangents: dict[str, np.ndarray],
        attrs: dict) -> dict[str, T]:
    """One T per differentiable input that was given: Σ_out cotangent·∂out/∂input."""
    return _lookup(concept).vjp(_tracked(inputs), _tracked(cotangents), attrs)
