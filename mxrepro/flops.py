"""Multiply-add and parameter counting by walking an MXNet symbol graph.

Works for any registered model: symbol networks directly and Gluon blocks through
``registry.get_symbol`` (the block is traced on a ``data`` variable), so new models are counted
without per-model formulas. ``infer_shape`` on the graph's internals gives every tensor's shape; each
node whose op has a rule in ``MAC_RULES`` adds its multiply-adds:

* ``Convolution``: output elements x (C_in / groups) x k_h x k_w  (= output size x weight[1:]),
* ``Deconvolution``: input elements x (C_out / groups) x k_h x k_w,
* ``FullyConnected``: batch x C_in x C_out,

bias additions excluded: ResNet-50 v1b = 4.089G. Every other op is tallied as elementwise work
(output elements) and reported separately.

``report['ref_macs']`` also gives the count in the convention of the AFF reference's
``utils/flops.py`` (a gluon-cv summary hook) that produced the paper's "GFLOPs" and aff.md §2.7:
conv multiply-adds + conv bias additions, and a Dense layer as 2*in*out - in + out. It reproduces
aff.md §2.7 to the MAC-million: ResNet-50 4.091G, AFF-ResNet-50 4.326G, iAFF-ResNet-50 4.561G
(pure multiply-adds: 4.089 / 4.323 / 4.556).

Other families can add rules, e.g. ``MAC_RULES['FMConvolution1'] = fn(node, in_shapes, out_shape)``.
"""
import json

import numpy as np

__all__ = ["count_macs", "count_params", "MAC_RULES", "macs_of_model", "FlopReport"]


def _prod(shape):
    return int(np.prod(shape)) if shape else 0


def _has_bias(node):
    return str(node.get("attrs", {}).get("no_bias", "False")).lower() not in ("true", "1")


def _conv(node, ins, out):
    return _prod(out) * _prod(ins[1][1:])


def _ref_extra(node, ins, out, macs):
    """Extra work counted by the reference's utils/flops.py on top of ``macs`` (see module doc)."""
    op = node["op"]
    if op == "Convolution":
        return _prod(out) if _has_bias(node) else 0
    if op == "FullyConnected":
        n_out, n_in = ins[1][0], _prod(ins[1][1:])
        return (2 * n_in * n_out - n_in + (n_out if _has_bias(node) else 0)) * out[0] - macs
    return 0


def _deconv(node, ins, out):
    return _prod(ins[0]) * _prod(ins[1][1:])


def _fc(node, ins, out):
    return _prod(out) * _prod(ins[1][1:])


MAC_RULES = {"Convolution": _conv, "Deconvolution": _deconv, "FullyConnected": _fc}
_FREE = {"null", "Flatten", "Reshape", "reshape", "Cast", "_copy", "identity", "BlockGrad", "stop_gradient",
         "expand_dims", "transpose", "SliceChannel", "slice", "Concat", "concat", "Dropout"}


class FlopReport(dict):
    """``macs`` (conv/fc/deconv multiply-adds), ``ref_macs`` (the AFF reference's convention, see the
    module doc), ``elementwise`` (output elements of all other ops), ``per_op`` {op: macs},
    ``per_layer`` [(name, op, macs)], ``input_shape``."""

    @property
    def gmacs(self):
        return self["macs"] / 1e9

    @property
    def ref_gmacs(self):
        return self["ref_macs"] / 1e9


def _internal_shapes(sym, data_shapes):
    internals = sym.get_internals()
    arg_shapes, out_shapes, aux_shapes = internals.infer_shape_partial(**data_shapes)
    shapes = dict(zip(internals.list_outputs(), out_shapes))
    shapes.update(zip(internals.list_arguments(), arg_shapes))
    shapes.update(zip(internals.list_auxiliary_states(), aux_shapes))
    return shapes


def count_macs(sym, data_shape=(1, 3, 224, 224), data_name="data", **other_shapes):
    """Multiply-adds of ``sym`` for an input of ``data_shape`` (batch included). Returns a FlopReport."""
    shapes = _internal_shapes(sym, dict({data_name: tuple(data_shape)}, **other_shapes))
    graph = json.loads(sym.tojson())
    nodes = graph["nodes"]

    def out_name(nid, idx):
        n = nodes[nid]
        if n["op"] == "null":
            return n["name"]
        for cand in ("%s_output%d" % (n["name"], idx), "%s_output" % n["name"]) if idx else \
                ("%s_output" % n["name"], "%s_output0" % n["name"]):
            if cand in shapes:
                return cand
        return None

    report = FlopReport(macs=0, ref_macs=0, elementwise=0, per_op={}, per_layer=[], input_shape=tuple(data_shape))
    for nid, n in enumerate(nodes):
        op = n["op"]
        if op in _FREE:
            continue
        oname = out_name(nid, 0)
        out = shapes.get(oname) if oname else None
        if not out or 0 in out:
            raise ValueError("could not infer the output shape of %s (%s); pass the right data_shape" % (n["name"], op))
        if op in MAC_RULES:
            ins = [shapes.get(out_name(i[0], i[1])) for i in n["inputs"]]
            m = int(MAC_RULES[op](n, ins, out))
            report["macs"] += m
            report["ref_macs"] += m + int(_ref_extra(n, ins, out, m))
            report["per_op"][op] = report["per_op"].get(op, 0) + m
            report["per_layer"].append((n["name"], op, m))
        else:
            report["elementwise"] += _prod(out)
    return report


def count_params(net):
    """(trainable, all) parameter counts of a Gluon block without initialising it (layers must know
    their input widths, or run a forward first). Trainable = ``grad_req != 'null'`` and ``lr_mult > 0``;
    "all" adds BN running statistics, fixed gammas and frozen parameters."""
    if hasattr(net, "collect_params"):
        tr = st = 0
        for p in net.collect_params().values():
            if p.shape is None or any(int(s) <= 0 for s in p.shape):
                raise ValueError("parameter %s has an unknown shape %s; run a forward pass first" % (p.name, p.shape))
            n = _prod(p.shape)
            if p.grad_req == "null" or p.lr_mult == 0:
                st += n
            else:
                tr += n
        return tr, tr + st
    raise TypeError("count_params expects a Gluon block")


def macs_of_model(name, input_size=None, batch=1, **kwargs):
    """Multiply-adds of registered model ``name`` at its default (or given) square input size."""
    from .models.registry import get_symbol, model_info
    entry = model_info(name)
    size = input_size or entry.cfg.get("input_size", 224)
    sym = get_symbol(name, **kwargs)
    return count_macs(sym, (batch, 3, size, size))
