"""TensorRT engines: profiles, identity and sidecar, engine cache, the TensorRT runner, crossformer-build-engine,
and the C++ example.

Everything up to the TensorRT boundary runs here without TensorRT (build() takes a stand-in device and
builder). Tests that need TensorRT and a GPU are at the end; they skip, saying why, where TensorRT cannot
be imported.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import onnx
import pytest

from crossformer_deploy.engines import identity as ident
from crossformer_deploy.engines.build import (
    build,
    build_engine,
    cached_engine_path,
    graph_uses_plugin,
    onnx_digest,
    prepare_build,
)
from crossformer_deploy.engines.identity import (
    DeviceIdentity,
    EngineIdentity,
    check_compatible,
    read_sidecar,
    sidecar_path,
    write_sidecar,
)
from crossformer_deploy.engines.profiles import (
    Profile,
    default_profiles,
    find_profile,
    max_size,
    parse_profiles,
    validate_for_model,
)
from crossformer_deploy.errors import InputSizeError, ModelFileError, UsageError
from crossformer_deploy.export.metadata import ModelInfo
from crossformer_deploy.fileio import sha256_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLE = os.path.join(ROOT, "samples", "chelsea.jpg")
CPP = os.path.join(ROOT, "examples", "cpp")
H100 = DeviceIdentity("10.9.0", "NVIDIA H100 80GB HBM3", "9.0")
A100 = DeviceIdentity("10.9.0", "NVIDIA A100-SXM4-80GB", "8.0")
INFO = ModelInfo(variant="tiny", mode="classifier", num_classes=10, weights="test.pth sha256=00")


def _has_tensorrt() -> bool:
    try:
        import tensorrt  # noqa: F401
    except Exception:
        return False
    return True


HAS_TRT = _has_tensorrt()


def cli(cmd: str, *args: str, cache: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "CROSSFORMER_DEPLOY_CACHE": cache}
    return subprocess.run([sys.executable, "-m", f"crossformer_deploy.cli.{cmd}_cmd", *args], capture_output=True,
                          text=True, env=env, timeout=600)


def one_line_error(r: subprocess.CompletedProcess) -> str:
    """The single error line of a failed command (exit 2, no traceback); warnings are allowed beside it."""
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert "Traceback" not in r.stderr, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip() and not ln.startswith("warning:")]
    assert len(lines) == 1, r.stderr
    return lines[0]


def identity(**kw) -> EngineIdentity:
    base = dict(onnx_sha256="ab" * 32, tensorrt_version=H100.tensorrt_version, gpu_name=H100.gpu_name,
                compute_capability=H100.compute_capability,
                profiles=(Profile((1, 224, 224), (1, 224, 224), (8, 224, 224)),), precision="fp32")
    return EngineIdentity(**{**base, **kw})


def fake_engine(directory, name="model.plan", info=INFO, ident_=None, data=b"not a real TensorRT plan") -> str:
    path = os.path.join(str(directory), name)
    with open(path, "wb") as f:
        f.write(data)
    write_sidecar(path, info, ident_ or identity())
    return path


@pytest.fixture(scope="module")
def exports(tmp_path_factory, golden_ckpt):
    """The tiny golden model exported dynamic and static (224x224, batch 2), once for this module."""
    d = tmp_path_factory.mktemp("engines")
    cache = str(d / "cache")
    out = {"dir": d, "cache": cache}
    for key, extra in (("dynamic", []), ("static", ["--static", "224x224", "--batch", "2"])):
        path = str(d / f"{key}.onnx")
        r = cli("export", "--weights", golden_ckpt, *extra, "-o", path, cache=cache)
        assert r.returncode == 0, r.stderr
        out[key] = path
    return out


# -- profiles ------------------------------------------------------------------------------------------------

def test_parse_profile_forms():
    (p,) = parse_profiles("min:1x224x224,opt:8x224x224,max:32x384x384")
    assert p == Profile((1, 224, 224), (8, 224, 224), (32, 384, 384))
    assert p.shapes() == ((1, 3, 224, 224), (8, 3, 224, 224), (32, 3, 384, 384))
    assert parse_profiles(" MAX:32x3x384x384 , min:1x3x224x224,opt:8x3x224x224 ") == [p]  # any order, NCHW
    assert parse_profiles("4x256x320") == [Profile(*[(4, 256, 320)] * 3)]  # bare shape: fixed
    two = parse_profiles("min:1x224x224,opt:1x224x224,max:8x224x224; 2x384x384")
    assert len(two) == 2 and two[1].max == (2, 384, 384)
    assert parse_profiles(["min:1x224x224,opt:1x224x224,max:8x224x224", "2x384x384"]) == two  # repeated flags
    assert parse_profiles(p.to_text()) == [p] and Profile.from_json(p.to_json()) == p


@pytest.mark.parametrize("text, err, message", [
    ("min:1x224x224,opt:8x200x224,max:32x384x384", InputSizeError,
     "profile min:1x224x224,opt:8x200x224,max:32x384x384: opt height 200 is not a multiple of 32 "
     "(nearest: 192 or 224)"),
    ("min:1x224x230,opt:1x224x256,max:1x224x256", InputSizeError,
     "profile min:1x224x230,opt:1x224x256,max:1x224x256: min width 230 is not a multiple of 32 (nearest: 224 or 256)"),
    ("min:1x16x224,opt:1x224x224,max:1x224x224", InputSizeError,
     "min height 16 is not a multiple of 32 (nearest: 32 or 64)"),
    ("min:8x224x224,opt:1x224x224,max:32x224x224", UsageError,
     "profile min:8x224x224,opt:1x224x224,max:32x224x224: batch must satisfy min <= opt <= max, got 8, 1, 32"),
    ("min:1x384x224,opt:1x224x224,max:1x384x224", UsageError,
     "height must satisfy min <= opt <= max, got 384, 224, 384"),
    ("min:0x224x224,opt:1x224x224,max:1x224x224", InputSizeError, "min batch 0 must be at least 1"),
    ("min:1x224x224,opt:1x224x224", UsageError,
     "shapes 'min:1x224x224,opt:1x224x224': missing max (a profile needs min, opt and max)"),
    ("min:1x224x224,min:1x224x224,max:1x224x224", UsageError, "min is given twice"),
    ("low:1x224x224,opt:1x224x224,max:1x224x224", UsageError,
     "expected min:BxHxW,opt:BxHxW,max:BxHxW, got 'low:1x224x224'"),
    ("min:1x224,opt:1x224x224,max:1x224x224", UsageError, "'1x224' is not BxHxW (e.g. 8x224x224)"),
    ("min:axbxc,opt:1x224x224,max:1x224x224", UsageError, "'axbxc' is not BxHxW"),
    ("1x4x224x224", InputSizeError, "1x4x224x224 has 4 channels; the model takes 3 (RGB)"),
    (" ; ", UsageError, "empty --shapes"),
])
def test_bad_profiles(text, err, message):
    with pytest.raises(err) as e:
        parse_profiles(text)
    assert message in str(e.value)


def test_profile_shape_checks():
    p = Profile((1, 224, 224), (8, 224, 224), (32, 384, 384))
    p.check((1, 3, 224, 224))
    p.check((32, 3, 384, 288))
    with pytest.raises(InputSizeError) as e:
        p.check((1, 3, 416, 416))
    assert str(e.value).startswith("shape 1x3x416x416 is outside the engine's profile max 32x3x384x384")
    with pytest.raises(InputSizeError, match=r"^shape 1x3x192x224 is outside the engine's profile min 1x3x224x224"):
        p.check((1, 3, 192, 224))
    with pytest.raises(InputSizeError, match="shape 33x3x224x224 is outside the engine's profile max 32x3x384x384"):
        p.check((33, 3, 224, 224))
    with pytest.raises(InputSizeError, match="not Bx3xHxW"):
        p.check((1, 1, 224, 224))
    small = Profile((1, 64, 64), (1, 64, 64), (4, 128, 128))
    assert find_profile([small, p], (2, 3, 96, 64)) == 0
    assert find_profile([small, p], (2, 3, 256, 256)) == 1
    with pytest.raises(InputSizeError, match="outside every profile of the engine"):
        find_profile([small, p], (1, 3, 512, 512))
    assert max_size([small, p]) == (384, 384)
    assert max_size([Profile(*[(1, 64, 640)] * 3), small]) == (128, 640)


def test_profiles_against_static_model():
    static = dataclasses.replace(INFO, dynamic=False, input_size=(224, 224), batch=2)
    validate_for_model(parse_profiles("2x224x224"), static)
    with pytest.raises(InputSizeError) as e:
        validate_for_model(parse_profiles("min:1x224x224,opt:2x224x224,max:2x224x224"), static)
    assert str(e.value) == ("profile min:1x224x224,opt:2x224x224,max:2x224x224: min batch 1 does not fit this ONNX, "
                            "whose batch is fixed at 2; use batch 2 or export with a dynamic batch")
    with pytest.raises(InputSizeError) as e:
        validate_for_model(parse_profiles("2x256x224"), static)
    assert str(e.value) == ("profile min:2x256x224,opt:2x256x224,max:2x256x224: min height 256 does not fit this "
                            "static ONNX (224x224 only); use 224x224 or export a dynamic model")
    # the graph's own dims win over metadata: a fixed width in the graph is enforced
    with pytest.raises(InputSizeError, match="max width 320 does not fit this static ONNX"):
        validate_for_model(parse_profiles("min:1x224x288,opt:1x224x288,max:1x224x320"), INFO, (None, 3, None, 288))
    validate_for_model(parse_profiles("min:1x64x64,opt:4x224x224,max:32x512x512"), INFO)  # dynamic: anything
    assert default_profiles(INFO) == [Profile((1, 224, 224), (1, 224, 224), (8, 224, 224))]
    assert default_profiles(static) == [Profile(*[(2, 224, 224)] * 3)]
    assert default_profiles(dataclasses.replace(INFO, input_size=(256, 320))) == [
        Profile((1, 256, 320), (1, 256, 320), (8, 256, 320))]


# -- identity, cache key, sidecar ---------------------------------------------------------------------------

def test_cache_key_is_stable_and_changes_with_every_field():
    a = identity()
    assert a.key() == identity().key() and len(a.key()) == 32
    # pinned: a change of the key's recipe silently orphans every cached engine, so it must be deliberate
    assert a.key() == "b4fc135ac6f4d0dc0e33254ab3cb277c"
    # same key in another process (no hash randomisation involved)
    code = ("from crossformer_deploy.engines.identity import EngineIdentity as E; "
            "from crossformer_deploy.engines.profiles import Profile as P; "
            f"print(E({a.onnx_sha256!r}, {a.tensorrt_version!r}, {a.gpu_name!r}, {a.compute_capability!r}, "
            "(P((1, 224, 224), (1, 224, 224), (8, 224, 224)),), 'fp32').key())")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == a.key()
    changes = dict(onnx_sha256="cd" * 32, tensorrt_version="10.9.1", gpu_name="NVIDIA H100 PCIe",
                   compute_capability="9.1", profiles=(Profile((1, 224, 224), (2, 224, 224), (8, 224, 224)),),
                   precision="fp16", optimization_level=4, plugin="0123456789abcdef")
    assert set(changes) == {f.name for f in dataclasses.fields(EngineIdentity)}
    keys = {name: dataclasses.replace(a, **{name: v}).key() for name, v in changes.items()}
    assert a.key() not in keys.values() and len(set(keys.values())) == len(keys)
    assert EngineIdentity.from_json(json.loads(json.dumps(a.to_json()))) == a


def test_sidecar_roundtrip(tmp_path):
    plan = fake_engine(tmp_path)
    assert sidecar_path(plan) == plan + ".json" and os.path.isfile(plan + ".json")
    side = read_sidecar(plan)
    assert side.info == INFO and side.identity == identity() and side.input_name == "image"
    assert side.engine_sha256 == sha256_file(plan)
    ident.check_engine_bytes(plan, side)
    doc = json.loads(open(plan + ".json").read())
    assert doc["format"] == ident.SIDECAR_FORMAT and doc["model_info"]["variant"] == "tiny"
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]  # atomic writes leave no temp files


def test_sidecar_refusals(tmp_path):
    plan = fake_engine(tmp_path)
    os.remove(plan + ".json")
    with pytest.raises(ModelFileError) as e:
        read_sidecar(plan)
    assert str(e.value) == ("engine has no sidecar model.plan.json (it says which model, TensorRT and GPU model.plan "
                            "is for); rebuild it with crossformer-build-engine")
    with pytest.raises(ModelFileError, match="engine file not found"):
        read_sidecar(tmp_path / "nope.plan")
    cases = {
        "{ not json": "unreadable engine sidecar (JSONDecodeError); rebuild it with crossformer-build-engine",
        b"\xff\xfe\x00garbage": "unreadable engine sidecar",
        "[1, 2]": "not a crossformer-deploy engine sidecar",
        json.dumps({"format": "something else"}): "not a crossformer-deploy engine sidecar",
        json.dumps({"format": ident.SIDECAR_FORMAT, "version": 99}): "sidecar version 99 is newer than this",
        json.dumps({"format": ident.SIDECAR_FORMAT, "version": 1, "engine_sha256": "x", "model_info": {}}):
            "unreadable engine sidecar (bad or missing field 'identity')",
        json.dumps({"format": ident.SIDECAR_FORMAT, "version": 1, "engine_sha256": "x", "model_info": {"a": 1},
                    "identity": {**identity().to_json(), "profiles": [[1, 2]]}}): "unreadable engine sidecar (bad",
    }
    for content, message in cases.items():
        with open(plan + ".json", "wb") as f:
            f.write(content if isinstance(content, bytes) else content.encode())
        with pytest.raises(ModelFileError) as e:
            read_sidecar(plan)
        assert message in str(e.value), (content, str(e.value))
    # a sidecar describing other bytes (engine replaced after the build)
    fake_engine(tmp_path)
    side = read_sidecar(plan)
    with open(plan, "ab") as f:
        f.write(b"more")
    with pytest.raises(ModelFileError, match=r"does not match its sidecar model\.plan\.json"):
        ident.check_engine_bytes(plan, side)


def test_check_compatible():
    built = identity()
    check_compatible(built, H100)
    with pytest.raises(ModelFileError) as e:
        check_compatible(built, dataclasses.replace(H100, tensorrt_version="10.10.0"), where="m.plan")
    assert str(e.value).startswith("m.plan was built by TensorRT 10.9.0, but this machine has TensorRT 10.10.0; "
                                   "engines only load in the TensorRT version that built them")
    with pytest.raises(ModelFileError) as e:
        check_compatible(built, A100, where="m.plan")
    assert str(e.value).startswith("m.plan was built for NVIDIA H100 80GB HBM3 (compute capability 9.0), but this GPU "
                                   "is NVIDIA A100-SXM4-80GB (compute capability 8.0)")
    # same architecture, another model (PCIe vs SXM): still refused, the tactics were timed on the other one
    with pytest.raises(ModelFileError, match="this GPU is NVIDIA H100 PCIe"):
        check_compatible(built, dataclasses.replace(H100, gpu_name="NVIDIA H100 PCIe"))


@pytest.mark.skipif(HAS_TRT, reason="checks the message for a machine without TensorRT")
def test_current_device_identity_without_tensorrt():
    with pytest.raises(UsageError) as e:
        ident.current_device_identity()
    assert str(e.value) == "TensorRT is not installed: pip install tensorrt (needs an NVIDIA GPU)"


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
    cached = cached_engine_path(res.identity, cache)
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


# -- the TensorRT runner, up to the TensorRT boundary ---------------------------------------------------

def test_runner_refuses_before_touching_tensorrt(tmp_path, monkeypatch):
    import polygraphy.backend.trt as pbt

    from crossformer_deploy.runtime.open import open_runner, read_model_info
    from crossformer_deploy.runtime.tensorrt_runner import TensorRTRunner

    def must_not_deserialise(*a, **k):
        raise AssertionError("TensorRT was asked to deserialise an engine that should have been refused")

    monkeypatch.setattr(pbt, "EngineFromBytes", must_not_deserialise)
    plan = fake_engine(tmp_path)  # built for H100
    assert read_model_info(plan) == INFO
    runner = open_runner(plan)
    assert isinstance(runner, TensorRTRunner) and runner.profiles == list(identity().profiles)

    monkeypatch.setattr(ident, "current_device_identity", lambda device=0: A100)
    with pytest.raises(ModelFileError, match=r"model\.plan was built for NVIDIA H100 80GB HBM3 .* GPU is NVIDIA A100"):
        runner.load()
    monkeypatch.setattr(ident, "current_device_identity",
                        lambda device=0: dataclasses.replace(H100, tensorrt_version="10.3.0"))
    with pytest.raises(ModelFileError, match=r"built by TensorRT 10\.9\.0, but this machine has TensorRT 10\.3\.0"):
        runner.load()

    # bytes that are not the ones the sidecar describes: refused before even asking for the device
    def no_device(device=0):
        raise AssertionError("device queried for an engine whose bytes do not match")

    monkeypatch.setattr(ident, "current_device_identity", no_device)
    with open(plan, "ab") as f:
        f.write(b"!")
    with pytest.raises(ModelFileError, match="does not match its sidecar"):
        TensorRTRunner(plan).load()
    # a size outside the profile is told without loading anything
    with pytest.raises(InputSizeError, match="shape 1x3x416x416 is outside the engine's profile max 8x3x224x224"):
        TensorRTRunner(plan).run({"image": np.zeros((1, 3, 416, 416), np.float32)})
    os.remove(plan + ".json")
    with pytest.raises(ModelFileError, match="engine has no sidecar"):
        open_runner(plan)
    if not HAS_TRT:
        assert "tensorrt" not in sys.modules


class FakeTrtRunner:
    """Polygraphy's TrtRunner as far as our runner uses it: a fresh execution context starts on profile 0,
    and TensorRT fails a shape outside the current profile."""

    activations = 0
    activate_error: Exception | None = None

    def __init__(self, engine, profiles):
        self.profiles, self.profile, self.is_active = profiles, 0, False

    def activate(self):
        if FakeTrtRunner.activate_error is not None:
            raise FakeTrtRunner.activate_error
        FakeTrtRunner.activations += 1
        self.profile, self.is_active = 0, True

    def deactivate(self):
        self.is_active = False

    def set_profile(self, index):
        self.profile = index

    def infer(self, feeds):
        shape = feeds["image"].shape
        assert find_profile(self.profiles[self.profile:self.profile + 1], shape) == 0, \
            f"TensorRT error: shape {shape} is outside profile {self.profile}"
        return {"logits": np.zeros((shape[0], 10), np.float32)}


@pytest.fixture
def fake_polygraphy(tmp_path, monkeypatch):
    """A two-profile engine whose TensorRT side is FakeTrtRunner."""
    import polygraphy.backend.trt as pbt

    from crossformer_deploy.runtime.runner import TensorSpec
    from crossformer_deploy.runtime.tensorrt_runner import TensorRTRunner

    profiles = (Profile((1, 224, 224), (1, 224, 224), (1, 224, 224)), Profile((1, 64, 64), (1, 96, 96), (2, 128, 128)))
    plan = fake_engine(tmp_path, ident_=identity(profiles=profiles))
    monkeypatch.setattr(ident, "current_device_identity", lambda device=0: H100)
    monkeypatch.setattr(pbt, "EngineFromBytes", lambda data: lambda: "engine")
    monkeypatch.setattr(pbt, "TrtRunner", lambda engine: FakeTrtRunner(engine, profiles))
    monkeypatch.setattr(FakeTrtRunner, "activate_error", None)
    f32 = np.dtype(np.float32)
    monkeypatch.setattr(TensorRTRunner, "_specs", lambda self: ([TensorSpec("image", (None, 3, None, None), f32)],
                                                                [TensorSpec("logits", (None, 10), f32)]))
    return TensorRTRunner(plan)


def test_runner_profile_survives_close_and_reload(fake_polygraphy):
    runner = fake_polygraphy
    small = np.zeros((1, 3, 96, 96), np.float32)
    with runner:
        assert runner.run({"image": small})["logits"].shape == (1, 10)  # switches to profile 1
    with runner:  # reloaded: a new execution context, on profile 0 again
        assert runner.run({"image": small})["logits"].shape == (1, 10)
        assert runner.run({"image": np.zeros((1, 3, 224, 224), np.float32)})["logits"].shape == (1, 10)


def test_runner_cuda_runtime_not_found_is_one_line(fake_polygraphy, monkeypatch):
    monkeypatch.setattr(FakeTrtRunner, "activate_error", OSError("libcudart.so: cannot open shared object file"))
    with pytest.raises(UsageError, match=r"could not load the CUDA runtime \(libcudart.so: cannot open shared "
                                         r"object file\); Polygraphy .* >= 0\.53") as e:
        fake_polygraphy.load()
    assert "\n" not in str(e.value)


@pytest.mark.skipif(HAS_TRT, reason="checks the message for a machine without TensorRT")
def test_runner_without_tensorrt_names_what_the_engine_needs(tmp_path):
    from crossformer_deploy.runtime.tensorrt_runner import TensorRTRunner

    with pytest.raises(UsageError) as e:
        TensorRTRunner(fake_engine(tmp_path)).load()
    assert str(e.value) == ("TensorRT is not installed: pip install tensorrt (needs an NVIDIA GPU); model.plan needs "
                            "TensorRT 10.9.0 on NVIDIA H100 80GB HBM3 (compute capability 9.0)")


# -- the commands ----------------------------------------------------------------------------------------

def test_build_engine_cli_errors(exports, tmp_path):
    c = exports["cache"]
    plan = str(tmp_path / "m.plan")
    r = cli("build_engine", "--help", cache=c)
    assert r.returncode == 0 and "min:1x224x224,opt:8x224x224,max:32x384x384" in r.stdout and "--no-cache" in r.stdout
    cases = [
        (["--onnx", exports["dynamic"], "--engine", plan, "--shapes", "min:1x224x224,opt:8x200x224,max:32x384x384"],
         "crossformer-build-engine: error: profile min:1x224x224,opt:8x200x224,max:32x384x384: opt height 200 is not "
         "a multiple of 32 (nearest: 192 or 224)"),
        (["--onnx", exports["static"], "--engine", plan, "--shapes", "1x224x224"],
         "crossformer-build-engine: error: profile min:1x224x224,opt:1x224x224,max:1x224x224: min batch 1 does not "
         "fit this ONNX, whose batch is fixed at 2; use batch 2 or export with a dynamic batch"),
        (["--onnx", exports["dynamic"], "--engine", str(tmp_path / "m.onnx")],
         "crossformer-build-engine: error: engine path m.onnx must end with .plan, .engine or .trt"),
        (["--onnx", str(tmp_path / "nope.onnx"), "--engine", plan],
         f"crossformer-build-engine: error: ONNX file not found: {tmp_path / 'nope.onnx'}"),
        (["--onnx", exports["dynamic"], "--engine", plan, "--shapes", "min:1x224x224"],
         "crossformer-build-engine: error: shapes 'min:1x224x224': missing opt, max"),
    ]
    if not HAS_TRT:
        cases.append((["--onnx", exports["dynamic"], "--engine", plan],
                      "crossformer-build-engine: error: TensorRT is not installed: pip install tensorrt "
                      "(needs an NVIDIA GPU)"))
    for args, expected in cases:
        line = one_line_error(cli("build_engine", *args, cache=c))
        assert line.startswith(expected), (line, expected)
    r = cli("build_engine", "--onnx", exports["dynamic"], "--engine", plan, "--opt-level", "7", cache=c)
    assert r.returncode == 2 and "7 is not one of TensorRT's optimisation levels 0..5" in r.stderr
    assert not os.path.exists(plan)


def test_infer_refuses_engine_for_another_gpu(tmp_path, exports):
    plan = fake_engine(tmp_path, ident_=identity(gpu_name="NVIDIA A100-SXM4-80GB", compute_capability="8.0"))
    line = one_line_error(cli("infer", SAMPLE, "--model", plan, cache=exports["cache"]))
    # here: no TensorRT (or no GPU); on a TensorRT machine: this GPU is not an A100 of that TensorRT
    assert line.startswith("crossformer-infer: error: ") and any(
        f in line for f in ("TensorRT is not installed", "no CUDA GPU is visible", "was built for NVIDIA A100",
                            "was built by TensorRT 10.9.0"))
    # the same with this machine posing as an H100 with that TensorRT: the GPU check itself refuses
    code = textwrap.dedent(f"""
        import sys
        from crossformer_deploy.engines import identity as ident
        ident.current_device_identity = lambda device=0: ident.DeviceIdentity("10.9.0", "NVIDIA H100 80GB HBM3", "9.0")
        from crossformer_deploy.cli.infer_cmd import main
        sys.exit(main([{SAMPLE!r}, "--model", {plan!r}]))
        """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                       env={**os.environ, "CROSSFORMER_DEPLOY_CACHE": exports["cache"]})
    assert one_line_error(r) == (
        "crossformer-infer: error: model.plan was built for NVIDIA A100-SXM4-80GB (compute capability 8.0), but this "
        "GPU is NVIDIA H100 80GB HBM3 (compute capability 9.0); engines are specific to the GPU model: rebuild it "
        "with crossformer-build-engine on this machine")
    os.remove(plan + ".json")
    line = one_line_error(cli("infer", SAMPLE, "--model", plan, cache=exports["cache"]))
    assert line.startswith("crossformer-infer: error: engine has no sidecar model.plan.json")


# -- examples/cpp ------------------------------------------------------------------------------------------

def test_make_input_matches_our_preprocessing(exports, tmp_path):
    from crossformer_deploy.runtime.preprocess import load_batch

    raw, labels = str(tmp_path / "x.raw"), str(tmp_path / "labels.txt")
    r = subprocess.run([sys.executable, os.path.join(CPP, "make_input.py"), SAMPLE, "--model", exports["dynamic"],
                        "-o", raw, "--labels", labels], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert f"{raw} 1x3x224x224 --labels {labels}" in r.stdout
    x = np.fromfile(raw, "<f4").reshape(1, 3, 224, 224)
    np.testing.assert_array_equal(x, load_batch([SAMPLE], (224, 224)))
    assert len(open(labels).read().splitlines()) == 10
    # a fixed-batch model (here through an engine's sidecar) gets its batch, padded
    plan = fake_engine(tmp_path, info=dataclasses.replace(INFO, batch=2, dynamic=False))
    r = subprocess.run([sys.executable, os.path.join(CPP, "make_input.py"), SAMPLE, "--model", plan, "-o", raw,
                        "--labels", labels], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    y = np.fromfile(raw, "<f4").reshape(2, 3, 224, 224)
    np.testing.assert_array_equal(y[0], x[0])
    assert not y[1].any()


# A stand-in for the TensorRT 10 declarations classify.cpp uses (signatures as in NvInferRuntime.h), with
# a fake engine behind them: 'image' [-1,3,224,224] (profile batch 1..8) -> 'logits' [B,10]. Only for
# compiling, linking and exercising the host-side logic of the example without TensorRT.
MOCK_NVINFER = r"""
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <cuda_runtime_api.h>
namespace nvinfer1 {
class Dims64 { public: static constexpr int32_t MAX_DIMS{8}; int32_t nbDims{0}; int64_t d[MAX_DIMS]{}; };
using Dims = Dims64;
enum class DataType : int32_t { kFLOAT = 0, kHALF = 1, kINT8 = 2, kINT32 = 3 };
enum class TensorIOMode : int32_t { kNONE = 0, kINPUT = 1, kOUTPUT = 2 };
enum class OptProfileSelector : int32_t { kMIN = 0, kOPT = 1, kMAX = 2 };
class ILogger { public:
  enum class Severity : int32_t { kINTERNAL_ERROR = 0, kERROR = 1, kWARNING = 2, kINFO = 3, kVERBOSE = 4 };
  virtual void log(Severity severity, char const* msg) noexcept = 0;
  virtual ~ILogger() = default; };
class IExecutionContext { public:
  virtual ~IExecutionContext() = default;
  bool setOptimizationProfileAsync(int32_t, cudaStream_t) noexcept { return true; }
  bool setInputShape(char const*, Dims const& dims) noexcept { shape = dims; return true; }
  Dims getTensorShape(char const*) const noexcept { Dims o; o.nbDims = 2; o.d[0] = shape.d[0]; o.d[1] = 10; return o; }
  bool setTensorAddress(char const*, void*) noexcept { return true; }
  bool enqueueV3(cudaStream_t) noexcept { return true; }
  Dims shape{}; };
class ICudaEngine { public:
  virtual ~ICudaEngine() = default;
  IExecutionContext* createExecutionContext() noexcept { return new IExecutionContext(); }
  int32_t getNbIOTensors() const noexcept { return 2; }
  char const* getIOTensorName(int32_t i) const noexcept { return i == 0 ? "image" : "logits"; }
  TensorIOMode getTensorIOMode(char const* n) const noexcept {
    return std::strcmp(n, "image") == 0 ? TensorIOMode::kINPUT : TensorIOMode::kOUTPUT; }
  DataType getTensorDataType(char const*) const noexcept { return DataType::kFLOAT; }
  int32_t getNbOptimizationProfiles() const noexcept { return 1; }
  Dims getProfileShape(char const*, int32_t, OptProfileSelector s) const noexcept {
    Dims d; d.nbDims = 4; d.d[0] = s == OptProfileSelector::kMAX ? 8 : 1; d.d[1] = 3; d.d[2] = 224; d.d[3] = 224;
    return d; } };
class IRuntime { public:
  virtual ~IRuntime() = default;
  ICudaEngine* deserializeCudaEngine(void const* blob, std::size_t size) noexcept {
    return size >= 4 && std::memcmp(blob, "MOCK", 4) == 0 ? new ICudaEngine() : nullptr; } };
IRuntime* createInferRuntime(ILogger& logger) noexcept;
}  // namespace nvinfer1
"""
MOCK_PLUGIN_H = 'extern "C" bool initLibNvInferPlugins(void* logger, char const* libNamespace);\n'
MOCK_LIB = r"""
#include "NvInfer.h"
namespace nvinfer1 { IRuntime* createInferRuntime(ILogger&) noexcept { return new IRuntime(); } }
extern "C" bool initLibNvInferPlugins(void*, char const*) { return true; }
"""


def _cuda_include() -> str | None:
    for base in [os.environ.get("CUDA_HOME"), "/usr/local/cuda", *sorted(
            (os.path.join("/usr/local", d) for d in os.listdir("/usr/local") if d.startswith("cuda-")), reverse=True)]:
        if base and os.path.isfile(os.path.join(base, "include", "cuda_runtime_api.h")):
            return os.path.join(base, "include")
    return None


@pytest.fixture(scope="module")
def mock_tensorrt(tmp_path_factory):
    cuda = _cuda_include()
    if not shutil.which("g++") or cuda is None:
        pytest.skip("needs g++ and the CUDA headers (cuda_runtime_api.h) to compile examples/cpp")
    root = tmp_path_factory.mktemp("mock_tensorrt")
    (root / "include").mkdir()
    (root / "lib").mkdir()
    (root / "include" / "NvInfer.h").write_text(MOCK_NVINFER)
    (root / "include" / "NvInferPlugin.h").write_text(MOCK_PLUGIN_H)
    (root / "stub.cpp").write_text(MOCK_LIB)
    r = subprocess.run(["g++", "-shared", "-fPIC", "-I", str(root / "include"), "-I", cuda, str(root / "stub.cpp"),
                        "-o", str(root / "lib" / "libnvinfer.so")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    shutil.copy(root / "lib" / "libnvinfer.so", root / "lib" / "libnvinfer_plugin.so")
    return {"root": root, "cuda": cuda}


def test_cpp_example_compiles_cleanly(mock_tensorrt):
    r = subprocess.run(["g++", "-std=c++17", "-Wall", "-Wextra", "-Werror", "-fsyntax-only",
                        "-DCF_WITH_NVINFER_PLUGIN=1", "-I", str(mock_tensorrt["root"] / "include"),
                        "-I", mock_tensorrt["cuda"], os.path.join(CPP, "classify.cpp")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr


def test_cpp_example_cmake_build_and_host_logic(mock_tensorrt, tmp_path):
    if not shutil.which("cmake"):
        pytest.skip("needs cmake")
    build_dir = tmp_path / "build"
    r = subprocess.run(["cmake", "-S", CPP, "-B", str(build_dir), f"-DTensorRT_ROOT={mock_tensorrt['root']}"],
                       capture_output=True, text=True, timeout=300)
    if r.returncode and "CUDAToolkit" in r.stdout + r.stderr:
        pytest.skip("CMake's FindCUDAToolkit found no CUDA toolkit here")
    assert r.returncode == 0, r.stdout + r.stderr
    r = subprocess.run(["cmake", "--build", str(build_dir)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    exe = str(build_dir / "classify")
    env = {**os.environ, "LD_LIBRARY_PATH": str(mock_tensorrt["root"] / "lib")}

    def classify(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([exe, *args], capture_output=True, text=True, env=env, timeout=60)

    mock_plan, bad_plan, raw = tmp_path / "m.plan", tmp_path / "bad.plan", tmp_path / "x.raw"
    mock_plan.write_bytes(b"MOCK engine")
    bad_plan.write_bytes(b"garbage")
    np.zeros((1, 3, 224, 224), np.float32).tofile(raw)
    assert classify().returncode == 2 and "usage: classify" in classify().stderr
    r = classify(str(bad_plan), str(raw), "1x3x224x224")
    assert r.returncode == 2 and "classify: error: could not deserialise" in r.stderr
    r = classify(str(mock_plan), str(raw), "1x3x416x416")
    assert r.returncode == 2 and "shape 1x3x416x416 is outside every optimisation profile" in r.stderr
    r = classify(str(mock_plan), str(raw), "2x3x224x224")
    assert r.returncode == 2 and "holds 602112 bytes, shape 2x3x224x224 needs 1204224" in r.stderr
    r = classify(str(mock_plan), str(raw), "1x3x224")
    assert r.returncode == 2 and "shape must be BxCxHxW" in r.stderr
    r = classify(str(mock_plan), str(raw), "1x3x224x224", "--bogus")
    assert r.returncode == 2 and "unknown argument --bogus" in r.stderr
    # past the host-side checks the GPU work starts: no GPU here -> a CUDA error; with one -> 5 lines per image
    r = classify(str(mock_plan), str(raw), "1x3x224x224", "--labels", str(tmp_path / "missing.txt"))
    assert r.returncode == 2 and "cannot open" in r.stderr
    r = classify(str(mock_plan), str(raw), "1x3x224x224")
    assert (r.returncode == 2 and "classify: error: cudaStreamCreate" in r.stderr) or (
        r.returncode == 0 and r.stdout.startswith("image 0")), r.stdout + r.stderr


# -- with TensorRT and a GPU (skipped where TensorRT cannot be imported) -------------------------------------

@pytest.fixture(scope="module")
def trt_device():
    pytest.importorskip("tensorrt", reason="TensorRT is not installed (download stubs only on this machine)")
    try:
        return ident.current_device_identity()
    except UsageError as e:
        pytest.skip(f"TensorRT imports but: {e}")


def _ort(path: str, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    s = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    return s.run(None, {"image": x})[0]


def assert_parity(got: np.ndarray, want: np.ndarray, precision: str = "fp32", what: object = "") -> None:
    """ENGINE_TOLERANCES (scale-aware; tests/test_parity_bounds.py shows each one fails real bugs)."""
    from crossformer_deploy.runtime.parity import ENGINE_TOLERANCES, compare

    (c,) = compare({"logits": want}, {"logits": got}, ENGINE_TOLERANCES[precision])
    assert c.passed, (precision, what, c)


@pytest.fixture(scope="module")
def parity_exports(tmp_path_factory):
    """CrossFormer-S with logits of tens of units and a trained-size position bias (helpers.parity_model), as a
    checkpoint and as fp32 / fp16 / int8 graphs for --target tensorrt."""
    import torch

    from .helpers import parity_model

    d = tmp_path_factory.mktemp("trt_parity")
    model = parity_model()
    ckpt = str(d / "s.pth")
    torch.save({"model": model.state_dict()}, ckpt)
    out = {"model": model, "dir": d}
    calib = ["--int8", "--calib", os.path.dirname(SAMPLE)]
    for precision, extra in (("fp32", []), ("fp16", ["--fp16"]), ("int8", calib)):
        path = str(d / f"{precision}.onnx")
        r = cli("export", "--weights", ckpt, "--target", "tensorrt", *extra, "-o", path, cache=str(d / "cache"))
        assert r.returncode == 0, r.stderr
        out[precision] = path
    return out


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_tensorrt_parity_on_full_size_model(trt_device, parity_exports, precision, tmp_path):
    """TensorRT (the GroupedAttention plugin in every block) vs PyTorch fp32, bounds that a zeroed position bias
    or LDA run as SDA fail (polygraphy's CreateConfig leaves TF32 off: fp32 engines are fp32)."""
    import torch

    from crossformer_deploy.runtime.tensorrt_runner import TensorRTRunner

    plan = str(tmp_path / f"{precision}.plan")
    build(parity_exports[precision], plan, "min:1x224x224,opt:4x224x224,max:4x224x320", cache_dir=str(tmp_path / "c"))
    rng = np.random.default_rng(0)
    with TensorRTRunner(plan) as runner:
        for b, h, w in ((4, 224, 224), (2, 224, 320)):
            x = rng.standard_normal((b, 3, h, w), dtype=np.float32)
            with torch.no_grad():
                want = parity_exports["model"](torch.from_numpy(x)).numpy()
            assert_parity(runner.run({"image": x})["logits"], want, precision, (b, h, w))


def test_tensorrt_build_run_and_parity(trt_device, exports, tmp_path):
    from crossformer_deploy.runtime.tensorrt_runner import TensorRTRunner

    plan = str(tmp_path / "dyn.plan")
    cache = str(tmp_path / "cache")
    shapes = "min:1x64x64,opt:2x224x224,max:4x320x448"
    res = build(exports["dynamic"], plan, shapes, cache_dir=cache)
    assert not res.cached and res.identity.device == trt_device
    assert os.path.isfile(os.path.join(cache, "tensorrt", os.listdir(os.path.join(cache, "tensorrt"))[0]))
    rng = np.random.default_rng(0)
    with TensorRTRunner(plan) as runner:
        assert [s.name for s in runner.inputs] == ["image"] and [s.name for s in runner.outputs] == ["logits"]
        # sizes of both small-map switch cases and a non-square one, none of them the export size
        for b, h, w in ((1, 224, 224), (2, 224, 288), (1, 64, 96), (3, 320, 448)):
            x = rng.standard_normal((b, 3, h, w)).astype(np.float32)
            got = runner.run({"image": x})["logits"]
            want = _ort(exports["dynamic"], x)
            assert_parity(got, want, "fp32", (b, h, w))
        with pytest.raises(InputSizeError, match="outside the engine's profile max 4x3x320x448"):
            runner.run({"image": np.zeros((1, 3, 352, 448), np.float32)})
    assert build(exports["dynamic"], str(tmp_path / "again.plan"), shapes, cache_dir=cache).cached


def test_tensorrt_static_and_multi_profile(trt_device, exports, tmp_path):
    from crossformer_deploy.runtime.tensorrt_runner import TensorRTRunner

    static_plan = build_engine(exports["static"], str(tmp_path / "static.plan"), cache_dir=str(tmp_path / "c"))
    x = np.random.default_rng(1).standard_normal((2, 3, 224, 224)).astype(np.float32)
    with TensorRTRunner(static_plan) as r:
        assert_parity(r.run({"image": x})["logits"], _ort(exports["static"], x))
    multi = build_engine(exports["dynamic"], str(tmp_path / "multi.plan"),
                         ["1x224x224", "min:1x64x64,opt:1x96x96,max:2x128x128"], cache_dir=str(tmp_path / "c"))
    with TensorRTRunner(multi) as r:
        for shape in ((1, 3, 224, 224), (2, 3, 64, 96), (1, 3, 224, 224)):  # switches profile and back
            x = np.random.default_rng(2).standard_normal(shape).astype(np.float32)
            assert_parity(r.run({"image": x})["logits"], _ort(exports["dynamic"], x), "fp32", shape)


def test_tensorrt_refuses_tampered_sidecar_and_cli_roundtrip(trt_device, exports, tmp_path):
    plan = str(tmp_path / "m.plan")
    r = cli("build_engine", "--onnx", exports["dynamic"], "--engine", plan, cache=str(tmp_path / "c"))
    assert r.returncode == 0, r.stderr
    a = cli("infer", SAMPLE, "--model", plan, "--json", cache=str(tmp_path / "c"))
    b = cli("infer", SAMPLE, "--model", exports["dynamic"], "--json", cache=str(tmp_path / "c"))
    assert a.returncode == 0, a.stderr
    classes = [[t["class"] for t in json.loads(r.stdout)[0]["topk"]] for r in (a, b)]
    assert classes[0] == classes[1]
    side = read_sidecar(plan)
    write_sidecar(plan, side.info, dataclasses.replace(side.identity, tensorrt_version="0.0.1"), side.engine_sha256)
    line = one_line_error(cli("infer", SAMPLE, "--model", plan, cache=str(tmp_path / "c")))
    assert "was built by TensorRT 0.0.1" in line


def test_key_recipe_is_sha256_of_canonical_json():
    # documents the recipe the pinned key above comes from
    a = identity()
    canon = json.dumps({"v": ident.SIDECAR_VERSION, **a.to_json()}, sort_keys=True, separators=(",", ":"))
    assert a.key() == hashlib.sha256(canon.encode()).hexdigest()[:32]
