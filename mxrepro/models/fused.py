"""The switch for the fused element-wise operators of the operator library (operators/fuse_*.cc,
docs/operators.md): ``AFFGate`` and ``AddMean`` in the AFF / iAFF fusions, ``UpsampleAdd`` in the
bL-Net merge, ``PlainBatchNorm`` for the BatchNorm that reads a fusion's output. Each replaces a chain
of MXNet's generic element-wise operators (and their backward), or a slow path of MXNet's, with one
pass over the data computing the same values; parameters and their names are unchanged.

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

from mxnet.gluon import nn

__all__ = ["enabled", "available", "fused_ops", "FusedMixin", "plain", "select", "iterative_select",
           "PlainBatchNorm", "mode_probe"]

OPS = ("AFFGate", "AddMean", "UpsampleAdd", "PlainBatchNorm")

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
    float32 switches it off (the fused operators are float32 only). For a fusion block it also
    tells the host that the output comes from a fused operator, i.e. in the plain layout (the CIFAR
    pre-activation host then reads it with a :class:`PlainBatchNorm`)."""

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


def mode_probe(F, like):
    """A one-element array that is exactly 1 in inference and 0 or 2 in training.

    lib_api operators get no train/inference flag; MXNet's own ``Dropout`` knows the mode (as for
    the FB operators' DropFactor mask, mxrepro/ops.py): on ``ones(1)`` with p = 0.5 it is the identity
    in inference and gives 0 or 2 in training. It draws one random number per call in training,
    from MXNet's generator; cut off from the gradient. ``like`` fixes context and dtype."""
    one = F.ones_like(F.slice_axis(like, axis=0, begin=0, end=1))
    return F.BlockGrad(F.Dropout(one, p=0.5))


class PlainBatchNorm(FusedMixin, nn.BatchNorm):
    """``nn.BatchNorm`` (same parameters, names and maths) computed by the ``PlainBatchNorm``
    operator: for a BatchNorm whose input comes from a fused operator, i.e. is in the plain layout,
    on which oneDNN's BatchNorm is about 6x slower forward and 2x backward than on its blocked
    layout (CIFAR stage 1, training). Falls back to MXNet's BatchNorm when the fused operators are
    off, for dtypes other than float32 and for axes other than 1.

    One difference: MXNet updates the moving statistics in the backward pass on the CPU, this
    operator in the training forward (as MXNet does on GPUs). After a training step (forward +
    backward) they are the same; a training-mode forward without backward updates them here only."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._init_fused()
        if self._kwargs.get("axis", 1) != 1:
            self._fused = False

    def _alias(self):  # auto-naming as nn.BatchNorm: the same parameter names ("batchnorm0_gamma")
        return "batchnorm"

    def hybrid_forward(self, F, x, gamma, beta, running_mean, running_var):
        if not self._fused:
            return super().hybrid_forward(F, x, gamma, beta, running_mean, running_var)
        k = self._kwargs
        return F.PlainBatchNorm(x, gamma, beta, running_mean, running_var, mode_probe(F, gamma), eps=k["eps"],
                                momentum=k["momentum"], fix_gamma=k["fix_gamma"],
                                use_global_stats=k["use_global_stats"])[0]
