"""FP16 and INT8 whole detectors (RetinaNet-S, Mask R-CNN-S, 80 classes) against their fp32 graph, on ONNX Runtime
(and OpenVINO with --openvino): the share of the fp32 graph's detections the lowered graph answers (issue [L]'s bars:
FP16 >= 98 %, INT8 >= 95 %).

    python benchmarks/det_precision.py [--arch retinanet,mask_rcnn] [--variant s] [--threads 2] [--openvino] \\
        [--json benchmarks/det_precision.json]

Weights: trained-like (seed 0): the backbone as ``model/synthetic.trained_like`` leaves a classifier's (LayerNorms
and biases off their init, a trained-size position bias), the heads' last layers rescaled as
benchmarks/det_vs_mmdet.py does on the first photo (RetinaNet: class logits spread 1.5 around a raised bias of -4,
deltas 0.3; Mask R-CNN: box logits spread 2, deltas 1, mask logits 2 around 0), so that the photos have a trained
detector's tens of detections over 0.3 and no sigmoid saturates.
Graphs: exported as ``crossformer-export --task det`` does (export/recipe.py, target onnxruntime), FP16 and INT8
by the same recipe (INT8: ``--calib samples/``, the three photos through the detector's own resize).
Cases: the three photos of samples/ and their mirror images, each through mmdet's test pipeline at (1333, 800)
(800x1203 / 800x1199 in 800x1216 inputs), one at a time. The mirror images were not calibrated on.
Rule: every fp32 detection with score >= 0.3, matched one-to-one by the lowered graph's with the same label,
IoU >= 0.9 and a score within 0.05 (runtime/parity.py ``DET_PRECISION_RULE``); the fp32 rule (IoU >= 0.99, score
within 1e-4) is printed beside it. Mask R-CNN: the mean IoU of the matched detections' masks, pasted into the photo.
"""
from __future__ import annotations

import argparse
import collections
import dataclasses
import json
import os
import re
import sys
import tempfile
import time

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
SAMPLES = os.path.join(ROOT, "samples")
# --int8-float: the INT8 variant that keeps the neck and the heads' last layers (class logits, deltas, mask logits)
# float, as the issue asks to try when INT8 misses its bar
FLOAT_SCOPES = {"retinanet": ("/neck/", "/bbox_head/retina_cls", "/bbox_head/retina_reg"),
                "mask_rcnn": ("/neck/", "/rpn_head/rpn_cls", "/rpn_head/rpn_reg", "/bbox_head/fc_cls",
                              "/bbox_head/fc_reg", "/mask_head/conv_logits")}


def trained_like_detector(arch: str, variant: str, x: torch.Tensor, cls_bias: float = -4.0):
    """The seed-0 detector with a trained-like backbone and heads scaled on ``x`` (module docstring); RetinaNet's
    class bias ``cls_bias``."""
    from det_vs_mmdet import _calibrate_mask_rcnn

    from crossformer_deploy.model.det import build_detector
    from crossformer_deploy.model.synthetic import trained_like

    model = build_detector(variant, seed=0, arch=arch)
    trained_like(model.backbone, seed=0)
    if arch == "mask_rcnn":
        return _calibrate_mask_rcnn(model, x).eval()
    with torch.no_grad():  # benchmarks/det_vs_mmdet.calibrated_model's RetinaNet rule
        _, cls, reg = model.raw(x)
        head = model.bbox_head
        head.retina_cls.weight.mul_(1.5 / torch.cat([c.flatten() for c in cls]).std())
        head.retina_cls.bias.fill_(cls_bias)
        head.retina_reg.weight.mul_(0.3 / torch.cat([r.flatten() for r in reg]).std())
        head.retina_reg.bias.zero_()
    return model.eval()


def cases() -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(name, image [1, 3, H, W], image_size [1, 4]) per photo and per mirrored photo."""
    from PIL import ImageOps

    from crossformer_deploy.base.det_preprocess import det_batch, det_preprocess
    from crossformer_deploy.base.images import list_images, load_image

    out = []
    for p in list_images([SAMPLES]):
        im = load_image(p)
        for name, img in ((os.path.basename(p), im), (os.path.basename(p) + " mirrored", ImageOps.mirror(im))):
            image, size = det_batch([det_preprocess(img)])
            out.append((name, image, size))
    return out


def float_nodes(proto, precision: str) -> dict:
    """INT8: the network's convs / matmuls left float, by scope; FP16: the network op types kept fp32."""
    from crossformer_deploy.export.precision.det_region import in_network

    if precision == "fp16":  # fp16.py's FP32_OP_TYPES inside the network, and all of the post-processing
        from crossformer_deploy.export.precision.fp16 import FP32_OP_TYPES

        kept = collections.Counter(n.op_type for n in proto.graph.node if in_network(n.name)
                                   and n.op_type in FP32_OP_TYPES)
        post = collections.Counter(n.op_type for n in proto.graph.node if not in_network(n.name)
                                   and n.op_type in ("TopK", "NonMaxSuppression", "RoiAlign", "Exp", "Sigmoid"))
        return {"fp32 in the network": dict(kept), "fp32 post-processing (some ops)": dict(post)}
    producer = {o: n.op_type for n in proto.graph.node for o in n.output}
    compute = [n for n in proto.graph.node if n.op_type in ("MatMul", "Conv", "Gemm", "ConvTranspose")]
    quantized = [n for n in compute if any(producer.get(i) == "DequantizeLinear" for i in n.input)]
    left = collections.Counter(re.sub(r"_\d+$", "", re.sub(r"\.\d+", ".N", n.name.rsplit("/", 1)[0])) + f" {n.op_type}"
                               for n in compute if n not in quantized)
    return {"quantized": len(quantized), "float": dict(sorted(left.items()))}


def runner(engine: str, path: str, threads: int):
    from crossformer_deploy.runtime.onnxruntime_runner import OnnxRuntimeRunner
    from crossformer_deploy.runtime.openvino_runner import OpenVINORunner

    cls = OnnxRuntimeRunner if engine == "onnxruntime" else OpenVINORunner
    return cls(path, threads=threads)


def score(ref: dict, got: dict, image_size: np.ndarray) -> dict:
    """Matched counts under the precision rule and the fp32 rule; Mask R-CNN's mask IoUs of the matches."""
    from crossformer_deploy.runtime.detect import paste_masks
    from crossformer_deploy.runtime.parity import DET_PRECISION_RULE, mask_iou, match_pairs

    pairs, counted = match_pairs(ref["dets"][0], ref["labels"][0], got["dets"][0], got["labels"][0],
                                 **DET_PRECISION_RULE)
    strict, _ = match_pairs(ref["dets"][0], ref["labels"][0], got["dets"][0], got["labels"][0])
    out = {"reference": counted, "matched": len(pairs), "matched_fp32_rule": len(strict)}
    if "masks" in got and pairs:
        r, g = [a for a, _ in pairs], [b for _, b in pairs]
        size = (int(image_size[0, 2]), int(image_size[0, 3]))
        rm = paste_masks(ref["masks"][0][r], ref["dets"][0][r, :4], size)
        gm = paste_masks(got["masks"][0][g], got["dets"][0][g, :4], size)
        out["mask_ious"] = [mask_iou(a, b) for a, b in zip(rm, gm)]
    return out


def measure(arch: str, cls_bias: float, args: argparse.Namespace, work: str) -> list[dict]:
    from crossformer_deploy.export.det_info import detector_info
    from crossformer_deploy.export.onnx_export import save_onnx, to_onnx
    from crossformer_deploy.export.recipe import Int8Options, Recipe, apply

    inputs = cases()
    model = trained_like_detector(arch, args.variant, torch.from_numpy(inputs[0][1]), cls_bias)
    t0 = time.perf_counter()
    traced = to_onnx(model, detector_info(model, "trained-like seed=0"))
    calib = Int8Options(SAMPLES, count=3, progress=False, cache_path=os.path.join(work, f"{arch}{cls_bias}.json"))
    recipes = {"fp32": Recipe(args.target), "fp16": Recipe(args.target, "fp16"),
               "int8": Recipe(args.target, "int8", int8=calib)}
    if args.int8_float:
        recipes["int8 float neck+head outputs"] = Recipe(args.target, "int8", int8=dataclasses.replace(
            calib, float_scopes=FLOAT_SCOPES[arch], cache_path=os.path.join(work, f"{arch}{cls_bias}_float.json")))
    paths, notes = {}, {}
    for prec, recipe in recipes.items():
        t1 = time.perf_counter()
        proto = apply(traced, recipe)
        paths[prec] = os.path.join(work, f"{arch}_{len(paths)}.onnx")
        save_onnx(proto, paths[prec])
        notes[prec] = float_nodes(proto, recipe.precision) if prec != "fp32" else {}
        print(f"{arch} {prec}: built in {time.perf_counter() - t1:.0f} s {notes[prec]}", flush=True)
    print(f"{arch}: graphs in {time.perf_counter() - t0:.0f} s", flush=True)
    rows = []
    for engine in ("onnxruntime", "openvino") if args.openvino else ("onnxruntime",):
        with runner(engine, paths["fp32"], args.threads) as r:
            refs = [r.run({"image": x, "image_size": s}) for _, x, s in inputs]
        for prec in [k for k in recipes if k != "fp32"]:
            per_case, t1 = [], time.perf_counter()
            with runner(engine, paths[prec], args.threads) as r:
                for (name, x, s), ref in zip(inputs, refs):
                    got = r.run({"image": x, "image_size": s})
                    assert got["dets"].dtype == np.float32 and got["labels"].dtype == np.int64
                    per_case.append({"case": name, "input": list(x.shape[2:]), **score(ref, got, s)})
            counted = sum(c["reference"] for c in per_case)
            matched = sum(c["matched"] for c in per_case)
            strict = sum(c["matched_fp32_rule"] for c in per_case)
            ious = [v for c in per_case for v in c.pop("mask_ious", [])]
            row = {"arch": arch, "variant": args.variant, "cls_bias": cls_bias if arch == "retinanet" else None,
                   "precision": prec, "engine": engine, "reference": counted,
                   "matched": matched, "rate": matched / counted if counted else None,
                   "matched_fp32_rule": strict, "mask_iou_mean": float(np.mean(ious)) if ious else None,
                   "mask_iou_min": float(np.min(ious)) if ious else None, "cases": per_case, **notes[prec]}
            rows.append(row)
            masks = f", mask IoU mean {row['mask_iou_mean']:.4f} min {row['mask_iou_min']:.4f}" if ious else ""
            each = ", ".join(f"{c['matched']}/{c['reference']}" for c in per_case)
            rate = 100 * matched / max(counted, 1)
            print(f"{arch} (bias {row['cls_bias']}) {prec} {engine}: matched {matched}/{counted} = {rate:.2f} % "
                  f"(fp32 rule {strict}/{counted}){masks}; per case {each} ({time.perf_counter() - t1:.0f} s)",
                  flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default="retinanet,mask_rcnn")
    ap.add_argument("--variant", default="s")
    ap.add_argument("--target", default="onnxruntime", choices=["plain", "onnxruntime", "openvino"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--openvino", action="store_true", help="also run the graphs on OpenVINO (f32 hint)")
    ap.add_argument("--cls-bias", default="-4", help="RetinaNet's class bias, a comma list (default -4, as "
                    "det_vs_mmdet.py: every photo then has more than 100 candidates over 0.3)")
    ap.add_argument("--int8-float", action="store_true", help="also the INT8 graph with the neck and the heads' last "
                    "layers float (FLOAT_SCOPES)")
    ap.add_argument("--json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from crossformer_deploy.runtime.parity import DET_MATCH, DET_PRECISION_RULE

    report = {"command": "python benchmarks/det_precision.py " + " ".join(sys.argv[1:]),
              "rule": {"score_min": 0.3, **DET_PRECISION_RULE}, "bars": {k: DET_MATCH[k] for k in ("fp16", "int8")},
              "rows": []}
    with tempfile.TemporaryDirectory(prefix="det-precision-") as work:
        for arch in args.arch.split(","):
            for bias in args.cls_bias.split(",") if arch == "retinanet" else ["-4"]:
                report["rows"] += measure(arch, float(bias), args, work)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    sys.path.insert(0, ROOT)
    sys.path.insert(0, HERE)
    main()
