"""crossformer-validate: run an exported model and the PyTorch reference on the same inputs, compare."""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys

import numpy as np

from crossformer_deploy.base.errors import UsageError
from crossformer_deploy.base.images import list_images, load_batch, load_image
from crossformer_deploy.base.model_file import is_engine
from crossformer_deploy.base.model_info import SEGMENTER, ModelInfo
from crossformer_deploy.base.sizes import parse_size
from crossformer_deploy.cli.common import classifier_from_args, parse_list, positive_int, run_main
from crossformer_deploy.engines.open_model import open_runner, read_model_info
from crossformer_deploy.export.precision import schemes
from crossformer_deploy.model.config import VARIANT_CHOICES
from crossformer_deploy.model.crossformer import CrossFormer
from crossformer_deploy.model.factory import model_from_label
from crossformer_deploy.model.seg.config import SegConfig
from crossformer_deploy.model.seg.factory import segmenter_from_label
from crossformer_deploy.runtime.classify import fill_batch
from crossformer_deploy.runtime.parity import SEG_AGREEMENT, TOLERANCES, compare, miou_agreement, pixel_agreement
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

A segmenter export (crossformer-export --task seg) is fed its AlignResized input and an original size: by
default 512x512 (output 512x512) and 512x704 (output 512x683, the size a 375x500 photo comes back at); with
--sizes, each size's own (or --output-size). It is judged by the share of pixels whose class agrees with the
PyTorch reference (fp32 >= 99.99 %, fp16 >= 99.5 %, int8 >= 98 %), with an mIoU of the one map against the
other, and, for exports with --logits, by the logits' table row below.

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
    return open_runner(args.model, args.provider, args.threads)


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
