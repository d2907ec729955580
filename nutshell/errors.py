"""The error classes of the contract.

Every backend raises the same class for the same bad input, and every message names the
concept and the argument, so a user can tell at a glance what to fix. All of them are
``ValueError`` subclasses, so code that only knows the standard library can still catch them.
"""

from __future__ import annotations


class NutshellError(ValueError):
    """Base class of every error nutshell raises on purpose."""

    def __init__(self, message: str, *, concept: str | None = None, argument: str | None = None):
        self.concept = concept
        self.argument = argument
        prefix = ""
        if concept is not None and argument is not None:
            prefix = f"{concept}: argument '{argument}': "
        elif concept is not None:
            prefix = f"{concept}: "
        super().__init__(prefix + message)


class ShapeError(NutshellError):
    """An input has the wrong rank, or shapes that do not fit together."""


class AttrError(NutshellError):
    """An attribute is unknown, missing, of the wrong type, or out of range."""


class DTypeError(NutshellError):
    """An input has a dtype the concept does not accept (or dtypes are mixed)."""


class UnsupportedConcept(NutshellError):
    """The backend declares that it does not implement this concept (or this dtype of it)."""


class UnsupportedOnnxOp(NutshellError):
    """An ONNX graph uses an operator or attribute that nutshell cannot import."""


class SpecError(NutshellError):
    """A spec file is malformed, or names something that does not exist."""


class BackendUnavailable(NutshellError):
    """A backend cannot be loaded here; the message says what to install."""


class BackendFailure(NutshellError):
    """A backend's own library failed on input that passed validation: a bug in that backend."""


class RunRefused(NutshellError):
    """Another run holds the reports folder, or ``--resume`` meets a run of another selection or spec."""


class NothingSelected(NutshellError):
    """The selection matched no check."""


ALL = {
    cls.__name__: cls
    for cls in (
        NutshellError,
        ShapeError,
        AttrError,
        DTypeError,
        UnsupportedConcept,
        UnsupportedOnnxOp,
        SpecError,
        BackendUnavailable,
        BackendFailure,
        RunRefused,
        NothingSelected,
    )
}
