"""crossformer-infer: classify images with an exported CrossFormer (ONNX Runtime CPU by default)."""
from __future__ import annotations

import argparse
import json
import os
import sys

from crossformer_deploy.base.cache import cache_dir
from crossformer_deploy.base.errors import ImageError, UsageError
from crossformer_deploy.base.images import list_images
from crossformer_deploy.base.model_info import ModelInfo
from crossformer_deploy.base.sizes import parse_size
from crossformer_deploy.cli.common import classifier_from_args, default_variant, positive_int, run_main
from crossformer_deploy.engines.open_model import open_runner, read_model_info
from crossformer_deploy.export.onnx_export import export
from crossformer_deploy.model.config import VARIANT_CHOICES, get_config
from crossformer_deploy.model.factory import weights_label
from crossformer_deploy.runtime.classify import classify
from crossformer_deploy.runtime.runner import Runner
from crossformer_deploy.runtime.torch_cuda_runner import TorchCudaRunner, torch_cuda_device

EXAMPLES = """examples:
  crossformer-infer samples/chelsea.jpg
  crossformer-infer photos/ --variant s --weights crossformer-s.pth --topk 3 --json
  crossformer-infer img.jpg --model crossformer_s.onnx --provider cuda --batch-size 16
  crossformer-infer photos/ --weights crossformer-s.pth --provider torch-cuda --batch-size 32

--provider torch-cuda runs the checkpoint itself in PyTorch on an NVIDIA GPU (fp16, the fused Triton
attention kernel, one CUDA graph per input shape): no export, no TensorRT.

Without --model, the checkpoint (or, with no --weights, an untrained CrossFormer-S) is exported
to ONNX once and kept in the cache ($CROSSFORMER_DEPLOY_CACHE, default ~/.cache/crossformer-deploy).

Folders are searched recursively (symlinked sub-folders followed once each). An image that cannot be
read (missing, permission denied, not an image, corrupt, too large) gets one error line on stderr and
the others are still classified; with several images a summary ("12 images, 2 failed") ends stderr.
Exit code: 0 all classified, 1 some failed, 2 none could be classified or bad arguments (with --strict:
2 at the first unreadable image).
"""
WEIGHTS_HINT = ("the official ImageNet weights are published by the authors at github.com/cheerss/CrossFormer "
                "(README, model zoo); pass one with --weights")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="crossformer-infer", description=__doc__.split(":", 1)[1].strip(),
                                epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("images", nargs="+", metavar="IMAGE_OR_DIR")
    src = p.add_argument_group("model (one of)")
    src.add_argument("--model", help="an exported model: .onnx (ONNX Runtime / OpenVINO) or .plan (TensorRT)")
    src.add_argument("--variant", choices=VARIANT_CHOICES, help="export this variant (default s)")
    src.add_argument("--weights", help="checkpoint to export (.pth / .safetensors)")
    p.add_argument("--provider", choices=["cpu", "cuda", "tensorrt", "openvino", "torch-cuda"], default="cpu",
                   help="ONNX execution backend (default cpu); torch-cuda: the checkpoint in PyTorch on a GPU")
    p.add_argument("--topk", type=positive_int, default=5)
    p.add_argument("--size", help="input size N or HxW, a multiple of 32 (default: the model's, 224)")
    p.add_argument("--batch-size", type=positive_int, default=8)
    p.add_argument("--threads", type=positive_int, help="CPU threads (default: the runtime's choice)")
    p.add_argument("--json", action="store_true", help="print JSON (one list) instead of a table")
    p.add_argument("--strict", action="store_true", help="stop at the first unreadable image (exit 2)")
    return p


def ensure_model(args: argparse.Namespace) -> str:
    if args.model:
        if args.variant or args.weights:
            raise UsageError("give either --model or --variant/--weights, not both")
        return args.model

    variant = default_variant(args.variant, args.weights)
    label = weights_label(args.weights)  # hashes the checkpoint once: the cache key and the export's metadata
    tag = label.split("sha256=")[1][:16] if args.weights else "random0"
    path = os.path.join(cache_dir(), f"crossformer-{variant or 'ckpt'}-{tag}.onnx")
    if not os.path.exists(path):
        # the checkpoint is read (and checked against --variant) before saying an export is on its way
        model, info = classifier_from_args(args.variant, args.weights, label)
        print(f"exporting {get_config(variant).label if variant else args.weights} to ONNX once: {path}",
              file=sys.stderr)
        export(model, path, info)
    return path


def run(args: argparse.Namespace) -> int:
    failures: list[ImageError] = []

    def skip(e: ImageError) -> None:
        failures.append(e)
        print(f"crossformer-infer: error: {e}", file=sys.stderr)

    on_error = None if args.strict else skip
    paths = list_images(args.images, on_error)
    preds = _classify(args, paths, on_error) if paths else []
    if args.json:
        json.dump([p.to_json() for p in preds], sys.stdout, indent=1)
        print()
    else:
        for p in preds:
            print(p.image)
            for c, name, prob in p.topk:
                print(f"  {prob * 100:6.2f}%  {name} ({c})")
    total = len(preds) + len(failures)
    if total > 1:
        print(f"crossformer-infer: {total} images, {len(failures)} failed", file=sys.stderr)
    return 0 if not failures else 1 if preds else 2


def _classify(args: argparse.Namespace, paths: list[str], on_error) -> list:
    if args.provider == "torch-cuda":
        info, runner = _torch_cuda(args)
        name = info.variant
    else:
        model_path = ensure_model(args)
        info, runner = read_model_info(model_path), None
        name = os.path.basename(model_path)
    if info.weights.startswith("random-init"):
        print(f"warning: {name} has untrained (random) weights, so its labels are meaningless; {WEIGHTS_HINT}",
              file=sys.stderr)
    size = parse_size(args.size, info.stride) if args.size else tuple(info.input_size)
    with runner or open_runner(model_path, args.provider, args.threads) as runner:
        return classify(runner, info, paths, size, args.topk, args.batch_size, on_error=on_error)


def _torch_cuda(args: argparse.Namespace) -> tuple[ModelInfo, Runner]:
    """The checkpoint as a PyTorch model for the torch-cuda runner (no export): its info and the runner."""
    if args.model:
        raise UsageError("--provider torch-cuda runs a checkpoint: give --weights and/or --variant, not --model")

    torch_cuda_device()  # no GPU: one line now, before the checkpoint is read
    model, info = classifier_from_args(args.variant, args.weights)
    return info, TorchCudaRunner(model)


def main(argv=None) -> int:
    return run_main("crossformer-infer", run, parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
