"""A real SIGTERM / SIGINT sent to a running export: exit 143 / 130, one line, no temp file, no output."""
import glob
import os
import signal
import subprocess
import sys
import time

import pytest

from crossformer_deploy.base.fileio import atomic_path
from crossformer_deploy.base.interrupt import Interrupted, deferred, signals_as_exceptions


def wait_for(pattern: str, proc: subprocess.Popen, timeout: float = 300.0) -> list[str]:
    end = time.monotonic() + timeout
    while time.monotonic() < end and proc.poll() is None:
        found = glob.glob(pattern)
        if found:
            return found
        time.sleep(0.002)
    return []


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_during_export_write(tmp_path, sig):
    """CrossFormer-S: its ~120 MB write keeps the temp file around for a good fraction of a second."""
    out = tmp_path / "s.onnx"
    env = {**os.environ, "CROSSFORMER_DEPLOY_CACHE": str(tmp_path / "cache")}
    proc = subprocess.Popen([sys.executable, "-m", "crossformer_deploy.cli.export_cmd", "--variant", "s",
                             "-o", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        tmps = wait_for(str(tmp_path / ".s.onnx.*.tmp"), proc)
        assert tmps, f"no temp file appeared (exit {proc.poll()})"
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + sig, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and f"interrupted by {sig.name}" in lines[0], err
    assert not [f for f in os.listdir(tmp_path) if f != "cache"], os.listdir(tmp_path)  # no temp, no output


def test_signal_inside_deferred_section_is_raised_after_it(tmp_path):
    """A signal between creating a temp file and recording it waits for the section to finish."""
    done = []
    with pytest.raises(Interrupted) as e, signals_as_exceptions():
        with deferred():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.05)  # the handler has run by now, and only noted the signal
            done.append(True)
    assert done and e.value.exit_code == 143


def test_interrupted_atomic_write_removes_temp(tmp_path):
    with pytest.raises(Interrupted), signals_as_exceptions(), atomic_path(tmp_path / "m.onnx") as tmp:
        open(tmp, "wb").write(b"half")
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(1)
    assert os.listdir(tmp_path) == []
