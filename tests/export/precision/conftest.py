"""What the precision tests share: the trained digits model exported fp32, FP16 and INT8 once per session,
its held-out split, and calibration images from its train split.

Everything runs on ONNX Runtime CPU. ORT's x86 CPU provider has fp16 kernels only for data movement
(Transpose, Reshape, Gather, Concat...): it runs Conv/MatMul/Add/Erf of an FP16 graph in fp32 between inserted
Casts, so every op's *output* is still rounded to fp16 (range and rounding are checked), but not fp16 arithmetic
inside an op (as on a GPU with fp32 accumulation).
"""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, numpy_helper

from crossformer_deploy.base.model_info import ModelInfo
from crossformer_deploy.export.onnx_export import save_onnx, to_onnx
from crossformer_deploy.export.precision.fp16 import to_fp16
from crossformer_deploy.export.precision.int8 import (
    quantize_int8,
)
from crossformer_deploy.model.factory import build_model, weights_label
from tests.conftest import DIGITS_CKPT as CKPT
from tests.helpers import ort_session

SIZE = (64, 64)
CALIB_COUNT = 128  # train-split images; the test split stays held out
LINEAR_OPS = ("MatMul", "Conv", "Gemm")


# ---------------------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="session")
def test_split(digits_data):
    x, y = digits_data.load_split("test")
    return x.numpy(), y.numpy()


@pytest.fixture(scope="session")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("precision")


@pytest.fixture(scope="session")
def fp32(work):
    """The digits model exported with dynamic B/H/W, export (and calibration) size 64x64."""
    model = build_model(None, CKPT)
    info = ModelInfo("custom-32-2-2-1-1", "classifier", 10, weights_label(CKPT), input_size=SIZE)
    proto = to_onnx(model, info)
    path = str(work / "digits.onnx")
    save_onnx(proto, path)
    return proto, path


@pytest.fixture(scope="session")
def fp16(fp32, work):
    proto = to_fp16(fp32[0])
    path = str(work / "digits_fp16.onnx")
    save_onnx(proto, path)
    return proto, path


@pytest.fixture(scope="session")
def calib_dir(digits_data, work):
    d = work / "calib"
    digits_data.export_image_folder(d, "train", limit=CALIB_COUNT)
    return str(d)


@pytest.fixture(scope="session")
def int8(fp32, calib_dir, work):
    path = str(work / "digits_int8.onnx")
    proto = quantize_int8(fp32[1], path, calib_dir, count=CALIB_COUNT, method="entropy", size=SIZE,
                          cache_path=str(work / "calib_cache.json"), progress=False)
    return proto, path


@pytest.fixture(scope="session")
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


@pytest.fixture(scope="session")
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


