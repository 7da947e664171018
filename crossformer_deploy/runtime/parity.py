"""Compare a runtime's outputs with the PyTorch reference, against a tolerance table per precision.

Absolute/relative differences and the pass/fail on them come from Polygraphy's SimpleCompareFunc;
cosine and top-1 agreement (which Polygraphy has no notion of) are computed here.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class Tolerance:
    max_abs: float | None = None  # bound on max |a - b|
    min_cosine: float | None = None  # bound on the worst per-sample cosine
    min_top1: float | None = None  # bound on top-1 agreement (classifiers, whole run)
    max_abs_of_range: float | None = None  # bound on max |a - b| / (max(ref) - min(ref)), per output


# The bars the project is held to (docs/measurements.md). FP16/INT8 are bounded by cosine: absolute error
# scales with the logits.
TOLERANCES: dict[str, Tolerance] = {
    "fp32": Tolerance(max_abs=1e-4),
    "fp16": Tolerance(min_cosine=0.9995),
    "int8": Tolerance(min_cosine=0.99),
}

# TensorRT engines vs the PyTorch fp32 reference. TensorRT may run fp32 convolutions and matmuls in TF32, so
# fp32 gets an error bound relative to the logits' range instead of 1e-4; every bound is checked to fail a
# zeroed position bias and LDA run as SDA on a model whose logits span tens of units
# (tests/runtime/test_parity_bounds.py).
ENGINE_TOLERANCES: dict[str, Tolerance] = {
    "fp32": Tolerance(max_abs_of_range=1e-3),
    "fp16": Tolerance(min_cosine=0.9995, min_top1=1.0),
    "int8": Tolerance(min_cosine=0.99),
}


@dataclass(frozen=True)
class Comparison:
    output: str
    max_abs: float
    max_rel: float
    cosine: float  # worst sample
    top1: float | None  # fraction of samples whose argmax agrees (classifier logits)
    passed: bool

    def to_json(self) -> dict:
        return asdict(self)


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a.reshape(len(a), -1).astype(np.float64)
    b = b.reshape(len(b), -1).astype(np.float64)
    den = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return np.where(den > 0, (a * b).sum(1) / np.maximum(den, 1e-300), 1.0)


def compare(ref: dict[str, np.ndarray], got: dict[str, np.ndarray], tol: Tolerance,
            logits: str | None = "logits") -> list[Comparison]:
    # Polygraphy here, not at the top: cosine_rows also runs on the GPU machine (PyTorch, Triton, CuPy only)
    from polygraphy.comparator.compare import SimpleCompareFunc
    from polygraphy.comparator.struct import IterationResult
    from polygraphy.logger import G_LOGGER

    G_LOGGER.module_severity = G_LOGGER.CRITICAL  # our table is the report, not Polygraphy's log
    # Polygraphy views its arrays in place and refuses strided ones; a backbone's stage maps come out of
    # PyTorch as permuted (NHWC -> NCHW) views.
    ref = {k: np.ascontiguousarray(v) for k, v in ref.items()}
    got = {k: np.ascontiguousarray(v) for k, v in got.items()}
    atol = {k: tol.max_abs if tol.max_abs is not None else np.inf for k in got}
    if tol.max_abs_of_range is not None:  # per output: each is held to its own scale
        atol = {k: min(a, tol.max_abs_of_range * float(ref[k].max() - ref[k].min())) for k, a in atol.items()}
    poly = SimpleCompareFunc(atol=atol, rtol=0.0, check_error_stat="max", check_shapes=True)(
        IterationResult({k: ref[k] for k in got}, runner_name="reference"),
        IterationResult(got, runner_name="runtime"))
    out = []
    for name, r in poly.items():
        cos = float(cosine_rows(got[name], ref[name]).min())
        top1 = None
        if name == logits:
            top1 = float((got[name].argmax(-1) == ref[name].argmax(-1)).mean())
        ok = bool(r) and (tol.min_cosine is None or cos >= tol.min_cosine) and (
            tol.min_top1 is None or top1 is None or top1 >= tol.min_top1)
        out.append(Comparison(name, float(r.max_absdiff), float(r.max_reldiff), cos, top1, ok))
    return out


# Segmenters: the share of pixels whose class agrees with the fp32 PyTorch reference, per precision.
SEG_AGREEMENT: dict[str, float] = {"fp32": 0.9999, "fp16": 0.995, "int8": 0.98}


def pixel_agreement(a: np.ndarray, b: np.ndarray) -> float:
    """Fraction of pixels with the same class in two class maps of one shape."""
    return float((np.asarray(a) == np.asarray(b)).mean())


def miou_agreement(a: np.ndarray, b: np.ndarray, num_classes: int) -> float:
    """mIoU of map ``b`` scored against map ``a`` as ground truth: the mean, over the classes either map holds, of
    |a = c and b = c| / |a = c or b = c| (1.0 for equal maps)."""
    a, b = np.asarray(a).ravel(), np.asarray(b).ravel()
    both = np.bincount(a[a == b], minlength=num_classes)
    either = np.bincount(a, minlength=num_classes) + np.bincount(b, minlength=num_classes) - both
    present = either > 0
    return float((both[present] / either[present]).mean()) if present.any() else 1.0


# Detectors: the share of the reference's detections (score >= DET_SCORE_MIN) that the runtime answers one-to-one
# with the same label, IoU >= DET_IOU_MIN and a score within DET_SCORE_TOL (issue [L]'s bars: fp32 99 %; FP16 98 % and
# INT8 95 % of the fp32 detections).
DET_MATCH: dict[str, float] = {"fp32": 0.99, "fp16": 0.98, "int8": 0.95}
DET_SCORE_MIN, DET_IOU_MIN, DET_SCORE_TOL = 0.3, 0.99, 1e-4
# FP16 / INT8 graphs are matched looser (same label, IoU >= 0.9, score within 0.05): their backbone, neck and heads
# round (fp16: logits and deltas to ~1e-3 relative; int8: ~1 % per layer), which moves a box by a pixel or two and a
# score by up to a few hundredths; the same object, still over the 0.3 line, is the same answer to a user. NMS and
# box decoding stay fp32 (export/precision/det_region.py), so what the rule forgives is the network's rounding only.
DET_PRECISION_RULE = {"iou_min": 0.9, "score_tol": 0.05}


def det_rule(precision: str) -> dict[str, float]:
    """``match_pairs``' iou_min and score_tol for a graph of ``precision``."""
    return {"iou_min": DET_IOU_MIN, "score_tol": DET_SCORE_TOL} if precision == "fp32" else dict(DET_PRECISION_RULE)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """[N, 4], [M, 4] boxes (x1, y1, x2, y2) -> [N, M] IoU (0 where both are empty)."""
    a, b = np.asarray(a, np.float64).reshape(-1, 4), np.asarray(b, np.float64).reshape(-1, 4)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(-1)
    area_a = np.clip(a[:, 2:] - a[:, :2], 0, None).prod(-1)
    area_b = np.clip(b[:, 2:] - b[:, :2], 0, None).prod(-1)
    union = area_a[:, None] + area_b[None] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-300), 0.0)


def match_detections(ref_dets: np.ndarray, ref_labels: np.ndarray, got_dets: np.ndarray, got_labels: np.ndarray,
                     score_min: float = DET_SCORE_MIN, iou_min: float = DET_IOU_MIN,
                     score_tol: float = DET_SCORE_TOL) -> tuple[int, int]:
    """(matched, counted) for one image's fixed-size rows ([M, 5], [M]): ``match_pairs``' counts."""
    pairs, counted = match_pairs(ref_dets, ref_labels, got_dets, got_labels, score_min, iou_min, score_tol)
    return len(pairs), counted


def match_pairs(ref_dets: np.ndarray, ref_labels: np.ndarray, got_dets: np.ndarray, got_labels: np.ndarray,
                score_min: float = DET_SCORE_MIN, iou_min: float = DET_IOU_MIN,
                score_tol: float = DET_SCORE_TOL) -> tuple[list[tuple[int, int]], int]:
    """(matched (reference row, runtime row) pairs, counted): each reference detection with score >= ``score_min``
    (counted), by descending score, takes the unused runtime detection (any score > 0) of its label with the
    highest IoU among those with IoU >= ``iou_min`` and |score difference| <= ``score_tol``."""
    ref_dets, got_dets = np.asarray(ref_dets, np.float64), np.asarray(got_dets, np.float64)
    ref = np.flatnonzero((np.asarray(ref_labels) >= 0) & (ref_dets[:, 4] >= score_min))
    ref = ref[np.argsort(-ref_dets[ref, 4], kind="stable")]
    got = np.flatnonzero((np.asarray(got_labels) >= 0) & (got_dets[:, 4] > 0))
    if not len(ref):
        return [], 0
    iou = box_iou(ref_dets[ref, :4], got_dets[got, :4])
    ok = ((np.asarray(ref_labels)[ref][:, None] == np.asarray(got_labels)[got][None])
          & (iou >= iou_min) & (np.abs(ref_dets[ref, 4][:, None] - got_dets[got, 4][None]) <= score_tol))
    used = np.zeros(len(got), bool)
    pairs = []
    for i in range(len(ref)):
        cand = np.flatnonzero(ok[i] & ~used)
        if len(cand):
            j = cand[np.argmax(iou[i, cand])]
            used[j] = True
            pairs.append((int(ref[i]), int(got[j])))
    return pairs, len(ref)


# Mask R-CNN: the masks of matched detections, pasted into the image, against each other (issue [L]'s bar).
DET_MASK_IOU = 0.98


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two bool masks of one shape (1.0 when both are empty)."""
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0
