"""ONNX -> TensorRT engine, with profiles, a persistent timing cache and an engine cache.

Two halves with a hard line between them:

- ``prepare_build`` (plain Python, no TensorRT): reads our ONNX and its metadata, hashes it, parses and
  checks the profiles against the graph's input, finds out whether the GroupedAttention plugin is
  needed. Cache keys, cache lookups and paths follow from it. All of this is tested on machines
  without TensorRT.
- ``tensorrt_build`` (the only code that touches TensorRT, through Polygraphy): parses the ONNX as a
  strongly typed network, so precision comes from the graph itself (fp16 casts, Q/DQ nodes) and no
  FP16/INT8 builder flags are set (TensorRT 11 removed them), adds one optimisation profile per
  ``Profile``, loads/saves the timing cache, and returns the serialised plan.

Engine and sidecar are written atomically; a finished build is also stored in the engine cache
(``<cache>/engines/<identity key>.plan``) so the same ONNX, profiles, TensorRT and GPU never build twice.
"""
from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from crossformer_deploy import plugins
from crossformer_deploy.base.cache import cache_dir as default_cache_dir
from crossformer_deploy.base.errors import ModelFileError, UsageError, first_line
from crossformer_deploy.base.fileio import check_output_path, sha256_file, write_bytes_atomic
from crossformer_deploy.base.model_file import ENGINE_EXTS
from crossformer_deploy.base.model_info import ModelInfo
from crossformer_deploy.engines.tensorrt import cache
from crossformer_deploy.engines.tensorrt.device import NO_TENSORRT, DeviceIdentity, current_device_identity
from crossformer_deploy.engines.tensorrt.profiles import (
    Profile,
    default_profiles,
    parse_profiles,
    validate_for_model,
    validate_profile,
)
from crossformer_deploy.engines.tensorrt.sidecar import EngineIdentity, write_sidecar
from crossformer_deploy.export.onnx_export import load_exported_onnx
from crossformer_deploy.plugins import op, tensorrt_plugin

# the plugin's code, part of the cache key: an engine embeds the kernel these files compile
PLUGIN_SOURCES = ("op.py", "tensorrt_plugin.py", "triton_kernel.py", "ptx.py")
OPT_LEVELS = range(0, 6)  # TensorRT's builder optimisation levels

Progress = Callable[[str], None]
# (request, timing cache path) -> serialised engine: the TensorRT boundary, replaceable in tests
Builder = Callable[["BuildRequest", str | None], bytes]


@dataclass(frozen=True)
class BuildRequest:
    """What one build needs to know about the ONNX, decided before TensorRT is involved."""

    onnx_path: str
    onnx_sha256: str
    info: ModelInfo
    input_name: str
    input_dims: tuple[int | None, ...]  # the graph input's (B, C, H, W); None = dynamic
    profiles: tuple[Profile, ...]
    optimization_level: int
    uses_plugin: bool
    plugin_digest: str  # "" unless uses_plugin

    def identity(self, device: DeviceIdentity) -> EngineIdentity:
        return EngineIdentity(onnx_sha256=self.onnx_sha256, tensorrt_version=device.tensorrt_version,
                              gpu_name=device.gpu_name, compute_capability=device.compute_capability,
                              profiles=self.profiles, precision=self.info.precision,
                              optimization_level=self.optimization_level, plugin=self.plugin_digest)


@dataclass(frozen=True)
class BuildResult:
    path: str
    identity: EngineIdentity
    cached: bool  # reused from the engine cache
    seconds: float


def prepare_build(onnx_path: str | os.PathLike, profiles: str | Iterable[str] | Sequence[Profile] | None = None,
                  optimization_level: int = 3) -> BuildRequest:
    """Read and check everything about a build that needs no TensorRT (see the module docstring)."""
    onnx_path = os.fspath(onnx_path)
    if optimization_level not in OPT_LEVELS:
        raise UsageError(f"optimisation level {optimization_level} is not one of TensorRT's levels 0..5")
    proto, info = load_exported_onnx(onnx_path, missing="ONNX file",
                                     hint="; engines are built from crossformer-export's ONNX")
    name, dims = _image_input(proto, onnx_path)
    chosen = _profiles(profiles, info, dims)
    validate_for_model(chosen, info, dims)
    uses_plugin = graph_uses_plugin(proto)
    if uses_plugin:
        check_plugin_fields(proto, onnx_path)
    return BuildRequest(onnx_path=os.path.abspath(onnx_path), onnx_sha256=onnx_digest(onnx_path, proto), info=info,
                        input_name=name, input_dims=dims, profiles=tuple(chosen),
                        optimization_level=optimization_level, uses_plugin=uses_plugin,
                        plugin_digest=plugin_digest() if uses_plugin else "")


def _profiles(profiles, info: ModelInfo, dims) -> list[Profile]:
    if profiles is None:
        return default_profiles(info, dims)
    if isinstance(profiles, str):
        return parse_profiles(profiles)
    items = list(profiles)
    if items and all(isinstance(p, str) for p in items):
        return parse_profiles(items)
    if not items or not all(isinstance(p, Profile) for p in items):
        raise UsageError("profiles must be Profile objects or min:BxHxW,opt:BxHxW,max:BxHxW strings")
    for p in items:
        validate_profile(p)
    return items


def _image_input(proto, path: str) -> tuple[str, tuple[int | None, ...]]:
    initializers = {t.name for t in proto.graph.initializer}
    inputs = [i for i in proto.graph.input if i.name not in initializers]
    chosen = next((i for i in inputs if i.name == "image"), inputs[0] if len(inputs) == 1 else None)
    if chosen is None:
        raise ModelFileError(f"{path}: expected one image input, found {[i.name for i in inputs]}")
    shape = chosen.type.tensor_type.shape
    dims = tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in shape.dim)
    if len(dims) != 4:
        raise ModelFileError(f"{path}: input {chosen.name!r} has rank {len(dims)}, expected NCHW (rank 4)")
    return chosen.name, dims


def graph_uses_plugin(proto) -> bool:
    """Whether the graph has ``crossformer::GroupedAttention`` (a node in our domain, or one that names our
    namespace the way TensorRT's ONNX parser looks plugins up: a ``plugin_namespace`` attribute)."""
    graphs = [proto.graph, *(f for f in proto.functions)]
    return any(op.names_plugin(node.domain, {a.name: a.s for a in node.attribute if a.name == "plugin_namespace"})
               for g in graphs for node in g.node)


def check_plugin_fields(proto, path: str) -> None:
    """Every GroupedAttention node carries every plugin field: tensorrt.plugin has no defaults, so a missing one
    (an export from before CrossFormer++ has no ``family``) would fail deep inside TensorRT's build."""
    for node in proto.graph.node:
        if op.is_op_node(node.domain, node.op_type):
            missing = [f for f in op.FIELDS if f not in {a.name for a in node.attribute}]
            if missing:
                raise ModelFileError(f"{path}: {node.name or op.NAME} has no {', '.join(missing)} attribute "
                                     "(exported by an older crossformer-export): export it again with "
                                     "crossformer-export --target tensorrt")


def onnx_digest(path: str, proto=None) -> str:
    """SHA-256 of the ONNX file, and of its external-data files when it has some (weights saved beside the
    graph change the engine as much as the graph does)."""
    file_sha = sha256_file(path)
    locations = sorted({e.value for t in (proto.graph.initializer if proto is not None else [])
                        for e in t.external_data if e.key == "location"})
    if not locations:
        return file_sha
    h = hashlib.sha256(file_sha.encode())
    base = os.path.dirname(os.path.abspath(path))
    for loc in locations:
        full = os.path.join(base, loc)
        if not os.path.isfile(full):
            raise ModelFileError(f"{path}: external data file {loc} is missing")
        h.update(f"\n{loc}={sha256_file(full)}".encode())
    return h.hexdigest()


def plugin_digest() -> str:
    """SHA-256 over the plugin's sources: an engine embeds the kernel these files compile."""
    h = hashlib.sha256()
    base = os.path.dirname(os.path.abspath(plugins.__file__))
    for name in PLUGIN_SOURCES:
        p = os.path.join(base, name)
        h.update(name.encode() + b"\0" + (open(p, "rb").read() if os.path.isfile(p) else b"<missing>") + b"\0")
    return h.hexdigest()[:16]


# -- the build ---------------------------------------------------------------------------------------------

def build_engine(onnx_path: str | os.PathLike, engine_path: str | os.PathLike,
                 profiles: str | Iterable[str] | Sequence[Profile] | None = None, timing_cache: str | None = None,
                 optimization_level: int = 3, cache_dir: str | None = None, progress: Progress | None = None,
                 use_cache: bool = True, **kw) -> str:
    """Build (or reuse from the cache) a TensorRT engine for our ONNX; returns ``engine_path``.

    ``profiles``: "min:1x224x224,opt:8x224x224,max:32x384x384" (";" for several), a list of such strings,
    or ``Profile`` objects; None = ``default_profiles`` (the model's size, batch 1..8, or its fixed shape).
    ``timing_cache``: default ``<cache_dir>/tensorrt/timing-<trt>-<gpu>.cache``. ``cache_dir``: default
    ``crossformer_deploy.base.cache.cache_dir()``. Writes ``engine_path`` and ``engine_path + ".json"``.
    """
    return build(onnx_path, engine_path, profiles, timing_cache, optimization_level, cache_dir, progress,
                 use_cache, **kw).path


def build(onnx_path: str | os.PathLike, engine_path: str | os.PathLike,
          profiles: str | Iterable[str] | Sequence[Profile] | None = None, timing_cache: str | None = None,
          optimization_level: int = 3, cache_dir: str | None = None, progress: Progress | None = None,
          use_cache: bool = True, device: DeviceIdentity | None = None, builder: Builder | None = None) -> BuildResult:
    """``build_engine`` with the details: the identity and whether the cache answered.

    ``device`` and ``builder`` default to this machine's TensorRT/GPU and ``tensorrt_build``; tests pass
    stand-ins to exercise everything around the TensorRT boundary.
    """
    step = progress or (lambda _: None)
    t0 = time.perf_counter()
    engine_path = check_engine_path(engine_path)
    if timing_cache is not None:
        timing_cache = check_output_path(timing_cache)  # its directory must exist; the file may not yet
    step("reading ONNX and checking profiles")
    req = prepare_build(onnx_path, profiles, optimization_level)
    step("checking TensorRT and GPU")
    device = device or current_device_identity()
    identity = req.identity(device)
    root = cache_dir or default_cache_dir()
    if use_cache:
        step("looking up the engine cache")
        hit = cache.lookup_cached(identity, root)
        if hit:
            step("copying cached engine")
            cache.install(hit, engine_path, req.info, identity, req.input_name)
            return BuildResult(engine_path, identity, True, time.perf_counter() - t0)
    step("building TensorRT engine (this takes minutes)")
    plan = (builder or tensorrt_build)(req, timing_cache or cache.default_timing_cache(device, root))
    if not plan:
        raise ModelFileError(f"TensorRT returned an empty engine for {req.onnx_path}")
    step("writing engine")
    plan_sha = hashlib.sha256(plan).hexdigest()
    write_bytes_atomic(engine_path, plan)
    write_sidecar(engine_path, req.info, identity, plan_sha, req.input_name)
    if use_cache:
        cache.store(plan, plan_sha, req.info, identity, req.input_name, root)
    return BuildResult(engine_path, identity, False, time.perf_counter() - t0)


def check_engine_path(path: str | os.PathLike) -> str:
    path = check_output_path(path)
    if not path.endswith(ENGINE_EXTS):
        raise UsageError(f"engine path {os.path.basename(path)} must end with {_or(ENGINE_EXTS)} "
                         "(that is how crossformer-infer knows to run it with TensorRT)")
    return path


def _or(items: Sequence[str]) -> str:
    return ", ".join(items[:-1]) + " or " + items[-1]


# -- the TensorRT boundary --------------------------------------------------------------------------------

def register_plugin() -> None:
    """Register ``crossformer::GroupedAttention`` with TensorRT (one clear error when it cannot)."""
    try:
        tensorrt_plugin.register()
    except Exception as e:
        raise UsageError(f"this ONNX uses crossformer::GroupedAttention; registering its TensorRT plugin failed: "
                         f"{first_line(e)}") from None


def tensorrt_build(req: BuildRequest, timing_cache: str | None) -> bytes:
    """Parse, configure and build with TensorRT through Polygraphy; the serialised plan."""
    try:
        import tensorrt  # noqa: F401  (Polygraphy imports it lazily; fail here, with our message)
    except Exception:  # ImportError, or the PyPI download stub failing inside its own import
        raise UsageError(NO_TENSORRT) from None
    # Polygraphy's TensorRT backend: only the build itself needs TensorRT
    from polygraphy.backend.trt import CreateConfig, EngineBytesFromNetwork, NetworkFromOnnxPath
    from polygraphy.backend.trt import Profile as TrtProfile
    from polygraphy.exception import PolygraphyException
    from polygraphy.logger import G_LOGGER

    if req.uses_plugin:
        register_plugin()  # before parsing: the parser looks the op up in the plugin registry
    trt_profiles = [TrtProfile().add(req.input_name, *p.shapes()) for p in req.profiles]
    load_cache = timing_cache if timing_cache and os.path.isfile(timing_cache) else None
    config = CreateConfig(profiles=trt_profiles, load_timing_cache=load_cache,
                          builder_optimization_level=req.optimization_level)
    # strongly typed: the network's precision is the graph's (fp16 casts / Q/DQ), no builder precision flags
    network = NetworkFromOnnxPath(req.onnx_path, strongly_typed=True)
    try:
        with G_LOGGER.verbosity(G_LOGGER.ERROR):
            plan = EngineBytesFromNetwork(network, config=config, save_timing_cache=timing_cache)()
    except PolygraphyException as e:
        raise ModelFileError(f"TensorRT could not build an engine from {os.path.basename(req.onnx_path)}: "
                             f"{first_line(e)}") from None
    return bytes(plan)


