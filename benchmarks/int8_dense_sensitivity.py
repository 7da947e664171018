"""INT8 sensitivity of the dense models (issues [K], [L]): which layer groups cost the agreement with fp32.

    python benchmarks/int8_dense_sensitivity.py det [--configs all,float=stage0,int8=mlp,...] \\
        [--calib plain,aug32] [--methods minmax,percentile] [--schemes reduced-range,symmetric] [--openvino] \\
        [--eval plain|aug12] [--json benchmarks/int8_dense_sensitivity_det.json]
    python benchmarks/int8_dense_sensitivity.py seg --models upernet-s,fpn-s [--held-out chelsea.jpg] [...same]
    python benchmarks/int8_dense_sensitivity.py speed --models upernet-s,fpn-s,retinanet-s --configs all,int8=mlp \\
        --engines onnxruntime,openvino [--repeats 5]

det: RetinaNet-S (or --arch mask_rcnn), trained-like as benchmarks/det_precision.py builds it (class bias -4),
target onnxruntime, judged on the three photos of samples/ and their mirror images: the share of the fp32 graph's
detections (score >= 0.3) matched under runtime/parity.DET_PRECISION_RULE (bar 95 %).
seg: UPerNet-S / FPN-S as ``seg_vs_mmseg.py holdout --head-fit probe --stat-crops 16`` builds them (each photo held
out in turn: BN statistics, ``conv_seg`` and the INT8 ranges from the other two), target plain; the held-out photo's
pixels = fp32 PyTorch (bar 98 %).

One calibration per (model, --calib, --method): the ranges of every tensor the ``all`` placement quantizes (a
tensor's range does not depend on which others are quantized), then one Q/DQ graph per (--scheme, config) from
those ranges (int8.quantize_with_ranges, no inference). A config is ``all`` (the ``all`` placement), ``fp32``
(no Q/DQ, sanity), ``float=G1+G2`` (those groups float, the rest as ``all``), ``int8=G1+G2`` (only those groups
int8) or a placement name (``placement:NAME``). Groups: see GROUPS. --calib: ``plain`` = the photos as the tools
calibrate (det: samples/, seg: the two fitting photos), ``augN`` = those plus N crops / flips / colour changes
of them (int8_schemes.augment).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import tempfile
import time

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
SAMPLES = os.path.join(ROOT, "samples")
# layer groups, by exporter node name (a node is in a group when the pattern is found in its name)
GROUPS = {
    "patch_embed": r"^/patch_embed/",
    **{f"stage{i}": rf"^/layers\.{i}/blocks" for i in range(4)},
    "downsample": r"^/layers\.\d+/downsample/",
    "qkv": r"/attn/qkv",
    "proj": r"/attn/proj",
    "mlp": r"/mlp/fc[12]",
    "fc1": r"/mlp/fc1",
    "fc2": r"/mlp/fc2",
    "mlp_late": r"^/layers\.[123]/blocks\.\d+/mlp/fc[12]",  # the MLPs of stages 2-4 (stage 1's float)
    "attn_matmuls": None,  # the two activation x activation matmuls of every attention (by their inputs)
    "backbone": r"^/(patch_embed|layers\.)",
    "neck": r"^/neck/",
    "head": r"^/(bbox_head|rpn_head|mask_head|decode_head)/",
    "head_out": r"/(retina_cls|retina_reg|rpn_cls|rpn_reg|fc_cls|fc_reg|conv_logits)",
    "ppm": r"^/decode_head/(psp_modules|bottleneck)/",
    "laterals": r"^/(decode_head|neck)/lateral_convs",
    "fpn_convs": r"^/(decode_head|neck)/fpn_convs",
    "fpn_bottleneck": r"^/decode_head/fpn_bottleneck/",
    "scale_heads": r"^/decode_head/scale_heads",
}


def group_nodes(proto, group: str) -> set[str]:
    """The quantizable nodes (MatMul / Conv / Gemm) of ``group``."""
    from crossformer_deploy.export.precision.int8 import QUANTIZED_OPS

    weights = {t.name for t in proto.graph.initializer}
    nodes = [n for n in proto.graph.node if n.op_type in QUANTIZED_OPS]
    if group == "attn_matmuls":
        return {n.name for n in nodes if n.op_type == "MatMul" and not any(i in weights for i in n.input)
                and "/attn/" in n.name}
    if group not in GROUPS:
        raise SystemExit(f"unknown group {group!r}; choose {', '.join(GROUPS)}")
    return {n.name for n in nodes if re.search(GROUPS[group], n.name)}


def exclusion(proto, config: str, size) -> list[str] | None:
    """The nodes ``config`` keeps float (None: no Q/DQ at all)."""
    from crossformer_deploy.export.precision.int8 import QUANTIZED_OPS, excluded_nodes
    from crossformer_deploy.export.precision.placement import placement

    if config == "fp32":
        return None
    base = excluded_nodes(proto, size=size)
    if config == "all":
        return base
    if config.startswith("placement:"):
        p = placement(config.split(":", 1)[1])
        return excluded_nodes(proto, quantize_attention=p.quantize_attention, size=size,
                              float_stages=p.float_stages, int8_only=p.int8_only)
    kind, groups = config.split("=", 1)
    chosen = set().union(*(group_nodes(proto, g) for g in groups.split("+")))
    if kind == "float":
        return sorted(set(base) | chosen)
    if kind == "int8":
        every = {n.name for n in proto.graph.node if n.op_type in QUANTIZED_OPS}
        return sorted(set(base) | (every - chosen))
    raise SystemExit(f"bad config {config!r}")


def calibrate_all(proto, folder: str, count: int, method: str, size) -> dict:
    """Ranges of every tensor the ``all`` placement quantizes."""
    from crossformer_deploy.export.onnx_export import read_info
    from crossformer_deploy.export.precision import calibration
    from crossformer_deploy.export.precision.int8 import excluded_nodes, quantized_inputs

    images = calibration.CalibrationSet.from_folder(folder, read_info(proto), count, size, 0)
    tensors = quantized_inputs(proto, excluded_nodes(proto, size=size))
    return calibration.calibrate(proto, images, method, tensors, progress=False)


def lowered(proto, ranges: dict, method: str, exclude: list[str] | None, scheme: str):
    """The Q/DQ graph for ``exclude`` (None: ``proto`` itself), with an int8 precision in its metadata."""
    from crossformer_deploy.export.onnx_export import read_info, set_metadata
    from crossformer_deploy.export.precision.int8 import quantize_with_ranges, quantized_inputs

    if exclude is None:
        return proto
    need = set(quantized_inputs(proto, exclude))
    q = quantize_with_ranges(proto, {k: v for k, v in ranges.items() if k in need}, method, exclude, scheme)
    extra = {**read_info(proto).extra, "int8": {"scheme": scheme, "calibration": method}}
    set_metadata(q, {"precision": "int8", "extra": json.dumps(extra)})
    return q


def counts(proto, exclude: list[str] | None) -> dict:
    from crossformer_deploy.export.precision.int8 import QUANTIZED_OPS, excluded_nodes

    every = [n.name for n in proto.graph.node if n.op_type in QUANTIZED_OPS]
    base = set(excluded_nodes(proto))
    quantizable = [n for n in every if n not in base]
    if exclude is None:
        return {"int8_nodes": 0, "float_extra": len(quantizable)}
    ex = set(exclude)
    return {"int8_nodes": sum(n not in ex for n in quantizable), "float_extra": sum(n in ex for n in quantizable)}


def calib_folder(work: str, kind: str, photos: list[str]) -> tuple[str, int]:
    """A folder with ``photos`` (+ N augmentations of them for ``augN``) and its image count."""
    d = os.path.join(work, f"calib_{kind}_{len(os.listdir(work))}")
    os.makedirs(d)
    for p in photos:
        shutil.copy(p, d)
    n = 0
    if kind.startswith("aug"):
        from int8_schemes import augment

        n = int(kind[3:])
        augment(d, d, n, seed=0, first_plain=False)
    elif kind != "plain":
        raise SystemExit(f"bad --calib {kind!r}")
    return d, len(photos) + n


def runners(path: str, engines: list[str], threads: int):
    from crossformer_deploy.runtime.onnxruntime_runner import OnnxRuntimeRunner
    from crossformer_deploy.runtime.openvino_runner import OpenVINORunner

    return {e: (OnnxRuntimeRunner if e == "onnxruntime" else OpenVINORunner)(path, threads=threads) for e in engines}


def sweep(proto, ranges_by_calib: dict, args, score, engines, tag: dict, work: str) -> list[dict]:
    """Every (calibration, scheme, config) graph of ``proto``, scored by ``score(runner) -> dict``."""
    from crossformer_deploy.export.onnx_export import save_onnx

    rows, done_fp32 = [], False
    size = tuple(args.size)
    for (calib, method), ranges in ranges_by_calib.items():
        for scheme in args.schemes.split(","):
            for config in args.configs.split(","):
                if config == "fp32" and done_fp32:  # no Q/DQ: the same graph for every calibration
                    continue
                done_fp32 |= config == "fp32"
                t0 = time.perf_counter()
                exclude = exclusion(proto, config, size)
                q = lowered(proto, ranges, method, exclude, scheme)
                path = os.path.join(work, "graph.onnx")
                save_onnx(q, path)
                for engine, r in runners(path, engines, args.threads).items():
                    with r:
                        res = score(r)
                    row = {**tag, "calib": calib, "method": method, "scheme": scheme, "config": config,
                           "engine": engine, **counts(proto, exclude), **res}
                    rows.append(row)
                    print(f"{tag} {calib} {method} {scheme} {config:>32} {engine:>11}: {res['rate']:.4%} "
                          f"({row['int8_nodes']} int8, {row['float_extra']} more float; "
                          f"{time.perf_counter() - t0:.0f} s)", flush=True)
    return rows


def det(args) -> list[dict]:
    from det_precision import cases, score, trained_like_detector

    from crossformer_deploy.export.det_info import detector_info
    from crossformer_deploy.export.onnx_export import save_onnx, to_onnx
    from crossformer_deploy.export.pipeline import run_pipeline
    inputs = cases()
    model = trained_like_detector(args.arch, args.variant, torch.from_numpy(inputs[0][1]), args.cls_bias)
    if args.eval != "plain":  # the same model, judged on other images
        inputs = held_out_cases(args.eval)
    proto = run_pipeline(to_onnx(model, detector_info(model, "trained-like seed=0")), "onnxruntime", None, None)
    rows = []
    with tempfile.TemporaryDirectory(prefix="int8-sens-det-") as work:
        fp32 = os.path.join(work, "fp32.onnx")
        save_onnx(proto, fp32)
        refs = {}
        for engine in args.engines.split(","):
            with runners(fp32, [engine], args.threads)[engine] as r:
                refs[engine] = [r.run({"image": x, "image_size": s}) for _, x, s in inputs]
        ranges = {}
        for calib in args.calib.split(","):
            folder, count = calib_folder(work, calib, sorted(
                os.path.join(SAMPLES, f) for f in os.listdir(SAMPLES) if f.endswith(".jpg")))
            for method in args.methods.split(","):
                t0 = time.perf_counter()
                ranges[(calib, method)] = calibrate_all(proto, folder, count, method, tuple(args.size))
                print(f"calibrated {calib} ({count} images) {method} in {time.perf_counter() - t0:.0f} s", flush=True)

        def scorer(r):
            ref = refs[r.name]
            per = [score(rf, r.run({"image": x, "image_size": s}), s) for (_, x, s), rf in zip(inputs, ref)]
            m, n = sum(c["matched"] for c in per), sum(c["reference"] for c in per)
            ious = [v for c in per for v in c.get("mask_ious", [])]  # Mask R-CNN: the matched detections' masks
            return {"matched": m, "reference": n, "rate": m / n,
                    **({"mask_iou_mean": float(np.mean(ious)), "mask_iou_min": float(np.min(ious))} if ious else {})}

        rows += sweep(proto, ranges, args, scorer, args.engines.split(","),
                      {"model": f"{args.arch}-{args.variant}", "cls_bias": args.cls_bias, "eval": args.eval}, work)
    return rows


def held_out_cases(kind: str) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """``augN``: N crops / flips / colour changes of the sample photos (int8_schemes.augment, seed 1: calibration's
    ``augN`` uses seed 0), through mmdet's test pipeline, as det_precision.cases gives the photos."""
    from int8_schemes import augment

    from crossformer_deploy.base.det_preprocess import det_batch, det_preprocess
    from crossformer_deploy.base.images import list_images, load_image

    if not kind.startswith("aug") or not kind[3:].isdigit():
        raise SystemExit(f"bad --eval {kind!r}: plain or augN")
    with tempfile.TemporaryDirectory(prefix="det-eval-") as d:
        augment(SAMPLES, d, int(kind[3:]), seed=1, first_plain=False)
        return [(os.path.basename(p), *det_batch([det_preprocess(load_image(p))])) for p in list_images([d])]


def seg(args) -> list[dict]:
    from seg_vs_mmseg import sample_photos, trained_like

    from crossformer_deploy.base.images import load_image
    from crossformer_deploy.base.seg_preprocess import seg_preprocess
    from crossformer_deploy.export.onnx_export import to_onnx
    from crossformer_deploy.export.pipeline import run_pipeline
    from crossformer_deploy.model.seg.factory import segmenter_info
    from crossformer_deploy.runtime.parity import pixel_agreement

    rows, photos = [], sample_photos()
    for name in args.models.split(","):
        for held in photos:
            if args.held_out and os.path.basename(held) not in args.held_out.split(","):
                continue
            others = [p for p in photos if p != held]
            model = trained_like(name, head_fit="probe", paths=others, stat_crops=args.stat_crops)
            x, ori = seg_preprocess(load_image(held))
            with torch.no_grad():
                ref = model(torch.from_numpy(x[None]), torch.tensor(ori))[0][0].numpy()
            proto = run_pipeline(to_onnx(model, segmenter_info(model, "trained-like", (512, 512))), "plain", None,
                                 None)
            with tempfile.TemporaryDirectory(prefix="int8-sens-seg-") as work:
                ranges = {}
                for calib in args.calib.split(","):
                    folder, count = calib_folder(work, calib, others)
                    for method in args.methods.split(","):
                        ranges[(calib, method)] = calibrate_all(proto, folder, count, method, (512, 512))

                def scorer(r, x=x, ori=ori, ref=ref):
                    cm = r.run({"image": x[None], "output_size": np.array(ori)})["class_map"][0]
                    return {"rate": pixel_agreement(ref, cm), "pixels": int(ref.size)}

                rows += sweep(proto, ranges, args, scorer, args.engines.split(","),
                              {"model": name, "held_out": os.path.basename(held)}, work)
    # pooled over the held-out photos, weighted by pixels
    keys = sorted({(r["model"], r["calib"], r["method"], r["scheme"], r["config"], r["engine"]) for r in rows})
    for k in keys:
        mine = [r for r in rows if (r["model"], r["calib"], r["method"], r["scheme"], r["config"], r["engine"]) == k]
        if len(mine) > 1:
            pooled = sum(r["rate"] * r["pixels"] for r in mine) / sum(r["pixels"] for r in mine)
            rows.append({**{f: v for f, v in zip(("model", "calib", "method", "scheme", "config", "engine"), k)},
                         "held_out": "pooled", "rate": pooled, "pixels": sum(r["pixels"] for r in mine)})
            print(f"{k}: pooled {pooled:.4%}", flush=True)
    return rows


def speed(args) -> list[dict]:
    """fp32 against INT8 ``all`` and the --configs graphs (seeded random weights: latency does not depend on them),
    each model at 512x512 b1 (seg) or RetinaNet-S at 800x1216 b1 (det), ORT and OpenVINO, interleaved. The graphs
    are built first; the timing holds /tmp/BENCH_BUSY (created here, removed after)."""
    from crossformer_deploy.bench.timing import interleaved
    from crossformer_deploy.export.onnx_export import save_onnx, to_onnx
    from crossformer_deploy.export.pipeline import run_pipeline

    work = tempfile.mkdtemp(prefix="int8-sens-speed-")
    runs, feeds = {}, {}
    for name in args.models.split(","):
        if name == "retinanet-s":
            from det_precision import cases

            from crossformer_deploy.export.det_info import detector_info
            from crossformer_deploy.model.det import build_detector

            model = build_detector("s", seed=0, arch="retinanet").eval()
            proto = to_onnx(model, detector_info(model, "seed 0"))
            _, x, s = cases()[0]
            feeds[name], size, target = {"image": x, "image_size": s}, (800, 1216), "onnxruntime"
        else:
            from seg_vs_mmseg import split

            from crossformer_deploy.model.seg import build_segmenter
            from crossformer_deploy.model.seg.factory import segmenter_info

            head, variant = split(name)
            model = build_segmenter(variant, head=head, return_logits=True, seed=0)
            proto = to_onnx(model, segmenter_info(model, "seed 0", (512, 512)))
            x = np.random.default_rng(0).standard_normal((1, 3, 512, 512), dtype=np.float32)
            feeds[name], size, target = {"image": x, "output_size": np.array([512, 512])}, (512, 512), "plain"
        proto = run_pipeline(proto, target, None, None)
        ranges = calibrate_all(proto, SAMPLES, 3, "minmax", size)
        for config in ["fp32", *args.configs.split(",")]:
            path = os.path.join(work, f"{name}_{config.replace('=', '_').replace('+', '_')}.onnx")
            save_onnx(lowered(proto, ranges, "minmax", exclusion(proto, config, size), args.schemes.split(",")[0]),
                      path)
            for engine, r in runners(path, args.engines.split(","), args.threads).items():
                runs[(name, config, engine)] = r.load()
        print(f"built {name}", flush=True)
    while os.path.exists("/tmp/BENCH_BUSY"):
        time.sleep(20)
    open("/tmp/BENCH_BUSY", "w").close()
    try:
        times = interleaved({k: (lambda r=r, f=feeds[k[0]]: r.run(f)) for k, r in runs.items()},
                            repeats=args.repeats, warmup=1, pause=0.2)
    finally:
        os.remove("/tmp/BENCH_BUSY")
    rows = [{"model": k[0], "config": k[1], "engine": k[2], "median_ms": t.median_ms, "p90_ms": t.p90_ms,
             "runs": t.runs, "threads": args.threads} for k, t in times.items()]
    for r in rows:
        print(f"{r['model']:>12} {r['config']:>20} {r['engine']:>11}: {r['median_ms']:8.1f} ms (p90 {r['p90_ms']:.1f})")
    shutil.rmtree(work, ignore_errors=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("task", choices=["det", "seg", "speed"])
    ap.add_argument("--configs", default="all,fp32")
    ap.add_argument("--calib", default="plain", help="plain and/or augN, comma list")
    ap.add_argument("--methods", default="minmax", help="minmax, entropy, percentile (comma list)")
    ap.add_argument("--schemes", default="reduced-range", help="reduced-range, symmetric (comma list)")
    ap.add_argument("--engines", default="onnxruntime", help="onnxruntime and/or openvino")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--arch", default="retinanet", help="(det) retinanet or mask_rcnn")
    ap.add_argument("--variant", default="s")
    ap.add_argument("--cls-bias", type=float, default=-4.0, help="(det) RetinaNet's class bias")
    ap.add_argument("--eval", default="plain", help="(det) judged on: plain (the photos and their mirror images) "
                    "or augN (N crops / flips / colour changes of them, never calibrated on)")
    ap.add_argument("--models", default="upernet-s,fpn-s", help="(seg)")
    ap.add_argument("--held-out", default="", help="(seg) only these photos in turn, e.g. chelsea.jpg")
    ap.add_argument("--stat-crops", type=int, default=16, help="(seg) as seg_vs_mmseg.py holdout --stat-crops")
    ap.add_argument("--repeats", type=int, default=5, help="(speed) interleaved rounds")
    ap.add_argument("--json")
    args = ap.parse_args()
    args.size = (800, 1216) if args.task == "det" else (512, 512)
    torch.set_num_threads(args.threads)
    rows = {"det": det, "seg": seg, "speed": speed}[args.task](args)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"command": "python benchmarks/int8_dense_sensitivity.py " + " ".join(sys.argv[1:]),
                       "rows": rows}, f, indent=1)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    sys.path.insert(0, ROOT)
    sys.path.insert(0, HERE)
    main()
