"""Matching our detections to the oracle's: one-to-one, same label, IoU >= 0.99, score within 1e-4, for every
oracle detection with score >= 0.3; and the IoU of pasted masks. The rule is ``runtime/parity.match_pairs`` (the
one ``crossformer-validate`` and the benchmarks use); this adapts the oracle's per-image dicts to it."""
import numpy as np
import torch

from crossformer_deploy.runtime import parity

SCORE_MIN, IOU_MIN, SCORE_TOL = parity.DET_SCORE_MIN, parity.DET_IOU_MIN, parity.DET_SCORE_TOL


def match_pairs(ref: dict, dets: torch.Tensor, labels: torch.Tensor) -> tuple[list[tuple[int, int]], int]:
    """(pairs (oracle row, our row), wanted): the oracle's detections (``bboxes``, ``scores``, ``labels``) with score
    >= SCORE_MIN matched one-to-one by ours ([M, 5], [M]; label -1 = padding) with the same label, IoU >= IOU_MIN
    and the score within SCORE_TOL."""
    ref_dets = np.concatenate([np.asarray(ref["bboxes"]), np.asarray(ref["scores"])[:, None]], 1)
    return parity.match_pairs(ref_dets, np.asarray(ref["labels"]), np.asarray(dets), np.asarray(labels),
                              SCORE_MIN, IOU_MIN, SCORE_TOL)


def unpack_masks(det: dict) -> torch.Tensor:
    """The oracle's pasted masks of its detections with score >= SCORE_MIN: bool [n, H0, W0]."""
    h, w = det["mask_shape"]
    bits = np.unpackbits(det["masks_packed"].numpy(), axis=1)[:, :h * w]
    return torch.from_numpy(bits.astype(bool)).reshape(-1, h, w)


def mask_iou(a: torch.Tensor, b: torch.Tensor) -> float:
    """IoU of two bool masks; 1 when both are empty (``parity.mask_iou``)."""
    return parity.mask_iou(np.asarray(a), np.asarray(b))
