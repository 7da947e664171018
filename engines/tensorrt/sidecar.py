"""What an engine is for, kept beside it: ``model.plan.json``.

A TensorRT plan only loads in the TensorRT version that built it and is tuned for (and, by default,
only valid on) the GPU model it was built on; a plan file says none of this in a form we can read
without deserialising it. So every engine gets a sidecar with its ``EngineIdentity`` (which ONNX, which
TensorRT, which GPU, which profiles and precision) and the ``ModelInfo`` of the ONNX it came from.
Runtimes read the sidecar first and refuse a mismatched engine with a clear message instead of
handing TensorRT a plan it would reject with a cryptic one (or, across GPU models, accept and misrun).

The same identity keys the engine cache: equal identities mean an earlier build can be reused.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass

from crossformer_deploy import __version__
from crossformer_deploy.base.errors import ModelFileError
from crossformer_deploy.base.fileio import sha256_file, write_bytes_atomic
from crossformer_deploy.base.model_info import ModelInfo
from crossformer_deploy.engines.tensorrt.device import DeviceIdentity
from crossformer_deploy.engines.tensorrt.profiles import Profile

SIDECAR_SUFFIX = ".json"
SIDECAR_FORMAT = "crossformer-deploy/tensorrt-engine"
SIDECAR_VERSION = 1
REBUILD = "rebuild it with crossformer-build-engine"


@dataclass(frozen=True)
class EngineIdentity:
    """Everything that decides whether a built engine can be reused or loaded."""

    onnx_sha256: str
    tensorrt_version: str
    gpu_name: str
    compute_capability: str
    profiles: tuple[Profile, ...]
    precision: str
    optimization_level: int = 3
    # digest of the GroupedAttention plugin sources when the graph uses it ("" otherwise): a kernel
    # change must not reuse an engine that embeds the old kernel
    plugin: str = ""

    @property
    def device(self) -> DeviceIdentity:
        return DeviceIdentity(self.tensorrt_version, self.gpu_name, self.compute_capability)

    def to_json(self) -> dict:
        return {"onnx_sha256": self.onnx_sha256, "tensorrt_version": self.tensorrt_version,
                "gpu_name": self.gpu_name, "compute_capability": self.compute_capability,
                "profiles": [p.to_json() for p in self.profiles], "precision": self.precision,
                "optimization_level": self.optimization_level, "plugin": self.plugin}

    @classmethod
    def from_json(cls, data: dict) -> EngineIdentity:
        return cls(onnx_sha256=str(data["onnx_sha256"]), tensorrt_version=str(data["tensorrt_version"]),
                   gpu_name=str(data["gpu_name"]), compute_capability=str(data["compute_capability"]),
                   profiles=tuple(Profile.from_json(p) for p in data["profiles"]),
                   precision=str(data["precision"]), optimization_level=int(data.get("optimization_level", 3)),
                   plugin=str(data.get("plugin", "")))

    def key(self) -> str:
        """A stable cache key: the SHA-256 of the identity's canonical JSON (sorted keys, no spaces), so
        it is the same in every process and Python version and changes with any field."""
        canon = json.dumps({"v": SIDECAR_VERSION, **self.to_json()}, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canon.encode()).hexdigest()[:32]


@dataclass(frozen=True)
class Sidecar:
    """A parsed ``model.plan.json``."""

    path: str
    info: ModelInfo
    identity: EngineIdentity
    engine_sha256: str
    input_name: str = "image"


def sidecar_path(engine_path: str | os.PathLike) -> str:
    return os.fspath(engine_path) + SIDECAR_SUFFIX


def sidecar_bytes(info: ModelInfo, identity: EngineIdentity, engine_sha256: str, input_name: str = "image") -> bytes:
    doc = {"format": SIDECAR_FORMAT, "version": SIDECAR_VERSION, "written_by": f"crossformer-deploy {__version__}",
           "engine_sha256": engine_sha256, "input_name": input_name, "identity": identity.to_json(),
           "model_info": info.to_props()}
    return (json.dumps(doc, indent=1) + "\n").encode()


def write_sidecar(engine_path: str | os.PathLike, info: ModelInfo, identity: EngineIdentity,
                  engine_sha256: str | None = None, input_name: str = "image") -> str:
    """Write ``<engine>.json`` atomically; ``engine_sha256`` ties it to these exact engine bytes."""
    path = sidecar_path(engine_path)
    write_bytes_atomic(path, sidecar_bytes(info, identity, engine_sha256 or sha256_file(engine_path), input_name))
    return path


def read_sidecar(engine_path: str | os.PathLike) -> Sidecar:
    """Parse the sidecar of ``engine_path``; ModelFileError (one line, says what to do) when the engine or its
    sidecar is missing, unreadable, or not ours."""
    engine_path = os.fspath(engine_path)
    if not os.path.isfile(engine_path):
        raise ModelFileError(f"engine file not found: {engine_path}")
    path = sidecar_path(engine_path)
    if not os.path.isfile(path):
        raise ModelFileError(f"engine has no sidecar {os.path.basename(path)} (it says which model, TensorRT and GPU "
                             f"{os.path.basename(engine_path)} is for); {REBUILD}")
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelFileError(f"{path}: unreadable engine sidecar ({type(e).__name__}); {REBUILD}") from None
    if not isinstance(doc, dict) or doc.get("format") != SIDECAR_FORMAT:
        raise ModelFileError(f"{path}: not a crossformer-deploy engine sidecar; {REBUILD}")
    version = doc.get("version")
    if not isinstance(version, int) or version > SIDECAR_VERSION:
        raise ModelFileError(f"{path}: sidecar version {version!r} is newer than this crossformer-deploy reads "
                             f"(<= {SIDECAR_VERSION}); upgrade crossformer-deploy or {REBUILD}")
    try:
        identity = EngineIdentity.from_json(doc["identity"])
        info = ModelInfo.from_props({str(k): str(v) for k, v in doc["model_info"].items()})
        engine_sha = str(doc["engine_sha256"])
        input_name = str(doc.get("input_name", "image"))
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise ModelFileError(f"{path}: unreadable engine sidecar (bad or missing {_field(e)}); {REBUILD}") from None
    return Sidecar(path, info, identity, engine_sha, input_name)


def _field(e: Exception) -> str:
    return f"field {e.args[0]!r}" if isinstance(e, KeyError) and e.args else type(e).__name__


def check_engine_bytes(engine_path: str | os.PathLike, sidecar: Sidecar) -> None:
    """Refuse an engine whose bytes are not the ones its sidecar describes (replaced or half-copied)."""
    if sha256_file(engine_path) != sidecar.engine_sha256:
        raise ModelFileError(f"{os.fspath(engine_path)} does not match its sidecar {os.path.basename(sidecar.path)} "
                             f"(the engine was replaced or truncated); {REBUILD}")


def check_compatible(identity: EngineIdentity, current: DeviceIdentity, where: str = "engine") -> None:
    """ModelFileError unless the engine was built by this TensorRT for this GPU.

    TensorRT plans are only valid in the TensorRT version that built them, and an engine's kernels are
    chosen (and, without hardware-compatibility mode, compiled) for one GPU model: we refuse rather
    than let deserialisation fail obscurely or run kernels tuned for another device.
    """
    built = identity.device
    if built.tensorrt_version != current.tensorrt_version:
        raise ModelFileError(f"{where} was built by TensorRT {built.tensorrt_version}, but this machine has "
                             f"TensorRT {current.tensorrt_version}; engines only load in the TensorRT version that "
                             f"built them: {REBUILD} here (or install tensorrt=={built.tensorrt_version})")
    if (built.compute_capability != current.compute_capability) or (built.gpu_name != current.gpu_name):
        raise ModelFileError(f"{where} was built for {built.gpu_name} (compute capability "
                             f"{built.compute_capability}), but this GPU is {current.gpu_name} (compute capability "
                             f"{current.compute_capability}); engines are specific to the GPU model: {REBUILD} "
                             f"on this machine")
