"""Scaffold an out-of-tree backend: ``nutshell new-backend NAME [--dir PATH]``.

It writes a small installable package, outside the nutshell checkout, that registers backend
NAME through the ``nutshell.backends`` entry point. Every concept of the spec is present as a
forward and a vjp function that raise ``UnsupportedConcept``, in the ``CONCEPTS`` table of
``Impl(forward, vjp)`` that every nutshell backend dispatches through, and every concept is
declared unsupported, so after ``pip install -e`` the suite reports it all as unsupported and
nothing as passed. docs/adding-a-backend.md walks on from there.
"""

from __future__ import annotations

import argparse
import re
import sys
import textwrap
from pathlib import Path
from string import Template

from nutshell import backends
from nutshell import spec as spec_mod

NAME_RULE = re.compile(r"[a-z][a-z0-9_]{0,31}")
CHECKOUT = Path(spec_mod.__file__).resolve().parents[1]     # the nutshell source tree


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", help="backend name: lower-case letters, digits and _, starting with a letter")
    parser.add_argument("--dir", type=Path, default=None,
                        help="the package directory to create (default: ./nutshell-NAME-backend); must not exist")


def run(args: argparse.Namespace) -> int:
    name = args.name
    target = (args.dir or Path(f"nutshell-{name.replace('_', '-')}-backend")).resolve()
    problem = check_name(name) or check_target(target)
    if problem:
        print(f"nutshell new-backend: {problem}", file=sys.stderr)
        return 2
    files = write_package(name, target, spec_mod.load())
    print(f"wrote backend '{name}' to {target}:")
    for path in files:
        print(f"  {path.relative_to(target)}")
    steps = [(f"cd {target}", ""),
             ("pip install -e .", f"registers '{name}' through the nutshell.backends entry point"),
             (f"nutshell list -b {name}", "every concept unsupported for now"),
             ("pytest", f"the conformance suite on '{name}'")]
    width = max(len(cmd) for cmd, _ in steps) + 2
    print("\nnext:")
    for cmd, why in steps:
        print(f"  {cmd.ljust(width)}{'# ' + why if why else ''}".rstrip())
    print("then implement one concept at a time: README.md there, and docs/adding-a-backend.md in nutshell")
    return 0


def check_name(name: str) -> str | None:
    """Why ``name`` cannot name a new backend, or None."""
    if not NAME_RULE.fullmatch(name):
        return (f"backend name {name!r} must be 1 to 32 lower-case letters, digits or '_', starting with a letter "
                "(it becomes the Python package nutshell_<name>_backend)")
    if name in backends.names():
        return f"a backend named '{name}' is already registered ({', '.join(backends.names())}); pick another name"
    return None


def check_target(target: Path) -> str | None:
    """Why the package cannot be written to ``target``, or None."""
    if target.exists():
        return f"{target} already exists; nothing was written (pass --dir with a new directory)"
    if (CHECKOUT / "pyproject.toml").is_file() and target.is_relative_to(CHECKOUT):
        return (f"{target} is inside the nutshell checkout {CHECKOUT}; an added backend lives outside it "
                f"(e.g. --dir {CHECKOUT.parent / target.name})")
    return None


def names_for(name: str) -> dict[str, str]:
    """The names a backend called ``name`` goes by: distribution, module, class."""
    return {"name": name, "dist": f"nutshell-{name.replace('_', '-')}-backend", "module": f"nutshell_{name}_backend",
            "cls": "".join(part.capitalize() for part in name.split("_")) + "Backend"}


def write_package(name: str, target: Path, s: spec_mod.Spec) -> list[Path]:
    """Write every file of the package; returns their paths."""
    n = names_for(name) | {"spec_version": s.version, "count": str(len(s.concepts))}
    module = target / n["module"]
    files = {
        target / "pyproject.toml": Template(PYPROJECT).substitute(n),
        target / "README.md": Template(README).substitute(n),
        target / ".gitignore": "__pycache__/\n*.egg-info/\nreports/\n",
        target / "tests" / "conformance.nutshell": Template(SUITE_FILE).substitute(n),
        module / "__init__.py": Template(INIT).substitute(n),
        module / "backend.py": Template(BACKEND).substitute(n, todo=todo(s)),
        module / "ops.py": (Template(OPS).substitute(n) + "".join(stubs(c) for c in s.concepts.values())
                            + table(s)),
    }
    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return list(files)


# --- the generated code ------------------------------------------------------------------------

def table(s: spec_mod.Spec) -> str:
    """ops.py's CONCEPTS: one Impl(forward, vjp) per concept."""
    rows = "".join(f'    "{c}": Impl({c}, {c}_vjp),\n' for c in s.concepts)
    return f"\n\nCONCEPTS: dict[str, Impl] = {{\n{rows}}}\n"


def todo(s: spec_mod.Spec) -> str:
    """backend.py's TODO: every concept, declared unsupported."""
    names = textwrap.fill(", ".join(f'"{c}"' for c in s.concepts), 96, initial_indent="    ",
                          subsequent_indent="    ")
    return ("# Concepts declared unsupported (in both dtypes). Take a concept out once its forward and vjp\n"
            "# in ops.py are written; `pytest -k <concept>` then checks it.\n"
            f"TODO: set[str] = {{\n{names},\n}}\n")


def _attr_line(a: spec_mod.AttrSpec) -> str:
    if a.default_from:
        default = f"default: the {a.default_from}"
    else:
        default = "required" if a.required else f"default {a.default!r}"
    choices = f", one of {list(a.choices)}" if a.choices else ""
    doc = f": {a.doc}" if a.doc and not a.default_from else ""
    return f"{a.name} ({a.type}, {default}{choices}){doc}"


def _doc(lines: list[str]) -> str:
    """A docstring body, wrapped at 100 columns; an indented line or a bullet hangs its continuation."""
    out = []
    for line in lines:
        body = line.lstrip()
        lead = line[:len(line) - len(body)]
        hang = lead + "  " if lead or body.startswith("- ") else lead
        out.append(textwrap.fill(body.replace("\\", "\\\\"), 96, initial_indent=lead, subsequent_indent=hang,
                                 break_on_hyphens=False))
    return textwrap.indent("\n".join(out), "    ")


def stubs(c: spec_mod.Concept) -> str:
    """The forward and vjp stubs of one concept, with the spec's signature and semantics in the docstring."""
    inputs = [f"  {i.name}: {i.shape}" + (" (optional: absent when not given)" if i.optional else "")
              + ("" if i.dtype == "float" else f" ({i.dtype})") for i in c.inputs]
    attrs = [f"  {_attr_line(a)}" for a in c.attrs]
    returns = ", ".join(f"'{o}': array" for o in c.outputs)
    forward = [f"{c.title}: returns {{{returns}}}.", "", c.definition, "",
               "Inputs, ``inputs[name]``:", *inputs,
               *(["Attributes, ``attrs[name]`` (every default already filled in):", *attrs] if attrs else []),
               "Semantics:", *[f"  - {line}" for line in c.semantics]]
    grads = [i.name for i in c.inputs if i.differentiable]
    vjp = [f"Vector-Jacobian product of {c.id}: ``cotangents`` holds one cotangent per output "
           f"({', '.join(c.outputs)}; zeros for those the caller left out).", "",
           f"Returns {{input: gradient}} for every differentiable input that was given: {', '.join(grads)}."]
    return (f"\n\ndef {c.id}(inputs: Arrays, attrs: Attrs) -> dict:\n"
            f"    \"\"\"{_doc(forward).lstrip()}\n    \"\"\"\n"
            f"    raise not_yet(\"{c.id}\")\n"
            f"\n\ndef {c.id}_vjp(inputs: Arrays, cotangents: Arrays, attrs: Attrs) -> dict:\n"
            f"    \"\"\"{_doc(vjp).lstrip()}\n    \"\"\"\n"
            f"    raise not_yet(\"{c.id}\")\n")


PYPROJECT = """\
[build-system]
requires = ["setuptools>=64"]
build-backend = "setuptools.build_meta"

[project]
name = "$dist"
version = "0.1.0"
description = "The '$name' backend for nutshell"
readme = "README.md"
requires-python = ">=3.10"
dependencies = ["nutshell", "numpy"]

# How nutshell finds this backend: nutshell.load("$name"), nutshell list, nutshell run -b $name.
[project.entry-points."nutshell.backends"]
$name = "$module:$cls"

[tool.setuptools.packages.find]
include = ["$module*"]

[tool.pytest.ini_options]
testpaths = ["tests"]
addopts = ["--backend", "$name"]
"""

README = """\
# $dist

The `$name` backend for nutshell: every concept of nutshell's spec
(version $spec_version, $count concepts), checked by nutshell's conformance suite. It was
written by `nutshell new-backend $name`; every concept starts out declared unsupported.

## Try it

```
pip install -e .              # registers '$name' through the nutshell.backends entry point
nutshell list -b $name          # what '$name' implements: nothing yet
pytest                        # the conformance suite on '$name' (tests/conformance.nutshell)
pytest -k "relu and float32"  # one concept, one dtype
nutshell run -b torch -b $name  # both backends, results in reports/results.json
```

## Where things are

* `$module/ops.py`: one forward and one vjp function per concept, with the spec's
  signature, shapes and pinned semantics in the docstring, each raising `UnsupportedConcept`,
  and `CONCEPTS`, concept id -> `Impl(forward, vjp)`: nutshell's one calling convention.
* `$module/backend.py`: the `$cls` class (a `nutshell.Backend`), `CONCEPTS` (the tables of
  the area modules, merged: ops.py's to begin with) and `TODO`, the concepts declared unsupported.
* `tests/conformance.nutshell`: the suite's entry point; `pyproject.toml` points it at `$name`.

## Implement a concept

1. Write `ops.<concept>(inputs, attrs)` and `ops.<concept>_vjp(inputs, cotangents, attrs)`.
   Inputs arrive validated, by the spec's names: C-contiguous arrays of one float dtype (float32
   or float64); attributes with their defaults filled in. Return outputs (or gradients) by name.
2. Take the concept out of `TODO` in `backend.py`.
3. `pytest -k <concept>`: every vector, gradient, finite difference and error vector of it.
   A failure prints the numbers and the command that reruns exactly that check.

Where your library cannot do a concept in a dtype, say so in `$cls.unsupported`; the suite
reports it as unsupported, never as passed. The guide, docs/adding-a-backend.md in nutshell,
has a worked example, how to read a failure, and how to benchmark and report.
"""

SUITE_FILE = """\
# pytest collects nutshell's conformance suite from this file: nutshell's pytest plugin turns any
# *.nutshell file into one check per backend x concept x vector x dtype. The `--backend $name` in
# pyproject.toml's addopts points it at this backend.
#   pytest                          the whole suite on $name
#   pytest -k "conv2d and float64"  one concept in one dtype
# A failure prints the numbers and the command that reruns exactly that check.
"""

INIT = '''\
"""The '$name' backend for nutshell, registered through the ``nutshell.backends`` entry point."""

from $module.backend import $cls

__all__ = ["$cls"]
'''

BACKEND = '''\
"""The '$name' backend: the Backend subclass nutshell loads, and the table behind it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from nutshell import Backend, BackendUnavailable
from nutshell.spec.signatures import Impl

from $module import ops

# concept id -> Impl(forward, vjp), the tables of the area modules merged. ops.py holds every
# concept to begin with; as it grows, split it by area (activations.py, conv.py, ...) as nutshell's
# own backends are, each module with its CONCEPTS, and merge them here.
CONCEPTS: dict[str, Impl] = {**ops.CONCEPTS}

$todo

class $cls(Backend):
    """Every concept of the spec on '$name': forward and vjp functions in ops.py."""

    name = "$name"

    def __init__(self, device: str | None = None, spec=None):
        super().__init__(device, spec)
        if device not in (None, "cpu"):
            raise BackendUnavailable(f"backend '$name': device {device!r} is not supported; use 'cpu'")
        self.device = "cpu"

    def unsupported(self, concept: str, dtype: str) -> str | None:
        """Why ``concept`` is not offered in ``dtype`` ("float32" or "float64"), or None."""
        if concept in TODO:
            return "not implemented yet"
        return None

    # --- numpy <-> the library's arrays (the benchmark calls these outside its timed region) ---

    def to_native(self, a: np.ndarray) -> Any:
        """A NumPy array as the library's array, on this backend's device."""
        return a

    def to_numpy(self, t: Any) -> np.ndarray:
        return np.asarray(t)

    # --- the hooks nutshell calls on validated input -----------------------------------------

    def _forward(self, concept: str, inputs: dict[str, np.ndarray], attrs: dict[str, Any]) -> dict[str, np.ndarray]:
        native = {k: self.to_native(v) for k, v in inputs.items()}
        return {k: self.to_numpy(v) for k, v in CONCEPTS[concept].forward(native, attrs).items()}

    def _vjp(self, concept: str, inputs: dict[str, np.ndarray], cotangents: dict[str, np.ndarray],
             attrs: dict[str, Any]) -> dict[str, np.ndarray]:
        native = {k: self.to_native(v) for k, v in inputs.items()}
        cots = {k: self.to_native(v) for k, v in cotangents.items()}
        return {k: self.to_numpy(v) for k, v in CONCEPTS[concept].vjp(native, cots, attrs).items()}

    def _op(self, concept: str, attrs: dict[str, Any]) -> Callable[..., dict]:
        """Benchmark level: the forward on native arrays, no copies."""
        forward = CONCEPTS[concept].forward
        return lambda **native: forward(native, attrs)
'''

OPS = '''\
"""Every concept of the spec (version $spec_version): a forward and a vjp function each, and
``CONCEPTS``, the table backend.py dispatches through.

The calling convention is nutshell's, the same in every backend (nutshell.spec.signatures.Impl):
``forward(inputs, attrs)`` takes {input name: array} (arrays as ``to_native`` made them; an
optional input that was not given is absent) and the attributes, every default filled in, and
returns {output name: array}; ``vjp(inputs, cotangents, attrs)`` also takes {output name:
cotangent} and returns {input name: gradient} for every differentiable input that was given.
A library that differentiates by itself (autograd, a gradient tape) may set vjp None and derive
it in backend.py's ``_vjp`` from the forward, as nutshell's torch backend does. Each function
raises UnsupportedConcept until it is written; helpers with short mathematical signatures
(``relu(x)``) can sit beside them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from nutshell.errors import UnsupportedConcept
from nutshell.spec.signatures import Impl

Arrays = Mapping[str, Any]      # by the spec's input (or output) names
Attrs = Mapping[str, Any]


def not_yet(concept: str) -> UnsupportedConcept:
    return UnsupportedConcept("not implemented yet in backend '$name'", concept=concept)
'''
