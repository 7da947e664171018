"""FP16 and INT8 graphs (export/precision): their structure, and their accuracy on the trained digits model.

Everything runs on ONNX Runtime CPU. Note that ORT's x86 CPU provider has fp16 kernels only for data
movement (Transpose, Reshape, Gather, Concat...): it runs Conv/MatMul/Add/Erf of the FP16 graph in fp32
between inserted Casts, so every op's *output* is still rounded to fp16 (range and rounding are
checked), but not fp16 arithmetic inside an op (as on a GPU with fp32 accumulation).
"""
import json
import shutil

import numpy as np
import onnx
import pytest
from onnx import TensorProto, numpy_helper

from crossformer_deploy.export.metadata import ModelInfo
from crossformer_deploy.export.onnx_export import read_info, save_onnx, to_onnx
from crossformer_deploy.export.precision import calibration
from crossformer_deploy.export.precision.calibration import CalibrationSet, cache_key
from crossformer_deploy.export.precision.fp16 import FP16_MASK_FILL, Fp16ConversionError, to_fp16
from crossformer_deploy.export.precision.int8 import (
    QUANTIZED_OPS,
    excluded_nodes,
    quantize_int8,
    quantized_inputs,
)
from crossformer_deploy.export.precision.schemes import graph_scheme
from crossformer_deploy.model.factory import build_model, weights_label
from crossformer_deploy.runtime.parity import cosine_rows

from .helpers import ort_session, perturb

pytest.importorskip("sklearn", reason="the digits example needs scikit-learn")

from .conftest import DIGITS_CKPT as CKPT

SIZE = (64, 64)
CALIB_COUNT = 128  # train-split images; the test split stays held out
LINEAR_OPS = ("MatMul", "Conv", "Gemm")


# ---------------------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def test_split(digits_data):
    x, y = digits_data.load_split("test")
    return x.numpy(), y.numpy()


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("precision")


@pytest.fixture(scope="module")
def fp32(work):
    """The digits model exported with dynamic B/H/W, export (and calibration) size 64x64."""
    model = build_model(None, CKPT)
    info = ModelInfo("custom-32-2-2-1-1", "classifier", 10, weights_label(CKPT), input_size=SIZE)
    proto = to_onnx(model, info)
    path = str(work / "digits.onnx")
    save_onnx(proto, path)
    return proto, path


@pytest.fixture(scope="module")
def fp16(fp32, work):
    proto = to_fp16(fp32[0])
    path = str(work / "digits_fp16.onnx")
    save_onnx(proto, path)
    return proto, path


@pytest.fixture(scope="module")
def calib_dir(digits_data, work):
    d = work / "calib"
    digits_data.export_image_folder(d, "train", limit=CALIB_COUNT)
    return str(d)


@pytest.fixture(scope="module")
def int8(fp32, calib_dir, work):
    path = str(work / "digits_int8.onnx")
    proto = quantize_int8(fp32[1], path, calib_dir, count=CALIB_COUNT, method="entropy", size=SIZE,
                          cache_path=str(work / "calib_cache.json"), progress=False)
    return proto, path


@pytest.fixture(scope="module")
def int8_symmetric(fp32, calib_dir, work):
    """The same calibration (cached ranges), full 8-bit weights: TensorRT's scheme."""
    path = str(work / "digits_int8_symmetric.onnx")
    proto = quantize_int8(fp32[1], path, calib_dir, count=CALIB_COUNT, method="entropy", size=SIZE,
                          cache_path=str(work / "calib_cache.json"), progress=False, scheme="symmetric")
    return proto, path


def _logits(path, x, batch=150):
    s = ort_session(path)
    name = s.get_inputs()[0].name
    return np.concatenate([s.run(None, {name: x[i:i + batch]})[0] for i in range(0, len(x), batch)])


@pytest.fixture(scope="module")
def logits(fp32, fp16, int8, test_split):
    x, _ = test_split
    return {"fp32": _logits(fp32[1], x), "fp16": _logits(fp16[1], x), "int8": _logits(int8[1], x)}


def _types(proto):
    m = onnx.shape_inference.infer_shapes(proto, strict_mode=True)
    g = m.graph
    t = {v.name: v.type.tensor_type.elem_type for v in (*g.input, *g.output, *g.value_info)}
    t.update({i.name: i.data_type for i in g.initializer})
    for n in g.node:
        if n.op_type == "Constant":
            t[n.output[0]] = n.attribute[0].t.data_type
    return t


def _float_constants(proto):
    for t in proto.graph.initializer:
        if t.data_type in (TensorProto.FLOAT, TensorProto.FLOAT16):
            yield numpy_helper.to_array(t)
    for n in proto.graph.node:
        if n.op_type == "Constant" and n.attribute[0].t.data_type in (TensorProto.FLOAT, TensorProto.FLOAT16):
            yield numpy_helper.to_array(n.attribute[0].t)


# ---------------------------------------------------------------------------------------- FP16
def test_fp16_graph_is_strongly_typed(fp16):
    proto, _ = fp16
    onnx.checker.check_model(proto, full_check=True)
    types = _types(proto)
    floats = (TensorProto.FLOAT, TensorProto.FLOAT16)
    linear = [n for n in proto.graph.node if n.op_type in LINEAR_OPS]
    dpb = [n for n in linear if "/attn/pos/" in n.name]
    assert len(linear) == 10 + 6 * 6 + 1 + 24 and len(dpb) == 24  # conv, 6 per block, head, DPB
    for n in linear:
        want = TensorProto.FLOAT if n in dpb else TensorProto.FLOAT16  # DPB table: fp32, cast once
        got = {types[i] for i in n.input if i and types[i] in floats}
        assert got == {want}, (n.name, got)
    for n in proto.graph.node:
        if n.op_type in ("LayerNormalization", "Softmax"):
            assert types[n.input[0]] == TensorProto.FLOAT, n.name  # statistics / exp in fp32
        if "/attn/pos/" in n.name:
            assert all(types[i] != TensorProto.FLOAT16 for i in n.input if i), n.name
    # the weights of every quantizable layer outside the DPB are stored as fp16
    inits = {t.name: t.data_type for t in proto.graph.initializer}
    weighted = [n for n in linear if n not in dpb and n.input[1] in inits]
    assert len(weighted) == 10 + 4 * 6 + 1  # the attention QK^T / PV matmuls have no weights
    assert all(inits[n.input[1]] == TensorProto.FLOAT16 for n in weighted)
    assert [i.type.tensor_type.elem_type for i in proto.graph.input] == [TensorProto.FLOAT]
    assert [o.type.tensor_type.elem_type for o in proto.graph.output] == [TensorProto.FLOAT]
    assert read_info(proto).precision == "fp16"


def test_fp16_mask_fill_is_finite(fp32, fp16):
    before = [a for a in _float_constants(fp32[0]) if np.isclose(a, -1e6).any()]
    assert len(before) == 6  # one per attention block in the dynamic graph
    after = list(_float_constants(fp16[0]))
    assert not any(np.isclose(a.astype(np.float32), -1e6).any() for a in after)
    assert all(np.isfinite(a.astype(np.float16)).all() for a in after)
    assert sum(bool((a == np.float32(FP16_MASK_FILL)).any()) for a in after) == 6


def test_fp16_static_export(tmp_path):
    """A static export folds the mask to [nG, 1, 1, N] constants (only where that size pads)."""
    model = build_model(None, CKPT)
    info = ModelInfo("custom-32-2-2-1-1", "classifier", 10, "digits", input_size=SIZE, dynamic=False)
    proto = to_onnx(model, info)
    folded = [a for a in _float_constants(proto) if np.isclose(a, -1e6).any()]
    assert folded and all(a.ndim == 4 for a in folded)
    half = to_fp16(proto)
    assert not any(np.isclose(a.astype(np.float32), -1e6).any() for a in _float_constants(half))
    x = np.random.default_rng(0).standard_normal((2, 3, *SIZE)).astype(np.float32)
    p32, p16 = tmp_path / "s32.onnx", tmp_path / "s16.onnx"
    save_onnx(proto, p32)
    save_onnx(half, p16)
    assert cosine_rows(_logits(str(p16), x), _logits(str(p32), x)).min() >= 0.9995


def test_fp16_refuses_a_graph_without_the_mask(fp32):
    broken = onnx.ModelProto()
    broken.CopyFrom(fp32[0])
    for n in broken.graph.node:  # a changed export: the fill is no longer where it is expected
        if n.op_type == "Constant" and n.attribute[0].t.data_type == TensorProto.FLOAT:
            a = numpy_helper.to_array(n.attribute[0].t)
            if np.isclose(a, -1e6).any():
                n.attribute[0].t.CopyFrom(numpy_helper.from_array(np.full_like(a, -1e5), n.attribute[0].t.name))
                break
    with pytest.raises(Fp16ConversionError, match="padding-mask"):
        to_fp16(broken)


def test_fp16_matches_fp32_on_digits(logits, test_split):
    _, y = test_split
    a, b = logits["fp32"], logits["fp16"]
    agree = (a.argmax(1) == b.argmax(1)).mean()
    cos = cosine_rows(b, a)
    print(f"fp16: accuracy {100 * (b.argmax(1) == y).mean():.2f} % (fp32 {100 * (a.argmax(1) == y).mean():.2f} %), "
          f"agreement {100 * agree:.2f} %, cosine worst {cos.min():.7f} mean {cos.mean():.7f}")
    assert agree >= 0.995
    assert cos.min() >= 0.9995


def test_fp16_other_sizes_and_fp16_io(fp32, fp16, test_split, work):
    """Sizes the export never saw (64x96 and 96x64 switch stage 3 to shrunk SDA), and FP16 I/O."""
    x = test_split[0][:4]
    for h, w in ((64, 96), (96, 64), (128, 128)):
        xs = np.ascontiguousarray(np.resize(x, (4, 3, h, w)).astype(np.float32))
        assert cosine_rows(_logits(fp16[1], xs), _logits(fp32[1], xs)).min() >= 0.9995, (h, w)
    io16 = to_fp16(fp32[0], fp16_io=True)
    assert io16.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT16
    assert io16.graph.output[0].type.tensor_type.elem_type == TensorProto.FLOAT16
    assert "float16" in read_info(io16).input_layout
    path = str(work / "digits_fp16_io.onnx")
    save_onnx(io16, path)
    out = _logits(path, x.astype(np.float16))
    assert out.dtype == np.float16
    assert cosine_rows(out.astype(np.float32), _logits(fp32[1], x)).min() >= 0.9995


def test_fp16_s_variant(tmp_path):
    """The one full-size check: CrossFormer-S (perturbed random weights), one 224x224 image."""
    model = perturb(build_model("s", seed=0))
    proto = to_onnx(model, ModelInfo("s", "classifier", 1000, "perturbed"))
    p32, p16 = tmp_path / "s.onnx", tmp_path / "s16.onnx"
    save_onnx(proto, p32)
    save_onnx(to_fp16(proto), p16)
    x = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
    a = _logits(str(p32), x)
    assert np.abs(a).max() > 1.0
    assert cosine_rows(_logits(str(p16), x), a).min() >= 0.9995


# ---------------------------------------------------------------------------------------- INT8
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


def test_calibration_cache_is_reused(int8, fp32, calib_dir, work, monkeypatch):
    calls = []
    real = calibration.calibrate
    monkeypatch.setattr(calibration, "calibrate", lambda *a, **k: calls.append(1) or real(*a, **k))
    again = quantize_int8(fp32[1], None, calib_dir, count=CALIB_COUNT, method="entropy", size=SIZE,
                          cache_path=str(work / "calib_cache.json"), progress=False)
    assert calls == []  # same model, method, images and size: ranges read back, no inference
    assert again.graph.SerializeToString() == int8[0].graph.SerializeToString()
    cached = json.loads((work / "calib_cache.json").read_text())
    assert cached["method"] == "entropy" and cached["count"] == CALIB_COUNT and cached["size"] == list(SIZE)
    # another image set (or method, or size) is another key: that cache entry is not used
    info = read_info(fp32[0])
    tensors = quantized_inputs(fp32[0], excluded_nodes(fp32[0]))
    same = CalibrationSet.from_folder(calib_dir, info, CALIB_COUNT, SIZE)
    fewer = CalibrationSet.from_folder(calib_dir, info, CALIB_COUNT - 1, SIZE)
    key = cache_key(fp32[0], "entropy", same, tensors)
    assert key == cached["key"]
    assert cache_key(fp32[0], "entropy", fewer, tensors) != key
    assert cache_key(fp32[0], "minmax", same, tensors) != key
    assert cache_key(fp32[0], "entropy", CalibrationSet.from_folder(calib_dir, info, CALIB_COUNT, (96, 96)),
                     tensors) != key
    # a different image set with the same cache file recalibrates (here: 8 images, quick)
    quantize_int8(fp32[1], None, calib_dir, count=8, method="minmax", size=SIZE,
                  cache_path=str(work / "calib_cache.json"), progress=False)
    assert calls == [1]


def test_calibration_set_is_deterministic(calib_dir, tmp_path):
    info = ModelInfo("x", "classifier", 10, "w", input_size=SIZE)
    a = CalibrationSet.from_folder(calib_dir, info, 16)
    b = CalibrationSet.from_folder(calib_dir, info, 16)
    assert a.paths == b.paths and len(a) == 16 and list(a.paths) == sorted(a.paths)
    assert CalibrationSet.from_folder(calib_dir, info, 16, seed=1).paths != a.paths
    assert len(CalibrationSet.from_folder(calib_dir, info, 10_000)) == CALIB_COUNT  # all of them
    # keyed by contents: the same images under another folder name give the same hashes
    copy = tmp_path / "elsewhere"
    shutil.copytree(calib_dir, copy)
    assert CalibrationSet.from_folder(copy, info, 16).file_hashes() == a.file_hashes()
    batch, new = next(a.batches(4))
    assert batch.shape == (4, 3, *SIZE) and batch.dtype == np.float32 and new == 4
    # a graph with a fixed batch gets exactly that many images per run, the last run topped up
    sizes = [(len(b), n) for b, n in CalibrationSet.from_folder(calib_dir, info, 10).batches(4, fill=True)]
    assert sizes == [(4, 4), (4, 4), (4, 2)]


def test_cli_fp16_int8_and_validate(tmp_path, digits_data):
    """The flags end to end: export, then crossformer-validate on labelled digits (accuracy reported)."""
    from .helpers import assert_one_line_error, cli

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
    from crossformer_deploy.export.precision import int8 as int8_mod

    seen = []
    monkeypatch.setattr(int8_mod, "quantize_int8", lambda *a, **k: seen.append(k["scheme"]))
    for target, flag, want in (("plain", "auto", "reduced-range"), ("onnxruntime", "auto", "reduced-range"),
                               ("openvino", "auto", "reduced-range"), ("tensorrt", "auto", "symmetric"),
                               ("onnxruntime", "symmetric", "symmetric"), ("tensorrt", "reduced-range",
                                                                            "reduced-range")):
        args = export_cmd.parser().parse_args(["--int8", "--calib", "d", "--target", target, "--int8-scheme",
                                               flag, "-o", "x.onnx"])
        export_cmd._precision(args, None, None, lambda *_: None)
        assert seen[-1] == want, (target, flag)
    assert "reduced-range" in export_cmd.parser().format_help()


# ---------------------------------------------------------------------------------------- calibration runs
@pytest.mark.parametrize("batch", [1, 3])
def test_int8_calibrates_a_fixed_batch_graph(calib_dir, tmp_path, batch):
    """A graph with a fixed batch is fed exactly that batch (10 images at batch 3: the last run topped up)."""
    model = build_model(None, CKPT)
    info = ModelInfo("custom-32-2-2-1-1", "classifier", 10, weights_label(CKPT), input_size=SIZE, dynamic=False,
                     batch=batch)
    proto = to_onnx(model, info)
    path = tmp_path / "q.onnx"
    quantize_int8(proto, path, calib_dir, count=10, method="minmax", cache_path=str(tmp_path / "c.json"),
                  progress=False)
    assert [d.dim_value for d in onnx.load(path).graph.input[0].type.tensor_type.shape.dim] == [batch, 3, *SIZE]


def test_cli_int8_static_batch_1(calib_dir, tmp_path):
    """The command of the issue: --static --batch 1 --int8 (it fed batches of 16 to the batch-1 graph)."""
    from .helpers import cli

    out = str(tmp_path / "b1.onnx")
    r = cli("export", "--weights", CKPT, "--static", "64x64", "--batch", "1", "--int8", "--calib", calib_dir,
            "--calib-count", "5", "--calib-method", "minmax", "--calib-cache", str(tmp_path / "c.json"), "-o", out)
    assert r.returncode == 0, r.stderr
    assert read_info(onnx.load(out)).extra["int8"]["images"] == 5


def test_calibration_progress_follows_the_runs(fp32, calib_dir, monkeypatch):
    """The bar (on stderr) moves when a batch has been run through the calibration session, not while
    images are read: every update comes right after the batch it counts."""
    import sys

    import tqdm

    events = []

    class Bar:
        def __init__(self, *a, total=None, file=None, disable=False, **k):
            assert file is sys.stderr and total == 40 and not disable
            events.append(("total", total))

        def update(self, n):
            events.append(("update", n))

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            pass

        def set_postfix_str(self, text):
            pass

    real = calibration._collect
    monkeypatch.setattr(tqdm, "tqdm", Bar)
    monkeypatch.setattr(calibration, "_collect", lambda c, b: (real(c, b), events.append(("ran", len(b)))))
    proto = fp32[0]
    images = CalibrationSet.from_folder(calib_dir, read_info(proto), 40, SIZE)
    calibration.calibrate(proto, images, "minmax", quantized_inputs(proto, excluded_nodes(proto)), batch_size=16)
    assert events == [("total", 40), ("ran", 16), ("update", 16), ("ran", 16), ("update", 16), ("ran", 8),
                      ("update", 8)]
