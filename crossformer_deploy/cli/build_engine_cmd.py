"""crossformer-build-engine: an exported CrossFormer ONNX -> a TensorRT engine (.plan) with its sidecar."""
from __future__ import annotations

import argparse
import os
import sys

from crossformer_deploy.cli.common import Steps, run_main
from crossformer_deploy.engines.tensorrt.build import build

EXAMPLES = """examples:
  crossformer-build-engine --onnx crossformer_s.onnx --engine crossformer_s.plan
  crossformer-build-engine --onnx s.onnx --engine s.plan --shapes min:1x224x224,opt:8x224x224,max:32x384x384
  crossformer-build-engine --onnx s.onnx --engine s.plan --shapes 1x224x224 \\
      --shapes min:1x384x384,opt:4x384x384,max:8x512x512

shapes are BxHxW (Bx3xHxW also accepted), H and W multiples of 32; one profile per --shapes flag
(or ';'-separated). Default: a dynamic model gets its export size (224x224 unless exported otherwise)
with batch 1..8, tuned for batch 1 (min 1xHxW, opt 1xHxW, max 8xHxW); a static model its fixed shape.
The engine then only takes sizes inside its profiles.

Precision comes from the ONNX (export fp16 / int8 first): the network is built strongly typed.
Writes ENGINE and ENGINE.json (the sidecar: which model, TensorRT and GPU the engine is for).
Builds are cached by (ONNX, profiles, precision, TensorRT, GPU, optimisation level) under
$CROSSFORMER_DEPLOY_CACHE/engines (default ~/.cache/crossformer-deploy); the timing cache lives in
$CROSSFORMER_DEPLOY_CACHE/tensorrt unless --timing-cache is given. Needs TensorRT and an NVIDIA GPU.
"""


def opt_level(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if not 0 <= v <= 5:
        raise argparse.ArgumentTypeError(f"{v} is not one of TensorRT's optimisation levels 0..5")
    return v


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="crossformer-build-engine", description=__doc__.split(":", 1)[1].strip(),
                                epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--onnx", required=True, help="ONNX written by crossformer-export")
    p.add_argument("--engine", required=True, help="engine to write (.plan, .engine or .trt), atomically")
    p.add_argument("--shapes", action="append", metavar="PROFILE",
                   help="min:BxHxW,opt:BxHxW,max:BxHxW (repeat, or separate with ';', for several profiles)")
    p.add_argument("--timing-cache", metavar="PATH", help="TensorRT timing cache to load and update "
                   "(default: one per TensorRT version and GPU in the cache directory)")
    p.add_argument("--opt-level", type=opt_level, default=3,
                   help="TensorRT builder optimisation level 0..5 (default 3: higher builds slower, may run faster)")
    p.add_argument("--no-cache", action="store_true", help="always build; neither reuse nor store a cached engine")
    return p


def run(args: argparse.Namespace) -> int:
    step = Steps(5, "crossformer-build-engine")
    try:
        res = build(args.onnx, args.engine, args.shapes, timing_cache=args.timing_cache,
                    optimization_level=args.opt_level, progress=step, use_cache=not args.no_cache)
    finally:
        step.close()
    ident = res.identity
    how = "reused from the engine cache" if res.cached else "built"
    profiles = "; ".join(str(p) for p in ident.profiles)
    print(f"wrote {res.path} and {os.path.basename(res.path)}.json ({how} in {res.seconds:.1f} s; "
          f"{ident.precision}; profiles {profiles}; {ident.device.describe()})", file=sys.stderr)
    return 0


def main(argv=None) -> int:
    return run_main("crossformer-build-engine", run, parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
