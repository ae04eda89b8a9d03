"""tools/viz.py: per-stage table (shapes, parameters, multiply-adds) and the architecture image."""
import importlib.util
import os
import re
import shutil
import struct

import numpy as np
import pytest

import mxrepro  # noqa: F401  (threads before mxnet)
import mxnet as mx

from mxrepro.models import get_model

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_spec = importlib.util.spec_from_file_location("viz", os.path.join(ROOT, "tools", "viz.py"))
viz = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(viz)


def _rows(name, size=None, **kw):
    _, rows, _ = viz.analyse(name, size, **kw)
    return {r.stage: r for r in rows}, rows


def test_counter_closed_forms():
    """Conv (grouped, strided), deconv and FC multiply-adds against hand-computed values."""
    x = mx.sym.var("data")
    c = mx.sym.Convolution(x, num_filter=8, kernel=(3, 3), stride=(2, 2), pad=(1, 1), num_group=2,
                           no_bias=True, name="conv1_a")
    d = mx.sym.Deconvolution(c, num_filter=6, kernel=(2, 2), stride=(2, 2), no_bias=True, name="conv2_b")
    f = mx.sym.FullyConnected(d, num_hidden=5, name="fc")
    recs = {r["name"]: r for r in viz.graph_stats(f, (1, 4, 9, 9))}
    assert recs["conv1_a"]["shape"] == (1, 8, 5, 5)
    assert recs["conv1_a"]["macs"] == 8 * 5 * 5 * (4 // 2) * 9 and recs["conv1_a"]["params"] == 8 * 2 * 9
    assert recs["conv2_b"]["macs"] == 8 * 5 * 5 * 6 * 4 and recs["conv2_b"]["shape"] == (1, 6, 10, 10)
    assert recs["fc"]["macs"] == 5 * 600 and recs["fc"]["params"] == 5 * 600 + 5


def test_bl_resnet50_table():
    """Per-stage MACs of bL-ResNet-50 a2 b4 ([CALC], docs/reference/blnet.md §2.2) and the §1.4 shapes."""
    rows, all_rows = _rows("bl_resnet50")
    want_gmacs = {"conv1": 0.118, "stem": 0.395, "layer1": 0.392, "layer2": 0.453, "layer3": 0.687,
                  "layer4": 0.809, "fc": 0.002}
    for st, g in want_gmacs.items():
        assert abs(rows[st].macs / 1e9 - g) < 6e-4, (st, rows[st].macs)
    shapes = {st: rows[st].shape[1:] for st in ("conv1", "stem", "layer1", "layer2", "layer3", "layer4", "fc")}
    assert shapes == {"conv1": (64, 112, 112), "stem": (64, 56, 56), "layer1": (256, 28, 28),
                      "layer2": (512, 14, 14), "layer3": (1024, 14, 14), "layer4": (2048, 7, 7), "fc": (1000,)}
    assert sum(r.params for r in all_rows) == 26694568
    assert round(sum(r.macs for r in all_rows) / 1e9, 2) == 2.86


def test_resnet50_and_shared_counter():
    _, base = _rows("resnet50_v1b")
    assert sum(r.params for r in base) == 25557032
    assert round(sum(r.macs for r in base) / 1e9, 2) == 4.09
    # the per-stage rows add up to the whole-graph total of mxrepro/flops.py
    from mxrepro.flops import macs_of_model
    for name in ("resnet50_v1b", "bl_resnet50"):
        assert sum(r.macs for r in _rows(name)[1]) == macs_of_model(name)["macs"]


def test_table_matches_gluon_params_odd_size_and_depth():
    net = get_model("bl_resnext50_32x4d")
    n = sum(int(np.prod(p.shape)) for p in net.collect_params().values() if p.grad_req != "null")
    rows, all_rows = _rows("bl_resnext50_32x4d", size=225, depth=2)
    assert sum(r.params for r in all_rows) == n
    assert {"layer1.big", "layer1.little", "layer1.transition"} <= set(rows)
    assert rows["layer1.little"].shape[1:] == (128, 57, 57) and rows["layer1.big"].shape[1:] == (256, 29, 29)
    _, at224 = _rows("bl_resnext50_32x4d")
    assert round(sum(r.macs for r in at224) / 1e9, 2) == 3.03  # [CALC] / [OFF] README


def test_fbn_symbol_table():
    """A symbol-API FBN network: named FB head row; FMConvolution MACs = N*H*W*(F+1)*C."""
    rows, all_rows = _rows("resnet-small-fmconv")
    assert round(sum(r.params for r in all_rows) / 1e6, 3) == 2.251  # registry expected_params_m
    bil = rows["bilinear"]
    n, h, w = bil.shape[1:]
    assert bil.macs == n * h * w * (20 + 1) * 256
    assert all_rows[0].shape[1:] == (64, 32, 32)


def test_cli_image_and_missing_dot(tmp_path, capsys, monkeypatch):
    out = str(tmp_path / "ibs")
    if shutil.which("dot"):
        assert viz.main(["--model", "inception-bn-small", "--output", out, "--format", "svg"]) == 0
        assert os.path.getsize(out + ".svg") > 10000
        assert "wrote" in capsys.readouterr().out
    monkeypatch.setattr(viz.shutil, "which", lambda name: None)
    assert viz.main(["--model", "bl_resnet50", "--kw", "alpha=4", "beta=4", "--output", out + "_nodot"]) == 0
    text = capsys.readouterr().out
    assert "graphviz `dot` binary not found" in text and os.path.getsize(out + "_nodot.gv") > 1000
    assert os.path.getsize(out + "_nodot-overview.gv") > 500
    assert "26,236,456" in text  # alpha=4 beta=4 reached the builder; the table is still printed


def test_cli_errors(capsys):
    assert viz.main(["--model", "no_such_net", "--no-image"]) == 2
    assert "unknown model" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="--kw expects KEY=VALUE"):
        viz.main(["--model", "bl_resnet50", "--kw", "alpha", "--no-image"])


# ------------------------------------------------------------------------------------------------
# the overview and the per-stage split of the operator graph
# ------------------------------------------------------------------------------------------------
def _png_size(path):
    with open(path, "rb") as f:
        head = f.read(24)
    assert head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR", path
    return struct.unpack(">II", head[16:24])


def _overview_boxes(dot):
    """{node id: label lines} of the overview's stage boxes, read back from its DOT source."""
    return {m.group(1): m.group(2).split("\\n") for m in re.finditer(r'^  (s\d+) \[fillcolor="[^"]+", label="(.*)"\];$',
                                                                   dot, re.M)}


def test_overview_numbers_equal_table_and_flops():
    from mxrepro import flops
    sym, records, rows, shape = viz.analyse_records("bl_resnet50")
    dot = viz.overview_dot(rows, viz.stage_edges(records), shape, "bl_resnet50")
    boxes = _overview_boxes(dot)
    table = viz.format_table(rows).splitlines()[2:2 + len(rows)]
    assert len(boxes) == len(rows) == len(table) == 9
    for i, (row, line) in enumerate(zip(rows, table)):
        stage, shp, params, macs = boxes["s%d" % i]
        t_stage, t_shape, t_params, t_macs, t_pct = line.split()
        assert stage == t_stage == row.stage
        assert shp == t_shape
        assert params == "%s params" % t_params and int(t_params.replace(",", "")) == row.params
        assert macs.startswith("%s M MACs (%s" % (t_macs, t_pct[:-1]))
    tp, tm = sum(r.params for r in rows), sum(r.macs for r in rows)
    assert tp == flops.count_params(sym, shape)[0] and tm == flops.count_macs(sym, shape)["macs"]
    assert "{:,} params, {:.3f} GMACs".format(tp, tm / 1e9) in dot
    # a chain: input -> conv1 -> stem -> layer1 ... -> fc
    chain = re.findall(r"^  (\w+) -> (\w+);$", dot, re.M)
    assert chain == [("input", "s0")] + [("s%d" % i, "s%d" % (i + 1)) for i in range(8)]


def test_stage_graphs_partition_the_operators():
    sym, records, rows, shape = viz.analyse_records("resnet-small-fmconv")
    graphs = viz.stage_graphs(viz.full_graph(sym, shape), records, rows)
    assert list(graphs) == [r.stage for r in rows]
    owner = {}
    for st, src in graphs.items():
        for m in re.finditer(r'^\t("?)([^\s"\[]+)\1 \[(.*?)\]?$', src, re.M):
            if m.group(2) != "graph" and "dashed" not in m.group(3) and "->" not in m.group(0):
                assert m.group(2) not in owner, (m.group(2), st, owner.get(m.group(2)))
                owner[m.group(2)] = st
    assert {r["name"] for r in records} <= set(owner)
    assert all(owner[r["name"]] == r["stage"] for r in records)
    assert [viz.stage_file_name(i, "@32x32") for i in (0, 10)] == ["01-32x32", "11-32x32"]


@pytest.mark.skipif(shutil.which("dot") is None, reason="graphviz dot not installed")
def test_cli_overview_size_and_split_files(tmp_path, capsys):
    out = str(tmp_path / "bl")
    assert viz.main(["--model", "bl_resnet50", "--output", out, "--full", "stages"]) == 0
    text = capsys.readouterr().out
    w, h = _png_size(out + "-overview.png")
    assert 300 <= h <= 1920 and w <= 768, (w, h)
    assert not os.path.exists(out + ".png")  # --full stages: no single 28,000-pixel image
    _, rows, _ = viz.analyse("bl_resnet50")
    want = [viz.stage_file_name(i, r.stage) + ".png" for i, r in enumerate(rows)]
    assert sorted(os.listdir(out + "-stages")) == sorted(want)
    for f in want:
        assert min(_png_size(os.path.join(out + "-stages", f))) > 50
    assert "wrote 9 stage graphs" in text and "overview" in text
    # the bound holds for many stages too (scaled down, not cut)
    many = [viz.Row("stage%d" % i, (1, 64, 8, 8), 1000 * i, 10 ** 6 * i) for i in range(40)]
    path, _ = viz._write_dot(viz.overview_dot(many, [(None, "stage0")] + [("stage%d" % i, "stage%d" % (i + 1))
                                                                         for i in range(39)], (1, 3, 8, 8), "many"),
                             str(tmp_path / "many"), "png")
    w, h = _png_size(path)
    assert h <= 1920 and w <= 768 and h > 1500
