"""Shared test helpers: exports made once per session, perturbed random weights."""
from __future__ import annotations

import math
import os
import subprocess
import sys

import numpy as np
import onnx
import torch

from crossformer_deploy.model.crossformer import CrossFormer
from crossformer_deploy.model.synthetic import perturb, strong_position_bias, trained_like

__all__ = ["perturb", "strong_position_bias", "trained_like"]  # re-exported for the tests


def cli(cmd: str, *args: str, env_extra: dict | None = None, cwd: str | None = None,
        prefix: tuple = (), cache: str | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """``crossformer-<cmd> args`` in a subprocess (``prefix``: e.g. a setpriv wrapper), with a test cache
    (``cache``: this folder instead of the session's)."""
    cache = cache or os.environ.get("CROSSFORMER_TEST_CACHE", "/tmp/cf-test-cache")
    env = {**os.environ, "CROSSFORMER_DEPLOY_CACHE": cache, **(env_extra or {})}
    return subprocess.run([*prefix, sys.executable, "-m", f"crossformer_deploy.cli.{cmd}_cmd", *args],
                          capture_output=True, text=True, env=env, timeout=timeout, cwd=cwd)


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLES = [os.path.join(ROOT, "samples", f) for f in ("chelsea.jpg", "coffee.jpg", "rocket.jpg")]
SAMPLE = SAMPLES[0]


def error_lines(r: subprocess.CompletedProcess) -> list[str]:
    """stderr's lines but warnings; there must be no traceback."""
    assert "Traceback" not in r.stderr, r.stderr
    return [ln for ln in r.stderr.splitlines() if ln.strip() and not ln.startswith("warning:")]


def one_error_line(r: subprocess.CompletedProcess) -> str:
    """The single error line of a failed command (exit 2, no traceback); warnings are allowed beside it."""
    lines = error_lines(r)
    assert r.returncode == 2 and len(lines) == 1, (r.returncode, r.stderr)
    return lines[0]


def assert_one_line_error(r: subprocess.CompletedProcess, *fragments: str) -> None:
    """Exit 2, one error line (warnings allowed beside it) holding every fragment."""
    line = one_error_line(r)
    for f in fragments:
        assert f in line, line


def parity_model(mode: str = "classifier") -> CrossFormer:
    """CrossFormer-S for parity bounds: perturbed (logits span tens of units) with a trained-size position bias."""
    from crossformer_deploy.model.factory import build_model

    return trained_like(build_model("s", None, mode, 1000, seed=0))


# Faults a parity bound must catch (injected into a copy of the model, then exported and run).

def zero_position_bias(model: CrossFormer) -> CrossFormer:
    with torch.no_grad():
        for block in _blocks(model):
            block.attn.pos.pos3[2].weight.zero_()
            block.attn.pos.pos3[2].bias.zero_()
    return model


def lda_as_sda(model: CrossFormer) -> CrossFormer:
    for block in _blocks(model):
        block.lda = False
    return model


def _blocks(model: CrossFormer):
    from crossformer_deploy.model.crossformer import CrossFormerBlock

    return [m for m in model.modules() if isinstance(m, CrossFormerBlock)]


def torch_out(model: CrossFormer, x: np.ndarray) -> list[np.ndarray]:
    with torch.no_grad():
        y = model(torch.from_numpy(x))
    return [t.numpy() for t in ((y,) if isinstance(y, torch.Tensor) else y)]


def ort_session(path: str):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    opts.log_severity_level = 3
    return ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])


def per_size_constants(proto: onnx.ModelProto) -> list[tuple[str, tuple[int, ...]]]:
    """Constants shaped like something derived from one input size: a DPB bias [heads, N, N] (weights are
    rank 2 or 4) or an int64 index table (group / offset indices) — a dynamic graph must have none."""
    found = []
    tensors = [(t.name, tuple(t.dims), t.data_type) for t in proto.graph.initializer]
    for n in proto.graph.node:
        if n.op_type == "Constant":
            for a in n.attribute:
                if a.name == "value":
                    tensors.append((n.output[0], tuple(a.t.dims), a.t.data_type))
    for name, dims, dtype in tensors:
        square = len(dims) == 3 and dims[-1] == dims[-2] >= 4
        index_table = dtype == onnx.TensorProto.INT64 and len(dims) >= 2 and min(dims) > 1
        if square or index_table:
            found.append((name, dims))
    return found


# Parity bounds against the authors' code, scaled to each output.
EPS = torch.finfo(torch.float32).eps


# Why a bound relative to each output's scale, and why this size. Another CPU's BLAS (other blocking,
# summation order, FMA or not) rounds differently, so a fixed absolute bound that passes here can fail
# there, and it means nothing for outputs of another magnitude. The rounding error of a float32 dot
# product of length K grows like sqrt(K) * eps relative to its magnitude when the roundings behave like
# independent errors (K * eps is the worst case), and every sublayer on the residual path adds its own:
# k = eps * sqrt(K) * L, K the longest dot product (the MLP's hidden width) and L the sublayers (2 per
# block, 1 per embedding/merge, 1 for the head) up to that output. Measured on this CPU: the error
# is 20-100x below k. Injected once each: a zeroed position bias exceeds k 8x in the logits, 10-20x at
# stage 4 and 700-2800x in the padded LDA blocks (it moves stage 1 by 1e-7 of its scale, invisible to
# any float bound, and blk_15x22_i8 not at all); LDA grouped as SDA exceeds it 50x or more everywhere.
def k_model(cfg, stage: int, head: bool = False) -> float:
    hidden = int(max(cfg.mlp_ratios[:stage + 1]) * cfg.stage_dim(stage))
    sublayers = sum(2 * d + 1 for d in cfg.depths[:stage + 1]) + head
    return EPS * math.sqrt(hidden) * sublayers


def k_block(dim: int, mlp_ratio: float = 4.0) -> float:
    return EPS * math.sqrt(mlp_ratio * dim) * 2


def assert_close(got: torch.Tensor, ref: torch.Tensor, k: float, what: str = "") -> None:
    diff, scale = (got - ref).abs().max().item(), ref.abs().max().item()
    assert diff <= k * scale, f"{what}: max|diff| {diff:.3g} > {k:.3g} * max|ref| {scale:.3g}"


# Segmenters: the golden fixture (tests/fixtures/mm_oracle/make_golden_seg.py) and checkpoints built from it.
GOLDEN_SEG = os.path.join(ROOT, "tests", "data", "golden_seg.pt")


def seg_grouping(entry: dict) -> tuple[tuple[int, ...], tuple[int, ...]]:
    return tuple(entry["group_sizes"]), tuple(entry["intervals"])


def write_seg_checkpoint(golden: dict, name: str, path: str, extra: dict | None = None) -> str:
    """The mmseg checkpoint of golden model ``name``, as the authors' runner saves one: ``state_dict`` with the
    backbone (golden_tiny / golden_pp_tiny's tensors) under ``backbone.``, the heads (``auxiliary_head`` too), and
    a ``meta`` with mmcv's kind of content (class names, palette, config text, a numpy best score)."""
    entry = golden["models"][name]
    backbone = torch.load(os.path.join(ROOT, "tests", "data", entry["weights"]), weights_only=True)["model"]
    sd = {"backbone." + k: v for k, v in backbone.items() if not k.startswith(("norm.", "head."))}
    sd.update(entry["heads"])
    meta = {"mmseg_version": "0.29.1", "CLASSES": tuple(f"class{i}" for i in range(golden["num_classes"])),
            "PALETTE": [[i, 2 * i, 3 * i] for i in range(golden["num_classes"])], "config": "model = dict(...)",
            "iter": 80000, "hook_msgs": {"best_score": np.float64(0.4)}}
    torch.save({"meta": meta, "state_dict": sd, **(extra or {})}, path)
    return path


# Whole detectors for the command tests: a small RetinaNet (tiny backbone, FPN and head 16 wide, one tower conv,
# COCO's 80 classes) whose seeded random classifier gets a trained detector's spread: a low bias and scaled
# weights: on the sample photos 7, 6 and 0 detections score >= 0.3 at the small scale below, most pairs < 0.05.
DET_SCALE_SMALL = "128x96"  # the resize bound the test exports record: a 400x266 sample runs at 85x128 (96x128)


def small_detector(seed: int = 0):
    from crossformer_deploy.model.config import get_config
    from crossformer_deploy.model.det import DetConfig, build_detector
    from crossformer_deploy.model.seg.config import released_backbone

    cfg = DetConfig(released_backbone(get_config("tiny"), "retinanet"), 80, neck_channels=16, feat_channels=16,
                    stacked_convs=1)
    model = build_detector(cfg, seed=seed)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        cls = model.bbox_head.retina_cls
        cls.weight.copy_(torch.randn(cls.weight.shape, generator=g) * 0.3)
        cls.bias.copy_(torch.randn(cls.bias.shape, generator=g) * 0.5 - 4.0)
    return model


def write_det_checkpoint(model, path: str) -> str:
    """``model`` as the authors' mmdet runner saves a RetinaNet: ``state_dict`` (mmdet's keys) and a ``meta``."""
    sd = {k: v for k, v in model.state_dict().items() if not k.endswith(("attn.relative_position_index",
                                                                       "attn.biases", "attn_mask"))}
    meta = {"mmdet_version": "3.3.0", "dataset_meta": {"classes": ("person",) * model.num_classes}, "epoch": 12}
    torch.save({"meta": meta, "state_dict": sd}, path)
    return path


def small_mask_rcnn(seed: int = 0):
    """A small Mask R-CNN (tiny backbone, FPN / RPN / mask head 16 wide, fcs 32, one mask conv, 5 classes) whose
    seeded random box classifier is spread (tens of detections >= 0.3 on the sample photos at DET_SCALE_SMALL) and
    mask logits scaled so that masks cross 0.5."""
    from crossformer_deploy.model.config import get_config
    from crossformer_deploy.model.det import MaskRCNNConfig, build_detector
    from crossformer_deploy.model.seg.config import released_backbone

    cfg = MaskRCNNConfig(released_backbone(get_config("tiny"), "mask_rcnn"), 5, neck_channels=16, rpn_channels=16,
                         fc_channels=32, mask_channels=16, mask_convs=1)
    model = build_detector(cfg, seed=seed)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        fc = model.roi_head.bbox_head.fc_cls
        fc.weight.copy_(torch.randn(fc.weight.shape, generator=g) * 6.0 / math.sqrt(fc.weight.shape[1]))
        fc.bias.zero_()
        model.roi_head.mask_head.conv_logits.weight.mul_(8.0)
    return model
