"""crossformer-build-engine and TensorRT engines given to crossformer-infer: one-line errors."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

from tests.engines.support import HAS_TRT, fake_engine, identity
from tests.helpers import SAMPLE, cli, one_error_line

# -- the commands ----------------------------------------------------------------------------------------

def test_build_engine_cli_errors(exports, tmp_path):
    c = exports["cache"]
    plan = str(tmp_path / "m.plan")
    r = cli("build_engine", "--help", cache=c)
    assert r.returncode == 0 and "min:1x224x224,opt:8x224x224,max:32x384x384" in r.stdout and "--no-cache" in r.stdout
    cases = [
        (["--onnx", exports["dynamic"], "--engine", plan, "--shapes", "min:1x224x224,opt:8x200x224,max:32x384x384"],
         "crossformer-build-engine: error: profile min:1x224x224,opt:8x200x224,max:32x384x384: opt height 200 is not "
         "a multiple of 32 (nearest: 192 or 224)"),
        (["--onnx", exports["static"], "--engine", plan, "--shapes", "1x224x224"],
         "crossformer-build-engine: error: profile min:1x224x224,opt:1x224x224,max:1x224x224: min batch 1 does not "
         "fit this ONNX, whose batch is fixed at 2; use batch 2 or export with a dynamic batch"),
        (["--onnx", exports["dynamic"], "--engine", str(tmp_path / "m.onnx")],
         "crossformer-build-engine: error: engine path m.onnx must end with .plan, .engine or .trt"),
        (["--onnx", str(tmp_path / "nope.onnx"), "--engine", plan],
         f"crossformer-build-engine: error: ONNX file not found: {tmp_path / 'nope.onnx'}"),
        (["--onnx", exports["dynamic"], "--engine", plan, "--shapes", "min:1x224x224"],
         "crossformer-build-engine: error: shapes 'min:1x224x224': missing opt, max"),
    ]
    if not HAS_TRT:
        cases.append((["--onnx", exports["dynamic"], "--engine", plan],
                      "crossformer-build-engine: error: TensorRT is not installed: pip install tensorrt "
                      "(needs an NVIDIA GPU)"))
    for args, expected in cases:
        line = one_error_line(cli("build_engine", *args, cache=c))
        assert line.startswith(expected), (line, expected)
    r = cli("build_engine", "--onnx", exports["dynamic"], "--engine", plan, "--opt-level", "7", cache=c)
    assert r.returncode == 2 and "7 is not one of TensorRT's optimisation levels 0..5" in r.stderr
    assert not os.path.exists(plan)


def test_infer_refuses_engine_for_another_gpu(tmp_path, exports):
    plan = fake_engine(tmp_path, ident_=identity(gpu_name="NVIDIA A100-SXM4-80GB", compute_capability="8.0"))
    line = one_error_line(cli("infer", SAMPLE, "--model", plan, cache=exports["cache"]))
    # here: no TensorRT (or no GPU); on a TensorRT machine: this GPU is not an A100 of that TensorRT
    assert line.startswith("crossformer-infer: error: ") and any(
        f in line for f in ("TensorRT is not installed", "no CUDA GPU is visible", "was built for NVIDIA A100",
                            "was built by TensorRT 10.9.0"))
    # the same with this machine posing as an H100 with that TensorRT: the GPU check itself refuses
    code = textwrap.dedent(f"""
        import sys
        from crossformer_deploy.engines.tensorrt import device as dev
        dev.current_device_identity = lambda device=0: dev.DeviceIdentity("10.9.0", "NVIDIA H100 80GB HBM3", "9.0")
        from crossformer_deploy.cli.infer_cmd import main
        sys.exit(main([{SAMPLE!r}, "--model", {plan!r}]))
        """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                       env={**os.environ, "CROSSFORMER_DEPLOY_CACHE": exports["cache"]})
    assert one_error_line(r) == (
        "crossformer-infer: error: model.plan was built for NVIDIA A100-SXM4-80GB (compute capability 8.0), but this "
        "GPU is NVIDIA H100 80GB HBM3 (compute capability 9.0); engines are specific to the GPU model: rebuild it "
        "with crossformer-build-engine on this machine")
    os.remove(plan + ".json")
    line = one_error_line(cli("infer", SAMPLE, "--model", plan, cache=exports["cache"]))
    assert line.startswith("crossformer-infer: error: engine has no sidecar model.plan.json")
