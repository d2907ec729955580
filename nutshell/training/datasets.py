"""The models' datasets: scikit-learn's bundled digits and small synthetic sets, all deterministic.

>>> from nutshell.training import datasets
>>> from nutshell.spec import models
>>> d = datasets.load(models.get("digits_cnn"))     # the model's dataset, shaped for its input
>>> d.x_train.shape, d.x_test.shape, d.classes
((1438, 1, 8, 8), (359, 1, 8, 8), 10)
>>> r = datasets.delayed_recall(n=8, length=51, classes=4, vocab=8, seed=0)   # claim 10's task

A spec model names its dataset (``dataset:`` in spec/models.yaml: a name and its parameters);
:func:`load` builds it, taking sizes and classes from the model, and reshapes the examples to
the model's input shape. Inputs are float32
arrays (every value exactly representable, so float64 models see the same numbers), labels int64.
The same parameters always give the same arrays.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from nutshell.errors import SpecError
from nutshell.spec.models import ModelSpec


@dataclass(frozen=True)
class Dataset:
    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    classes: int


def _split(name: str, x: np.ndarray, y: np.ndarray, n_test: int, classes: int, seed: int) -> Dataset:
    """A seeded permutation; the first ``n_test`` examples are the test split."""
    order = np.random.default_rng(seed).permutation(len(x))
    test, train = order[:n_test], order[n_test:]
    x = x.astype(np.float32)
    return Dataset(name, x[train], y[train].astype(np.int64), x[test], y[test].astype(np.int64), classes)


def digits(test_fraction: float = 0.2, seed: int = 0) -> Dataset:
    """scikit-learn's bundled 8×8 digits (1,797 images, no download), pixels k/16 in [0, 1]."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise SpecError("the digits dataset needs scikit-learn: pip install scikit-learn") from None
    d = load_digits()
    x = d.images.reshape(-1, 1, 8, 8) / 16.0  # (N, 1, 8, 8)
    return _split("digits", x, d.target, round(len(x) * test_fraction), 10, seed)


def blobs(train: int, test: int, seed: int, features: int = 4, separation: float = 2.0) -> Dataset:
    """Two Gaussian clouds (unit variance) whose centres lie ``separation`` apart: class 0 or 1."""
    rng = np.random.default_rng(seed)
    n = train + test
    y = rng.integers(0, 2, n)
    direction = rng.standard_normal(features)
    direction /= np.linalg.norm(direction)
    x = rng.standard_normal((n, features)) + np.outer(y - 0.5, direction) * separation
    return _split("blobs", x, y, test, 2, seed)


def spirals(train: int, test: int, seed: int, classes: int = 3, turns: float = 1.0, noise: float = 0.05
            ) -> Dataset:
    """``classes`` interleaved spiral arms in the plane, radius r ∈ [0.1, 1] at angle
    2π·(turns·r + k/classes) for arm k, plus Gaussian noise."""
    rng = np.random.default_rng(seed)
    n = train + test
    y = rng.integers(0, classes, n)
    r = rng.uniform(0.1, 1.0, n)
    angle = 2 * np.pi * (turns * r + y / classes)
    x = np.stack([r * np.cos(angle), r * np.sin(angle)], axis=1) + noise * rng.standard_normal((n, 2))
    return _split("spirals", x, y, test, classes, seed)


def _sign_mask(shape: int, dx: np.ndarray, dy: np.ndarray, r: float) -> np.ndarray:
    """Pixels inside shape 0 circle, 1 triangle (apex up), 2 square, 3 diamond of radius r."""
    if shape == 0:
        return dx * dx + dy * dy <= r * r
    if shape == 1:
        return (dy <= 0.6 * r) & (np.abs(dx) <= 0.65 * (dy + r))
    if shape == 2:
        return np.maximum(np.abs(dx), np.abs(dy)) <= 0.8 * r
    return np.abs(dx) + np.abs(dy) <= r


_SIGN_COLOURS = np.array([[0.9, 0.1, 0.1], [0.1, 0.3, 0.9]])


def signs(train: int, test: int, seed: int, size: int = 32, noise: float = 0.1) -> Dataset:
    """Synthetic traffic signs, 3×size×size: class = shape (circle, triangle, square, diamond) × rim
    colour (red, blue), 8 classes. Each sign has a white face inside a coloured rim, a random
    centre (±3 px), radius and brightness, on a random dim background with Gaussian noise."""
    rng = np.random.default_rng(seed)
    n = train + test
    y = rng.integers(0, 8, n)
    grid = np.arange(size) - (size - 1) / 2
    x = np.empty((n, 3, size, size))
    for i in range(n):
        dx = grid[None, :] - rng.uniform(-3, 3)
        dy = grid[:, None] - rng.uniform(-3, 3)
        r = rng.uniform(9, 13)
        rim, face = _sign_mask(y[i] // 2, dx, dy, r), _sign_mask(y[i] // 2, dx, dy, 0.6 * r)
        img = np.broadcast_to(rng.uniform(0.1, 0.5, (3, 1, 1)), (3, size, size)).copy()
        img[:, rim] = _SIGN_COLOURS[y[i] % 2][:, None]
        img[:, face] = 1.0
        x[i] = np.clip(img * rng.uniform(0.6, 1.0) + noise * rng.standard_normal(img.shape), 0.0, 1.0)
    return _split("signs", x, y, test, 8, seed)


def gratings(train: int, test: int, seed: int, size: int = 16, classes: int = 4, noise: float = 0.3) -> Dataset:
    """Sinusoidal stripes, 3×size×size, class k at orientation k·180°/classes; random period
    (3–6 px), phase and colour, plus Gaussian noise."""
    rng = np.random.default_rng(seed)
    n = train + test
    y = rng.integers(0, classes, n)
    theta = np.pi * y / classes
    period = rng.uniform(3, 6, n)
    phase = rng.uniform(0, 2 * np.pi, n)
    yy, xx = np.mgrid[0:size, 0:size]
    along = np.cos(theta)[:, None, None] * xx + np.sin(theta)[:, None, None] * yy  # (N, size, size)
    wave = np.sin(2 * np.pi * along / period[:, None, None] + phase[:, None, None])
    colour = rng.uniform(0.2, 1.0, (n, 3, 1, 1))
    x = colour * wave[:, None] + noise * rng.standard_normal((n, 3, size, size))  # (N, 3, size, size)
    return _split("gratings", x, y, test, classes, seed)


def delayed_recall(n: int, length: int, classes: int, vocab: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(x, labels): one-hot token sequences x (n, length, vocab) whose first token is the label
    (0 … classes − 1); the other length − 1 tokens are distractors drawn from classes … vocab − 1."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, n)
    tokens = rng.integers(classes, vocab, (n, length))
    tokens[:, 0] = labels
    x = np.eye(vocab, dtype=np.float32)[tokens]  # (n, length, vocab)
    return x, labels.astype(np.int64)


def _recall(train: int, test: int, seed: int, length: int, classes: int, vocab: int) -> Dataset:
    x, y = delayed_recall(train + test, length, classes, vocab, seed)
    return Dataset("delayed_recall", x[:train], y[:train], x[train:], y[train:], classes)


def _from_model(name: str, model: ModelSpec) -> dict:
    """What a generator takes from the model: its input size and its number of classes."""
    shape, k = model.input_shape, model.classes
    if name == "blobs":
        return {"features": shape[0]}
    if name == "spirals":
        return {"classes": k}
    if name == "signs":
        return {"size": shape[-1]}
    if name == "gratings":
        return {"size": shape[-1], "classes": k}
    if name == "delayed_recall":
        return {"length": shape[0], "vocab": shape[1], "classes": k}
    return {}


def load(model: ModelSpec) -> Dataset:
    """The dataset ``model``'s spec names (its ``dataset:`` entry), examples shaped (N, *input)."""
    cfg = dict(model.dataset)
    name = cfg.pop("name")
    if name not in GENERATORS:
        raise SpecError(f"model {model.id}: unknown dataset '{name}'; known: {', '.join(sorted(GENERATORS))}")
    d = GENERATORS[name](**cfg, **_from_model(name, model))
    if d.classes != model.classes:
        raise SpecError(f"model {model.id}: dataset '{name}' has {d.classes} classes, the model {model.classes}")
    shape = (-1, *model.input_shape)
    return Dataset(d.name, d.x_train.reshape(shape), d.y_train, d.x_test.reshape(shape), d.y_test, d.classes)


GENERATORS = {"digits": digits, "blobs": blobs, "spirals": spirals, "signs": signs, "gratings": gratings,
              "delayed_recall": _recall}
