"""Shared input validation: every backend raises the same class for the same bad input."""

from __future__ import annotations

import numpy as np
import pytest

from nutshell import spec
from nutshell.errors import AttrError, DTypeError, ShapeError
from nutshell.spec import validate

S = spec.load()


def check(cid, inputs, attrs=None):
    return validate.check(S.concept(cid), inputs, attrs)


def test_defaults_are_filled_and_pool_stride_follows_kernel():
    _, attrs, dtype = check("max_pool2d", {"x": np.zeros((1, 1, 4, 4), np.float32)}, {"kernel": [3, 2]})
    assert attrs["stride"] == [3, 2] and attrs["pads"] == [0, 0, 0, 0] and attrs["ceil_mode"] is False
    assert dtype == "float32"


def test_views_are_made_contiguous():
    base = np.arange(50, dtype=np.float64).reshape(5, 10)
    arrays, _, _ = check("relu", {"x": base[::-1, ::2]})
    assert arrays["x"].flags.c_contiguous and np.array_equal(arrays["x"], base[::-1, ::2])


@pytest.mark.parametrize("bad, cls, arg", [
    ({"stride": [0, 1]}, AttrError, "stride"),
    ({"stride": [True, 1]}, AttrError, "stride"),
    ({"groups": 2.0}, AttrError, "groups"),
    ({"pads": [1, 1, 1]}, AttrError, "pads"),
    ({"padding": 1}, AttrError, "padding"),
])
def test_conv_attr_errors(bad, cls, arg):
    x, w = np.zeros((1, 2, 5, 5), np.float32), np.zeros((2, 2, 3, 3), np.float32)
    with pytest.raises(cls) as e:
        check("conv2d", {"x": x, "w": w}, bad)
    assert e.value.concept == "conv2d" and e.value.argument == arg and "conv2d" in str(e.value)


def test_dtype_errors():
    with pytest.raises(DTypeError, match="float32, float64, float16, bfloat16"):
        check("tanh", {"x": np.zeros(3, np.int32)})
    with pytest.raises(DTypeError, match="mixed"):
        check("dense", {"x": np.zeros((1, 2), np.float32), "w": np.zeros((2, 2), np.float64)})
    with pytest.raises(DTypeError):
        check("relu", {"x": np.array(["a"], dtype=object)})


def test_labels_range_and_type():
    logits = np.zeros((2, 3), np.float32)
    with pytest.raises(ShapeError, match=r"\[0, 3\)"):
        check("cross_entropy", {"logits": logits, "labels": np.array([0, 3])})
    arrays, _, _ = check("cross_entropy", {"logits": logits, "labels": np.array([0, 2], np.int32)})
    assert arrays["labels"].dtype == np.int64


def test_empty_batch_is_valid():
    arrays, _, _ = check("conv2d", {"x": np.zeros((0, 2, 5, 5), np.float32), "w": np.zeros((1, 2, 3, 3), np.float32)})
    assert arrays["x"].shape[0] == 0


def test_cotangent_shape_checked():
    c = S.concept("relu")
    with pytest.raises(ShapeError, match="cotangent"):
        validate.check_cotangents(c, {"y": np.zeros(3, np.float32)}, {"y": (4,)}, "float32")
    filled = validate.check_cotangents(c, {}, {"y": (4,)}, "float32")
    assert filled["y"].shape == (4,) and not filled["y"].any()
