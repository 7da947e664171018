"""NVIDIA's pure-Python ``tensorrt.plugin`` package, taken from the real ``tensorrt-cu12-bindings`` wheel
at test time (a cached ``pip download`` from the package registry; never committed).

Only ``tensorrt_bindings/plugin/*.py`` is extracted: the compiled core next to it needs libnvinfer,
which cannot be installed here; ``fake_tensorrt`` stands in for it.
"""
from __future__ import annotations

import glob
import importlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile

from tests.plugins import fake_tensorrt

# The first release with tensorrt.plugin (no aot_impl), the first with aot_impl (its attribute converter
# calls int(array)), and the newest.
RELEASES = ("10.6.0", "10.9.0.34", "11.4.0.106")
AOT_RELEASES = RELEASES[1:]


def cache_root() -> str:
    return os.environ.get("CROSSFORMER_TEST_CACHE", os.path.join(os.path.expanduser("~"), ".cache",
                                                                 "crossformer-deploy-tests"))


def plugin_package(version: str) -> str:
    """A folder holding ``plugin/`` (tensorrt.plugin of that release); downloads the wheel once."""
    root = os.path.join(cache_root(), "tensorrt-bindings", version)
    if os.path.isfile(os.path.join(root, "plugin", "_lib.py")):
        return root
    with tempfile.TemporaryDirectory() as tmp:
        # the Python files are the same in every platform's wheel: always fetch one, whatever runs the tests
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--python-version", "3.11",
               "--platform", "manylinux_2_28_x86_64", "--platform", "manylinux_2_17_x86_64",
               "--disable-pip-version-check", "-q", "-d", tmp,
               f"tensorrt-cu12-bindings=={version}"]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        wheels = glob.glob(os.path.join(tmp, "*.whl"))
        if proc.returncode or not wheels:
            raise RuntimeError(f"pip download tensorrt-cu12-bindings=={version} failed: {proc.stderr.strip()[-300:]}")
        os.makedirs(os.path.dirname(root), exist_ok=True)
        staging = tempfile.mkdtemp(dir=os.path.dirname(root))
        with zipfile.ZipFile(wheels[0]) as z:
            for name in z.namelist():
                if name.startswith("tensorrt_bindings/plugin/") and name.endswith(".py"):
                    z.extract(name, staging)
        shutil.rmtree(root, ignore_errors=True)  # a broken earlier extraction
        os.replace(os.path.join(staging, "tensorrt_bindings"), root)  # atomic: no half-extracted cache
    return root


def load(version: str):
    """(fake tensorrt module, its real tensorrt.plugin) for ``version``, installed in sys.modules.

    The caller restores sys.modules (the ``trt_release`` fixture does)."""
    for name in [n for n in sys.modules if n == "tensorrt" or n.startswith("tensorrt.")]:
        del sys.modules[name]
    trt = fake_tensorrt.make_core(plugin_package(version), version)
    sys.modules["tensorrt"] = trt
    return trt, importlib.import_module("tensorrt.plugin")
