"""Learning-rate schedules, built once from the run's config as a pure function of the update count.

One description covers the three papers (each number from its recipe):

* FBN (docs/reference/fbn.md §3.1): linear "slow-start" warm-up ``lr * (scale + (1 - scale) t / T)`` over ``slowstart``
  epochs (T iterations; the original's formula, which reaches ``lr`` one iteration after gluon-cv's
  ramp would), then x0.1 at ABSOLUTE epochs (``--lr-step``), per iteration;
* AFF / gluon-cv (docs/reference/aff.md §3): optional linear warm-up from ``warmup_lr``, then step / cosine / poly /
  linear / constant, per iteration; ``decay_shift`` moves step decays earlier (the AFF CIFAR
  script's bug, docs/reference/aff.md §3.2);
* bL-Net (docs/reference/blnet.md §3): cosine to 0 changed once per epoch (PyTorch ``CosineAnnealingLR(T_max=epochs)``).

The curves are gluon-cv's ``LRScheduler``/``LRSequential``; :class:`Schedule` adapts them to MXNet's
optimizer, which calls the scheduler with the 1-based update count ``n`` (so iteration
``t = n - 1``): the first update uses the warm-up's start value and a step decay at epoch ``e``
applies from the first iteration of epoch ``e`` exactly. Because the value depends only on ``t``,
a resumed run (whose optimizer counts on from the checkpoint's update count) follows the
uninterrupted run's sequence exactly, whatever ``--num-epochs`` the schedule is rebuilt with.
"""
from dataclasses import asdict, dataclass, field
from typing import Sequence

import mxnet as mx
from gluoncv.utils import LRScheduler, LRSequential

__all__ = ["ScheduleSpec", "Schedule", "SlowStart", "build_schedule"]

MODES = ("step", "cosine", "poly", "linear", "constant")


@dataclass
class ScheduleSpec:
    """What a recipe says about its learning rate (epochs are absolute, 0-based counts of epochs done)."""
    mode: str = "step"
    decay_epochs: Sequence[float] = ()   # step mode: multiply by ``factor`` at these epochs
    factor: float = 0.1
    decay_period: int = 0                # step mode: every N epochs instead of ``decay_epochs``
    decay_shift: float = 0.0             # step decays at (epoch - shift)
    warmup_epochs: int = 0
    warmup_lr: float = 0.0               # start of the linear warm-up
    warmup_mode: str = "linear"          # linear: gluon-cv's ramp, at lr on its last iteration; slowstart: FBN's
                                         # lr * (scale + (1 - scale) t / T), at lr on the first iteration after it
    target_lr: float = 0.0               # end of cosine / poly / linear
    power: float = 2.0                   # poly
    per: str = "iteration"               # iteration | epoch
    epoch_size: str = "loader"           # updates per epoch: the loader's batches, or "floor" = floor(N / batch),
                                         # as the original FBN scheduler counted while its iterator made ceil(N / B)

    def to_dict(self):
        return asdict(self)


class Schedule(mx.lr_scheduler.LRScheduler):
    """``lr(update n) = curve(n - 1)`` per iteration, or ``curve((n - 1) // updates_per_epoch)`` per
    epoch. ``lr_at(t)`` gives the rate of 0-based iteration ``t``; ``last`` the latest (update, lr)."""

    def __init__(self, curve, base_lr, updates_per_epoch, per="iteration", spec=None):
        super().__init__(base_lr=base_lr)
        self.curve, self.updates_per_epoch, self.per = curve, int(updates_per_epoch), per
        self.spec = spec
        self.last = (0, None)

    def lr_at(self, t):
        t = max(0, int(t))
        return self.curve(t // self.updates_per_epoch if self.per == "epoch" else t)

    def __call__(self, num_update):
        lr = self.lr_at(int(num_update) - 1)
        self.last = (int(num_update), lr)
        return lr

    def changes(self, num_epochs, limit=4):
        """The first ``limit`` (update, lr) points where the rate stops following the warm-up ramp or
        jumps (decays), for the dry run's summary."""
        out, total = [], num_epochs * self.updates_per_epoch
        prev = self.lr_at(0)
        warm = (self.spec.warmup_epochs if self.spec else 0) * self.updates_per_epoch
        bounds = sorted({warm} | {int(round(e * self.updates_per_epoch)) for e in _decays(self.spec, num_epochs)})
        for t in bounds:
            if 0 < t < total:
                lr = self.lr_at(t)
                if lr != prev or t == warm:
                    out.append((t + 1, lr))
                prev = lr
        return out[:limit]


def _decays(spec, num_epochs):
    if spec is None or spec.mode != "step":
        return []
    if spec.decay_period > 0:
        return [e - spec.decay_shift for e in range(spec.decay_period, num_epochs, spec.decay_period)]
    return [float(e) - spec.decay_shift for e in spec.decay_epochs]


class SlowStart(LRScheduler):
    """FBN's ramp as a gluon-cv curve (docs/reference/fbn.md §3.1): ``start + (end - start) * T / niters``
    (a module-level class: a dist kvstore pickles the optimizer with its schedule to the servers)."""

    def update(self, num_update):
        t = min(max(0, num_update - self.offset), self.niters - 1)
        self.learning_rate = self.base_lr + (self.target_lr - self.base_lr) * t / float(self.niters)


def _slow_start(start, end, niters):
    return SlowStart("linear", base_lr=start, target_lr=end, niters=niters)


def build_schedule(spec, lr, num_epochs, updates_per_epoch):
    """The :class:`Schedule` of ``spec`` for a run of ``num_epochs`` at ``updates_per_epoch``."""
    if spec.mode not in MODES:
        raise ValueError("LR mode must be one of %s, got %r" % (", ".join(MODES), spec.mode))
    if spec.per not in ("iteration", "epoch"):
        raise ValueError("the LR changes per 'iteration' or per 'epoch', got %r" % spec.per)
    upe = int(updates_per_epoch)
    if upe < 1:
        raise ValueError("updates per epoch must be >= 1")
    per_epoch = spec.per == "epoch"
    unit = 1 if per_epoch else upe
    warm = int(spec.warmup_epochs)
    if warm >= num_epochs:
        raise ValueError("warm-up epochs (%d) must be fewer than the epochs (%d)" % (warm, num_epochs))
    steps = [e - warm for e in _decays(spec, num_epochs)]
    if spec.mode == "step" and not spec.decay_shift and any(s < 0 for s in steps):
        raise ValueError("step decay epochs %s must not fall inside the %d warm-up epochs"
                         % (list(spec.decay_epochs), warm))
    curves = []
    if warm > 0:
        if spec.warmup_mode == "slowstart":
            curves.append(_slow_start(spec.warmup_lr, lr, warm * unit))
        elif spec.warmup_mode == "linear" and warm * unit == 1:  # a one-iteration ramp ends at lr at once
            curves.append(LRScheduler("step", base_lr=lr, niters=1, step_iter=[]))
        elif spec.warmup_mode == "linear":
            curves.append(LRScheduler("linear", base_lr=spec.warmup_lr, target_lr=lr, nepochs=warm,
                                      iters_per_epoch=unit))
        else:
            raise ValueError("warmup_mode must be 'linear' or 'slowstart', got %r" % spec.warmup_mode)
    # per epoch, one extra count so the last epoch is not already at target_lr (CosineAnnealingLR)
    main_iters = (num_epochs - warm) * unit + (1 if per_epoch and spec.mode != "step" else 0)
    mode = spec.mode
    if mode in ("cosine", "poly", "linear") and main_iters <= 1:
        mode = "step"  # a curve of one point is its start, lr (gluon-cv's curves divide by niters - 1)
    curves.append(LRScheduler(mode, base_lr=lr, target_lr=spec.target_lr, niters=main_iters,
                              step_iter=[int(round(s * unit)) for s in steps], step_factor=spec.factor,
                              power=spec.power))
    return Schedule(LRSequential(curves), lr, upe, spec.per, spec)
