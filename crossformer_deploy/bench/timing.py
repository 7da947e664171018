"""Side-by-side timing: candidates run interleaved, round by round, so drift hits all alike.

Thread pools keep spinning after a run (OpenMP in PyTorch, ONNX Runtime's intra-op pool, TBB in
OpenVINO). On a 2-core machine a candidate timed right after another would share the cores with the
previous one's spinning workers, so each candidate's turn starts after a short ``pause`` and times a
``block`` of consecutive runs: every candidate is measured with its own threading as deployed, and
none pays for its neighbour's.
"""
from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

from tqdm import tqdm


@dataclass(frozen=True)
class Timing:
    name: str
    median_ms: float
    p90_ms: float
    runs: int

    def ratio_to(self, base: Timing) -> float:
        """Speed-up of this over ``base`` (> 1 is faster)."""
        return base.median_ms / self.median_ms


def interleaved(fns: dict[str, Callable[[], object]], repeats: int = 20, warmup: int = 3,
                on_round: Callable[[int], None] | None = None, block: int = 1,
                pause: float = 0.0) -> dict[str, Timing]:
    """Median and p90 per candidate over ``repeats`` rounds of ``block`` runs each."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    samples: dict[str, list[float]] = {k: [] for k in fns}
    for r in range(repeats):
        for name, fn in fns.items():
            if pause:
                time.sleep(pause)
            for _ in range(block):
                t0 = time.perf_counter()
                fn()
                samples[name].append((time.perf_counter() - t0) * 1e3)
        if on_round:
            on_round(r)
    out = {}
    for name, s in samples.items():
        s = sorted(s)
        out[name] = Timing(name, statistics.median(s), s[min(len(s) - 1, int(0.9 * len(s)))], len(s))
    return out


def interleaved_with_progress(fns: dict[str, Callable[[], object]], desc: str, repeats: int, warmup: int,
                              block: int, pause: float) -> dict[str, Timing]:
    """``interleaved`` with a progress bar on stderr (one tick a round; off when stderr is not a terminal)."""
    bar = tqdm(total=repeats, desc=desc, file=sys.stderr, disable=None, leave=False, unit="round")
    try:
        return interleaved(fns, repeats, warmup, on_round=lambda _: bar.update(1), block=block, pause=pause)
    finally:
        bar.close()
