"""TensorRT engines: a plan with its sidecar (which ONNX, TensorRT and GPU it is for), optimisation profiles, the
build with its caches, and the runner. TensorRT itself is touched only by ``build.tensorrt_build``, ``device`` and
``runner.TensorRTRunner.load``."""
