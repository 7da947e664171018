"""The house as its imports draw it: which layer of crossformer_deploy imports which, and every cycle.

The nodes are the layers of the import-linter contract in setup.cfg; ``--depth N`` cuts module names to N parts
instead (``--depth 3``: engines.tensorrt, engines.triton, bench.run, ...).
Import-graph tools read packages from disk, and an editable install maps export/, plugins/ and engines/ into
crossformer_deploy only at import time, so this reads an installed layout: by default it builds the wheel
of this checkout and unpacks it into a temporary folder (``--site DIR`` reads an unpacked one instead).

    python tools/import_graph.py                  # layers and the arrows between them, then cycles
    python tools/import_graph.py --depth 3        # modules cut to three name parts (bench.run, cli.common, ...)
    python tools/import_graph.py --mermaid        # the same as a Mermaid flowchart (docs/architecture.md)

Needs grimp (installed with import-linter, the test extra).
"""
from __future__ import annotations

import argparse
import configparser
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections import defaultdict

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = "crossformer_deploy"


# What the wheel is built from: the package's folders and the files setup.cfg reads.
SOURCES = ("setup.cfg", "pyproject.toml", "README.md", "crossformer_deploy", "export", "plugins", "engines")


def build_wheel(dest: str) -> str:
    """Build this checkout's wheel into ``dest`` from a copy of its sources (so no stale build/ folder of the
    checkout can slip files in, and none is left behind); returns the wheel's path."""
    src = os.path.join(dest, "src")
    os.makedirs(src)
    for name in SOURCES:
        path = os.path.join(ROOT, name)
        if os.path.isdir(path):
            shutil.copytree(path, os.path.join(src, name), ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(path, os.path.join(src, name))
    dist = os.path.join(dest, "dist")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", dist, src],
                   check=True, stdout=subprocess.DEVNULL)
    return next(os.path.join(dist, f) for f in os.listdir(dist) if f.endswith(".whl"))


def unpacked_wheel(dest: str) -> str:
    """Build this checkout's wheel and unpack it into ``dest``/site; returns that folder."""
    site = os.path.join(dest, "site")
    with zipfile.ZipFile(build_wheel(dest)) as z:
        z.extractall(site)
    return site


def contract_layers(path: str = os.path.join(ROOT, "setup.cfg")) -> list[str]:
    """The layers of setup.cfg's import-linter contract, top first."""
    cfg = configparser.ConfigParser()
    cfg.read(path)
    return cfg["importlinter:contract:layers"]["layers"].split()


def node_of(module: str, depth: int | None, layers: list[str]) -> str:
    if depth:
        return ".".join(module.split(".")[:depth])
    return next((layer for layer in layers if module == layer or module.startswith(layer + ".")), PACKAGE)


def package_edges(site: str, depth: int | None = None) -> dict[str, set[str]]:
    """{importer: {imported}} between layers (or modules cut to ``depth`` name parts), function-level imports
    included."""
    import grimp

    sys.path.insert(0, site)
    graph = grimp.build_graph(PACKAGE, include_external_packages=False, cache_dir=None)
    layers = contract_layers()
    edges: dict[str, set[str]] = defaultdict(set)
    for module in graph.modules:
        a = node_of(module, depth, layers)
        for imported in graph.find_modules_directly_imported_by(module):
            b = node_of(imported, depth, layers)
            if a != b and a != PACKAGE and b != PACKAGE:
                edges[a].add(b)
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one package (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted({*edges, *(w for ws in edges.values() for w in ws)}):
        if v not in index:
            visit(v)
    return out


def short(name: str) -> str:
    return name.removeprefix(PACKAGE + ".")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--site", help="an unpacked wheel (default: build this checkout's)")
    p.add_argument("--depth", type=int, help="name parts per node instead of the contract's layers")
    p.add_argument("--mermaid", action="store_true", help="print a Mermaid flowchart instead of text")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="crossformer-graph-") as tmp:
        site = args.site or unpacked_wheel(tmp)
        edges = package_edges(site, args.depth)
    found = cycles(edges)
    if args.mermaid:
        print("flowchart TD")
        for a in sorted(edges):
            for b in sorted(edges[a]):
                print(f"  {short(a).replace('.', '_')}[{short(a)}] --> {short(b).replace('.', '_')}[{short(b)}]")
        return 0
    for a in sorted(edges):
        print(f"{short(a):<20} -> {', '.join(short(b) for b in sorted(edges[a]))}")
    print(f"cycles: {len(found)}")
    for c in found:
        print("  " + " <-> ".join(short(m) for m in c))
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
