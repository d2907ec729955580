"""The low-precision vectors: ``spec/lowp.yaml``, float16 and bfloat16 cases of every concept.

Each entry is a vector of a concept (hand or generated, as in ``concepts.yaml``) with the formats it
is checked in (``dtypes``). Its inputs are exactly representable in each of them, so a backend
starts from the very values of the float64 reference; its file holds, besides the usual arrays,
the float32-accumulation split of every bound (``err_r.*``, ``err_a.*`` and ``gerr_r.*``,
``gerr_a.*``; spec/reference/tracked.py). Files and sha256 lines are written by
``nutshell spec generate`` (spec/generate_lowp.py).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nutshell import spec as spec_mod
from nutshell.spec.signatures import DTYPES, LOW_PRECISION

LOWP_FILE = spec_mod.SPEC_DIR / "lowp.yaml"


@dataclass(frozen=True)
class LowpVector:
    """One low-precision vector: the vector itself and the formats it is checked in."""

    vector: spec_mod.Vector
    dtypes: tuple[str, ...]

    @property
    def concept(self) -> str:
        return self.vector.concept


def _entry(d: dict) -> LowpVector:
    keys = ("name", "kind", "file", "sha256", "inputs", "shapes", "seed", "expected", "grad", "note",
            "cotangent", "scale")
    vec = spec_mod.Vector(attrs=d.get("attrs", {}), concept=d["concept"], **{k: d[k] for k in keys if k in d})
    return LowpVector(vec, tuple(d["dtypes"]))


@functools.lru_cache(maxsize=2)
def load(path: Path = LOWP_FILE) -> tuple[LowpVector, ...]:
    """Every entry of the low-precision file, validated against spec/schema.json; a concept the
    concepts file lacks is a SpecError."""
    doc = spec_mod.load_document(path)
    vectors = tuple(_entry(d) for d in doc["lowp"])
    spec_mod.check_names(sorted({v.concept for v in vectors}), spec_mod.load().concepts)
    return vectors


def exact_in(a: np.ndarray, dtype: str) -> bool:
    """Whether every value of the float64 array ``a`` survives the round trip through ``dtype``
    (NaN and ±inf included)."""
    with np.errstate(over="ignore", invalid="ignore"):
        back = np.asarray(a, np.float64).astype(DTYPES[dtype]).astype(np.float64)
    return bool(np.all((back == a) | (np.isnan(back) & np.isnan(a))))


def to_grid(a: np.ndarray) -> np.ndarray:
    """``a`` rounded to bfloat16's 8 significant bits: exact in bfloat16, and in float16 too where
    its magnitude lies within float16's range (2⁻¹⁴ … 65504, as the generated vectors' values do)."""
    return np.asarray(a, np.float64).astype(DTYPES["bfloat16"]).astype(np.float64)


__all__ = ["LOWP_FILE", "LOW_PRECISION", "LowpVector", "exact_in", "load", "to_grid"]
