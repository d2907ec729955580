"""The conformance checks must be able to fail: a deliberately wrong backend is caught."""

from __future__ import annotations

import numpy as np
import pytest

from nutshell import spec
from nutshell.backends.base import Backend
from nutshell.conformance import checks

S = spec.load()
TOL = S.tolerance


class Sloppy(Backend):
    """relu and sigmoid written slightly wrong, in the ways real backends go wrong."""

    name = "sloppy"

    def __init__(self, sigmoid_err: float = 0.0, relu_grad_at_zero: float = 0.0, skip_float64: bool = False):
        super().__init__()
        self.sigmoid_err, self.relu_grad_at_zero, self.skip_float64 = sigmoid_err, relu_grad_at_zero, skip_float64

    def unsupported(self, concept, dtype):
        if self.skip_float64 and dtype == "float64":
            return "no float64 here"
        return None if concept in ("relu", "sigmoid") else "only relu and sigmoid"

    def _forward(self, concept, inputs, attrs):
        x = inputs["x"]
        if concept == "relu":
            return {"y": np.maximum(x, 0)}
        with np.errstate(over="ignore"):
            y = 1 / (1 + np.exp(-x))
        return {"y": (y * (1 + self.sigmoid_err)).astype(x.dtype)}

    def _vjp(self, concept, inputs, cotangents, attrs):
        x, gy = inputs["x"], cotangents["y"]
        if concept == "relu":
            return {"x": gy * np.where(x > 0, 1.0, np.where(x == 0, self.relu_grad_at_zero, 0.0)).astype(x.dtype)}
        y = self._forward(concept, inputs, attrs)["y"]
        return {"x": gy * y * (1 - y)}


def vec(cid: str, name: str) -> spec.Vector:
    return next(v for v in S.concept(cid).vectors if v.name == name)


def test_correct_backend_passes():
    rec = checks.forward(Sloppy(), S.concept("sigmoid"), vec("sigmoid", "grid"), "float32", TOL)
    assert 0 <= rec.usage <= 1


def test_relative_error_of_1e5_fails_in_float32_with_numbers():
    with pytest.raises(checks.CheckFailed) as e:
        checks.forward(Sloppy(sigmoid_err=1e-5), S.concept("sigmoid"), vec("sigmoid", "grid"), "float32", TOL)
    msg = str(e.value)
    assert "outside the bound" in msg and "max abs err" in msg and "bound usage" in msg and "worst at" in msg
    assert e.value.record["usage"] > 1


def test_float64_tolerance_is_far_tighter():
    sloppy = Sloppy(sigmoid_err=1e-12)
    checks.forward(sloppy, S.concept("sigmoid"), vec("sigmoid", "grid"), "float32", TOL)
    with pytest.raises(checks.CheckFailed):
        checks.forward(sloppy, S.concept("sigmoid"), vec("sigmoid", "grid"), "float64", TOL)


def test_relu_gradient_at_zero_is_pinned():
    with pytest.raises(checks.CheckFailed, match="gradient 'x'"):
        checks.vjp(Sloppy(relu_grad_at_zero=1.0), S.concept("relu"), vec("relu", "kink"), "float32", TOL)


def test_finite_difference_catches_a_wrong_vjp():
    class WrongGrad(Sloppy):
        def _vjp(self, concept, inputs, cotangents, attrs):
            return {"x": 1.01 * super()._vjp(concept, inputs, cotangents, attrs)["x"]}

    with pytest.raises(checks.CheckFailed, match="finite difference"):
        checks.finite_difference(WrongGrad(), S.concept("sigmoid"), vec("sigmoid", "grid"), TOL)
    assert checks.finite_difference(Sloppy(), S.concept("sigmoid"), vec("sigmoid", "grid"), TOL).usage <= 1


def test_unsupported_is_never_a_pass():
    with pytest.raises(checks.Unsupported, match="no float64"):
        checks.forward(Sloppy(skip_float64=True), S.concept("relu"), vec("relu", "grid"), "float64", TOL)


def test_wrong_error_class_fails():
    class Raw(Sloppy):
        def run(self, concept, inputs, attrs=None):
            raise TypeError("raw library error")

    ev = next(e for e in S.concept("relu").errors if e.name == "integer_dtype")
    with pytest.raises(checks.CheckFailed, match="raw TypeError escaped"):
        checks.error(Raw(), S.concept("relu"), ev)
    assert checks.error(Sloppy(), S.concept("relu"), ev).details["raised"] == "DTypeError"
