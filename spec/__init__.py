"""The executable glossary: load ``spec/concepts.yaml``, validated against ``spec/schema.json``.

>>> from nutshell import spec
>>> s = spec.load()
>>> s.concepts["conv2d"].attr("stride").default
[1, 1]

Every spec file (concepts, models, claims, bench; ``--spec`` names any file) is read by
:func:`parse_document` with PyYAML's safe loader, which cannot run code, within three bounds: the
file's size (:data:`MAX_BYTES`), the nesting depth (:data:`MAX_DEPTH`) and the number of nodes the
document holds once every alias is expanded (:data:`MAX_NODES`). A "billion laughs" file (aliases of
aliases, a few hundred bytes that expand to 10⁹ nodes) and 50,000 nested brackets are refused with
a SpecError well within a second, instead of gigabytes and a MemoryError, or a RecursionError.
"""

from __future__ import annotations

import difflib
import functools
import hashlib
import json
from collections.abc import Iterable
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
MAX_BYTES = 4 * 2**20
"""The largest spec file read: about 50 times the concepts file, which PyYAML reads in under a second."""
MAX_DEPTH = 64
"""The deepest nesting accepted, aliases expanded: the spec's own files nest 11 levels at most."""
MAX_NODES = 1_000_000
"""The most nodes a document may expand to (every alias counted where it is used): about 100
times the concepts file's 9,000; each node costs the schema validation and the loader time."""


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
    concept: str = ""              # the concept whose vector this is

    def load(self) -> dict[str, np.ndarray]:
        """The arrays of this vector's .npz, after checking its sha256 (SpecFileError when it is
        missing or does not match)."""
        return load_npz(SPEC_DIR / self.file, self.sha256, f"concept {self.concept}: vector {self.name}")


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


class SpecFileError(SpecError):
    """One of the spec's own files (a vector file) is missing or is not the file the spec names by
    its sha256: the spec is broken, not the code checked against it. The conformance suite records
    such a check under the outcome ``spec``, never as a backend's crash."""


def load_npz(path: Path, sha256: str, owner: str = "") -> dict[str, np.ndarray]:
    """Read a vector file, refusing it (SpecFileError naming ``owner``, e.g. "concept relu: vector
    grid", and the file) when it is missing, not a regular file, or its sha256 does not match."""
    where = f"{owner}: " if owner else ""
    if not path.is_file():
        raise SpecFileError(f"{where}vector file {path} is missing (or not a regular file); restore it, or "
                            "regenerate it with 'nutshell spec generate'")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != sha256:
        raise SpecFileError(f"{where}vector file {path} has sha256 {digest}, the spec says {sha256}: the file "
                            "was changed; restore it, or regenerate it with 'nutshell spec generate'")
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


def _vector(d: dict, concept: str) -> Vector:
    keys = ("name", "kind", "file", "sha256", "inputs", "shapes", "seed", "expected", "grad", "note", "cotangent",
            "scale")
    kw = {k: d[k] for k in keys if k in d}
    return Vector(attrs=d.get("attrs", {}), concept=concept, **kw)


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
        vectors=tuple(_vector(v, d["id"]) for v in d.get("vectors", [])),
        errors=tuple(_error(e) for e in d.get("errors", [])),
        bench=d.get("bench", {}),
    )


class _BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe loader, measuring each node as it composes it: how many nodes it holds and how
    deep it nests, every alias counted in full where it is used (an alias is the node it names,
    shared, so measuring is linear in the file). It refuses a node beyond the bounds as soon as it
    is composed, and nesting beyond :data:`MAX_DEPTH` before it recurses further (PyYAML's composer
    recurses once per level: 50,000 levels would end in a RecursionError)."""

    def __init__(self, text: str, path: Path):
        super().__init__(text)
        self.path, self.level = path, 0
        self.measured: dict[int, tuple[int, int]] = {}     # id(node) -> (nodes, depth), aliases expanded

    def compose_node(self, parent: Any, index: Any) -> Any:
        line = self.peek_event().start_mark.line + 1
        if self.check_event(yaml.AliasEvent):
            node = super().compose_node(parent, index)
            if id(node) not in self.measured:
                raise SpecError(f"{self.path}: line {line}: an alias inside the node it names; refused")
            return node
        self.level += 1
        try:
            if self.level > MAX_DEPTH:
                raise SpecError(f"{self.path}: line {line}: nested more than {MAX_DEPTH} levels deep; refused")
            node = super().compose_node(parent, index)
        finally:
            self.level -= 1
        self._measure(node, line)
        return node

    def _measure(self, node: yaml.Node, line: int) -> None:
        kids = [self.measured[id(k)] for k in _children(node)]
        nodes, depth = 1 + sum(n for n, _ in kids), 1 + max((d for _, d in kids), default=0)
        if nodes > MAX_NODES or depth > MAX_DEPTH:
            raise SpecError(f"{self.path}: line {line}: expands to {nodes:,} nodes nested {depth} deep (every alias "
                            f"counted where it is used), more than the limits of {MAX_NODES:,} nodes and "
                            f"{MAX_DEPTH} levels; refused")
        self.measured[id(node)] = (nodes, depth)


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return list(node.value) if isinstance(node, yaml.SequenceNode) else []


def _load_yaml(text: str, path: Path) -> Any:
    """The document of ``text``, parsed by the safe loader within the bounds of the module docstring."""
    if len(text) > MAX_BYTES:
        raise SpecError(f"{path}: {len(text):,} characters, more than a spec file's limit of {MAX_BYTES:,}")
    loader = _BoundedLoader(text, path)
    try:
        root = loader.get_single_node()
        return None if root is None else loader.construct_document(root)
    except yaml.YAMLError as exc:
        raise SpecError(f"{path}: not valid YAML: {exc}") from None
    finally:
        loader.dispose()


def _read(path: Path) -> str:
    """A spec file's text: a regular file (not a device or a pipe) within :data:`MAX_BYTES`."""
    if not path.is_file():
        raise SpecError(f"spec file {path} does not exist or is not a regular file")
    if path.stat().st_size > MAX_BYTES:
        raise SpecError(f"spec file {path} has {path.stat().st_size:,} bytes, more than the limit of {MAX_BYTES:,}")
    return path.read_text()


def parse_document(text: str, path: Path) -> dict:
    """Parse a spec file (concepts, models, claims or bench) and validate it against the schema."""
    doc = _load_yaml(text, path)
    _validate(doc, path)
    if doc["schema_version"] != SCHEMA_VERSION:
        raise SpecError(f"{path}: schema_version {doc['schema_version']} is not {SCHEMA_VERSION}")
    return doc


def load_document(path: str | Path) -> dict:
    """A companion spec file (e.g. spec/models.yaml), validated, whose spec_version must be the
    concepts file's."""
    p = Path(path)
    doc = parse_document(_read(p), p)
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


def load(path: str | Path | None = None) -> Spec:
    """Load (once) and validate a spec file; the default is the repository's concepts.yaml."""
    return _load(Path(path).resolve() if path is not None else SPEC_FILE.resolve())


@functools.lru_cache(maxsize=4)
def _load(path: Path) -> Spec:
    """One parse per file, however its path was spelled (``load()``, ``load(SPEC_FILE)``, relative)."""
    return parse(_read(path), path)


load.cache_clear = _load.cache_clear   # type: ignore[attr-defined]  # after a spec file was rewritten


def check_names(requested: Iterable[str] | None, known: Iterable[str], what: str = "concept") -> None:
    """Refuse every requested name that ``known`` lacks, before anything runs: one SpecError naming
    each unknown name, the valid ones and the closest (``what`` says what they are: "concept", "model")."""
    valid = list(known)
    bad = [n for n in requested or () if n not in valid]
    if not bad:
        return
    lines = []
    for name in bad:
        close = difflib.get_close_matches(name, valid, n=1, cutoff=0.6)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        lines.append(f"no {what} named '{name}'{hint}")
    raise SpecError(f"{'; '.join(lines)}; {what}s: {', '.join(valid) or 'none'}")
