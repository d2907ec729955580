"""Regenerate every vector file from the spec and the float64 reference, deterministically.

``nutshell spec generate`` writes ``spec/vectors/<concept>__<vector>.npz`` and rewrites the
``sha256`` lines of ``spec/concepts.yaml``. The same spec and reference always give the same
bytes (fixed seeds, sorted keys, fixed zip timestamps), so ``--check`` can prove it.

An .npz holds ``in.<input>`` (float64 values exactly representable in float32; labels int64),
``out.<output>`` goldens with ``err.<output>`` error bounds in units of u, ``cot.<output>`` the
cotangent, and ``grad.<input>`` vjp goldens with ``gerr.<input>`` bounds; ``err_f.<output>`` and
``gerr_f.<input>`` count each golden's underflow roundings in units of the smallest subnormal.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import re
import zipfile
from pathlib import Path

import numpy as np

from nutshell import spec as spec_mod
from nutshell.errors import SpecError
from nutshell.spec import tolerance, validate

_ZIP_TIME = (1980, 1, 1, 0, 0, 0)


def shuffled_linspace(shape, scale: float, rng: np.random.Generator) -> np.ndarray:
    """Distinct values spread evenly over (−scale, scale), none exactly 0, in a random order.

    Distinct values keep max-pool and maxout winners unambiguous (no ties, unique gradients); the
    values are rounded to float32 so every tested dtype holds them exactly.
    """
    n = int(np.prod(shape))
    # (2k + 1.5 − n) / n for k = 0 … n−1: evenly spaced in (−1, 1), never 0 (2k + 1.5 ≠ n)
    values = (2.0 * np.arange(n) + 1.5 - n) / max(n, 1) * scale
    values = values.astype(np.float32).astype(np.float64)
    return rng.permutation(values).reshape(shape)


def vector_inputs(concept: spec_mod.Concept, vec: spec_mod.Vector) -> dict[str, np.ndarray]:
    """The inputs of a vector: literal for hand vectors, seeded for generated ones."""
    if vec.kind == "hand":
        out = {}
        for name, value in vec.inputs.items():
            dt = np.int64 if concept.input(name).dtype == "int64" else np.float64
            out[name] = np.array(value, dtype=dt)
        _check_exact(concept.id, vec.name, out)
        return out
    rng = np.random.default_rng(vec.seed)
    out = {}
    for name, shape in vec.shapes.items():
        if concept.input(name).dtype == "int64":
            k = vec.shapes["logits"][-1]
            out[name] = rng.integers(0, k, size=shape).astype(np.int64)
        elif name == "targets":
            out[name] = rng.uniform(0.0, 1.0, size=shape).astype(np.float32).astype(np.float64)
        else:
            out[name] = shuffled_linspace(shape, (vec.scale or {}).get(name, 1.0), rng)
    return out


def vector_cotangents(vec: spec_mod.Vector, outs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Hand vectors: the literal cotangent, or ones; generated: seeded values in (−1, 1)."""
    if vec.cotangent is not None:
        return {k: np.array(v, dtype=np.float64) for k, v in vec.cotangent.items()}
    if vec.kind == "hand":
        return {k: np.ones_like(v) for k, v in outs.items()}
    rng = np.random.default_rng(vec.seed + 1000)
    return {k: shuffled_linspace(v.shape, 1.0, rng) for k, v in outs.items()}


def _check_exact(cid: str, vname: str, arrays: dict[str, np.ndarray]) -> None:
    for name, a in arrays.items():
        if a.dtype == np.float64:
            with np.errstate(invalid="ignore"):
                same = (a.astype(np.float32).astype(np.float64) == a) | np.isnan(a)
            if not same.all():
                raise SpecError(f"hand vector {vname}: input {name} holds values float32 cannot represent",
                                concept=cid)


def compute(concept: spec_mod.Concept, vec: spec_mod.Vector) -> dict[str, np.ndarray]:
    """Every array of one vector's file, from the reference."""
    from nutshell.spec import reference

    inputs = vector_inputs(concept, vec)
    arrays, attrs, _ = validate.check(concept, inputs, vec.attrs)
    outs = reference.forward(concept.id, arrays, attrs)
    data = {f"in.{k}": v for k, v in inputs.items()}
    data |= {f"out.{k}": t.v for k, t in outs.items()} | {f"err.{k}": t.e for k, t in outs.items()}
    data |= {f"err_f.{k}": t.f for k, t in outs.items()}
    if vec.grad:
        cots = vector_cotangents(vec, {k: t.v for k, t in outs.items()})
        grads = reference.vjp(concept.id, arrays, cots, attrs)
        data |= {f"cot.{k}": v for k, v in cots.items()}
        data |= {f"grad.{k}": t.v for k, t in grads.items()} | {f"gerr.{k}": t.e for k, t in grads.items()}
        data |= {f"gerr_f.{k}": t.f for k, t in grads.items()}
    return data


def check_hand(concept: spec_mod.Concept, vec: spec_mod.Vector, data: dict, tol: dict) -> None:
    """A hand vector's pencil results must match the reference within the float64 bound."""
    for key, value in (vec.expected or {}).items():
        kind, name = key.split(".", 1) if "." in key else ("out", key)
        e = "err" if kind == "out" else "gerr"
        cmp = tolerance.compare(np.array(value, np.float64), data[f"{kind}.{name}"], data[f"{e}.{name}"], "float64",
                                tol, data[f"{e}_f.{name}"])
        if not cmp.ok:
            raise SpecError(f"hand vector {vec.name}: the pencil value of {key} disagrees with the reference: "
                            f"{cmp.describe()}", concept=concept.id)


def npz_bytes(data: dict[str, np.ndarray]) -> bytes:
    """An .npz archive with sorted members and a fixed timestamp: the same data, the same bytes."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for key in sorted(data):
            member = io.BytesIO()
            np.lib.format.write_array(member, np.array(data[key], order="C"), allow_pickle=False)
            info = zipfile.ZipInfo(f"{key}.npy", date_time=_ZIP_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, member.getvalue())
    return buf.getvalue()


def generate(spec_path: Path | None = None, concepts: list[str] | None = None, check: bool = False,
             log=print) -> list[str]:
    """Write (or, with ``check``, compare) every vector file of ``concepts`` (None: all, and the
    models' vectors); returns the problems found. An unknown concept is a SpecError before anything
    is written."""
    spec_path = Path(spec_path) if spec_path else spec_mod.SPEC_FILE
    s = spec_mod.parse(spec_path.read_text(), spec_path)
    spec_mod.check_names(concepts, s.concepts)
    text, problems = spec_path.read_text(), []
    for concept in s.concepts.values():
        if concepts and concept.id not in concepts:
            continue
        for vec in concept.vectors:
            data = compute(concept, vec)
            check_hand(concept, vec, data, s.tolerance)
            blob = npz_bytes(data)
            digest = hashlib.sha256(blob).hexdigest()
            target = spec_path.parent / vec.file
            if check:
                if digest != vec.sha256 or not target.is_file() or target.read_bytes() != blob:
                    problems.append(f"{concept.id}/{vec.name}: regenerated bytes differ from {vec.file}")
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(blob)
            text = _set_sha(text, vec.file, digest)
            log(f"  {concept.id:<22} {vec.name:<32} {digest[:12]}")
    if not check:
        spec_path.write_text(text)
        spec_mod.load.cache_clear()
    if spec_path == spec_mod.SPEC_FILE and not concepts:
        from nutshell.spec import generate_lowp, generate_models
        problems += generate_models.generate(check=check, log=log)
        problems += generate_lowp.generate_all(check=check, log=log)
    return problems


def _set_sha(text: str, file: str, digest: str) -> str:
    pattern = re.compile(r"(file: " + re.escape(file) + r"\n\s*sha256: )(\S+)")
    new, n = pattern.subn(lambda m: m.group(1) + digest, text)
    if n != 1:
        raise SpecError(f"cannot find the sha256 line of {file} in the spec")
    return new


def add_found(concept: spec_mod.Concept, vec: spec_mod.Vector, provenance: dict, note: str = "",
              spec_path: Path | None = None) -> str:
    """Add a case found by ``nutshell hunt --save`` to the spec as a vector of kind ``found``.

    The vector is a generated one (shapes, seed and scale rebuild its inputs; the reference gives
    its goldens) that also says where it came from: ``provenance`` holds the backend, its library
    and version, the date and the hunt's seed; ``note`` what went wrong there. Its entry goes at
    the end of the concept's vectors in the spec file, its .npz beside the others; returns the
    vector's name."""
    spec_path = Path(spec_path) if spec_path else spec_mod.SPEC_FILE
    taken = {v.name for v in concept.vectors}
    stem = re.sub(r"[^a-z0-9_]", "_", f"found_{provenance['backend']}_{provenance['date']}".lower())
    name = next(f"{stem}_{i}" for i in range(1, len(taken) + 2) if f"{stem}_{i}" not in taken)
    found = dataclasses.replace(vec, name=name, kind="found", file=f"vectors/{concept.id}__{name}.npz", note=note)
    blob = npz_bytes(compute(concept, found))
    (spec_path.parent / found.file).write_bytes(blob)
    spec_path.write_text(_insert_vector(spec_path.read_text(), concept.id, _found_entry(found, provenance, blob)))
    spec_mod.load.cache_clear()
    return name


def _found_entry(vec: spec_mod.Vector, provenance: dict, blob: bytes) -> str:
    """The YAML of a found vector (flow values are JSON, which YAML reads as they are)."""
    lines = [f"  - name: {vec.name}", "    kind: found", "    shapes:"]
    lines += [f"      {k}: {json.dumps(list(v))}" for k, v in vec.shapes.items()]
    lines += [f"    seed: {vec.seed}", f"    scale: {json.dumps(vec.scale)}", f"    attrs: {json.dumps(vec.attrs)}"]
    lines += [f"    grad: {json.dumps(vec.grad)}", f"    provenance: {json.dumps(provenance)}"]
    lines += [f"    note: {json.dumps(vec.note)}"] if vec.note else []
    lines += [
              f"    file: {vec.file}", f"    sha256: {hashlib.sha256(blob).hexdigest()}"]
    return "\n".join(lines) + "\n"


def _insert_vector(text: str, concept_id: str, entry: str) -> str:
    """``text`` with ``entry`` appended to the vectors list of concept ``concept_id``."""
    lines = text.splitlines(keepends=True)
    start = lines.index(f"- id: {concept_id}\n")
    at = next(i for i in range(start + 1, len(lines)) if lines[i] == "  vectors:\n") + 1
    while at < len(lines) and (lines[at].startswith(("  - ", "    ")) or not lines[at].strip()):
        at += 1
    while not lines[at - 1].strip():   # after the last entry, before blank lines
        at -= 1
    return "".join(lines[:at]) + entry + "".join(lines[at:])
