"""``crossformer-bench --recommend``: per case and precision, the fastest path within its bar on this machine,
and the commands that produce and run it."""
from __future__ import annotations

from .config import BACKENDS, role

# backend -> (export arguments after "crossformer-export --variant V", how to run the result)
RECIPES: dict[str, tuple[str, str]] = {
    "torch": ("", "PyTorch: crossformer_deploy.create_model(...) (no export)"),
    "torch-compile": ("", "PyTorch: torch.compile(create_model(...))"),
    "torch-bf16": ("", "PyTorch: create_model(...) under torch.autocast('cpu', torch.bfloat16)"),
    "ort": ("-o model.onnx", "crossformer-infer IMAGES --model model.onnx"),
    "ort-static": ("--static {size} --batch {batch} -o model.onnx", "crossformer-infer IMAGES --model model.onnx"),
    "ort-target": ("--static {size} --target onnxruntime -o model.onnx",
                   "crossformer-infer IMAGES --model model.onnx"),
    "ort-fp16": ("--static {size} --target onnxruntime --fp16 -o model.onnx",
                 "crossformer-infer IMAGES --model model.onnx"),
    "ort-int8": ("--static {size} --target onnxruntime --int8 --calib CALIB_DIR -o model.onnx",
                 "crossformer-infer IMAGES --model model.onnx"),
    "ov-f32": ("-o model.onnx", "crossformer-infer IMAGES --model model.onnx --provider openvino"),
    "ov-bf16": ("-o model.onnx", "OpenVINO with INFERENCE_PRECISION_HINT=bf16 (runtime/openvino_runner.py)"),
    "ov-nncf-int8": ("-o model.onnx", "nncf.quantize(openvino model, dataset, model_type=TRANSFORMER), then "
                     "OpenVINO (NNCF's path, not ours)"),
    "ov-target-f32": ("--static {size} --target openvino -o model.onnx",
                      "crossformer-infer IMAGES --model model.onnx --provider openvino"),
    "ov-target-bf16": ("--static {size} --target openvino -o model.onnx",
                       "OpenVINO with INFERENCE_PRECISION_HINT=bf16 (runtime/openvino_runner.py)"),
    "ov-int8": ("--static {size} --target openvino --int8 --calib CALIB_DIR -o model.onnx",
                "crossformer-infer IMAGES --model model.onnx --provider openvino"),
    "ov-target-nncf-int8": ("--static {size} --target openvino -o model.onnx",
                            "then crossformer_deploy.bench.graphs.nncf_quantize(model.onnx, CALIB_DIR, ...) -> "
                            "model.xml, run with OpenVINO (not a crossformer-export option: it lost to ov-int8)"),
    "tensorrt": ("--static {size} -o model.onnx", "ONNX Runtime's TensorRT execution provider"),
    "torch-cuda": ("", "crossformer-infer IMAGES --variant V --weights W --provider torch-cuda"),
}
assert RECIPES.keys() == BACKENDS.keys()


def recommend(report: dict) -> list[dict]:
    """One row per (case, precision): the fastest backend within its precision's bar, with its recipe."""
    out = []
    variant = report.get("model", "s")
    cases = dict.fromkeys((r["size"], r["batch"]) for r in report["results"])
    for size, batch in cases:
        rows = [r for r in report["results"] if (r["size"], r["batch"]) == (size, batch)
                and r["median_ms"] and r["within_tolerance"]]
        for precision in ("fp32", "bf16", "fp16", "int8"):
            pool = [r for r in rows if BACKENDS[r["backend"]] == precision]
            if not pool:
                continue
            best = min(pool, key=lambda r: r["median_ms"])
            export, run = RECIPES[best["backend"]]
            export = export.format(size=size, batch=batch)
            out.append({"size": size, "batch": batch, "precision": precision, "backend": best["backend"],
                        "role": role(best["backend"]), "median_ms": best["median_ms"], "vs_peer": best["vs_peer"],
                        "cosine": best["cosine"],
                        "export": f"crossformer-export --variant {variant} --weights W {export}" if export else "",
                        "run": run})
    return out


def format_recommendations(rows: list[dict]) -> str:
    lines = ["fastest path within each precision's bar on this machine:"]
    for r in rows:
        peer = f", {r['vs_peer']:.2f}x the fastest peer" if r["vs_peer"] else ""
        lines.append(f"  {r['size']} b{r['batch']} {r['precision']:<5} {r['backend']} ({r['role']}): "
                     f"{r['median_ms']:.1f} ms{peer}, cosine {r['cosine']:.5f}")
        if r["export"]:
            lines.append(f"      {r['export']}")
        lines.append(f"      {r['run']}")
    return "\n".join(lines)
