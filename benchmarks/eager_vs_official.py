"""PyTorch eager latency of our CrossFormer against the authors' code, same weights, one interleaved run.

Needs the oracle of ../shared/reference (see its README; not part of CI):
    CROSSFORMER_OFFICIAL=/tmp/crossformer-official python benchmarks/eager_vs_official.py --variant s
"""
from __future__ import annotations

import argparse
import os
import sys

import torch

from crossformer_deploy import create_model
from crossformer_deploy.bench.timing import interleaved


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variant", default="s")
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--shared", default=os.path.join(os.path.dirname(__file__), "..", "..", "shared"))
    args = ap.parse_args()
    sys.path.insert(0, os.path.join(args.shared, "reference"))
    import official

    torch.set_num_threads(args.threads)
    theirs = official.classifier(args.variant, seed=0)
    ours = create_model(args.variant)
    ours.load_state_dict({k: v for k, v in theirs.state_dict().items()
                          if not k.endswith(("attn.biases", "attn.relative_position_index", "attn_mask"))})
    for b in args.batch:
        x = torch.randn(b, 3, 224, 224)
        with torch.no_grad():
            diff = (ours(x) - theirs(x)).abs().max().item()

            t = interleaved({"official": lambda m=theirs, x=x: m(x), "ours": lambda m=ours, x=x: m(x)},
                            repeats=args.repeats)
        print(f"CrossFormer-{args.variant.upper()} b{b} 224, {args.threads} threads: official "
              f"{t['official'].median_ms:.1f} ms, ours {t['ours'].median_ms:.1f} ms, ours/official time "
              f"{t['ours'].median_ms / t['official'].median_ms:.3f}, max|diff| {diff:.1e}")


if __name__ == "__main__":
    main()
