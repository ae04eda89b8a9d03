"""The switch for the fused element-wise operators of the operator library (operators/fuse_*.cc,
docs/operators.md): ``AFFGate`` and ``AddMean`` in the AFF / iAFF fusions, ``UpsampleAdd`` in the
bL-Net merge. Each replaces a chain of MXNet's generic element-wise operators (and their backward)
with one pass over the data computing the same values; parameters and their names are unchanged.

A block decides at construction whether it uses them (``enabled()``), so one process can build
both variants, e.g. to time them against each other::

    from mxrepro.models import fused, get_model
    net = get_model("aff_cifar_resnet")                 # fused (the default)
    with fused.fused_ops(False):
        ref = get_model("aff_cifar_resnet")             # MXNet's own operators

``MXREPRO_FUSED=0`` in the environment switches them off by default. They are float32 only: a block
that is ``cast`` to another dtype goes back to the unfused graph. They are also left out where the
loaded operator library lacks them or, on a CUDA build of MXNet, has no CUDA kernels.
"""
import contextlib
import os

import numpy as np

__all__ = ["enabled", "available", "fused_ops", "FusedMixin", "plain", "select", "iterative_select"]

OPS = ("AFFGate", "AddMean", "UpsampleAdd")

_state = {"on": os.environ.get("MXREPRO_FUSED", "1").strip().lower() not in ("0", "false", "no", "off")}


def available():
    """Whether the loaded operator library provides the fused operators for this MXNet."""
    import mxnet as mx
    if not all(hasattr(mx.nd, op) and hasattr(mx.sym, op) for op in OPS):
        return False
    if mx.runtime.Features().is_enabled("CUDA"):
        try:
            from mxrepro import ops
            return bool(ops._lib().fbop_has_cuda())
        except (AttributeError, OSError, TypeError):
            return False
    return True


def enabled():
    """Whether blocks built now use the fused operators (switch on and operators available)."""
    return _state["on"] and available()


@contextlib.contextmanager
def fused_ops(on=True):
    """Build blocks with (``True``) or without (``False``) the fused operators inside the block."""
    old = _state["on"]
    _state["on"] = bool(on)
    try:
        yield
    finally:
        _state["on"] = old


class FusedMixin:
    """``self._fused`` set at construction from :func:`enabled`; casting to a dtype other than
    float32 switches it off (the fused operators are float32 only)."""

    def _init_fused(self):
        self._fused = enabled()

    def cast(self, dtype):
        if np.dtype(dtype) != np.float32:
            self._fused = False
        super().cast(dtype)


def plain(F, t):
    """``t`` unchanged (a 4-D reshape to its own shape), but in MXNet's default memory layout.

    On the CPU, oneDNN (MKLDNN) convolutions and BatchNorms leave their outputs in a blocked layout
    (nChw16c...), and MXNet converts every such input of an operator from the operator library to
    the plain layout on each call, forward and backward alike, into a temporary copy: a tensor read
    by AddMean and AFFGate was converted four times per training step. MXNet's ``Reshape`` writes
    the plain layout (one conversion, after which every reader gets it for free); on a plain input
    or a GPU it is a free view. Values are untouched."""
    return F.reshape(t, shape=(0, 0, 0, 0))


def _gate_inputs(F, att, x, residual):
    """(z, pooled) with z = x + residual and, when a branch pools, its spatial mean (AddMean)."""
    if att.all_local:
        return F.elemwise_add(x, residual), None
    return F.AddMean(x, residual)


def select(F, att, x, residual, scale):
    """AFF / Global+Global / Local+Local (``_SelectFuse``): ``scale * (x w + residual (1 - w))`` with
    w = M(x + residual) = sigmoid(L(z) + G(z)) of the MS-CAM ``att`` (two branches)."""
    xp, rp = plain(F, x), plain(F, residual)
    z, pooled = _gate_inputs(F, att, xp, rp)
    a, b = (plain(F, t) for t in att.logits(F, z, pooled))
    return F.AFFGate(xp, rp, a, b, scale=scale)


def iterative_select(F, att1, att2, x, residual):
    """iAFF (``IAFF``): xi = x w1 + residual (1 - w1) with w1 = M1(x + residual), then
    x w2 + residual (1 - w2) with w2 = M2(xi); xi and its spatial mean from one AFFGate pass."""
    xp, rp = plain(F, x), plain(F, residual)
    z, pooled = _gate_inputs(F, att1, xp, rp)
    a, b = (plain(F, t) for t in att1.logits(F, z, pooled))
    if att2.all_local:
        xi, xi_mean = F.AFFGate(xp, rp, a, b, scale=1.0), None
    else:
        xi, xi_mean = F.AFFGate(xp, rp, a, b, scale=1.0, spatial_mean=True)
    a, b = (plain(F, t) for t in att2.logits(F, xi, xi_mean))
    return F.AFFGate(xp, rp, a, b, scale=1.0)
