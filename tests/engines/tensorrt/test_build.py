"""The engine build up to the TensorRT boundary (a stand-in device and builder): requests, plugin detection,
digests, the engine cache."""
from __future__ import annotations

import dataclasses
import os

import numpy as np
import onnx
import pytest

from crossformer_deploy.base.errors import InputSizeError, ModelFileError, UsageError
from crossformer_deploy.base.fileio import sha256_file
from crossformer_deploy.engines.tensorrt import cache as cache_module
from crossformer_deploy.engines.tensorrt.build import (
    build,
    build_engine,
    graph_uses_plugin,
    onnx_digest,
    prepare_build,
)
from crossformer_deploy.engines.tensorrt.profiles import (
    Profile,
)
from crossformer_deploy.engines.tensorrt.sidecar import (
    read_sidecar,
)
from tests.engines.support import A100, H100, HAS_TRT, INFO

# -- build: everything around the TensorRT boundary ------------------------------------------------------

class FakeBuilder:
    """Stands in for tensorrt_build: records its calls, returns bytes derived from the request."""

    def __init__(self):
        self.calls = []

    def __call__(self, req, timing_cache):
        self.calls.append((req, timing_cache))
        return b"PLAN" + "|".join(str(p) for p in req.profiles).encode() + req.onnx_sha256.encode()


def test_prepare_build_reads_our_onnx(exports):
    req = prepare_build(exports["dynamic"])
    assert req.input_name == "image" and req.input_dims == (None, 3, None, None)
    assert req.profiles == (Profile((1, 224, 224), (1, 224, 224), (8, 224, 224)),)
    assert req.onnx_sha256 == sha256_file(exports["dynamic"]) and req.info.variant == "tiny"
    assert not req.uses_plugin and req.plugin_digest == "" and req.optimization_level == 3
    st = prepare_build(exports["static"])
    assert st.input_dims == (2, 3, 224, 224) and st.profiles == (Profile(*[(2, 224, 224)] * 3),)
    with pytest.raises(InputSizeError, match="min batch 1 does not fit this ONNX, whose batch is fixed at 2"):
        prepare_build(exports["static"], "min:1x224x224,opt:2x224x224,max:2x224x224")
    with pytest.raises(InputSizeError, match="does not fit this static ONNX"):
        prepare_build(exports["static"], "2x224x256")
    two = prepare_build(exports["dynamic"], ["min:1x64x64,opt:1x224x224,max:4x320x448", "8x224x224"])
    assert len(two.profiles) == 2
    with pytest.raises(UsageError, match="optimisation level 9"):
        prepare_build(exports["dynamic"], optimization_level=9)


def test_prepare_build_refuses_other_files(exports, tmp_path):
    with pytest.raises(ModelFileError, match="ONNX file not found"):
        prepare_build(tmp_path / "missing.onnx")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x00\x01 definitely not protobuf")
    with pytest.raises(ModelFileError, match="not an ONNX model"):
        prepare_build(junk)
    proto = onnx.load(exports["dynamic"])
    del proto.metadata_props[:]
    foreign = tmp_path / "foreign.onnx"
    onnx.save(proto, foreign)
    with pytest.raises(UsageError, match="not exported by crossformer-export"):
        prepare_build(foreign)


def _tiny_graph(domain: str = "", attrs: dict | None = None) -> onnx.ModelProto:
    h = onnx.helper
    node = h.make_node("GroupedAttention" if domain or attrs else "Relu", ["image"], ["logits"], domain=domain,
                       **(attrs or {}))
    g = h.make_graph([node], "g", [h.make_tensor_value_info("image", onnx.TensorProto.FLOAT, ["B", 3, "H", "W"])],
                     [h.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, None)])
    m = h.make_model(g)
    for k, v in INFO.to_props().items():
        m.metadata_props.add(key=k, value=v)
    return m


def test_plugin_detection_and_digest(tmp_path):
    assert not graph_uses_plugin(_tiny_graph())
    assert graph_uses_plugin(_tiny_graph(domain="crossformer"))
    assert graph_uses_plugin(_tiny_graph(attrs={"plugin_namespace": "crossformer"}))
    fields = {"num_heads": 2, "mode": "lda", "group_size": 7, "interval": 4, "scale": 0.18, "family": 0}
    path = tmp_path / "fused.onnx"
    onnx.save(_tiny_graph(domain="crossformer", attrs=fields), path)
    req = prepare_build(path)
    assert req.uses_plugin and len(req.plugin_digest) == 16
    # the plugin's sources are part of the identity: a kernel change means another engine
    assert req.identity(H100).key() != dataclasses.replace(req, plugin_digest="").identity(H100).key()
    # an export from before CrossFormer++ (no family): one line before any TensorRT work, not a TypeError in it
    old = tmp_path / "old.onnx"
    onnx.save(_tiny_graph(domain="crossformer", attrs={k: v for k, v in fields.items() if k != "family"}), old)
    with pytest.raises(ModelFileError, match=r"GroupedAttention has no family attribute \(exported by an older "
                       r"crossformer-export\): export it again with crossformer-export --target tensorrt"):
        prepare_build(old)


def test_onnx_digest_covers_external_data(tmp_path):
    m = _tiny_graph()
    m.graph.initializer.append(onnx.numpy_helper.from_array(np.ones((64, 64), np.float32), "w"))
    path = str(tmp_path / "ext.onnx")
    onnx.save_model(m, path, save_as_external_data=True, location="ext.data", size_threshold=0)
    proto = onnx.load(path, load_external_data=False)
    d1 = onnx_digest(path, proto)
    assert d1 != sha256_file(path)
    with open(tmp_path / "ext.data", "r+b") as f:
        f.write(b"\x00\x00\x00\x00")
    assert onnx_digest(path, proto) != d1
    os.remove(tmp_path / "ext.data")
    with pytest.raises(ModelFileError, match=r"external data file ext\.data is missing"):
        onnx_digest(path, proto)


def test_build_writes_engine_sidecar_and_reuses_cache(exports, tmp_path):
    cache = str(tmp_path / "cache")
    fake = FakeBuilder()
    out = str(tmp_path / "m.plan")
    steps = []
    res = build(exports["dynamic"], out, cache_dir=cache, device=H100, builder=fake, progress=steps.append)
    assert res.path == out and not res.cached and len(fake.calls) == 1
    assert steps[0] == "reading ONNX and checking profiles" and "building TensorRT engine (this takes minutes)" in steps
    side = read_sidecar(out)
    assert side.identity == res.identity and side.info == prepare_build(exports["dynamic"]).info
    assert side.engine_sha256 == sha256_file(out) and side.identity.device == H100
    # the default timing cache: one per TensorRT version and GPU, inside the cache directory
    timing = fake.calls[0][1]
    assert timing == os.path.join(cache, "tensorrt", "timing-trt10.9.0-nvidia-h100-80gb-hbm3-sm9.0.cache")
    cached = cache_module.cached_engine_path(res.identity, cache)
    assert os.path.isfile(cached) and os.path.isfile(cached + ".json")

    # same ONNX, profiles, TensorRT and GPU: the cache answers, the builder is not called
    out2 = str(tmp_path / "again.engine")
    res2 = build(exports["dynamic"], out2, cache_dir=cache, device=H100, builder=fake)
    assert res2.cached and len(fake.calls) == 1
    assert open(out2, "rb").read() == open(out, "rb").read() and read_sidecar(out2).identity == res.identity
    # anything in the identity changes -> a new build
    build(exports["dynamic"], out2, "min:1x224x224,opt:1x224x224,max:4x224x224", cache_dir=cache, device=H100,
          builder=fake)
    build(exports["dynamic"], out2, cache_dir=cache, device=A100, builder=fake)
    build(exports["dynamic"], out2, cache_dir=cache, device=H100, builder=fake, optimization_level=5)
    assert len(fake.calls) == 4
    # --no-cache: builds, and neither reads nor writes the cache
    n_entries = len(os.listdir(os.path.join(cache, "engines")))
    build(exports["dynamic"], out2, cache_dir=cache, device=H100, builder=fake, use_cache=False)
    assert len(fake.calls) == 5 and len(os.listdir(os.path.join(cache, "engines"))) == n_entries
    # a damaged cache entry is not trusted: rebuilt
    with open(cached, "ab") as f:
        f.write(b"x")
    assert not build(exports["dynamic"], out2, cache_dir=cache, device=H100, builder=fake).cached
    assert len(fake.calls) == 6
    # an explicit timing cache is passed through
    tc = str(tmp_path / "my.cache")
    build_engine(exports["dynamic"], out2, timing_cache=tc, cache_dir=cache, use_cache=False, device=H100,
                 builder=fake)
    assert fake.calls[-1][1] == tc


def test_build_refusals_before_tensorrt(exports, tmp_path):
    fake = FakeBuilder()
    kw = dict(cache_dir=str(tmp_path / "c"), device=H100, builder=fake)
    with pytest.raises(UsageError, match=r"engine path m.onnx must end with .plan, .engine or .trt"):
        build(exports["dynamic"], str(tmp_path / "m.onnx"), **kw)
    with pytest.raises(UsageError, match="output directory does not exist"):
        build(exports["dynamic"], str(tmp_path / "no" / "m.plan"), **kw)
    with pytest.raises(UsageError, match="output directory does not exist"):
        build(exports["dynamic"], str(tmp_path / "m.plan"), timing_cache=str(tmp_path / "no" / "t.cache"), **kw)
    with pytest.raises(InputSizeError, match="not a multiple of 32"):
        build(exports["dynamic"], str(tmp_path / "m.plan"), "min:1x224x224,opt:1x224x224,max:1x225x224", **kw)
    assert fake.calls == [] and not os.path.exists(tmp_path / "m.plan")
    with pytest.raises(ModelFileError, match="TensorRT returned an empty engine"):
        build(exports["dynamic"], str(tmp_path / "m.plan"), cache_dir=str(tmp_path / "c"), device=H100,
              builder=lambda req, tc: b"")
    assert not os.path.exists(tmp_path / "m.plan")


@pytest.mark.skipif(HAS_TRT, reason="checks the message for a machine without TensorRT")
def test_build_without_tensorrt(exports, tmp_path):
    with pytest.raises(UsageError) as e:
        build_engine(exports["dynamic"], str(tmp_path / "m.plan"), cache_dir=str(tmp_path / "c"))
    assert str(e.value) == "TensorRT is not installed: pip install tensorrt (needs an NVIDIA GPU)"
    assert not os.path.exists(tmp_path / "m.plan")
