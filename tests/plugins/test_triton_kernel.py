"""crossformer::GroupedAttention: PyTorch reference, Triton kernel, TensorRT registration.

The Triton kernel runs under Triton's CPU interpreter, which must be switched on (TRITON_INTERPRET=1)
before the kernel is decorated. To keep that setting out of this pytest process (other tests, and the
AOT compile below, want normal Triton), all kernel launches run in ONE subprocess: this file executed
as a script (``python tests/plugins/test_triton_kernel.py --worker``), which prints the max diffs of
every case as JSON; the parametrized tests below assert on them.
"""
import json
import os
import subprocess
import sys
import types

import pytest
import torch

from crossformer_deploy.model.attention import grouped_attention
from crossformer_deploy.model.config import Family
from crossformer_deploy.model.grouping import group_layout
from crossformer_deploy.model.position_bias import DynamicPosBias
from crossformer_deploy.plugins.reference import (
    centred_table,
    check_inputs,
    crop_table,
    grouped_attention_reference,
    pad_table,
)

FP32_TOL = 1e-5
FP16_TOL = 2e-3

# name: (B, H, W, heads, head_dim, mode, G, I, dtype, table_dtype, table_pad, block[, family])
# table_pad: extra rows/cols on each side of the exact-size table (NaN-filled: must never be read);
# block: BLOCK_M = BLOCK_N forced small so that N spans several key blocks (None: the launcher's choice);
# family: 1 for CrossFormer++'s layout (G x G groups, LDA regions of G*I; a small map is one H x W group).
CASES = {
    "lda_pad_4x5": (1, 13, 19, 2, 8, "lda", 7, 4, "fp32", "fp32", 0, 16),
    "lda_pad_4x5_b2_fp16_bigtable": (2, 13, 19, 2, 8, "lda", 7, 4, "fp16", "fp32", 2, 16),
    "lda_pad_4x5_fp16_fp16table": (1, 13, 19, 2, 8, "lda", 7, 4, "fp16", "fp16", 1, None),
    "sda_pad_9x16": (1, 9, 16, 2, 8, "sda", 7, 4, "fp32", "fp32", 0, None),
    "sda_pad_9x16_b2_blocks16_bigtable": (2, 9, 16, 2, 8, "sda", 7, 4, "fp32", "fp32", 3, 16),
    "sda_pad_9x16_fp16": (1, 9, 16, 3, 8, "sda", 7, 4, "fp16", "fp32", 0, 16),
    "small_lda_as_sda_5x9": (2, 5, 9, 2, 8, "lda", 7, 4, "fp32", "fp32", 1, 16),
    "small_sda_3x4_fp16": (1, 3, 4, 2, 8, "sda", 7, 4, "fp16", "fp16", 0, None),
    "small_7x9_lda_i1": (1, 7, 9, 2, 8, "lda", 7, 1, "fp32", "fp32", 0, None),
    "lda_i2_8x12_hd32": (1, 8, 12, 1, 32, "lda", 7, 2, "fp32", "fp32", 0, None),
    "lda_i1_full_8x10_N80": (1, 8, 10, 2, 8, "lda", 7, 1, "fp32", "fp32", 0, None),
    "lda_i1_full_8x10_N80_fp16": (1, 8, 10, 2, 8, "lda", 7, 1, "fp16", "fp32", 2, None),
    "sda_head_dim_12": (1, 10, 8, 2, 12, "sda", 7, 4, "fp32", "fp32", 0, 16),
    # CrossFormer++: 13x19 pads to 16x24, regions of 8, stride 2
    "pp_lda_pad_g4_i2": (1, 13, 19, 2, 8, "lda", 4, 2, "fp32", "fp32", 0, 16, 1),
    "pp_lda_pad_g4_i2_fp16_bigtable": (2, 13, 19, 2, 8, "lda", 4, 2, "fp16", "fp32", 2, None, 1),
    # 17x9 at G 4, I 4: rows pad to 32, so groups of region 2 starting at rows 17-19 are all padding
    "pp_lda_allpad_groups_17x9": (1, 17, 9, 2, 8, "lda", 4, 4, "fp32", "fp32", 0, 16, 1),
    "pp_lda_g7_i8_15x22": (1, 15, 22, 1, 16, "lda", 7, 8, "fp32", "fp32", 1, None, 1),
    "pp_sda_pad_9x20_g4": (2, 9, 20, 2, 8, "sda", 4, 2, "fp32", "fp32", 0, None, 1),
    # min(H, W) <= G: one 6x10 group (N = 60, several key blocks), in an LDA block too
    "pp_small_one_group_6x10": (1, 6, 10, 2, 8, "lda", 14, 1, "fp32", "fp32", 1, 16, 1),
    "pp_small_one_group_6x10_fp16": (1, 6, 10, 2, 8, "sda", 7, 1, "fp16", "fp16", 0, None, 1),
}
DTYPES = {"fp32": torch.float32, "fp16": torch.float16}


def _case_inputs(case):
    B, H, W, heads, hd, mode, G, iv, dt, tdt, pad, _, *family = case
    family = family[0] if family else 0
    lay = group_layout(H, W, G, iv, mode == "lda", Family.from_attr(family))
    gen = torch.Generator().manual_seed(H * 1000 + W * 10 + heads)
    qkv = torch.randn(B, H, W, 3 * heads * hd, generator=gen).to(DTYPES[dt])
    table = torch.randn(heads, 2 * lay.gh - 1, 2 * lay.gw - 1, generator=gen).to(DTYPES[tdt])
    if pad:
        table = pad_table(table, table.shape[1] + 2 * pad, table.shape[2] + 2 * pad)
    return qkv, table, (heads, mode, G, iv, hd**-0.5, family)


def _worker() -> None:
    """Runs in the subprocess, with the interpreter switched on before Triton decorates the kernel."""
    os.environ["TRITON_INTERPRET"] = "1"
    torch.set_num_threads(1)
    from crossformer_deploy.plugins import triton_kernel as tk

    results = {}
    for name, case in CASES.items():
        qkv, table, attrs = _case_inputs(case)
        # fp32 reference on exactly the (rounded) inputs the kernel sees
        ref = grouped_attention_reference(qkv.float(), table.float(), *attrs)
        out = tk.grouped_attention_triton(qkv, table, *attrs, block_m=case[11], block_n=case[11])
        results[name] = {"max_abs": (out.float() - ref).abs().max().item(), "dtype": str(out.dtype),
                         "shape": list(out.shape)}
    # a table smaller than the group needs, passed straight to the kernel (the launcher would refuse it):
    # the output must be NaN (no out-of-bounds read, no silent garbage)
    qkv, table, _ = _case_inputs(CASES["lda_pad_4x5"])
    sc = tk.layout_scalars(13, 19, 7, 4, True)
    out = torch.zeros(1, 13, 19, 16)
    tk.grouped_attention_kernel[(sc["nh"] * sc["nw"], 2, 2)](
        qkv, table[:, 1:-1, 1:-1].contiguous(), 13, 19, *(sc[k] for k in ("gh", "gw", "nh", "nw", "s")),
        5, 7, out, NUM_HEADS=2, HEAD_DIM=8, SCALE=0.3, BLOCK_M=16, BLOCK_N=16, BLOCK_D=16)
    results["_small_table_all_nan"] = bool(out.isnan().all())
    print(json.dumps(results))


@pytest.fixture(scope="module")
def kernel_results():
    pytest.importorskip("triton", reason="OpenAI Triton is not installed (`pip install triton`)")
    env = dict(os.environ, TRITON_INTERPRET="1")
    proc = subprocess.run([sys.executable, __file__, "--worker"], capture_output=True, text=True, env=env,
                          timeout=600)
    assert proc.returncode == 0, f"kernel worker failed:\n{proc.stderr[-4000:]}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("name", list(CASES))
def test_triton_kernel_matches_reference(kernel_results, name):
    r = kernel_results[name]
    B, H, W, heads, hd = CASES[name][:5]
    assert r["shape"] == [B, H, W, heads * hd]
    assert r["dtype"] == str(DTYPES[CASES[name][8]])
    tol = FP32_TOL if CASES[name][8] == "fp32" else FP16_TOL
    assert r["max_abs"] <= tol, f"{name}: max abs diff {r['max_abs']:.3g} > {tol}"


def test_triton_kernel_too_small_table_gives_nan(kernel_results):
    assert kernel_results["_small_table_all_nan"]


# --- reference vs the model ---------------------------------------------------------------------------

@pytest.mark.parametrize("H,W,mode,G,iv,family", [
    (13, 19, "lda", 7, 4, 0), (9, 16, "sda", 7, 8, 0), (5, 9, "lda", 7, 4, 0), (7, 9, "lda", 7, 1, 0),
    (16, 16, "lda", 7, 2, 0), (3, 3, "sda", 7, 8, 0),
    (13, 19, "lda", 4, 2, 1), (17, 9, "lda", 4, 4, 1), (9, 20, "sda", 4, 2, 1), (6, 10, "lda", 14, 1, 1)])
def test_reference_is_the_model_exactly(H, W, mode, G, iv, family):
    torch.manual_seed(0)
    heads, hd = 3, 4
    pos = DynamicPosBias(48, heads)  # 48 // 16 = 3 hidden units
    lay = group_layout(H, W, G, iv, mode == "lda", Family.from_attr(family))
    flat = pos.table(lay.gh, lay.gw).detach()
    qkv = torch.randn(2, H, W, 3 * heads * hd)
    expected = grouped_attention(qkv, flat, lay, heads, hd**-0.5)
    exact = centred_table(flat, lay.gh, lay.gw)
    assert torch.equal(grouped_attention_reference(qkv, exact, heads, mode, G, iv, hd**-0.5, family), expected)
    big = pad_table(exact, exact.shape[1] + 4, exact.shape[2] + 2)  # NaN padding: must never be read
    assert torch.equal(grouped_attention_reference(qkv, big, heads, mode, G, iv, hd**-0.5, family), expected)


def test_centred_table_convention():
    """Entry [h, ch + dh, cw + dw] is the DPB of offset (dh, dw); pad/crop round-trip."""
    torch.manual_seed(0)
    pos = DynamicPosBias(64, 2)
    gh, gw = 3, 4
    t = centred_table(pos.table(gh, gw).detach(), gh, gw)
    for dh, dw in [(0, 0), (2, -3), (-1, 1), (-2, 3)]:
        direct = pos(torch.tensor([[float(dh), float(dw)]])).detach()[0]
        assert torch.allclose(t[:, gh - 1 + dh, gw - 1 + dw], direct, atol=1e-6)
    big = pad_table(t, 9, 11)
    assert torch.equal(crop_table(big, gh, gw), pos.table(gh, gw).detach())


@pytest.mark.parametrize("change,error", [
    (dict(table_shape=(3, 6, 9)), ValueError),  # even size
    (dict(table_shape=(3, 5, 9)), ValueError),  # too small for a 4x5 group (needs 7x9)
    (dict(table_shape=(2, 7, 9)), ValueError),  # wrong number of heads
    (dict(qkv_shape=(1, 13, 19, 3 * 10)), ValueError),  # C = 10 not divisible by 3 heads
    (dict(qkv_shape=(1, 13, 19, 3 * 12 + 1)), ValueError),
    (dict(qkv_shape=(1, 0, 19, 36)), ValueError),
    (dict(mode="swin"), ValueError),
    (dict(qkv_dtype=torch.bfloat16), TypeError),
    (dict(qkv_dtype=torch.float32, table_dtype=torch.float16), TypeError),
])
def test_check_inputs_rejects(change, error):
    args = dict(qkv_shape=(1, 13, 19, 36), qkv_dtype=torch.float16, table_shape=(3, 7, 9),
                table_dtype=torch.float32, num_heads=3, mode="lda", group_size=7, interval=4)
    check_inputs(**args)  # the unchanged arguments are valid
    with pytest.raises(error):
        check_inputs(**{**args, **change})


# --- layout arithmetic shared by the launcher and the TensorRT plugin ---------------------------------

def _v(x):
    """The int behind a StrictSym (or the int itself)."""
    return x.v if isinstance(x, StrictSym) else x


class StrictSym:
    """Stand-in for TensorRT's symbolic shape expressions: +, -, *, //, < with the symbol on the LEFT
    only (no reflected operators, no bool()), so the layout code must be written the way TensorRT needs."""

    def __init__(self, v: int):
        self.v = int(v)

    def __add__(self, o): return StrictSym(self.v + _v(o))
    def __sub__(self, o): return StrictSym(self.v - _v(o))
    def __mul__(self, o): return StrictSym(self.v * _v(o))
    def __floordiv__(self, o): return StrictSym(self.v // _v(o))
    def __lt__(self, o): return StrictSym(self.v < _v(o))

    def __bool__(self):
        raise AssertionError("layout code branched on a symbolic value")

    @property
    def is_constant(self):
        return True

    def constant_value(self):
        return self.v


def _sym_op(f):
    def op(a, b):
        assert isinstance(a, StrictSym) or isinstance(b, StrictSym), "trtp.min/max/cdiv refuse two ints"
        return StrictSym(f(_v(a), _v(b)))
    return op


SYM_OPS = types.SimpleNamespace(min=_sym_op(min), max=_sym_op(max), cdiv=_sym_op(lambda a, b: -(-a // b)))


def test_layout_scalars_match_group_layout():
    from crossformer_deploy.plugins.triton_kernel import layout_scalars

    for pp, G, iv in [(False, 7, 8), (False, 7, 4), (False, 7, 2), (False, 7, 1), (False, 3, 2), (True, 4, 4),
                      (True, 4, 2), (True, 14, 1), (True, 7, 8), (True, 3, 2)]:
        for lda in (False, True):
            for H in range(1, 27):
                for W in range(1, 27, 3):
                    lay = group_layout(H, W, G, iv, lda, pp)
                    want = dict(gh=lay.gh, gw=lay.gw, nh=lay.nh, nw=lay.nw, s=lay.s)
                    assert layout_scalars(H, W, G, iv, lda, pp) == want, (H, W, G, iv, lda, pp)
                    sym = layout_scalars(StrictSym(H), StrictSym(W), G, iv, lda, pp, ops=SYM_OPS)
                    assert {k: _v(v) for k, v in sym.items()} == want, (H, W, G, iv, lda, pp)


# --- TensorRT ------------------------------------------------------------------------------------------

def test_tensorrt_plugin_imports_without_tensorrt():
    from crossformer_deploy.plugins import tensorrt_plugin

    assert tensorrt_plugin.PLUGIN_ID == "crossformer::GroupedAttention"
    if "tensorrt" in tensorrt_plugin.missing_requirements():
        with pytest.raises(RuntimeError, match="tensorrt"):
            tensorrt_plugin.register()


def test_triton_kernel_module_imports_without_triton():
    code = ("import sys; sys.modules['triton'] = None\n"
            "from crossformer_deploy.plugins import triton_kernel as tk\n"
            "import torch\n"
            "try:\n"
            "    tk.grouped_attention_triton(torch.zeros(1, 7, 7, 6), torch.zeros(1, 13, 13), 1, 'sda', 7, 1, 1.0)\n"
            "except RuntimeError as e:\n"
            "    assert 'triton' in str(e).lower(); print('ok')\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.stdout.strip() == "ok", proc.stderr[-2000:]


def test_tensorrt_register_for_real():
    pytest.importorskip("tensorrt", reason="TensorRT's libraries are not installable here; "
                                           "tests/plugins/test_tensorrt_plugin.py drives the registration through "
                                           "the real tensorrt.plugin on a fake core")
    import tensorrt as trt

    from crossformer_deploy.plugins import tensorrt_plugin

    tensorrt_plugin.register()
    ns, name = tensorrt_plugin.PLUGIN_NAMESPACE, tensorrt_plugin.PLUGIN_NAME
    assert trt.get_plugin_registry().get_creator(name, "1", ns) is not None


def _cuda_target():
    """A CUDA target for Triton's compiler, or skip if this Triton cannot compile for one without a GPU."""
    triton = pytest.importorskip("triton", reason="OpenAI Triton is not installed (`pip install triton`)")
    import triton.language as tl
    from triton.backends.compiler import GPUTarget

    @triton.jit
    def probe(x_ptr, BLOCK: tl.constexpr):
        tl.store(x_ptr + tl.arange(0, BLOCK), tl.arange(0, BLOCK).to(tl.float32))

    target = GPUTarget("cuda", 90, 32)
    fn = probe if isinstance(probe, triton.runtime.JITFunction) else triton.runtime.JITFunction(probe.fn)
    try:
        triton.compile(triton.compiler.ASTSource(fn=fn, signature={"x_ptr": "*fp32"}, constexprs={"BLOCK": 16}),
                       target=target)
    except Exception as e:  # e.g. a Triton build without the NVIDIA backend
        pytest.skip(f"Triton cannot compile for a CUDA target without a GPU here: {type(e).__name__}: {e}")
    return target


if __name__ == "__main__" and "--worker" in sys.argv:
    _worker()
