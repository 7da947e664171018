"""The PyTorch model as a runner: the reference every other backend is compared with."""
from __future__ import annotations

import numpy as np
import torch

from crossformer_deploy.base.model_info import DETECTOR, SEGMENTER
from crossformer_deploy.model.crossformer import CrossFormer
from crossformer_deploy.model.seg.segmentor import Segmentor
from crossformer_deploy.runtime.runner import Runner, TensorSpec


class TorchRunner(Runner):
    name = "pytorch"

    def __init__(self, model: CrossFormer | Segmentor, dtype: torch.dtype = torch.float32):
        super().__init__()
        self.model, self.dtype = model.eval(), dtype

    def _load(self) -> None:
        pass

    def _specs(self) -> tuple[list[TensorSpec], list[TensorSpec]]:
        f32 = np.dtype(np.float32)
        image = TensorSpec("image", (None, self.model.cfg.in_chans, None, None), f32)
        if self.model.mode == SEGMENTER:
            return ([image, TensorSpec("output_size", (2,), np.dtype(np.int64))],
                    [TensorSpec(n, (), np.dtype(np.int64) if n == "class_map" else f32)
                     for n in self.model.output_names])
        if self.model.mode == DETECTOR:
            return ([image, TensorSpec("image_size", (None, 4), np.dtype(np.int64))],
                    [TensorSpec(n, (), np.dtype(np.int64) if n == "labels" else f32) for n in self.model.output_names])
        names = ["logits"] if self.model.mode == "classifier" else [f"stage{i + 1}" for i in range(4)]
        return [image], [TensorSpec(n, (), f32) for n in names]

    def _run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        args = [torch.from_numpy(feeds["image"])]
        if self.model.mode == SEGMENTER:
            args.append(torch.from_numpy(feeds["output_size"]))
        elif self.model.mode == DETECTOR:
            args.append(torch.from_numpy(feeds["image_size"]))
        with torch.no_grad(), torch.autocast("cpu", dtype=self.dtype, enabled=self.dtype != torch.float32):
            out = self.model(*args)
        outs = (out,) if isinstance(out, torch.Tensor) else out
        return {s.name: (o if o.dtype == torch.int64 else o.float()).numpy() for s, o in zip(self.outputs, outs)}
