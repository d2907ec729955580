"""Mixed-precision training (issue 14, item 5): float32 master parameters, passes in bfloat16."""

from __future__ import annotations

import json
import subprocess
import sys

import ml_dtypes
import numpy as np
import pytest

from nutshell import backends
from nutshell.spec import models
from nutshell.training import datasets
from nutshell.training.mixed import MasterModel


@pytest.fixture(scope="module", params=["torch", "cupy"])
def b(request) -> backends.Backend:
    try:
        return backends.load(request.param, "cpu")
    except backends.BackendUnavailable as exc:
        pytest.skip(str(exc))


def test_a_step_updates_float32_masters_from_the_low_pass(b):
    """p ← p − lr·g with g the bfloat16 pass's gradient widened exactly; the pass then sees the
    masters rounded once into bfloat16."""
    m = MasterModel(b, "softmax_regression", "bfloat16", seed=3)
    data = datasets.load(models.get("softmax_regression"))
    x, y = data.x_train[:16], data.y_train[:16]
    before = m.params()
    _, g = m.compute.loss_and_grads(x, y)
    m.step(x, y, 0.5)
    after = m.params()
    for k, p in before.items():
        assert after[k].dtype == np.float32
        np.testing.assert_array_equal(after[k], p - np.float32(0.5) * g[k].astype(np.float32))
        np.testing.assert_array_equal(m.compute.params()[k], after[k].astype(ml_dtypes.bfloat16))


def test_updates_under_the_low_formats_spacing_are_kept(b):
    """A bfloat16 parameter of 1 ignores an update of 2⁻¹⁰ (its spacing there is 2⁻⁷); the float32
    master keeps every one of them, and 64 of them move the rounded parameter."""
    m = MasterModel(b, "logistic_regression", "bfloat16")
    ones = {k: np.ones_like(v) for k, v in m.params().items()}
    m.set_params(ones)
    for _ in range(64):
        m.set_params({k: v - np.float32(2.0**-10) for k, v in m.params().items()})
    assert all(np.all(v == np.float32(1 - 64 * 2.0**-10)) for v in m.params().values())
    assert all(np.all(v.astype(np.float32) == np.float32(0.9375)) for v in m.compute.params().values())
    low = ml_dtypes.bfloat16
    assert np.all((np.ones(3, low) - low(2.0**-10)) == np.ones(3, low))       # the loss it avoids


def test_train_command_in_bfloat16_reports_json(tmp_path):
    pytest.importorskip("torch")
    r = subprocess.run([sys.executable, "-m", "nutshell.cli", "train", "softmax_regression", "-b", "torch",
                        "--dtype", "bfloat16", "--epochs", "2", "--json", "-o", str(tmp_path / "p.npz")],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["model"] == "softmax_regression" and doc["test_accuracy"] > 0.85 and doc["steps"] > 0
    saved = np.load(tmp_path / "p.npz")
    assert all(saved[k].dtype == np.float32 for k in saved.files)
