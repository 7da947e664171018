"""crossformer-validate: run an exported model and the PyTorch reference on the same inputs, compare."""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys

import numpy as np

from crossformer_deploy.base.det_preprocess import det_batch
from crossformer_deploy.base.errors import UsageError
from crossformer_deploy.base.images import list_images, load_batch, load_image
from crossformer_deploy.base.model_file import is_engine
from crossformer_deploy.base.model_info import DETECTOR, SEGMENTER, ModelInfo
from crossformer_deploy.base.sizes import parse_size
from crossformer_deploy.cli.common import add_openvino_shapes, classifier_from_args, parse_list, positive_int, run_main
from crossformer_deploy.engines.open_model import OPENVINO_SHAPES_KEPT, open_runner, read_model_info
from crossformer_deploy.export.det_info import detector_from_info
from crossformer_deploy.export.precision import schemes
from crossformer_deploy.model.config import VARIANT_CHOICES
from crossformer_deploy.model.crossformer import CrossFormer
from crossformer_deploy.model.factory import model_from_label
from crossformer_deploy.model.seg.config import SegConfig
from crossformer_deploy.model.seg.factory import segmenter_from_label
from crossformer_deploy.runtime.classify import fill_batch
from crossformer_deploy.runtime.detect import det_inputs, paste_masks, run_detector
from crossformer_deploy.runtime.parity import (
    DET_MASK_IOU,
    DET_MATCH,
    DET_SCORE_MIN,
    SEG_AGREEMENT,
    TOLERANCES,
    compare,
    det_rule,
    mask_iou,
    match_pairs,
    miou_agreement,
    pixel_agreement,
)
from crossformer_deploy.runtime.runner import Runner
from crossformer_deploy.runtime.segment import run_segmenter, seg_inputs
from crossformer_deploy.runtime.torch_cuda_runner import TorchCudaRunner
from crossformer_deploy.runtime.torch_runner import TorchRunner

EXAMPLES = """examples:
  crossformer-validate --model crossformer_s.onnx --weights crossformer-s.pth
  crossformer-validate --model s.onnx --sizes 224,256x320,320x448 --batch 1,4
  crossformer-validate --model s_fp16.onnx --weights s.pth --images val_subset/ --json
  crossformer-validate --provider torch-cuda --variant s --weights s.pth --batch 1,8     # an NVIDIA GPU
  crossformer-validate --model upernet_s.onnx --weights upernet_crossformer_s.pth --sizes 512,512x704 --batch 1,2
  crossformer-validate --model retinanet_s.onnx --weights retinanet_crossformer_s.pth --images coco_val/ --batch 1,2

A segmenter export (crossformer-export --task seg) is fed its AlignResized input and an original size: by
default 512x512 (output 512x512) and 512x704 (output 512x683, the size a 375x500 photo comes back at); with
--sizes, each size's own (or --output-size). It is judged by the share of pixels whose class agrees with the
PyTorch reference (fp32 >= 99.99 %, fp16 >= 99.5 %, int8 >= 98 %), with an mIoU of the one map against the
other, and, for exports with --logits, by the logits' table row below.

A detector export (crossformer-export --task det) is fed, with --images, each photo through mmdet's test pipeline
(batches of --batch photos padded to the largest), else random inputs at --sizes (default 800x1216, a COCO photo's
input; in a batch, the later rows' images are smaller, padded with 0). It is judged by the share of the PyTorch
detections with score >= 0.3 that the runtime answers one-to-one with the same label, IoU >= 0.99 and a score
within 1e-4 (fp32: >= 99 %; FP16 / INT8 graphs: IoU >= 0.9 and a score within 0.05, >= 98 % / >= 95 %), and
for Mask R-CNN by the mean IoU of the matched detections' masks pasted into the image (>= 0.98); an untrained
detector on random inputs may have none to match (say so, and give a checkpoint and --images).

--provider torch-cuda checks the PyTorch fp16 CUDA path (fused Triton attention, CUDA graphs) against the
fp32 reference, with the fp16 row; it needs a checkpoint (--weights / --variant) or an export to read it from.

Tolerances (per precision): """ + "; ".join(
    f"{k}: " + ", ".join(f"{f} {v}" for f, v in vars(t).items() if v is not None) for k, t in TOLERANCES.items())


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="crossformer-validate", description=__doc__.split(":", 1)[1].strip(),
                                epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help="exported model (.onnx or .plan); with --provider torch-cuda, optional")
    p.add_argument("--variant", choices=VARIANT_CHOICES,
                   help="with --provider torch-cuda and no --model: the architecture (default: read from --weights, "
                   "else s)")
    p.add_argument("--weights", help="the checkpoint the model was exported from (not needed for random weights)")
    p.add_argument("--sizes", help="comma list of N or HxW (default: the model's size; dynamic: 224,256x320)")
    p.add_argument("--batch", default=None, help="comma list of batch sizes (default 1,3; a fixed-batch model: its)")
    p.add_argument("--images", help="a folder of images to use instead of random inputs; with one sub-folder "
                   "per class id (e.g. 0/, 1/ ...) the accuracy of both is reported too")
    p.add_argument("--provider", choices=["cpu", "cuda", "tensorrt", "openvino", "torch-cuda"], default="cpu",
                   help="cpu / cuda / tensorrt / openvino run --model; torch-cuda runs the checkpoint on a GPU")
    p.add_argument("--threads", type=positive_int)
    add_openvino_shapes(p, OPENVINO_SHAPES_KEPT)
    p.add_argument("--seed", type=int, default=0, help="seed of the random inputs")
    p.add_argument("--output-size", metavar="HxW", help="segmenters: the original size the logits go back to "
                   "(default: each input size)")
    p.add_argument("--json", action="store_true")
    return p


def run(args: argparse.Namespace) -> int:
    if args.output_size and not args.model:
        raise UsageError("--output-size is for segmenter exports (--model)")
    if args.model and args.provider != "torch-cuda" and read_model_info(args.model).mode == SEGMENTER:
        return _run_seg(args)
    if args.model and read_model_info(args.model).mode == DETECTOR:
        return _run_det(args)
    if args.output_size:
        raise UsageError("--output-size is for segmenter exports")
    info, model = _model_and_info(args)
    if info.precision not in TOLERANCES:
        raise UsageError(f"no tolerance row for precision {info.precision!r}")
    tol = TOLERANCES[info.precision]
    if args.provider in ("cpu", "openvino") and not is_engine(args.model):
        # Before the run, so that a FAIL below comes with its likely cause.
        warning = schemes.saturation_warning(info, schemes.cpu_flags())
        if warning:
            print(warning, file=sys.stderr)
    if args.sizes:
        sizes = parse_list(args.sizes, lambda t: parse_size(t, info.stride), "size")
    else:
        sizes = [tuple(info.input_size)] + ([(256, 320)] if info.dynamic else [])
    batches = parse_list(args.batch, int, "batch") if args.batch else ([info.batch] if info.batch else [1, 3])
    reference = TorchRunner(model)
    paths = list_images([args.images]) if args.images else None
    rng = np.random.default_rng(args.seed)
    rows, ok_all = [], True
    with _runner(args, model) as runner:
        for size in sizes:
            for b in batches:
                if paths:
                    x = load_batch([paths[i % len(paths)] for i in range(b)], size, info.crop_ratio, info.mean,
                                   info.std)
                else:
                    x = rng.standard_normal((b, 3, *size), dtype=np.float32)
                got = runner.run({"image": fill_batch(x, info.batch)})
                got = {k: v[:b] for k, v in got.items()}
                ref = reference.run({"image": x})
                for c in compare(ref, got, tol):
                    ok_all &= c.passed
                    rows.append({"size": f"{size[0]}x{size[1]}", "batch": b, **c.to_json()})
    accuracy = _accuracy(model, args, info, reference, sizes[0]) if (
        paths and info.mode == "classifier") else None
    if args.json:
        json.dump({"model": args.model or args.provider, "precision": info.precision, "tolerance": vars(tol),
                   "cases": rows, "accuracy": accuracy, "passed": ok_all}, sys.stdout, indent=1)
        print()
    else:
        _print_table(args.model or f"{info.variant} on {args.provider}", info.precision, rows, accuracy)
        print("PASS" if ok_all else "FAIL")
    return 0 if ok_all else 1


def _run_seg(args: argparse.Namespace) -> int:
    """A segmenter export against its PyTorch model: pixel agreement (and the logits, if the graph has them)."""
    if args.variant:
        raise UsageError("--variant goes with --provider torch-cuda and no --model; an export names its own")
    info = read_model_info(args.model)
    if info.precision not in SEG_AGREEMENT:
        raise UsageError(f"no agreement bar for precision {info.precision!r}")
    cfg = SegConfig.from_json(info.extra["segmenter"])
    model = segmenter_from_label(cfg, info.weights, args.weights, return_logits=True)
    reference = TorchRunner(model)
    out_size = parse_size(args.output_size, 1) if args.output_size else None
    if args.sizes:
        cases = [(s, out_size or s) for s in parse_list(args.sizes, lambda t: parse_size(t, info.stride), "size")]
    else:
        cases = [(tuple(info.input_size), out_size or tuple(info.input_size))]
        if info.dynamic and tuple(info.input_size) != (512, 704):
            cases.append(((512, 704), out_size or (512, 683)))
    batches = parse_list(args.batch, int, "batch") if args.batch else ([info.batch] if info.batch else [1])
    rng = np.random.default_rng(args.seed)
    if args.images:  # each image at its own AlignResized size, its original size out
        inputs = [seg_inputs(load_image(p), info) for p in list_images([args.images])]
    else:
        inputs = [(rng.standard_normal((3, *size), dtype=np.float32), out) for size, out in cases]
    bar, tol = SEG_AGREEMENT[info.precision], TOLERANCES[info.precision]
    rows, ok_all = [], True
    with _runner(args, model) as runner:
        for (image, out), b in ((i, b) for i in inputs for b in batches):
            x = np.stack([image] * b)
            if b > 1 and not args.images:  # rows that differ: a batch mix-up must show
                x[1:] = rng.standard_normal(x[1:].shape, dtype=np.float32)
            size = x.shape[2:]
            got = run_segmenter(runner, info, x, out)
            ref = reference.run({"image": x, "output_size": np.asarray(out, np.int64)})
            agree = pixel_agreement(ref["class_map"], got["class_map"])
            row = {"size": f"{size[0]}x{size[1]}", "output": f"{out[0]}x{out[1]}", "batch": b,
                   "pixel_agreement": agree, "miou": miou_agreement(ref["class_map"], got["class_map"],
                                                                    info.num_classes)}
            ok = agree >= bar
            if "logits" in got:
                c = compare({"logits": ref["logits"]}, {"logits": got["logits"]}, tol, logits=None)[0]
                row.update(max_abs=c.max_abs, cosine=c.cosine)
                ok &= c.passed
            row["passed"] = bool(ok)
            ok_all &= ok
            rows.append(row)
    if args.json:
        json.dump({"model": args.model, "precision": info.precision, "pixel_agreement_bar": bar, "cases": rows,
                   "passed": ok_all}, sys.stdout, indent=1)
        print()
    else:
        print(f"{args.model} ({info.precision}, {info.head} segmenter) vs PyTorch; pixel agreement bar {bar:.4%}")
        print(f"{'size':>9} {'output':>9} {'batch':>5} {'pixels':>9} {'mIoU':>8} {'max|abs|':>10} {'cosine':>10}  "
              "result")
        for r in rows:
            logits = f"{r['max_abs']:10.2e} {r['cosine']:10.7f}" if "max_abs" in r else f"{'-':>10} {'-':>10}"
            print(f"{r['size']:>9} {r['output']:>9} {r['batch']:>5} {r['pixel_agreement']:9.4%} {r['miou']:8.4f} "
                  f"{logits}  {'PASS' if r['passed'] else 'FAIL'}")
        print("PASS" if ok_all else "FAIL")
    return 0 if ok_all else 1


def _run_det(args: argparse.Namespace) -> int:
    """A detector export against its PyTorch model: the share of the reference's detections matched."""
    if args.variant or args.provider == "torch-cuda":
        raise UsageError("--variant and --provider torch-cuda are for classifiers; a detector export is checked on "
                         "cpu, cuda, openvino or tensorrt against its own PyTorch model")
    if args.output_size:
        raise UsageError("--output-size is for segmenter exports")
    info = read_model_info(args.model)
    if info.precision not in DET_MATCH:
        raise UsageError(f"no detection bar for precision {info.precision!r}")
    bar, rule = DET_MATCH[info.precision], det_rule(info.precision)
    model = detector_from_info(info, args.weights)
    reference = TorchRunner(model)
    batches = parse_list(args.batch, int, "batch") if args.batch else ([info.batch] if info.batch else [1])
    if args.images and args.sizes:
        raise UsageError("--sizes is for random inputs: with --images each photo is resized by the graph's rule")
    rows_out, matched, counted, mask_ious = [], 0, 0, []
    with open_runner(args.model, args.provider, args.threads, args.openvino_shapes) as runner:
        for what, image, image_size in _det_cases(args, info, batches):
            got = run_detector(runner, info, image, image_size)
            ref = reference.run({"image": image, "image_size": image_size})
            m = c = 0
            case_ious = []
            for i in range(len(image)):
                pairs, ci = match_pairs(ref["dets"][i], ref["labels"][i], got["dets"][i], got["labels"][i],
                                        **rule)
                m, c = m + len(pairs), c + ci
                if "masks" in got and pairs:  # Mask R-CNN: matched detections' masks, pasted at the original size
                    r_idx, g_idx = [a for a, _ in pairs], [b for _, b in pairs]
                    size = (int(image_size[i, 2]), int(image_size[i, 3]))
                    ref_m = paste_masks(ref["masks"][i][r_idx], ref["dets"][i][r_idx, :4], size)
                    got_m = paste_masks(got["masks"][i][g_idx], got["dets"][i][g_idx, :4], size)
                    case_ious += [mask_iou(a, b) for a, b in zip(ref_m, got_m)]
            matched, counted = matched + m, counted + c
            mask_ious += case_ious
            rows_out.append({"case": what, "size": f"{image.shape[2]}x{image.shape[3]}", "batch": len(image),
                             "reference": c, "matched": m, "rate": m / c if c else None,
                             "mask_iou": float(np.mean(case_ious)) if case_ious else None})
    rate = matched / counted if counted else None
    mean_mask_iou = float(np.mean(mask_ious)) if mask_ious else None
    passed = (rate is None or rate >= bar) and (mean_mask_iou is None or mean_mask_iou >= DET_MASK_IOU)
    if counted == 0:
        print(f"warning: the PyTorch detector found no detection with score >= {DET_SCORE_MIN} on these inputs, so "
              "nothing was compared; give a trained checkpoint and photos (--images)", file=sys.stderr)
    if args.json:
        json.dump({"model": args.model, "precision": info.precision, "match_bar": bar,
                   "rule": {"score_min": DET_SCORE_MIN, **rule},
                   "mask_iou_bar": DET_MASK_IOU, "cases": rows_out, "reference": counted, "matched": matched,
                   "rate": rate, "mask_iou": mean_mask_iou, "passed": passed},
                  sys.stdout, indent=1)
        print()
    else:
        print(f"{args.model} ({info.precision}, {info.head} detector) vs PyTorch; detections with score >= "
              f"{DET_SCORE_MIN} matched (same label, IoU >= {rule['iou_min']}, score within {rule['score_tol']:g}); "
              f"bar {bar:.0%}")
        print(f"{'case':>24} {'input':>10} {'batch':>5} {'reference':>9} {'matched':>8} {'rate':>8} {'mask IoU':>9}")
        for r in rows_out:
            rate_s = f"{r['rate']:8.2%}" if r["rate"] is not None else f"{'-':>8}"
            iou_s = f"{r['mask_iou']:9.4f}" if r["mask_iou"] is not None else f"{'-':>9}"
            print(f"{r['case'][:24]:>24} {r['size']:>10} {r['batch']:>5} {r['reference']:>9} {r['matched']:>8} "
                  f"{rate_s} {iou_s}")
        total = f"{rate:.2%}" if rate is not None else "n/a (nothing to match)"
        masks = (f"; mean mask IoU of matched detections {mean_mask_iou:.4f} (bar {DET_MASK_IOU})"
                 if mean_mask_iou is not None else "")
        print(f"matched {matched}/{counted} = {total}{masks}: {'PASS' if passed else 'FAIL'}")
    return 0 if passed else 1


def _det_cases(args: argparse.Namespace, info: ModelInfo, batches: list[int]):
    """(what, image [B, 3, H, W], image_size [B, 4]) per case, made as they are run: --images in batches of each
    --batch (padded to the largest), else random inputs at each --sizes."""
    if args.images:
        paths = list_images([args.images])
        for b in batches:
            for s in range(0, len(paths), b):
                part = paths[s:s + b]
                image, image_size = det_batch([det_inputs(load_image(p), info) for p in part], info.stride)
                yield os.path.basename(part[0]) + (f" +{len(part) - 1}" if len(part) > 1 else ""), image, image_size
        return
    rng = np.random.default_rng(args.seed)
    sizes = (parse_list(args.sizes, lambda t: parse_size(t, info.stride), "size") if args.sizes
             else [tuple(info.input_size)])
    for (h, w) in sizes:
        for b in batches:
            image = rng.standard_normal((b, 3, h, w), dtype=np.float32)
            rows = []
            for i in range(b):  # row i's image 32 * i smaller than the input (at least 32), zero padded
                ih, iw = max(h - 32 * i, 32), max(w - 32 * i, 32)
                image[i, :, ih:], image[i, :, :, iw:] = 0, 0
                rows.append([ih, iw, ih * 3 // 5 + 1, iw * 3 // 5 + 1])  # an original 0.6x the resized image
            yield f"{h}x{w} random", image, np.asarray(rows, np.int64)


def _model_and_info(args: argparse.Namespace) -> tuple[ModelInfo, CrossFormer]:
    """What is validated (an export's metadata, or with torch-cuda and no --model the checkpoint's, in fp16)
    and the PyTorch model it comes from."""
    if args.provider == "torch-cuda" and not args.model:
        model, info = classifier_from_args(args.variant, args.weights)
        return dataclasses.replace(info, precision="fp16"), model
    if not args.model:
        raise UsageError("--model is required (or --provider torch-cuda with --variant / --weights)")
    if args.variant:
        raise UsageError("--variant goes with --provider torch-cuda and no --model; an export names its own")
    info = read_model_info(args.model)
    if args.provider == "torch-cuda":  # the export says which checkpoint; the GPU path runs it in fp16
        info = dataclasses.replace(info, precision="fp16", batch=None, dynamic=True)
    return info, model_from_label(info.variant, info.weights, info.mode, info.num_classes, args.weights)


def _runner(args: argparse.Namespace, model) -> Runner:
    if args.provider == "torch-cuda":
        return TorchCudaRunner(model)
    return open_runner(args.model, args.provider, args.threads, args.openvino_shapes)


def _accuracy(model, args, info, reference, size: tuple[int, int]) -> dict | None:
    """Top-1 of the runtime and of the reference on a labelled folder (sub-folders named by class id)."""
    paths = list_images([args.images])
    labels = []
    for p in paths:
        parent = os.path.basename(os.path.dirname(p))
        if not parent.isdigit():
            return None
        labels.append(int(parent))
    bs = info.batch or 32
    hits = {"runtime": 0, "reference": 0}
    with _runner(args, model) as runner:
        for s in range(0, len(paths), bs):
            x = load_batch(paths[s:s + bs], size, info.crop_ratio, info.mean, info.std)
            y = np.asarray(labels[s:s + bs])
            got = next(iter(runner.run({"image": fill_batch(x, info.batch)}).values()))[: len(y)]
            ref = next(iter(reference.run({"image": x}).values()))
            hits["runtime"] += int((got.argmax(-1) == y).sum())
            hits["reference"] += int((ref.argmax(-1) == y).sum())
    return {"images": len(paths), **{k: v / len(paths) for k, v in hits.items()}}


def _print_table(model: str, precision: str, rows: list[dict], accuracy: dict | None) -> None:
    print(f"{model} ({precision}) vs PyTorch")
    print(f"{'size':>9} {'batch':>5} {'output':>8} {'max|abs|':>10} {'max|rel|':>10} {'cosine':>10} "
          f"{'top1':>6}  result")
    for r in rows:
        top1 = "-" if r["top1"] is None else f"{r['top1']:.3f}"
        print(f"{r['size']:>9} {r['batch']:>5} {r['output']:>8} {r['max_abs']:10.2e} {r['max_rel']:10.2e} "
              f"{r['cosine']:10.7f} {top1:>6}  {'PASS' if r['passed'] else 'FAIL'}")
    if accuracy:
        print(f"accuracy on {accuracy['images']} labelled images: runtime {accuracy['runtime'] * 100:.2f} %, "
              f"reference {accuracy['reference'] * 100:.2f} %")


def main(argv=None) -> int:
    return run_main("crossformer-validate", run, parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
