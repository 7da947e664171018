"""FP16 and INT8 whole detectors: only the backbone, neck and heads are lowered; anchors, box decoding, TopK, NMS,
RoI assignment and RoiAlign stay fp32 (export/precision/det_region.py); the graph's inputs and outputs keep their
types; the detections match the fp32 graph's on the sample photos. And the commands take the graphs.

The small RetinaNet and Mask R-CNN of tests/helpers (tiny backbone, 16-wide heads) at the small resize bound; the
full-size numbers (RetinaNet-S, Mask R-CNN-S) are benchmarks/det_precision.py's, in docs/detection.md.
"""
import json
import os

import numpy as np
import onnx
import pytest
from onnx import TensorProto

from crossformer_deploy.base.det_preprocess import det_preprocess
from crossformer_deploy.base.images import list_images, load_image
from crossformer_deploy.export.det_info import detector_info
from crossformer_deploy.export.onnx_export import read_info, to_onnx
from crossformer_deploy.export.precision.det_region import in_network
from crossformer_deploy.export.precision.fp16 import to_fp16
from crossformer_deploy.export.precision.int8 import quantize_int8
from crossformer_deploy.runtime.parity import DET_MATCH, DET_PRECISION_RULE, match_pairs
from tests.helpers import ROOT, ort_session, small_detector, small_mask_rcnn

SAMPLE_DIR = os.path.join(ROOT, "samples")
SCALE = (128, 96)  # tests/helpers.DET_SCALE_SMALL: the photos run at 85x128 (96x128 inputs)
POSTPROCESS_OPS = ("NonMaxSuppression", "TopK", "RoiAlign", "Exp", "Sigmoid")  # Exp: box decoding's exp(dw, dh)
LOWERED_OPS = ("Conv", "MatMul", "Gemm")
FLOAT, HALF = TensorProto.FLOAT, TensorProto.FLOAT16
BUILDERS = {"retinanet": small_detector, "mask_rcnn": small_mask_rcnn}


@pytest.fixture(scope="module", params=["retinanet", "mask_rcnn"])
def fp32(request):
    model = BUILDERS[request.param]()
    return to_onnx(model, detector_info(model, "random-init seed=0", SCALE))


@pytest.fixture(scope="module")
def photos():
    return [det_preprocess(load_image(p), SCALE) for p in list_images([SAMPLE_DIR])]


def detections(proto: onnx.ModelProto, photos) -> list[dict]:
    sess = ort_session(proto.SerializeToString())
    names = [o.name for o in sess.get_outputs()]
    return [dict(zip(names, sess.run(None, {"image": x[None], "image_size": row[None]}))) for x, row in photos]


def matched(ref: list[dict], got: list[dict]) -> tuple[int, int]:
    m = c = 0
    for r, g in zip(ref, got):
        assert g["dets"].dtype == np.float32 and g["labels"].dtype == np.int64
        pairs, n = match_pairs(r["dets"][0], r["labels"][0], g["dets"][0], g["labels"][0], **DET_PRECISION_RULE)
        m, c = m + len(pairs), c + n
    return m, c


def io_types(proto: onnx.ModelProto) -> dict[str, int]:
    g = proto.graph
    return {v.name: v.type.tensor_type.elem_type for v in (*g.input, *g.output)}


def tensor_types(proto: onnx.ModelProto) -> dict[str, int]:
    m = onnx.shape_inference.infer_shapes(proto, strict_mode=True)
    g = m.graph
    t = {v.name: v.type.tensor_type.elem_type for v in (*g.input, *g.output, *g.value_info)}
    t.update({i.name: i.data_type for i in g.initializer})
    return t


def test_fp16_lowers_only_the_network(fp32, photos):
    half = to_fp16(fp32)
    assert io_types(half) == io_types(fp32)
    assert {k: io_types(half)[k] for k in ("image", "image_size", "dets", "labels")} == {
        "image": FLOAT, "image_size": TensorProto.INT64, "dets": FLOAT, "labels": TensorProto.INT64}
    types = tensor_types(half)
    ops = {n.op_type for n in half.graph.node}
    assert {"NonMaxSuppression", "TopK"} <= ops
    for n in half.graph.node:
        if n.op_type in ("Cast", "Shape") or in_network(n.name):  # a Shape reads no values
            continue
        # post-processing: not one fp16 tensor in or out (anchors, decoding, scores, NMS, RoIs, RoiAlign)
        half_io = [x for x in (*n.input, *n.output) if x and types.get(x) == HALF]
        assert not half_io, (n.name, n.op_type, half_io)
    post = [n for n in half.graph.node if n.op_type in POSTPROCESS_OPS]
    assert post and not any(in_network(n.name) for n in post)
    lowered = [n for n in half.graph.node if n.op_type in LOWERED_OPS and in_network(n.name)]
    assert lowered and all(types[n.input[0]] == HALF for n in lowered if "/attn/pos/" not in n.name)
    ref, got = detections(fp32, photos), detections(half, photos)
    m, c = matched(ref, got)
    assert c >= 10 and m / c >= DET_MATCH["fp16"], (m, c)


def test_int8_quantizes_only_the_network(fp32, photos, tmp_path):
    q = quantize_int8(fp32, None, SAMPLE_DIR, count=3, cache_path=str(tmp_path / "calib.json"), progress=False)
    assert io_types(q) == io_types(fp32)
    info = read_info(q)
    assert info.precision == "int8" and info.extra["int8"]["scale"] == list(SCALE)
    assert info.extra["int8"]["resize"] == "keep-ratio-pad"
    consumers: dict[str, list] = {}
    for n in q.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    dq = [n for n in q.graph.node if n.op_type == "DequantizeLinear"]
    assert dq
    for n in dq:  # every quantized tensor feeds the network's convs and matmuls, nothing of the post-processing
        assert all(c.op_type in LOWERED_OPS and in_network(c.name) for c in consumers[n.output[0]]), n.name
    # (a head's first conv may quantize what RoiAlign produced: RoiAlign itself still reads and writes fp32)
    producer = {o: n for n in q.graph.node for o in n.output}
    heads = [n for n in q.graph.node if n.op_type in ("Conv", "Gemm")
             and n.name.startswith(("/bbox_head/", "/rpn_head/"))]
    assert heads and all(producer[n.input[0]].op_type == "DequantizeLinear" for n in heads)  # the heads are int8
    ref, got = detections(fp32, photos), detections(q, photos)
    m, c = matched(ref, got)
    # the tiny detector's 16-wide heads quantize worse than full-size ones (benchmarks/det_precision.py: the bar is
    # for those): here a floor that an INT8 box decoding or NMS would break
    assert c >= 10 and m / c >= 0.8, (m, c)


@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_export_infer_validate(precision, small_det_ckpt, tmp_path, capsys, monkeypatch):
    """crossformer-export --task det --fp16 / --int8 --calib, then infer and validate read the graph by its metadata
    as they read an fp32 one (each command's main() in this process: seconds, not a torch import each)."""
    from crossformer_deploy.cli import export_cmd, infer_cmd, validate_cmd

    monkeypatch.setenv("CROSSFORMER_DEPLOY_CACHE", str(tmp_path / "cache"))
    model = str(tmp_path / f"{precision}.onnx")
    flags = ["--fp16"] if precision == "fp16" else ["--int8", "--calib", SAMPLE_DIR, "--calib-count", "3"]
    rc = export_cmd.main(["--task", "det", "--weights", small_det_ckpt, "--scale", "128x96", *flags, "-o", model])
    assert rc == 0
    err = capsys.readouterr().err
    assert f"{precision}, target plain" in err
    if precision == "int8":  # the detectors' default placement (placement.py): only the qkv Linears int8, said so
        assert "note: INT8 detector, placement attn-qkv" in err and "warning" not in err
        graph = onnx.load(model)
        assert read_info(graph).extra["int8"]["int8_only"] == ["/attn/qkv/"]
        producer = {o: n for n in graph.graph.node for o in n.output}
        int8 = [n.name for n in graph.graph.node if n.op_type in ("MatMul", "Conv", "Gemm") and n.input[0] in producer
                and producer[n.input[0]].op_type == "DequantizeLinear"]
        assert int8 and all("/attn/qkv/" in name for name in int8), int8
    assert infer_cmd.main(["--task", "det", SAMPLE_DIR, "--model", model, "--out-dir", str(tmp_path / "out"),
                           "--json"]) == 0
    assert sum(len(rec["detections"]) for rec in json.loads(capsys.readouterr().out)) >= 3
    rc = validate_cmd.main(["--model", model, "--weights", small_det_ckpt, "--images", SAMPLE_DIR, "--json"])
    report = json.loads(capsys.readouterr().out)
    assert rc == 0 and report["passed"], report
    assert report["precision"] == precision and report["match_bar"] == DET_MATCH[precision]
    assert report["rule"] == {"score_min": 0.3, **DET_PRECISION_RULE} and report["reference"] >= 10


def test_int8_placement_all_warns(small_det_ckpt, tmp_path, capsys, monkeypatch):
    """--int8-placement all: every layer int8 (no int8_only in the metadata) and the warning that it missed its
    bar."""
    from crossformer_deploy.cli import export_cmd

    monkeypatch.setenv("CROSSFORMER_DEPLOY_CACHE", str(tmp_path / "cache"))
    model = str(tmp_path / "all.onnx")
    assert export_cmd.main(["--task", "det", "--weights", small_det_ckpt, "--scale", "128x96", "--int8", "--calib",
                            SAMPLE_DIR, "--calib-count", "1", "--int8-placement", "all", "-o", model]) == 0
    assert "warning: INT8 detectors with every layer int8" in capsys.readouterr().err
    assert "int8_only" not in read_info(onnx.load(model)).extra["int8"]
