"""Train a spec model on its dataset with any backend, print progress, save the parameters.

    nutshell train digits_cnn -b torch -o digits.npz --json

Each epoch prints the mean training loss and the test accuracy, under a bar over the training
steps when the output is a terminal; the parameters go to the .npz that ``-o`` names, by default
``MODEL-BACKEND.npz`` in the current folder (replaced if it exists), one array per parameter name,
loadable with ``b.model(name, params=dict(np.load(f)))``.
With ``--json`` the progress goes to stderr and stdout is one JSON line {"model", "backend",
"test_accuracy", "final_loss", "steps"}. The exit status is 1 when the model's spec sets a
``min_accuracy`` it did not reach, 2 for a model or backend that does not exist.

As a library (the claims use it):

>>> import nutshell
>>> from nutshell.training import fit as train
>>> m, hist = train.train(nutshell.load("torch"), "digits_cnn")      # the spec's recipe
>>> hist.test_accuracy, hist.steps, hist.final_loss
>>> hist = train.fit(m, data, epochs=3, batch_size=32, lr=0.05, momentum=0.9)   # any model, any data
>>> train.accuracy(m, x, labels)

:func:`fit` shuffles the training split with a seeded NumPy generator every epoch (the same
batches on every backend) and takes minibatch steps: plain SGD through ``Model.step``
(p ← p − lr·g), SGD with momentum μ (v ← μ·v + g, p ← p − lr·v) or Adam, the update computed
with NumPy in the model's dtype from the backend's gradients.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import numpy as np
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from nutshell import backends
from nutshell import spec as spec_mod
from nutshell.backends.base import Backend
from nutshell.errors import AttrError
from nutshell.spec import models
from nutshell.spec.graph import Model
from nutshell.spec.signatures import DTYPES, LOW_PRECISION
from nutshell.training import datasets
from nutshell.training.mixed import MasterModel


@dataclass
class History:
    """What a training run measured; ``epochs`` holds one dict per epoch."""

    steps: int = 0
    final_loss: float = float("nan")      # the mean minibatch loss of the last epoch
    test_accuracy: float = float("nan")
    seconds: float = 0.0
    epochs: list[dict] = field(default_factory=list)


def accuracy(model: Model, x: np.ndarray, labels: np.ndarray, batch_size: int = 512) -> float:
    """The share of examples whose predicted class is the label."""
    hits = sum(int((model.predict(x[i:i + batch_size]) == labels[i:i + batch_size]).sum())
               for i in range(0, len(x), batch_size))
    return hits / max(len(x), 1)


def _sgd_momentum(model: Model, momentum: float) -> Callable[[np.ndarray, np.ndarray, float], float]:
    """A step function: heavy-ball momentum on the model's gradients (velocities start at 0)."""
    params = model.params()
    velocity = {k: np.zeros_like(v) for k, v in params.items()}
    mu = model.dtype.type(momentum)

    def step(x: np.ndarray, labels: np.ndarray, lr: float) -> float:
        loss, grads = model.loss_and_grads(x, labels)
        rate = model.dtype.type(lr)
        for k, g in grads.items():
            velocity[k] = mu * velocity[k] + g
            params[k] = params[k] - rate * velocity[k]
        model.set_params(params)
        return loss
    return step


def _adam(model: Model, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8
          ) -> Callable[[np.ndarray, np.ndarray, float], float]:
    """A step function: Adam, m ← β1·m + (1 − β1)·g, v ← β2·v + (1 − β2)·g²,
    p ← p − lr·m̂ / (√v̂ + ε) with the bias corrections m̂ = m / (1 − β1^t), v̂ = v / (1 − β2^t)."""
    params = model.params()
    m = {k: np.zeros_like(v) for k, v in params.items()}
    v = {k: np.zeros_like(p) for k, p in params.items()}
    t = [0]

    def step(x: np.ndarray, labels: np.ndarray, lr: float) -> float:
        loss, grads = model.loss_and_grads(x, labels)
        t[0] += 1
        c1, c2 = 1 - beta1 ** t[0], 1 - beta2 ** t[0]
        for k, g in grads.items():
            m[k] = beta1 * m[k] + (1 - beta1) * g
            v[k] = beta2 * v[k] + (1 - beta2) * g * g
            params[k] = (params[k] - lr * (m[k] / c1) / (np.sqrt(v[k] / c2) + eps)).astype(model.dtype)
        model.set_params(params)
        return loss
    return step


def _stepper(model: Model, optimizer: str, momentum: float) -> Callable[[np.ndarray, np.ndarray, float], float]:
    if optimizer == "adam":
        return _adam(model)
    return model.step if momentum == 0 else _sgd_momentum(model, momentum)


def fit(model: Model, data: datasets.Dataset, epochs: int, batch_size: int, lr: float, momentum: float = 0.0,
        schedule: str = "constant", optimizer: str = "sgd", seed: int = 0,
        log: Callable[[str], None] | None = None, progress: Callable[[int, int], None] | None = None) -> History:
    """Minibatch training on ``data``'s training split; the test accuracy after every epoch.

    ``optimizer`` "sgd" (with ``momentum``, or plain ``Model.step``) or "adam". ``schedule``
    "linear" lowers the learning rate linearly from ``lr`` at the first step to lr/steps at the
    last, which settles the final parameters; "constant" keeps it. ``epochs`` and ``batch_size``
    below 1 are an AttrError. ``log`` gets a line after each epoch, ``progress`` (steps done,
    steps in all) after each step.
    """
    for name, value in (("epochs", epochs), ("batch_size", batch_size)):
        if value < 1:
            raise AttrError(f"argument '{name}': must be ≥ 1, got {value}", argument=name)
    rng = np.random.default_rng(seed)
    step = _stepper(model, optimizer, momentum)
    hist, started = History(), time.perf_counter()
    n = len(data.x_train)
    per_epoch = -(-n // batch_size)
    total = epochs * per_epoch

    def rate(t: int) -> float:
        return lr * (1 - t / total) if schedule == "linear" else lr

    for epoch in range(1, epochs + 1):
        order = rng.permutation(n)
        losses: list[float] = []
        for idx in (order[i:i + batch_size] for i in range(0, n, batch_size)):
            losses.append(step(data.x_train[idx], data.y_train[idx], rate(hist.steps + len(losses))))
            if progress:
                progress(hist.steps + len(losses), total)
        hist.steps += len(losses)
        hist.final_loss = float(np.mean(losses))
        hist.test_accuracy = accuracy(model, data.x_test, data.y_test)
        hist.seconds = time.perf_counter() - started
        hist.epochs.append({"epoch": epoch, "loss": hist.final_loss, "test_accuracy": hist.test_accuracy,
                            "seconds": hist.seconds})
        if log:
            log(f"epoch {epoch:>3}/{epochs}  loss {hist.final_loss:.4f}  test accuracy {hist.test_accuracy:6.2%}"
                f"  ({hist.seconds:.1f} s)")
    return hist


def train(backend: Backend, name: str, epochs: int | None = None, seed: int = 0, dtype: str = "float32",
          log: Callable[[str], None] | None = None, progress: Callable[[int, int], None] | None = None
          ) -> tuple[Model | MasterModel, History]:
    """The spec's recipe for model ``name``: its init with ``seed``, its dataset, its training. In
    float16 or bfloat16 the parameters stay float32 and each pass runs in the low format (mixed
    precision, :mod:`nutshell.training.mixed`)."""
    spec = models.get(name)
    cfg = spec.training
    model = (MasterModel(backend, name, dtype, seed) if dtype in LOW_PRECISION
             else backend.model(name, seed=seed, dtype=dtype))
    data = datasets.load(spec)
    hist = fit(model, data, cfg.epochs if epochs is None else epochs, cfg.batch_size, cfg.lr, cfg.momentum,
               cfg.schedule, cfg.optimizer, seed=seed, log=log, progress=progress)
    return model, hist


class Bar:
    """What ``nutshell train`` shows while it trains: on a terminal, a bar over the training steps
    (rich) under the lines printed so far; elsewhere the lines alone, one per epoch, so a log
    stays plain. ``say`` prints a line, ``step`` moves the bar (``fit``'s ``progress``)."""

    def __init__(self, stream: TextIO):
        self.stream = stream
        self._bar = Progress(TextColumn("training"), BarColumn(), MofNCompleteColumn(), TextColumn("steps"),
                             TimeElapsedColumn(), TextColumn("left"), TimeRemainingColumn(),
                             console=Console(file=stream), transient=True) if stream.isatty() else None
        self._task: TaskID | None = None

    def __enter__(self) -> Bar:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()

    def say(self, line: str) -> None:
        if self._bar is not None:
            self._bar.console.print(line, markup=False, highlight=False)
        else:
            print(line, file=self.stream, flush=True)

    def step(self, done: int, total: int) -> None:
        if self._bar is None:
            return
        if self._task is None:
            self._task = self._bar.add_task("training", total=total)
            self._bar.start()
        self._bar.update(self._task, completed=done)


# --- the command -------------------------------------------------------------------------------------

def _at_least_one(text: str) -> int:
    """An argparse type: an integer ≥ 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer ≥ 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be ≥ 1, got {value}")
    return value


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help=f"a model of spec/models.yaml: {', '.join(models.names())}")
    p.add_argument("-b", "--backend", default="torch",
                   help=f"the backend that trains it (default torch): {', '.join(backends.names())}")
    p.add_argument("--device", choices=["cpu", "cuda"], help="where it trains (default: the best this machine has)")
    p.add_argument("-o", "--output", type=Path,
                   help="the .npz the parameters go to (default: MODEL-BACKEND.npz in the current folder)")
    p.add_argument("--json", action="store_true",
                   help="stdout is one JSON line of the results; the progress goes to stderr")
    p.add_argument("--epochs", type=_at_least_one, help="at least 1 (default: the spec's)")
    p.add_argument("--seed", type=int, default=0, help="seed of the initialisation and the shuffling (default 0)")
    p.add_argument("--dtype", choices=list(DTYPES), default="float32",
                   help="default float32; float16 and bfloat16 train with float32 master parameters, the forward "
                        "and backward pass in the low format (mixed precision)")


def run(args: argparse.Namespace) -> int:
    spec_mod.check_names([args.model], models.names(), what="model")
    backends.check_names([args.backend])
    b = backends.load(args.backend, args.device)
    spec = models.get(args.model)

    epochs = spec.training.epochs if args.epochs is None else args.epochs
    out = args.output or Path(f"{spec.id}-{b.name}.npz")
    floor = spec.training.min_accuracy
    with Bar(sys.stderr if args.json else sys.stdout) as bar:
        bar.say(f"training {spec.id} on {b.name} ({b.device}, {args.dtype}): {spec.dataset['name']} data, "
                f"{epochs} epochs of batch {spec.training.batch_size}")
        model, hist = train(b, args.model, epochs, args.seed, args.dtype, log=bar.say, progress=bar.step)
        np.savez(out, **model.params())
        verdict = "" if floor is None else f" (the spec asks ≥ {floor:.0%})"
        bar.say(f"test accuracy {hist.test_accuracy:.2%}{verdict} after {hist.steps} steps in {hist.seconds:.1f} s; "
                f"parameters saved to {out}")
    if args.json:
        print(json.dumps({"model": spec.id, "backend": b.name, "test_accuracy": hist.test_accuracy,
                          "final_loss": hist.final_loss, "steps": hist.steps}))
    return 1 if floor is not None and hist.test_accuracy < floor else 0
