"""The package as a user installs it: the wheel holds every module, its layers keep their contract, and a normal
(non-editable) install runs every command from outside the checkout, the Triton serving environment included.

An editable install maps export/, plugins/ and engines/ into crossformer_deploy at import time, which hides
packaging mistakes (a subpackage missing from setup.cfg) and import-graph arrows from tools that read the disk;
everything here runs on the wheel instead.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

from tests.helpers import ROOT, SAMPLE

sys.path.insert(0, os.path.join(ROOT, "tools"))
import import_graph
import lint_imports

SCRIPTS = ("crossformer-export", "crossformer-infer", "crossformer-validate", "crossformer-build-engine",
           "crossformer-triton-repo", "crossformer-bench")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    return Path(import_graph.build_wheel(str(tmp_path_factory.mktemp("wheel"))))


@pytest.fixture(scope="module")
def site(wheel, tmp_path_factory) -> Path:
    site = tmp_path_factory.mktemp("site")
    with zipfile.ZipFile(wheel) as z:
        z.extractall(site)
    return site


def test_wheel_holds_every_module(wheel):
    """Every source file of the checkout's package folders is in the wheel, at its installed path."""
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
    want = set()
    for folder, installed in (("crossformer_deploy", "crossformer_deploy"), ("export", "crossformer_deploy/export"),
                              ("plugins", "crossformer_deploy/plugins"), ("engines", "crossformer_deploy/engines")):
        for path in Path(ROOT, folder).rglob("*.py"):
            rel = path.relative_to(Path(ROOT, folder))
            if "__pycache__" not in rel.parts:
                want.add(f"{installed}/{rel.as_posix()}")
    assert want - names == set(), "missing from the wheel (setup.cfg packages?)"
    assert not [n for n in names if n.startswith(("export/", "plugins/", "engines/", "tests/"))]


def test_layers_contract_holds_and_can_fail(site, tmp_path):
    r = lint_imports.lint(str(site))
    assert r.returncode == 0 and "Contracts: 3 kept, 0 broken." in r.stdout, r.stdout + r.stderr
    # one arrow running back up (the base importing the runtime) breaks it
    broken = tmp_path / "broken"
    subprocess.run(["cp", "-r", str(site), str(broken)], check=True)
    with open(broken / "crossformer_deploy" / "base" / "sizes.py", "a") as f:
        f.write("\nfrom crossformer_deploy.runtime import runner  # noqa: E402, F401\n")
    r = lint_imports.lint(str(broken))
    assert r.returncode == 1, r.stdout
    assert "crossformer_deploy.base is not allowed to import crossformer_deploy.runtime" in r.stdout


def test_no_import_cycle_between_layers(site):
    assert import_graph.cycles(import_graph.package_edges(str(site))) == []


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> Path:
    """A fresh virtualenv with the wheel installed normally (not editable). Its dependencies come from this
    environment (system site packages), so nothing is downloaded; the package itself is the wheel's."""
    env = tmp_path_factory.mktemp("venv")
    venv.EnvBuilder(system_site_packages=True, with_pip=False).create(env)
    python = env / "bin" / "python"
    r = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps", str(wheel)],
                       capture_output=True, text=True, timeout=300)
    if r.returncode and "no such option: --python" in r.stderr:  # pip < 22.3: the venv's own pip
        subprocess.run([str(python), "-m", "ensurepip", "-q"], check=True, timeout=300)
        r = subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", str(wheel)], capture_output=True,
                           text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    return env


def run(env: Path, *cmd: str, cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    environ["PATH"] = f"{env / 'bin'}{os.pathsep}{environ.get('PATH', '')}"
    environ["CROSSFORMER_DEPLOY_CACHE"] = str(cwd / "cache")
    return subprocess.run(list(cmd), cwd=cwd, env=environ, capture_output=True, text=True, timeout=timeout)


def test_installed_package_runs_from_outside_the_checkout(installed, tmp_path):
    where = run(installed, "python", "-c", "import crossformer_deploy.engines.triton.serving as m, json; "
                "print(json.dumps(m.__file__))", cwd=tmp_path)
    assert where.returncode == 0 and json.loads(where.stdout).startswith(str(installed)), where.stdout + where.stderr
    for script in SCRIPTS:
        r = run(installed, script, "--help", cwd=tmp_path)
        assert r.returncode == 0 and "examples:" in r.stdout, (script, r.stderr[-2000:])
    # the README's main job, an export, validate and a Triton repository, with the installed commands
    r = run(installed, "crossformer-infer", SAMPLE, cwd=tmp_path)
    assert r.returncode == 0 and "%" in r.stdout, r.stderr[-2000:]
    r = run(installed, "crossformer-export", "--variant", "tiny", "--static", "64x64", "-o", "tiny.onnx", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    r = run(installed, "crossformer-validate", "--model", "tiny.onnx", cwd=tmp_path)
    assert r.returncode == 0 and r.stdout.strip().endswith("PASS"), r.stdout + r.stderr[-2000:]
    r = run(installed, "crossformer-triton-repo", "--model", "tiny.onnx", "--name", "tiny", "--out", "repo",
            "--backend", "python", cwd=tmp_path)
    assert r.returncode == 0 and (tmp_path / "repo" / "tiny" / "1" / "model.py").is_file(), r.stderr[-2000:]


def test_serving_env_takes_the_installed_package(installed, tmp_path):
    """The Triton serving environment gets crossformer_deploy as installed (copied, no pip -e of a checkout):
    the same files from a wheel install as from this editable checkout."""
    code = ("import json; from crossformer_deploy.engines.triton import env; s = env.package_sources(); "
            "print(json.dumps([sorted(s), env._package_digest(s), sorted(set(map(__import__('os').path.dirname, "
            "s.values())))]))")
    r = run(installed, "python", "-c", code, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    names, digest, folders = json.loads(r.stdout)
    assert all(f.startswith(str(installed)) for f in folders), folders
    from crossformer_deploy.engines.triton import env

    here = env.package_sources()
    assert names == sorted(here) and digest == env._package_digest(here)
    assert "engines/triton/serving.py" in names and "base/images.py" in names
