"""CrossFormer++ full variants against the authors' code: PyTorch fp32 and ONNX Runtime (one dynamic export).

Needs the oracle of ../shared/reference (see its README; not part of CI, where the tiny golden fixtures of
tests/fixtures/make_golden_pp.py stand in):
    CROSSFORMER_OFFICIAL=/tmp/crossformer-official python benchmarks/pp_vs_official.py [--variants pp-s,pp-b]

For each variant: the authors' classifier (seeded, biases and LayerNorms moved off their init) is saved as a
release checkpoint and loaded by ``create_model(None, path)``, which must find the variant by itself; logits at
224 (batch 2). Then a fresh authors' detection backbone per input size (theirs mutates itself on small maps),
saved in the mmdet layout and loaded with ``mode="backbone"``: the four maps at each size. The same weights go
through ``crossformer-export`` (dynamic H, W, plain target) into ONNX Runtime at every size. Prints a table and
writes benchmarks/pp_vs_official.json. max abs is absolute; "scale" is the largest |output| of the reference.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

from crossformer_deploy import create_model
from crossformer_deploy.model.checkpoint import DERIVED

SIZES = [(224, 320), (256, 416), (96, 160)]  # 96x160 meets the small-map rule from stage 3 on (one 6x10 group)


def _sd(m: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v for k, v in m.state_dict().items() if not k.endswith(DERIVED)}


def _ort(path: str):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.intra_op_num_threads = 2
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def _export(ckpt: str, mode: str, variant: str, out: str) -> None:
    cmd = ["crossformer-export", "--weights", ckpt, "--variant", variant, "--mode", mode, "-o", out]
    subprocess.run(cmd, check=True, capture_output=True, text=True)


def _row(what: str, outs: list, refs: list) -> dict:
    diffs = [float(np.abs(np.asarray(o, np.float64) - r.double().numpy()).max()) for o, r in zip(outs, refs)]
    return {"what": what, "max_abs": max(diffs), "per_output": diffs,
            "scale": max(float(r.abs().max()) for r in refs)}


def check(official, variant: str, tmp: str) -> list[dict]:
    rows = []
    g = torch.Generator().manual_seed(0)
    if variant != "pp-s2":
        theirs = official.pp_classifier(variant, seed=0)
        ckpt = os.path.join(tmp, f"{variant}.pth")
        torch.save({"model": _sd(theirs)}, ckpt)
        ours = create_model(None, ckpt)
        assert ours.cfg.name == variant, f"{variant} checkpoint read as {ours.cfg.name}"
        x = torch.randn(2, 3, 224, 224, generator=g)
        with torch.no_grad():
            ref = [theirs(x)]
            rows.append(_row(f"{variant} classifier 224 torch", [ours(x).numpy()], ref))
        onnx_path = os.path.join(tmp, f"{variant}_cls.onnx")
        _export(ckpt, "classifier", variant, onnx_path)
        rows.append(_row(f"{variant} classifier 224 ORT", _ort(onnx_path).run(None, {"image": x.numpy()}), ref))
        del theirs, ours
    bb_ckpt = os.path.join(tmp, f"{variant}_bb.pth")
    onnx_path = os.path.join(tmp, f"{variant}_bb.onnx")
    sess = ours = None
    for h, w in SIZES:
        theirs = official.pp_backbone(variant, seed=0)  # fresh per size
        if ours is None:
            torch.save({"state_dict": {"backbone." + k: v for k, v in _sd(theirs).items()}}, bb_ckpt)
            ours = create_model(variant, bb_ckpt, mode="backbone")
            _export(bb_ckpt, "backbone", variant, onnx_path)
            sess = _ort(onnx_path)
        x = torch.randn(1, 3, h, w, generator=g)
        with torch.no_grad():
            ref = list(theirs(x))
            rows.append(_row(f"{variant} backbone {h}x{w} torch", [o.numpy() for o in ours(x)], ref))
        rows.append(_row(f"{variant} backbone {h}x{w} ORT", sess.run(None, {"image": x.numpy()}), ref))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variants", default="pp-s,pp-b,pp-l,pp-h,pp-s2")
    ap.add_argument("--shared", default=os.path.join(os.path.dirname(__file__), "..", "..", "shared"))
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "pp_vs_official.json"))
    args = ap.parse_args()
    sys.path.insert(0, os.path.join(args.shared, "reference"))
    import official

    torch.set_num_threads(2)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for v in args.variants.split(","):
            t0 = time.time()
            for r in check(official, v, tmp):
                rows.append(r)
                print(f"{r['what']:<36} max|diff| {r['max_abs']:.2e}  (scale {r['scale']:.1f})", flush=True)
            print(f"  [{v}: {time.time() - t0:.0f} s]", flush=True)
    with open(args.out, "w") as f:
        json.dump({"command": "python benchmarks/pp_vs_official.py", "torch": torch.__version__, "rows": rows},
                  f, indent=1)


if __name__ == "__main__":
    main()
