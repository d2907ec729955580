"""The float64 NumPy oracle that produces the spec's goldens and their error bounds.

>>> import numpy as np
>>> from nutshell.spec.reference import forward
>>> forward("relu", {"x": np.array([-1.0, 2.0])}, {})["y"].v
array([0., 2.])

``forward`` and ``vjp`` take validated inputs (float64 arrays, labels int64) and FULL attrs
(``backends.validate.check`` fills the defaults) and return :class:`~spec.reference.tracked.T`
values: ``.v`` the float64 golden, ``.e`` its first-order rounding-error bound in units of u.
Written for clarity, not speed, and independent of every backend: each vjp is derived by hand.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from nutshell.errors import SpecError
from nutshell.spec.reference import activations, conv, dense, inception, losses, normalization, pooling, recurrent
from nutshell.spec.reference.tracked import T

_MODULES = (activations, dense, losses, conv, pooling, normalization, recurrent, inception)

FORWARD: dict[str, Callable[[dict, dict], dict]] = {k: f for m in _MODULES for k, f in m.FORWARD.items()}
VJP: dict[str, Callable[[dict, dict, dict], dict]] = {k: f for m in _MODULES for k, f in m.VJP.items()}


def _tracked(arrays: dict[str, np.ndarray]) -> dict:
    """Float arrays become exact T values (error 0); integer labels stay plain arrays."""
    return {k: a if np.issubdtype(a.dtype, np.integer) else T(a) for k, a in arrays.items()}


def _lookup(table: dict, concept: str) -> Callable:
    if concept not in table:
        raise SpecError(f"the reference has no '{concept}'; it knows: {', '.join(sorted(table))}")
    return table[concept]


def forward(concept: str, inputs: dict[str, np.ndarray], attrs: dict) -> dict[str, T]:
    """Every output of ``concept`` as a T (value and bound)."""
    return _lookup(FORWARD, concept)(_tracked(inputs), attrs)


def vjp(concept: str, inputs: dict[str, np.ndarray], cotangents: dict[str, np.ndarray],
        attrs: dict) -> dict[str, T]:
    """One T per differentiable input that was given: Σ_out cotangent·∂out/∂input."""
    return _lookup(VJP, concept)(_tracked(inputs), _tracked(cotangents), attrs)
