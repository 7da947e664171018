"""RoIAlign (He et al., 2017) as a PyTorch op: an eager implementation with mmcv's semantics that the ONNX
exporter writes as the standard ``RoiAlign`` (opset 16; no plugin, no custom domain).

mmcv's ``RoIAlign(output_size, spatial_scale, sampling_ratio=0, pool_mode="avg", aligned=True)``, which
mmdet's ``SingleRoIExtractor`` calls, per RoI (x1, y1, x2, y2) and output bin (ph, pw):

- the RoI in map pixels: ``x * spatial_scale - 0.5`` (aligned: a pixel's value sits at its centre), its size
  ``roi_w = x2' - x1'`` (aligned: as is, even 0; legacy ``aligned=False``: no shift, size at least 1);
- ``grid_h = ceil(roi_h / out_h)`` by ``grid_w = ceil(roi_w / out_w)`` samples a bin (adaptive sampling, as
  ``sampling_ratio`` 0 asks), at ``y = y1' + ph * bin_h + (iy + 0.5) * bin_h / grid_h`` (x alike);
- a sample bilinearly interpolates the map: 0 when y < -1 or y > H (x alike), y in [-1, 0] read as 0, and
  from row H - 1 on the last row alone;
- the bin is the samples' mean (``count = max(grid_h * grid_w, 1)``: an empty RoI gives 0, not NaN).

ONNX Runtime's ``RoiAlign`` with ``coordinate_transformation_mode="half_pixel"``, ``mode="avg"``,
``sampling_ratio=0`` computes the same: shift by -0.5 after scaling, ``ceil(roi_h / out_h)`` samples, the same
bounds, clamping and weights, the same mean (its CPU kernel descends from the same Caffe2 code as mmcv's). The
one difference is arithmetic order inside a bin (float rounding, ~1e-7 relative). ``aligned=False`` maps to
``output_half_pixel`` (no shift, sizes at least 1), mmcv's legacy mode.
"""
from __future__ import annotations

import torch
from torch import Tensor

SAMPLES_PER_CHUNK = 1 << 15  # bilinear samples gathered at once: [chunk, C] values per corner


def _axis(start: Tensor, bin_size: Tensor, grid: Tensor, p: Tensor, i: Tensor, size: int) -> tuple[Tensor, ...]:
    """Per sample on one axis: (low, high, weight of low, weight of high, inside) with mmcv's rules."""
    c = start + p * bin_size + (i + 0.5) * bin_size / grid
    inside = (c >= -1.0) & (c <= size)
    c = c.clamp(min=0)
    low = c.to(torch.int64)
    last = low >= size - 1
    low = torch.where(last, torch.full_like(low, size - 1), low)
    high = torch.where(last, low, low + 1)
    c = torch.where(last, low.to(c.dtype), c)
    frac = c - low
    return low, high, 1.0 - frac, frac, inside


def roi_align_reference(feat: Tensor, rois: Tensor, batch_idx: Tensor, output_size: tuple[int, int],
                        spatial_scale: float, aligned: bool = True) -> Tensor:
    """feat [B, C, H, W], rois [R, 4] (x1, y1, x2, y2, input pixels), batch_idx [R] int64 -> [R, C, out_h, out_w].

    Every sample of every RoI is listed once (RoIs own different sample counts), its four taps gathered from the
    map as [samples, C] rows in chunks, and summed into its bin."""
    out_h, out_w = output_size
    b, c, h, w = feat.shape
    r = rois.shape[0]
    out = feat.new_zeros(r * out_h * out_w, c)
    if r == 0:
        return out.reshape(0, c, out_h, out_w)
    offset = 0.5 if aligned else 0.0
    x1, y1, x2, y2 = (rois[:, i] * spatial_scale - offset for i in range(4))
    roi_w, roi_h = x2 - x1, y2 - y1
    if not aligned:
        roi_w, roi_h = roi_w.clamp(min=1.0), roi_h.clamp(min=1.0)
    bin_w, bin_h = roi_w / out_w, roi_h / out_h
    # ceil of the float quotient, as both kernels; never below 0 (a reversed RoI has no samples)
    grid_w = torch.ceil(roi_w / out_w).clamp(min=0).to(torch.int64)
    grid_h = torch.ceil(roi_h / out_h).clamp(min=0).to(torch.int64)
    count = (grid_h * grid_w).clamp(min=1).to(feat.dtype)
    per_roi = grid_h * grid_w * out_h * out_w
    roi_of = torch.repeat_interleave(torch.arange(r), per_roi)  # [S]: the RoI of each sample
    local = torch.arange(roi_of.numel()) - (torch.cumsum(per_roi, 0) - per_roi)[roi_of]
    gw, gh = grid_w[roi_of], grid_h[roi_of]
    ix, t = local % gw, local // gw  # sample order (ph, pw, iy, ix)
    iy, t = t % gh, t // gh
    pw, ph = t % out_w, t // out_w
    ylo, yhi, hy, ly, yin = _axis(y1[roi_of], bin_h[roi_of], gh.to(feat.dtype), ph, iy, h)
    xlo, xhi, hx, lx, xin = _axis(x1[roi_of], bin_w[roi_of], gw.to(feat.dtype), pw, ix, w)
    inside = (yin & xin).to(feat.dtype)
    base = batch_idx.to(torch.int64)[roi_of] * (h * w)
    flat = feat.permute(0, 2, 3, 1).reshape(b * h * w, c)
    bins = roi_of * (out_h * out_w) + ph * out_w + pw
    for s in range(0, roi_of.numel(), SAMPLES_PER_CHUNK):
        k = slice(s, s + SAMPLES_PER_CHUNK)
        taps = ((ylo[k], xlo[k], hy[k] * hx[k]), (ylo[k], xhi[k], hy[k] * lx[k]),
                (yhi[k], xlo[k], ly[k] * hx[k]), (yhi[k], xhi[k], ly[k] * lx[k]))
        val = sum(wt[:, None] * flat[base[k] + yy * w + xx] for yy, xx, wt in taps)
        out.index_add_(0, bins[k], val * inside[k, None])
    out = out.reshape(r, out_h, out_w, c) / count[:, None, None, None]
    return out.permute(0, 3, 1, 2).contiguous()


class RoIAlignOp(torch.autograd.Function):
    """``apply(feat, rois, batch_idx, out_h, out_w, spatial_scale, aligned)`` -> [R, C, out_h, out_w]."""

    @staticmethod
    def forward(ctx, feat: Tensor, rois: Tensor, batch_idx: Tensor, out_h: int, out_w: int, spatial_scale: float,
                aligned: bool) -> Tensor:
        if torch.onnx.is_in_onnx_export():
            # the graph gets the symbolic's RoiAlign; the exporter still records this body as a sub-block, which
            # its peephole pass cannot take (the sample lists' sizes), so only the output's shape is made here
            return feat.new_zeros(rois.shape[0], feat.shape[1], out_h, out_w)
        return roi_align_reference(feat, rois, batch_idx, (out_h, out_w), spatial_scale, aligned)

    @staticmethod
    def symbolic(g, feat, rois, batch_idx, out_h: int, out_w: int, spatial_scale: float, aligned: bool):
        mode = "half_pixel" if aligned else "output_half_pixel"
        return g.op("RoiAlign", feat, rois, batch_idx, coordinate_transformation_mode_s=mode, mode_s="avg",
                    output_height_i=out_h, output_width_i=out_w, sampling_ratio_i=0, spatial_scale_f=spatial_scale)


def roi_align(feat: Tensor, rois: Tensor, batch_idx: Tensor, output_size: tuple[int, int], spatial_scale: float,
              aligned: bool = True) -> Tensor:
    """mmcv's RoIAlign with adaptive sampling (``sampling_ratio`` 0), average pooling: feat [B, C, H, W], rois
    [R, 4] (x1, y1, x2, y2 in input pixels), batch_idx [R] int64 -> [R, C, out_h, out_w]; the ONNX export is one
    ``RoiAlign`` node (opset 16)."""
    return RoIAlignOp.apply(feat, rois, batch_idx, int(output_size[0]), int(output_size[1]), float(spatial_scale),
                            bool(aligned))
