"""The TensorRT plugin driven through NVIDIA's real ``tensorrt.plugin`` package (several releases) on a fake of
TensorRT's compiled core, with plugin fields built exactly as TensorRT's ONNX parser builds them from the
GroupedAttention nodes our exporter writes for the tiny CrossFormer and the tiny CrossFormer++ (``pp-tiny``).

What this proves without TensorRT's libraries: registration, creator fields, create_plugin on parser-encoded
fields, output dtype and shape, the offered type/format combinations, tactics, the launch grid, block and
shared memory, the extra arguments (checked against the model's own ``group_layout``, of the node's family, at
concrete sizes), and that the PTX entry declares exactly the parameters TensorRT passes (and assembles with
ptxas). What it cannot prove: TensorRT's own C++ side (engine build, enqueue); see docs/fused-op.md.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

import numpy as np
import onnx
import pytest
import torch

from crossformer_deploy.model.config import Family
from crossformer_deploy.model.grouping import group_index, group_layout
from crossformer_deploy.plugins.op import OpAttrs
from tests.helpers import ROOT
from tests.plugins import fake_tensorrt as ft
from tests.plugins import tensorrt_bindings
from tests.plugins.fake_tensorrt_builder import build_layer, find_creator, parser_fields

triton = pytest.importorskip("triton", reason="the AOT implementation compiles the Triton kernel")
# NVIDIA's docstrings hold "\s" escapes; our code's warnings still show
pytestmark = pytest.mark.filterwarnings("ignore:invalid escape sequence:DeprecationWarning")


@pytest.fixture
def trt_release(request, monkeypatch):
    """(fake tensorrt, real tensorrt.plugin of release ``request.param``, our plugin module), isolated."""
    saved = {n: m for n, m in sys.modules.items() if n == "tensorrt" or n.startswith("tensorrt.")}
    try:
        trt, trtp = tensorrt_bindings.load(request.param)
    except RuntimeError as e:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"could not fetch tensorrt-cu12-bindings {request.param}: {e}")
    from triton.backends.compiler import GPUTarget

    from crossformer_deploy.plugins import tensorrt_plugin

    monkeypatch.setattr(tensorrt_plugin, "aot_target", GPUTarget("cuda", 90, 32))  # no GPU here: name one
    yield trt, trtp, tensorrt_plugin
    for name in [n for n in sys.modules if n == "tensorrt" or n.startswith("tensorrt.")]:
        del sys.modules[name]
    sys.modules.update(saved)


def _exported_nodes(variant: str) -> list[tuple[str, onnx.NodeProto, list[int], dict]]:
    """(precision, node, dtypes of its two inputs, attributes) of every GroupedAttention node of ``variant``
    exported for --target tensorrt, fp32 and fp16, as crossformer-export builds it."""
    from crossformer_deploy.base.model_info import ModelInfo
    from crossformer_deploy.export.onnx_export import to_onnx
    from crossformer_deploy.export.pipeline import run_pipeline
    from crossformer_deploy.export.precision.fp16 import to_fp16
    from crossformer_deploy.model.factory import build_model

    model = build_model(variant, None, "classifier", 10, seed=0)
    info = ModelInfo(variant=variant, mode="classifier", num_classes=10, weights="random-init seed=0")
    plain = run_pipeline(to_onnx(model, info), "plain")
    out = []
    for precision, proto in (("fp32", plain), ("fp16", to_fp16(plain))):
        trt_graph = run_pipeline(proto, "tensorrt")
        onnx.checker.check_model(trt_graph, full_check=True)  # what crossformer-export runs before writing
        graph = onnx.shape_inference.infer_shapes(trt_graph)
        dtypes = {v.name: v.type.tensor_type.elem_type for v in [*graph.graph.value_info, *graph.graph.input]}
        dtypes.update({t.name: t.data_type for t in graph.graph.initializer})
        for node in graph.graph.node:
            if node.op_type == "GroupedAttention":
                attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
                assert dtypes.get(node.output[0]) == dtypes.get(node.input[0]), "the op's output has qkv's dtype"
                out.append((precision, node, [dtypes.get(i) for i in node.input], attrs))
    return out


@pytest.fixture(scope="module")
def trt_nodes():
    """The GroupedAttention nodes of the tiny model exported for --target tensorrt, fp32 and fp16, keyed by
    (precision, mode, interval), with the dtypes of their two inputs."""
    out = {}
    for precision, node, types, attrs in _exported_nodes("tiny"):
        assert attrs["family"] == 0, "a CrossFormer node must say family 0"
        out.setdefault((precision, attrs["mode"].decode(), attrs["interval"]), (node, types, attrs))
    return out


@pytest.fixture(scope="module")
def trt_nodes_pp():
    """The same for pp-tiny (CrossFormer++: G 4, 4, 14, 7, I 4, 2, 1, 1), keyed by (precision, mode, group_size,
    interval): stages 3 and 4 share I = 1 and differ in G."""
    out = {}
    for precision, node, types, attrs in _exported_nodes("pp-tiny"):
        assert attrs["family"] == 1, "a CrossFormer++ node must say family 1"
        out.setdefault((precision, attrs["mode"].decode(), attrs["group_size"], attrs["interval"]),
                       (node, types, attrs))
    return out


# The plugin's ABI (docs/fused-op.md): the creator's fields in declaration order, and the PTX entry TensorRT
# launches: qkv, table, the 9 int32 extra args H, W, gh, gw, nh, nw, s, TH, TW, out (12 parameters).
FIELDS = ["num_heads", "mode", "group_size", "interval", "scale", "family"]  # the real creator's, in order


def test_the_declared_fields_are_the_creators():
    """engines/tensorrt/build.py checks nodes against op.FIELDS: it must be what the creator declares."""
    from crossformer_deploy.plugins import tensorrt_plugin

    assert list(tensorrt_plugin.FIELDS) == FIELDS
ENTRY_KINDS = ["ptr", "ptr"] + ["i32"] * 9 + ["ptr"]

TRT_DTYPE = {onnx.TensorProto.FLOAT: ft.DataType.FLOAT, onnx.TensorProto.FLOAT16: ft.DataType.HALF}

# (mode, interval, H, W, what it exercises): every layout kind of the op
CASES = [
    ("sda", 8, 14, 14, "SDA, 2x2 groups, no padding"),
    ("sda", 8, 13, 19, "SDA padded right and bottom"),
    ("lda", 4, 13, 19, "LDA padded, rectangular 4x5 groups"),
    ("lda", 8, 32, 40, "LDA, 4x5 groups of stride 8"),
    ("lda", 4, 7, 9, "LDA on a map with min(H, W) <= G: SDA 7x7 windows, padded"),
    ("sda", 4, 4, 6, "SDA on a map smaller than G: one 4x4 window size"),
]

# CrossFormer++ (family 1), on pp-tiny's nodes: (mode, G, interval, H, W, kind, what). kind: "lda" / "sda" padded
# G x G groups, "all_padding" (LDA with groups of padding only), "small" (the small-map rule: one H x W group).
PP_CASES = [
    ("lda", 4, 2, 13, 19, "lda", "LDA G=4 I=2 on an odd map: padded to 16x24, 4x4 groups of stride 2"),
    ("lda", 4, 4, 17, 9, "all_padding", "LDA G=4 I=4: 17x9 padded to 32x16, group rows 5-7 all padding"),
    ("lda", 14, 1, 6, 10, "small", "LDA block, min(H, W) <= G=14: one 6x10 group, stride 1"),
    ("sda", 4, 4, 13, 19, "sda", "SDA G=4 padded right and bottom: 4x5 groups of 4x4"),
    ("sda", 7, 1, 5, 7, "small", "SDA block, min(H, W) <= G=7: one 5x7 group (CrossFormer: two 5x5 windows)"),
]


def _ptx_params(ptx: str, name: str) -> list[str]:
    m = re.search(rf"\.entry\s+{re.escape(name)}\s*\(([^)]*)\)", ptx)
    assert m, f"no .entry {name}"
    return [p.strip() for p in m.group(1).split(",") if p.strip()]


def _ptx_kinds(kernel) -> list[str]:
    params = _ptx_params(kernel.ptx, kernel.name)
    return ["ptr" if ".u64" in p else "i32" if ".u32" in p or ".s32" in p else p for p in params]


@pytest.mark.parametrize("trt_release", tensorrt_bindings.AOT_RELEASES, indirect=True)
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
@pytest.mark.parametrize("mode,interval,H,W,what", CASES)
def test_plugin_through_real_tensorrt_plugin(trt_release, trt_nodes, precision, mode, interval, H, W, what):
    node, types, attrs = trt_nodes[(precision, mode, interval)]
    lay = group_layout(H, W, attrs["group_size"], interval, mode == "lda")  # the model's layout: the oracle
    assert _replay(trt_release, node, types, attrs, H, W, lay, what).family.attr == 0


@pytest.mark.parametrize("trt_release", tensorrt_bindings.AOT_RELEASES, indirect=True)
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
@pytest.mark.parametrize("mode,G,interval,H,W,kind,what", PP_CASES)
def test_plugin_through_real_tensorrt_plugin_pp(trt_release, trt_nodes_pp, precision, mode, G, interval, H, W, kind,
                                                what):
    """CrossFormer++ nodes (family 1) of pp-tiny: the extra args and grid follow CrossFormer++'s layout rule."""
    node, types, attrs = trt_nodes_pp[(precision, mode, G, interval)]
    # the model's CrossFormer++ layout: the oracle
    lay = group_layout(H, W, G, interval, mode == "lda", Family.CROSSFORMER_PP)
    _assert_case_is(kind, lay, G, interval, mode == "lda")
    got = _replay(trt_release, node, types, attrs, H, W, lay, what)
    assert got.family.attr == 1, "the family field did not reach the plugin as 1"


def _assert_case_is(kind: str, lay, G: int, interval: int, lda: bool) -> None:
    """The case exercises what it says, under CrossFormer++'s rule, and (but for plain SDA) a plugin that
    ignored ``family`` would compute another layout."""
    _, valid = group_index(lay)
    real = valid.any(1)  # per group: holds at least one real token
    Hp, Wp = lay.nh * lay.gh, lay.nw * lay.gw  # the padded map
    if kind == "small":
        assert (lay.gh, lay.gw, lay.nh, lay.nw, lay.s) == (lay.H, lay.W, 1, 1, 1), "one H x W group"
    else:
        assert (lay.gh, lay.gw, lay.s) == (G, G, interval if lda else 1), "G x G groups of stride I (LDA) or 1"
        assert (Hp, Wp) != (lay.H, lay.W), "the map is padded"
        assert Hp % (G * lay.s) == 0 and Wp % (G * lay.s) == 0
    assert (kind == "all_padding") == (not bool(real.all())), "all-padding groups exactly where announced"
    if kind != "sda":
        other = group_layout(lay.H, lay.W, G, interval, lda, Family.CROSSFORMER)
        assert lay != other, "the case must tell the families apart"


def _replay(trt_release, node, types, attrs, H: int, W: int, lay, what: str):
    """Replay the parser + builder on ``node``, check the layer against the oracle layout ``lay`` at B=3, H, W;
    return the attributes as the plugin received them."""
    trt, _trtp, tensorrt_plugin = trt_release
    tensorrt_plugin.register()
    tensorrt_plugin.register()  # idempotent
    qkv_type, table_type = types
    mode, heads = attrs["mode"].decode(), attrs["num_heads"]
    C = heads * 32
    TH, TW = 2 * lay.gh + 1, 2 * lay.gw + 3  # a profile's table is sized for its largest group: bigger is fine

    creator = find_creator(trt, node)
    assert creator is not None, "the parser would not find crossformer::GroupedAttention"
    assert [f.name for f in creator.field_names] == FIELDS
    fields = parser_fields(creator, node)
    assert fields[1].data.tobytes() == mode.encode() + b"\0"  # what the parser really sends
    qkv_dt, table_dt = TRT_DTYPE[qkv_type], TRT_DTYPE[table_type]
    layer = build_layer(creator, fields, [(("B", "H", "W", 3 * C), qkv_dt), ((heads, TH, TW), table_dt)])

    assert type(layer.plugin).__name__ == "_TemplateAOTPlugin"
    assert layer.output_types == [qkv_dt]
    B = 3
    env = {"B": B, "H": H, "W": W}
    assert [e.evaluate(env) for e in layer.output_shapes[0]] == [B, H, W, C]
    want_combos = {(ft.DataType.FLOAT,) * 3, (ft.DataType.HALF, ft.DataType.FLOAT, ft.DataType.HALF),
                   (ft.DataType.HALF,) * 3}
    assert {types for types, _ in layer.combinations} == want_combos
    assert all(f == ft.TensorFormat.LINEAR for _, fmts in layer.combinations for f in fmts)
    assert len(layer.chosen) == 1, f"the network's types {qkv_dt, table_dt} are not offered once"
    assert sorted(t for _, t in layer.kernels) == sorted(tensorrt_plugin.TACTIC_BLOCKS)

    n_tok = lay.gh * lay.gw
    for (_, tactic), kernel in layer.kernels.items():
        block_m = tensorrt_plugin.TACTIC_BLOCKS[tactic][0]
        launch, extra = kernel.evaluate(env)
        assert (launch["grid_x"], launch["grid_y"], launch["grid_z"]) == (B * lay.nh * lay.nw, heads,
                                                                          -(-n_tok // block_m)), what
        assert launch["block_x"] % 32 == 0 and (launch["block_y"], launch["block_z"]) == (1, 1)
        assert 0 < launch["shared_mem"] <= 48 * 1024
        assert extra == [H, W, lay.gh, lay.gw, lay.nh, lay.nw, lay.s, TH, TW], what
        assert all(e.dtype == ft.PluginArgDataType.INT32 for e in kernel.extra)
        # TensorRT launches with: input pointers, the extra args, output pointers. Nothing else.
        assert _ptx_kinds(kernel) == ENTRY_KINDS
    family = next(f for f in fields if f.name == "family")
    assert family.data.dtype == np.int32 and family.data.tolist() == [attrs["family"]]  # the parser's int32[1]
    return OpAttrs.of(**layer.plugin.attrs)


@pytest.mark.parametrize("trt_release", tensorrt_bindings.AOT_RELEASES, indirect=True)
def test_parser_fields_reach_the_plugin_as_plain_values(trt_release, trt_nodes, trt_nodes_pp):
    """'lda\\0' must not become an SDA layout, int32[1] / float32[1] must not trip int(array) on NumPy >= 2.4,
    and ``family`` (int32[1]) must arrive as 0 from a CrossFormer node and 1 from a CrossFormer++ node."""
    trt, _trtp, tensorrt_plugin = trt_release
    tensorrt_plugin.register()
    for (node, _, attrs), family in ((trt_nodes[("fp32", "lda", 4)], 0), (trt_nodes_pp[("fp32", "lda", 4, 2)], 1)):
        creator = find_creator(trt, node)
        plugin = creator.create_plugin(creator.name, creator.plugin_namespace,
                                       ft.PluginFieldCollection(parser_fields(creator, node)), ft.TensorRTPhase.BUILD,
                                       ft.QuickPluginCreationRequest.UNKNOWN)
        assert plugin.attrs["family"].dtype == np.int32 and plugin.attrs["family"].tolist() == [family]
        a = OpAttrs.of(**plugin.attrs)
        scale = float(np.float32(attrs["scale"]))  # the parser sends float32
        assert a == OpAttrs(attrs["num_heads"], "lda", attrs["group_size"], attrs["interval"], scale,
                            Family.from_attr(family))


@pytest.mark.parametrize("trt_release", ["10.6.0"], indirect=True)
def test_register_names_the_tensorrt_it_needs(trt_release):
    _trt, trtp, tensorrt_plugin = trt_release
    assert not hasattr(trtp, "aot_impl")
    with pytest.raises(RuntimeError, match=r"needs TensorRT >= 10\.9 .*this is TensorRT 10\.6\.0"):
        tensorrt_plugin.register()


def test_attrs_normalise_every_encoding():
    Attrs = OpAttrs  # the op's spec (plugins/op.py), as the plugin reads its fields
    want = Attrs(3, "lda", 7, 4, 0.25, Family.CROSSFORMER_PP)
    assert Attrs.of(np.array([3], np.int32), "lda\x00", np.array([7], np.int32), np.array([4], np.int32),
                    np.array([0.25], np.float32), np.array([1], np.int32)) == want
    assert Attrs.of(3, b"lda\x00", 7, 4, 0.25, 1) == want
    assert Attrs.of(np.int64(3), np.frombuffer(b"lda\x00", np.int8), 7, 4, np.float64(0.25), np.int64(1)) == want
    # a node without the attribute (exports before CrossFormer++)
    assert Attrs.of(3, "lda", 7, 4, 0.25).family is Family.CROSSFORMER
    with pytest.raises(ValueError, match="mode must be 'sda' or 'lda'"):
        Attrs.of(3, "xda\x00", 7, 4, 0.25)
    with pytest.raises(ValueError, match=r"family must be 0 .* or 1"):
        Attrs.of(3, "lda", 7, 4, 0.25, np.array([2], np.int32))
    with pytest.raises(ValueError, match="must hold one value"):
        Attrs.of(np.array([3, 4], np.int32), "sda", 7, 4, 0.25)


# -- the PTX TensorRT gets ---------------------------------------------------------------------------------


def _compiled(qkv=torch.float16, table=torch.float32, arch=90):
    from triton.backends.compiler import GPUTarget

    from crossformer_deploy.plugins.triton_kernel import compile_aot

    return compile_aot(qkv, table, num_heads=3, head_dim=32, scale=32**-0.5, target=GPUTarget("cuda", arch, 32))


def test_trim_to_abi_drops_only_unreferenced_hidden_params():
    from crossformer_deploy.plugins.ptx import PTXABIError, entry_params, trim_to_abi
    from crossformer_deploy.plugins.triton_kernel import SCALAR_ARGS

    assert SCALAR_ARGS == ("H", "W", "gh", "gw", "nh", "nw", "s", "TH", "TW")
    k = _compiled()
    name, ptx = k.metadata.name, k.asm["ptx"]
    n = 2 + len(SCALAR_ARGS) + 1
    assert n == len(ENTRY_KINDS) == 12
    before = entry_params(ptx, name)
    assert len(before) >= n  # Triton >= 3.3 declares its scratch pointers after ours
    trimmed = trim_to_abi(ptx, name, n)
    assert [p.name for p in entry_params(trimmed, name)] == [p.name for p in before[:n]]
    assert trim_to_abi(trimmed, name, n) == trimmed
    # a kernel body that reads a hidden parameter cannot run under TensorRT's launch: refused, not trimmed
    if len(before) > n:
        hidden = before[n].name
        reads = ptx.replace("ret;", f"ld.param.u64 %rd999, [{hidden}];\n\tret;", 1)
        with pytest.raises(PTXABIError, match="reads its hidden parameter"):
            trim_to_abi(reads, name, n)
    with pytest.raises(PTXABIError, match="TensorRT passes 20"):
        trim_to_abi(ptx, name, 20)


@pytest.mark.parametrize("arch", [80, 90])
def test_trimmed_ptx_assembles_for_the_gpu(arch, tmp_path):
    """ptxas accepts the entry TensorRT will load: the trimmed parameter list and the PTX ISA a CUDA 12
    driver reads (Triton's default ISA is newer than CUDA 12 drivers know)."""
    from crossformer_deploy.plugins.ptx import trim_to_abi
    from crossformer_deploy.plugins.triton_kernel import SCALAR_ARGS, aot_ptx_version

    ptxas = shutil.which("ptxas")
    if ptxas is None:
        pytest.skip("ptxas (CUDA toolkit) is not on PATH")
    k = _compiled(arch=arch)
    ptx = trim_to_abi(k.asm["ptx"], k.metadata.name, 2 + len(SCALAR_ARGS) + 1)
    v = aot_ptx_version(arch)
    assert re.search(rf"^\.version {v // 10}\.{v % 10}$", ptx, re.M)
    src = tmp_path / "k.ptx"
    src.write_text(ptx)
    target = "sm_90a" if arch == 90 else f"sm_{arch}"
    r = subprocess.run([ptxas, f"-arch={target}", str(src), "-o", str(tmp_path / "k.cubin")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr


def test_ast_source_keyword_follows_the_triton_release(monkeypatch):
    """Triton 3.3 renamed ASTSource's constants= to constexprs=; the same dict goes to whichever exists."""
    from crossformer_deploy.plugins import triton_kernel as tk

    seen = {}

    class Old:
        def __init__(self, fn, signature, constants=None, attrs=None):
            seen["old"] = constants

    class New:
        def __init__(self, fn, signature, constexprs=None, attrs=None):
            seen["new"] = constexprs

    for cls in (Old, New):
        monkeypatch.setattr(triton.compiler, "ASTSource", cls)
        tk._ast_source(None, {"x": "*fp32"}, {"BLOCK": 16})
    assert seen == {"old": {"BLOCK": 16}, "new": {"BLOCK": 16}}

    class Neither:
        def __init__(self, fn, signature):
            pass

    monkeypatch.setattr(triton.compiler, "ASTSource", Neither)
    with pytest.raises(RuntimeError, match=r"triton>=3\.3"):
        tk._ast_source(None, {}, {})


def test_version_pins_say_what_is_needed():
    """setup.cfg asks for the TensorRT that has aot_impl, the Triton whose ASTSource/PTX we test, and the
    Polygraphy that finds pip-installed CUDA; the plugin's message names the same TensorRT."""
    import configparser

    from crossformer_deploy.plugins.tensorrt_plugin import MIN_TENSORRT

    cfg = configparser.ConfigParser()
    cfg.read(os.path.join(ROOT, "setup.cfg"))
    extra = cfg["options.extras_require"]["tensorrt"].split()
    assert f"tensorrt>={MIN_TENSORRT}" in extra and "triton>=3.3" in extra
    assert "polygraphy>=0.53" in cfg["options"]["install_requires"].split()
