"""Why classify_openvino resizes in C++: OpenVINO's PrePostProcessor resize against Pillow's, measured.

    python examples/cpp/ppp_resize_check.py crossformer_t.onnx samples/*.jpg

For each image and each PPP resize (cubic, Pillow-style bicubic on u8, Pillow-style bicubic on f32), the
resize + centre crop is built into the graph the way crossformer-infer does it in Pillow (shorter side to
size / crop_ratio, then the crop); prints how far the pixels land from Pillow's (levels 0..255, share of
values that differ) and the logits from the Python runner on the Pillow-preprocessed image.
"""
from __future__ import annotations

import argparse
import json
import sys

import numpy as np
import onnx
import openvino as ov
from openvino.preprocess import PrePostProcessor, ResizeAlgorithm

from crossformer_deploy.base.images import load_image, preprocess, resize_and_crop

CONFIG = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"}
CASES = [("RESIZE_CUBIC, u8", ResizeAlgorithm.RESIZE_CUBIC, False),
         ("RESIZE_BICUBIC_PILLOW, u8", ResizeAlgorithm.RESIZE_BICUBIC_PILLOW, False),
         ("RESIZE_BICUBIC_PILLOW, f32", ResizeAlgorithm.RESIZE_BICUBIC_PILLOW, True)]


def target(w: int, h: int, size: int, ratio: float) -> tuple[int, int, int, int]:
    """(new h, new w, top, left) of resize_and_crop for a square size."""
    short = int(size / ratio)
    nw, nh = (short, int(short * h / w)) if w <= h else (int(short * w / h), short)
    return nh, nw, round((nh - size) / 2.0), round((nw - size) / 2.0)


def ppp_model(base: ov.Model | None, src_shape, alg, as_f32: bool, box, mean, std) -> ov.Model:
    """u8 NHWC source image -> [resize, crop] (-> normalise into ``base``, or, with base None, the u8 crop)."""
    nh, nw, top, left, size = box
    if base is None:  # identity model: the PPP's output is the crop itself
        p = ov.opset13.parameter([1, size, size, 3], ov.Type.f32 if as_f32 else ov.Type.u8)
        base = ov.Model([ov.opset13.result(p)], [p])
    ppp = PrePostProcessor(base)
    ppp.input().tensor().set_element_type(ov.Type.u8).set_layout(ov.Layout("NHWC")).set_shape(src_shape)
    nchw = base.inputs[0].get_partial_shape()[1] == 3
    ppp.input().model().set_layout(ov.Layout("NCHW" if nchw else "NHWC"))
    pre = ppp.input().preprocess()
    if as_f32:
        pre.convert_element_type(ov.Type.f32)
    pre.resize(alg, nh, nw).crop([0, top, left, 0], [1, top + size, left + size, 3])
    if nchw:
        if not as_f32:
            pre.convert_element_type(ov.Type.f32)
        pre.scale(255.0).mean(mean).scale(std)
    return ppp.build()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model", help="an .onnx from crossformer-export (dynamic or static at its input_size)")
    p.add_argument("images", nargs="+")
    args = p.parse_args()
    meta = {q.key: json.loads(q.value) for q in onnx.load(args.model, load_external_data=False).metadata_props
            if q.key in ("input_size", "crop_ratio", "mean", "std")}
    size, ratio, mean, std = meta["input_size"][0], meta["crop_ratio"], meta["mean"], meta["std"]
    core = ov.Core()
    for path in args.images:
        im = load_image(path)
        src = np.asarray(im)[None].copy()
        nh, nw, top, left = target(*im.size, size, ratio)
        box = (nh, nw, top, left, size)
        pillow_px = np.asarray(resize_and_crop(im, (size, size), ratio)).astype(np.int32)
        ref_model = core.read_model(args.model)
        ref_model.reshape([1, 3, size, size])
        ref = core.compile_model(ref_model, "CPU", CONFIG).create_infer_request()
        want = ref.infer({0: preprocess(im, (size, size), ratio, mean, std)[None]})[0].copy()
        for name, alg, as_f32 in CASES:
            crop = core.compile_model(ppp_model(None, src.shape, alg, as_f32, box, mean, std), "CPU", CONFIG)
            px = crop.create_infer_request().infer({0: src})[0][0]
            px = np.clip(np.round(px), 0, 255).astype(np.int32) if as_f32 else px.astype(np.int32)
            diff = np.abs(px - pillow_px)
            m = core.read_model(args.model)
            m.reshape([1, 3, size, size])
            full = core.compile_model(ppp_model(m, src.shape, alg, as_f32, box, mean, std), "CPU", CONFIG)
            got = full.create_infer_request().infer({0: src})[0]
            print(f"{path}: {name}: pixels up to {diff.max()} levels off, {(diff > 0).mean():.2%} differ; "
                  f"logits max abs {np.abs(got - want).max():.2g} (logits up to {np.abs(want).max():.3g})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
