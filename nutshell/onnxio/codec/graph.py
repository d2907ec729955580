"""The imported graph: spec concepts and structural steps, with the values they connect.

A :class:`Graph` is what :func:`nutshell.onnxio.codec.reader.parse` makes of an ONNX model: constants
(initializers and folded structural steps), the graph inputs it still needs, and the steps in
order. Value names are the ONNX ones; a value a lowering adds between steps of one node is named
after the node's first output with ``~k`` appended.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx

from nutshell.errors import AttrError, DTypeError, NutshellError, ShapeError
from nutshell.onnxio.codec.structural import STRUCTURAL
from nutshell.spec import shapes


@dataclass(frozen=True)
class Value:
    """A graph input: its element type and shape (None for a dynamic dimension)."""

    name: str
    dtype: np.dtype
    shape: tuple[int | None, ...] | None


@dataclass(frozen=True)
class Step:
    """One spec concept (run by the backend) or one structural step (NumPy plumbing).

    ``rule`` names attrs that depend on the input shapes: "SAME_UPPER" / "SAME_LOWER" (pads of
    ONNX auto_pad, from :func:`nutshell.spec.shapes.same_pads`) or "groups" (x channels ÷ w channels).
    """

    op: str
    inputs: tuple[tuple[str, str], ...]       # (argument, value name)
    outputs: tuple[tuple[str, str], ...]      # (result, value name)
    attrs: dict
    node: str                                 # the ONNX node it implements, e.g. "Conv 'conv1'"
    rule: str = ""

    @property
    def structural(self) -> bool:
        return self.op in STRUCTURAL


@contextmanager
def at_node(step: Step) -> Iterator[None]:
    """A nutshell error raised inside names the ONNX node that ``step`` implements."""
    try:
        yield
    except NutshellError as exc:
        raise type(exc)(f"ONNX node {step.node}: {exc}") from exc


def resolve(step: Step, ins: Mapping[str, Any]) -> dict:
    """A concept step's attrs, with those its ``rule`` derives from the input shapes (``ins`` may
    hold arrays or anything else with a ``shape``)."""
    if not step.rule:
        return step.attrs
    x = ins["x"].shape
    if step.rule == "groups":
        if ins["w"].shape[1] == 0:
            raise ShapeError("w has no input channels, so the groups cannot be derived", argument="w")
        return {**step.attrs, "groups": x[1] // ins["w"].shape[1]}
    kernel = step.attrs["kernel"] if "kernel" in step.attrs else ins["w"].shape[2:]
    stride, dilation = step.attrs["stride"], step.attrs.get("dilation", [1, 1])
    if min(stride) < 1:
        raise AttrError(f"strides {stride} must be ≥ 1", argument="stride")
    upper = step.rule == "SAME_UPPER"
    (t, bt), (lf, r) = (shapes.same_pads(x[2 + a], kernel[a], stride[a], dilation[a], upper) for a in (0, 1))
    return {**step.attrs, "pads": [t, lf, bt, r]}


@dataclass
class Graph:
    """An ONNX model lowered to steps; :meth:`Backend.import_onnx` binds it to a backend."""

    name: str
    opset: int
    inputs: tuple[Value, ...]
    outputs: tuple[str, ...]
    constants: dict[str, np.ndarray]
    steps: tuple[Step, ...]
    values: dict[str, str]          # every value an ONNX node defines -> that node, in graph order
    types: dict[str, int]           # ONNX element type of every value whose type is known
    model: onnx.ModelProto          # the validated model, every tensor's data inline

    def check_feeds(self, feeds: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """The feeds as arrays: every graph input, of its declared type and static dims."""
        if not isinstance(feeds, Mapping):
            raise ShapeError("feeds must be a dict {input name: array}", argument="feeds")
        want = {v.name: v for v in self.inputs}
        extra = sorted(set(feeds) - set(want))
        if extra:
            raise ShapeError(f"the graph has no input {extra[0]!r}; its inputs are {sorted(want)}", argument=extra[0])
        out = {}
        for name, v in want.items():
            if name not in feeds:
                raise ShapeError(f"input {name!r} is missing", argument=name)
            a = np.asarray(feeds[name])
            if a.dtype != v.dtype:
                raise DTypeError(f"input {name!r} must be {v.dtype}, got {a.dtype}", argument=name)
            if v.shape is not None and (a.ndim != len(v.shape) or
                                        any(d is not None and d != s for d, s in zip(v.shape, a.shape, strict=True))):
                raise ShapeError(f"input {name!r} must have shape {_show(v.shape)}, got {a.shape}", argument=name)
            out[name] = a
        return out


def _show(shape: tuple[int | None, ...]) -> str:
    return "(" + ", ".join("?" if d is None else str(d) for d in shape) + ")"
