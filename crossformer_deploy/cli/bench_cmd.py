"""crossformer-bench: time PyTorch, ONNX Runtime and OpenVINO paths side by side on this CPU."""
from __future__ import annotations

import argparse
import json
import os
import shlex
import sys

from crossformer_deploy import bench
from crossformer_deploy.base.errors import UsageError
from crossformer_deploy.base.fileio import check_output_path, write_bytes_atomic
from crossformer_deploy.base.sizes import parse_size
from crossformer_deploy.bench.det import (
    DET_BACKENDS,
    DetBenchConfig,
    check_det_backends,
    format_det_table,
    run_det_bench,
)
from crossformer_deploy.bench.profile import PROFILABLE
from crossformer_deploy.bench.seg import (
    SEG_BACKENDS,
    SegBenchConfig,
    check_seg_backends,
    format_seg_table,
    run_seg_bench,
)
from crossformer_deploy.cli.common import default_variant, parse_list, positive_int, run_main
from crossformer_deploy.model.config import VARIANT_CHOICES

PROVIDER_BACKENDS = {"cpu": [b for b in bench.BACKENDS if b not in ("tensorrt", "torch-cuda")],
                     "torch-cuda": ["torch", "torch-cuda"]}

EXAMPLES = f"""examples:
  crossformer-bench --variant s --sizes 224 --batch 1,8 --json benchmarks/cpu/s_224.json \\
      --plot benchmarks/cpu/s_224.png
  crossformer-bench --variant tiny --sizes 64 --backends torch,ort,ov-f32 --repeats 5
  crossformer-bench --variant s --backends ort-static,ort-target --profile --profile-backend ort-target
  crossformer-bench --variant s --batch 1,8 --recommend     # the fastest faithful path here, and how to get it
  crossformer-bench --variant s --provider torch-cuda --batch 1,64      # an NVIDIA GPU
  crossformer-bench --task seg --variant s --head upernet --sizes 512 --json seg.json   # a whole segmenter
  crossformer-bench --task det --weights retinanet_crossformer_s.pth --json det.json    # a whole detector, 800x1216

backends: {', '.join(bench.BACKENDS)}
peers (what a user runs without us): {', '.join(bench.PEERS)}; ours: {', '.join(bench.OURS)}
Backends are timed interleaved (round-robin), so only ratios within one run are meaningful; a backend
that cannot be built (a missing package, bf16 on a CPU without bf16 instructions) is skipped with a
one-line note. Without --weights the model's random weights are made trained-like (perturbed biases and
LayerNorms, logits of order 1, a position bias of a trained model's size), so that the accuracy column
tells a faithful path (fp32 max abs <= 1e-4, bf16/fp16 cosine >= 0.9995, int8 cosine >= 0.99) from one
that is not.
--task seg times a whole segmenter (--head upernet|fpn, default sizes 512) on {', '.join(SEG_BACKENDS)},
scoring the class map's pixels against PyTorch's (bench/seg.py); its INT8 backends calibrate on --calib.
--task det times a whole detector (default size 800x1216, a COCO photo's input) on {', '.join(DET_BACKENDS)},
scoring the detections against PyTorch's (bench/det.py).
"""


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="crossformer-bench", description=__doc__.split(":", 1)[1].strip(),
                                epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variant", choices=VARIANT_CHOICES,
                   help="architecture (default: read from --weights, else s)")
    p.add_argument("--weights", help="checkpoint (default: random weights, seed 0: speed does not depend on them)")
    p.add_argument("--task", choices=["classify", "seg", "det"], default="classify",
                   help="classify (default): a classifier; seg: a whole segmenter (bench/seg.py); det: a whole "
                   "detector (bench/det.py)")
    p.add_argument("--head", choices=["upernet", "fpn"], help="with --task seg: the decode head (default: read from "
                   "--weights, else upernet)")
    p.add_argument("--sizes", help="comma list of N or HxW (default 224; --task seg 512; --task det 800x1216)")
    p.add_argument("--batch", default="1", help="comma list of batch sizes (default 1)")
    p.add_argument("--backends", help="comma list (default: all, or those of --provider)")
    p.add_argument("--provider", choices=sorted(PROVIDER_BACKENDS),
                   help="shorthand for a backend set: torch-cuda = eager fp32 (the baseline) and the fused fp16 "
                   "CUDA path; cpu = every CPU backend")
    p.add_argument("--threads", type=positive_int, default=2,
                   help="threads for PyTorch, ONNX Runtime and OpenVINO alike (default 2)")
    p.add_argument("--repeats", type=positive_int, default=20, help="timed rounds (default 20)")
    p.add_argument("--warmup", type=int, default=3, help="untimed runs per backend first (default 3)")
    p.add_argument("--block", type=positive_int, default=3,
                   help="consecutive timed runs per backend in each round (default 3)")
    p.add_argument("--pause", type=float, default=0.3,
                   help="seconds of idle before each backend's turn, so that the previous backend's spinning "
                   "thread pool does not share the cores with it (default 0.3)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random input")
    p.add_argument("--calib", metavar="DIR", help="images to calibrate the INT8 paths on (default: a few "
                   "noise images, enough for timing; give real ones with --weights for a meaningful accuracy)")
    p.add_argument("--json", metavar="OUT", help="write the report (machine, command, results) here")
    p.add_argument("--plot", metavar="PNG", help="bar chart of images/s (needs matplotlib: the plot extra)")
    p.add_argument("--profile", action="store_true", help="time per op type of --profile-backend after timing")
    p.add_argument("--profile-backend", default="ort-target", choices=PROFILABLE,
                   help="backend to profile (default ort-target)")
    p.add_argument("--recommend", action="store_true",
                   help="after the table: per case and precision, the fastest path within its bar on this "
                   "machine, with the commands that produce and run it")
    p.add_argument("--official", metavar="FILE", default=os.environ.get("CROSSFORMER_OFFICIAL_MODEL"),
                   help="the authors' models/crossformer.py (or their clone): the peers then run their model, "
                   "exported by plain torch.onnx.export, with the same weights; without it our model stands in for "
                   "theirs (default $CROSSFORMER_OFFICIAL_MODEL)")
    p.add_argument("--weights-seed", type=int, default=0,
                   help="seed of the trained-like random weights when no --weights is given (default 0)")
    p.add_argument("--run-emulated", action="store_true",
                   help="also time bf16 paths on a CPU without avx512_bf16 / AMX (emulated: seconds per call)")
    return p


def run(args: argparse.Namespace, argv: list[str]) -> int:
    # Every argument is checked before minutes of export and compilation are spent.
    for out in (args.json, args.plot):
        if out:
            check_output_path(out)
    if args.task == "seg":
        return run_seg(args, argv)
    if args.task == "det":
        return run_det(args, argv)
    if args.head:
        raise UsageError("--head is for --task seg")
    args.sizes = args.sizes or "224"
    if args.plot:
        bench.check_plot_available()
    _check_calib(args)
    sizes = parse_list(args.sizes, parse_size, "size")
    cfg = bench.BenchConfig(
        sizes=sizes, backends=bench.check_backends(_backends(args)), calib=args.calib,
        profile_backend=args.profile_backend if args.profile else None, official=args.official, **_shared(args))
    report = bench.run_bench(cfg, log=lambda line: print(line, file=sys.stderr))
    report["command"] = shlex.join(["crossformer-bench", *argv])
    report["recommendations"] = bench.recommend(report)
    print(bench.format_table(report))
    if args.recommend:
        print(bench.format_recommendations(report["recommendations"]))
    _write_json(args.json, report)
    if args.plot:
        bench.plot(report, args.plot)
        print(f"wrote {args.plot}", file=sys.stderr)
    return 0


def _refuse_classifier_options(args: argparse.Namespace, what: str, int8: bool = False) -> None:
    given = [flag for flag, on in (("--plot", args.plot), ("--profile", args.profile), ("--recommend", args.recommend),
                                   ("--official", args.official != os.environ.get("CROSSFORMER_OFFICIAL_MODEL")),
                                   ("--provider", args.provider),
                                   ("--calib", args.calib and not int8)) if on]
    if given:
        raise UsageError(f"{', '.join(given)}: not for --task {args.task} ({what}'s bench has no peers, profiles "
                         f"or plots{'' if int8 else ', nor INT8 paths yet'})")


def run_det(args: argparse.Namespace, argv: list[str]) -> int:
    _refuse_classifier_options(args, "a detector")
    if args.head:
        raise UsageError("--head is for --task seg")
    names = parse_list(args.backends, str, "backend") if args.backends else list(DET_BACKENDS)
    sizes = tuple(parse_list(args.sizes, parse_size, "size")) if args.sizes else DetBenchConfig(None).sizes
    cfg = DetBenchConfig(sizes=sizes, backends=check_det_backends(names), **_shared(args))
    report = run_det_bench(cfg, log=lambda line: print(line, file=sys.stderr))
    report["command"] = shlex.join(["crossformer-bench", *argv])
    print(format_det_table(report))
    _write_json(args.json, report)
    return 0


def run_seg(args: argparse.Namespace, argv: list[str]) -> int:
    _refuse_classifier_options(args, "a segmenter", int8=True)
    _check_calib(args)
    names = parse_list(args.backends, str, "backend") if args.backends else list(SEG_BACKENDS)
    cfg = SegBenchConfig(head=args.head, sizes=tuple(parse_list(args.sizes or "512", parse_size, "size")),
                         backends=check_seg_backends(names), calib=args.calib, **_shared(args))
    report = run_seg_bench(cfg, log=lambda line: print(line, file=sys.stderr))
    report["command"] = shlex.join(["crossformer-bench", *argv])
    print(format_seg_table(report))
    _write_json(args.json, report)
    return 0


def _check_calib(args: argparse.Namespace) -> None:
    if args.calib and not os.path.isdir(args.calib):
        raise UsageError(f"--calib {args.calib}: not a folder of images")


def _shared(args: argparse.Namespace) -> dict:
    """The options both benches take the same way (the model, the batches, the timing, the seeds)."""
    return dict(variant=default_variant(args.variant, args.weights), weights=args.weights,
                batches=parse_list(args.batch, _positive, "batch"), threads=args.threads, repeats=args.repeats,
                warmup=max(0, args.warmup), block=args.block, pause=max(0.0, args.pause), seed=args.seed,
                weights_seed=args.weights_seed, run_emulated=args.run_emulated)


def _write_json(path: str | None, report: dict) -> None:
    if path:
        write_bytes_atomic(path, (json.dumps(report, indent=1) + "\n").encode())
        print(f"wrote {path}", file=sys.stderr)


def _backends(args: argparse.Namespace) -> list[str]:
    if args.backends and args.provider:
        raise UsageError("give either --backends or --provider, not both")
    if args.provider:
        return PROVIDER_BACKENDS[args.provider]
    return parse_list(args.backends, str, "backend") if args.backends else list(bench.BACKENDS)


def _positive(text: str) -> int:
    v = int(text)
    if v < 1:
        raise ValueError(text)
    return v


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    return run_main("crossformer-bench", lambda a: run(a, argv), parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
