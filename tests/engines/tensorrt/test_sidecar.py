"""The engine sidecar: identity and cache key, round trip, refusals, device compatibility."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import subprocess
import sys

import pytest

from crossformer_deploy.base.errors import ModelFileError, UsageError
from crossformer_deploy.base.fileio import sha256_file
from crossformer_deploy.engines.tensorrt import device
from crossformer_deploy.engines.tensorrt import sidecar as ident
from crossformer_deploy.engines.tensorrt.profiles import (
    Profile,
)
from crossformer_deploy.engines.tensorrt.sidecar import (
    EngineIdentity,
    check_compatible,
    read_sidecar,
    sidecar_path,
)
from tests.engines.support import A100, H100, HAS_TRT, INFO, fake_engine, identity

# -- identity, cache key, sidecar ---------------------------------------------------------------------------

def test_cache_key_is_stable_and_changes_with_every_field():
    a = identity()
    assert a.key() == identity().key() and len(a.key()) == 32
    # pinned: a change of the key's recipe silently orphans every cached engine, so it must be deliberate
    assert a.key() == "b4fc135ac6f4d0dc0e33254ab3cb277c"
    # same key in another process (no hash randomisation involved)
    code = ("from crossformer_deploy.engines.tensorrt.sidecar import EngineIdentity as E; "
            "from crossformer_deploy.engines.tensorrt.profiles import Profile as P; "
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
        device.current_device_identity()
    assert str(e.value) == "TensorRT is not installed: pip install tensorrt (needs an NVIDIA GPU)"


def test_key_recipe_is_sha256_of_canonical_json():
    # documents the recipe the pinned key above comes from
    a = identity()
    canon = json.dumps({"v": ident.SIDECAR_VERSION, **a.to_json()}, sort_keys=True, separators=(",", ":"))
    assert a.key() == hashlib.sha256(canon.encode()).hexdigest()[:32]
