"""Triton Inference Server: model repositories for our exports, the Python-backend code Triton runs, and the
serving environment. Triton hosts our runtimes and engines, so this package sits above both."""
