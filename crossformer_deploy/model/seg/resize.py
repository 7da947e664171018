"""Resizes whose target size is read from a tensor at run time (a dynamic export keeps them dynamic).

All bilinear resizes are mmseg's ``resize(..., mode="bilinear", align_corners=False)``: half-pixel
centres, no antialiasing, which is what ONNX ``Resize`` (linear, half_pixel) computes too.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from crossformer_deploy.model.grouping import Size
from crossformer_deploy.model.tracing import spatial_size


def resize(x: Tensor, size: tuple[Size, Size], mode: str = "bilinear") -> Tensor:
    """[B, C, h, w] -> [B, C, H, W]; ``size`` may hold 0-d tensors (traced sizes): the graph keeps them."""
    if mode == "nearest":
        return F.interpolate(x, size=size, mode="nearest")
    return F.interpolate(x, size=size, mode=mode, align_corners=False)


def resize_like(x: Tensor, ref: Tensor, mode: str = "bilinear") -> Tensor:
    """``x`` resized to ``ref``'s height and width, as ``ref`` has them at run time."""
    return resize(x, spatial_size(ref), mode)


class Upsample2x(nn.Module):
    """Bilinear x2 by scale factor (mmseg's ``Upsample(scale_factor=2)``): [B, C, h, w] -> [B, C, 2h, 2w].

    A scale factor, not a size computed from the traced input, so the graph holds ``Resize(scales=2)`` and
    no size frozen at export time. Equal to mmseg's size-based call: both map output pixel i to input
    coordinate (i + 0.5) / 2 - 0.5.
    """

    def forward(self, x: Tensor) -> Tensor:
        return F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)


def _split(a: Tensor) -> tuple[Tensor, Tensor]:
    """Veltkamp's split of float32 values into two 12-bit halves whose products are exact."""
    t = a * 4097.0
    hi = t - (t - a)
    return hi, a - hi


def _two_product(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    """(p, err) with p = fl(a * b) and p + err = a * b exactly (Dekker), in float32 without an fma."""
    p = a * b
    (ah, al), (bh, bl) = _split(a), _split(b)
    return p, ((ah * bh - p) + ah * bl + al * bh) + al * bl


def _quotient(a: Tensor, b: Tensor) -> Tensor:
    """float32 a / b rounded correctly also where a runtime divides as a * (1 / b) (OpenVINO): one correction
    step with the exact remainder a - q * b."""
    q = a / b
    p, err = _two_product(q, b)
    return q + ((a - p) - err) / b


def _linear_taps(n_in: Size, n_out: Size) -> tuple[Tensor, Tensor, Tensor]:
    """Per output index along one axis: the two source indices and the weight of the second, as PyTorch's CPU kernel
    computes them (align_corners False): ratio = in / out in float32, src = fma(ratio, i + 0.5, -0.5) with its one
    rounding, clamped at 0; index floor(src) capped at in - 1, weight src - index.

    Graphs have no fma, and float64 is not kept by every runtime (OpenVINO computes it in float32): the product is
    made exact in float32 instead (Dekker's two-product: p + err = ratio * c exactly), p - 0.5 is exact where the
    result is not clamped, and adding err rounds once, as the fma does; the ratio is corrected to the rounded
    quotient (``_quotient``).
    """
    ratio = _quotient(torch.as_tensor(n_in).to(torch.float32), torch.as_tensor(n_out).to(torch.float32))
    p, err = _two_product(ratio, torch.arange(n_out).to(torch.float32) + 0.5)
    src = ((p - 0.5) + err).clamp(min=0.0)
    last = torch.as_tensor(n_in) - 1
    i0 = torch.minimum(src.floor().to(torch.int64), last)
    i1 = torch.minimum(i0 + 1, last)
    return i0, i1, (src - i0.to(torch.float32)).clamp(0.0, 1.0)


def resize_bilinear_exact(x: Tensor, size: tuple[Size, Size]) -> Tensor:
    """[B, C, h, w] -> [B, C, H, W] bilinear (align_corners False), in a graph exactly as PyTorch computes it.

    ONNX ``Resize`` maps output pixel i to (i + 0.5) / (out / in) - 0.5, PyTorch's kernel to
    fma(in / out, i + 0.5, -0.5): in float32 they differ by an ulp of the coordinate, and at a few hundred pixels
    that moves logits which change by units per pixel by ~1e-4. The logits' last resize (704 -> 683 for a 512x683
    image) is therefore written out as gathers with PyTorch's coordinates, weights applied along W then H as the
    kernel does. Eager mode calls the kernel itself.
    """
    if not torch.jit.is_tracing():
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False)
    h, w = spatial_size(x)
    c0, c1, cw = _linear_taps(w, size[1])
    # columns are gathered as rows of the transposed map: OpenVINO 2026.4's Gather on the last axis returns wrong
    # values once the axes before it hold more than 65535 rows (150 classes x 512 rows)
    t = x.transpose(2, 3)
    cw = cw.unsqueeze(1)
    x = (torch.index_select(t, 2, c0) * (1.0 - cw) + torch.index_select(t, 2, c1) * cw).transpose(2, 3)
    r0, r1, rw = _linear_taps(h, size[0])
    rw = rw.unsqueeze(1)
    return torch.index_select(x, 2, r0) * (1.0 - rw) + torch.index_select(x, 2, r1) * rw
