"""OpenVINORunner(per_shape=N): a dynamic graph compiled as a static model per input shape, the N most recent kept.

Why it exists: OpenVINO's CPU plugin plans memory only for static shapes (Mask R-CNN-S at 800x1216: 5.6 GB resident
dynamic, 1.6 GB per shape; docs/detection.md). These tests pin the mechanism: same numbers as the dynamic compile,
each compile static, the cache bounded and least-recently-used, and a shape the graph cannot take one clear line.
"""
import importlib.util

import numpy as np
import pytest

from crossformer_deploy.base.errors import UsageError

pytestmark = pytest.mark.skipif(importlib.util.find_spec("openvino") is None,
                                reason="openvino is not installed (the openvino extra)")

SHAPES = [(1, 3, 224, 224), (2, 3, 224, 288), (1, 3, 256, 224)]


def _feed(shape, seed=0):
    return {"image": np.random.default_rng(seed).standard_normal(shape, dtype=np.float32)}


def test_per_shape_equals_the_dynamic_compile(tiny_onnx):
    from crossformer_deploy.runtime.openvino_runner import OpenVINORunner

    with OpenVINORunner(tiny_onnx, threads=2) as dyn, OpenVINORunner(tiny_onnx, threads=2, per_shape=2) as per:
        assert per.inputs == dyn.inputs and per.outputs == dyn.outputs  # specs stay the dynamic graph's
        for i, shape in enumerate(SHAPES):
            want, got = dyn.run(_feed(shape, i))["logits"], per.run(_feed(shape, i))["logits"]
            assert got.shape == want.shape and got.shape[0] == shape[0]
            assert np.abs(got - want).max() <= 1e-5 * max(1.0, float(np.abs(want).max()))
            # what it runs is a static compile of exactly this shape
            assert [list(p.get_partial_shape().to_shape()) for p in per.compiled.inputs] == [list(shape)]


def test_cache_is_bounded_and_least_recently_used(tiny_onnx):
    from crossformer_deploy.runtime.openvino_runner import OpenVINORunner

    with OpenVINORunner(tiny_onnx, threads=2, per_shape=2) as r:
        r.run(_feed(SHAPES[0]))
        first = r.compiled
        r.run(_feed(SHAPES[1]))
        r.run(_feed(SHAPES[0]))  # a hit: no new compile, and SHAPES[0] becomes the most recent
        assert r.compiled is first and len(r._by_shape) == 2
        r.run(_feed(SHAPES[2]))  # evicts SHAPES[1], the least recently used
        kept = [dict(k)["image"] for k in r._by_shape]
        assert kept == [SHAPES[0], SHAPES[2]]
        r.run(_feed(SHAPES[0]))
        assert r.compiled is first


def test_a_static_graph_or_per_shape_0_compiles_once(tiny_onnx, exports):
    from crossformer_deploy.runtime.openvino_runner import OpenVINORunner

    with OpenVINORunner(tiny_onnx, threads=2) as r:  # per_shape=0: the dynamic compile, as before
        r.run(_feed(SHAPES[0]))
        assert not r._by_shape and r.compiled.inputs[0].get_partial_shape().is_dynamic
    with OpenVINORunner(exports["static"], threads=2, per_shape=3) as r:  # nothing to specialise
        r.run(_feed((2, 3, 224, 224)))
        assert not r._by_shape


def test_a_shape_the_graph_cannot_take_is_one_line(tiny_onnx):
    from crossformer_deploy.runtime.openvino_runner import OpenVINORunner

    with OpenVINORunner(tiny_onnx, threads=2, per_shape=2) as r, pytest.raises(UsageError) as e:
        r._use_shape({"image": np.zeros((1, 3, 224, 224, 1), np.float32)})  # past run()'s own checks
    assert "cannot run at" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(UsageError, match="per_shape"):
        OpenVINORunner(tiny_onnx, per_shape=-1)


def test_open_runner_compiles_openvino_per_shape(tiny_onnx):
    from crossformer_deploy.engines.open_model import OPENVINO_SHAPES_KEPT, open_runner

    r = open_runner(tiny_onnx, "openvino", threads=2)
    assert r.per_shape == OPENVINO_SHAPES_KEPT > 0


def test_cli_flag(tiny_onnx):
    """--openvino-shapes of infer / validate reaches the runner (0 and 2 classify a photo alike), and a negative
    count is refused by the parser (exit 2)."""
    import json
    import os

    from crossformer_deploy.cli import infer_cmd, validate_cmd
    from crossformer_deploy.engines.open_model import OPENVINO_SHAPES_KEPT, open_runner
    from tests.helpers import ROOT, cli

    for cmd in (infer_cmd, validate_cmd):
        args = ["x.jpg"] if cmd is infer_cmd else []
        assert cmd.parser().parse_args(args).openvino_shapes == OPENVINO_SHAPES_KEPT
        assert cmd.parser().parse_args([*args, "--openvino-shapes", "0"]).openvino_shapes == 0
    assert open_runner(tiny_onnx, "openvino", 2, openvino_shapes=0).per_shape == 0
    photo = os.path.join(ROOT, "samples", "chelsea.jpg")
    tops = []
    for n in ("0", "2"):
        r = cli("infer", photo, "--model", tiny_onnx, "--provider", "openvino", "--openvino-shapes", n, "--json")
        assert r.returncode == 0, r.stderr
        tops.append([(c["class"], c["prob"]) for c in json.loads(r.stdout)[0]["topk"]])
    assert [c for c, _ in tops[0]] == [c for c, _ in tops[1]]
    assert max(abs(a - b) for (_, a), (_, b) in zip(*tops)) <= 1e-5
    r = cli("infer", photo, "--model", tiny_onnx, "--provider", "openvino", "--openvino-shapes", "-1")
    assert r.returncode == 2  # argparse's usage, then its one error line
    assert r.stderr.strip().splitlines()[-1].endswith("argument --openvino-shapes: -1 must be at least 0")
