"""RetinaNet and Mask R-CNN (S, B, CrossFormer++ S2) at full size against MMDetection 3.3.0 + the authors'
backbone: our PyTorch, ONE dynamic ONNX graph on ONNX Runtime and OpenVINO, and the oracle; parity and latency.

    CROSSFORMER_OFFICIAL=/tmp/crossformer-official python benchmarks/det_vs_mmdet.py \\
        [--arch retinanet|mask_rcnn] [--variant s|b|pp-s2] [--threads 2] [--repeats 3] [--cases 3 | --pick 2] \\
        [--batch2] [--json benchmarks/det_vs_mmdet.json [--json-key KEY]]

``--variant``: the backbone of the authors' config (``s``, ``b``; ``pp-s2`` is CrossFormer++'s CrossFormer_S2 of
``configs/crossformer_pp``, pp-S weights). ``--cases N``: the first N single-image cases; ``--pick 2,0``: those
cases (0-based); ``--batch2``: also the batch case. ``--repeats 0``: no timing (latencies null). ``--json-key``:
the report goes under that key of the JSON file, whose other keys are kept (without it the file is overwritten).

Weights: our detector (``build_detector``, seed 0, 80 classes) with the heads' last layers rescaled on the first
case so that they look like a trained model's (random weights otherwise saturate every sigmoid at 1.0: ties
everywhere): RetinaNet's class logits spread about 1.5 around a bias of -4 and its deltas about 0.3; Mask R-CNN's
box-head logits spread about 2 around biases that even the classes out (the background's +2), its deltas about
1 (x stds 0.1 / 0.2) and its mask logits about 2 around a median of 0; saved as an mmdet checkpoint. The oracle
venv (this file again, ``oracle`` role, /work/oracle-venv/bin/python) loads it strictly into mmdet's detector
built from the authors' config values (tests/fixtures/mm_oracle/oracle_det.py) and runs
``predict(rescale=True)``.

Cases (the authors' test pipeline: resize keeping the ratio to (1333, 800), ImageNet mean / std, pad to 32):
samples/chelsea.jpg (400x266 -> 800x1203 in a 800x1216 input), a 2:1 crop of samples/coffee.jpg (400x200 ->
667x1333 in 672x1344) and a 3:4 portrait crop of samples/rocket.jpg (200x267 -> 800x1068 in 1088x800); the batch
case (``--batch2``) is the first two in one [2, 3, 800, 1344] input (each padded with zeros after normalizing, as
mmdet's data preprocessor stacks them) with two image_size rows, compared image by image against mmdet's results
of the same batch. The ONNX graph is exported once at 320x320, batch 1, and serves them all. The heads are always
calibrated on the first case (chelsea), whichever cases run.

Reported per case and engine: max |neck / raw head - mmdet| (fp32; Mask R-CNN: neck and RPN maps), the share of
mmdet's detections with score >= 0.3 matched one-to-one (same label, IoU >= 0.99, score within 1e-4), for Mask
R-CNN the IoU of the matched detections' pasted masks (ours pasted by ``model/det/paste_masks.py``, mmdet's by
its own rule: min and mean), and the median latency of the whole detector (image in, detections (and 28x28
masks) out; pasting is host work and not timed) over ``--repeats`` runs, every engine on ``--threads`` threads.
"""
from __future__ import annotations

import argparse
import gc
import io
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
ORACLE_PY = os.environ.get("CROSSFORMER_ORACLE_PYTHON", "/work/oracle-venv/bin/python")
MEAN, STD = np.array([123.675, 116.28, 103.53]), np.array([58.395, 57.12, 57.375])
# (name, photo, crop box (left, upper, right, lower) or None)
CASES = [("chelsea 800x1216", "chelsea.jpg", None), ("coffee 2:1 672x1344", "coffee.jpg", (0, 30, 400, 230)),
         ("rocket 3:4 1088x800", "rocket.jpg", (100, 0, 300, 267))]
BATCH = ("chelsea + coffee, batch 2 800x1344", (0, 1))  # (name, the CASES stacked into one batch)
SCORE_MIN, IOU_MIN, SCORE_TOL = 0.3, 0.99, 1e-4


def preprocess(photo: str, crop) -> tuple[torch.Tensor, list[int]]:
    """mmdet's test pipeline on one photo: [1, 3, H, W] (padded to 32) and (img_h, img_w, ori_h, ori_w)."""
    from PIL import Image

    img = Image.open(os.path.join(ROOT, "samples", photo)).convert("RGB")
    if crop:
        img = img.crop(crop)
    w, h = img.size
    scale = min(1333 / max(h, w), 800 / min(h, w))  # mmcv.rescale_size with (1333, 800)
    nw, nh = int(w * scale + 0.5), int(h * scale + 0.5)
    x = (np.asarray(img.resize((nw, nh), Image.BILINEAR), dtype=np.float64) - MEAN) / STD
    ph, pw = -(-nh // 32) * 32, -(-nw // 32) * 32
    padded = np.zeros((ph, pw, 3), dtype=np.float32)
    padded[:nh, :nw] = x
    return torch.from_numpy(padded).permute(2, 0, 1)[None].contiguous(), [nh, nw, h, w]


def stack(items: list[tuple[torch.Tensor, list[int]]]) -> tuple[torch.Tensor, list[list[int]]]:
    """Single-image inputs into one batch, zero-padded to the largest (a multiple of 32 already), and their rows."""
    h, w = max(x.shape[2] for x, _ in items), max(x.shape[3] for x, _ in items)
    batch = torch.zeros(len(items), 3, h, w)
    for b, (x, _) in enumerate(items):
        batch[b, :, :x.shape[2], :x.shape[3]] = x[0]
    return batch, [size for _, size in items]


# ----------------------------------------------------------------------------------------------- oracle side
def oracle(folder: str) -> None:
    """(oracle venv) mmdet's raw maps, detections and latency for every case of ``folder``/spec.json."""
    sys.path.insert(0, os.path.join(ROOT, "tests", "fixtures", "mm_oracle"))
    import oracle_det

    spec = json.load(open(os.path.join(folder, "spec.json")))
    torch.set_num_threads(spec["threads"])
    sd = torch.load(os.path.join(folder, "ckpt.pth"), map_location="cpu", weights_only=True)["state_dict"]
    two_stage = spec["arch"] == "mask_rcnn"
    cfg = (oracle_det.mask_rcnn_dict if two_stage else oracle_det.model_dict)(spec["variant"], 80)
    inputs = torch.load(os.path.join(folder, "inputs.pt"), weights_only=True)
    for i, (x, sizes) in enumerate(inputs):
        model = oracle_det.build(cfg, sd)  # strict: every key of our checkpoint is mmdet's, and nothing else
        metas = [dict(img_shape=tuple(size[:2]), ori_shape=tuple(size[2:])) for size in sizes]
        if two_stage:  # neck, RPN maps, detections with pasted masks
            full = oracle_det.run_mask_rcnn(model, x, metas)
            out = dict(neck=full["neck"], cls=full["rpn_cls"], reg=full["rpn_reg"], dets=full["dets"])
        else:
            out = oracle_det.run(model, x, metas)  # neck, raw head and detections
        from mmdet.structures import DetDataSample

        samples = [DetDataSample(metainfo=dict(img_shape=tuple(size[:2]), ori_shape=tuple(size[2:]),
                                               scale_factor=(size[1] / size[3], size[0] / size[2])))
                   for size in sizes]
        pt = []
        with torch.no_grad():
            for _ in range(spec["repeats"]):
                t0 = time.perf_counter()
                model.predict(x, samples, rescale=True)
                pt.append(time.perf_counter() - t0)
        out["latency_s"] = float(np.median(pt)) if pt else None
        torch.save(out, os.path.join(folder, f"oracle_{i}.pt"))
        n = "+".join(str(len(d["scores"])) for d in out["dets"])
        print(f"  oracle case {i}: {n} dets, predict {_secs(out['latency_s'])}", flush=True)


def _secs(t) -> str:
    return "-" if t is None else f"{t:.2f} s"


# ----------------------------------------------------------------------------------------------- our side
def calibrated_model(variant: str, x: torch.Tensor, arch: str = "retinanet"):
    """Seed-0 detector with the heads' output layers rescaled so that scores and deltas look like a trained
    model's (see the module docstring)."""
    from crossformer_deploy.model.det import build_detector

    model = build_detector(variant, seed=0, arch=arch)
    if arch == "mask_rcnn":
        return _calibrate_mask_rcnn(model, x)
    with torch.no_grad():
        _, cls, reg = model.raw(x)
        head = model.bbox_head
        head.retina_cls.weight.mul_(1.5 / torch.cat([c.flatten() for c in cls]).std())
        head.retina_cls.bias.fill_(-4.0)
        head.retina_reg.weight.mul_(0.3 / torch.cat([r.flatten() for r in reg]).std())
        head.retina_reg.bias.zero_()
    return model


def _calibrate_mask_rcnn(model, x: torch.Tensor):
    """Box-head logits spread ~2 around per-class biases that even the classes out (background +2), deltas ~1, mask
    logits spread ~2 around a median of 0 per class, measured on the proposals and the detections of ``x``."""
    size = torch.tensor([[x.shape[2], x.shape[3], x.shape[2], x.shape[3]]])
    head, mask = model.roi_head.bbox_head, model.roi_head.mask_head
    with torch.no_grad():
        feats = model.features(x)
        hw = (size[:, :1].float(), size[:, 1:2].float())
        proposals, _ = model.proposals(feats, hw)
        rois = proposals.reshape(-1, 4)
        idx = torch.zeros(len(rois), dtype=torch.long)
        cls, reg = model.roi_head.bbox_forward(feats[:4], rois, idx)
        head.fc_cls.weight.mul_(2.0 / cls.std())
        head.fc_cls.bias.mul_(2.0 / cls.std())
        head.fc_cls.bias.sub_(model.roi_head.bbox_forward(feats[:4], rois, idx)[0].mean(0))
        head.fc_cls.bias[-1] += 2.0
        head.fc_reg.weight.mul_(1.0 / reg.std())
        head.fc_reg.bias.zero_()
        boxes, _, _, _ = model.detect(feats[:4], proposals, torch.ones_like(proposals[..., 0], dtype=torch.bool), hw)
        logits = model.roi_head.mask_forward(feats[:4], boxes.reshape(-1, 4), idx[:boxes.shape[1]])
        mask.conv_logits.weight.mul_(2.0 / logits.std())
        mask.conv_logits.bias.mul_(2.0 / logits.std())
        logits = model.roi_head.mask_forward(feats[:4], boxes.reshape(-1, 4), idx[:boxes.shape[1]])
        mask.conv_logits.bias.sub_(logits.transpose(0, 1).flatten(1).median(1).values)
    return model


def mask_ious(ref: dict, pairs: list[tuple[int, int]], dets: np.ndarray, masks: np.ndarray) -> list[float]:
    """IoU of each matched detection's mask, ours pasted into the original image, against mmdet's."""
    from crossformer_deploy.model.det.paste_masks import paste_masks
    from crossformer_deploy.runtime.parity import mask_iou

    h, w = ref["masks"].shape[1:]
    ours = paste_masks(masks[[j for _, j in pairs]], dets[[j for _, j in pairs]], h, w)
    return [mask_iou(np.asarray(ours[k]), ref["masks"][i].numpy()) for k, (i, _) in enumerate(pairs)]


def match_pairs(ref: dict, dets: np.ndarray, labels: np.ndarray) -> tuple[list[tuple[int, int]], int]:
    """(pairs (mmdet's row, our row), wanted) for mmdet's detections with score >= SCORE_MIN: the rule of
    ``runtime/parity.match_pairs`` (one-to-one, same label, IoU >= IOU_MIN, score within SCORE_TOL)."""
    from crossformer_deploy.runtime.parity import match_pairs as parity_match

    ref_dets = np.concatenate([ref["bboxes"].numpy(), ref["scores"].numpy()[:, None]], 1)
    return parity_match(ref_dets, ref["labels"].numpy(), dets, labels, SCORE_MIN, IOU_MIN, SCORE_TOL)


class Raw(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, image):
        neck, cls, reg = self.model.raw(image)
        return (*neck, *cls, *reg)


def export(module: torch.nn.Module, args: tuple, inputs: list[str], outputs: list[str]) -> bytes:
    axes = {"image": {0: "batch", 2: "height", 3: "width"}}
    axes.update({n: {0: "batch"} for n in (*inputs[1:], *outputs)})
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, args, buf, dynamo=False, opset_version=17, input_names=inputs,
                          output_names=outputs, dynamic_axes=axes, do_constant_folding=True)
    return buf.getvalue()


ENGINES = ("pytorch", "onnxruntime", "openvino")


def session(engine: str, proto: bytes, threads: int):
    """run(feed dict) -> list of numpy outputs on ``engine`` ("onnxruntime" or "openvino"; None where it cannot
    load). ORT without its memory arena: one engine at a time holds a B-size detector's activations (RetinaNet-B,
    batch 2, all engines alive at once ran a 23 GB machine out of memory)."""
    if engine == "onnxruntime":
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
        opts.enable_cpu_mem_arena = False
        sess = ort.InferenceSession(proto, opts, providers=["CPUExecutionProvider"])
        return lambda feed: sess.run(None, feed)
    try:
        from crossformer_deploy.runtime.openvino_runner import OpenVINORunner

        with tempfile.NamedTemporaryFile(suffix=".onnx", delete=False) as f:
            f.write(proto)
        try:  # compiled per input shape, as crossformer-infer does (a dynamic compile took 12 GB at batch 2)
            runner = OpenVINORunner(f.name, threads, "f32", per_shape=1).load()
        finally:
            os.unlink(f.name)
        return lambda feed: list(runner.run(feed).values())
    except Exception as e:  # reported; the other engines still run
        print(f"  openvino unavailable: {str(e).splitlines()[0][:200]}")
        return None


def engine_fns(engine: str, ours, graphs: tuple[bytes, bytes], threads: int):
    """(raw(x), detect(x, size)) on ``engine``: the 15 raw maps and (dets, labels[, masks]) as numpy; None where
    the engine cannot load."""
    if engine == "pytorch":
        def torch_raw(x, size):
            with torch.no_grad():
                return [t.numpy() for t in Raw(ours)(x)]

        def torch_det(x, size):
            with torch.no_grad():
                return [t.numpy() for t in ours(x, size)]

        return torch_raw, torch_det
    det, raw = (session(engine, g, threads) for g in graphs)
    if det is None or raw is None:
        return None
    return (lambda x, size: raw({"image": x.numpy()}),
            lambda x, size: det({"image": x.numpy(), "image_size": size.numpy()}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("role", nargs="?", default="parity", choices=["parity", "oracle"])
    ap.add_argument("--folder", help="(oracle role) the work folder")
    ap.add_argument("--arch", default="retinanet", choices=["retinanet", "mask_rcnn"])
    ap.add_argument("--variant", default="s")
    ap.add_argument("--cases", type=int, default=len(CASES), help="the first N cases only")
    ap.add_argument("--pick", help="these cases only (comma-separated, 0-based); overrides --cases")
    ap.add_argument("--batch2", action="store_true", help=f"also the batch case ({BATCH[0]})")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3, help="timed runs per engine and case (0: none)")
    ap.add_argument("--json")
    ap.add_argument("--json-key", help="write the report under this key of --json, keeping its other keys")
    args = ap.parse_args()
    if args.role == "oracle":
        return oracle(args.folder)
    torch.set_num_threads(args.threads)
    from crossformer_deploy.model.det import create_detector

    picked = [int(i) for i in args.pick.split(",")] if args.pick else list(range(min(args.cases, len(CASES))))
    single = {i: preprocess(photo, crop) for i, (_, photo, crop) in enumerate(CASES)
              if i in picked or i == 0 or (args.batch2 and i in BATCH[1])}
    cases = [(CASES[i][0], single[i][0], [single[i][1]]) for i in picked]  # (name, input, image_size rows)
    if args.batch2:
        cases.append((BATCH[0], *stack([single[i] for i in BATCH[1]])))
    two_stage = args.arch == "mask_rcnn"
    report: dict = {"arch": args.arch, "variant": args.variant, "threads": args.threads, "repeats": args.repeats,
                    "command": "python benchmarks/det_vs_mmdet.py " + " ".join(sys.argv[1:]), "cases": []}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="det-vs-mmdet-") as folder:
        model = calibrated_model(args.variant, single[0][0], args.arch)
        torch.save({"state_dict": model.state_dict(), "meta": {"mmdet_version": "3.3.0"}},
                   os.path.join(folder, "ckpt.pth"))
        del model
        torch.save([(x, sizes) for _, x, sizes in cases], os.path.join(folder, "inputs.pt"))
        json.dump({"arch": args.arch, "variant": args.variant, "threads": args.threads, "repeats": args.repeats},
                  open(os.path.join(folder, "spec.json"), "w"))
        t0 = time.perf_counter()
        r = subprocess.run([ORACLE_PY, os.path.abspath(__file__), "oracle", "--folder", folder], text=True,
                           capture_output=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
        print(r.stdout, end="")
        if r.returncode:
            sys.exit(f"oracle failed:\n{r.stderr[-3000:]}")
        print(f"oracle done in {time.perf_counter() - t0:.0f} s")
        ours = create_detector(None, os.path.join(folder, "ckpt.pth"))  # read back strictly, as a user would
        dummy, dsize = torch.randn(1, 3, 320, 320), torch.tensor([[300, 320, 600, 640]])
        t0 = time.perf_counter()
        det_graph = export(ours, (dummy, dsize), ["image", "image_size"], ours.output_names)
        raw_names = [f"{k}{i}" for k in ("neck", "cls", "reg") for i in range(5)]
        raw_graph = export(Raw(ours), (dummy,), ["image"], raw_names)
        print(f"exported once at 320x320 in {time.perf_counter() - t0:.0f} s ({len(det_graph) / 1e6:.0f} MB)")
        refs_all = [torch.load(os.path.join(folder, f"oracle_{i}.pt"), weights_only=True) for i in range(len(cases))]
        for (name, x, sizes), ref in zip(cases, refs_all):
            refs = ref["dets"]
            report["cases"].append({
                "case": name, "input": list(x.shape), "image_size": sizes[0] if len(sizes) == 1 else sizes,
                "oracle_dets": _per_image([len(d["scores"]) for d in refs]),
                "oracle_dets_ge_0.3": _per_image([int((d["scores"] >= SCORE_MIN).sum()) for d in refs]),
                "oracle_latency_s": ref["latency_s"], "engines": {}})
            print(f"{name:22s} {'mmdet':12s} predict {_secs(ref['latency_s'])} "
                  f"({report['cases'][-1]['oracle_dets']} dets, {report['cases'][-1]['oracle_dets_ge_0.3']} "
                  f">= {SCORE_MIN})")
        for eng in ENGINES:  # one engine at a time (memory)
            fns = engine_fns(eng, ours, (det_graph, raw_graph), args.threads)
            if fns is None:
                continue
            raw_fn, det_fn = fns
            for (name, x, sizes), ref, row in zip(cases, refs_all, report["cases"]):
                want, refs, size = [*ref["neck"], *ref["cls"], *ref["reg"]], ref["dets"], torch.tensor(sizes)
                with torch.no_grad():
                    raw = raw_fn(x, size)
                    diff = max(float(np.abs(np.asarray(g) - w.numpy()).max()) for g, w in zip(raw, want))
                    del raw
                    dets, labels, *masks = det_fn(x, size)
                    times = []
                    for _ in range(args.repeats):
                        t0 = time.perf_counter()
                        det_fn(x, size)
                        times.append(time.perf_counter() - t0)
                latency = float(np.median(times)) if times else None
                dets, labels = np.asarray(dets), np.asarray(labels)
                per = [match_pairs(refs[b], dets[b], labels[b]) for b in range(len(refs))]
                matched, wanted = sum(len(p) for p, _ in per), sum(n for _, n in per)
                res = row["engines"][eng] = {"raw_max_abs_diff": diff, "matched": matched, "wanted": wanted,
                                             "latency_s": latency}
                if len(refs) > 1:
                    res["matched_per_image"] = [len(p) for p, _ in per]
                ious = ""
                if two_stage:
                    iou = [v for b, (p, _) in enumerate(per)
                           for v in mask_ious(refs[b], p, dets[b], np.asarray(masks[0])[b])]
                    res.update(mask_iou_min=min(iou, default=1.0), mask_iou_mean=float(np.mean(iou)) if iou else 1.0)
                    ious = f"  mask IoU min {res['mask_iou_min']:.4f} mean {res['mask_iou_mean']:.4f}"
                print(f"{name:22s} {eng:12s} raw max|diff| {diff:.2e}  matched {matched}/{wanted} "
                      f"({100 * matched / max(wanted, 1):.1f} %){ious}  {_secs(latency)}", flush=True)
                save(args, report, partial=True)  # what is done survives a crash (OpenVINO, out of memory)
            del fns, raw_fn, det_fn
            gc.collect()
    report["wall_s"] = round(time.perf_counter() - started)
    print(f"done in {report['wall_s']} s")
    save(args, report)


def save(args, report: dict, partial: bool = False) -> None:
    """The report into --json (under --json-key, the file's other keys kept); ``partial`` while engines are still
    to run (marked ``"partial": true``, quietly)."""
    if not args.json:
        return
    report = {**report, "partial": True} if partial else report
    out = report
    if args.json_key:
        out = json.load(open(args.json)) if os.path.exists(args.json) else {}
        out[args.json_key] = report
    with open(args.json + ".tmp", "w") as fh:
        json.dump(out, fh, indent=1)
    os.replace(args.json + ".tmp", args.json)
    if not partial:
        print(f"wrote {args.json}" + (f" [{args.json_key!r}]" if args.json_key else ""))


def _per_image(counts: list[int]):
    """One image: its count; a batch: the list."""
    return counts[0] if len(counts) == 1 else counts


if __name__ == "__main__":
    sys.path.insert(0, ROOT)
    main()
