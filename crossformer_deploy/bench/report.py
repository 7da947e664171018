"""The bench report as a table (stdout) and as a bar chart (--plot)."""
from __future__ import annotations

from crossformer_deploy.base.errors import UsageError
from crossformer_deploy.bench.config import GOAL_RATIO, role

COLUMNS = (("median_ms", "median ms", 10, ".2f"), ("p90_ms", "p90 ms", 9, ".2f"), ("images_per_s", "img/s", 8, ".1f"),
           ("vs_torch", "x torch", 8, ".2f"), ("vs_peer", "x peer", 7, ".2f"), ("max_abs", "max|abs|", 9, ".1e"),
           ("cosine", "cosine", 9, ".6f"))
ROLE_MARK = {"peer": "P", "ours": "*", "other": " "}


def format_table(report: dict) -> str:
    """One row per (case, backend); role column: * ours, P a peer; "x peer" is the speed-up over the
    fastest peer within its bar in the same case."""
    head = (f"{'size':>9} {'batch':>5}   {'backend':<20} " + " ".join(f"{t:>{w}}" for _, t, w, _ in COLUMNS)
            + "  note")
    lines = [head]
    for r in report["results"]:
        cells = " ".join(f"{'-' if r[k] is None else format(r[k], f):>{w}}" for k, _, w, f in COLUMNS)
        note = r["note"] or ("outside tolerance" if r["within_tolerance"] is False else "")
        if r["status"] != "ok":
            note = f"{r['status']}: {note}"
        lines.append(f"{r['size']:>9} {r['batch']:>5} {ROLE_MARK[role(r['backend'])]} {r['backend']:<20} {cells}  "
                     f"{note}".rstrip())
    lines.append("* ours (our export pipeline)   P peer (what a user runs without us)")
    for g in report["goal"]:
        line = (f"{g['size']} b{g['batch']}: ours {g['best']} is {g['vs_peer']:.2f}x the fastest faithful peer "
                f"{g['best_peer']} (bar {g['bar']}x): {'met' if g['met'] else 'NOT met'}")
        if "ort_target_vs_plain" in g:
            line += (f"; ort-target {g['ort_target_vs_plain']:.2f}x plain ORT (bar 0.95x): "
                     f"{'met' if g['ort_target_not_slower'] else 'NOT met'}")
        if "ort_int8_vs_ort_qdq" in g:
            line += f"; ort-int8 {g['ort_int8_vs_ort_qdq']:.2f}x ORT's own INT8"
        costs = [f"{rt} {g[k]:.2f}x" for rt, k in (("ORT", "ort_dynamic_cost"), ("OpenVINO", "ov_dynamic_cost"))
                 if k in g]
        if costs:
            line += f"; a dynamic graph takes {', '.join(costs)} our static one's time"
        lines.append(line)
    for p in report["profiles"]:
        lines.append(f"profile {p['backend']} {p['size']} b{p['batch']} ({p['total_ms']:.2f} ms of ops per run):")
        for op, ms in list(p["ops_ms"].items())[:20]:
            lines.append(f"  {op:<48} {ms:9.3f} ms {100 * ms / max(p['total_ms'], 1e-12):6.1f} %")
    return "\n".join(lines)


def check_plot_available() -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise UsageError("--plot needs matplotlib: pip install 'crossformer-deploy[plot]'") from None


def plot(report: dict, path: str) -> None:
    """One panel per case: images/s per backend (ours blue, peers gray), the fastest faithful peer and the
    1.2x bar as lines."""
    check_plot_available()
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt


    cases = list(dict.fromkeys((r["size"], r["batch"]) for r in report["results"]))
    fig, axes = plt.subplots(len(cases), 1, figsize=(8, 0.4 + 3.4 * len(cases)), squeeze=False)
    for ax, (size, batch) in zip(axes[:, 0], cases):
        rows = [r for r in report["results"] if (r["size"], r["batch"]) == (size, batch) and r["images_per_s"]]
        colors = ["tab:blue" if role(r["backend"]) == "ours" else "tab:gray" for r in rows]
        ax.barh([r["backend"] for r in rows], [r["images_per_s"] for r in rows], color=colors)
        for i, r in enumerate(rows):
            if r["vs_peer"]:
                ax.text(r["images_per_s"], i, f" {r['vs_peer']:.2f}x", va="center", fontsize=8)
        g = next((g for g in report["goal"] if (g["size"], g["batch"]) == (size, batch)), None)
        peer = next((r for r in rows if g and r["backend"] == g["best_peer"]), None)
        if peer:
            ax.axvline(peer["images_per_s"], color="gray", ls="--", lw=1, label=f"fastest peer ({peer['backend']})")
            ax.axvline(GOAL_RATIO * peer["images_per_s"], color="tab:red", ls=":", lw=1, label=f"{GOAL_RATIO}x bar")
            ax.legend(loc="lower right", fontsize=8)
        ax.set_xlim(0, 1.15 * max((r["images_per_s"] for r in rows), default=1))  # room for the labels
        ax.invert_yaxis()
        ax.set_title(f"{size}, batch {batch}: images/s (ratio vs the fastest faithful peer)", fontsize=10)
    fig.suptitle(f"CrossFormer {report['model']} on {report['machine']['cpu']}, "
                 f"{report['config']['threads']} threads", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
