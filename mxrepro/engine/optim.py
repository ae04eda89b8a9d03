"""Optimizer construction for both step implementations, and the MXNet-0.x NAG of the original FBN.

``make_optimizer`` builds a stock ``mx.optimizer`` (sgd, nag, adam, ...) with the schedule, the
gradient rescale and clipping, and per-parameter weight-decay / learning-rate multipliers chosen by
NAME with regular expressions (the same rules whether the names come from a Symbol or from Gluon
Parameters):

* FBN ``--wd-mode no-bias-bn`` -> ``wd_mult 0`` on ``_bias$|_gamma$|_beta$``; ``--fmconv`` ->
  ``lr_mult fmconv_scale`` on ``^bilinear``; ``--freeze`` -> ``lr_mult 0`` on names without ``cifar``
  (docs/reference/fbn.md §3.2);
* AFF ``--no-wd`` -> ``wd_mult 0`` on ``.*beta|.*gamma|.*bias`` (gluon-cv);
* bL-Net: weight decay on every parameter (docs/reference/blnet.md §3).

``nag_original`` (:class:`NAGOriginal`) is the Nesterov update of MXNet 0.x that the original FBN
ImageNet runs used (docs/reference/fbn.md §5.3): ``mom = mu*mom + (g + wd*w); w -= lr*(g + wd*w + mu*mom)``, which
stock 1.9.1's ``nag_mom_update`` (``mom = mu*mom - lr*(g + wd*w); w += mu*mom - lr*(g + wd*w)``)
does not reproduce when the learning rate changes between steps.
"""
import re
from dataclasses import dataclass, field
from typing import List, Tuple

import mxnet as mx

__all__ = ["ParamRule", "OptimizerSpec", "make_optimizer", "multipliers", "NAGOriginal"]


@dataclass
class ParamRule:
    """Parameters whose name matches ``pattern`` (re.search) get these multipliers; ``invert`` selects
    the names that do NOT match (``--freeze``: everything without 'cifar')."""
    pattern: str
    wd_mult: float = None
    lr_mult: float = None
    invert: bool = False
    why: str = ""

    def matches(self, name):
        return bool(re.search(self.pattern, name)) != self.invert


@dataclass
class OptimizerSpec:
    name: str = "sgd"
    momentum: float = 0.9
    wd: float = 1e-4
    clip_gradient: float = None
    rules: List[ParamRule] = field(default_factory=list)
    extra: dict = field(default_factory=dict)   # further keyword arguments of the optimizer
    multi_precision: bool = False


def multipliers(names, rules) -> Tuple[dict, dict]:
    """({name: wd_mult}, {name: lr_mult}) of the rules (later rules win)."""
    wd, lr = {}, {}
    for n in names:
        for r in rules:
            if r.matches(n):
                if r.wd_mult is not None:
                    wd[n] = float(r.wd_mult)
                if r.lr_mult is not None:
                    lr[n] = float(r.lr_mult)
    return wd, lr


def make_optimizer(spec, lr, scheduler, rescale_grad, param_names=None):
    """A stock MXNet optimizer of ``spec``. With ``param_names`` (Module API) the multipliers are set on
    the optimizer by name; Gluon callers set them on the Parameters (see steps.GluonStep)."""
    kw = dict(learning_rate=lr, wd=spec.wd, rescale_grad=rescale_grad, lr_scheduler=scheduler)
    if spec.name.lower() in ("sgd", "nag", "signum", "lbsgd", "nag_original"):
        kw["momentum"] = spec.momentum
    if spec.clip_gradient is not None:
        kw["clip_gradient"] = spec.clip_gradient
    if spec.multi_precision:
        kw["multi_precision"] = True
    kw.update(spec.extra)
    if scheduler is not None:
        scheduler.base_lr = lr  # what mx.optimizer would overwrite it with (silences its warning)
    opt = mx.optimizer.create(spec.name, **kw)
    if param_names is not None:
        wd, lrm = multipliers(param_names, spec.rules)
        opt.set_wd_mult(wd)
        opt.set_lr_mult(lrm)
    return opt


@mx.optimizer.register
class NAGOriginal(mx.optimizer.Optimizer):
    """MXNet-0.x Nesterov momentum (the original FBN ImageNet optimizer, docs/reference/fbn.md §5.3).

    With ``g`` the rescaled, clipped gradient: ``mom = mu*mom + (g + wd*w)``,
    ``w -= lr*(g + wd*w + mu*mom)``. Registered as ``nag_original``."""

    def __init__(self, momentum=0.9, **kwargs):
        super().__init__(**kwargs)
        self.momentum = momentum

    def create_state(self, index, weight):
        return mx.nd.zeros(weight.shape, weight.context, dtype=weight.dtype) if self.momentum else None

    def update(self, index, weight, grad, state):
        self._update_count(index)
        lr, wd = self._get_lr(index), self._get_wd(index)
        g = grad * self.rescale_grad
        if self.clip_gradient is not None:
            g = mx.nd.clip(g, -self.clip_gradient, self.clip_gradient)
        g = g + wd * weight
        if state is not None:
            state[:] = self.momentum * state + g
            weight[:] -= lr * (g + self.momentum * state)
        else:
            weight[:] -= lr * g


mx.optimizer.Optimizer.opt_registry["nag_original"] = NAGOriginal  # the name the recipes use
