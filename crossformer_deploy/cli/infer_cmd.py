"""crossformer-infer: classify images with an exported CrossFormer (ONNX Runtime CPU by default), with
--task seg segment them (a class-map PNG and a colour overlay PNG per image), with --task det detect objects in
them (a PNG with the boxes drawn and a JSON of the detections per image)."""
from __future__ import annotations

import argparse
import io
import json
import os
import sys

from crossformer_deploy.base.cache import cache_dir
from crossformer_deploy.base.det_draw import draw_detections
from crossformer_deploy.base.errors import ImageError, UsageError
from crossformer_deploy.base.fileio import check_writable_dir, write_bytes_atomic
from crossformer_deploy.base.images import list_images, load_image
from crossformer_deploy.base.model_info import ModelInfo
from crossformer_deploy.base.palette import class_map_png, overlay
from crossformer_deploy.base.sizes import parse_size
from crossformer_deploy.cli.common import (
    add_openvino_shapes,
    classifier_from_args,
    default_variant,
    positive_int,
    run_main,
)
from crossformer_deploy.engines.open_model import OPENVINO_SHAPES_KEPT, open_runner, read_model_info
from crossformer_deploy.export.det_info import detector_info
from crossformer_deploy.export.onnx_export import export
from crossformer_deploy.model.config import VARIANT_CHOICES, get_config
from crossformer_deploy.model.det import build_detector
from crossformer_deploy.model.factory import weights_label
from crossformer_deploy.model.seg.config import HEADS
from crossformer_deploy.model.seg.factory import build_segmenter, segmenter_info
from crossformer_deploy.runtime.classify import classify
from crossformer_deploy.runtime.detect import DEFAULT_SCORE_THR, DetectionResult, check_detector, detect
from crossformer_deploy.runtime.runner import Runner
from crossformer_deploy.runtime.segment import Segmentation, check_segmenter, segment
from crossformer_deploy.runtime.torch_cuda_runner import TorchCudaRunner, torch_cuda_device

EXAMPLES = """examples:
  crossformer-infer samples/chelsea.jpg
  crossformer-infer photos/ --variant s --weights crossformer-s.pth --topk 3 --json
  crossformer-infer img.jpg --model crossformer_s.onnx --provider cuda --batch-size 16
  crossformer-infer photos/ --weights crossformer-s.pth --provider torch-cuda --batch-size 32
  crossformer-infer --task seg street.jpg --weights upernet_crossformer_s.pth --out-dir seg/
  crossformer-infer --task seg photos/ --model upernet_s.onnx --provider openvino --out-dir seg/ --json
  crossformer-infer --task det street.jpg --model retinanet_s.onnx --out-dir det/ --score-thr 0.3
  crossformer-infer --task det photos/ --weights retinanet_crossformer_s.pth --out-dir det/ --batch-size 2

--task seg writes, per image, NAME_classes.png (pixel value = class id, with a colour palette) and
NAME_overlay.png (the image with the class colours blended in) at the image's own size, under --out-dir
(folders given as input are mirrored there); the image is AlignResized as the authors' test pipeline does.

--task det writes, per image, NAME_det.png (boxes, class names and scores drawn; Mask R-CNN's masks blended in)
and NAME_det.json (image size and each detection's box x1, y1, x2, y2 in the image's pixels, score, label id,
class name) under --out-dir, for the detections scoring at least --score-thr (default 0.3); an image with none
gets an empty list, not an error. Images are resized as mmdet's test pipeline does (keep ratio, the scale the
graph records, 1333x800 by default), one at a time (--batch-size N: N at a time, padded to the largest).

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
    p.add_argument("--task", choices=["classify", "seg", "det"], default="classify",
                   help="classify (default), seg: per-pixel classes from a segmenter, det: boxes from a detector")
    src = p.add_argument_group("model (one of)")
    src.add_argument("--model", help="an exported model: .onnx (ONNX Runtime / OpenVINO) or .plan (TensorRT)")
    src.add_argument("--variant", choices=VARIANT_CHOICES, help="export this variant (default s)")
    src.add_argument("--weights", help="checkpoint to export (.pth / .safetensors)")
    p.add_argument("--provider", choices=["cpu", "cuda", "tensorrt", "openvino", "torch-cuda"], default="cpu",
                   help="ONNX execution backend (default cpu); torch-cuda: the checkpoint in PyTorch on a GPU")
    p.add_argument("--topk", type=positive_int, default=5)
    p.add_argument("--size", help="input size N or HxW, a multiple of 32 (default: the model's, 224)")
    p.add_argument("--batch-size", type=positive_int, help="images per run (default 8; --task det 1)")
    p.add_argument("--threads", type=positive_int, help="CPU threads (default: the runtime's choice)")
    add_openvino_shapes(p, OPENVINO_SHAPES_KEPT)
    p.add_argument("--json", action="store_true", help="print JSON (one list) instead of a table")
    p.add_argument("--strict", action="store_true", help="stop at the first unreadable image (exit 2)")
    g = p.add_argument_group("segmentation (--task seg)")
    g.add_argument("--head", choices=HEADS, help="without --model and --weights: the untrained head to export "
                   "(default upernet)")
    g.add_argument("--out-dir", default=".", help="--task seg / det: where the PNGs (and JSONs) go (default: the "
                   "current folder)")
    g.add_argument("--alpha", type=float, default=0.5, help="overlay opacity of the class colours (default 0.5; "
                   "--task det: of the masks)")
    d = p.add_argument_group("detection (--task det)")
    d.add_argument("--score-thr", type=float, help=f"detections drawn and listed: score >= this (default "
                   f"{DEFAULT_SCORE_THR}; the graph itself keeps score > 0.05)")
    return p


def ensure_model(args: argparse.Namespace) -> str:
    if args.model:
        if args.variant or args.weights:
            raise UsageError("give either --model or --variant/--weights, not both")
        return args.model

    variant = default_variant(args.variant, args.weights)
    label = weights_label(args.weights)  # hashes the checkpoint once: the cache key and the export's metadata
    tag = label.split("sha256=")[1][:16] if args.weights else "random0"
    if args.task == "seg":
        return _ensure_segmenter(args, variant, label, tag)
    if args.task == "det":
        return _ensure_detector(args, variant, label, tag)
    path = os.path.join(cache_dir(), f"crossformer-{variant or 'ckpt'}-{tag}.onnx")
    if not os.path.exists(path):
        # the checkpoint is read (and checked against --variant) before saying an export is on its way
        model, info = classifier_from_args(args.variant, args.weights, label)
        print(f"exporting {get_config(variant).label if variant else args.weights} to ONNX once: {path}",
              file=sys.stderr)
        export(model, path, info)
    return path


def _ensure_segmenter(args: argparse.Namespace, variant: str | None, label: str, tag: str) -> str:
    """The cached segmenter export of --weights (or an untrained --head / --variant one), made once."""
    head = args.head or ("any" if args.weights else "upernet")
    path = os.path.join(cache_dir(), f"crossformer-seg-{head}-{variant or 'ckpt'}-{tag}.onnx")
    if not os.path.exists(path):
        model = build_segmenter(variant, args.weights, args.head)  # read and checked before saying anything
        print(f"exporting {model.seg_cfg.label if not args.weights else args.weights} to ONNX once: {path}",
              file=sys.stderr)
        export(model, path, segmenter_info(model, label))
    return path


def _ensure_detector(args: argparse.Namespace, variant: str | None, label: str, tag: str) -> str:
    """The cached detector export of --weights (or an untrained --variant one), made once."""
    path = os.path.join(cache_dir(), f"crossformer-det-{variant or 'ckpt'}-{tag}.onnx")
    if not os.path.exists(path):
        model = build_detector(variant, args.weights)  # read and checked before saying anything
        print(f"exporting {model.det_cfg.label if not args.weights else args.weights} to ONNX once: {path}",
              file=sys.stderr)
        export(model, path, detector_info(model, label))
    return path


def run(args: argparse.Namespace) -> int:
    failures: list[ImageError] = []

    def skip(e: ImageError) -> None:
        failures.append(e)
        print(f"crossformer-infer: error: {e}", file=sys.stderr)

    on_error = None if args.strict else skip
    if args.task != "det" and args.score_thr is not None:
        raise UsageError("--score-thr is for --task det")
    if args.task == "seg":
        return _run_seg(args, failures, on_error)
    if args.task == "det":
        return _run_det(args, failures, on_error)
    if args.head or args.out_dir != "." or args.alpha != 0.5:
        raise UsageError("--head, --out-dir and --alpha are for --task seg (--out-dir and --alpha: also det)")
    args.batch_size = args.batch_size or 8
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
    with runner or open_runner(model_path, args.provider, args.threads, args.openvino_shapes) as runner:
        return classify(runner, info, paths, size, args.topk, args.batch_size, on_error=on_error)


def _run_seg(args: argparse.Namespace, failures: list[ImageError], on_error) -> int:
    """--task seg: two PNGs per image under --out-dir, one line (or a JSON record) per image on stdout."""
    if args.provider == "torch-cuda":
        raise UsageError("--provider torch-cuda runs classifiers; segment with cpu, openvino, cuda or tensorrt")
    if args.size or args.topk != 5 or args.batch_size is not None:
        raise UsageError("--size, --topk and --batch-size are for classifiers: a segmenter runs each image at its "
                         "own AlignResized size")
    if not 0.0 <= args.alpha <= 1.0:
        raise UsageError(f"--alpha {args.alpha} is outside 0..1")
    if args.model and args.head:
        raise UsageError("--head picks the head of a new export: an export given with --model has its own")
    out_dir = _out_dir(args.out_dir)
    paths = list_images(args.images, on_error)
    model_path = ensure_model(args) if paths else None
    records = []
    if paths:
        info = read_model_info(model_path)
        check_segmenter(info, model_path)
        if info.weights.startswith("random-init"):
            print(f"warning: {os.path.basename(model_path)} has untrained (random) weights, so its classes are "
                  "meaningless; pass the authors' MMSegmentation checkpoint with --weights", file=sys.stderr)
        roots = [os.path.abspath(p) for p in args.images if os.path.isdir(p)]
        with open_runner(model_path, args.provider, args.threads, args.openvino_shapes) as runner:
            for seg in segment(runner, info, paths, on_error):
                records.append(_write_seg(seg, info, out_dir, roots, args.alpha))
                if not args.json:
                    r = records[-1]
                    top = ", ".join(f"{c} {f * 100:.1f}%" for c, f in r["classes"][:3])
                    print(f"{r['image']}: {r['class_map']} {r['overlay']} ({r['size'][0]}x{r['size'][1]}; {top})")
    if args.json:
        json.dump(records, sys.stdout, indent=1)
        print()
    total = len(records) + len(failures)
    if total > 1:
        print(f"crossformer-infer: {total} images, {len(failures)} failed", file=sys.stderr)
    return 0 if not failures else 1 if records else 2


def _out_dir(out_dir: str) -> str:
    """--out-dir as an absolute path that takes files: made if only its last folder is missing."""
    out_dir = os.path.abspath(out_dir)
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise UsageError(f"--out-dir {out_dir} is a file, not a folder")
    if not os.path.isdir(out_dir):
        if not os.path.isdir(os.path.dirname(out_dir)):
            raise UsageError(f"output directory does not exist: {out_dir}")
        os.makedirs(out_dir, exist_ok=True)
    check_writable_dir(out_dir)
    return out_dir


def _stem(image: str, out_dir: str, roots: list[str]) -> str:
    """OUT_DIR/[sub-folders of a folder input/]NAME, its folder made."""
    src = os.path.abspath(image)
    root = next((r for r in roots if src.startswith(r + os.sep)), None)
    rel = os.path.relpath(src, root) if root else os.path.basename(src)
    stem = os.path.join(out_dir, os.path.splitext(rel)[0])
    os.makedirs(os.path.dirname(stem), exist_ok=True)
    return stem


def _run_det(args: argparse.Namespace, failures: list[ImageError], on_error) -> int:
    """--task det: NAME_det.png and NAME_det.json per image under --out-dir, one line (or a JSON record) per image
    on stdout."""
    if args.provider == "torch-cuda":
        raise UsageError("--provider torch-cuda runs classifiers; detect with cpu, openvino or cuda")
    if args.size or args.topk != 5 or args.head:
        raise UsageError("--size, --topk and --head are not for --task det: a detector runs each image at its own "
                         "resized size and lists every detection over --score-thr")
    if not 0.0 <= args.alpha <= 1.0:
        raise UsageError(f"--alpha {args.alpha} is outside 0..1")
    score_thr = DEFAULT_SCORE_THR if args.score_thr is None else args.score_thr
    if not 0.0 <= score_thr <= 1.0:
        raise UsageError(f"--score-thr {score_thr} is outside 0..1")
    out_dir = _out_dir(args.out_dir)
    paths = list_images(args.images, on_error)
    records = []
    if paths:
        model_path = ensure_model(args)
        info = read_model_info(model_path)
        check_detector(info, model_path)
        if info.weights.startswith("random-init"):
            print(f"warning: {os.path.basename(model_path)} has untrained (random) weights, so its detections are "
                  "meaningless; pass the authors' MMDetection checkpoint with --weights", file=sys.stderr)
        roots = [os.path.abspath(p) for p in args.images if os.path.isdir(p)]
        with open_runner(model_path, args.provider, args.threads, args.openvino_shapes) as runner:
            for res in detect(runner, info, paths, score_thr, args.batch_size or 1, on_error):
                records.append(_write_det(res, info, out_dir, roots, args.alpha))
                if not args.json:
                    r = records[-1]
                    top = ", ".join(f"{d['name']} {d['score']:.2f}" for d in r["detections"][:5])
                    more = f", +{len(r['detections']) - 5} more" if len(r["detections"]) > 5 else ""
                    print(f"{r['image']}: {len(r['detections'])} detections{' (' + top + more + ')' if top else ''}"
                          f" -> {r['png']} {r['json']}")
    if args.json:
        json.dump(records, sys.stdout, indent=1)
        print()
    total = len(records) + len(failures)
    if total > 1:
        print(f"crossformer-infer: {total} images, {len(failures)} failed", file=sys.stderr)
    return 0 if not failures else 1 if records else 2


def _write_det(res: DetectionResult, info: ModelInfo, out_dir: str, roots: list[str], alpha: float) -> dict:
    """NAME_det.png (the detections drawn) and NAME_det.json (the record), each written atomically."""
    stem = _stem(res.image, out_dir, roots)
    files = {"png": stem + "_det.png", "json": stem + "_det.json"}
    dets = res.detections
    drawn = draw_detections(load_image(res.image), [d.box for d in dets], [d.label for d in dets],
                            [f"{d.name} {d.score:.2f}" for d in dets],
                            [d.mask for d in dets] if any(d.mask is not None for d in dets) else None,
                            info.num_classes, alpha)
    buf = io.BytesIO()
    drawn.save(buf, format="PNG")
    record = {**res.to_json(), **files}
    write_bytes_atomic(files["png"], buf.getvalue())
    write_bytes_atomic(files["json"], (json.dumps(res.to_json(), indent=1) + "\n").encode())
    return record


def _write_seg(seg: Segmentation, info: ModelInfo, out_dir: str, roots: list[str], alpha: float) -> dict:
    """NAME_classes.png and NAME_overlay.png, written atomically; a folder input's sub-folders are mirrored."""
    stem = _stem(seg.image, out_dir, roots)
    files = {"class_map": stem + "_classes.png", "overlay": stem + "_overlay.png"}
    images = {"class_map": class_map_png(seg.class_map, info.num_classes),
              "overlay": overlay(load_image(seg.image), seg.class_map, info.num_classes, alpha)}
    for key, im in images.items():
        buf = io.BytesIO()
        im.save(buf, format="PNG")
        write_bytes_atomic(files[key], buf.getvalue())
    return {"image": seg.image, **files, "size": list(seg.class_map.shape), "input_size": list(seg.input_size),
            "classes": [[c, round(f, 4)] for c, f in seg.class_areas()]}


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
