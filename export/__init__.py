"""Torch -> ONNX export, graph passes and precision (installed as crossformer_deploy.export)."""
