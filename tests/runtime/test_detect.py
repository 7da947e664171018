"""runtime/detect.py and the detection parity rule: rows to detections, masks pasted as mmdet pastes them, the
one-to-one matching that crossformer-validate and the bench report."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from crossformer_deploy.model.det.paste_masks import paste_masks as reference_paste
from crossformer_deploy.runtime.detect import detections, paste_masks
from crossformer_deploy.runtime.parity import match_detections


def test_paste_masks_is_mmdets_rule():
    """The runtime's numpy pasting (torch-free: Triton's serving env) against model/det/paste_masks.py, the torch
    statement of mmdet's FCNMaskHead rule (grid_sample), on smooth random masks and boxes, some past the edge."""
    g = torch.Generator().manual_seed(0)
    n, h, w = 12, 90, 120
    masks = torch.rand(n, 28, 28, generator=g)
    masks = F.avg_pool2d(masks[:, None], 5, 1, 2)[:, 0] * 1.4 - 0.2  # smooth blobs crossing 0.5
    xy = torch.rand(n, 2, generator=g) * torch.tensor([w - 10, h - 10])
    wh = torch.rand(n, 2, generator=g) * torch.tensor([80.0, 60.0]) + 2
    boxes = torch.cat([xy, torch.minimum(xy + wh, torch.tensor([w + 5.0, h + 5.0]))], 1)  # some past the edge
    dets = torch.cat([boxes, torch.ones(n, 1)], 1)
    want = reference_paste(masks, dets, h, w).numpy()
    got = paste_masks(masks.numpy(), boxes.numpy(), (h, w))
    assert got.shape == (n, h, w) and got.dtype == bool
    inter, union = (got & want).sum((1, 2)), (got | want).sum((1, 2))
    assert (inter / np.maximum(union, 1)).min() >= 0.999, inter / union  # float rounding at the 0.5 border only
    assert want.any((1, 2)).all()


def test_rows_to_detections():
    dets = np.zeros((1, 4, 5), np.float32)
    dets[0, 0] = [1, 2, 30, 40, 0.9]
    dets[0, 1] = [5, 5, 9, 9, 0.2]
    labels = np.array([[0, 79, -1, -1]])
    out = {"dets": dets, "labels": labels}
    names = [f"n{i}" for i in range(80)]
    found = detections(out, 0, (50, 60), names, score_thr=0.3)
    assert [(d.label, d.name, d.box, round(d.score, 3)) for d in found] == [(0, "n0", (1.0, 2.0, 30.0, 40.0), 0.9)]
    assert len(detections(out, 0, (50, 60), names, score_thr=0.0)) == 2
    assert detections({"dets": np.zeros((1, 4, 5), np.float32), "labels": np.full((1, 4), -1)}, 0, (5, 5),
                      names) == []  # 0 detections: an empty answer
    out["masks"] = np.ones((1, 4, 28, 28), np.float32)
    with_mask = detections(out, 0, (50, 60), names, score_thr=0.3)[0]
    assert with_mask.mask.shape == (50, 60) and with_mask.mask[2:40, 1:30].all() and not with_mask.mask[45:].any()


@pytest.mark.parametrize("shift,score,label,matched", [(0.0, 0.0, 0, 1), (0.05, 5e-5, 0, 1), (2.0, 0.0, 0, 0),
                                                       (0.0, 2e-4, 0, 0), (0.0, 0.0, 1, 0)])
def test_match_detections(shift, score, label, matched):
    ref = np.array([[10, 10, 50, 50, 0.8], [0, 0, 5, 5, 0.1]], np.float32)  # the 0.1 one is not counted
    got = ref.copy()
    got[0, :4] += shift
    got[0, 4] += score
    assert match_detections(ref, np.array([0, 3]), got, np.array([label, 3])) == (matched, 1)
    # one-to-one: two equal reference boxes need two runtime boxes
    assert match_detections(np.stack([ref[0], ref[0]]), np.array([0, 0]), ref[:1], np.array([0])) == (1, 2)
