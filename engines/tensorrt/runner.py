"""TensorRT backend: runs a ``.plan`` built by crossformer-build-engine (Polygraphy's TrtRunner underneath).

The engine's sidecar (``model.plan.json``) is read and checked before TensorRT sees a byte of the plan:
the plan must be the one the sidecar describes, built by this machine's TensorRT version for this GPU
model. Input shapes are checked against the engine's profiles before anything runs, so a size outside
them is one clear InputSizeError, not a TensorRT error log.

Importing this module needs neither TensorRT nor a GPU; ``load()`` needs both.
"""
from __future__ import annotations

import os

import numpy as np

from crossformer_deploy.base.errors import ModelFileError, UsageError, first_line
from crossformer_deploy.engines.tensorrt import device
from crossformer_deploy.engines.tensorrt import sidecar as ident
from crossformer_deploy.engines.tensorrt.profiles import Profile, find_profile
from crossformer_deploy.plugins import tensorrt_plugin
from crossformer_deploy.runtime.runner import Runner, TensorSpec


class TensorRTRunner(Runner):
    name = "tensorrt"

    def __init__(self, path: str | os.PathLike):
        super().__init__()
        self.path = os.fspath(path)
        # the sidecar now, not at load(): a missing or foreign sidecar fails before anything is prepared
        self.sidecar = ident.read_sidecar(self.path)
        self.profiles: list[Profile] = list(self.sidecar.identity.profiles)
        self.input_name = self.sidecar.input_name
        self._engine = None
        self._runner = None
        self._profile_index = 0

    # -- checks that need no TensorRT
    def check_input(self, shape: tuple[int, ...]) -> int:
        """The index of the profile that takes ``shape`` (NCHW); InputSizeError naming the bounds otherwise."""
        return find_profile(self.profiles, shape)

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self.input_name in feeds:  # before load(): a bad size needs no GPU to be told
            self.check_input(tuple(feeds[self.input_name].shape))
        return super().run(feeds)

    # -- Runner interface
    def _load(self) -> None:
        ident.check_engine_bytes(self.path, self.sidecar)
        built = self.sidecar.identity
        try:
            current = device.current_device_identity()
        except UsageError as e:
            raise UsageError(f"{e}; {os.path.basename(self.path)} needs {built.device.describe()}") from None
        ident.check_compatible(built, current, where=os.path.basename(self.path))
        if built.plugin:
            _register_plugin_if_possible()
        # Polygraphy's TensorRT backend here: it needs TensorRT, which only load() may require
        from polygraphy.backend.trt import EngineFromBytes, TrtRunner
        from polygraphy.exception import PolygraphyException
        from polygraphy.logger import G_LOGGER

        with open(self.path, "rb") as f:
            data = f.read()
        try:
            with G_LOGGER.verbosity(G_LOGGER.ERROR):
                self._engine = EngineFromBytes(data)()
                self._runner = TrtRunner(self._engine)
                self._runner.activate()
        except OSError as e:
            # Polygraphy < 0.53 looks for libcudart in system paths only; pip's CUDA lives in site-packages
            import polygraphy

            raise UsageError(f"TensorRT could not load the CUDA runtime ({first_line(e)}); Polygraphy "
                             f"{polygraphy.__version__} is here, >= 0.53 also finds pip-installed CUDA "
                             "(pip install -U 'polygraphy>=0.53')") from None
        except PolygraphyException as e:
            hint = (" (it uses crossformer::GroupedAttention: the kernel is embedded when the engine was built "
                    "with the plugin's ahead-of-time implementation)") if built.plugin else ""
            raise ModelFileError(f"{self.path}: TensorRT could not load this engine{hint}: {first_line(e)}") from None

    def _specs(self) -> tuple[list[TensorSpec], list[TensorSpec]]:
        import tensorrt as trt  # loaded by now (load() needs it)

        inputs: list[TensorSpec] = []
        outputs: list[TensorSpec] = []
        engine = self._engine
        for i in range(engine.num_io_tensors):
            name = engine.get_tensor_name(i)
            shape = tuple(int(d) if d >= 0 else None for d in engine.get_tensor_shape(name))
            try:
                dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(name)))
            except TypeError:  # a type numpy lacks (bf16, fp8): hand over float32, the runner casts
                dtype = np.dtype(np.float32)
            spec = TensorSpec(name, shape, dtype)
            (inputs if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT else outputs).append(spec)
        return inputs, outputs

    def _run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        index = self.check_input(tuple(feeds[self.input_name].shape))
        if index != self._profile_index:
            self._runner.set_profile(index)
            self._profile_index = index
        out = self._runner.infer(feeds)
        # copies: Polygraphy reuses its host output buffers on the next call
        return {s.name: np.array(out[s.name]) for s in self.outputs}

    def close(self) -> None:
        if self._runner is not None and getattr(self._runner, "is_active", False):
            self._runner.deactivate()
        self._runner = None
        self._engine = None
        self._loaded = False
        self._profile_index = 0  # a reload gets a fresh execution context, which starts on profile 0


def _register_plugin_if_possible() -> None:
    # An engine built with the plugin's ahead-of-time implementation carries its kernel, so loading
    # needs no registration; registering anyway (when TensorRT and Triton are here) also covers an
    # engine built with the Python (JIT) implementation. Failure is not an error at this point.
    try:
        if not tensorrt_plugin.missing_requirements():
            tensorrt_plugin.register()
    except Exception:
        pass
