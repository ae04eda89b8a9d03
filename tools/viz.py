#!/usr/bin/env python
"""Architecture images + per-stage table (output shape, parameters, multiply-adds) for any registered model.

    python tools/viz.py --model bl_resnet50                      # table, bl_resnet50-overview.png, bl_resnet50.png
    python tools/viz.py --model bl_resnet50 --full stages        # the operator graph as one file per stage
    python tools/viz.py --model bl_resnet50 --kw alpha=4 beta=2  # builder keyword arguments
    python tools/viz.py --model resnet-small-fmconv --size 32    # FBN symbols too
    python tools/viz.py --model bl_resnet50 --depth 2 --no-image # Big / Little / transition rows

Images (``--output OUT``, default ./NAME; ``--format png|pdf|svg``):
* ``OUT-overview.FMT``, always: one box per stage of the table with its output shape, parameters and
  multiply-adds, and the edges between stages (a DOT of its own, scaled to at most 8 x 20 inches at
  96 dpi, i.e. 768 x 1920 pixels; bL-ResNet-50: 679 x 983);
* the operator graph of ``mx.viz.plot_network`` (bL-ResNet-50: 2609 x 28213 pixels as one PNG),
  ``--full whole`` (default) ``OUT.FMT``, ``--full stages`` one file per stage
  ``OUT-stages/NN-STAGE.FMT`` (a stage's operators, with a dashed stub for each input from another
  stage), ``--full both``, ``--full none``. SVG stays readable at any size.
The ``dot`` binary is installed by ``./run.sh setup`` (apt package graphviz); without it the DOT
sources (.gv) are written instead and the table is still printed.

Counting (per image, batch 1), walking the MXNet symbol graph with ``infer_shape``:
* parameters = learnable arguments (BN running statistics excluded, PyTorch convention);
* multiply-adds: the rules of mxrepro/flops.py (Convolution, Deconvolution, FullyConnected and the FB
  operator FMConvolution1/3). Bias adds, BN, activations, pooling and element-wise ops are not counted
  (the convention of the papers' "FLOPs", docs/reference/blnet.md §0).
Stages: the top-level children of a Gluon model (deeper with ``--depth``; a top-level ``features``
sequential is expanded); for symbols, ``stageN``/``layerN``-style name prefixes where present, else
runs of equal spatial resolution.
"""
import argparse
import collections
import os
import re
import shutil
import sys


import mxrepro  # noqa: E402  (threads + FB operators before mxnet)
import mxnet as mx  # noqa: E402
import symbols  # noqa: E402,F401  (registers the FBN symbol networks)

from mxrepro import flops  # noqa: E402
from mxrepro.cli import parse_kw  # noqa: E402
from mxrepro.models import list_models, model_info  # noqa: E402

Row = collections.namedtuple("Row", "stage shape params macs")


# ------------------------------------------------------------------------------------------------
# graph walking
# ------------------------------------------------------------------------------------------------
def graph_stats(sym, data_shape):
    """Per-node records (name, op, output shape, learnable-parameter count, multiply-adds, indices of the
    records feeding it), in topological order: :func:`mxrepro.flops.graph_records`."""
    return flops.graph_records(sym, data_shape)


# ------------------------------------------------------------------------------------------------
# stage labels
# ------------------------------------------------------------------------------------------------
def gluon_prefixes(net, depth=1):
    """[(label, name prefix)], longest prefix first, for the children down to ``depth`` (a top-level
    ``features`` sequential is expanded). A child owns its own prefix and those of all its descendants
    (blocks built outside their parent's name scope still land in the right stage); an expanded
    parent keeps its prefix for the ops called in its own forward."""
    root = net.prefix
    out = []

    def descendants(block):
        yield block.prefix
        for c in block._children.values():
            yield from descendants(c)

    def walk(block, path, d):
        for key, child in block._children.items():
            label = key if not path else path + "." + key
            expand = d < depth or (d == 1 and key == "features" and len(child._children) > 1)
            if expand and child._children:
                if child.prefix and child.prefix != root:
                    out.append((label, child.prefix))
                walk(child, label, d + 1)
            else:
                out.extend((label, p) for p in descendants(child) if p and p != root)
    walk(net, "", 1)
    return sorted(out, key=lambda t: -len(t[1]))


_NAMED_STAGE = re.compile(r"^((?:stage|layer|block|res|conv|inception|in|unit)\d+[a-z]?)_", re.I)
_NAMED_HEAD = re.compile(r"^(bilinear\d*|fc\d*|classifier|output)(?:_|$)", re.I)


def _res_label(shape):
    if shape and len(shape) == 4:
        return "@%dx%d" % (shape[2], shape[3])
    return "head"


def label_records(records, net=None, net_prefix="", depth=1):
    """Attach a stage label to every record (see the module docstring)."""
    prefixes = gluon_prefixes(net, depth) if net is not None else []
    for r in records:
        name, label = r["name"], None
        for lab, pre in prefixes:
            if pre and name.startswith(pre):
                label = lab
                break
        if label is None and net is not None and net_prefix and name.startswith(net_prefix):
            label = re.sub(r"(_fwd)?$", "", name[len(net_prefix):])  # op called in the top-level forward
        if label is None:
            m = _NAMED_STAGE.match(name) or _NAMED_HEAD.match(name)
            if m:
                label = m.group(1)
                r["named"] = True
            else:
                # e.g. an auto-named '_plus3' closing a named stage: same resolution as its input -> same stage
                src = records[r["inputs"][0]] if r["inputs"] else None
                if src is not None and src.get("named") and _res_label(src["shape"]) == _res_label(r["shape"]):
                    label, r["named"] = src["stage"], True
                else:
                    label = _res_label(r["shape"])
        r["stage"] = label
    return records


def stage_rows(records):
    """Aggregate labelled records into rows (first-appearance order; shape = the stage's last node)."""
    rows = collections.OrderedDict()
    for r in records:
        st = r["stage"]
        if st not in rows:
            rows[st] = dict(shape=None, params=0, macs=0)
        row = rows[st]
        row["params"] += r["params"]
        row["macs"] += r["macs"]
        if r["shape"] is not None:
            row["shape"] = r["shape"]
    return [Row(k, v["shape"], v["params"], v["macs"]) for k, v in rows.items()]


def build_symbol(name, **kwargs):
    """(symbol, gluon block or None) for a registered model."""
    entry = model_info(name)
    try:
        obj = entry.build(**kwargs)
    except TypeError:
        if "num_classes" not in kwargs:
            raise
        kwargs = dict(kwargs)  # gluon-cv style builders spell it ``classes``
        kwargs["classes"] = kwargs.pop("num_classes")
        obj = entry.build(**kwargs)
    if entry.kind == "symbol":
        return obj, None
    return obj(mx.sym.var("data")), obj


def analyse_records(name, size=None, depth=1, **kwargs):
    """(symbol, labelled per-node records, per-stage rows, data shape) of model ``name`` at ``size`` x
    ``size`` (default: its input size)."""
    entry = model_info(name)
    size = size or entry.cfg.get("input_size", 224)
    sym, net = build_symbol(name, **kwargs)
    data_shape = (1, 3, size, size)
    records = graph_stats(sym, data_shape)
    label_records(records, net, net.prefix if net is not None else "", depth)
    return sym, records, stage_rows(records), data_shape


def analyse(name, size=None, depth=1, **kwargs):
    """(symbol, rows of the per-stage table, data shape) for model ``name`` (see analyse_records)."""
    sym, _, rows, data_shape = analyse_records(name, size, depth, **kwargs)
    return sym, rows, data_shape


def format_table(rows, title=""):
    tp = sum(r.params for r in rows)
    tm = sum(r.macs for r in rows)
    lines = [title] if title else []
    lines.append("%-26s %-22s %14s %12s %7s" % ("stage", "output (C, H, W)", "params", "MACs (M)", "MACs %"))
    lines.append("-" * 85)
    for r in rows:
        shp = "x".join(str(s) for s in r.shape[1:]) if r.shape else "?"
        lines.append("%-26s %-22s %14s %12.1f %6.1f%%" % (r.stage[:26], shp, "{:,}".format(r.params),
                                                          r.macs / 1e6, 100.0 * r.macs / max(tm, 1)))
    lines.append("-" * 85)
    lines.append("%-26s %-22s %14s %12.1f   (params %.2f M, MACs %.3f G)"
                 % ("total", "", "{:,}".format(tp), tm / 1e6, tp / 1e6, tm / 1e9))
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------
# images
# ------------------------------------------------------------------------------------------------
OVERVIEW_SIZE_IN = (8, 20)  # graphviz "size": the overview is scaled down to fit 8 x 20 inches
OVERVIEW_DPI = 96            # -> at most 768 x 1920 pixels


def _no_dot_message(what, fmt, gv, path):
    return ("graphviz `dot` binary not found, so no %s %s was drawn; wrote the DOT source to %s. "
            "Install graphviz (`./run.sh setup` does it via apt-get, or `apt-get install graphviz`) "
            "and re-run, or render it with `dot -T%s %s -o %s.%s`." % (fmt, what, gv, fmt, gv, path, fmt))


def _write_dot(source, path, fmt, what="image"):
    """Render DOT ``source`` to ``path.fmt`` (or write ``path.gv`` without ``dot``); (path, message)."""
    import graphviz
    os.makedirs(os.path.dirname(os.path.abspath(path)) or ".", exist_ok=True)
    if shutil.which("dot") is None:
        gv = path + ".gv"
        with open(gv, "w") as f:
            f.write(source)
        return gv, _no_dot_message(what, fmt, gv, path)
    out = graphviz.Source(source, format=fmt).render(filename=path, cleanup=True)
    return out, "wrote %s" % out


def full_graph(sym, data_shape=None, fmt="png", title="network"):
    """The whole graph, every operator a node (``mx.viz.plot_network``): a graphviz Digraph."""
    kw = dict(title=title, save_format=fmt, node_attrs={"shape": "rect", "fixedsize": "false"}, hide_weights=True)
    try:
        return mx.viz.plot_network(sym, shape={"data": data_shape} if data_shape else None, **kw)
    except Exception:  # shapes that plot_network cannot infer (e.g. an unusual label input)
        return mx.viz.plot_network(sym, **kw)


def render(sym, path, fmt="png", data_shape=None, title="network"):
    """Write the whole graph with mx.viz.plot_network; return (written path, message).

    Without the graphviz ``dot`` binary the DOT source is written to ``path + '.gv'`` instead."""
    return _write_dot(full_graph(sym, data_shape, fmt, title).source, path, fmt, "image")


def _dot_str(s):
    return '"%s"' % str(s).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def stage_edges(records):
    """[(from stage, to stage)] in first-appearance order: a record of one stage feeding another's;
    ``None`` as the source stands for the network input."""
    edges = []
    for r in records:
        srcs = [records[i]["stage"] for i in r["inputs"]] or [None]
        for s in srcs:
            if s != r["stage"] and (s, r["stage"]) not in edges:
                edges.append((s, r["stage"]))
    return edges


def overview_label(row, total_macs):
    shp = "x".join(str(s) for s in row.shape[1:]) if row.shape else "?"
    return "%s\n%s\n%s params\n%.1f M MACs (%.1f%%)" % (row.stage, shp, "{:,}".format(row.params), row.macs / 1e6,
                                                         100.0 * row.macs / max(total_macs, 1))


def overview_dot(rows, edges, data_shape, title):
    """DOT source of the overview: one box per stage (output shape, parameters, multiply-adds) and the
    edges between stages; scaled to at most OVERVIEW_SIZE_IN inches at OVERVIEW_DPI."""
    tp, tm = sum(r.params for r in rows), sum(r.macs for r in rows)
    ids = {r.stage: "s%d" % i for i, r in enumerate(rows)}
    head = "%s\n%s params, %.3f GMACs (per image; conv/FC/FB multiply-adds)" % (title, "{:,}".format(tp), tm / 1e9)
    lines = ["digraph overview {",
             '  graph [rankdir=TB, size="%d,%d", dpi=%d, ranksep=0.22, nodesep=0.25, labelloc=t, fontsize=13, '
             'fontname="Helvetica", label=%s];' % (OVERVIEW_SIZE_IN + (OVERVIEW_DPI, _dot_str(head))),
             '  node [shape=box, style="rounded,filled", fontname="Helvetica", fontsize=11, margin="0.2,0.06"];',
             '  edge [arrowsize=0.6];',
             '  input [shape=oval, fillcolor="#8dd3c7", label=%s];' % _dot_str(
                 "input\n" + "x".join(str(s) for s in data_shape[1:]))]
    top = max([r.macs for r in rows] + [1])
    for r in rows:  # the more multiply-adds, the darker the box
        lines.append("  %s [fillcolor=\"#80b1d3%02x\", label=%s];" % (ids[r.stage], 0x18 + int(0xc0 * r.macs / top),
                                                                   _dot_str(overview_label(r, tm))))
    for a, b in edges:
        if b in ids and (a is None or a in ids):
            lines.append("  %s -> %s;" % ("input" if a is None else ids[a], ids[b]))
    lines.append("}")
    return "\n".join(lines) + "\n"


_ID = r'("(?:[^"\\]|\\.)*"|[^\s\[";]+)'
_NODE_LINE = re.compile(r"^\s*" + _ID + r"\s*(\[.*\])?\s*$", re.S)  # labels may hold newlines
_EDGE_LINE = re.compile(r"^\s*" + _ID + r"\s*->\s*" + _ID + r"\s*(\[.*\])?\s*$", re.S)


def _unquote(t):
    return t[1:-1].replace('\\"', '"') if t.startswith('"') else t


def stage_graphs(dg, records, rows):
    """{stage: DOT source} of the whole graph ``dg`` cut per stage: the stage's operators and edges,
    and a grey stub for every node of another stage that feeds it."""
    stage_of = {r["name"]: r["stage"] for r in records}
    nodes, edges = collections.OrderedDict(), []
    for line in dg.body:
        m = _EDGE_LINE.match(line)
        if m:
            edges.append((_unquote(m.group(1)), _unquote(m.group(2)), line))  # consumer -> input (dir=back)
            continue
        m = _NODE_LINE.match(line)
        if m:
            nodes[_unquote(m.group(1))] = line
    for a, b, _ in edges:  # inputs that are no operator (data, labels) belong to their first consumer's stage
        if b not in stage_of and a in stage_of:
            stage_of[b] = stage_of[a]
    out = collections.OrderedDict()
    tm = sum(r.macs for r in rows)
    for i, row in enumerate(rows):
        st = row.stage
        body = [line for n, line in nodes.items() if stage_of.get(n) == st]
        stubs = collections.OrderedDict()
        for a, b, line in edges:
            if stage_of.get(a) != st:
                continue
            body.append(line)
            if stage_of.get(b) != st and b not in stubs:
                stubs[b] = '\t%s [label=%s, shape=rect, style="dashed", color=grey50, fontcolor=grey40]' % (
                    _dot_str(b), _dot_str("from %s\n%s" % (stage_of.get(b, "?"), b)))
        label = "stage %d/%d: %s" % (i + 1, len(rows), overview_label(row, tm).replace("\n", ", "))
        out[st] = "digraph %s {\n\tgraph [labelloc=t, label=%s]\n%s\n}\n" % (
            _dot_str(st), _dot_str(label), "\n".join(list(stubs.values()) + body))
    return out


def stage_file_name(i, stage):
    return "%02d-%s" % (i + 1, re.sub(r"[^A-Za-z0-9_.-]+", "_", stage).strip("_") or "stage")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__[__doc__.find("\n\n"):])
    p.add_argument("--model", help="registered model name (see --list)")
    p.add_argument("--list", action="store_true", help="list the registered models and exit")
    p.add_argument("--size", type=int, default=None, help="input height=width (default: the model's input size)")
    p.add_argument("--num-classes", type=int, default=None, help="override the classifier width")
    p.add_argument("--kw", nargs="*", default=[], metavar="KEY=VALUE", help="extra builder arguments, e.g. alpha=4 beta=2")
    p.add_argument("--depth", type=int, default=1, help="Gluon: how deep to split stages (1 = top-level children)")
    p.add_argument("--output", default=None, help="image path without extension (default: ./NAME)")
    p.add_argument("--format", default="png", choices=("png", "pdf", "svg"), help="image format (default png)")
    p.add_argument("--full", default="whole", choices=("whole", "stages", "both", "none"),
                   help="the every-operator graph: one file OUTPUT.FMT (whole, the default), one file per stage "
                        "in OUTPUT-stages/ (stages), both, or none; OUTPUT-overview.FMT is always written")
    p.add_argument("--no-image", action="store_true", help="print the table only")
    args = p.parse_args(argv)
    if args.list:
        for n in list_models():
            e = model_info(n)
            print("%-32s %-8s %-6s input %s" % (n, e.family, e.kind, e.cfg.get("input_size", "?")))
        return 0
    if not args.model:
        p.error("--model NAME is required (see --list)")
    try:
        model_info(args.model)
    except KeyError as e:
        print("error: %s" % e.args[0], file=sys.stderr)
        return 2
    try:
        kw = parse_kw(args.kw)
    except ValueError as e:
        raise SystemExit("error: %s" % e)
    if args.num_classes is not None:
        kw["num_classes"] = args.num_classes
    sym, records, rows, data_shape = analyse_records(args.model, args.size, args.depth, **kw)
    title = "%s%s, input %s" % (args.model, " %s" % kw if kw else "", "x".join(map(str, data_shape[1:])))
    print(format_table(rows, title))
    paper = model_info(args.model).cfg.get("paper") or {}
    if isinstance(paper, dict) and ("params_m" in paper or "gmacs" in paper) and not kw:
        print("paper/reference: params %s M, MACs %s G (%s)" % (paper.get("params_m", "?"), paper.get("gmacs", "?"),
                                                              paper.get("source", "registry")))
    if args.no_image:
        return 0
    base = args.output or args.model
    _, msg = _write_dot(overview_dot(rows, stage_edges(records), data_shape, title), base + "-overview", args.format,
                        "overview")
    print(msg)
    if args.full in ("whole", "both"):
        _, msg = render(sym, base, args.format, data_shape, title=args.model)
        print(msg)
    if args.full in ("stages", "both"):
        folder = base + "-stages"
        graphs = stage_graphs(full_graph(sym, data_shape, args.format, args.model), records, rows)
        written = []
        for i, (st, src) in enumerate(graphs.items()):
            path, msg = _write_dot(src, os.path.join(folder, stage_file_name(i, st)), args.format, "stage graph")
            written.append(path)
        if shutil.which("dot") is None:
            print(msg.replace(written[-1], os.path.join(folder, "*.gv")) if written else msg)
        else:
            print("wrote %d stage graphs to %s (%s ... %s)" % (len(written), folder, os.path.basename(written[0]),
                                                               os.path.basename(written[-1])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
