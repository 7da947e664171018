"""benchmarks/gpu_check.py without a GPU: the launch plans it will use, the PTX parameter list they meet,
the report table, the refusal where CUDA is absent, and that it imports from a checkout with only PyTorch,
Triton and CuPy (the GPU machine's packages)."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from crossformer_deploy.model.config import Family
from crossformer_deploy.model.grouping import group_layout
from tests.helpers import ROOT

BENCH = os.path.join(ROOT, "benchmarks")
sys.path.insert(0, BENCH)
import gpu_cases as gc  # noqa: E402
import gpu_check  # noqa: E402


@pytest.fixture
def sm90(monkeypatch):
    pytest.importorskip("triton", reason="the launch plan compiles the Triton kernel")
    from triton.backends.compiler import GPUTarget

    from crossformer_deploy.plugins import tensorrt_plugin

    monkeypatch.setattr(tensorrt_plugin, "aot_target", GPUTarget("cuda", 90, 32))


@pytest.mark.parametrize("case", gc.LAYOUT_CASES, ids=lambda c: c.name)
@pytest.mark.parametrize("dtype", ["fp32", "fp16"])
def test_launch_plan_is_what_tensorrt_passes(sm90, case, dtype):
    from crossformer_deploy.plugins.ptx import entry_params

    qkv_dt = torch.float32 if dtype == "fp32" else torch.float16
    # the model's layout of the case's family: the oracle
    family = Family.from_attr(case.family)
    lay = group_layout(case.H, case.W, case.group_size, case.interval, case.mode == "lda", family)
    for tactic, block_m in ((1, 64), (2, 32)):
        plan = gc.launch_plan(case, qkv_dt, torch.float32, tactic)
        _, th, tw = gc.table_shape(case)
        assert plan.args == [("ptr", "qkv"), ("ptr", "table"),
                             *[("i32", v) for v in (case.H, case.W, lay.gh, lay.gw, lay.nh, lay.nw, lay.s, th,
                                                    tw)], ("ptr", "out")]
        assert plan.grid == (case.B * lay.nh * lay.nw, case.heads, -(-lay.gh * lay.gw // block_m))
        assert plan.block[0] % 32 == 0 and 0 < plan.shared_mem <= 48 * 1024
        params = entry_params(plan.ptx, plan.name)
        assert [("ptr" if p.is_pointer else "i32") for p in params] == [kind for kind, _ in plan.args]
        assert all(p.bits == 32 for p in params if not p.is_pointer)


def test_inputs_reference_and_eager_attention_agree():
    """The reference gpu_check compares with, and its eager baseline, on the CPU (fp32)."""
    from crossformer_deploy.plugins.reference import crop_table

    for case in gc.LAYOUT_CASES:
        qkv, table, ref = gc.inputs(case, torch.float32, torch.float32, device="cpu")
        assert ref.shape == (case.B, case.H, case.W, case.heads * case.head_dim) and torch.isfinite(ref).all()
        lay = gc.layout(case)
        eager = gc.eager_attention(qkv, crop_table(table, lay.gh, lay.gw), lay, case.heads, case.head_dim ** -0.5)
        assert (eager - ref).abs().max().item() <= 1e-5, case.name


def test_pp_layout_cases_cover_crossformer_pp():
    """The CrossFormer++ cases (family 1) are the kinds their names say, and but for plain SDA each gives
    another layout than CrossFormer's rule would: a kernel or plugin that ignored ``family`` fails them."""
    from crossformer_deploy.model.grouping import group_index

    pp = {c.name: c for c in gc.LAYOUT_CASES if c.family == 1}
    assert len(pp) >= 5 and all(c.family in (0, 1) for c in gc.LAYOUT_CASES)
    for name, case in pp.items():
        lay = gc.layout(case)
        _, valid = group_index(lay)
        all_padding = int((~valid.any(1)).sum())
        assert (all_padding > 0) == ("all_padding" in name), name
        if "small_map" in name:
            assert min(case.H, case.W) <= case.group_size
            assert (lay.gh, lay.gw, lay.nh, lay.nw, lay.s) == (case.H, case.W, 1, 1, 1), name  # one H x W group
        else:
            G, s = case.group_size, case.interval if case.mode == "lda" else 1
            assert (lay.gh, lay.gw, lay.s) == (G, G, s), name
            assert (lay.nh * lay.gh, lay.nw * lay.gw) != (case.H, case.W), f"{name}: not padded"
        cf = group_layout(case.H, case.W, case.group_size, case.interval, case.mode == "lda")
        assert (lay == cf) == (case.mode == "sda" and "small_map" not in name), name
    assert any(gc.layout(c).gh * gc.layout(c).gw > 64 for c in pp.values())  # several key blocks of 64
    assert {c.mode for c in pp.values()} == {"sda", "lda"}


def test_s_blocks_cover_crossformer_s():
    from crossformer_deploy.model.config import get_config

    blocks = gc.s_blocks(224)
    assert sum(count for _, count in blocks) == 12  # depths 2, 2, 6, 2
    assert [(c.H, c.heads, c.interval) for c, _ in blocks][::2] == [(56, 3, 8), (28, 6, 4), (14, 12, 2), (7, 24, 1)]
    _match_config(blocks, get_config("s"))
    for case, _ in blocks:  # every S block at 224 has 7x7 groups: one 64-query block
        lay = gc.layout(case)
        assert (lay.gh, lay.gw) == (7, 7) and case.family == 0


def test_pp_s_blocks_cover_crossformer_pp_s():
    from crossformer_deploy.model.config import get_config

    blocks = gc.pp_s_blocks(224)
    assert sum(count for _, count in blocks) == 24  # depths 2, 2, 18, 2
    _match_config(blocks, get_config("pp-s"))
    lays = {c.name: gc.layout(c) for c, _ in blocks}
    assert all(c.family == 1 for c, _ in blocks)
    # stages 1-2: 4x4 groups, LDA padded (56 -> 64 with I = 4, 28 -> 32 with I = 2); stages 3-4 (14 <= 14,
    # 7 <= 7): the small-map rule, one group of the whole map in SDA and LDA blocks
    assert [(v.gh, v.gw, v.nh, v.nw, v.s) for v in lays.values()] == [
        (4, 4, 14, 14, 1), (4, 4, 16, 16, 4), (4, 4, 7, 7, 1), (4, 4, 8, 8, 2),
        (14, 14, 1, 1, 1), (14, 14, 1, 1, 1), (7, 7, 1, 1, 1), (7, 7, 1, 1, 1)]


def _match_config(blocks, cfg) -> None:
    """The benchmark's block list is the model's: per stage width, heads, G, I, depth, family."""
    for i in range(cfg.num_stages):
        sda, lda = blocks[2 * i][0], blocks[2 * i + 1][0]
        assert (sda.mode, lda.mode) == ("sda", "lda")
        for case in (sda, lda):
            assert (case.heads * case.head_dim, case.heads, case.group_size, case.interval, case.family) == (
                cfg.stage_dim(i), cfg.num_heads[i], cfg.group_sizes[i], cfg.intervals[i], cfg.family.attr)
            assert case.H == case.W == 224 // (4 * 2**i)
        assert blocks[2 * i][1] + blocks[2 * i + 1][1] == cfg.depths[i]


def test_report_table_and_goals():
    report = {"machine": {"gpu": "NVIDIA H200", "torch": "2.9", "triton": "3.5"}, "sections": {
        "kernel": {"rows": [{"qkv": "fp32", "max_abs": 1e-6, "ok": True},
                            {"qkv": "fp16", "max_abs": 3e-3, "ok": False}]},
        "aot_abi": {"error": "ImportError: No module named 'cupy'"},
        "blocks": {"sums": {8: {"fused_ms": 0.1, "eager_ms": 0.25, "sdpa_ms": 0.2, "vs_eager": 2.5, "vs_sdpa": 2.0}},
                   "pp_s_sums": {8: {"fused_ms": 0.2, "eager_ms": 0.3, "sdpa_ms": 0.4, "vs_eager": 1.5,
                                     "vs_sdpa": 2.0}}},
        "model": {"cosine_min": 0.9999, "top1_agreement": 1.0, "latency_b1_ms": 1.2, "eager_fp32_latency_b1_ms": 9.0,
                  "throughput_b64_img_s": 5000, "eager_fp32_throughput_b64_img_s": 900},
        "model_pp": {"cosine_min": 0.999, "top1_agreement": 1.0, "latency_b1_ms": 1.5,
                     "eager_fp32_latency_b1_ms": 12.0, "throughput_b64_img_s": 4000,
                     "eager_fp32_throughput_b64_img_s": 700}}}
    report["goals"] = gpu_check.goals(report)
    assert {k: v[2] for k, v in report["goals"].items()} == {
        "fused_vs_eager_b8": True, "s_b1_latency_ms": False, "fp16_cosine": True, "fp16_top1": True,
        "pp_s_fp16_cosine": False, "pp_s_fp16_top1": True}
    text = gpu_check.format_table(report)
    assert "kernel: 1/2 within bars; worst max|diff| fp32 1.00e-06, fp16 3.00e-03" in text
    assert "aot_abi: ERROR ImportError" in text
    assert "blocks b8 fp16 (sum over S's blocks): fused 0.100 ms, eager 0.250 ms (2.50x)" in text
    assert "blocks b8 fp16 (sum over CrossFormer++-S's blocks): fused 0.200 ms, eager 0.300 ms (1.50x)" in text
    assert "goal s_b1_latency_ms: 1.2 vs <= 1.0 -> NOT MET" in text
    assert "model CrossFormer++-S fp16 torch-cuda vs fp32 eager: cosine 0.999000, top-1 100.0 %, b1 1.500 ms" in text
    assert "goal pp_s_fp16_cosine: 0.999 vs >= 0.9995 -> NOT MET" in text
    assert gpu_check.gpu_file_name("NVIDIA H200") == "nvidia-h200.json"


def test_runs_from_a_bare_checkout_and_refuses_without_cuda(tmp_path):
    """Only torch and triton importable, the package not installed: it must get as far as asking for CUDA."""
    code = (
        "import sys\n"
        "for m in ('onnx', 'onnxruntime', 'polygraphy', 'openvino', 'onnx_graphsurgeon', 'PIL', 'tqdm'):\n"
        "    sys.modules[m] = None\n"
        "sys.meta_path[:] = [f for f in sys.meta_path if 'editable' not in repr(f).lower()]\n"
        f"sys.path.insert(0, {BENCH!r})\n"
        "import gpu_cases\n"
        "gpu_cases.bootstrap()\n"
        "from crossformer_deploy.plugins import tensorrt_plugin, torch_fused, triton_kernel, ptx\n"
        "from crossformer_deploy.runtime.torch_cuda_runner import TorchCudaRunner\n"
        "import os\n"
        "assert os.path.realpath(tensorrt_plugin.__file__).startswith(gpu_cases.ROOT)\n"
        "import gpu_check\n"
        "sys.exit(gpu_check.main(['--out', sys.argv[1]]))\n")
    r = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, cwd=str(tmp_path),
                       env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"}, timeout=300)
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the refusal is not reachable")
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip().splitlines()[-1] == ("gpu_check.py: error: needs a CUDA GPU "
                                                 "(torch.cuda.is_available() is False)")
