"""FP16 graphs (export/precision/fp16.py): strongly typed, finite, as accurate as fp32 on the digits model."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, numpy_helper

from crossformer_deploy.base.model_info import ModelInfo
from crossformer_deploy.export.onnx_export import read_info, save_onnx, to_onnx
from crossformer_deploy.export.precision.fp16 import FP16_MASK_FILL, Fp16ConversionError, to_fp16
from crossformer_deploy.model.factory import build_model
from crossformer_deploy.runtime.parity import cosine_rows
from tests.conftest import DIGITS_CKPT as CKPT
from tests.export.precision.conftest import CALIB_COUNT, LINEAR_OPS, SIZE, _float_constants, _logits, _types  # noqa: F401
from tests.helpers import perturb

pytest.importorskip("sklearn", reason="the digits example needs scikit-learn")


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
