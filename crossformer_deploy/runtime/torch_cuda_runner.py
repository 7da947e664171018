"""The ``torch-cuda`` provider: the PyTorch model on an NVIDIA GPU in fp16, grouped attention by the fused
Triton kernel, and one CUDA graph per input shape. The GPU path that needs no TensorRT.

A fixed shape is captured once (after two warm-up runs that compile the kernels) and replayed after that:
no Python, no launch overhead per layer. Up to ``max_graphs`` shapes are kept (least recently used out).

Without CUDA this runner refuses in one line, except under Triton's CPU interpreter (``TRITON_INTERPRET=1``
set before the kernel module is imported), where the same code runs on the CPU without graphs: that is how
the tests exercise its plumbing on machines without a GPU.
"""
from __future__ import annotations

import copy
import os
from collections import OrderedDict

import numpy as np
import torch

from crossformer_deploy.base.errors import UsageError
from crossformer_deploy.plugins.torch_fused import fuse_attention
from crossformer_deploy.runtime.runner import Runner, TensorSpec


def interpreter_mode() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def torch_cuda_device() -> torch.device:
    """cuda, or cpu under Triton's interpreter; UsageError where neither works."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    if interpreter_mode():
        return torch.device("cpu")
    raise UsageError(f"--provider torch-cuda needs an NVIDIA GPU and a CUDA build of PyTorch; "
                     f"torch.cuda.is_available() is False here (torch {torch.__version__})")


class _Graphed:
    """One CUDA graph of ``module`` for one input shape: copy in, replay, read the static outputs."""

    def __init__(self, module: torch.nn.Module, x: torch.Tensor):
        self.x = x.clone()
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(2):  # compiles Triton kernels, creates cuBLAS workspaces: not capturable
                module(self.x)
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.out = module(self.x)

    def __call__(self, x: torch.Tensor):
        self.x.copy_(x)
        self.graph.replay()
        return self.out


class TorchCudaRunner(Runner):
    name = "torch-cuda"
    stride = 32  # the model's: three 2x merges after the stride-4 embedding

    def __init__(self, model: torch.nn.Module, dtype: torch.dtype = torch.float16, cuda_graphs: bool = True,
                 max_graphs: int = 8):
        super().__init__()
        self.model, self.dtype, self.cuda_graphs, self.max_graphs = model, dtype, cuda_graphs, max_graphs
        self.device: torch.device | None = None
        self._graphs: OrderedDict[tuple, _Graphed] = OrderedDict()

    def _load(self) -> None:
        self.device = torch_cuda_device()
        # here: the kernel module reads TRITON_INTERPRET when first imported, and imports Triton
        from crossformer_deploy.plugins import triton_kernel

        if triton_kernel.triton is None:
            raise UsageError(f"--provider torch-cuda needs OpenAI Triton: {triton_kernel.TRITON_MISSING}")
        # a copy: fusing swaps modules and the cast changes dtypes, and the caller's model (often the fp32
        # reference the results are compared with) must stay as it was
        self.module = fuse_attention(copy.deepcopy(self.model).eval()).to(self.device, self.dtype)

    def _specs(self) -> tuple[list[TensorSpec], list[TensorSpec]]:
        names = ["logits"] if self.model.mode == "classifier" else [f"stage{i + 1}" for i in range(4)]
        f32 = np.dtype(np.float32)
        return ([TensorSpec("image", (None, self.model.cfg.in_chans, None, None), f32)],
                [TensorSpec(n, (), f32) for n in names])

    def forward(self, x: torch.Tensor):
        """The model on a device tensor (graph-replayed where possible); outputs stay on the device."""
        if not (self.cuda_graphs and self.device.type == "cuda"):
            return self.module(x)
        key = tuple(x.shape)
        graphed = self._graphs.pop(key, None)
        if graphed is None:
            if len(self._graphs) >= self.max_graphs:
                self._graphs.popitem(last=False)
            graphed = _Graphed(self.module, x)
        self._graphs[key] = graphed
        return graphed(x)

    def _run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        x = torch.from_numpy(feeds["image"]).to(self.device, self.dtype)
        with torch.inference_mode():
            out = self.forward(x)
        outs = (out,) if isinstance(out, torch.Tensor) else out
        return {s.name: o.float().cpu().numpy() for s, o in zip(self.outputs, outs)}

    def close(self) -> None:
        self._graphs.clear()
        self._loaded = False
