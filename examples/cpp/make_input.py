"""Write images as the raw float32 NCHW tensor ``classify`` reads, preprocessed exactly as crossformer-infer does.

    python examples/cpp/make_input.py samples/chelsea.jpg --model crossformer_s.plan -o chelsea.raw

The size, mean/std and crop come from the model (an ONNX's metadata or an engine's sidecar), so the C++
side needs no image decoding and cannot disagree with the Python preprocessing. Also writes the class
names, one per line, for ``classify --labels``.
"""
from __future__ import annotations

import argparse
import sys

from crossformer_deploy.base.images import list_images, load_batch
from crossformer_deploy.base.labels import class_names
from crossformer_deploy.base.sizes import parse_size
from crossformer_deploy.cli.common import run_main
from crossformer_deploy.engines.open_model import read_model_info
from crossformer_deploy.runtime.classify import fill_batch


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="make_input.py", description="images -> raw float32 NCHW for classify")
    p.add_argument("images", nargs="+", metavar="IMAGE_OR_DIR")
    p.add_argument("--model", required=True, help="the .plan (its sidecar) or .onnx the input is for")
    p.add_argument("--size", help="HxW (default: the model's size)")
    p.add_argument("-o", "--output", required=True, help="raw file to write (float32, NCHW, little-endian)")
    p.add_argument("--labels", default="labels.txt", help="class names file to write (default labels.txt)")
    return p


def run(args: argparse.Namespace) -> int:
    info = read_model_info(args.model)
    size = parse_size(args.size, info.stride) if args.size else tuple(info.input_size)
    paths = list_images(args.images)
    x = load_batch(paths, size, info.crop_ratio, info.mean, info.std)
    if info.batch is not None and len(paths) > info.batch:
        print(f"make_input.py: error: this model takes batch {info.batch}, got {len(paths)} images", file=sys.stderr)
        return 2
    x = fill_batch(x, info.batch).astype("<f4")  # a fixed-batch engine needs exactly its batch
    x.tofile(args.output)
    with open(args.labels, "w", encoding="utf-8") as f:
        f.write("\n".join(class_names(info.num_classes)) + "\n")
    shape = "x".join(map(str, x.shape))
    print(f"wrote {args.output} ({shape} float32) and {args.labels}\n"
          f"run: ./build/classify {args.model} {args.output} {shape} --labels {args.labels}")
    return 0


def main(argv=None) -> int:
    return run_main("make_input.py", run, parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
