"""``crossformer-bench --recommend``: per case and precision, the fastest path within its bar on this machine,
and the commands that produce and run it."""
from __future__ import annotations

from crossformer_deploy.bench.config import BACKENDS, role
from crossformer_deploy.bench.graphs import GRAPHS, export_args


def recipe(backend: str, size: str, batch: int) -> tuple[str, str]:
    """(crossformer-export arguments after --variant / --weights, or "" when nothing is exported; how to run it)."""
    spec = BACKENDS[backend]
    export = export_args(GRAPHS[spec.graph], size, batch) if spec.graph else ""
    return export, spec.run


def recommend(report: dict) -> list[dict]:
    """One row per (case, precision): the fastest backend within its precision's bar, with its recipe."""
    out = []
    variant = report.get("model", "s")
    cases = dict.fromkeys((r["size"], r["batch"]) for r in report["results"])
    for size, batch in cases:
        rows = [r for r in report["results"] if (r["size"], r["batch"]) == (size, batch)
                and r["median_ms"] and r["within_tolerance"]]
        for precision in ("fp32", "bf16", "fp16", "int8"):
            pool = [r for r in rows if BACKENDS[r["backend"]].bar == precision]
            if not pool:
                continue
            best = min(pool, key=lambda r: r["median_ms"])
            export, run = recipe(best["backend"], size, batch)
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
