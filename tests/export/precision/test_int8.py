"""INT8 graphs (export/precision/int8.py, schemes.py): Q/DQ structure, accuracy on the digits model, the weight
schemes on an emulated AVX2 CPU, the scheme each target gets."""
import json
from types import SimpleNamespace

import numpy as np
import onnx
import pytest
from onnx import TensorProto, numpy_helper

from crossformer_deploy.export.onnx_export import read_info
from crossformer_deploy.export.precision.int8 import (
    QUANTIZED_OPS,
    excluded_nodes,
)
from crossformer_deploy.export.precision.schemes import graph_scheme
from crossformer_deploy.runtime.parity import cosine_rows
from tests.conftest import DIGITS_CKPT as CKPT
from tests.export.precision.conftest import CALIB_COUNT, LINEAR_OPS, SIZE, _float_constants, _logits, _types  # noqa: F401
from tests.helpers import ort_session

pytest.importorskip("sklearn", reason="the digits example needs scikit-learn")


def test_int8_qdq_structure(int8, fp32):
    proto, _ = int8
    g = proto.graph
    producer = {o: n for n in g.node for o in n.output}
    consumers = {}
    for n in g.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    inits = {t.name: t for t in g.initializer}
    excluded = set(excluded_nodes(fp32[0]))
    quantized = [n for n in g.node if n.op_type in QUANTIZED_OPS and n.name not in excluded]
    assert len(quantized) == 10 + 6 * 6  # every Conv, and qkv/QK^T/PV/proj/fc1/fc2 of the 6 blocks
    assert all("/attn/pos/" in n or "/head/" in n for n in excluded)

    def dq_of(name):
        dq = producer.get(name)
        assert dq is not None and dq.op_type == "DequantizeLinear", name
        return dq

    for n in quantized:
        data = n.input if n.op_type == "MatMul" else n.input[:2]
        for i in data:
            dq = dq_of(i)
            src = dq.input[0]
            axis = next((a.i for a in dq.attribute if a.name == "axis"), None)
            if src in inits:  # weight: int8, one scale per output channel
                w = inits[src]
                assert w.data_type == TensorProto.INT8
                assert axis == (1 if n.op_type == "MatMul" else 0)
                assert numpy_helper.to_array(inits[dq.input[1]]).shape == (w.dims[axis],)
            else:  # activation: Q -> DQ, per tensor
                assert producer[src].op_type == "QuantizeLinear" and axis is None
        if n.op_type == "Conv" and len(n.input) == 3:
            assert n.input[2] in inits and inits[n.input[2]].data_type == TensorProto.FLOAT  # float bias
    for n in g.node:
        if n.op_type in ("QuantizeLinear", "DequantizeLinear"):
            zp = inits[n.input[2]]
            assert zp.data_type == TensorProto.INT8 and not numpy_helper.to_array(zp).any()
    # nothing quantized around LayerNorm, Softmax, the residual Adds, the DPB path, the head
    for n in g.node:
        float_only = n.op_type in ("LayerNormalization", "Softmax", "Add") or "/attn/pos/" in n.name \
            or n.name in excluded
        if float_only:
            assert not any(producer.get(i) is not None and producer[i].op_type == "DequantizeLinear"
                           for i in n.input), n.name
        if n.op_type == "Add" or "/attn/pos/" in n.name:  # (a LayerNorm output may feed a Q: qkv, fc1)
            assert not any(c.op_type == "QuantizeLinear" for o in n.output for c in consumers.get(o, [])), n.name
    assert read_info(proto).precision == "int8"


def test_int8_accuracy_on_digits(logits, test_split):
    _, y = test_split
    a, b = logits["fp32"], logits["int8"]
    acc32, acc8 = (a.argmax(1) == y).mean(), (b.argmax(1) == y).mean()
    cos = cosine_rows(b, a)
    print(f"int8: accuracy {100 * acc8:.2f} % (fp32 {100 * acc32:.2f} %), agreement "
          f"{100 * (a.argmax(1) == b.argmax(1)).mean():.2f} %, cosine worst {cos.min():.5f} mean {cos.mean():.5f}")
    assert 100 * (acc32 - acc8) <= 0.3
    assert cos.min() >= 0.99  # the bar, on the worst test image (not the mean)


def test_int8_dynamic_sizes_and_options(int8, fp32, test_split):
    """Scales are per tensor / per channel, so the calibrated graph stays right at other sizes."""
    x = test_split[0][:4]
    for h, w in ((64, 96), (96, 64)):
        xs = np.ascontiguousarray(np.resize(x, (4, 3, h, w)).astype(np.float32))
        assert cosine_rows(_logits(int8[1], xs), _logits(fp32[1], xs)).min() >= 0.99, (h, w)
    everything = excluded_nodes(fp32[0], quantize_head=True)
    assert not any("/head/" in n for n in everything) and all("/attn/pos/" in n for n in everything)
    no_attn = set(excluded_nodes(fp32[0], quantize_attention=False)) - set(excluded_nodes(fp32[0]))
    assert len(no_attn) == 2 * 6 and all(n.endswith(("/attn/MatMul", "/attn/MatMul_1")) for n in no_attn)




def test_cli_fp16_int8_and_validate(tmp_path, digits_data):
    """The flags end to end: export, then crossformer-validate on labelled digits (accuracy reported)."""
    from tests.helpers import assert_one_line_error, cli

    ckpt = CKPT
    digits_data.export_image_folder(str(tmp_path / "calib"), "train", limit=32)
    digits_data.export_image_folder(str(tmp_path / "test"), "test", limit=40)
    for flags in (["--fp16"], ["--int8", "--calib", str(tmp_path / "calib"), "--calib-size", "64"]):
        out = str(tmp_path / "m.onnx")
        r = cli("export", "--weights", ckpt, "--crop-ratio", "1.0", *flags, "-o", out)
        assert r.returncode == 0, r.stderr
        r = cli("validate", "--model", out, "--weights", ckpt, "--sizes", "64", "--batch", "4",
                "--images", str(tmp_path / "test"), "--json")
        assert r.returncode == 0, r.stderr
        rep = json.loads(r.stdout)
        assert rep["passed"] and rep["precision"] == ("fp16" if flags == ["--fp16"] else "int8")
        assert rep["accuracy"]["images"] == 40 and rep["accuracy"]["runtime"] >= 0.95
    assert_one_line_error(cli("export", "--variant", "tiny", "--int8", "-o", str(tmp_path / "x.onnx")),
                          "--int8 needs --calib")


# ---------------------------------------------------------------------------------------- INT8 schemes
def _int8_weights(proto):
    """The int8 weight initializers of the quantized Conv/MatMul/Gemm nodes."""
    producer = {o: n for n in proto.graph.node for o in n.output}
    inits = {t.name: t for t in proto.graph.initializer}
    for n in proto.graph.node:
        if n.op_type in QUANTIZED_OPS:
            dq = producer.get(n.input[1])
            if dq is not None and dq.op_type == "DequantizeLinear" and dq.input[0] in inits:
                yield n, numpy_helper.to_array(inits[dq.input[0]])


def test_int8_schemes_weight_range_and_metadata(int8, int8_symmetric):
    """Default (CPU) scheme: 7-bit weights, every output channel using the full [-64, 64]; symmetric: 8-bit."""
    for (proto, _), scheme, top in ((int8, "reduced-range", 64), (int8_symmetric, "symmetric", 127)):
        weights = list(_int8_weights(proto))
        assert len(weights) == 10 + 4 * 6  # every Conv and the four weighted matmuls of each block
        assert read_info(proto).extra["int8"]["scheme"] == scheme == graph_scheme(read_info(proto))
        for n, w in weights:
            axis = 1 if n.op_type == "MatMul" else 0
            per_channel = np.abs(w.astype(np.int32)).max(axis=tuple(i for i in range(w.ndim) if i != axis))
            assert (per_channel == top).all(), (n.name, scheme, per_channel.min(), per_channel.max())


def _avx2_u8s8(a_u8: np.ndarray, w_s8: np.ndarray) -> np.ndarray:
    """u8 [M, K] x s8 [K, N] as CPUs without VNNI compute it (vpmaddubsw, then vpmaddwd by ones): each
    pair of products k = 2i, 2i+1 is summed into a *saturating* int16, the pairs then exactly in int32."""
    a = a_u8.astype(np.int32)
    w = w_s8.astype(np.int32)
    if a.shape[1] % 2:
        a, w = np.pad(a, ((0, 0), (0, 1))), np.pad(w, ((0, 1), (0, 0)))
    pairs = a[:, 0::2, None] * w[None, 0::2] + a[:, 1::2, None] * w[None, 1::2]  # [M, K/2, N]
    return np.clip(pairs, -32768, 32767).sum(1)


def test_int8_schemes_on_emulated_avx2(int8, int8_symmetric, test_split, work):
    """Emulated, not measured: the real s8 activations of every weighted MatMul, turned into u8 with zero
    point 128 as ONNX Runtime does on x86, multiplied as an AVX2 CPU does. Symmetric 8-bit weights
    saturate; 7-bit ones give the exact int32 result (|pair| <= 2 * 255 * 64 < 32767), bit for bit.
    (benchmarks/README.md has the end-to-end numbers, measured under an emulated AVX2 CPUID.)"""
    x = test_split[0][:2]
    wrong = {}
    for (proto, _), scheme in ((int8, "reduced-range"), (int8_symmetric, "symmetric")):
        probe = onnx.ModelProto()
        probe.CopyFrom(proto)
        producer = {o: n for n in probe.graph.node for o in n.output}
        cases = []
        for n, w in _int8_weights(probe):
            if n.op_type == "MatMul":
                q = producer[n.input[0]].input[0]  # DequantizeLinear <- the activation's QuantizeLinear output
                probe.graph.output.append(onnx.helper.make_tensor_value_info(q, TensorProto.INT8, None))
                cases.append((q, w))
        probe_path = str(work / f"probe_{scheme}.onnx")
        onnx.save(probe, probe_path)
        outs = dict(zip([o.name for o in probe.graph.output], ort_session(probe_path).run(None, {"image": x})))
        assert len(cases) == 4 * 6
        wrong[scheme] = 0
        for q, w in cases:
            a_u8 = (outs[q].reshape(-1, w.shape[0]).astype(np.int32) + 128).astype(np.uint8)
            exact = a_u8.astype(np.int64) @ w.astype(np.int64)
            wrong[scheme] += int((_avx2_u8s8(a_u8, w) != exact).sum())
    print(f"outputs of the weighted MatMuls that saturate under AVX2 arithmetic: {wrong}")
    assert wrong["symmetric"] > 0
    assert wrong["reduced-range"] == 0


def test_int8_scheme_follows_the_target(monkeypatch):
    """crossformer-export: reduced-range for the CPU targets, symmetric for TensorRT, or as asked."""
    from crossformer_deploy.cli import export_cmd
    from crossformer_deploy.export import recipe as recipe_mod

    seen = []
    monkeypatch.setattr(recipe_mod, "quantize_int8", lambda *a, **k: seen.append(k["scheme"]))
    monkeypatch.setattr(recipe_mod, "run_pipeline", lambda proto, *a, **k: proto)
    monkeypatch.setattr(recipe_mod, "transpose_after_dq", lambda proto: proto)
    monkeypatch.setattr(recipe_mod, "read_info", lambda proto: SimpleNamespace(mode="classifier"))
    for target, flag, want in (("plain", "auto", "reduced-range"), ("onnxruntime", "auto", "reduced-range"),
                               ("openvino", "auto", "reduced-range"), ("tensorrt", "auto", "symmetric"),
                               ("onnxruntime", "symmetric", "symmetric"), ("tensorrt", "reduced-range",
                                                                            "reduced-range")):
        args = export_cmd.parser().parse_args(["--int8", "--calib", "d", "--target", target, "--int8-scheme",
                                               flag, "-o", "x.onnx"])
        recipe_mod.apply(None, export_cmd._recipe(args, None))
        assert seen[-1] == want, (target, flag)
    assert "reduced-range" in export_cmd.parser().format_help()


# ---------------------------------------------------------------------------------------- INT8 placements
def test_float_stages_leave_a_stage_float(fp32):
    """placement.py's float stages: every quantizable layer under /layers.{i}/ float, and nothing else added."""
    base = set(excluded_nodes(fp32[0]))
    stage0 = set(excluded_nodes(fp32[0], float_stages=(0,))) - base
    assert stage0 and all(n.startswith("/layers.0/") for n in stage0)
    quantizable = {n.name for n in fp32[0].graph.node if n.op_type in QUANTIZED_OPS}
    assert {n for n in quantizable if n.startswith("/layers.0/")} - base == stage0


def test_placement_flag_reaches_the_quantizer(monkeypatch):
    """crossformer-export --int8-placement: bf16-hybrid = stage 1 float and the attention matmuls float; mlp-fc1 =
    only the MLPs' fc1 int8; attn-qkv = only the qkv Linears int8; 'all' is a classifier's default; an unknown
    placement or the flag without --int8 is one clear line."""
    from crossformer_deploy.base.errors import UsageError
    from crossformer_deploy.cli import export_cmd
    from crossformer_deploy.export import recipe as recipe_mod
    from crossformer_deploy.export.recipe import Int8Options, Recipe

    seen = []
    monkeypatch.setattr(recipe_mod, "quantize_int8", lambda *a, **k: seen.append(k))
    monkeypatch.setattr(recipe_mod, "run_pipeline", lambda proto, *a, **k: proto)
    monkeypatch.setattr(recipe_mod, "transpose_after_dq", lambda proto: proto)
    monkeypatch.setattr(recipe_mod, "read_info", lambda proto: SimpleNamespace(mode="classifier"))
    for flags, attention, stages, only in (([], True, (), ()), (["--int8-placement", "bf16-hybrid"], False, (0,), ()),
                                           (["--int8-placement", "mlp-fc1"], False, (), ("/mlp/fc1/",)),
                                           (["--int8-placement", "attn-qkv"], False, (), ("/attn/qkv/",))):
        args = export_cmd.parser().parse_args(["--int8", "--calib", "d", "--target", "openvino", *flags])
        recipe_mod.apply(None, export_cmd._recipe(args, None))
        got = (seen[-1]["quantize_attention"], tuple(seen[-1]["float_stages"]), tuple(seen[-1]["int8_only"]))
        assert got == (attention, stages, only), flags
    with pytest.raises(UsageError, match="unknown INT8 placement"):
        Recipe("openvino", "int8", int8=Int8Options("d", placement="half"))
    with pytest.raises(UsageError, match="float stages are 0-3"):  # also with no placement named (the default)
        Recipe("openvino", "int8", int8=Int8Options("d", float_stages=(4,)))
    with pytest.raises(UsageError, match="--int8-placement are for --int8"):
        export_cmd._check_args(export_cmd.parser().parse_args(["--int8-placement", "bf16-hybrid"]))
