"""Matching our detections to the oracle's: one-to-one, same label, IoU >= 0.99, score within 1e-4, for every
oracle detection with score >= 0.3; and the IoU of pasted masks."""
import numpy as np
import torch

SCORE_MIN, IOU_MIN, SCORE_TOL = 0.3, 0.99, 1e-4


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """[N, 4], [M, 4] -> [N, M]."""
    lt = torch.maximum(a[:, None, :2], b[None, :, :2])
    rb = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    area_a, area_b = (a[:, 2:] - a[:, :2]).prod(-1), (b[:, 2:] - b[:, :2]).prod(-1)
    return inter / (area_a[:, None] + area_b[None] - inter)


def match_pairs(ref: dict, dets: torch.Tensor, labels: torch.Tensor) -> tuple[list[tuple[int, int]], int]:
    """(pairs (oracle row, our row), wanted): the oracle's detections with score >= SCORE_MIN matched one-to-one
    (greedily, in the oracle's order) by ours with the same label, IoU >= IOU_MIN and the score within SCORE_TOL."""
    keep = torch.nonzero(ref["scores"] >= SCORE_MIN).flatten()
    rb, rs, rl = ref["bboxes"][keep], ref["scores"][keep], ref["labels"][keep]
    rows = torch.nonzero(labels >= 0).flatten()
    ob, os_, ol = dets[rows, :4], dets[rows, 4], labels[rows]
    ok = (box_iou(rb, ob) >= IOU_MIN) & (rl[:, None] == ol[None]) & ((rs[:, None] - os_[None]).abs() <= SCORE_TOL)
    used, pairs = set(), []
    for i in range(len(rb)):
        j = next((j for j in torch.nonzero(ok[i]).flatten().tolist() if j not in used), None)
        if j is not None:
            used.add(j)
            pairs.append((int(keep[i]), int(rows[j])))
    return pairs, len(rb)


def unpack_masks(det: dict) -> torch.Tensor:
    """The oracle's pasted masks of its detections with score >= SCORE_MIN: bool [n, H0, W0]."""
    h, w = det["mask_shape"]
    bits = np.unpackbits(det["masks_packed"].numpy(), axis=1)[:, :h * w]
    return torch.from_numpy(bits.astype(bool)).reshape(-1, h, w)


def mask_iou(a: torch.Tensor, b: torch.Tensor) -> float:
    """IoU of two bool masks; 1 when both are empty."""
    union = int((a | b).sum())
    return 1.0 if union == 0 else int((a & b).sum()) / union
