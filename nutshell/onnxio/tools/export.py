"""Write a spec model as an ONNX file (opset 18, dynamic batch, checked).

    nutshell export digits_cnn -o digits.onnx --params digits.npz     # trained by nutshell train
    nutshell export mlp -o mlp.onnx                                   # the spec's initialisation, seed 0

The parameters come from an .npz written by ``nutshell train ... -o FILE.npz`` (every parameter
the spec names, of its shape) or, without ``--params``, from the spec's initialisation with
``--seed``. The file passes the ONNX checker with full check and strict shape inference; run it
with ``nutshell check FILE.onnx`` to compare every backend with ONNX Runtime.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from nutshell.errors import SpecError
from nutshell.spec import models


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help=f"one of: {', '.join(models.names())}")
    p.add_argument("-o", "--output", type=Path, required=True, help="the .onnx file to write")
    p.add_argument("--params", type=Path, help="parameters from nutshell train (.npz); default: the spec's init")
    p.add_argument("--seed", type=int, default=0, help="seed of the spec's initialisation (without --params)")
    p.add_argument("--dtype", choices=["float32", "float64"], default=None,
                   help="cast the parameters (default: their own dtype, float32 for the init)")


def load_params(path: Path) -> dict[str, np.ndarray]:
    """The arrays of an .npz (no pickled objects)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except (OSError, ValueError) as exc:
        raise SpecError(f"cannot read parameters from {str(path)!r}: {exc}") from None


def run(args: argparse.Namespace) -> int:
    import onnx

    from nutshell.onnxio.codec import writer as onnx_export

    spec = models.get(args.model)
    params = load_params(args.params) if args.params else None
    proto = onnx_export.export(spec, params, seed=args.seed, dtype=args.dtype)
    onnx.save(proto, args.output)
    n_params = sum(int(np.prod(t.dims)) for t in proto.graph.initializer)
    source = str(args.params) if args.params else f"the spec's initialisation, seed {args.seed}"
    print(f"wrote {args.output}: {spec.id}, {len(proto.graph.node)} ONNX nodes, {n_params} parameter values "
          f"from {source}, opset {onnx_export.OPSET}, input x (N, {', '.join(map(str, spec.input_shape))}); "
          "ONNX checker (full check) passed")
    return 0
