"""The hunt's worker process: one backend loaded in a process of its own, called over a pipe.

A crash of the backend's library (a segmentation fault, glibc's abort on a corrupted heap, an
out-of-memory kill) ends the worker, never the hunt; a call that runs past the timeout has its
worker killed. Either way :meth:`Worker.call` answers a :class:`Died` naming what happened, the
calls the worker had run (memory corruption surfaces calls after the one that caused it), and the
tail of the worker's stderr, where glibc says what it found.

Frames on the pipe are an 8-byte length and a pickle, each carrying the request's id; the worker
keeps its own stdout for frames (whatever a library prints goes to stderr). Like ``nutshell run``'s
workers, it dies with its parent (``plugin.die_with``: PR_SET_PDEATHSIG and a watching thread).
"""

from __future__ import annotations

import os
import pickle
import select
import signal
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from nutshell.conformance.runner import _describe as describe_exit
from nutshell.errors import BackendUnavailable

HEADER = struct.Struct("<Q")
START_S = 300.0
"""How long a worker may take to load its backend (TensorFlow takes 5–20 s on a busy 2-core machine)."""


@dataclass
class Request:
    """One call: ``mode`` "forward" (``backend.run``) or "vjp" (``backend.vjp`` with ``cots``)."""

    id: int
    concept: str
    mode: str
    inputs: dict[str, np.ndarray]
    attrs: dict[str, Any]
    cots: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass
class Reply:
    """The backend's arrays, or ``raised``: the exception it let out, as "Type: message"."""

    id: int
    out: dict[str, np.ndarray] | None = None
    raised: str | None = None


@dataclass
class Died:
    """The worker ended during a call: ``how`` is "crash" or "hang"; ``signal`` what ended it."""

    how: str
    signal: str
    stderr: str
    history: list = field(default_factory=list)


# --- the worker side ------------------------------------------------------------------------------

def _send(fd: int, obj: object) -> None:
    blob = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    os.write(fd, HEADER.pack(len(blob)) + blob)


def _read_exact(fd: int, n: int, deadline: float | None = None) -> bytes:
    """``n`` bytes from ``fd``; EOFError when it closes, TimeoutError past ``deadline`` (time.time())."""
    chunks, left = [], n
    while left:
        if deadline is not None:
            ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.time()))
            if not ready:
                raise TimeoutError
        chunk = os.read(fd, left)
        if not chunk:
            raise EOFError
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _recv(fd: int, deadline: float | None = None) -> Any:
    (n,) = HEADER.unpack(_read_exact(fd, HEADER.size, deadline))
    return pickle.loads(_read_exact(fd, n, deadline))   # frames of our own worker, over our own pipe


def versions() -> dict[str, str]:
    """The versions of the numerical libraries loaded in this process."""
    names = ("numpy", "torch", "onnx", "onnxruntime", "cupy", "tensorflow")
    return {n: str(sys.modules[n].__version__) for n in names if n in sys.modules}


def _answer(b: Any, req: Request) -> Reply:
    try:
        if req.mode == "vjp":
            return Reply(req.id, out=b.vjp(req.concept, req.inputs, req.cots, req.attrs))
        return Reply(req.id, out=b.run(req.concept, req.inputs, req.attrs))
    except Exception as exc:  # the backend let something out: a finding, reported, not a crash
        return Reply(req.id, raised=f"{type(exc).__name__}: {exc}")


def main(argv: list[str]) -> None:
    """``python -m nutshell.conformance.hunt_worker BACKEND DEVICE PARENT_PID``: load, say hello, serve."""
    from nutshell import backends
    from nutshell.conformance.plugin import die_with

    name, device, parent = argv[0], argv[1] or None, int(argv[2])
    die_with(parent)
    out = os.dup(1)
    os.dup2(2, 1)                                   # library prints go to stderr, frames to `out`
    b = backends.load(name, device=device)
    table = {c: {dt: b.unsupported(c, dt) for dt in ("float32", "float64")} for c in sorted(b.concepts)}
    _send(out, {"device": b.device, "unsupported": table, "versions": versions()})
    while True:
        try:
            req = _recv(0)
        except EOFError:
            return
        _send(out, _answer(b, req))


# --- the hunt's side ------------------------------------------------------------------------------

class WorkerFailed(BackendUnavailable):
    """The worker could not load its backend (a typed error: one line, exit 2, from the command)."""


class Worker:
    """A backend in a fresh process; ``call`` runs one request and keeps the history of calls."""

    def __init__(self, backend: str, device: str | None = None, timeout: float = 60.0):
        self.backend, self.timeout = backend, timeout
        self.stderr = tempfile.TemporaryFile()
        argv = [sys.executable, "-m", "nutshell.conformance.hunt_worker", backend, device or "", str(os.getpid())]
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.stderr,
                                     start_new_session=True)
        self.history: list = []
        try:
            self.hello = _recv(self.proc.stdout.fileno(), time.time() + START_S)
        except (EOFError, TimeoutError):
            self.close()
            last = (self.stderr_tail().splitlines() or ["no output"])[-1]       # the exception's own line
            raise WorkerFailed(f"the hunt's worker for backend '{backend}' did not start: {last}") from None

    def call(self, req: Request, tag: Any = None) -> Reply | Died:
        """Run ``req``; ``tag`` (e.g. the case) goes into the history kept for a crash."""
        self.history.append(tag if tag is not None else req)
        try:
            _send(self.proc.stdin.fileno(), req)
            reply = _recv(self.proc.stdout.fileno(), time.time() + self.timeout)
        except TimeoutError:
            self.close()
            return Died("hang", f"no answer after {self.timeout:g} s; killed", self.stderr_tail(), self.history)
        except (EOFError, BrokenPipeError):
            rc = self.proc.wait()
            return Died("crash", describe_exit(rc), self.stderr_tail(), self.history)
        if reply.id != req.id:
            raise RuntimeError(f"worker answered request {reply.id} to request {req.id}")
        return reply

    def stderr_tail(self, limit: int = 2000) -> str:
        self.stderr.seek(0)
        text = self.stderr.read().decode(errors="replace")
        return "\n".join(line for line in text[-limit:].splitlines() if line.strip())

    def close(self) -> None:
        """End the worker (its whole process group) and wait for it."""
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait()
        for f in (self.proc.stdin, self.proc.stdout):
            f.close()


if __name__ == "__main__":   # frames must name the module's classes by their import name, not __main__
    from nutshell.conformance import hunt_worker

    hunt_worker.main(sys.argv[1:])
