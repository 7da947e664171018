"""TensorRT optimisation profiles: parsing, checks against the model, defaults."""
from __future__ import annotations

import dataclasses

import pytest

from crossformer_deploy.base.errors import InputSizeError, UsageError
from crossformer_deploy.engines.tensorrt.profiles import (
    Profile,
    default_profiles,
    find_profile,
    max_size,
    parse_profiles,
    validate_for_model,
)
from tests.engines.support import INFO

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
