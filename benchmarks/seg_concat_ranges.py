"""Per-branch ranges of UPerHead's two concats (the PPM bottleneck's and fpn_bottleneck's inputs), and what fake
INT8 on those concat tensors alone costs (rest float), per-tensor against per-branch scales (docs/segmentation.md,
"INT8 and UPerHead's concats").

    python benchmarks/seg_concat_ranges.py

UPerNet-S as ``seg_vs_mmseg.py holdout --head-fit probe --stat-crops 16 --held-out chelsea.jpg`` builds it (BN
statistics and conv_seg from coffee + rocket); "calib(512x512)" is those two photos stretched to 512x512, what
quantize_int8 calibrates on; the scales of the fake INT8 are that batch's absmax (minmax = our entropy setting).
Absmax and p99.9 of |x| per branch on the calibration batch and on each photo through the seg preprocessing.
"""
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import seg_vs_mmseg as S

from crossformer_deploy.base.images import load_batch, load_image
from crossformer_deploy.base.seg_preprocess import seg_preprocess
from crossformer_deploy.runtime.parity import pixel_agreement

torch.set_num_threads(2)
photos = S.sample_photos()
held = next(p for p in photos if p.endswith("chelsea.jpg"))
others = [p for p in photos if p != held]
model = S.trained_like("upernet-s", head_fit="probe", paths=others, stat_crops=16)
head = model.decode_head
top_c = head.bottleneck.conv.in_channels - 4 * head.psp_modules[0][1].conv.out_channels
ch = head.psp_modules[0][1].conv.out_channels
splits = {"bottleneck": [top_c, ch, ch, ch, ch], "fpn_bottleneck": [ch] * 4}
names = {"bottleneck": ["stage4 map", "ppm s=1", "ppm s=2", "ppm s=3", "ppm s=6"],
         "fpn_bottleneck": ["lvl0 fpn_conv", "lvl1 fpn_conv (up)", "lvl2 fpn_conv (up)", "lvl3 bottleneck (up)"]}
captured = {}


def hook(name):
    def pre(mod, inp):
        captured.setdefault(name, []).append(inp[0].detach().clone())
    return pre


hs = [getattr(head, n).register_forward_pre_hook(hook(n)) for n in splits]
# calibration inputs as quantize_int8 sees them: the other photos stretched to 512x512 (crop_ratio 1.0)
from crossformer_deploy.model.seg.factory import segmenter_info  # noqa: E402

info = segmenter_info(model, "x", (512, 512))
calib = torch.from_numpy(load_batch(others, (512, 512), info.crop_ratio, info.mean, info.std))
feeds = {"calib(512x512)": calib}
for p in photos:
    x, ori = seg_preprocess(load_image(p))
    feeds[os.path.basename(p)] = (torch.from_numpy(x[None]), ori)
refs = {}
with torch.no_grad():
    for k, v in feeds.items():
        captured.clear()
        if isinstance(v, tuple):
            refs[k] = model(v[0], torch.tensor(v[1]))[0][0].numpy()
        else:
            model.logits(v)
        feeds_caps = {n: torch.cat(t) for n, t in captured.items()}
        print(f"== {k}")
        for n, sp in splits.items():
            parts = feeds_caps[n].split(sp, dim=1)
            whole = feeds_caps[n].abs()
            print(f"  {n}: concat absmax {whole.max():.3f} p99.9 {torch.quantile(whole.flatten()[::7], 0.999):.3f}")
            for lbl, t in zip(names[n], parts):
                a = t.abs().flatten()
                q = torch.quantile(a[:: max(1, a.numel() // 2_000_000)], torch.tensor([0.999, 0.5]))
                print(f"    {lbl:>22}: absmax {a.max():8.3f}  p99.9 {q[0]:8.3f}  median {q[1]:7.4f}  "
                      f"absmax/concat {a.max() / whole.max():.3f}")
        if k == "calib(512x512)":
            calib_caps = feeds_caps
for h in hs:
    h.remove()


def fq(t, amax):
    s = amax / 127.0
    return torch.clamp(torch.round(t / s), -127, 127) * s


def run_fake(which, per_branch):
    def pre(mod, inp, n):
        x = inp[0]
        if per_branch:
            parts = x.split(splits[n], 1)
            cal = calib_caps[n].split(splits[n], 1)
            return (torch.cat([fq(p, c.abs().max()) for p, c in zip(parts, cal)], 1),)
        return (fq(x, calib_caps[n].abs().max()),)
    hs = [getattr(head, n).register_forward_pre_hook(lambda m, i, n=n: pre(m, i, n)) for n in which]
    out = {}
    with torch.no_grad():
        for k, v in feeds.items():
            if isinstance(v, tuple):
                out[k] = pixel_agreement(refs[k], model(v[0], torch.tensor(v[1]))[0][0].numpy())
    for h in hs:
        h.remove()
    return out


for which in (["bottleneck"], ["fpn_bottleneck"], ["bottleneck", "fpn_bottleneck"]):
    for pb in (False, True):
        r = run_fake(which, pb)
        print(f"fake int8 on {'+'.join(which)} input only, {'per-branch' if pb else 'per-tensor'} scale "
              f"(calib absmax): " + ", ".join(f"{k} {v:.4%}" for k, v in r.items()))
