"""Each pass: its pattern is gone, and the outputs on ONNX Runtime are unchanged (<= 1e-5)."""
import os

import numpy as np
import onnx
import pytest

from crossformer_deploy import create_model
from crossformer_deploy.base.model_info import ModelInfo
from crossformer_deploy.export.onnx_export import to_onnx
from crossformer_deploy.export.passes.blocks import PassError
from crossformer_deploy.export.pipeline import run_pipeline
from crossformer_deploy.model.factory import build_model
from crossformer_deploy.plugins.onnx_function import attach_functions
from tests.helpers import perturb

SIZES = [(224, 224), (256, 320), (96, 160)]  # square; non-square with padded SDA; small maps


def ort_run(proto: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = ort.InferenceSession(proto.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return sess.run(None, {"image": x})[0]


@pytest.fixture(scope="module")
def tiny_proto(golden_ckpt):
    return to_onnx(create_model(None, golden_ckpt), ModelInfo("tiny", "classifier", 10, "golden"))


@pytest.fixture(scope="module")
def s_proto():
    return to_onnx(perturb(build_model("s")), ModelInfo("s", "classifier", 1000, "perturbed"))


def inputs(h, w, b=2):
    return np.random.default_rng(h + w).standard_normal((b, 3, h, w), dtype=np.float32)


def names(proto, prefix=""):
    return [n for n in proto.graph.node if n.name.startswith(prefix)]


def test_fold_dpb_dynamic_max_size(tiny_proto):
    out = run_pipeline(tiny_proto, "onnxruntime", max_size=(320, 448))
    assert not [n for n in out.graph.node if "/attn/pos/" in n.name and n.op_type == "LayerNormalization"]
    assert len([n for n in out.graph.node if n.name.endswith("attn/dpb_folded/Gather")]) == 8
    for h, w in [*SIZES, (320, 448)]:
        x = inputs(h, w)
        assert np.abs(ort_run(out, x) - ort_run(tiny_proto, x)).max() <= 1e-5


def test_fold_dpb_static_leaves_constant_bias(golden_ckpt):
    model = create_model(None, golden_ckpt)
    proto = to_onnx(model, ModelInfo("tiny", "classifier", 10, "g", input_size=(256, 320), dynamic=False, batch=1))
    out = run_pipeline(proto, "onnxruntime")
    assert not [n for n in out.graph.node if n.op_type in ("Range", "LayerNormalization") and "/attn/" in n.name]
    biases = [t for t in out.graph.initializer
              if "/attn/" in t.name and len(t.dims) >= 3 and t.dims[-1] == t.dims[-2] >= 49]
    assert len(biases) == 8  # one folded bias (DPB + key mask) [nG, heads, N, N] per block
    x = inputs(256, 320, 1)
    assert np.abs(ort_run(out, x) - ort_run(proto, x)).max() <= 1e-5
    assert len(out.graph.node) < 0.6 * len(proto.graph.node)  # the shape arithmetic is gone


def test_fold_dpb_counts_blocks(tiny_proto):
    proto = onnx.ModelProto()
    proto.CopyFrom(tiny_proto)
    for p in proto.metadata_props:
        if p.key == "architecture":
            p.value = p.value.replace('"depths": [2, 2, 2, 2]', '"depths": [2, 2, 2, 3]')
    with pytest.raises(PassError, match="matched 8 times, expected 9"):
        run_pipeline(proto, "onnxruntime", max_size=(224, 224))


def test_fuse_grouped_attention_s(s_proto):
    fused = run_pipeline(s_proto, "tensorrt", max_size=(320, 448))
    ops = [n.op_type for n in fused.graph.node]
    assert ops.count("GroupedAttention") == 12 and "Softmax" not in ops
    assert not [n for n in names(fused, "/layers.") if n.op_type == "Transpose" and "/attn/" in n.name]
    assert all(n.domain == "crossformer" for n in fused.graph.node if n.op_type == "GroupedAttention")
    assert not fused.functions  # the tensorrt target leaves the op to the plugin
    onnx.checker.check_model(fused, full_check=True)
    assert attach_functions(fused) == 12
    for h, w in [(224, 224), (256, 320), (320, 448)]:
        x = inputs(h, w, 1)
        ref = ort_run(s_proto, x)
        # float32 rounding of logits that span ~30 units: a few ulps (ulp(16) = 1.9e-6), scaled to the logits
        assert np.abs(ort_run(fused, x) - ref).max() <= 1e-6 * np.ptp(ref)


def test_fuse_unbounded_dynamic_tiny(tiny_proto):
    """No max size: the op gets the table computed at run time from the DPB MLP."""
    fused = run_pipeline(tiny_proto, "tensorrt", functions=True)
    assert [n.op_type for n in fused.graph.node].count("GroupedAttention") == 8
    assert [n.op_type for n in fused.graph.node].count("Softmax") == 0
    for h, w in [*SIZES, (64, 96)]:
        x = inputs(h, w)
        assert np.abs(ort_run(fused, x) - ort_run(tiny_proto, x)).max() <= 1e-5


def test_cleanup_leaves_no_files_behind(tiny_proto, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run_pipeline(tiny_proto, "onnxruntime")
    assert os.listdir(tmp_path) == []


def test_explain_through_cli(golden_ckpt, tmp_path):
    from tests.helpers import cli

    r = cli("export", "--weights", golden_ckpt, "--target", "tensorrt", "--max-size", "256x256", "--explain",
            "-o", str(tmp_path / "t.onnx"))
    assert r.returncode == 0, r.stderr
    lines = r.stderr.splitlines()
    assert any("fold_dpb" in ln and "LayerNormalization -24" in ln for ln in lines)
    assert any("fuse_grouped_attention" in ln and "->" in ln for ln in lines)
    assert any("GroupedAttention 8" in ln for ln in lines)


def test_static_graph_keeps_one_bias_per_block(golden_ckpt):
    """At 224x320 the SDA blocks pad the width (56x80 -> 8x12 groups of 7x7, 28x40 -> 4x6, ...): they add a
    [nG, 1, 1, N] key mask after the bias; the LDA blocks of stages 1-3 pad nothing (I divides every map) and add
    none. Every block's position bias is one [1, heads, N, N] constant, never one per group (the model adds the bias
    before the mask, so folding never multiplies it by nG)."""
    import onnx_graphsurgeon as gs

    model = create_model(None, golden_ckpt)
    proto = to_onnx(model, ModelInfo("tiny", "classifier", 10, "g", input_size=(224, 320), dynamic=False, batch=1))
    out = run_pipeline(proto, "onnxruntime")
    consts = [tuple(c.values.shape) for n in gs.import_onnx(out).nodes if n.op == "Add" and "/attn/" in (n.name or "")
              for c in n.inputs if isinstance(c, gs.Constant) and c.values.ndim >= 3]
    # the bias broadcasts over the groups as [1, heads, N, N]; the key mask over heads and queries as [nG, 1, 1, N]
    biases = [s for s in consts if s[0] == 1 and s[2] == s[3]]
    masks = [s for s in consts if s[1:3] == (1, 1)]
    assert biases == [(1, 1, 49, 49), (1, 1, 70, 70), (1, 2, 49, 49), (1, 2, 70, 70), (1, 4, 49, 49), (1, 4, 70, 70),
                      (1, 8, 49, 49), (1, 8, 49, 49)], biases
    # stage 4 (7x10) is a small map: both its blocks run SDA with 7x7 groups over a map padded to 7x14
    assert masks == [(96, 1, 1, 49), (24, 1, 1, 49), (6, 1, 1, 49), (2, 1, 1, 49), (2, 1, 1, 49)], masks
    x = inputs(224, 320, 1)
    assert np.abs(ort_run(out, x) - ort_run(proto, x)).max() <= 1e-5
