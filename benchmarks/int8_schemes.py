"""INT8 schemes (symmetric vs reduced-range weights) against fp32, on this CPU and on an emulated AVX2 one.

    python benchmarks/int8_schemes.py --json /tmp/int8_schemes.json [--qemu-cpu EPYC-Rome] [--ov-max-isa AVX2]

Models: the trained digits CrossFormer (450 held-out test images, accuracy; calibrated on 512 train
images) and CrossFormer-S with random weights perturbed as in tests/helpers.py (logits of order 1),
224x224, on 8 real-looking images (the three samples/ photos and five flips/crops/colour changes of
them), calibrated on 24 *other* augmentations of the samples.

Runtimes, each in its own process: ONNX Runtime CPU and OpenVINO CPU (f32 for the non-int8 parts) on
this CPU; with --qemu-cpu, ONNX Runtime again under ``qemu-x86_64 -cpu MODEL`` (user-mode emulation:
the CPUID it reports has AVX2 but no AVX-512/VNNI, so MLAS dispatches its AVX2 int8 kernels, whose
vpmaddubsw saturation QEMU implements), and with --ov-max-isa, OpenVINO with ONEDNN_MAX_CPU_ISA set
(oneDNN then dispatches no kernel above that ISA). The report says which numbers came from which.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.join(HERE, os.pardir)
SAMPLES = os.path.join(ROOT, "samples")
DIGITS = os.path.join(ROOT, "examples", "digits")
SCHEMES = ("symmetric", "reduced-range")
CPU_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile", "amx_int8")


def augment(src: str, out: str, count: int, seed: int, first_plain: bool) -> None:
    """``count`` PNGs from the sample photos: flips, crops and colour changes, deterministic per seed."""
    from PIL import Image, ImageEnhance, ImageOps

    os.makedirs(out, exist_ok=True)
    photos = sorted(os.path.join(src, f) for f in os.listdir(src) if f.endswith(".jpg"))
    rng = np.random.default_rng(seed)
    for i in range(count):
        im = Image.open(photos[i % len(photos)]).convert("RGB")
        if not (first_plain and i < len(photos)):
            if rng.random() < 0.5:
                im = ImageOps.mirror(im)
            w, h = im.size
            s = rng.uniform(0.6, 0.95)
            x0, y0 = rng.uniform(0, 1 - s) * w, rng.uniform(0, 1 - s) * h
            im = im.crop((int(x0), int(y0), int(x0 + s * w), int(y0 + s * h)))
            im = ImageEnhance.Brightness(im).enhance(rng.uniform(0.7, 1.3))
            im = ImageEnhance.Color(im).enhance(rng.uniform(0.6, 1.4))
        im.save(os.path.join(out, f"{i:03d}.png"))


def build(work: str) -> dict:
    """Export both models, quantize each with both schemes; returns {model: {paths, inputs, labels}}."""
    sys.path.insert(0, DIGITS)
    from data import SIZE, export_image_folder, load_split

    from crossformer_deploy.base.images import list_images, load_batch
    from crossformer_deploy.base.model_info import ModelInfo
    from crossformer_deploy.export.onnx_export import save_onnx, to_onnx
    from crossformer_deploy.export.pipeline import run_pipeline
    from crossformer_deploy.export.precision.int8 import quantize_int8
    from crossformer_deploy.model.factory import build_model, weights_label

    sys.path.insert(0, os.path.join(ROOT, "tests"))
    from helpers import perturb

    out = {}
    ckpt = os.path.join(DIGITS, "crossformer_digits.pth")
    digits = to_onnx(build_model(None, ckpt), ModelInfo("custom-32-2-2-1-1", "classifier", 10, weights_label(ckpt),
                                                        input_size=(SIZE, SIZE)))
    export_image_folder(os.path.join(work, "digits_calib"), "train", limit=512)
    x, y = load_split("test")
    np.save(os.path.join(work, "digits_x.npy"), x.numpy())
    out["digits"] = {"inputs": os.path.join(work, "digits_x.npy"), "labels": y.numpy().tolist(),
                     "calib": (os.path.join(work, "digits_calib"), 512, (SIZE, SIZE)), "proto": digits}

    s_info = ModelInfo("s", "classifier", 1000, "random-init seed=0, perturbed", dynamic=False)
    s = run_pipeline(to_onnx(perturb(build_model("s", seed=0)), s_info), "onnxruntime")
    augment(SAMPLES, os.path.join(work, "s_eval"), 8, seed=1, first_plain=True)
    augment(SAMPLES, os.path.join(work, "s_calib"), 24, seed=2, first_plain=False)
    np.save(os.path.join(work, "s_x.npy"), load_batch(list_images([os.path.join(work, "s_eval")]), (224, 224)))
    out["s"] = {"inputs": os.path.join(work, "s_x.npy"), "labels": None,
                "calib": (os.path.join(work, "s_calib"), 24, (224, 224)), "proto": s}

    for name, m in out.items():
        proto = m.pop("proto")
        calib_dir, count, size = m.pop("calib")
        m["paths"] = {"fp32": os.path.join(work, f"{name}_fp32.onnx")}
        save_onnx(proto, m["paths"]["fp32"])
        for scheme in SCHEMES:
            m["paths"][scheme] = os.path.join(work, f"{name}_int8_{scheme}.onnx")
            quantize_int8(proto, m["paths"][scheme], calib_dir, count=count, size=size, scheme=scheme,
                          cache_path=os.path.join(work, f"{name}_calib.json"), progress=False)
    return out


def child(runtime: str, model: str, inputs: str, output: str, threads: int) -> None:
    """Run one model on one runtime (imports nothing heavy: this may run under emulation)."""
    x = np.load(inputs)
    batch = 50
    if runtime == "ort":
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads, opts.inter_op_num_threads, opts.log_severity_level = threads, 1, 3
        sess = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
        run = lambda b: sess.run(None, {sess.get_inputs()[0].name: b})[0]  # noqa: E731
    else:
        import openvino as ov

        core = ov.Core()
        m = core.read_model(model)
        compiled = core.compile_model(m, "CPU", {"INFERENCE_PRECISION_HINT": "f32",
                                                 "INFERENCE_NUM_THREADS": threads})
        run = lambda b: compiled(b)[0]  # noqa: E731
    np.save(output, np.concatenate([np.asarray(run(x[i:i + batch])) for i in range(0, len(x), batch)]))


def run_in_process(runtime: str, model: str, inputs: str, threads: int, prefix: list[str], env: dict) -> np.ndarray:
    with tempfile.NamedTemporaryFile(suffix=".npy", delete=False) as f:
        out = f.name
    try:
        cmd = [*prefix, sys.executable, os.path.abspath(__file__), "--child", runtime, model, inputs, out,
               str(threads)]
        r = subprocess.run(cmd, env={**os.environ, **env}, capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed: {r.stderr.strip().splitlines()[-1:]}")
        return np.load(out)
    finally:
        os.unlink(out)


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = a.astype(np.float64), b.astype(np.float64)
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def cpu() -> dict:
    flags: set[str] = set()
    name = platform.processor()
    with open("/proc/cpuinfo") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k.strip() == "flags":
                flags = set(v.split())
            elif k.strip() == "model name":
                name = v.strip()
    return {"model": name, "flags": {f: f in flags for f in CPU_FLAGS}}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", help="write the results here (required)")
    ap.add_argument("--work", help="keep the models and inputs here (default: a temporary folder)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--qemu-cpu", help="also run ONNX Runtime under qemu-x86_64 -cpu MODEL (e.g. EPYC-Rome)")
    ap.add_argument("--ov-max-isa", help="also run OpenVINO with ONEDNN_MAX_CPU_ISA=ISA (e.g. AVX2)")
    ap.add_argument("--child", nargs=5, metavar=("RUNTIME", "MODEL", "INPUTS", "OUTPUT", "THREADS"),
                    help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        rt, model, inputs, output, threads = args.child
        child(rt, model, inputs, output, int(threads))
        return 0
    if not args.json:
        ap.error("--json is required")

    runtimes = {"ort": ("ort", [], {}), "openvino": ("ov", [], {})}
    if args.qemu_cpu:
        runtimes[f"ort qemu {args.qemu_cpu}"] = ("ort", ["qemu-x86_64", "-cpu", args.qemu_cpu], {})
    if args.ov_max_isa:
        runtimes[f"openvino ONEDNN_MAX_CPU_ISA={args.ov_max_isa}"] = ("ov", [], {"ONEDNN_MAX_CPU_ISA": args.ov_max_isa})
    report = {"cpu": cpu(), "command": " ".join(sys.argv), "results": {}}
    with tempfile.TemporaryDirectory(prefix="int8-schemes-") as tmp:
        work = args.work or tmp
        os.makedirs(work, exist_ok=True)
        for name, m in build(work).items():
            ref = run_in_process("ort", m["paths"]["fp32"], m["inputs"], args.threads, [], {})
            for label, (rt, prefix, env) in runtimes.items():
                for scheme in SCHEMES:
                    got = run_in_process(rt, m["paths"][scheme], m["inputs"], args.threads, prefix, env)
                    cos = cosine_rows(got, ref)
                    row = {"cosine_min": float(cos.min()), "cosine_mean": float(cos.mean()),
                           "top1_agreement": float((got.argmax(1) == ref.argmax(1)).mean())}
                    if m["labels"] is not None:
                        y = np.asarray(m["labels"])
                        row["accuracy"], row["accuracy_fp32"] = float((got.argmax(1) == y).mean()), float(
                            (ref.argmax(1) == y).mean())
                    report["results"].setdefault(name, {}).setdefault(label, {})[scheme] = row
                    acc = f"  acc {100 * row['accuracy']:.2f} % (fp32 {100 * row['accuracy_fp32']:.2f} %)" \
                        if "accuracy" in row else ""
                    print(f"{name:6s} {label:34s} {scheme:13s} cos min {row['cosine_min']:.5f} mean "
                          f"{row['cosine_mean']:.5f} top1 {100 * row['top1_agreement']:.1f} %{acc}", flush=True)
    with open(args.json, "w") as f:
        json.dump(report, f, indent=1)
    print(f"cpu flags: {', '.join(k for k, v in report['cpu']['flags'].items() if v)}; wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
