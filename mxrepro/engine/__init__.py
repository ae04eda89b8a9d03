"""The training engine shared by every family (see :mod:`mxrepro.engine.loop`): config and checks,
LR schedules, optimizers, checkpoints, the two step implementations and the distributed worker side."""
from .config import DataError, Diverged, Interrupted, RunConfig, UsageError, check_output_dir
from .optim import NAGOriginal, OptimizerSpec, ParamRule, make_optimizer, multipliers
from .schedule import Schedule, ScheduleSpec, build_schedule

__all__ = ["RunConfig", "UsageError", "DataError", "Diverged", "Interrupted", "check_output_dir", "OptimizerSpec",
           "ParamRule", "make_optimizer", "multipliers", "NAGOriginal", "Schedule", "ScheduleSpec", "build_schedule",
           "run"]


def run(cfg, data, build_model):
    """Check, then train (or print the dry-run plan); returns the exit status. See mxrepro.engine.loop."""
    from .loop import run as _run
    return _run(cfg, data, build_model)
