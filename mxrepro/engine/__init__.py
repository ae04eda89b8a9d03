"""The training engine shared by every family (see :mod:`mxrepro.engine.loop`): config and checks,
LR schedules, optimizers, checkpoints, the two step implementations and the distributed worker side.

The names below are imported on first use, so ``import mxrepro.engine.dist`` (the worker side a
launched process needs first) does not load MXNet and gluon-cv."""
import importlib

_WHERE = {
    "RunConfig": "config", "UsageError": "config", "DataError": "config", "Diverged": "config",
    "Interrupted": "config", "check_output_dir": "config", "DiskFull": "config",
    "OptimizerSpec": "optim", "ParamRule": "optim", "make_optimizer": "optim", "multipliers": "optim",
    "NAGOriginal": "optim",
    "Schedule": "schedule", "ScheduleSpec": "schedule", "build_schedule": "schedule",
    "run": "loop",
}
__all__ = sorted(_WHERE)


def __getattr__(name):
    if name in _WHERE:
        return getattr(importlib.import_module("%s.%s" % (__name__, _WHERE[name])), name)
    raise AttributeError("module %r has no attribute %r" % (__name__, name))
