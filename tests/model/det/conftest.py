"""Fixtures for the whole-detector tests: the golden RetinaNet and Mask R-CNN
(tests/fixtures/mm_oracle/make_golden_det.py) and their mmdet checkpoint files."""
import hashlib
import os

import pytest
import torch

DATA = os.path.join(os.path.dirname(__file__), os.pardir, os.pardir, "data")
GOLDEN_DET = os.path.join(DATA, "golden_det.pt")


def write_det_checkpoint(golden: dict, path: str) -> str:
    """A golden detector (``golden_det`` or its ``mask_rcnn`` part) as the authors' mmdet runner saves one:
    ``state_dict`` with the backbone (golden_tiny.pth's tensors) under ``backbone.``, the neck and heads (stored
    float16, exact) as float32, and a ``meta`` with mmdet's kind of content."""
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


@pytest.fixture(scope="session")
def golden_mask_rcnn(golden_det):
    """mmdet's outputs for the tiny Mask R-CNN: inputs, image sizes, maps, proposals, RoI head outputs, detections
    with their pasted masks (bit-packed). Inputs stored as a seed are rebuilt here, their hash checked."""
    golden = golden_det["mask_rcnn"]
    for case, spec in golden["seeded_inputs"].items():
        x = torch.randn(*spec["shape"], generator=torch.Generator().manual_seed(spec["seed"])).half()
        if hashlib.sha256(x.numpy().tobytes()).hexdigest() != spec["sha256"]:
            pytest.fail(f"torch.randn no longer gives golden_det.pt's {case} input: regenerate the fixture")
        golden["inputs"][case] = x
    return golden


@pytest.fixture(scope="session")
def mask_rcnn_ckpt(tmp_path_factory, golden_mask_rcnn):
    """Path of the golden Mask R-CNN's mmdet checkpoint; read-only."""
    return write_det_checkpoint(golden_mask_rcnn, str(tmp_path_factory.mktemp("det") / "mask_rcnn_tiny.pth"))
