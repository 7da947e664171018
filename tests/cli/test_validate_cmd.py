"""crossformer-validate: its FAIL verdict (exit 1) on a wrong graph, and its INT8-without-VNNI warning."""
import json

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from crossformer_deploy.cli import validate_cmd
from crossformer_deploy.export.onnx_export import set_metadata
from crossformer_deploy.export.precision import schemes
from tests.helpers import cli


def test_validate_fails_on_a_perturbed_graph(tiny_onnx, golden_ckpt, tmp_path):
    """One initializer scaled by 1.01 (the classifier's weight: logits move by ~3e-3, 30x the fp32
    bound): every case FAILs, the verdict is FAIL and the exit code 1, with no error on stderr."""
    proto = onnx.load(tiny_onnx)
    w = next(t for t in proto.graph.initializer if t.name == "head.weight")
    w.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(w) * np.float32(1.01), w.name))
    bad = str(tmp_path / "perturbed.onnx")
    onnx.save(proto, bad)
    r = cli("validate", "--model", bad, "--weights", golden_ckpt, "--sizes", "224,64x96", "--batch", "2")
    assert r.returncode == 1, r.stdout + r.stderr
    lines = r.stdout.strip().splitlines()
    assert lines[-1] == "FAIL"
    rows = [ln for ln in lines if ln.rstrip().endswith(("PASS", "FAIL")) and ln.strip() not in ("PASS", "FAIL")]
    assert len(rows) == 2 and all(ln.rstrip().endswith("FAIL") for ln in rows), r.stdout
    assert "Traceback" not in r.stderr and "error" not in r.stderr
    rep = json.loads(cli("validate", "--model", bad, "--weights", golden_ckpt, "--sizes", "224", "--batch", "1",
                         "--json").stdout)
    assert not rep["passed"] and rep["cases"][0]["max_abs"] > 1e-3
    # the same command on the unperturbed graph passes: the FAIL is the perturbation's
    assert cli("validate", "--model", tiny_onnx, "--weights", golden_ckpt, "--sizes", "224,64x96", "--batch",
               "2").returncode == 0


def _as_int8(src: str, dst: str, scheme: str | None) -> str:
    """The fp32 graph labelled as INT8 of ``scheme`` (None: written before schemes were recorded): the
    warning reads only the metadata, and the fp32 graph passes the int8 tolerance."""
    proto = onnx.load(src)
    extra = json.loads(next(p.value for p in proto.metadata_props if p.key == "extra"))
    if scheme is not None:
        extra["int8"] = {"scheme": scheme}
    set_metadata(proto, {"precision": "int8", "extra": json.dumps(extra)})
    onnx.save(proto, dst)
    return dst


@pytest.mark.parametrize("flags,scheme,warns", [
    ({"avx2", "fma"}, "symmetric", True),  # AMD Zen 2/3, Xeons before Cascade Lake
    ({"avx2", "avx512f", "avx512bw"}, "symmetric", True),  # Skylake-SP: AVX-512 but no VNNI
    ({"avx2", "avx512f"}, None, True),  # INT8 graphs from before the scheme was recorded were symmetric
    ({"avx2", "fma"}, "reduced-range", False),
    ({"avx2", "avx512f", "avx512_vnni"}, "symmetric", False),
    ({"avx2", "avx_vnni"}, "symmetric", False),
    ({"avx2", "amx_tile", "amx_int8"}, "symmetric", False),
    ({"asimd", "fp"}, "symmetric", False),  # not x86: no vpmaddubsw path
    (None, "symmetric", False),  # flags unreadable: no guess
])
def test_validate_warns_for_int8_without_vnni(tiny_onnx, golden_ckpt, tmp_path, monkeypatch, capsys, flags, scheme,
                                              warns):
    model = _as_int8(tiny_onnx, str(tmp_path / "int8.onnx"), scheme)
    monkeypatch.setattr(schemes, "cpu_flags", lambda *a: flags)
    rc = validate_cmd.main(["--model", model, "--weights", golden_ckpt, "--sizes", "64", "--batch", "1"])
    err = capsys.readouterr().err
    assert rc == 0, err
    warnings = [ln for ln in err.splitlines() if ln.startswith("warning:")]
    if warns:
        assert len(warnings) == 1 and "VNNI" in warnings[0] and "--int8-scheme reduced-range" in warnings[0], err
    else:
        assert warnings == [], err


def test_no_warning_for_fp32(tiny_onnx, golden_ckpt, monkeypatch, capsys):
    monkeypatch.setattr(schemes, "cpu_flags", lambda *a: {"avx2"})
    assert validate_cmd.main(["--model", tiny_onnx, "--weights", golden_ckpt, "--sizes", "64", "--batch", "1"]) == 0
    assert "warning:" not in capsys.readouterr().err


def test_cpu_flags_reads_cpuinfo(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nmodel name\t: AMD EPYC 7763\nflags\t\t: fpu sse2 avx2 fma\n\n")
    assert schemes.cpu_flags(info) == {"fpu", "sse2", "avx2", "fma"}
    assert not schemes.has_vnni(schemes.cpu_flags(info))
    assert schemes.cpu_flags(tmp_path / "missing") is None
