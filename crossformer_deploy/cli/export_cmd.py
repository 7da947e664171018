"""crossformer-export: a CrossFormer checkpoint -> ONNX (dynamic batch/height/width by default)."""
from __future__ import annotations

import argparse
import sys
import time

from ..export.metadata import ModelInfo
from ..export.onnx_export import DEFAULT_OPSET, export
from ..fileio import check_output_path
from ..model.factory import build_model, weights_label
from .common import Steps, parse_size, positive_int, run_main

EXAMPLES = """examples:
  crossformer-export --variant s --weights crossformer-s.pth -o crossformer_s.onnx
  crossformer-export --variant t --static 224x224 --batch 1 -o t_224.onnx
  crossformer-export --weights mask_rcnn_cross_s.pth --mode backbone -o backbone.onnx
"""


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="crossformer-export", description=__doc__.split(":", 1)[1].strip(),
                                epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variant", choices=["t", "s", "b", "l", "tiny"],
                   help="architecture (default: read from --weights, else s)")
    p.add_argument("--weights", help="checkpoint (.pth release/mmdet layout or .safetensors); "
                   "without it the weights are random (seed --seed)")
    p.add_argument("--mode", choices=["classifier", "backbone"], default="classifier")
    p.add_argument("--num-classes", type=positive_int,
                   help="classifier classes (default: from the checkpoint, else 1000)")
    p.add_argument("--static", metavar="HxW", help="export a fixed-size graph instead of dynamic height/width")
    p.add_argument("--batch", type=positive_int, help="fix the batch size (default: dynamic)")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset (default {DEFAULT_OPSET})")
    p.add_argument("--seed", type=int, default=0, help="seed of random weights when no --weights is given")
    p.add_argument("-o", "--output", required=True, help="ONNX file to write (atomically)")
    return p


def run(args: argparse.Namespace) -> int:
    check_output_path(args.output)
    size = parse_size(args.static) if args.static else (224, 224)
    variant = args.variant or (None if args.weights else "s")
    step = Steps(3, "crossformer-export")
    t0 = time.perf_counter()
    step("loading model")
    model = build_model(variant, args.weights, args.mode, args.num_classes, seed=args.seed)
    info = ModelInfo(variant=variant or _name(model), mode=args.mode, num_classes=model.num_classes,
                     weights=weights_label(args.weights, args.seed), input_size=size,
                     dynamic=args.static is None, batch=args.batch)
    export(model, args.output, info, args.opset, step=step)
    step.close()
    shape = f"{args.batch or 'B'}x3x{size[0]}x{size[1]}" if args.static else f"{args.batch or 'B'}x3xHxW"
    print(f"wrote {args.output} ({info.variant}, {args.mode}, input {shape}, "
          f"{time.perf_counter() - t0:.1f} s)", file=sys.stderr)
    return 0


def _name(model) -> str:
    cfg = model.cfg
    return cfg.name if cfg.name != "custom" else f"custom-{cfg.embed_dim}-{'-'.join(map(str, cfg.depths))}"


def main(argv=None) -> int:
    return run_main("crossformer-export", run, parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
