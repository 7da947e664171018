"""FP16 and INT8 segmenter graphs: the class maps agree with fp32 on the sample photos (AlignResized, original
size out), the sizes stay fp32, the pooling matrices and conv_seg stay float in INT8.

The golden UPerNet (tiny; BN statistics and biases off their init, logits of a few units) on ONNX Runtime CPU; the
full-size numbers (UPerNet-S, FPN-S) are in benchmarks/README.md (benchmarks/seg_vs_mmseg.py precision).
"""
import os

import numpy as np
import onnx
import pytest
import torch

from crossformer_deploy.base.images import list_images, load_image
from crossformer_deploy.base.seg_preprocess import seg_preprocess
from crossformer_deploy.export.onnx_export import to_onnx
from crossformer_deploy.export.precision.fp16 import to_fp16
from crossformer_deploy.export.precision.int8 import quantize_int8
from crossformer_deploy.model.seg import create_segmenter
from crossformer_deploy.model.seg.factory import segmenter_info
from crossformer_deploy.runtime.parity import SEG_AGREEMENT, miou_agreement, pixel_agreement
from tests.helpers import ROOT, ort_session, seg_grouping

SAMPLES = os.path.join(ROOT, "samples")


@pytest.fixture(scope="module")
def fp32(golden_seg, seg_ckpts):
    entry = golden_seg["models"]["upernet_tiny"]
    model = create_segmenter(None, seg_ckpts["upernet_tiny"], grouping=seg_grouping(entry))
    return to_onnx(model, segmenter_info(model, "golden", (256, 384)))


@pytest.fixture(scope="module")
def photos():
    # the photos at a quarter of the pipeline's scale, to keep the tiny model's test fast
    return [seg_preprocess(load_image(p), scale=(512, 128)) for p in list_images([SAMPLES])]


def class_maps(proto: onnx.ModelProto, photos) -> list[np.ndarray]:
    sess = ort_session(proto.SerializeToString())
    return [sess.run(["class_map"], {"image": x[None], "output_size": np.asarray(o, np.int64)})[0][0]
            for x, o in photos]


def agreement(ref: list[np.ndarray], got: list[np.ndarray]) -> tuple[float, float]:
    pixels = sum(r.size for r in ref)
    return (sum(pixel_agreement(r, g) * r.size for r, g in zip(ref, got)) / pixels,
            float(np.mean([miou_agreement(r, g, 5) for r, g in zip(ref, got)])))


def test_fp16(fp32, photos):
    half = to_fp16(fp32)
    types = {v.name: v.type.tensor_type.elem_type for v in onnx.shape_inference.infer_shapes(half).graph.value_info}
    producer = {o: n for n in half.graph.node for o in n.output}
    for n in half.graph.node:
        if n.op_type == "Resize":  # scales (the x2 upsamplings' constants) must stay float32
            assert len(n.input) < 3 or not n.input[2] or types.get(n.input[2], 1) == onnx.TensorProto.FLOAT
        if n.op_type == "Floor":  # the resize-to-original coordinates: sizes, computed in float32
            assert types[n.input[0]] == onnx.TensorProto.FLOAT, producer[n.input[0]].name
    pixels, miou = agreement(class_maps(fp32, photos), class_maps(half, photos))
    assert pixels >= SEG_AGREEMENT["fp16"] and miou >= 0.98, (pixels, miou)


def test_int8(fp32, photos, tmp_path):
    q = quantize_int8(fp32, None, SAMPLES, count=3, size=(128, 192), cache_path=str(tmp_path / "calib.json"),
                      progress=False)
    producer = {o: n.op_type for n in q.graph.node for o in n.output}
    quantized = {n.name for n in q.graph.node if any(producer.get(i) == "DequantizeLinear" for i in n.input)}
    convs = [n.name for n in q.graph.node if n.op_type == "Conv"]
    assert sum(c in quantized for c in convs) >= len(convs) - 2  # all but the patch embedding's? at least the heads'
    assert not [n for n in quantized if "/conv_seg/" in n or ("psp_modules" in n and "MatMul" in n)]
    pixels, miou = agreement(class_maps(fp32, photos), class_maps(q, photos))
    # the bar is the pixel share; the mean IoU of a tiny 5-class model swings with its rarest class
    # (0.88 measured), so it only guards against a collapse here
    assert pixels >= SEG_AGREEMENT["int8"] and miou >= 0.75, (pixels, miou)
    torch.manual_seed(0)


def test_float_stages_reach_a_segmenters_backbone(fp32):
    """Float stages on a segmenter: its backbone's nodes carry the classifier's /layers.{i}/ scopes, so a stage
    kept float leaves every quantizable node of that stage float and nothing of the neck or the head."""
    from crossformer_deploy.export.precision.int8 import QUANTIZED_OPS, excluded_nodes

    base = set(excluded_nodes(fp32))
    for stage in (0, 3):
        added = set(excluded_nodes(fp32, float_stages=(stage,))) - base
        scope = f"/layers.{stage}/"
        assert added and all(n.startswith(scope) for n in added), stage
        assert {n.name for n in fp32.graph.node if n.op_type in QUANTIZED_OPS and n.name.startswith(scope)} - base \
            == added


def test_segmenters_default_to_the_fc1_placement(fp32, photos, tmp_path):
    """An INT8 recipe without a placement gives a segmenter mlp-fc1 (placement.py): exactly the backbone MLPs'
    first Linears int8, nothing else; naming ``all`` still quantizes the rest. A classifier's default stays
    ``all`` (test_int8.py)."""
    from crossformer_deploy.export.recipe import Int8Options, Recipe, apply

    def quantized(proto):
        producer = {o: n.op_type for n in proto.graph.node for o in n.output}
        return {n.name for n in proto.graph.node
                if n.op_type != "QuantizeLinear" and any(producer.get(i) == "DequantizeLinear" for i in n.input)}

    opts = dict(count=3, size=(128, 192), cache_path=str(tmp_path / "calib.json"), progress=False)
    default = apply(fp32, Recipe("plain", "int8", int8=Int8Options(SAMPLES, **opts)))
    fc1 = {n.name for n in fp32.graph.node if n.op_type == "MatMul" and "/mlp/fc1/" in n.name}
    assert fc1 and quantized(default) == fc1
    everything = quantized(apply(fp32, Recipe("plain", "int8", int8=Int8Options(SAMPLES, placement="all", **opts))))
    assert fc1 < everything and any("/decode_head/" in n for n in everything)
    pixels, _ = agreement(class_maps(fp32, photos), class_maps(default, photos))
    assert pixels >= SEG_AGREEMENT["int8"], pixels
