"""The engine cache and the timing cache: a finished build is kept under its identity's key, so the same ONNX,
profiles, TensorRT and GPU never build twice; TensorRT's timing cache is kept per TensorRT version and GPU."""
from __future__ import annotations

import os
import re
import shutil
import sys

from crossformer_deploy.base.errors import CrossFormerError
from crossformer_deploy.base.fileio import atomic_path, sha256_file, write_bytes_atomic
from crossformer_deploy.base.model_info import ModelInfo
from crossformer_deploy.engines.tensorrt.device import DeviceIdentity
from crossformer_deploy.engines.tensorrt.sidecar import EngineIdentity, check_engine_bytes, read_sidecar, write_sidecar


def default_timing_cache(device: DeviceIdentity, cache_root: str) -> str:
    """One timing cache per TensorRT version and GPU model: timings from another device are worthless."""
    name = f"trt{device.tensorrt_version}-{device.gpu_name}-sm{device.compute_capability}"
    slug = re.sub(r"[^A-Za-z0-9.]+", "-", name)
    d = os.path.join(cache_root, "tensorrt")
    os.makedirs(d, exist_ok=True)
    return os.path.join(d, f"timing-{slug.strip('-').lower()}.cache")


def cached_engine_path(identity: EngineIdentity, cache_root: str) -> str:
    return os.path.join(cache_root, "engines", f"{identity.key()}.plan")


def lookup_cached(identity: EngineIdentity, cache_root: str) -> str | None:
    """The cached plan for ``identity`` when it is complete and intact (its sidecar matches), else None."""
    path = cached_engine_path(identity, cache_root)
    try:
        side = read_sidecar(path)
        check_engine_bytes(path, side)
    except (CrossFormerError, OSError):
        return None  # absent, or a half-written / foreign entry: rebuild
    return path if side.identity == identity else None


def install(cached: str, engine_path: str, info: ModelInfo, identity: EngineIdentity, input_name: str) -> None:
    """Copy a cached plan to ``engine_path`` (atomically) with a sidecar of its own."""
    with atomic_path(engine_path) as tmp:
        shutil.copyfile(cached, tmp)
    # a fresh sidecar: the ModelInfo is this ONNX's (same bytes, so the same), the hash is re-checked
    write_sidecar(engine_path, info, identity, sha256_file(engine_path), input_name)


def store(plan: bytes, plan_sha: str, info: ModelInfo, identity: EngineIdentity, input_name: str, root: str) -> None:
    """Keep a finished build in the cache; a read-only or full cache only warns."""
    path = cached_engine_path(identity, root)
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        write_bytes_atomic(path, plan)
        write_sidecar(path, info, identity, plan_sha, input_name)
    except (OSError, CrossFormerError) as e:  # a read-only or full cache must not fail a finished build
        print(f"warning: could not store the engine in the cache {os.path.dirname(path)}: {e}", file=sys.stderr)
