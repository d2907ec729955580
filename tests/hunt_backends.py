"""A backend with a planted corner-case bug in its own code, for the tests of ``nutshell hunt``:
CuPy's backend (NumPy without a GPU: a worker starts in seconds), registered through
$NUTSHELL_BACKENDS as ``blocked=hunt_backends:BlockedBackend``.

``BlockedBackend`` (``blocked``): its conv2d forward works through input channels in blocks of 16
and forgets the last channel of a group whose channel count spills past a whole block (17…31,
33, …). The spec's vectors and the project's fuzz (which takes conv2d's channel counts from those
vectors: at most 4) never reach it; the numbers are right everywhere else.

``PoisonedBackend`` (``poisoned``): a crash that surfaces one call after its cause."""

from __future__ import annotations

import os

from nutshell.backends.cupy_impl import CupyBackend

BLOCK = 16


class BlockedBackend(CupyBackend):
    name = "blocked"

    def _forward(self, concept, inputs, attrs):
        w = inputs.get("w")
        if concept == "conv2d" and w.shape[1] > BLOCK and w.shape[1] % BLOCK:
            w = w.copy()
            w[:, -1] = 0                   # the planted bug: the spilled block's last channel is lost
            inputs = {**inputs, "w": w}
        return super()._forward(concept, inputs, attrs)


class PoisonedBackend(CupyBackend):
    """``poisoned``: relu on exactly 3 elements "corrupts the heap": the call itself returns the
    right numbers, and whichever call comes next in that process aborts (SIGABRT), as glibc does
    when it notices a damaged heap. The call that dies is never the culprit."""

    name = "poisoned"
    damaged = False

    def _forward(self, concept, inputs, attrs):
        if PoisonedBackend.damaged:
            os.abort()
        x = inputs.get("x")
        PoisonedBackend.damaged = concept == "relu" and x is not None and x.size == 3
        return super()._forward(concept, inputs, attrs)
