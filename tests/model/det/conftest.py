"""Fixtures for the whole-detector tests: the golden RetinaNet (tests/fixtures/mm_oracle/make_golden_det.py) and
its mmdet checkpoint file."""
import os

import pytest
import torch

DATA = os.path.join(os.path.dirname(__file__), os.pardir, os.pardir, "data")
GOLDEN_DET = os.path.join(DATA, "golden_det.pt")


def write_det_checkpoint(golden: dict, path: str) -> str:
    """The golden RetinaNet as the authors' mmdet runner saves one: ``state_dict`` with the backbone
    (golden_tiny.pth's tensors) under ``backbone.``, the neck and head (stored float16, exact) as float32, and a
    ``meta`` with mmdet's kind of content."""
    backbone = torch.load(os.path.join(DATA, golden["weights"]), weights_only=True)["model"]
    sd = {"backbone." + k: v for k, v in backbone.items() if not k.startswith(("norm.", "head."))}
    sd.update({k: v.float() for k, v in golden["heads"].items()})
    meta = {"mmdet_version": "3.3.0", "dataset_meta": {"classes": tuple(f"class{i}" for i in
                                                                         range(golden["num_classes"]))},
            "epoch": 12, "iter": 87960, "seed": 0}
    torch.save({"meta": meta, "state_dict": sd}, path)
    return path


@pytest.fixture(scope="session")
def golden_det():
    """mmdet's outputs for the tiny RetinaNet: inputs, image sizes, neck / raw head maps, detections."""
    return torch.load(GOLDEN_DET, weights_only=True)


@pytest.fixture(scope="session")
def det_ckpt(tmp_path_factory, golden_det):
    """Path of the golden RetinaNet's mmdet checkpoint; read-only."""
    return write_det_checkpoint(golden_det, str(tmp_path_factory.mktemp("det") / "retinanet_tiny.pth"))
