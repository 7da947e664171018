"""The fused op's contract (plugins/op.py) is the one every form of the op reads: the names and fields the
exporter writes, the ONNX function's attributes, the TensorRT plugin's fields and the builder's check."""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

import numpy as np
import onnx
import pytest

from crossformer_deploy.model.config import Family
from crossformer_deploy.plugins import onnx_function, op, tensorrt_plugin
from crossformer_deploy.plugins.op import OpAttributeError, OpAttrs
from tests.helpers import ROOT


def test_attrs_validate_and_round_trip():
    a = OpAttrs(3, "lda", 7, 4, 0.25, Family.CROSSFORMER_PP)
    assert a.lda and a.node_attrs() == {"num_heads": 3, "mode": "lda", "group_size": 7, "interval": 4, "scale": 0.25,
                                        "family": 1, "plugin_namespace": op.DOMAIN}
    assert OpAttrs.from_node(a.node_attrs()) == a
    assert OpAttrs.from_node({k: v for k, v in a.node_attrs().items() if k != "family"}).family is Family.CROSSFORMER
    for bad, match in ((dict(mode="swin"), "mode must be 'sda' or 'lda'"), (dict(num_heads=0), "must be >= 1"),
                       (dict(family=2), r"family must be 0 \(CrossFormer\) or 1")):
        with pytest.raises(OpAttributeError, match=match):
            OpAttrs.of(**{**dict(num_heads=3, mode="sda", group_size=7, interval=1, scale=1.0), **bad})
    with pytest.raises(OpAttributeError, match="has no interval"):
        OpAttrs.from_node({"num_heads": 3, "mode": "sda", "group_size": 7, "scale": 1.0})


def test_every_form_reads_the_spec(tiny_onnx, tmp_path):
    assert tensorrt_plugin.PLUGIN_ID == op.OP_ID == "crossformer::GroupedAttention"
    assert tensorrt_plugin.FIELDS == op.FIELDS and op.NODE_ATTRS[:-1] == op.FIELDS
    fn = onnx_function.make_function(OpAttrs(1, "sda", 7, 1, 32**-0.5))
    assert (fn.domain, fn.name, list(fn.attribute)) == (op.DOMAIN, op.NAME, list(op.NODE_ATTRS))
    # the exporter's nodes carry exactly the spec's attributes, in its domain
    out = str(tmp_path / "trt.onnx")
    r = subprocess.run(["crossformer-export", "--variant", "tiny", "--target", "tensorrt", "--max-size", "64x64",
                        "-o", out], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    nodes = [n for n in onnx.load(out).graph.node if op.is_op_node(n.domain, n.op_type)]
    assert len(nodes) == 8 and all(sorted(a.name for a in n.attribute) == sorted(op.NODE_ATTRS) for n in nodes)


def test_the_domain_is_written_once():
    """The op's name is a string literal in plugins/op.py only, and no other module defines or compares a domain
    literal of its own: they all read op.DOMAIN."""
    own = re.compile(r'"GroupedAttention"|DOMAIN\s*=\s*"|domain\s*[!=]=\s*"|plugin_namespace"?\s*[:=]\s*"')
    hits = []
    for folder in ("crossformer_deploy", "export", "plugins", "engines"):
        for path in sorted(Path(ROOT, folder).rglob("*.py")):
            hits += [f"{path.relative_to(ROOT)}: {line.strip()}" for line in path.read_text().splitlines()
                     if own.search(line)]
    assert [h.split(":")[0] for h in hits] == ["plugins/op.py", "plugins/op.py"], hits


def test_entry_points_take_the_integer_attribute_or_a_family():
    assert op.as_family(1) is op.as_family(np.array([1], np.int32)) is Family.CROSSFORMER_PP
    assert op.as_family(Family.CROSSFORMER) is Family.CROSSFORMER
    with pytest.raises(OpAttributeError):
        op.as_family(5)
