"""crossformer-export: a CrossFormer checkpoint -> ONNX (dynamic batch/height/width by default),
optionally through a target's graph passes, to FP16 or INT8, and on to a TensorRT engine; with --task seg
the authors' whole segmenter (Semantic FPN or UPerNet) from its MMSegmentation checkpoint, with --task det their
whole detector (RetinaNet or Mask R-CNN) from its MMDetection checkpoint."""
from __future__ import annotations

import argparse
import os
import sys
import time

from crossformer_deploy.base.errors import UsageError
from crossformer_deploy.base.fileio import check_output_path, check_writable_dir
from crossformer_deploy.base.model_info import DET_SCALE, DETECTOR, SEGMENTER, ModelInfo
from crossformer_deploy.base.sizes import parse_size
from crossformer_deploy.cli.common import Steps, default_variant, positive_int, run_main
from crossformer_deploy.engines.tensorrt.build import build_engine, check_engine_path
from crossformer_deploy.engines.tensorrt.device import current_device_identity
from crossformer_deploy.engines.tensorrt.profiles import max_size as profiles_max
from crossformer_deploy.engines.tensorrt.profiles import parse_profiles
from crossformer_deploy.export.det_info import detector_info
from crossformer_deploy.export.onnx_export import DEFAULT_OPSET, save_onnx
from crossformer_deploy.export.pipeline import TARGETS
from crossformer_deploy.export.precision.placement import ATTN_QKV, MLP_FC1, PLACEMENTS, default_placement
from crossformer_deploy.export.recipe import Int8Options, Recipe
from crossformer_deploy.export.recipe import build as recipe_build
from crossformer_deploy.model.config import VARIANT_CHOICES
from crossformer_deploy.model.det import build_detector
from crossformer_deploy.model.factory import build_model, weights_label
from crossformer_deploy.model.seg.config import HEADS
from crossformer_deploy.model.seg.factory import build_segmenter, segmenter_info

EXAMPLES = """examples:
  crossformer-export --variant s --fp16          # writes ./crossformer-s-fp16.onnx and prints its path
  crossformer-export --variant s --weights crossformer-s.pth -o crossformer_s.onnx
  crossformer-export --variant s --static 224x224 --batch 1 --target onnxruntime --explain -o s_ort.onnx
  crossformer-export --variant s --weights s.pth --fp16 --target tensorrt --max-size 384x384 -o s_trt.onnx
  crossformer-export --variant s --weights s.pth --int8 --calib imagenet_val/ --calib-count 512 -o s_int8.onnx
  crossformer-export --variant s --weights s.pth --fp16 --target tensorrt --engine s.plan \\
      --shapes min:1x224x224,opt:8x224x224,max:32x384x384 -o s_trt.onnx
  crossformer-export --weights mask_rcnn_cross_s.pth --mode backbone -o backbone.onnx
  crossformer-export --task seg --weights upernet_crossformer_s.pth -o upernet_s.onnx     # head, variant: from the file
  crossformer-export --task seg --weights fpn_crossformer_b.pth --logits --int8 --calib ade_val/ -o fpn_b_int8.onnx
  crossformer-export --task det --weights retinanet_crossformer_s.pth -o retinanet_s.onnx  # classes: from the file

--task seg: one graph from image [B, 3, H, W] (AlignResized: multiples of 32) and output_size [2] int64 (the
original image's height, width) to class_map [B, H0, W0] int64 (with --logits also logits [B, K, H0, W0]): the
authors' test path (mmseg whole-image inference) in one graph, every size dynamic. INT8 calibrates on crops of
the images at --calib-size (default 512x512).

--task det: one graph from image [B, 3, H, W] (resized keeping the ratio to --scale, padded to multiples of 32)
and image_size [B, 4] int64 (per image: resized h, w, original h, w) to dets [B, 100, 5] (x1, y1, x2, y2, score in
original-image pixels; unused rows 0) and labels [B, 100] int64 (-1 unused), Mask R-CNN also masks [B, 100, 28, 28]
(probabilities): mmdet's test path with anchors, box decoding and NMS in the graph (standard ONNX ops), batch,
height and width dynamic; targets plain, onnxruntime, openvino (docs/detection_cli.md). --fp16 / --int8 lower only
the backbone, neck and heads: anchors, box decoding, TopK, NMS and RoiAlign stay fp32; INT8 calibrates on the
--calib photos through the graph's own resize (--scale).

targets: plain (the exporter's graph), onnxruntime / openvino (folded shape arithmetic; with a static
size or --max-size the DPB MLP is precomputed), tensorrt (one crossformer::GroupedAttention plugin node
per block).

INT8 schemes (--int8-scheme, recorded in the graph's metadata as extra.int8.scheme): reduced-range
(7-bit weights, 8-bit activations) for the CPU targets, accurate on every x86 CPU, with or without
VNNI; symmetric (full 8-bit weights) for --target tensorrt, whose int8 sums cannot saturate.
"""

# What an INT8 dense model's export says, by task: (ModelInfo mode, the placement that held its bar, the note for that
# placement, the warning for any other). Measured in docs/segmentation.md and docs/detection.md.
_INT8_NOTES = {
    "seg": (SEGMENTER, MLP_FC1,
            "note: INT8 segmenter, placement mlp-fc1 (only each MLP's fc1 int8): 98.4-99.96 % of pixels equal to "
            "fp32 on held-out photos in our tests (bar 98 %), but no faster than fp32 (0.81-1.06x); FP16 is the faster "
            "lowered precision (docs/segmentation.md)",
            "warning: INT8 segmenters with every layer int8 agreed with fp32 on only 78-97 % of pixels on held-out "
            "photos in our tests (bar 98 %; trained-like weights, docs/segmentation.md): check this graph on your "
            "images with crossformer-validate before using it"),
    "det": (DETECTOR, ATTN_QKV,
            "note: INT8 detector, placement attn-qkv (only each block's qkv Linear int8): 95.8-97.9 % of the fp32 "
            "graph's detections matched on held-out images in our tests (bar 95 %), but no faster than fp32 "
            "(1.02-1.03x on RetinaNet-S, docs/detection.md)",
            "warning: INT8 detectors with every layer int8 matched only 58-78 % of the fp32 graph's detections in "
            "our tests (bar 95 %; trained-like RetinaNet-S and Mask R-CNN-S, docs/detection.md): check this graph on "
            "your photos with crossformer-validate before using it"),
}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="crossformer-export", description=__doc__.split(":", 1)[1].strip(),
                                epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variant", choices=VARIANT_CHOICES,
                   help="architecture (default: read from --weights, else s)")
    p.add_argument("--weights", help="checkpoint (.pth release/mmdet layout or .safetensors); "
                   "without it the weights are random (seed --seed)")
    p.add_argument("--task", choices=["classify", "seg", "det"], default="classify",
                   help="classify (default): a classifier or backbone; seg: a whole segmenter (mmseg checkpoint); "
                   "det: a whole detector (mmdet checkpoint)")
    p.add_argument("--mode", choices=["classifier", "backbone"], help="with --task classify (default classifier)")
    p.add_argument("--num-classes", type=positive_int,
                   help="classes (default: from the checkpoint, else 1000; a segmenter 150, a detector 80)")
    s = p.add_argument_group("segmentation (--task seg)")
    s.add_argument("--head", choices=HEADS, help="decode head: fpn (Semantic FPN) or upernet (default: read from "
                   "--weights, else upernet)")
    s.add_argument("--logits", action="store_true", help="also output the logits [B, K, H0, W0] (default: the "
                   "class map only)")
    s.add_argument("--grouping", metavar="G,G,G,G/I,I,I,I", help="the backbone's group sizes and intervals (default: "
                   "the authors' config for the variant and head: 14,14,7,7/16,8,2,1 for Semantic FPN S and L, "
                   "7,7,7,7/8,4,2,1 otherwise); they leave no trace in a checkpoint")
    d = p.add_argument_group("detection (--task det)")
    d.add_argument("--arch", choices=["retinanet", "mask_rcnn"], help="the detector (default: read from --weights, "
                   "else retinanet)")
    d.add_argument("--scale", metavar="LONGxSHORT", help="the test pipeline's resize bound recorded in the graph "
                   f"(mmdet Resize(scale, keep_ratio=True); default {DET_SCALE[0]}x{DET_SCALE[1]}, the authors' COCO "
                   "configs); crossformer-infer / -validate / Triton resize each image by it")
    p.add_argument("--static", metavar="HxW", help="export a fixed-size graph instead of dynamic height/width")
    p.add_argument("--batch", type=positive_int, help="fix the batch size (default: dynamic)")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset (default {DEFAULT_OPSET})")
    p.add_argument("--seed", type=int, default=0, help="seed of random weights when no --weights is given")
    p.add_argument("--crop-ratio", type=float,
                   help="preprocessing recorded in the model: resize to size/ratio, center crop (default 0.875, "
                   "the official evaluation; 1.0 = no crop)")
    g = p.add_argument_group("graph passes")
    g.add_argument("--target", choices=TARGETS, default="plain", help="pass pipeline (default plain)")
    g.add_argument("--max-size", metavar="HxW", help="largest input of a dynamic graph: lets fold_dpb precompute "
                   "the position bias (for --engine, the profiles' max is used)")
    g.add_argument("--explain", action="store_true", help="print node counts by op type before/after each pass")
    q = p.add_argument_group("precision")
    q.add_argument("--fp16", action="store_true", help="strongly typed FP16 graph (LayerNorm, softmax in fp32)")
    q.add_argument("--fp16-io", action="store_true", help="with --fp16: FP16 model inputs/outputs too")
    q.add_argument("--int8", action="store_true", help="INT8 Q/DQ graph, calibrated on --calib images")
    q.add_argument("--calib", metavar="DIR", help="calibration images (with --int8)")
    q.add_argument("--calib-count", type=positive_int, default=512, help="calibration images to use (default 512)")
    q.add_argument("--calib-method", choices=["entropy", "percentile", "minmax"], default="entropy")
    q.add_argument("--calib-cache", help="calibration cache file (default: in the cache directory)")
    q.add_argument("--calib-size", metavar="HxW", help="image size for calibration (default: the --static size, "
                   "else 224); use the size the model will run at")
    q.add_argument("--int8-scheme", choices=["auto", "reduced-range", "symmetric"], default="auto",
                   help="with --int8: auto (default) = symmetric for --target tensorrt, reduced-range (7-bit "
                   "weights: CPUs without VNNI saturate 8-bit ones) for plain/onnxruntime/openvino")
    q.add_argument("--int8-placement", choices=list(PLACEMENTS), default=None,
                   help="with --int8: which layers are int8. all (default for classifiers): every Linear, "
                   "attention matmul and conv; bf16-hybrid: stage 1 and the attention matmuls stay float, faster "
                   "with OpenVINO on CPUs that run float in bf16 (AMX, AVX512-BF16; crossformer-bench --recommend "
                   "measures both); mlp-fc1 (default for --task seg): only the first Linear of each MLP int8, the "
                   "placement that kept segmenters within 2 %% of fp32's pixels; attn-qkv (default for --task det): "
                   "only each block's qkv Linear int8, the placement that kept detectors within 5 %% of fp32's "
                   "detections")
    q.add_argument("--quantize-head", action="store_true", help="with --int8: quantize the classifier head too")
    e = p.add_argument_group("TensorRT engine")
    e.add_argument("--engine", help="also build a TensorRT engine here (needs TensorRT and a GPU)")
    e.add_argument("--shapes", help="engine profile(s), e.g. min:1x224x224,opt:8x224x224,max:32x384x384")
    p.add_argument("-o", "--output", help="ONNX file to write (atomically); default: in the current folder, "
                   "crossformer-VARIANT[-backbone][-fp16|-fp16io|-int8][-TARGET][-HxW][-bN].onnx (--task seg: "
                   "crossformer-seg-HEAD-VARIANT[-logits]-..., --task det: crossformer-det-KIND-VARIANT-...; only what "
                   "differs from classifier, fp32, target plain, dynamic size and batch), path printed on stdout")
    return p


def _check_args(args: argparse.Namespace) -> None:
    seg, det = args.task == "seg", args.task == "det"
    if seg and (args.mode or args.crop_ratio is not None):
        raise UsageError("--mode and --crop-ratio are for --task classify (a segmenter takes the whole image, "
                         "AlignResized)")
    if det and (args.mode or args.crop_ratio is not None):
        raise UsageError("--mode and --crop-ratio are for --task classify (a detector takes the whole image, "
                         "resized keeping its ratio)")
    if not seg and (args.head or args.logits or args.grouping):
        raise UsageError("--head, --logits and --grouping are for --task seg")
    if (args.scale or args.arch) and not det:
        raise UsageError("--scale and --arch are for --task det")
    if det:
        _check_det_args(args)
    args.mode = args.mode or "classifier"
    args.crop_ratio = 1.0 if seg or det else 0.875 if args.crop_ratio is None else args.crop_ratio
    if not 0.1 <= args.crop_ratio <= 1.0:
        raise UsageError(f"--crop-ratio {args.crop_ratio} is outside 0.1..1")
    if args.fp16 and args.int8:
        raise UsageError("choose one of --fp16 and --int8")
    if args.fp16_io and not args.fp16:
        raise UsageError("--fp16-io needs --fp16")
    if args.int8 and not args.calib:
        raise UsageError("--int8 needs --calib DIR (calibration images)")
    int8_flags = args.calib or args.calib_size or args.int8_scheme != "auto" or args.int8_placement is not None
    if int8_flags and not args.int8:
        raise UsageError("--calib, --calib-size, --int8-scheme and --int8-placement are for --int8")
    if args.shapes and not args.engine:
        raise UsageError("--shapes describes an engine: give --engine PATH too")
    if args.engine and args.target != "tensorrt":
        raise UsageError("--engine needs --target tensorrt")


def _check_det_args(args: argparse.Namespace) -> None:
    """What a detector export does not do (yet): one line each, before the model is read."""
    for flag, given in (("--engine", args.engine), ("--target tensorrt", args.target == "tensorrt")):
        if given:
            raise UsageError(f"{flag} is not supported yet for --task det (graphs for ONNX Runtime and OpenVINO: "
                             "targets plain, onnxruntime, openvino)")
    if args.fp16_io:
        raise UsageError("--fp16-io is not for --task det: a detector graph keeps its float32 image and dets (only "
                         "the backbone, neck and heads run in FP16)")
    if args.calib_size:
        raise UsageError("--calib-size is not for --task det: a detector calibrates on its images resized by its "
                         "own --scale, as it will run")
    if args.static:
        raise UsageError("--static is not supported for --task det: one dynamic graph serves every image size "
                         "(each image is resized by --scale and padded to a multiple of 32)")


def parse_scale(text: str) -> tuple[int, int]:
    """"1333x800" -> (1333, 800): mmdet's Resize scale, the long and the short side's bounds (either order)."""
    try:
        a, b = (int(v) for v in text.lower().split("x"))
        if min(a, b) < 1:
            raise ValueError
    except ValueError:
        raise UsageError(f"--scale {text!r} is not LONGxSHORT (positive integers, e.g. 1333x800)") from None
    return max(a, b), min(a, b)


def run(args: argparse.Namespace) -> int:
    _check_args(args)
    # Every file this run writes can be written: known now, not after minutes of export or calibration.
    if args.output:
        check_output_path(args.output)
    else:
        check_writable_dir(os.getcwd())
    if args.calib_cache:
        check_output_path(args.calib_cache)
    size = parse_size(args.static) if args.static else (512, 512) if args.task == "seg" else (224, 224)
    scale = parse_scale(args.scale) if args.scale else DET_SCALE
    grouping = parse_grouping(args.grouping) if args.grouping else None
    max_size = parse_size(args.max_size) if args.max_size else None
    profiles = None
    if args.engine:  # fail on bad flags in milliseconds, not after the export
        check_engine_path(args.engine)
        current_device_identity()  # TensorRT and a GPU are here, or one line saying which is missing
        if args.shapes:
            profiles = parse_profiles(args.shapes)
            max_size = profiles_max(profiles)  # fold_dpb precomputes the table for the profile's largest input
    recipe = _recipe(args, max_size)
    variant = default_variant(args.variant, args.weights)
    step = Steps(3 + recipe.steps() + bool(args.engine), "crossformer-export")
    t0 = time.perf_counter()
    step("loading model")
    label = weights_label(args.weights, args.seed)
    if args.task == "seg":
        model = build_segmenter(variant, args.weights, args.head,
                                args.num_classes, grouping, return_logits=args.logits, seed=args.seed)
        args.head = model.seg_cfg.head  # read off the checkpoint: the default name says it
        info = segmenter_info(model, label, size, args.static is None, args.batch, variant or _name(model))
    elif args.task == "det":
        model = build_detector(variant, args.weights, args.num_classes, seed=args.seed, arch=args.arch)
        info = detector_info(model, label, scale, args.batch, variant or _name(model))
        args.head = info.head  # retinanet: in the default name
        size = tuple(info.input_size)
        if args.weights is None:
            print(f"warning: no --weights: an untrained {model.det_cfg.label} (seed {args.seed}), whose detections "
                  "are meaningless; pass the authors' MMDetection checkpoint with --weights", file=sys.stderr)
    else:
        model = build_model(variant, args.weights, args.mode, args.num_classes, seed=args.seed)
        info = ModelInfo(variant=variant or _name(model), mode=args.mode, num_classes=model.num_classes,
                         weights=label, input_size=size, dynamic=args.static is None, batch=args.batch,
                         crop_ratio=args.crop_ratio)
    named = args.output is None
    if named:  # the variant may come from the checkpoint: the name waits for the model
        args.output = check_output_path(default_output(info.variant, args, size))
    explain = (lambda line: print(line, file=sys.stderr)) if args.explain else None
    proto = recipe_build(model, info, recipe, args.opset, explain, step)
    step("checking and writing")
    save_onnx(proto, args.output)
    if args.engine:
        step("building the TensorRT engine")
        build_engine(args.output, args.engine, profiles, progress=step)
    step.close()
    shape = f"{args.batch or 'B'}x3x{size[0]}x{size[1]}" if args.static else f"{args.batch or 'B'}x3xHxW"
    what = (f"{info.head} segmenter" if args.task == "seg" else f"{info.head} detector, {info.num_classes} classes, "
            f"scale {info.scale[0]}x{info.scale[1]}" if args.task == "det" else args.mode)
    print(f"wrote {args.output} ({info.variant}, {what}, {recipe.precision}, target {args.target}, input {shape}, "
          f"{time.perf_counter() - t0:.1f} s)" + (f"; engine {args.engine}" if args.engine else ""), file=sys.stderr)
    if args.task in _INT8_NOTES and recipe.precision == "int8":  # the user must hear it before deploying the graph
        mode, measured, note, warning = _INT8_NOTES[args.task]
        print(note if (recipe.int8.placement or default_placement(mode)) == measured else warning, file=sys.stderr)
    if named:
        print(args.output)
    return 0


def _recipe(args: argparse.Namespace, max_size: tuple[int, int] | None) -> Recipe:
    int8 = None
    if args.int8:
        int8 = Int8Options(args.calib, count=args.calib_count, method=args.calib_method,
                           size=parse_size(args.calib_size) if args.calib_size else None, cache_path=args.calib_cache,
                           quantize_head=args.quantize_head,
                           scheme=None if args.int8_scheme == "auto" else args.int8_scheme,
                           placement=args.int8_placement)
    precision = "fp16" if args.fp16 else "int8" if args.int8 else "fp32"
    return Recipe(args.target, precision, fp16_io=args.fp16_io, max_size=max_size, int8=int8)


def default_output(variant: str, args: argparse.Namespace, size: tuple[int, int]) -> str:
    """crossformer-s.onnx, crossformer-s-backbone-int8-openvino-224x224-b1.onnx: the variant, then only what
    differs from the defaults, always in the order mode, precision, target, static size, batch."""
    parts = ["crossformer", variant]
    if args.task == "seg":
        parts = ["crossformer", "seg", args.head, variant] + (["logits"] if args.logits else [])
    elif args.task == "det":
        parts = ["crossformer", "det", args.head, variant]
    elif args.mode not in (None, "classifier"):  # None: not given (run() fills it in)
        parts.append(args.mode)
    if args.fp16:
        parts.append("fp16io" if args.fp16_io else "fp16")
    elif args.int8:
        parts.append("int8")
    if args.target != "plain":
        parts.append(args.target)
    if args.static:
        parts.append(f"{size[0]}x{size[1]}")
    if args.batch:
        parts.append(f"b{args.batch}")
    return "-".join(parts) + ".onnx"


def parse_grouping(text: str) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """"14,14,7,7/16,8,2,1" -> ((14, 14, 7, 7), (16, 8, 2, 1))."""
    try:
        groups, intervals = (tuple(int(v) for v in part.split(",")) for part in text.split("/"))
        if min(groups + intervals) < 1:
            raise ValueError
    except ValueError:
        raise UsageError(f"--grouping {text!r} is not G,G,G,G/I,I,I,I (positive integers, e.g. "
                         "14,14,7,7/16,8,2,1)") from None
    return groups, intervals


def _name(model) -> str:
    cfg = model.cfg
    return cfg.name if cfg.name != "custom" else f"custom-{cfg.embed_dim}-{'-'.join(map(str, cfg.depths))}"


def main(argv=None) -> int:
    return run_main("crossformer-export", run, parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
