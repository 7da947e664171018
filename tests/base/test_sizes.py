"""The input-size rule is one rule: the model, a runner, the command line, an engine profile and the Triton
serving code refuse the same sizes with the same words."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from crossformer_deploy import create_model
from crossformer_deploy.base.errors import InputSizeError, UsageError
from crossformer_deploy.base.model_info import ModelInfo
from crossformer_deploy.base.sizes import check_side, check_size, nearest_valid, parse_size, valid_side
from crossformer_deploy.engines.tensorrt.profiles import parse_profiles
from crossformer_deploy.engines.triton.serving import check_image_shape
from crossformer_deploy.model.config import TINY
from crossformer_deploy.runtime.runner import check_stride

BAD = "225x224 is not a multiple of 32 (height 225 -> 224 or 256)"


def test_the_rule():
    assert [n for n in range(1, 200) if valid_side(n)] == [32, 64, 96, 128, 160, 192]
    assert nearest_valid(225) == (224, 256) and nearest_valid(16) == (32, 64) and nearest_valid(64, 64) == (64, 128)
    check_size(224, 320)
    with pytest.raises(InputSizeError, match=r"height 16 -> 32 or 64, width 100 -> 96 or 128"):
        check_size(16, 100)
    with pytest.raises(InputSizeError, match=r"profile x: opt width 200 is not a multiple of 32 \(nearest: 192 or"):
        check_side(200, what="profile x: opt width")


def test_every_place_says_the_same():
    """Break the rule in one place and it reads differently from the others: this test goes red."""
    messages = []
    with pytest.raises(InputSizeError) as e:
        create_model(TINY)(torch.zeros(1, 3, 225, 224))
    messages.append(str(e.value))
    with pytest.raises(InputSizeError) as e:
        check_stride((1, 3, 225, 224), 32, "onnxruntime")
    messages.append(str(e.value))
    with pytest.raises(InputSizeError) as e:
        check_image_shape((1, 3, 225, 224), ModelInfo("tiny", "classifier", 10, "w"))
    messages.append(str(e.value))
    assert all(BAD in m for m in messages), messages
    with pytest.raises(InputSizeError, match=r"size 225x224: height 225 is not a multiple of 32 \(nearest: 224 or"):
        parse_size("225x224")
    with pytest.raises(InputSizeError, match=r"min height 225 is not a multiple of 32 \(nearest: 224 or 256\)"):
        parse_profiles("min:1x225x224,opt:1x256x224,max:1x256x224")
    with pytest.raises(UsageError, match="is not N or HxW"):
        parse_size("big")
    assert parse_size("224") == (224, 224) and parse_size("256x320") == (256, 320)
    check_stride(np.zeros((1, 3, 64, 96)).shape, 32, "x")
