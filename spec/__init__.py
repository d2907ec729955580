"""The executable glossary: load ``spec/concepts.yaml``, validated against ``spec/schema.json``.

>>> from nutshell import spec
>>> s = spec.load()
>>> s.concepts["conv2d"].attr("stride").default
[1, 1]
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from nutshell.errors import SpecError

if __name__ != "nutshell.spec":  # the folder spec/ installs as nutshell.spec: one module, one name
    raise ImportError("import nutshell.spec, not spec: nutshell installs one import package")


SPEC_DIR = Path(__file__).resolve().parent
SPEC_FILE = SPEC_DIR / "concepts.yaml"
SCHEMA_FILE = SPEC_DIR / "schema.json"
SCHEMA_VERSION = 1


@dataclass(frozen=True)
class InputSpec:
    name: str
    rank: int | None          # None: any rank ≥ min_rank
    min_rank: int
    dtype: str                # "float" or "int64"
    differentiable: bool
    optional: bool
    shape: str                # the rule, in words, e.g. "(N, C, H, W)"


@dataclass(frozen=True)
class AttrSpec:
    name: str
    type: str                 # int | ints | float | bool | string
    length: int | None = None
    default: Any = None
    required: bool = False
    default_from: str | None = None
    minimum: float | None = None
    choices: tuple = ()
    doc: str = ""


@dataclass(frozen=True)
class Vector:
    name: str
    kind: str                 # hand | generated
    attrs: dict
    file: str
    sha256: str
    inputs: dict | None = None     # hand vectors: the literal inputs
    shapes: dict | None = None     # generated vectors: input shapes
    seed: int | None = None
    expected: dict | None = None   # hand vectors: outputs worked out by pencil
    grad: bool = True              # whether the vector carries a vjp golden
    note: str = ""
    cotangent: dict | None = None  # hand vectors: the literal output cotangents
    scale: dict | None = None      # generated vectors: value range per input, ±scale

    def load(self) -> dict[str, np.ndarray]:
        """The arrays of this vector's .npz, after checking its sha256."""
        return load_npz(SPEC_DIR / self.file, self.sha256)


@dataclass(frozen=True)
class ErrorVector:
    name: str
    inputs: dict              # name -> shape (list) or literal spec {shape, dtype, fill}
    attrs: dict
    raises: str
    argument: str
    note: str = ""


@dataclass(frozen=True)
class Concept:
    id: str
    title: str
    section: str
    definition: str
    inputs: tuple[InputSpec, ...]
    attrs: tuple[AttrSpec, ...]
    outputs: tuple[str, ...]
    semantics: tuple[str, ...]
    tolerance: dict
    vectors: tuple[Vector, ...]
    errors: tuple[ErrorVector, ...]
    bench: dict = field(default_factory=dict)

    def input(self, name: str) -> InputSpec:
        return next(i for i in self.inputs if i.name == name)

    def attr(self, name: str) -> AttrSpec:
        return next(a for a in self.attrs if a.name == name)

    @property
    def differentiable(self) -> tuple[str, ...]:
        return tuple(i.name for i in self.inputs if i.differentiable)


@dataclass(frozen=True)
class Spec:
    version: str
    path: Path
    tolerance: dict
    concepts: dict[str, Concept]

    def concept(self, cid: str) -> Concept:
        try:
            return self.concepts[cid]
        except KeyError:
            known = ", ".join(sorted(self.concepts))
            raise SpecError(f"unknown concept '{cid}'; the spec knows: {known}") from None


def load_npz(path: Path, sha256: str) -> dict[str, np.ndarray]:
    """Read a vector file, refusing it when it is missing or its sha256 does not match."""
    if not path.is_file():
        raise SpecError(f"vector file {path} is missing; regenerate with 'nutshell spec generate'")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != sha256:
        raise SpecError(f"vector file {path} has sha256 {digest}, the spec says {sha256}")
    with np.load(path, allow_pickle=False) as f:
        return {k: f[k] for k in f.files}


def _schema() -> dict:
    return json.loads(SCHEMA_FILE.read_text())


def _validate(doc: Any, path: Path) -> None:
    import jsonschema

    validator = jsonschema.Draft202012Validator(_schema())
    errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path))
    if not errors:
        return
    err = errors[0]
    where = list(err.absolute_path)
    concept = "-"
    if len(where) >= 2 and where[0] == "concepts" and isinstance(doc, dict):
        try:
            concept = doc["concepts"][where[1]].get("id", f"#{where[1]}")
        except (IndexError, KeyError, TypeError, AttributeError):
            concept = f"#{where[1]}"
    field_path = "/".join(str(p) for p in where) or "(top level)"
    raise SpecError(f"{path}: concept {concept}: field {field_path}: {err.message}")


def _input(d: dict) -> InputSpec:
    rank = d.get("rank")
    return InputSpec(
        name=d["name"],
        rank=rank if isinstance(rank, int) else None,
        min_rank=d.get("min_rank", rank if isinstance(rank, int) else 0),
        dtype=d.get("dtype", "float"),
        differentiable=d.get("differentiable", d.get("dtype", "float") == "float"),
        optional=d.get("optional", False),
        shape=d.get("shape", ""),
    )


def _attr(d: dict) -> AttrSpec:
    return AttrSpec(
        name=d["name"],
        type=d["type"],
        length=d.get("length"),
        default=d.get("default"),
        required="default" not in d and "default_from" not in d,
        default_from=d.get("default_from"),
        minimum=d.get("min"),
        choices=tuple(d.get("choices", ())),
        doc=d.get("doc", ""),
    )


def _vector(d: dict) -> Vector:
    keys = ("name", "kind", "file", "sha256", "inputs", "shapes", "seed", "expected", "grad", "note", "cotangent",
            "scale")
    kw = {k: d[k] for k in keys if k in d}
    return Vector(attrs=d.get("attrs", {}), **kw)


def _error(d: dict) -> ErrorVector:
    return ErrorVector(
        name=d["name"], inputs=d["inputs"], attrs=d.get("attrs", {}),
        raises=d["raises"], argument=d["argument"], note=d.get("note", ""),
    )


def _concept(d: dict) -> Concept:
    return Concept(
        id=d["id"], title=d["title"], section=d["section"], definition=d["definition"].strip(),
        inputs=tuple(_input(i) for i in d["inputs"]),
        attrs=tuple(_attr(a) for a in d.get("attrs", [])),
        outputs=tuple(d["outputs"]),
        semantics=tuple(d.get("semantics", [])),
        tolerance=d["tolerance"],
        vectors=tuple(_vector(v) for v in d.get("vectors", [])),
        errors=tuple(_error(e) for e in d.get("errors", [])),
        bench=d.get("bench", {}),
    )


def parse_document(text: str, path: Path) -> dict:
    """Parse a spec file (concepts, models, claims or bench) and validate it against the schema."""
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise SpecError(f"{path}: not valid YAML: {exc}") from None
    _validate(doc, path)
    if doc["schema_version"] != SCHEMA_VERSION:
        raise SpecError(f"{path}: schema_version {doc['schema_version']} is not {SCHEMA_VERSION}")
    return doc


def load_document(path: str | Path) -> dict:
    """A companion spec file (e.g. spec/models.yaml), validated, whose spec_version must be the
    concepts file's."""
    p = Path(path)
    if not p.is_file():
        raise SpecError(f"spec file {p} does not exist")
    doc = parse_document(p.read_text(), p)
    if doc["spec_version"] != load().version:
        raise SpecError(f"{p}: spec_version {doc['spec_version']} differs from concepts.yaml's {load().version}")
    return doc


def parse(text: str, path: Path) -> Spec:
    """Parse and validate spec text; every problem is a SpecError naming file, concept, field."""
    doc = parse_document(text, path)
    if "concepts" not in doc:
        raise SpecError(f"{path}: field concepts: a concepts file needs 'concepts'")
    concepts: dict[str, Concept] = {}
    for i, d in enumerate(doc["concepts"]):
        if d["id"] in concepts:
            raise SpecError(f"{path}: concept {d['id']}: field concepts/{i}/id: duplicate id")
        concepts[d["id"]] = _concept(d)
    return Spec(version=doc["spec_version"], path=path, tolerance=doc["tolerance"], concepts=concepts)


@functools.lru_cache(maxsize=4)
def load(path: str | Path | None = None) -> Spec:
    """Load (once) and validate a spec file; the default is the repository's concepts.yaml."""
    p = Path(path) if path is not None else SPEC_FILE
    if not p.is_file():
        raise SpecError(f"spec file {p} does not exist")
    return parse(p.read_text(), p)
