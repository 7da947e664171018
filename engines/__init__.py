"""Deployment targets beyond a single ONNX file (installed as crossformer_deploy.engines):

    tensorrt/      TensorRT engines: the sidecar, the GPU they are for, profiles, the build, the runner
    open_model.py  any model file -> its runner (ONNX Runtime, OpenVINO or TensorRT) and its ModelInfo
    triton/        Triton Inference Server: model configs, the repository writer, the code served inside
                   Triton's Python backend, and the serving environment

Everything here builds on the runtimes (crossformer_deploy.runtime), never the other way round.
"""
