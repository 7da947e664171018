"""crossformer-triton-repo: write a Triton Inference Server model repository for an exported CrossFormer."""
from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from crossformer_deploy.base.errors import UsageError
from crossformer_deploy.base.fileio import check_writable_dir
from crossformer_deploy.cli.common import positive_int, run_main
from crossformer_deploy.engines.triton.repository import write_repository

BACKENDS = {"auto": "auto", "onnxruntime": "onnx", "tensorrt": "plan", "python": "python"}

EXAMPLES = """examples:
  crossformer-triton-repo --model crossformer_s.onnx --name crossformer_s --out repo/
  crossformer-triton-repo --model crossformer_s.onnx --name crossformer_s --out repo/ \\
      --backend python --with-preprocess --max-batch 16
  crossformer-triton-repo --model crossformer_s.plan --name crossformer_s_trt --out repo/ --instances 2
  crossformer-triton-repo --model upernet_s.onnx --name seg --out repo/ --backend python   # image in, class map out
  crossformer-triton-repo --model retinanet_s.onnx --name det --out repo/ --backend python  # image in, detections out

backends: onnxruntime (default for .onnx: Triton's ONNX Runtime backend), tensorrt (default for
.plan; the engine's sidecar .plan.json must be next to it), python (our ONNX Runtime runner inside
Triton's Python backend). --with-preprocess adds NAME_preprocess (image bytes -> tensor),
NAME_postprocess (logits -> top-k labels) and NAME_ensemble (bytes in, labels out). A segmenter: onnxruntime
takes the AlignResized image and output_size; python takes encoded image bytes, one image a request, and
answers its class map at the image's own size. A detector: onnxruntime takes the graph's image and image_size
(batching requests of one input size) and answers dets, labels (and masks) as the graph does; python takes
encoded image bytes, one image a request, and answers its detections (dets [N, 5], labels [N], names [N], and
for Mask R-CNN masks [N, H0, W0] pasted at the image's size).

Serve it (Python-backend models need numpy<2 in the stub's Python; this makes that env once and
prints the tritonserver command):
  python -m crossformer_deploy.engines.triton.env --serve repo/
See docs/triton.md.
"""


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="crossformer-triton-repo", description=__doc__.split(":", 1)[1].strip(),
                                epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="exported model: .onnx, or a TensorRT engine .plan")
    p.add_argument("--name", required=True, help="Triton model name (the model's directory in the repository)")
    p.add_argument("--out", required=True, help="model repository directory (created if missing)")
    p.add_argument("--max-batch", type=positive_int, default=32, help="max_batch_size (default 32)")
    p.add_argument("--instances", type=positive_int, default=1, help="model instances (default 1)")
    p.add_argument("--backend", choices=list(BACKENDS), default="auto",
                   help="auto (by file type), onnxruntime, tensorrt or python (default auto)")
    p.add_argument("--with-preprocess", action="store_true",
                   help="add the preprocess/postprocess Python models and an ensemble: image bytes in, labels out")
    p.add_argument("--topk", type=positive_int, default=5, help="labels per image from the ensemble (default 5)")
    p.add_argument("--execution-env", metavar="TARBALL",
                   help="EXECUTION_ENV_PATH of the Python-backend models (a conda-pack tarball; default: the "
                        "first python3 on the server's PATH)")
    p.add_argument("--overwrite", action="store_true", help="replace model directories that already exist")
    return p


def body(args: argparse.Namespace) -> int:
    _check_out_dir(args.out)
    written = write_repository(args.model, args.name, args.out, max_batch=args.max_batch, instances=args.instances,
                               with_preprocess=args.with_preprocess, kind=BACKENDS[args.backend],
                               overwrite=args.overwrite, topk=args.topk, execution_env=args.execution_env)
    models = sorted({os.path.relpath(p, args.out).split(os.sep)[0] for p in written})
    print(f"wrote {len(models)} model{'s' if len(models) > 1 else ''} to {args.out}: {', '.join(models)}")
    return 0


def _check_out_dir(out: str) -> None:
    """The repository folder, or the existing folder it will be created in, takes files: known before
    any model is read."""
    if os.path.exists(out) and not os.path.isdir(out):
        raise UsageError(f"--out {out} is a file, not a folder")
    folder = os.path.abspath(out)
    while not os.path.isdir(folder):
        folder = os.path.dirname(folder)
    check_writable_dir(folder)


def main(argv: Sequence[str] | None = None) -> int:
    return run_main("crossformer-triton-repo", body, parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
