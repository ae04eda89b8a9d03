"""The project's one parameter and multiply-add counter, by walking an MXNet symbol graph.

Works for any registered model: symbol networks directly and Gluon blocks traced on a ``data``
variable, so new models are counted without per-model formulas. ``infer_shape`` on the graph's
internals gives every tensor's shape; each node whose op has a rule in ``MAC_RULES`` adds its
multiply-adds (per image x batch):

* ``Convolution``: output elements x (C_in / groups) x k_h x k_w  (= output size x weight[1:]),
* ``Deconvolution``: input elements x (C_out / groups) x k_h x k_w,
* ``FullyConnected``: batch x C_in x C_out,
* ``batch_dot``: output elements x the contracted length (the B-CNN baseline's bilinear pooling),
* ``FMConvolution1`` / ``FMConvolution3`` (the FB layer, docs/reference/fbn.md §1.2): output elements x (F + 1) x K with
  K = (C_in / groups) x k_h x k_w: F·K for the factor projections ``v_jf . x`` plus K for the diagonal
  correction ``sum_k c_jk x_k^2`` (the squares of the projections and of ``x`` are element-wise work,
  like bias additions).

Bias additions excluded: ResNet-50 v1b = 4.089G. Every other op is tallied as element-wise work
(output elements) and reported separately.

``report['ref_macs']`` also gives the count in the convention of the AFF reference's
``utils/flops.py`` (a gluon-cv summary hook) that produced the paper's "GFLOPs" and docs/reference/aff.md §2.7:
conv multiply-adds + conv bias additions, and a Dense layer as 2*in*out - in + out. It reproduces
docs/reference/aff.md §2.7 to the MAC-million: ResNet-50 4.091G, AFF-ResNet-50 4.326G, iAFF-ResNet-50 4.562G
(pure multiply-adds: 4.089 / 4.323 / 4.556).

Parameters: :func:`count_params` gives (trainable, all) for a Gluon block (trainable = ``grad_req !=
'null'`` and ``lr_mult > 0``; all adds BN running statistics and frozen parameters) or for a Symbol
and an input shape (learnable arguments; all adds the auxiliary states). :func:`graph_records` gives
the per-node view (output shape, parameters first used there, multiply-adds) that tools/viz.py groups
into stages and tools/model_table.py sums.
"""
import ast
import json
import re

import numpy as np

__all__ = ["count_macs", "count_params", "MAC_RULES", "macs_of_model", "FlopReport", "graph_records", "fb_macs"]


def _prod(shape):
    return int(np.prod(shape)) if shape else 0


def _attr(node, key, default=None):
    attrs = node.get("attrs") or node.get("attr") or node.get("param") or {}
    return attrs.get(key, default)


def _tuple(s, default=(1, 1)):
    if s is None:
        return default
    v = ast.literal_eval(s) if isinstance(s, str) else s
    return tuple(v) if isinstance(v, (tuple, list)) else (v,)


def _has_bias(node):
    return str(_attr(node, "no_bias", "False")).lower() not in ("true", "1")


def _conv(node, ins, out):
    return _prod(out) * _prod(ins[1][1:])


def _deconv(node, ins, out):
    return _prod(ins[0]) * _prod(ins[1][1:])


def _fc(node, ins, out):
    return _prod(out) * _prod(ins[1][1:])


def fb_macs(node, ins, out):
    """FMConvolution1/3: output elements x (F + 1) x (C_in / groups) x k_h x k_w (module doc)."""
    groups = int(_attr(node, "num_group", 1))
    k = (int(ins[0][1]) // groups) * _prod(_tuple(_attr(node, "kernel")))
    return _prod(out) * (int(_attr(node, "num_factor", 1)) + 1) * k


def _batch_dot(node, ins, out):
    """(B, M, K) x (B, K, N): output elements x the contracted length K (the B-CNN's bilinear pooling)."""
    k = ins[0][1] if str(_attr(node, "transpose_a", "False")).lower() in ("true", "1") else ins[0][2]
    return _prod(out) * int(k)


MAC_RULES = {"Convolution": _conv, "Deconvolution": _deconv, "FullyConnected": _fc,
             "FMConvolution1": fb_macs, "FMConvolution3": fb_macs, "batch_dot": _batch_dot}
_FREE = {"null", "Flatten", "Reshape", "reshape", "Cast", "_copy", "identity", "BlockGrad", "stop_gradient",
         "expand_dims", "transpose", "SliceChannel", "slice", "Concat", "concat", "Dropout"}


def _ref_extra(node, ins, out, macs):
    """Extra work counted by the reference's utils/flops.py on top of ``macs`` (see module doc)."""
    op = node["op"]
    if op == "Convolution":
        return _prod(out) if _has_bias(node) else 0
    if op == "FullyConnected":
        n_out, n_in = ins[1][0], _prod(ins[1][1:])
        return (2 * n_in * n_out - n_in + (n_out if _has_bias(node) else 0)) * out[0] - macs
    return 0


class FlopReport(dict):
    """``macs`` (conv/fc/deconv/FB multiply-adds), ``ref_macs`` (the AFF reference's convention, see the
    module doc), ``elementwise`` (output elements of all other ops), ``per_op`` {op: macs},
    ``per_layer`` [(name, op, macs)], ``input_shape``."""

    @property
    def gmacs(self):
        return self["macs"] / 1e9

    @property
    def ref_gmacs(self):
        return self["ref_macs"] / 1e9


def _as_symbol(model):
    import mxnet as mx
    if isinstance(model, mx.sym.Symbol):
        return model
    return model(mx.sym.var("data"))


def graph_records(model, data_shape, data_name="data", **other_shapes):
    """Per-node records of ``model`` (a Symbol or a Gluon block) for an input of ``data_shape``, in
    topological order: dict(name, op, shape (output), params (learnable arguments first used by this
    node), macs, ref_extra, ins (input shapes), inputs (indices of the records feeding it))."""
    sym = _as_symbol(model)
    shapes = dict({data_name: tuple(data_shape)}, **other_shapes)
    internals = sym.get_internals()
    _, out_shapes, _ = internals.infer_shape_partial(**shapes)
    arg_shapes, _, _ = sym.infer_shape_partial(**shapes)
    var_shape = dict(zip(sym.list_arguments(), arg_shapes))
    learnable = {n for n in sym.list_arguments() if n != data_name and not n.endswith("label")}
    out = {}
    for name, shp in zip(internals.list_outputs(), out_shapes):
        m = re.match(r"^(.*)_output(\d*)$", name)
        if m:
            out[(m.group(1), int(m.group(2) or 0))] = tuple(shp) if shp else None
    nodes = json.loads(sym.tojson())["nodes"]
    records, seen, index = [], set(), {}
    for nid, node in enumerate(nodes):
        if node["op"] == "null":
            continue
        ins, params, feeding = [], 0, []
        for (src_id, idx, *_rest) in node["inputs"]:
            src = nodes[src_id]
            if src_id in index:
                feeding.append(index[src_id])
            if src["op"] == "null":
                shp = var_shape.get(src["name"])
                ins.append(tuple(shp) if shp else None)
                if src["name"] in learnable and src["name"] not in seen and shp:
                    seen.add(src["name"])
                    params += _prod(shp)
            else:
                ins.append(out.get((src["name"], idx)))
        oshape = out.get((node["name"], 0))
        macs = extra = 0
        if node["op"] in MAC_RULES and ins and ins[0] is not None and oshape is not None:
            macs = int(MAC_RULES[node["op"]](node, ins, oshape))
            extra = int(_ref_extra(node, ins, oshape, macs))
        index[nid] = len(records)
        records.append(dict(name=node["name"], op=node["op"], shape=oshape, params=params, macs=macs,
                            ref_extra=extra, ins=ins, inputs=feeding))
    return records


def count_macs(model, data_shape=(1, 3, 224, 224), data_name="data", **other_shapes):
    """Multiply-adds of ``model`` (Symbol or Gluon block) for an input of ``data_shape`` (batch included)."""
    report = FlopReport(macs=0, ref_macs=0, elementwise=0, per_op={}, per_layer=[], input_shape=tuple(data_shape))
    for r in graph_records(model, data_shape, data_name, **other_shapes):
        op = r["op"]
        if op in _FREE:
            continue
        if not r["shape"] or 0 in r["shape"]:
            raise ValueError("could not infer the output shape of %s (%s); pass the right data_shape" % (r["name"], op))
        if op in MAC_RULES:
            report["macs"] += r["macs"]
            report["ref_macs"] += r["macs"] + r["ref_extra"]
            report["per_op"][op] = report["per_op"].get(op, 0) + r["macs"]
            report["per_layer"].append((r["name"], op, r["macs"]))
        else:
            report["elementwise"] += _prod(r["shape"])
    return report


def count_params(model, data_shape=None):
    """(trainable, all) parameter counts of a Gluon block (without initialising it: layers must know
    their input widths, or run a forward first) or of a Symbol for an input of ``data_shape``."""
    if hasattr(model, "collect_params"):
        tr = st = 0
        for p in model.collect_params().values():
            if p.shape is None or any(int(s) <= 0 for s in p.shape):
                raise ValueError("parameter %s has an unknown shape %s; run a forward pass first" % (p.name, p.shape))
            n = _prod(p.shape)
            if p.grad_req == "null" or p.lr_mult == 0:
                st += n
            else:
                tr += n
        return tr, tr + st
    import mxnet as mx
    if isinstance(model, mx.sym.Symbol):
        if data_shape is None:
            raise ValueError("count_params of a Symbol needs data_shape")
        arg_shapes, _, aux_shapes = model.infer_shape(data=tuple(data_shape))
        tr = sum(_prod(s) for n, s in zip(model.list_arguments(), arg_shapes) if n != "data" and not n.endswith("_label"))
        return tr, tr + sum(_prod(s) for s in aux_shapes)
    raise TypeError("count_params expects a Gluon block or a Symbol")


def macs_of_model(name, input_size=None, batch=1, **kwargs):
    """Multiply-adds of registered model ``name`` at its default (or given) square input size."""
    from .models.registry import get_symbol, model_info
    entry = model_info(name)
    size = input_size or entry.cfg.get("input_size", 224)
    return count_macs(get_symbol(name, **kwargs), (batch, 3, size, size))
