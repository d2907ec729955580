"""Reading a results file safely: results.json and results.jsonl of ``nutshell run``, bench.json of
``nutshell bench``, and any such file a user passes to ``nutshell report`` or ``nutshell compare``.

A file is read only when it is a regular file of at most :data:`MAX_BYTES` (256 MiB, about a
hundred times a full run's results.json): a FIFO, a device such as ``/dev/zero``, a directory or a
larger file is refused before any byte is read. What it holds is validated against the JSON Schema
``results.schema.json`` beside this module, for the types as well as the keys of every field, before
anything uses it; a problem is a SpecError naming the file, the record, the field and what was
expected.
"""

from __future__ import annotations

import functools
import json
import os
import reprlib
import stat
from pathlib import Path
from typing import Any

from nutshell.errors import SpecError

SCHEMA_FILE = Path(__file__).with_name("results.schema.json")
MAX_BYTES = 256 * 2**20
"""The largest results file read (256 MiB)."""
_LIMIT = f"{MAX_BYTES:,} bytes ({MAX_BYTES // 2**20} MiB)"

_FILE_TYPES = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
               (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))
_JSON_TYPES = {"string": "str", "number": "int or float", "integer": "int", "object": "dict", "array": "list",
               "boolean": "bool", "null": "null"}
_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = 80


def _refuse_unless_regular(path: Path, st: os.stat_result) -> None:
    if not stat.S_ISREG(st.st_mode):
        what = next((name for test, name in _FILE_TYPES if test(st.st_mode)), "not a regular file")
        raise SpecError(f"{path}: {what}, not a regular file; a results file is read only from a regular file")
    if st.st_size > MAX_BYTES:
        raise SpecError(f"{path}: {st.st_size:,} bytes, more than the limit of {_LIMIT} for a results file")


def read_text(path: str | Path) -> str:
    """The text of a results file, after checking (before opening it) that it is a regular file
    within the size limit. It is opened without blocking, so a file swapped for a FIFO between the
    check and the open cannot hang the reader, and checked again once open."""
    path = Path(path)
    try:
        _refuse_unless_regular(path, os.stat(path))
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as exc:
        raise SpecError(f"{path}: cannot read it: {exc.strerror or exc}") from None
    with os.fdopen(fd, "rb") as f:
        _refuse_unless_regular(path, os.fstat(f.fileno()))
        data = f.read(MAX_BYTES + 1)
    if len(data) > MAX_BYTES:
        raise SpecError(f"{path}: grew beyond the limit of {_LIMIT} while being read")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SpecError(f"{path}: not a JSON file (not UTF-8 text: {exc.reason} at byte {exc.start})") from None


def parse(text: str, where: str, what: str = "file") -> Any:
    """JSON text (a file, or a line of one) as Python values; SpecError when it is not JSON or
    nests beyond Python's recursion limit."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise SpecError(f"{where}: not a JSON {what} ({exc})") from None
    except RecursionError:
        raise SpecError(f"{where}: JSON nested too deeply to read; not a results {what}") from None


@functools.cache
def _schema() -> dict:
    return json.loads(SCHEMA_FILE.read_text())


@functools.cache
def _validator(definition: str):
    import jsonschema

    return jsonschema.Draft202012Validator({**_schema(), "$ref": f"#/$defs/{definition}"})


def validate(instance: Any, definition: str, where: str) -> None:
    """Check ``instance`` against the schema's ``$defs/<definition>`` (checkResult, benchResult,
    resultsFile, benchFile); on the first problem in document order, a SpecError naming where it
    is (``where``, then the record of the file's ``results`` list, with its id) and the field."""
    errors = list(_validator(definition).iter_errors(instance))
    if errors:
        first = min(errors, key=lambda e: [(isinstance(p, str), p if isinstance(p, int) else 0, str(p))
                                           for p in e.absolute_path])
        raise SpecError(_message(first, instance, where))


def _message(err, instance: Any, where: str) -> str:
    path = list(err.absolute_path)
    if len(path) >= 2 and path[0] == "results" and isinstance(path[1], int):
        record = instance["results"][path[1]]
        rid = record.get("id") if isinstance(record, dict) else None
        where += f": results[{path[1]}]" + (f" ({rid})" if isinstance(rid, str) else "")
        path = path[2:]
    field = ".".join(f"[{p}]" if isinstance(p, int) else str(p) for p in path).replace(".[", "[")
    return f"{where}: {_problem(err, field)}"[:500]


def _problem(err, field: str) -> str:
    """What is wrong, in words: ``field X is missing``, ``field X: expected str, got [1]``, ..."""
    schema, value, kind = err.schema, err.instance, err.validator
    at = f"field {field}: " if field else ""
    prefix = f"{field}." if field else ""
    if isinstance(schema, dict) and "errorMessage" in schema:
        return f"{at}{schema['errorMessage']}"
    if kind == "required":
        missing = next(name for name in err.validator_value if name not in value)
        return f"field {prefix}{missing} is missing"
    if kind == "additionalProperties":
        extra = next(name for name in value if name not in schema.get("properties", {}))
        return f"field {prefix}{extra}: not a field of a {schema.get('title', 'record')}"
    if kind == "type" and not field and "title" in schema:
        return f"a {schema['title']} must be a JSON object, got {_json_type(value)}"
    if kind == "type":
        wanted = err.validator_value if isinstance(err.validator_value, list) else [err.validator_value]
        return f"{at}expected {' or '.join(_JSON_TYPES[t] for t in wanted)}, got {_REPR.repr(value)}"
    if kind == "enum":
        return f"{at}{_REPR.repr(value)} is not one of {', '.join(map(str, err.validator_value))}"
    if kind == "const":
        return f"{at}expected {err.validator_value!r}, got {_REPR.repr(value)}"
    if kind == "exclusiveMinimum":
        return f"{at}expected a number above {err.validator_value}, got {_REPR.repr(value)}"
    return f"{at}{err.message}"


def _json_type(value: Any) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}
    return names.get(type(value), "a number")
