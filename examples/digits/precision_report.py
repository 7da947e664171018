"""FP32 vs FP16 vs INT8 of the trained digits CrossFormer, on ONNX Runtime CPU, held-out test split.

    python examples/digits/precision_report.py --json /tmp/precision.json
    python examples/digits/precision_report.py --json /tmp/precision.json --s-samples

Exports the digits model (dynamic B/H/W, 64x64), converts it to FP16 and to INT8 (calibrated on
images of the *train* split written as PNGs, so the test split stays held out), and reports per
precision: test accuracy, top-1 agreement with fp32, worst and mean cosine of the logits vs fp32.

--s-samples adds full-size CrossFormer-S with random weights perturbed as in tests/helpers.py (biases
and LayerNorm moved off (1, 0), head x20, so logits are of order 1): FP16/INT8 cosine vs fp32 on the
three shipped images in samples/, INT8 calibrated on those same three images (all there is; the
result is an upper bound for a real calibration set), and ORT CPU latency, batch 1, 224x224, the
three precisions timed interleaved in one run.

On x86, ORT's CPU provider runs the FP16 graph's Conv/MatMul/elementwise ops in fp32 between Casts
(it has fp16 kernels for data movement only), so FP16 speed on CPU means nothing; its accuracy still
includes every op output's rounding to fp16.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time

import numpy as np
from data import SIZE, export_image_folder, load_split

from crossformer_deploy.base.model_info import ModelInfo
from crossformer_deploy.export.onnx_export import save_onnx, to_onnx
from crossformer_deploy.export.precision.fp16 import to_fp16
from crossformer_deploy.export.precision.int8 import quantize_int8
from crossformer_deploy.model.factory import build_model, weights_label
from crossformer_deploy.runtime.parity import cosine_rows

HERE = os.path.dirname(os.path.abspath(__file__))
CKPT = os.path.join(HERE, "crossformer_digits.pth")
SAMPLES = os.path.join(HERE, os.pardir, os.pardir, "samples")
PRECISIONS = ("fp32", "fp16", "int8")


def session(path: str, threads: int):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])


def run(sess, x: np.ndarray, batch: int = 150) -> np.ndarray:
    name = sess.get_inputs()[0].name
    return np.concatenate([sess.run(None, {name: x[i:i + batch]})[0] for i in range(0, len(x), batch)])


def export_three(proto, work: str, name: str, calib_dir: str, count: int, method: str,
                 size: tuple[int, int]) -> dict[str, str]:
    paths = {p: os.path.join(work, f"{name}_{p}.onnx") for p in PRECISIONS}
    save_onnx(proto, paths["fp32"])
    save_onnx(to_fp16(proto), paths["fp16"])
    quantize_int8(proto, paths["int8"], calib_dir, count=count, method=method, size=size,
                  cache_path=os.path.join(work, f"{name}_calib.json"))
    return paths


def compare(logits: dict[str, np.ndarray], labels: np.ndarray | None = None) -> dict[str, dict]:
    ref = logits["fp32"]
    rows = {}
    for p, out in logits.items():
        cos = cosine_rows(out, ref)
        row = {"agreement": float((out.argmax(1) == ref.argmax(1)).mean()), "cosine_min": float(cos.min()),
               "cosine_mean": float(cos.mean()), "cosine_per_sample": cos.tolist() if len(cos) <= 8 else None}
        if labels is not None:
            row["accuracy"] = float((out.argmax(1) == labels).mean())
        rows[p] = row
    return rows


def digits_report(work: str, count: int, method: str, threads: int) -> dict:
    model = build_model(None, CKPT)
    info = ModelInfo("custom-32-2-2-1-1", "classifier", 10, weights_label(CKPT), input_size=(SIZE, SIZE))
    calib = os.path.join(work, "digits_train_png")
    export_image_folder(calib, "train", limit=count)
    t0 = time.perf_counter()
    paths = export_three(to_onnx(model, info), work, "digits", calib, count, method, (SIZE, SIZE))
    x, y = load_split("test")
    logits = {p: run(session(path, threads), x.numpy()) for p, path in paths.items()}
    return {"test_images": len(y), "calibration": {"split": "train", "images": count, "method": method},
            "export_s": time.perf_counter() - t0, "results": compare(logits, y.numpy())}


def perturb(model, seed: int = 0, scale: float = 0.05):
    """As tests/helpers.py ``perturb``: random init leaves LayerNorm at (1, 0) and biases at 0."""
    import torch

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 1:
                p.add_(scale * torch.randn(p.shape, generator=g))
        model.head.weight.mul_(20.0)
    return model


def s_report(work: str, method: str, threads: int, repeats: int) -> dict:
    from crossformer_deploy.base.images import list_images, load_batch
    from crossformer_deploy.bench.timing import interleaved

    model = perturb(build_model("s", seed=0))
    info = ModelInfo("s", "classifier", 1000, "random-init seed=0, perturbed as tests/helpers.py")
    images = list_images([SAMPLES])
    paths = export_three(to_onnx(model, info), work, "s", SAMPLES, len(images), method, (224, 224))
    x = load_batch(images, (224, 224))
    sessions = {p: session(path, threads) for p, path in paths.items()}
    out = {"images": [os.path.basename(p) for p in images],
           "calibration": {"images": "the same 3 samples", "method": method},
           "results": compare({p: run(s, x) for p, s in sessions.items()})}
    x1 = x[:1]
    timing = interleaved({p: (lambda s=s: s.run(None, {"image": x1})) for p, s in sessions.items()},
                         repeats=repeats, warmup=3)
    out["timing_b1_224"] = {p: {"median_ms": t.median_ms, "p90_ms": t.p90_ms, "speedup_vs_fp32":
                                t.ratio_to(timing["fp32"])} for p, t in timing.items()}
    return out


def print_table(title: str, rows: dict[str, dict]) -> None:
    print(title)
    print(f"  {'':6s} {'accuracy':>9s} {'agree':>8s} {'cos min':>10s} {'cos mean':>10s}")
    for p, r in rows.items():
        acc = f"{100 * r['accuracy']:.2f} %" if "accuracy" in r else "-"
        print(f"  {p:6s} {acc:>9s} {100 * r['agreement']:6.2f} % {r['cosine_min']:10.7f} {r['cosine_mean']:10.7f}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", required=True, help="write the results here")
    ap.add_argument("--calib-count", type=int, default=512, help="train images for INT8 calibration")
    ap.add_argument("--calib-method", default="entropy", choices=["entropy", "percentile", "minmax"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--s-samples", action="store_true", help="also CrossFormer-S on samples/ (+ timing)")
    ap.add_argument("--repeats", type=int, default=20, help="timing rounds for --s-samples")
    ap.add_argument("--workdir", help="keep the exported models here (default: a temporary folder)")
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="precision-report-") as tmp:
        work = args.workdir or tmp
        os.makedirs(work, exist_ok=True)
        report = {"machine": {"platform": platform.platform(), "processor": platform.processor(),
                              "cpus": os.cpu_count(), "threads": args.threads,
                              "load_avg_at_start": os.getloadavg()},
                  "digits": digits_report(work, args.calib_count, args.calib_method, args.threads)}
        print_table(f"digits CrossFormer, {report['digits']['test_images']} held-out test images, ORT CPU "
                    f"(INT8: {args.calib_method}, {args.calib_count} train images)", report["digits"]["results"])
        if args.s_samples:
            report["s_samples"] = s_report(work, args.calib_method, args.threads, args.repeats)
            print_table("CrossFormer-S (perturbed random weights), samples/ at 224, vs fp32 "
                        "(INT8 calibrated on these 3 images)", report["s_samples"]["results"])
            for p, r in report["s_samples"]["results"].items():
                print(f"  {p} cosine per image: {', '.join(f'{c:.7f}' for c in r['cosine_per_sample'])}")
            print(f"ORT CPU, S, batch 1, 224, {args.threads} threads, {args.repeats} interleaved rounds "
                  f"(load avg at start {report['machine']['load_avg_at_start'][0]:.1f}):")
            for p, t in report["s_samples"]["timing_b1_224"].items():
                print(f"  {p:6s} median {t['median_ms']:7.1f} ms  p90 {t['p90_ms']:7.1f} ms  "
                      f"speed vs fp32 {t['speedup_vs_fp32']:.2f}x")
        report["machine"]["load_avg_at_end"] = os.getloadavg()
    with open(args.json, "w") as f:
        json.dump(report, f, indent=1)
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
