#!/usr/bin/env python
"""Architecture image + per-stage table (output shape, parameters, multiply-adds) for any registered model.

    python tools/viz.py --model bl_resnet50                      # bl_resnet50.png + table at 224x224
    python tools/viz.py --model bl_resnet50 --kw alpha=4 beta=2  # builder keyword arguments
    python tools/viz.py --model resnet-small-fmconv --size 32    # FBN symbols too
    python tools/viz.py --model bl_resnet50 --depth 2 --no-image # Big / Little / transition rows

The image comes from ``mx.viz.plot_network`` (graphviz). The ``dot`` binary is installed by
``./run.sh setup`` (apt package graphviz); without it the DOT source (.gv) is written instead and the
table is still printed.

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
import ast
import collections
import json
import os
import re
import shutil
import sys


import mxrepro  # noqa: E402  (threads + FB operators before mxnet)
import mxnet as mx  # noqa: E402

from mxrepro import flops  # noqa: E402
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


def analyse(name, size=None, depth=1, **kwargs):
    """Rows of the per-stage table for model ``name`` at ``size`` x ``size`` (default: its input size)."""
    entry = model_info(name)
    size = size or entry.cfg.get("input_size", 224)
    sym, net = build_symbol(name, **kwargs)
    data_shape = (1, 3, size, size)
    records = graph_stats(sym, data_shape)
    label_records(records, net, net.prefix if net is not None else "", depth)
    return sym, stage_rows(records), data_shape


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
# image
# ------------------------------------------------------------------------------------------------
def render(sym, path, fmt="png", data_shape=None, title="network"):
    """Write the architecture image with mx.viz.plot_network; return (written path, message).

    Without the graphviz ``dot`` binary the DOT source is written to ``path + '.gv'`` instead."""
    try:
        dg = mx.viz.plot_network(sym, title=title, save_format=fmt,
                                 shape={"data": data_shape} if data_shape else None,
                                 node_attrs={"shape": "rect", "fixedsize": "false"}, hide_weights=True)
    except Exception:  # shapes that plot_network cannot infer (e.g. an unusual label input)
        dg = mx.viz.plot_network(sym, title=title, save_format=fmt,
                                 node_attrs={"shape": "rect", "fixedsize": "false"}, hide_weights=True)
    os.makedirs(os.path.dirname(os.path.abspath(path)) or ".", exist_ok=True)
    if shutil.which("dot") is None:
        gv = path + ".gv"
        with open(gv, "w") as f:
            f.write(dg.source)
        return gv, ("graphviz `dot` binary not found, so no %s image was drawn; wrote the DOT source to %s. "
                    "Install graphviz (`./run.sh setup` does it via apt-get, or `apt-get install graphviz`) "
                    "and re-run, or render it with `dot -T%s %s -o %s.%s`." % (fmt, gv, fmt, gv, path, fmt))
    dg.format = fmt
    out = dg.render(filename=path, cleanup=True)
    return out, "wrote %s" % out


def parse_kw(items):
    """``['alpha=4', 'se=True']`` -> {'alpha': 4, 'se': True} (Python literals, else strings)."""
    kw = {}
    for it in items or []:
        if "=" not in it:
            raise SystemExit("error: --kw expects KEY=VALUE pairs, got %r" % it)
        k, v = it.split("=", 1)
        try:
            kw[k] = ast.literal_eval(v)
        except (ValueError, SyntaxError):
            kw[k] = v
    return kw


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
    kw = parse_kw(args.kw)
    if args.num_classes is not None:
        kw["num_classes"] = args.num_classes
    sym, rows, data_shape = analyse(args.model, args.size, args.depth, **kw)
    title = "%s%s, input %s" % (args.model, " %s" % kw if kw else "", "x".join(map(str, data_shape[1:])))
    print(format_table(rows, title))
    paper = model_info(args.model).cfg.get("paper") or {}
    if isinstance(paper, dict) and ("params_m" in paper or "gmacs" in paper) and not kw:
        print("paper/reference: params %s M, MACs %s G (%s)" % (paper.get("params_m", "?"), paper.get("gmacs", "?"),
                                                              paper.get("source", "registry")))
    if not args.no_image:
        path, msg = render(sym, args.output or args.model, args.format, data_shape, title=args.model)
        print(msg)
    return 0


if __name__ == "__main__":
    sys.exit(main())
