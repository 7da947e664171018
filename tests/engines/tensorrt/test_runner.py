"""The TensorRT runner up to the TensorRT boundary: sidecar checks, profiles, one-line errors."""
from __future__ import annotations

import dataclasses
import os
import sys

import numpy as np
import pytest

from crossformer_deploy.base.errors import InputSizeError, ModelFileError, UsageError
from crossformer_deploy.engines.tensorrt import device
from crossformer_deploy.engines.tensorrt.profiles import (
    Profile,
    find_profile,
)
from tests.engines.support import A100, H100, HAS_TRT, INFO, fake_engine, identity

# -- the TensorRT runner, up to the TensorRT boundary ---------------------------------------------------

def test_runner_refuses_before_touching_tensorrt(tmp_path, monkeypatch):
    import polygraphy.backend.trt as pbt

    from crossformer_deploy.engines.open_model import open_runner, read_model_info
    from crossformer_deploy.engines.tensorrt.runner import TensorRTRunner

    def must_not_deserialise(*a, **k):
        raise AssertionError("TensorRT was asked to deserialise an engine that should have been refused")

    monkeypatch.setattr(pbt, "EngineFromBytes", must_not_deserialise)
    plan = fake_engine(tmp_path)  # built for H100
    assert read_model_info(plan) == INFO
    runner = open_runner(plan)
    assert isinstance(runner, TensorRTRunner) and runner.profiles == list(identity().profiles)

    monkeypatch.setattr(device, "current_device_identity", lambda device=0: A100)
    with pytest.raises(ModelFileError, match=r"model\.plan was built for NVIDIA H100 80GB HBM3 .* GPU is NVIDIA A100"):
        runner.load()
    monkeypatch.setattr(device, "current_device_identity",
                        lambda device=0: dataclasses.replace(H100, tensorrt_version="10.3.0"))
    with pytest.raises(ModelFileError, match=r"built by TensorRT 10\.9\.0, but this machine has TensorRT 10\.3\.0"):
        runner.load()

    # bytes that are not the ones the sidecar describes: refused before even asking for the device
    def no_device(device=0):
        raise AssertionError("device queried for an engine whose bytes do not match")

    monkeypatch.setattr(device, "current_device_identity", no_device)
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

    from crossformer_deploy.engines.tensorrt.runner import TensorRTRunner
    from crossformer_deploy.runtime.runner import TensorSpec

    profiles = (Profile((1, 224, 224), (1, 224, 224), (1, 224, 224)), Profile((1, 64, 64), (1, 96, 96), (2, 128, 128)))
    plan = fake_engine(tmp_path, ident_=identity(profiles=profiles))
    monkeypatch.setattr(device, "current_device_identity", lambda device=0: H100)
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
    from crossformer_deploy.engines.tensorrt.runner import TensorRTRunner

    with pytest.raises(UsageError) as e:
        TensorRTRunner(fake_engine(tmp_path)).load()
    assert str(e.value) == ("TensorRT is not installed: pip install tensorrt (needs an NVIDIA GPU); model.plan needs "
                            "TensorRT 10.9.0 on NVIDIA H100 80GB HBM3 (compute capability 9.0)")
