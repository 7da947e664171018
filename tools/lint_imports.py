"""The import-linter contract (setup.cfg) checked on this checkout's wheel, where export/, plugins/ and engines/
sit inside crossformer_deploy/ as an installed package has them (an editable install hides them from
import-graph tools). CI runs it beside ruff:

    python tools/lint_imports.py          # exit 0: every contract kept; 1: one is broken (lint-imports' report)
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile

from import_graph import ROOT, unpacked_wheel


def lint(site: str) -> subprocess.CompletedProcess:
    """lint-imports on the package in ``site``, run from an empty folder: import-linter puts the working folder
    first on sys.path, and the checkout's own crossformer_deploy/ lacks the mapped subpackages."""
    env = {**os.environ, "PYTHONPATH": site}
    with tempfile.TemporaryDirectory(prefix="crossformer-lint-") as cwd:
        return subprocess.run(["lint-imports", "--no-cache", os.path.join(ROOT, "setup.cfg")], cwd=cwd, env=env,
                              capture_output=True, text=True)


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="crossformer-wheel-") as tmp:
        r = lint(unpacked_wheel(tmp))
    print(r.stdout[r.stdout.find("Contracts"):] if "Contracts" in r.stdout else r.stdout, end="")
    print(r.stderr, end="", file=sys.stderr)
    return r.returncode


if __name__ == "__main__":
    sys.exit(main())
