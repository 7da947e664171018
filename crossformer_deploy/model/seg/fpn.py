"""FPN neck (Lin et al., 2017) with mmseg / mmdet's options and state-dict keys.

Generic, for segmentation (Semantic FPN: 4 outputs from C2..C5) and detection (RetinaNet: C3..C5 plus two
extra stride-2 convs; Mask R-CNN: a fifth output by max pooling). Keys: ``lateral_convs.{i}.conv``,
``fpn_convs.{i}.conv`` (convs with a bias, no norm, no activation).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from crossformer_deploy.model.seg.conv_module import ConvModule
from crossformer_deploy.model.seg.resize import resize_like

EXTRA_SOURCES = ("on_input", "on_lateral", "on_output")


class FPN(nn.Module):
    """Maps [B, C_i, H_i, W_i] (strides doubling) -> ``num_outs`` maps [B, out_channels, H_j, W_j].

    start_level: the first input used (RetinaNet: 1, C2 is unused). num_outs: outputs; beyond the used
    levels they come from ``add_extra_convs`` (a source in ``EXTRA_SOURCES``: 3x3 stride-2 convs, the first
    on that source, the next ones on the previous output, ReLU before them when ``relu_before_extra_convs``)
    or, when it is ``None``, from max pooling with kernel 1, stride 2. The top-down path upsamples by
    nearest neighbour to the next finer lateral's run-time size.
    """

    def __init__(self, in_channels: Sequence[int], out_channels: int, num_outs: int, start_level: int = 0,
                 add_extra_convs: str | None = None, relu_before_extra_convs: bool = False):
        super().__init__()
        if add_extra_convs is not None and add_extra_convs not in EXTRA_SOURCES:
            raise ValueError(f"add_extra_convs must be None or one of {', '.join(EXTRA_SOURCES)}")
        self.start_level, self.num_outs = start_level, num_outs
        self.add_extra_convs, self.relu_before_extra_convs = add_extra_convs, relu_before_extra_convs
        levels = len(in_channels) - start_level
        if num_outs < levels:
            raise ValueError(f"num_outs {num_outs} is below the {levels} levels used")
        self.lateral_convs = nn.ModuleList(ConvModule(c, out_channels, 1, norm=False, act=False)
                                           for c in in_channels[start_level:])
        self.fpn_convs = nn.ModuleList(ConvModule(out_channels, out_channels, 3, norm=False, act=False)
                                       for _ in range(levels))
        if add_extra_convs:
            for k in range(num_outs - levels):
                cin = in_channels[-1] if k == 0 and add_extra_convs == "on_input" else out_channels
                self.fpn_convs.append(ConvModule(cin, out_channels, 3, stride=2, norm=False, act=False))

    def forward(self, inputs: Sequence[Tensor]) -> tuple[Tensor, ...]:
        laterals = [conv(inputs[i + self.start_level]) for i, conv in enumerate(self.lateral_convs)]
        for i in range(len(laterals) - 1, 0, -1):
            laterals[i - 1] = laterals[i - 1] + resize_like(laterals[i], laterals[i - 1], mode="nearest")
        levels = len(laterals)
        outs = [self.fpn_convs[i](laterals[i]) for i in range(levels)]
        if self.num_outs > levels:
            if self.add_extra_convs is None:
                for _ in range(self.num_outs - levels):
                    outs.append(F.max_pool2d(outs[-1], 1, stride=2))
            else:
                source = {"on_input": inputs[-1], "on_lateral": laterals[-1], "on_output": outs[-1]}
                outs.append(self.fpn_convs[levels](source[self.add_extra_convs]))
                for i in range(levels + 1, self.num_outs):
                    x = F.relu(outs[-1]) if self.relu_before_extra_convs else outs[-1]
                    outs.append(self.fpn_convs[i](x))
        return tuple(outs)
