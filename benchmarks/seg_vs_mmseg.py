"""Whole segmenters at full size against MMSegmentation 1.2.2 + the authors' backbone, on PyTorch, ONNX Runtime and
OpenVINO; FP16 / INT8 agreement; latency.

    CROSSFORMER_OFFICIAL=/tmp/crossformer-official python benchmarks/seg_vs_mmseg.py parity \\
        [--models upernet-s,fpn-s,upernet-b,fpn-b,upernet-pp-s2,fpn-pp-s2] [--json benchmarks/seg_vs_mmseg.json]
    python benchmarks/seg_vs_mmseg.py precision [--models upernet-s,fpn-s]
    python benchmarks/seg_vs_mmseg.py holdout [--models upernet-s,fpn-s] [--head-fit probe] [--float-stages 0,1]
        [--calib-augment 16] [--calib-method minmax] [--precisions fp16,int8] [--engines onnxruntime]
        [--int8-variants default,split,float-bottleneck]
    python benchmarks/seg_vs_mmseg.py latency [--threads 2 --repeats 10]

parity, per model: our Segmentor with trained-like weights (model/seg/synthetic.py: BN statistics from the three
sample photos, logits spreading a few units) is saved as an mmseg checkpoint; the oracle venv (this file again,
``oracle`` role, run by /work/oracle-venv/bin/python) loads it strictly into mmseg's EncoderDecoder built from the
authors' config values with the authors' own backbone, and runs mmseg's test path (``predict``: whole inference,
logits to the input size, then to the original size). Here the same checkpoint is read back by
``create_segmenter``, exported once as ONE dynamic ONNX graph (at 512x512), and run at every case on PyTorch,
ONNX Runtime and OpenVINO (f32), 2 threads each. Cases: 512x512; 512x704 with logits back to 512x683 (a 512x683
image after AlignResize: stage-4 map 16x22); 384x640; a batch of two 384x640. Max |logits - mmseg| and the share
of pixels whose class agrees with mmseg's.

precision: FP16 and INT8 (calibrated on samples/*.jpg at 512x512) graphs of the same models, judged on the three
sample photos through the real pipeline (AlignResize, original size out): pixel agreement and mIoU of each map
scored against the fp32 PyTorch map, and which ops stayed float.

holdout: INT8 on each photo with the BN statistics, the fitted head and the calibration from the other two.

latency: UPerNet-S and FPN-S fp32 dynamic graphs at 512x512, batch 1, ONNX Runtime and OpenVINO, interleaved.
"""
from __future__ import annotations

import argparse
import collections
import glob
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
ORACLE_PY = os.environ.get("CROSSFORMER_ORACLE_PYTHON", "/work/oracle-venv/bin/python")
MODELS = ["upernet-s", "fpn-s", "upernet-b", "fpn-b", "upernet-pp-s2", "fpn-pp-s2"]
# holdout --int8-variants: Int8Options on top of the calibration's (docs/segmentation.md, "INT8 and UPerHead's
# concats"): split = Conv(Concat) split per input (passes/split_concat_conv.py, per-branch scales);
# float-bottleneck = UPerHead's PPM bottleneck conv kept float; float-fpn-bottleneck = its fpn_bottleneck conv
# default = the export's own placement (mlp-fc1 for segmenters since 2026-12-06); all = every layer int8 (the
# default before, which every other variant builds on)
INT8_VARIANTS = {"default": {}, "all": {"placement": "all"}, "split": {"split_concat_convs": True, "placement": "all"},
                 "float-bottleneck": {"float_scopes": ("/decode_head/bottleneck/",), "placement": "all"},
                 "float-fpn-bottleneck": {"float_scopes": ("/decode_head/fpn_bottleneck/",), "placement": "all"},
                 "float-both": {"float_scopes": ("/decode_head/bottleneck/", "/decode_head/fpn_bottleneck/"),
                                "placement": "all"}}
# (batch, input H, W, original H0, W0)
CASES = [(1, 512, 512, 512, 512), (1, 512, 704, 512, 683), (1, 384, 640, 384, 640), (2, 384, 640, 384, 640)]


def split(name: str) -> tuple[str, str]:
    head, variant = name.split("-", 1)
    return head, variant


# ----------------------------------------------------------------------------------------------- oracle side
def oracle(folder: str) -> None:
    """(oracle venv) mmseg's logits for every case of ``folder``/spec.json, from ``folder``/ckpt.pth."""
    sys.path.insert(0, os.path.join(ROOT, "tests", "fixtures", "mm_oracle"))
    import oracle_seg

    spec = json.load(open(os.path.join(folder, "spec.json")))
    torch.set_num_threads(spec["threads"])
    head, variant = split(spec["model"])
    sd = torch.load(os.path.join(folder, "ckpt.pth"), map_location="cpu", weights_only=True)["state_dict"]
    cfg = oracle_seg.model_dict(head, variant, spec["num_classes"], aux=False)
    inputs = torch.load(os.path.join(folder, "inputs.pt"), weights_only=True)
    for i, (*_, h0, w0) in enumerate(spec["cases"]):
        model = oracle_seg.build(cfg, sd)  # strict: every key of our checkpoint is mmseg's, and nothing else
        t0 = time.perf_counter()
        logits = oracle_seg.predict(model, inputs[i], (h0, w0))
        np.save(os.path.join(folder, f"oracle_{i}.npy"), logits.numpy())
        print(f"  oracle {spec['model']} case {i} {tuple(logits.shape)} {time.perf_counter() - t0:.1f} s", flush=True)


# ----------------------------------------------------------------------------------------------- our side
def sample_photos() -> list[str]:
    return sorted(glob.glob(os.path.join(ROOT, "samples", "*.jpg")))


def sample_batch(paths: list[str] | None = None) -> torch.Tensor:
    """The sample photos (default all three) AlignResized (as the pipeline feeds them), cropped to a common size."""
    from crossformer_deploy.base.images import load_image
    from crossformer_deploy.base.seg_preprocess import seg_preprocess

    xs = [seg_preprocess(load_image(p))[0] for p in (paths or sample_photos())]
    h, w = min(x.shape[1] for x in xs), min(x.shape[2] for x in xs)
    return torch.from_numpy(np.stack([x[:, :h, :w] for x in xs]))


def crops(x: torch.Tensor, count: int, seed: int = 0) -> torch.Tensor:
    """``count`` random crops (half to all of each side), mirrored at random, of the photos in ``x`` [N, 3, H, W],
    resized back to H x W: more scenes for BN statistics than N photos give."""
    import torch.nn.functional as F

    g = torch.Generator().manual_seed(seed)
    n, _, h, w = x.shape
    out = []
    for _ in range(count):
        i, s = int(torch.randint(n, (1,), generator=g)), 0.5 + 0.5 * float(torch.rand(1, generator=g))
        ch, cw = int(h * s), int(w * s)
        top, left = int(torch.randint(h - ch + 1, (1,), generator=g)), int(torch.randint(w - cw + 1, (1,), generator=g))
        c = x[i:i + 1, :, top:top + ch, left:left + cw]
        if float(torch.rand(1, generator=g)) < 0.5:
            c = c.flip(-1)
        out.append(F.interpolate(c, size=(h, w), mode="bilinear", align_corners=False))
    return torch.cat(out)


def trained_like(name: str, seed: int = 0, head_fit: str = "scaled", paths: list[str] | None = None,
                 stat_crops: int = 0):
    """``head_fit`` "scaled": a random ``conv_seg`` scaled to a trained model's logit spread; "probe": ``conv_seg``
    refitted on clusters of the model's own features (``fit_head``), a trained classifier's margins. ``paths``:
    the photos the BN statistics and the fit see (default all three). ``stat_crops``: BN statistics also from
    that many crops of them: the PPM's global-pool branch sees one pooled vector per image, and a variance from
    two or three of them is near zero, so an unseen photo's branch output comes out tens of times too large (72
    against about 1 on the UPerNet-S held-out photo), which no trained model's statistics would do."""
    from crossformer_deploy.model.seg import build_segmenter
    from crossformer_deploy.model.seg.synthetic import fit_head, trained_like_segmenter

    head, variant = split(name)
    model = build_segmenter(variant, head=head, return_logits=True, seed=seed)
    x = sample_batch(paths)
    with torch.no_grad():
        model = trained_like_segmenter(model, seed, torch.cat([x, crops(x, stat_crops, seed)]) if stat_crops else x)
    return fit_head(model, x, seed=seed) if head_fit == "probe" else model


def save_mmseg(model, path: str) -> None:
    torch.save({"meta": {"mmseg_version": "0.29.1", "note": "trained-like random weights (seg_vs_mmseg.py)"},
                "state_dict": model.state_dict()}, path)


def cpu_runners(path: str, threads: int) -> dict:
    """The graph on ONNX Runtime and OpenVINO (f32), the two CPU runtimes every role compares."""
    from crossformer_deploy.runtime.onnxruntime_runner import OnnxRuntimeRunner
    from crossformer_deploy.runtime.openvino_runner import OpenVINORunner

    return {"onnxruntime": OnnxRuntimeRunner(path, threads=threads), "openvino": OpenVINORunner(path, threads=threads)}


def export(model, path: str, **recipe) -> None:
    from crossformer_deploy.export.onnx_export import save_onnx, to_onnx
    from crossformer_deploy.export.recipe import Recipe, apply
    from crossformer_deploy.model.seg.factory import segmenter_info

    proto = to_onnx(model, segmenter_info(model, "trained-like", (512, 512)))
    if recipe:
        proto = apply(proto, Recipe(**recipe))
    save_onnx(proto, path)


def parity(args: argparse.Namespace) -> list[dict]:
    from crossformer_deploy.model.seg import create_segmenter
    from crossformer_deploy.runtime.parity import pixel_agreement

    rows = []
    for name in args.models.split(","):
        with tempfile.TemporaryDirectory(prefix="seg-vs-mmseg-") as d:
            t0 = time.perf_counter()
            save_mmseg(trained_like(name), os.path.join(d, "ckpt.pth"))
            g = torch.Generator().manual_seed(7)
            inputs = [torch.randn(b, 3, h, w, generator=g) for b, h, w, _, _ in CASES]
            torch.save(inputs, os.path.join(d, "inputs.pt"))
            json.dump({"model": name, "cases": CASES, "num_classes": 150, "threads": args.threads},
                      open(os.path.join(d, "spec.json"), "w"))
            env = {**os.environ, "PYTHONPATH": ""}
            subprocess.run([ORACLE_PY, os.path.abspath(__file__), "oracle", "--dir", d], check=True, env=env)
            model = create_segmenter(None, os.path.join(d, "ckpt.pth"), return_logits=True)  # strict read back
            onnx_path = os.path.join(d, "model.onnx")
            t1 = time.perf_counter()
            export(model, onnx_path)
            t_export = time.perf_counter() - t1
            engines = {"pytorch": None, **cpu_runners(onnx_path, args.threads)}
            for i, (b, h, w, h0, w0) in enumerate(CASES):
                ref = np.load(os.path.join(d, f"oracle_{i}.npy"))
                ref_map = ref.argmax(1)
                row = {"model": name, "label": model.seg_cfg.label, "input": f"{b}x{h}x{w}", "output": f"{h0}x{w0}"}
                for engine, runner in engines.items():
                    if runner is None:
                        with torch.no_grad():
                            cm, lg = (t.numpy() for t in model(inputs[i], torch.tensor([h0, w0])))
                    else:
                        out = runner.run({"image": inputs[i].numpy(), "output_size": np.array([h0, w0])})
                        cm, lg = out["class_map"], out["logits"]
                    row[f"{engine}_max_abs"] = float(np.abs(lg - ref).max())
                    row[f"{engine}_pixels"] = pixel_agreement(ref_map, cm)
                row["logit_range"] = [float(ref.min()), float(ref.max())]
                rows.append(row)
                print(f"{name:>14} {row['input']:>10} -> {row['output']:>8}: " + "  ".join(
                    f"{e} {row[e + '_max_abs']:.2e} / {row[e + '_pixels']:.6%}" for e in engines), flush=True)
            for r in engines.values():
                if r is not None:
                    r.close()
            print(f"  {name}: export {t_export:.0f} s, all {time.perf_counter() - t0:.0f} s", flush=True)
    return rows


# ----------------------------------------------------------------------------------------------- precision
def float_ops(proto_path: str) -> dict:
    """INT8: the quantizable nodes left float, by reason; FP16: the op types kept in fp32."""
    import onnx

    proto = onnx.load(proto_path)
    if not any(n.op_type == "QuantizeLinear" for n in proto.graph.node):
        cast_up = collections.Counter(n.op_type for n in proto.graph.node
                                      if any(i.endswith("_cast_fp32") for i in n.input))
        return {"fp32 ops (inputs cast up)": dict(cast_up)}
    producer = {o: n.op_type for n in proto.graph.node for o in n.output}
    compute = [n for n in proto.graph.node if n.op_type in ("MatMul", "Conv", "Gemm")]
    quantized = {n.name for n in compute if any(producer.get(i) == "DequantizeLinear" for i in n.input)}
    reasons = collections.Counter()
    for n in compute:
        if n.name in quantized:
            continue
        reasons["DPB MLP (/attn/pos/)" if "/attn/pos/" in n.name else "conv_seg" if "/conv_seg/" in n.name
                else "PPM pooling matrices" if "psp_modules" in n.name and n.op_type == "MatMul"
                else "cooling conv (/ex_conv/)" if "/ex_conv/" in n.name
                else "attention P x V (wide groups)" if n.op_type == "MatMul" and "/attn/" in n.name
                else f"other {n.op_type} ({n.name})"] += 1
    return {"quantized": len(quantized), "float": dict(reasons)}


def precision(args: argparse.Namespace) -> list[dict]:
    from crossformer_deploy.base.images import list_images, load_image
    from crossformer_deploy.base.seg_preprocess import seg_preprocess
    from crossformer_deploy.export.recipe import Int8Options
    from crossformer_deploy.runtime.parity import miou_agreement, pixel_agreement

    photos = [seg_preprocess(load_image(p)) for p in list_images([os.path.join(ROOT, "samples")])]
    rows = []
    for name in args.models.split(","):
        model = trained_like(name, head_fit=args.head_fit, stat_crops=args.stat_crops)
        refs = []
        for x, ori in photos:
            with torch.no_grad():
                refs.append(model(torch.from_numpy(x[None]), torch.tensor(ori))[0][0].numpy())
        with tempfile.TemporaryDirectory(prefix="seg-precision-") as d:
            graphs = {"fp16": dict(precision="fp16"),
                      "int8": dict(precision="int8", int8=Int8Options(os.path.join(ROOT, "samples"), count=3,
                                                                     size=(512, 512), progress=False,
                                                                     cache_path=os.path.join(d, "calib.json")))}
            for prec, recipe in graphs.items():
                path = os.path.join(d, f"{prec}.onnx")
                export(model, path, **recipe)
                for engine, runner in cpu_runners(path, args.threads).items():
                    agree, miou, pixels = [], [], 0
                    with runner:
                        for (x, ori), ref in zip(photos, refs):
                            cm = runner.run({"image": x[None], "output_size": np.array(ori)})["class_map"][0]
                            agree.append(pixel_agreement(ref, cm) * ref.size)
                            miou.append(miou_agreement(ref, cm, model.num_classes))
                            pixels += ref.size
                    row = {"model": name, "head_fit": args.head_fit, "precision": prec, "engine": engine,
                           "pixels": sum(agree) / pixels,
                           "miou": float(np.mean(miou)), "images": len(photos), **float_ops(path)}
                    rows.append(row)
                    print(f"{name:>10} {prec} {engine:>11}: pixel agreement {row['pixels']:.4%}, "
                          f"mIoU vs fp32 {row['miou']:.4f}; {row.get('float', row.get('fp32 ops (inputs cast up)'))}",
                          flush=True)
    return rows


def holdout(args: argparse.Namespace) -> list[dict]:
    """INT8 judged on a photo nothing was fitted or calibrated on: per model and photo, the BN statistics, the
    fitted ``conv_seg`` (``--head-fit``) and the INT8 ranges come from the other two photos, and the held-out
    photo's map is scored against the fp32 PyTorch map on ONNX Runtime and OpenVINO."""
    import shutil

    import onnx

    from crossformer_deploy.base.images import load_image
    from crossformer_deploy.base.seg_preprocess import seg_preprocess
    from crossformer_deploy.export.onnx_export import read_info
    from crossformer_deploy.export.recipe import Int8Options
    from crossformer_deploy.runtime.parity import miou_agreement, pixel_agreement

    photos, rows = sample_photos(), []
    stages = tuple(int(i) for i in args.float_stages.split(",")) if args.float_stages else ()
    for name in args.models.split(","):
        for held in photos:
            if args.held_out and os.path.basename(held) not in args.held_out.split(","):
                continue
            others = [p for p in photos if p != held]
            model = trained_like(name, head_fit=args.head_fit, paths=others, stat_crops=args.stat_crops)
            x, ori = seg_preprocess(load_image(held))
            with torch.no_grad():
                ref, logits = (t[0].numpy() for t in model(torch.from_numpy(x[None]), torch.tensor(ori)))
            top2 = np.sort(logits, axis=0)[-2:]
            # how close the held-out photo's fp32 pixels sit to a class boundary: the flips any rounding can cause
            near = float(np.mean(top2[1] - top2[0] < 1.0))
            with tempfile.TemporaryDirectory(prefix="seg-holdout-") as d:
                calib = os.path.join(d, "calib")
                os.makedirs(calib)
                for p in others:
                    shutil.copy(p, calib)
                if args.calib_augment:  # crops, flips and colour changes of the other photos, never the held-out one
                    from int8_schemes import augment
                    augment(calib, calib, args.calib_augment, seed=0, first_plain=False)
                count = len(others) + args.calib_augment
                graphs = [(p, v) for p in args.precisions.split(",")
                          for v in (args.int8_variants.split(",") if p == "int8" else ["-"])]
                for precision, variant in graphs:
                    path = os.path.join(d, f"{precision}.onnx")
                    int8 = Int8Options(calib, count=count, size=(512, 512), progress=False, float_stages=stages,
                                       method=args.calib_method, cache_path=os.path.join(d, "calib.json"),
                                       **INT8_VARIANTS[variant]) if precision == "int8" else None
                    export(model, path, precision=precision, int8=int8)
                    info = read_info(onnx.load(path, load_external_data=False))  # once per graph, not per engine
                    int8_only = info.extra.get("int8", {}).get("int8_only")
                    for engine, runner in cpu_runners(path, args.threads).items():
                        if engine not in args.engines.split(","):
                            continue
                        with runner:
                            cm = runner.run({"image": x[None], "output_size": np.array(ori)})["class_map"][0]
                        row = {"model": name, "head_fit": args.head_fit, "held_out": os.path.basename(held),
                               "precision": precision, "int8_variant": variant if int8 else None,
                               "float_stages": list(stages) if int8 else [],
                               "calib_images": count if int8 else 0,
                               "calib_method": args.calib_method if int8 else None, "fp32_margin_under_1": near,
                               "engine": engine, "pixels": pixel_agreement(ref, cm), "count": int(ref.size),
                               "miou": miou_agreement(ref, cm, model.num_classes),
                               "int8_only": int8_only}
                        rows.append(row)
                        print(f"{name:>10} {precision} {variant:>16} {engine:>11}, held out {row['held_out']} "
                              f"({near:.1%} of its fp32 pixels under 1.0 from a tie): pixel agreement "
                              f"{row['pixels']:.4%}, mIoU vs fp32 {row['miou']:.4f}", flush=True)
        for precision, variant in graphs:
            for engine in args.engines.split(","):
                mine = [r for r in rows if (r["model"], r["precision"], r["int8_variant"] or "-", r["engine"])
                        == (name, precision, variant, engine)]
                pooled = sum(r["pixels"] * r["count"] for r in mine) / sum(r["count"] for r in mine)
                print(f"{name:>10} {precision} {variant:>16} {engine:>11}, pooled over the held-out photos: "
                      f"{pooled:.4%}", flush=True)
    return rows


# ----------------------------------------------------------------------------------------------- latency
def latency(args: argparse.Namespace) -> list[dict]:
    from crossformer_deploy.bench.machine import CPU_FLAGS, cpu_model_and_flags
    from crossformer_deploy.bench.timing import interleaved
    from crossformer_deploy.model.seg import build_segmenter

    cpu, flags = cpu_model_and_flags()
    print(f"CPU: {cpu}; flags: {', '.join(f for f in CPU_FLAGS if f in flags)}; threads {args.threads}")
    x = np.random.default_rng(0).standard_normal((1, 3, 512, 512), dtype=np.float32)
    feeds = {"image": x, "output_size": np.array([512, 512])}
    runners = {}
    with tempfile.TemporaryDirectory(prefix="seg-latency-") as d:
        for name in ("upernet-s", "fpn-s"):
            head, variant = split(name)
            path = os.path.join(d, f"{name}.onnx")
            export(build_segmenter(variant, head=head), path)  # random weights: latency does not depend on them
            runners.update({f"{name} {engine}": r.load() for engine, r in cpu_runners(path, args.threads).items()})
        times = interleaved({k: (lambda r=r: r.run(feeds)) for k, r in runners.items()}, repeats=args.repeats,
                            warmup=2, pause=0.5)
    rows = [{"graph": k, "median_ms": t.median_ms, "p90_ms": t.p90_ms, "runs": t.runs, "cpu": cpu,
             "flags": sorted(f for f in CPU_FLAGS if f in flags), "threads": args.threads} for k, t in times.items()]
    for r in rows:
        print(f"{r['graph']:>24}: {r['median_ms']:8.1f} ms (p90 {r['p90_ms']:.1f})")
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("role", choices=["parity", "precision", "holdout", "latency", "oracle"])
    ap.add_argument("--models", default=None)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--head-fit", choices=["scaled", "probe"], default="scaled",
                    help="(precision role) the test model's conv_seg: scaled random (default) or refitted on "
                         "clusters of its own features, a trained classifier's margins (synthetic.fit_head)")
    ap.add_argument("--float-stages", default="", help="(holdout) backbone stages kept float, e.g. 0,1")
    ap.add_argument("--calib-method", default="entropy", help="(holdout) INT8 calibration method (entropy, "
                    "minmax, percentile)")
    ap.add_argument("--stat-crops", type=int, default=0,
                    help="(precision, holdout) BN statistics of the test model also from N crops of its photos")
    ap.add_argument("--held-out", default="", help="(holdout) only these photos in turn, e.g. chelsea.jpg")
    ap.add_argument("--precisions", default="int8", help="(holdout) which graphs to judge, e.g. fp16,int8")
    ap.add_argument("--engines", default="onnxruntime,openvino", help="(holdout) runtimes to judge them on")
    ap.add_argument("--int8-variants", default="default",
                    help=f"(holdout) INT8 graphs to judge, any of {', '.join(INT8_VARIANTS)}")
    ap.add_argument("--calib-augment", type=int, default=0,
                    help="(holdout) calibrate on N crops / flips of the other photos as well")
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--dir", help="(oracle role) the folder our side prepared")
    ap.add_argument("--json", help="write the rows here")
    args = ap.parse_args()
    if args.role == "oracle":
        return oracle(args.dir)
    torch.set_num_threads(args.threads)
    args.models = args.models or (",".join(MODELS) if args.role == "parity" else "upernet-s,fpn-s")
    rows = {"parity": parity, "precision": precision, "holdout": holdout, "latency": latency}[args.role](args)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
