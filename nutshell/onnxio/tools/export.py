"""Write a spec model, or GoogLeNet with seeded random weights, as an ONNX file (checked).

    nutshell export digits_cnn -o digits.onnx --params digits.npz     # trained by nutshell train
    nutshell export mlp -o mlp.onnx                                   # the spec's initialisation, seed 0
    nutshell export googlenet -o googlenet.onnx                       # GoogLeNet, seeded random weights

A model of spec/models.yaml is written at opset 18 with a dynamic batch. Its parameters come
from an .npz written by ``nutshell train ... -o FILE.npz`` (every parameter the spec names, of
its shape) or, without ``--params``, from the spec's initialisation with ``--seed``.

``googlenet`` is GoogLeNet (Inception v1) at full size, as the Caffe model it was published as:
input ``data`` (N, 3, 224, 224), output ``prob`` (N, 1000), opset 13, about 7 million float32
weights drawn from ``--seed`` (see nutshell.onnxio.tools.zoo; the same seed, the same file).

Every file passes the ONNX checker with full check; run it with ``nutshell check FILE.onnx`` to
compare every backend with ONNX Runtime.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from nutshell import spec as spec_mod
from nutshell.errors import SpecError
from nutshell.spec import models

GOOGLENET = "googlenet"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help=f"one of: {', '.join(models.names())}, {GOOGLENET}")
    p.add_argument("-o", "--output", type=Path, required=True, help="the .onnx file to write")
    p.add_argument("--params", type=Path, help="parameters from nutshell train (.npz); default: the spec's init")
    p.add_argument("--seed", type=int, default=0, help="seed of the initialisation (without --params; default 0)")
    p.add_argument("--dtype", choices=["float32", "float64"], default=None,
                   help="cast the parameters (default: their own dtype, float32 for the init)")


def load_params(path: Path) -> dict[str, np.ndarray]:
    """The arrays of an .npz (no pickled objects)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except (OSError, ValueError) as exc:
        raise SpecError(f"cannot read parameters from {str(path)!r}: {exc}") from None


def _googlenet(args: argparse.Namespace):
    """The zoo's GoogLeNet at full size and the words for where its weights come from."""
    if args.params or args.dtype:
        raise SpecError(f"{GOOGLENET} takes no --params or --dtype: its float32 weights are drawn from --seed")
    from nutshell.onnxio.tools import zoo

    return zoo.googlenet(seed=args.seed), f"seeded random weights (seed {args.seed})"


def _spec_model(args: argparse.Namespace):
    """A model of spec/models.yaml and the words for where its parameters come from."""
    from nutshell.onnxio.codec import writer as onnx_export

    spec = models.get(args.model)
    params = load_params(args.params) if args.params else None
    source = str(args.params) if args.params else f"the spec's initialisation, seed {args.seed}"
    return onnx_export.export(spec, params, seed=args.seed, dtype=args.dtype), source


def _shape(value) -> str:
    """An ONNX value's shape, symbolic dimensions by name: (N, 3, 224, 224)."""
    dims = value.type.tensor_type.shape.dim
    return "(" + ", ".join(d.dim_param or str(d.dim_value) for d in dims) + ")"


def run(args: argparse.Namespace) -> int:
    import onnx

    spec_mod.check_names([args.model], [*models.names(), GOOGLENET], what="model")
    proto, source = _googlenet(args) if args.model == GOOGLENET else _spec_model(args)
    onnx.save(proto, args.output)
    n_params = sum(int(np.prod(t.dims)) for t in proto.graph.initializer)
    x, y = proto.graph.input[0], proto.graph.output[0]
    print(f"wrote {args.output}: {args.model}, {len(proto.graph.node)} ONNX nodes, {n_params} parameter values "
          f"from {source}, opset {proto.opset_import[0].version}, input {x.name} {_shape(x)}, output {y.name} "
          f"{_shape(y)}; ONNX checker (full check) passed")
    return 0
