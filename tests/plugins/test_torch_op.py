"""The fused kernel as a PyTorch custom op (plugins/torch_op.py), on the CPU under Triton's interpreter: the op's
schema, fake implementation and dispatch (``torch.library.opcheck``), and the fused model traced by torch.compile
as ONE graph (fullgraph) that gives the eager model's answer. What needs a GPU (inductor's fusions, CUDA graphs,
speed) is benchmarks/gpu_check.py's ``peers`` section; its plumbing runs here too."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.helpers import ROOT

pytest.importorskip("triton", reason="the op runs the Triton kernel")

WORKER = r"""
import copy, json, sys, torch
torch.set_num_threads(1)
from crossformer_deploy.model.factory import build_model
from crossformer_deploy.model.synthetic import perturb
from crossformer_deploy.plugins.torch_fused import fuse_attention
from crossformer_deploy.plugins.torch_op import grouped_attention
res = {}
qkv, table = torch.randn(2, 9, 11, 3 * 2 * 8), torch.randn(2, 13, 13)
res["opcheck"] = torch.library.opcheck(grouped_attention, (qkv, table, 2, "lda", 7, 2, 0.25, 0))
model = perturb(build_model("tiny", None, "classifier", 10, seed=0)).eval()
fused = fuse_attention(copy.deepcopy(model)).eval()
x = torch.randn(2, 3, 64, 96, generator=torch.Generator().manual_seed(0))
with torch.no_grad():
    want = model(x)
    fused(x)  # builds the DPB tables outside the traced graph, as the GPU benchmark does
    graphs = []
    def backend(gm, inputs):
        graphs.append(gm)
        return gm.forward
    got = torch.compile(fused, fullgraph=True, dynamic=False, backend=backend)(x)
res["max_abs"] = float((got - want).abs().max())
res["graphs"] = len(graphs)
res["op_nodes"] = sum(1 for n in graphs[0].graph.nodes if "grouped_attention" in str(n.target))
sys.path.insert(0, sys.argv[1])
import gpu_peers as gp
out = {}
gp.bench_peers(torch, out, device="cpu", order=(("tiny", 2),), size=64, n_images=4, backend="aot_eager", iters=1)
res["peers"] = out["rows"]
print(json.dumps(res))
"""


@pytest.fixture(scope="module")
def interpreted():
    env = dict(os.environ, TRITON_INTERPRET="1")
    r = subprocess.run([sys.executable, "-c", WORKER, os.path.join(ROOT, "benchmarks")], capture_output=True,
                       text=True, env=env, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_opcheck(interpreted):
    assert set(interpreted["opcheck"].values()) == {"SUCCESS"}, interpreted["opcheck"]


def test_fused_model_compiles_to_one_graph(interpreted):
    # one graph: no break at the op or around it (a ContextVar read or a data-dependent bool in the model would
    # split it per block); every block's attention one node of the op
    assert interpreted["graphs"] == 1
    assert interpreted["op_nodes"] == 8  # the tiny model's blocks
    assert interpreted["max_abs"] <= 1e-4


def test_peers_plumbing(interpreted):
    rows = {r["path"]: r for r in interpreted["peers"]}
    assert list(rows) == ["eager", "eager_graphs", "ours", "compile_ro", "ours_compiled_ro", "compile_ma",
                          "ours_compiled_ma"]
    for name, r in rows.items():
        assert "error" not in r, (name, r)
        assert r["cosine_min"] > 0.9999 and r["top1"] == 1.0, (name, r)


def test_peer_goals():
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    import gpu_peers as gp

    rows = [{"variant": "s", "batch": 1, "path": "compile_ma", "ms": 0.9, "img_s": 1111.0, "cosine_min": 1.0,
             "top1": 1.0},
            {"variant": "s", "batch": 1, "path": "ours", "ms": 1.0, "img_s": 1000.0, "cosine_min": 0.9999,
             "top1": 1.0},
            {"variant": "s", "batch": 1, "path": "ours_compiled_ma", "ms": 0.45, "img_s": 2222.0,
             "cosine_min": 0.9990, "top1": 1.0},
            {"variant": "s", "batch": 1, "path": "compile_ro", "ms": 0.5, "img_s": 2000.0, "cosine_min": 1.0,
             "top1": 1.0}]
    g = gp.goals(rows)
    assert g["s_b1_vs_compile"][0] == pytest.approx(2.0) and g["s_b1_vs_compile"][2]
    assert g["s_b1_vs_compile_ro"][0] == pytest.approx(0.5 / 0.45) and not g["s_b1_vs_compile_ro"][2]
    assert g["s_b1_ms"][2] and not g["s_b1_ours_compiled_ma_cosine"][2] and g["s_b1_ours_cosine"][2]
    lines = gp.format_rows({"rows": [*rows, {"variant": "s", "batch": 64, "path": "compile_ma", "skipped": "budget"}]})
    assert lines[-1].split() == ["s", "64", "compile_ma", "budget"], lines


def test_peer_plan_runs_the_slow_compiles_last():
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    import gpu_peers as gp

    got = gp.plan((("s", 1), ("s", 64)), paths=("compile_ma", "ours", "compile_ro"))
    assert got == [("s", 1, "ours"), ("s", 1, "compile_ro"), ("s", 64, "ours"), ("s", 64, "compile_ro"),
                   ("s", 1, "compile_ma"), ("s", 64, "compile_ma")]
