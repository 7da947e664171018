"""The torch-cuda provider's plumbing on the CPU: the same runner, with the fused Triton kernel running under
Triton's interpreter (TRITON_INTERPRET=1, set in a subprocess before Triton decorates the kernel), on tiny
shapes. What needs a GPU (speed, CUDA graphs, fp16 tensor cores) is benchmarks/gpu_check.py's."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.helpers import SAMPLES, cli

pytest.importorskip("triton", reason="the torch-cuda provider runs the Triton kernel")

SAMPLE = SAMPLES[0]

WORKER = r"""
import copy, json, numpy as np, torch
from crossformer_deploy.model.factory import build_model
from crossformer_deploy.plugins.torch_fused import FusedAttention
from crossformer_deploy.runtime.parity import cosine_rows
from crossformer_deploy.runtime.torch_cuda_runner import TorchCudaRunner
from crossformer_deploy.runtime.torch_runner import TorchRunner
torch.set_num_threads(1)
res = {}
for mode, size in (("classifier", (64, 96)), ("backbone", (96, 64))):
    model = build_model("tiny", None, mode, 10, seed=0)
    with torch.no_grad():  # off their init values, so that a slip in the fused path shows
        for p in model.parameters():
            if p.dim() == 1:
                p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(1)))
    x = np.random.default_rng(0).standard_normal((2, 3, *size)).astype(np.float32)
    want = TorchRunner(copy.deepcopy(model)).run({"image": x})
    for dtype in ("float32", "float16"):
        runner = TorchCudaRunner(model, dtype=getattr(torch, dtype))
        with runner:
            got = runner.run({"image": x})
            fused = sum(isinstance(m, FusedAttention) for m in runner.module.modules())
        res[f"{mode}-{dtype}"] = {
            "device": str(runner.device), "fused": fused, "outputs": sorted(got),
            "model_untouched": not any(isinstance(m, FusedAttention) for m in model.modules())
                               and next(model.parameters()).dtype == torch.float32,
            "max_abs": max(float(np.abs(got[k] - want[k]).max()) for k in want),
            "cosine": min(float(cosine_rows(got[k], want[k]).min()) for k in want),
            "top1": bool((got.get("logits", np.zeros(1)).argmax(-1)
                          == want.get("logits", np.zeros(1)).argmax(-1)).all())}
print(json.dumps(res))
"""


@pytest.fixture(scope="module")
def interpreted():
    env = dict(os.environ, TRITON_INTERPRET="1")
    r = subprocess.run([sys.executable, "-c", WORKER], capture_output=True, text=True, env=env, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("mode", ["classifier", "backbone"])
def test_fused_model_matches_eager(interpreted, mode):
    fp32, fp16 = interpreted[f"{mode}-float32"], interpreted[f"{mode}-float16"]
    for r in (fp32, fp16):
        assert r["device"] == "cpu" and r["fused"] == 8  # every block of the tiny model
        assert r["model_untouched"]  # the runner fuses and casts a copy: the reference stays fp32 and unfused
    assert fp32["outputs"] == (["logits"] if mode == "classifier" else ["stage1", "stage2", "stage3", "stage4"])
    assert fp32["max_abs"] <= 1e-4  # the same math in fp32
    assert fp16["cosine"] >= 0.9995 and fp16["top1"]


def test_without_cuda_one_line(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    code = ("import torch, sys\n"
            "from crossformer_deploy.base.errors import UsageError\n"
            "from crossformer_deploy.model.factory import build_model\n"
            "from crossformer_deploy.runtime.torch_cuda_runner import TorchCudaRunner\n"
            "try:\n"
            "    TorchCudaRunner(build_model('tiny', None, 'classifier', 10, seed=0)).load()\n"
            "except UsageError as e:\n"
            "    print(e)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert r.stdout.strip().startswith("--provider torch-cuda needs an NVIDIA GPU and a CUDA build of PyTorch; "
                                       "torch.cuda.is_available() is False here"), r.stdout + r.stderr


def test_bench_provider_torch_cuda(tmp_path):
    out = tmp_path / "b.json"
    env = dict(os.environ, TRITON_INTERPRET="1")
    r = subprocess.run([sys.executable, "-m", "crossformer_deploy.cli.bench_cmd", "--variant", "tiny", "--sizes",
                        "64", "--provider", "torch-cuda", "--repeats", "1", "--warmup", "0", "--block", "1",
                        "--json", str(out)], capture_output=True, text=True, env=env, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    rows = {row["backend"]: row for row in json.loads(out.read_text())["results"]}
    assert list(rows) == ["torch", "torch-cuda"]
    assert rows["torch-cuda"]["within_tolerance"] and rows["torch-cuda"]["median_ms"] > 0, rows["torch-cuda"]


def _cli(cmd: str, *args: str, interpret: bool, cache: str | None = None) -> subprocess.CompletedProcess:
    """A command with or without Triton's CPU interpreter (read when the kernel module is first imported)."""
    return cli(cmd, *args, env_extra={"TRITON_INTERPRET": "1" if interpret else "0"}, cache=cache, timeout=900)


def test_validate_provider_torch_cuda():
    r = _cli("validate", "--provider", "torch-cuda", "--variant", "tiny", "--sizes", "64,64x96", "--batch", "2",
             "--json", interpret=True)
    assert r.returncode == 0, r.stderr[-3000:]
    report = json.loads(r.stdout)
    assert report["precision"] == "fp16" and report["passed"] and len(report["cases"]) == 2
    assert all(c["cosine"] >= 0.9995 for c in report["cases"])
    r = _cli("validate", "--provider", "torch-cuda", "--variant", "tiny", interpret=False)
    import torch

    if not torch.cuda.is_available():
        assert r.returncode == 2 and "Traceback" not in r.stderr
        assert r.stderr.strip().splitlines() == [
            "crossformer-validate: error: --provider torch-cuda needs an NVIDIA GPU and a CUDA build of PyTorch; "
            f"torch.cuda.is_available() is False here (torch {torch.__version__})"]


def test_infer_provider_torch_cuda_agrees_with_onnx_runtime(tmp_path):
    images = SAMPLES[:2]
    common = ["--variant", "tiny", "--size", "64", "--topk", "3", "--json"]
    cache = str(tmp_path)
    fused = _cli("infer", *images, *common, "--provider", "torch-cuda", interpret=True, cache=cache)
    ort = _cli("infer", *images, *common, interpret=False, cache=cache)
    no_gpu = _cli("infer", SAMPLE, "--provider", "torch-cuda", interpret=False, cache=cache)
    with_model = _cli("infer", SAMPLE, "--model", "x.onnx", "--provider", "torch-cuda", interpret=True, cache=cache)
    assert fused.returncode == 0 and ort.returncode == 0, fused.stderr[-2000:] + ort.stderr[-2000:]
    a, b = json.loads(fused.stdout), json.loads(ort.stdout)
    assert [p["image"] for p in a] == images
    for pa, pb in zip(a, b):
        assert [t["class"] for t in pa["topk"]] == [t["class"] for t in pb["topk"]]
        assert max(abs(ta["prob"] - tb["prob"]) for ta, tb in zip(pa["topk"], pb["topk"])) <= 1e-3
    assert with_model.returncode == 2 and "give --weights and/or --variant, not --model" in with_model.stderr
    import torch

    if not torch.cuda.is_available():
        assert no_gpu.returncode == 2 and "Traceback" not in no_gpu.stderr
        assert no_gpu.stderr.strip().splitlines()[-1].startswith(
            "crossformer-infer: error: --provider torch-cuda needs an NVIDIA GPU")
