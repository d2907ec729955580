"""``nutshell repro CHECK_ID``: a standalone reproducer bundle for a failed check of a run.

The bundle is a folder that travels alone: ``case.npz`` (the inputs, the float64 goldens and their
error bounds, the cotangent of a gradient check, in the spec's vector layout), ``attrs.json`` (the
call, the dtype and the tolerance model's numbers), ``versions.json`` (the libraries), a
``README.md`` and ``repro.py``, a script of at most 25 lines that exits non-zero while the bug is
there (by an exception, a failed comparison, a crash, or the alarm it sets against a hang).

Who is at fault is decided by trying: where the backend's library has a direct spelling of the
call (a convolution in PyTorch or TensorFlow, one ONNX Conv node in ONNX Runtime), the bundle
first writes a script that imports only NumPy and that library and runs it from the folder. If it
fails, the library is at fault and that script is the reproducer for its bug tracker; if not, the
fault lies in the backend's own code and ``repro.py`` calls the backend through nutshell, saying so.
``nutshell hunt`` writes the same bundle for each finding.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from nutshell import spec as spec_mod
from nutshell.conformance.results import load_results
from nutshell.errors import SpecError
from nutshell.spec import generate, tolerance

SETTINGS = ("TF_ENABLE_", "TF_NUM_", "TF_DETERMINISTIC", "TF_USE_", "ONEDNN_", "DNNL_", "OMP_", "MKL_",
            "OPENBLAS_", "CUBLAS_", "CUDNN_", "NVIDIA_TF32", "CUPY_",
            "TORCH_", "ORT_", "NUTSHELL_BACKENDS", "PYTHONPATH")
"""Environment variables that change what a numerical library computes (or, for a backend registered
through $NUTSHELL_BACKENDS, where it is): a bundle keeps them and its script sets them again."""

LIBRARY = {"torch": "torch", "tf": "tensorflow", "onnx": "onnxruntime"}
"""The library a built-in backend's arithmetic comes from (CuPy's backend runs its own kernels)."""
SCRIPT_TIMEOUT_S = 600


@dataclass
class Bundle:
    """What a reproducer needs: the call, its arrays (spec .npz layout) and where it came from."""

    backend: str
    device: str | None
    concept: str
    mode: str                       # forward | vjp
    dtype: str
    attrs: dict
    data: dict[str, np.ndarray]
    what: str                       # one line: what went wrong
    kind: str = "wrong"             # wrong | raised | crash | hang: what the library's script must show too
    versions: dict = field(default_factory=dict)
    repeat: int = 1                 # times the script repeats the call (heap corruption may need many)
    details: str = ""               # anything else for the README (glibc's words, the minimisation)
    env: dict = field(default_factory=lambda: settings(os.environ))   # what the libraries ran with


def settings(environ) -> dict[str, str]:
    """The variables of ``environ`` named in SETTINGS."""
    return {k: v for k, v in sorted(environ.items()) if k.startswith(SETTINGS)}


# --- the scripts --------------------------------------------------------------------------------

HEAD = """import json, os, signal, sys, numpy as np
d, a = np.load("case.npz"), json.load(open("attrs.json")); signal.alarm(a["timeout"])  # a hang exits non-zero too
os.environ.update(a["env"])  # the settings the libraries ran with (before they are imported)
dt, at, vjp = a["dtype"], a["attrs"], a["mode"] == "vjp"; key = ("grad.", "gerr.") if vjp else ("out.", "err.")
ins = {k[3:]: d[k].astype(dt) if d[k].dtype.kind == "f" else d[k] for k in d.files if k.startswith("in.")}
cot = {k[4:]: d[k].astype(dt) for k in d.files if k.startswith("cot.")}
def check(name, got):  # |got - float64 golden| <= safety*u*e + max(floor, safety*eta*f): the spec's derived bound
    err, f = np.abs(np.asarray(got, np.float64) - d[key[0] + name]), f"{key[1][:-1]}_f.{name}"  # f: underflows
    f = d[f] if f in d.files else 0
    bound = a["safety"] * (a["u"] * d[key[1] + name]) + np.maximum(a["floor"], a["safety"] * a["eta"] * f)
    if not (err <= bound).all(): sys.exit(f"{name}: max |err| {err.max():.3g}, bound usage {(err / bound).max():.3g}")
"""

NUTSHELL = """import nutshell
b = nutshell.load(a["backend"], device=a["device"])
for _ in range(a["repeat"]):
    out = b.vjp(a["concept"], ins, cot, at) if vjp else b.run(a["concept"], ins, at)
    [check(name, got) for name, got in out.items()]
print("no longer reproduces")
"""

TORCH_CONV = """import torch, torch.nn.functional as F
t = {k: torch.tensor(v, requires_grad=vjp) for k, v in ins.items()}
for _ in range(a["repeat"]):
    w, (top, left, bottom, right) = t["w"].flip(2, 3) if a["concept"] == "convolve2d" else t["w"], at["pads"]
    x = F.pad(t["x"], [left, right, top, bottom])
    y = F.conv2d(x, w, t.get("b"), at["stride"], 0, at["dilation"], at["groups"])
    out = dict(zip(t, torch.autograd.grad(y, list(t.values()), torch.tensor(cot["y"])))) if vjp else {"y": y}
    [check(name, got.detach().numpy()) for name, got in out.items()]
print("no longer reproduces")
"""

TF_CONV = """import tensorflow as tf
t = {k: tf.constant(v) for k, v in ins.items()}
def conv(x, w, b=None):  # tf.pad, NCHW/OIHW -> NHWC/HWIO, one VALID tf.nn.conv2d per group
    x = tf.transpose(tf.pad(x, [[0, 0], [0, 0], at["pads"][::2], at["pads"][1::2]]), [0, 2, 3, 1])  # t, l, b, r
    w = tf.transpose(tf.reverse(w, [2, 3]) if a["concept"] != "conv2d" else w, [2, 3, 1, 0])
    y = tf.concat([tf.nn.conv2d(xg, wg, [1, *at["stride"], 1], "VALID", dilations=at["dilation"])
                   for xg, wg in zip(tf.split(x, at["groups"], 3), tf.split(w, at["groups"], 3))], 3)
    return tf.transpose(y, [0, 3, 1, 2]) + (0 if b is None else b[:, None, None])
for _ in range(a["repeat"]):
    with tf.GradientTape() as tape:
        tape.watch(list(t.values())); y = conv(**t)
    out = dict(zip(t, tape.gradient(y, list(t.values()), output_gradients=tf.constant(cot["y"])))) if vjp else {"y": y}
    [check(name, got.numpy()) for name, got in out.items()]
print("no longer reproduces")
"""

ORT_CONV = """import onnx, onnxruntime as ort
from onnx import helper as h
kind = h.np_dtype_to_tensor_dtype(np.dtype(dt))
node = h.make_node("Conv", [k for k in ("x", "w", "b") if k in ins], ["y"], strides=at["stride"], pads=at["pads"],
                   dilations=at["dilation"], group=at["groups"])
graph = h.make_graph([node], "repro", [h.make_tensor_value_info(k, kind, v.shape) for k, v in ins.items()],
                     [h.make_tensor_value_info("y", kind, None)])
sess = ort.InferenceSession(h.make_model(graph, opset_imports=[h.make_opsetid("", 18)]).SerializeToString(),
                            providers=["CPUExecutionProvider"])
for _ in range(a["repeat"]):
    check("y", sess.run(None, ins)[0])
print("no longer reproduces")
"""

LIBRARY_SCRIPTS = {
    ("torch", "conv2d"): TORCH_CONV, ("torch", "convolve2d"): TORCH_CONV,
    ("tensorflow", "conv2d"): TF_CONV, ("tensorflow", "convolve2d"): TF_CONV,
    ("onnxruntime", "conv2d", "forward"): ORT_CONV,
}


def library_script(backend: str, concept: str, mode: str, attrs: dict) -> tuple[str, str] | None:
    """(library, script body) when the backend's library spells this call directly, else None.
    TensorFlow's CPU convolution has no gradient for a dilation (its backend spreads the kernel
    with zeros instead), so a dilated gradient has no spelling there."""
    lib = LIBRARY.get(backend)
    body = LIBRARY_SCRIPTS.get((lib, concept)) or LIBRARY_SCRIPTS.get((lib, concept, mode))
    if lib == "tensorflow" and mode == "vjp" and list(attrs.get("dilation", [1, 1])) != [1, 1]:
        return None
    return (lib, body) if body else None


def script(b: Bundle, library: str | None, body: str) -> str:
    """repro.py: a comment saying whose fault it is, the shared head, the call."""
    whose = (f"# {library} {b.versions.get(library, '')} alone (NumPy and {library}, no nutshell): "
             if library else f"# the '{b.backend}' backend's own code, called through nutshell (its library alone "
                             f"does not reproduce it): ")
    what = b.what.splitlines()[0][:120] if b.what else ""
    return f"{whose}{b.concept} {b.mode} in {b.dtype} ({what}); exits non-zero while the bug is there.\n" + HEAD + body


# --- writing and deciding -----------------------------------------------------------------------

def write(b: Bundle, folder: Path, tol: dict, log=print) -> dict:
    """Write the bundle into ``folder``; returns its summary (also ``bundle.json``): the fault
    ("library" or "backend"), the script's library, and whether the script failed here."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "case.npz").write_bytes(generate.npz_bytes(b.data))
    call = {"backend": b.backend, "device": b.device, "concept": b.concept, "mode": b.mode, "dtype": b.dtype,
            "attrs": b.attrs, "repeat": b.repeat, "timeout": SCRIPT_TIMEOUT_S, "safety": tol["safety"],
            "u": tol["unit_roundoff"][b.dtype], "floor": tol["underflow_floor"][b.dtype],
            "eta": tolerance.smallest_subnormal(b.dtype), "env": b.env}
    (folder / "attrs.json").write_text(json.dumps(call, indent=1) + "\n")
    (folder / "versions.json").write_text(json.dumps(b.versions, indent=1, sort_keys=True) + "\n")
    lib = library_script(b.backend, b.concept, b.mode, b.attrs)
    summary = {"fault": "backend", "library": None, "script_fails": False, "library_tried": lib is not None}
    if lib is not None:
        (folder / "repro.py").write_text(script(b, *lib))
        log(f"hunt: trying {lib[0]} alone ({folder / 'repro.py'})")
        if reproduces(b.kind, *_run_script(folder)):
            summary |= {"fault": "library", "library": lib[0], "script_fails": True}
    if summary["fault"] == "backend":
        (folder / "repro.py").write_text(script(b, None, NUTSHELL))
        summary["script_fails"] = _run_script(folder)[0] != 0
    (folder / "bundle.json").write_text(json.dumps(summary | {"what": b.what}, indent=1) + "\n")
    (folder / "README.md").write_text(_readme(b, summary))
    return summary


def _run_script(folder: Path) -> tuple[int, str]:
    """(exit status, stderr) of ``python repro.py`` run from the bundle's folder."""
    try:
        done = subprocess.run([sys.executable, "repro.py"], cwd=folder, capture_output=True, text=True,
                              timeout=SCRIPT_TIMEOUT_S + 30)
    except subprocess.TimeoutExpired:
        return -signal.SIGALRM, "timed out"
    return done.returncode, done.stderr


def reproduces(kind: str, rc: int, stderr: str) -> bool:
    """Whether a script's end shows the finding itself, not some other failure of the script: a
    result outside the bound (its own message), a crash (a signal other than its alarm), a hang
    (the alarm), an exception (a traceback)."""
    return {"wrong": rc == 1 and "bound usage" in stderr,
            "crash": rc < 0 and rc != -signal.SIGALRM,
            "hang": rc == -signal.SIGALRM,
            "raised": rc == 1 and "Traceback" in stderr}[kind]


def _readme(b: Bundle, summary: dict) -> str:
    fault = (f"in {summary['library']} itself: `repro.py` imports only NumPy and {summary['library']}"
             if summary["fault"] == "library" else
             f"in the '{b.backend}' backend's own code: `repro.py` calls it through nutshell" +
             ("" if summary["library_tried"] else " (its library has no direct spelling of this call to try alone)"))
    state = "fails here, as it should" if summary["script_fails"] else "did NOT fail when tried here"
    return (f"# {b.concept} {b.mode} ({b.dtype}) on {b.backend}\n\n{b.what}\n\nThe fault is {fault}.\n"
            f"Run `python repro.py` in this folder: it exits non-zero while the bug is there (it {state}).\n\n"
            f"Files: case.npz (in.* inputs, out.*/grad.* float64 goldens, err.*/gerr.* their bounds in units of u, "
            f"err_f.*/gerr_f.* their underflow roundings in units of the smallest subnormal, "
            f"cot.* the cotangent), attrs.json (the call), versions.json.\n\n{b.details}\n")


# --- nutshell repro CHECK_ID ----------------------------------------------------------------------

def from_check(check_id: str, results: Path) -> Bundle:
    """The bundle of a failed forward or vjp check of a run (its record in ``results``)."""
    doc = load_results(results)
    rec = next((r for r in doc["results"] if r.id == check_id), None)
    if rec is None:
        raise SpecError(f"no check {check_id!r} in {results}")
    outcome = rec.outcome.value
    if outcome not in ("fail", "error") or rec.check not in ("forward", "vjp"):
        raise SpecError(f"{check_id} is a {rec.check} check that ended '{outcome}': "
                        "nutshell repro writes bundles for failed forward and vjp checks")
    concept = spec_mod.load().concept(rec.concept)
    vec = next(v for v in concept.vectors if v.name == rec.vector)
    device = doc["backends"].get(rec.backend, {}).get("device")
    return Bundle(rec.backend, device, concept.id, rec.check, rec.dtype, dict(vec.attrs), vec.load(),
                  f"{check_id}: {rec.message or outcome}", "wrong" if outcome == "fail" else "crash",
                  versions=doc.get("versions", {}))


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("check_id", metavar="CHECK_ID", help="a failed check's id, e.g. 'conv2d[torch-basic-float32-vjp]'")
    p.add_argument("--results", type=Path, default=Path("reports/results.json"), help="the run's results.json")
    p.add_argument("-o", "--out", type=Path, help="the bundle's folder (default: reports/repro/<check id>)")


def run(args: argparse.Namespace) -> int:
    """Write the bundle; its folder is the last line. 0 when its script fails (the bug is there), else 1."""
    b = from_check(args.check_id, args.results)
    name = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in args.check_id)
    folder = args.out or args.results.parent / "repro" / name
    summary = write(b, folder, spec_mod.load().tolerance)
    print(f"fault: {summary['fault']}" + (f" ({summary['library']})" if summary["library"] else ""))
    print(f"bundle: {folder}")
    return 0 if summary["script_fails"] else 1
