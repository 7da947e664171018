import os

import pytest
import torch

DATA = os.path.join(os.path.dirname(__file__), "data")
GOLDEN_CKPT = os.path.join(DATA, "golden_tiny.pth")

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="session")
def golden_cases():
    return torch.load(os.path.join(DATA, "golden_cases.pt"), weights_only=True)


@pytest.fixture(scope="session")
def golden_ckpt():
    return GOLDEN_CKPT
