"""CrossFormer++ (pp-tiny) through the whole pipeline: export in fp32 / FP16 / INT8, crossformer-validate
(classifier and backbone), crossformer-infer (exporting on the fly), crossformer-bench, a Triton repository,
and the one-line error for a checkpoint of the other family.

One perturbed pp-tiny checkpoint (10 classes, position bias of a trained model's size), exported once per
module per precision. The sizes 64x96 and 224x320 exercise the small-map rule (stage 3's 14 x W map at
224x320 and the 4x6 / 2x3 maps at 64x96 are one group each), LDA padding (56 -> 64 at stage 1) and, for
INT8, CrossFormer++'s 196+-token groups.
"""
from __future__ import annotations

import copy
import json
import os
import shutil

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto

from crossformer_deploy.export.onnx_export import read_info
from crossformer_deploy.export.precision.int8 import ACL_SCOPE, excluded_nodes, wide_group_pv
from crossformer_deploy.model.config import Family
from crossformer_deploy.model.crossformer import CrossFormerBlock
from crossformer_deploy.model.factory import build_model
from crossformer_deploy.runtime.parity import TOLERANCES, cosine_rows
from tests.helpers import ROOT, assert_one_line_error, cli, ort_session, torch_out, trained_like

SAMPLES = [os.path.join(ROOT, "samples", f) for f in ("chelsea.jpg", "coffee.jpg", "rocket.jpg")]
SIZES = ((64, 96), (224, 320))
CLASSES = 10
ACL_BLOCKS = 3  # pp-tiny, depths (4, 4, 4, 2): block 2 of stages 1-3 ends with a cooling layer


# ---------------------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("pp")


@pytest.fixture(scope="module")
def pp_model():
    """pp-tiny, perturbed (logits span ~30 units) with a trained-size position bias: a slip shows."""
    return trained_like(build_model("pp-tiny", None, "classifier", CLASSES, seed=0))


@pytest.fixture(scope="module")
def ckpt(pp_model, work):
    path = str(work / "pp_tiny.pth")
    torch.save({"model": pp_model.state_dict()}, path)
    return path


@pytest.fixture(scope="module")
def calib(work):
    """The three sample photos and five smooth noise images."""
    from PIL import Image

    d = work / "calib"
    d.mkdir()
    for p in SAMPLES:
        shutil.copy(p, d)
    rng = np.random.default_rng(0)
    for i in range(5):
        Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).resize((256, 256)).save(d / f"n{i}.png")
    return str(d)


def _export(ckpt, path, *flags):
    r = cli("export", "--weights", ckpt, "--crop-ratio", "1.0", *flags, "-o", path)
    assert r.returncode == 0, r.stderr
    return path


@pytest.fixture(scope="module")
def fp32_onnx(ckpt, work):
    return _export(ckpt, str(work / "fp32.onnx"))


@pytest.fixture(scope="module")
def fp16_onnx(ckpt, work):
    return _export(ckpt, str(work / "fp16.onnx"), "--fp16")


@pytest.fixture(scope="module")
def int8_onnx(ckpt, calib, work):
    # calibrated at 224 (the default), run below at 64x96 and 224x320 as well
    return _export(ckpt, str(work / "int8.onnx"), "--int8", "--calib", calib, "--calib-count", "8",
                   "--calib-cache", str(work / "ranges.json"), "--target", "onnxruntime")


def _inputs(size, batch=2, seed=0):
    return np.random.default_rng(seed).standard_normal((batch, 3, *size), dtype=np.float32)


def _run(path, x):
    return ort_session(path).run(None, {"image": x})[0]


def _consumers_dq(proto):
    """{node name: which of its inputs come from a DequantizeLinear}."""
    producer = {o: n for n in proto.graph.node for o in n.output}
    return {n.name: [producer.get(i) is not None and producer[i].op_type == "DequantizeLinear" for i in n.input]
            for n in proto.graph.node}


# ---------------------------------------------------------------------------------------- fp32

def test_fp32_dynamic_export_matches_pytorch_at_small_map_sizes(fp32_onnx, pp_model):
    proto = onnx.load(fp32_onnx)
    info = read_info(proto)
    assert info.variant == "pp-tiny" and info.dynamic and info.precision == "fp32"
    assert json.loads({p.key: p.value for p in proto.metadata_props}["architecture"])["family"] == "crossformer++"
    convs = [n for n in proto.graph.node if n.op_type == "Conv" and ACL_SCOPE in n.name]
    lns = [n for n in proto.graph.node if n.op_type == "LayerNormalization" and "/ex_ln/" in n.name]
    assert len(convs) == len(lns) == ACL_BLOCKS
    for n in convs:  # depthwise: one group per channel
        groups = next(a.i for a in n.attribute if a.name == "group")
        w = next(t for t in proto.graph.initializer if t.name == n.input[1])
        assert groups == w.dims[0] and w.dims[1] == 1, (n.name, groups, list(w.dims))
    # The bound catches a broken layout: the same weights run with the original family's layouts
    # (block.family = CROSSFORMER: ceil(map / I) LDA groups, min(H, W)^2 small-map groups) differ by far more than 1e-4
    # (measured: max |diff| 2.95 at 64x96 and 1.23 at 224x320 on logits spanning ~35 units).
    wrong = copy.deepcopy(pp_model)
    for b in wrong.modules():
        if isinstance(b, CrossFormerBlock):
            b.family = Family.CROSSFORMER
    for size in SIZES:
        x = _inputs(size)
        ref = torch_out(pp_model, x)[0]
        got = _run(fp32_onnx, x)
        assert np.ptp(ref) > 10.0  # logits of a trained model's scale
        assert np.abs(got - ref).max() <= TOLERANCES["fp32"].max_abs == 1e-4, size
        assert np.abs(torch_out(wrong, x)[0] - ref).max() > 1e-2, size


# ---------------------------------------------------------------------------------------- FP16

def test_fp16_export_keeps_layernorms_fp32_and_meets_its_row(fp16_onnx, pp_model):
    proto = onnx.shape_inference.infer_shapes(onnx.load(fp16_onnx), strict_mode=True)
    g = proto.graph
    types = {v.name: v.type.tensor_type.elem_type for v in (*g.input, *g.output, *g.value_info)}
    types.update({t.name: t.data_type for t in g.initializer})
    ex_ln = [n for n in g.node if n.op_type == "LayerNormalization" and "/ex_ln/" in n.name]
    ex_conv = [n for n in g.node if n.op_type == "Conv" and ACL_SCOPE in n.name]
    assert len(ex_ln) == len(ex_conv) == ACL_BLOCKS
    for n in ex_ln:  # the cooling layer's LayerNorm runs in fp32 like every other
        assert all(types[i] == TensorProto.FLOAT for i in n.input if i), n.name
    for n in ex_conv:  # the depthwise conv in fp16, weights stored fp16
        assert all(types[i] == TensorProto.FLOAT16 for i in n.input if i), n.name
    for size in SIZES:
        x = _inputs(size)
        cos = cosine_rows(_run(fp16_onnx, x), torch_out(pp_model, x)[0]).min()
        assert cos >= TOLERANCES["fp16"].min_cosine, (size, cos)


# ---------------------------------------------------------------------------------------- INT8

def test_int8_structure_what_stays_float(int8_onnx, fp32_onnx):
    fp32 = onnx.load(fp32_onnx)
    q = onnx.load(int8_onnx)
    assert read_info(q).precision == "int8"
    extra = read_info(q).extra["int8"]
    assert extra["scheme"] == "reduced-range" and extra["float_probability_matmuls"] == 4
    # stage 3 (G = 14, 196-token groups): its four P x V matmuls stay float; G = 4 / 7 groups are quantized
    wide = wide_group_pv(fp32, (224, 224))
    assert sorted(wide) == [f"/layers.2/blocks.{j}/attn/MatMul_1" for j in range(4)]
    assert wide_group_pv(fp32, (64, 96)) == wide  # G x G: whatever the calibration size
    dq = _consumers_dq(q)
    pv = [n.name for n in q.graph.node if n.name.endswith("/attn/MatMul_1")]
    qk = [n.name for n in q.graph.node if n.name.endswith("/attn/MatMul")]
    assert len(pv) == len(qk) == 14
    for name in pv:
        assert any(dq[name]) == (name not in wide), name
    assert all(all(dq[name]) for name in qk)
    # the cooling conv stays float (int8.py, ACL_SCOPE: why), the other convs are quantized
    acl = [n.name for n in q.graph.node if n.op_type == "Conv" and ACL_SCOPE in n.name]
    assert len(acl) == ACL_BLOCKS and not any(any(dq[n]) for n in acl)
    assert set(acl) <= set(excluded_nodes(fp32))
    other = [n.name for n in q.graph.node if n.op_type == "Conv" and ACL_SCOPE not in n.name]
    assert len(other) == 4 + 6 and all(dq[n][:2] == [True, True] for n in other)


def test_int8_meets_its_row_at_other_sizes(int8_onnx, pp_model):
    """Worst cosine over random inputs at the calibration size and two others. With stage 3's P x V
    quantized too (int8.py, PROBS_MAX_TOKENS) this fails: 0.989 at 224x320 (0.9999 with the rule)."""
    for size in ((224, 224), *SIZES):
        x = _inputs(size)
        cos = cosine_rows(_run(int8_onnx, x), torch_out(pp_model, x)[0]).min()
        assert cos >= TOLERANCES["int8"].min_cosine, (size, cos)


# ---------------------------------------------------------------------------------------- validate

@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_validate_rows(precision, request, ckpt):
    path = request.getfixturevalue(f"{precision}_onnx")
    r = cli("validate", "--model", path, "--weights", ckpt, "--sizes", "64x96,224x320", "--batch", "2", "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    rep = json.loads(r.stdout)
    assert rep["passed"] and rep["precision"] == precision and rep["tolerance"] == vars(TOLERANCES[precision])
    assert [c["size"] for c in rep["cases"]] == ["64x96", "224x320"] and all(c["passed"] for c in rep["cases"])
    if precision == "fp32":
        assert max(c["max_abs"] for c in rep["cases"]) <= 1e-4


def test_validate_backbone(ckpt, work):
    path = _export(ckpt, str(work / "backbone.onnx"), "--mode", "backbone")
    assert read_info(onnx.load(path)).variant == "pp-tiny"
    r = cli("validate", "--model", path, "--weights", ckpt, "--sizes", "64x96,224x320", "--batch", "1", "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    rep = json.loads(r.stdout)
    assert rep["passed"] and [c["output"] for c in rep["cases"]] == ["stage1", "stage2", "stage3", "stage4"] * 2
    assert max(c["max_abs"] for c in rep["cases"]) <= 1e-4


# ---------------------------------------------------------------------------------------- the other family

def test_checkpoint_of_the_other_family_is_one_line(ckpt, golden_ckpt, work):
    """A pp-tiny checkpoint named --variant tiny, and the original tiny one named --variant pp-tiny: one
    line naming both families (the ex_conv keys tell them apart)."""
    r = cli("export", "--variant", "tiny", "--weights", ckpt, "-o", str(work / "x.onnx"))
    assert_one_line_error(r, "holds CrossFormer++ (pp-tiny)", "not CrossFormer (tiny)")
    r = cli("infer", SAMPLES[0], "--variant", "pp-tiny", "--weights", golden_ckpt)
    assert_one_line_error(r, "holds CrossFormer (tiny)", "not CrossFormer++ (pp-tiny)")
    assert not os.path.exists(work / "x.onnx")


# ---------------------------------------------------------------------------------------- infer, bench, Triton

def test_infer_exports_pp_on_the_fly(ckpt, pp_model, tmp_path):
    cache = tmp_path / "cache"
    r = cli("infer", *SAMPLES, "--variant", "pp-tiny", "--weights", ckpt, "--size", "224", "--topk", "3",
            "--json", env_extra={"CROSSFORMER_DEPLOY_CACHE": str(cache)})
    assert r.returncode == 0, r.stderr
    assert "exporting CrossFormer++ (pp-tiny) to ONNX once" in r.stderr
    (exported,) = list(cache.glob("crossformer-pp-tiny-*.onnx"))
    assert read_info(onnx.load(str(exported))).variant == "pp-tiny"
    from crossformer_deploy.base.images import load_batch

    probs = torch.softmax(torch.from_numpy(torch_out(pp_model, load_batch(SAMPLES, (224, 224)))[0]), -1).numpy()
    preds = json.loads(r.stdout)
    assert len(preds) == 3
    for p, ref in zip(preds, probs):
        assert [t["class"] for t in p["topk"]] == list(np.argsort(-ref)[:3])
        assert all(abs(t["prob"] - ref[t["class"]]) < 1e-4 for t in p["topk"])


def test_bench_runs_pp(tmp_path):
    out = tmp_path / "bench.json"
    r = cli("bench", "--variant", "pp-tiny", "--sizes", "224", "--batch", "1", "--repeats", "1", "--warmup", "0",
            "--block", "1", "--pause", "0", "--backends", "torch,ort,ort-int8", "--json", str(out))
    assert r.returncode == 0, r.stderr
    rows = {row["backend"]: row for row in json.loads(out.read_text())["results"]}
    assert list(rows) == ["torch", "ort", "ort-int8"]
    for row in rows.values():
        assert row["status"] == "ok" and row["within_tolerance"] and row["median_ms"] > 0, row
    assert rows["ort"]["max_abs"] <= 1e-4


def test_triton_repository_for_a_pp_export(fp32_onnx, tmp_path):
    from crossformer_deploy.engines.triton.repository import write_repository

    write_repository(fp32_onnx, "crossformer_pp_tiny", tmp_path, max_batch=8)
    d = tmp_path / "crossformer_pp_tiny"
    config = (d / "config.pbtxt").read_text()
    assert 'platform: "onnxruntime_onnx"' in config and "max_batch_size: 8" in config
    assert 'name: "image", data_type: TYPE_FP32, dims: [ 3, -1, -1 ]' in config
    assert f'name: "logits", data_type: TYPE_FP32, dims: [ {CLASSES} ]' in config
    assert "pp-tiny" in config
    served = d / "1" / "model.onnx"
    assert served.read_bytes() == open(fp32_onnx, "rb").read()
    x = _inputs((64, 96), batch=1)
    np.testing.assert_array_equal(_run(str(served), x), _run(fp32_onnx, x))

