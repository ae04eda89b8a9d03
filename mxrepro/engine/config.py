"""The one description of a training run that every script produces from its paper's flags.

Batch size has one meaning inside: ``global_batch`` = samples per optimizer step over all devices and
all workers. Each script converts its own flag at parse time (FBN ``--batch-size``: total over the
devices of a worker; AFF/gluon-cv ``--batch-size``: per device; bL-Net ``--batch-size``: total) and
the log prints ``global batch 256 = 64 per device x 4 devices x 1 worker``.

``flags`` maps config fields to the script's flag names so that every check names the flag the
user typed (``--num-epoches`` in FBN, ``--num-epochs`` in AFF, ``--epochs`` in bL-Net).
"""
import dataclasses
import math
import os
from dataclasses import asdict, dataclass, field
from typing import List, Optional

from ..fileio import probe_writable
from .optim import OptimizerSpec
from .schedule import ScheduleSpec

KVSTORES = ("local", "device", "nccl", "dist_sync", "dist_device_sync", "dist_sync_device", "dist_async",
            "dist_async_device", "horovod")

__all__ = ["RunConfig", "UsageError", "DataError", "Diverged", "DiskFull", "Interrupted", "check_output_dir"]


class UsageError(Exception):
    """A bad flag or input found before training: one line, exit status 2, nothing written."""
    exit_code = 2


from ..integrity import DataError  # noqa: E402,F401  (bad or corrupt data: one line naming the file, exit 2)


class Diverged(Exception):
    """A non-finite (or exploding) loss or parameter: the run stops, the last good checkpoint stays."""
    exit_code = 1


class DiskFull(Exception):
    """A write failed during the run (disk full, quota, read-only, I/O error): the run stops, the last
    complete checkpoint stays; exit status 3."""
    exit_code = 3


class Interrupted(Exception):
    """SIGINT / SIGTERM during training."""

    def __init__(self, signum):
        super().__init__(signum)
        self.signum = signum
        self.exit_code = 128 + int(signum)


@dataclass
class RunConfig:
    """Everything the engine needs besides the network builder and the data (see the module doc)."""
    family: str                                   # fbn | aff | blnet | ... (log header)
    model: str                                    # registry name
    epochs: int
    global_batch: int
    lr: float
    model_kwargs: dict = field(default_factory=dict)
    num_classes: Optional[int] = None             # None: from the data's labels
    input_shape: tuple = (3, 224, 224)
    devices: str = ""                             # '' = CPU, '0,1' = GPUs
    kv_store: str = "device"
    lr_rule: str = ""                             # how the recipe scaled the LR (printed)
    schedule: ScheduleSpec = field(default_factory=ScheduleSpec)
    optimizer: OptimizerSpec = field(default_factory=OptimizerSpec)
    initializer: object = "xavier"                # see steps.make_initializer
    dtype: str = "float32"
    hybridize: bool = True
    label_smoothing: float = 0.0
    mixup: bool = False
    mixup_alpha: float = 0.2
    mixup_off_epoch: int = 0
    top_k: int = 5
    # output: everything the run writes lives under output_dir
    output_dir: str = "runs"
    checkpoint_dir: str = ""                      # default: output_dir
    prefix: str = "model"
    log_file: str = ""                            # default: <output_dir>/<prefix>.log
    save_frequency: int = 1                       # periodic NNNN checkpoints (latest/best: always)
    resume: str = "auto"                          # auto | fresh | PATH (a .params checkpoint)
    resume_epoch: Optional[int] = None            # epochs done at PATH (default: from its name or .json)
    resume_states: str = ""                       # optimizer states for PATH (default: beside it)
    resume_changed: bool = False                  # --resume-changed: continue a checkpoint written with other settings
    init_params: str = ""                         # start from these weights with a fresh schedule
    warmup_phase: Optional[dict] = None           # FBN --warmup: {"lr": x, "optimizer": OptimizerSpec}
    seed: Optional[int] = 0
    log_interval: int = 50
    log_auto: bool = False                        # the interval was not given: also a line every ~30 s, and at
                                                  # least 5 per epoch (short epochs, e.g. the digits)
    max_batches: int = 0                          # cap batches per epoch (smoke runs); 0 = all
    flags: dict = field(default_factory=dict)     # field -> the script's flag name
    command: List[str] = field(default_factory=list)   # the argv to show (pasteable)
    notes: List[str] = field(default_factory=list)     # recipe lines for the log (switches, quirks)
    on_epoch: list = field(default_factory=list)       # callables(epoch record) run by rank 0 after each epoch
    dry_run: bool = False
    extra_outputs: list = field(default_factory=list)  # (flag, file) a recipe writes besides these (AFF's plot)
    warnings: List[str] = field(default_factory=list)  # harmless oddities found by validate(), one line each

    def flag(self, name):
        return self.flags.get(name, "--" + name.replace("_", "-"))

    @property
    def ckpt_dir(self):
        return self.checkpoint_dir or self.output_dir

    @property
    def log_path(self):
        return self.log_file or os.path.join(self.output_dir, self.prefix + ".log")

    @property
    def metrics_path(self):
        return os.path.join(os.path.dirname(os.path.abspath(self.log_path)), self.prefix + "-metrics.jsonl")

    def output_paths(self):
        """(flag, path, 'dir' or 'file') of everything the run writes: checked before the first step."""
        log_flag = self.flag("log_file") if "log_file" in self.flags else self.flag("output_dir")
        out = [(self.flag("output_dir"), self.output_dir, "dir")]
        if self.ckpt_dir != self.output_dir:
            out.append((self.flag("checkpoint_dir"), self.ckpt_dir, "dir"))
        out += [(log_flag, self.log_path, "file"), (log_flag, self.metrics_path, "file")]
        return out + [(flag, path, "file") for flag, path in self.extra_outputs]

    def to_dict(self):
        d = asdict(dataclasses.replace(self, on_epoch=[], initializer=None))
        d["initializer"] = self.initializer if isinstance(self.initializer, str) else repr(self.initializer)
        d["on_epoch"] = [repr(h) for h in self.on_epoch]
        return d

    def fingerprint(self):
        """The settings that define this run, checked when a re-run continues its checkpoint (the engine
        adds the class count and the data files)."""
        s, o = self.schedule, self.optimizer
        sched = {"lr": self.lr, "mode": s.mode, "per": s.per, "epoch_size": s.epoch_size,
                 "max_batches": self.max_batches}
        if s.mode == "step":
            sched.update(decay_epochs=[float(e) for e in s.decay_epochs], factor=s.factor, decay_period=s.decay_period,
                         decay_shift=s.decay_shift)
        elif s.mode != "constant":  # the curve is stretched over the run: the epoch count defines it
            sched.update(epochs=self.epochs, target_lr=s.target_lr, power=s.power)
        if s.warmup_epochs:
            sched.update(warmup_epochs=int(s.warmup_epochs), warmup_lr=s.warmup_lr, warmup_mode=s.warmup_mode)
        opt = {"name": o.name, "momentum": o.momentum, "wd": o.wd, "clip_gradient": o.clip_gradient,
               "rules": [repr(r) for r in o.rules]}
        opt.update({k: repr(v) for k, v in sorted(o.extra.items())})
        return {"model": self.model, "model_kwargs": {k: repr(v) for k, v in sorted(self.model_kwargs.items())},
                "num_classes": self.num_classes, "global_batch": self.global_batch,
                "input_shape": list(self.input_shape), "lr_schedule": sched, "optimizer": opt, "seed": self.seed,
                "dtype": self.dtype}

    # -- checks before anything is built or written ---------------------------------------------
    def validate(self):
        """The checks every recipe gets, each a one-line UsageError naming the flag."""
        def bad(field_name, msg):
            raise UsageError("%s %s" % (self.flag(field_name), msg))
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0):
            bad("lr", "must be a positive learning rate, got %r" % (self.lr,))
        if self.global_batch < 1:
            bad("global_batch", "must be at least 1, got %d" % self.global_batch)
        if self.epochs < 1:
            bad("epochs", "must be at least 1, got %d" % self.epochs)
        warm = int(self.schedule.warmup_epochs)
        if warm < 0:
            bad("warmup_epochs", "must be >= 0, got %d" % warm)
        if warm and warm >= self.epochs:
            bad("warmup_epochs", "(%d) must be fewer than %s (%d): lower the warm-up or train longer"
                % (warm, self.flag("epochs"), self.epochs))
        if warm and self.schedule.warmup_lr >= self.lr:
            bad("warmup_lr", "(%g) must be below %s (%g), the rate the warm-up ramps up to"
                % (self.schedule.warmup_lr, self.flag("lr"), self.lr))
        if self.schedule.mode == "step" and not self.schedule.decay_shift:
            late = [e for e in self.schedule.decay_epochs if e < warm]
            if late and warm:
                bad("decay_epochs", "%s must not fall inside the %d warm-up epochs" % (late, warm))
        if self.num_classes is not None and self.num_classes < 1:
            bad("num_classes", "must be at least 1, got %d" % self.num_classes)
        if self.save_frequency < 0:
            bad("save_frequency", "must be >= 0, got %d" % self.save_frequency)
        if self.optimizer.wd < 0:
            bad("wd", "must be >= 0, got %g" % self.optimizer.wd)
        if not 0 <= self.optimizer.momentum < 1:
            bad("momentum", "must be in [0, 1), got %g" % self.optimizer.momentum)
        if self.log_interval < 1:
            bad("log_interval", "must be at least 1 (log every N batches), got %d" % self.log_interval)
        if self.max_batches < 0:
            bad("max_batches", "must be >= 0 (0 = every batch), got %d" % self.max_batches)
        if self.dtype not in ("float32", "float16"):
            bad("dtype", "must be float32 or float16, got %r" % self.dtype)
        if self.top_k < 1:
            bad("top_k", "must be at least 1, got %d" % self.top_k)
        if self.seed is not None and self.seed < 0:
            bad("seed", "must be >= 0, got %d" % self.seed)
        self._validate_optimizer(bad)
        self._validate_schedule(bad)
        self._validate_kvstore(bad)
        if self.mixup:
            if not self.mixup_alpha > 0:
                bad("mixup_alpha", "must be > 0, got %g" % self.mixup_alpha)
            if self.mixup_off_epoch < 0:
                bad("mixup_off_epoch", "must be >= 0, got %d" % self.mixup_off_epoch)
            if self.mixup_off_epoch >= self.epochs:
                self.warnings.append("%s %d covers every epoch (%s %d): mixup is never applied"
                                     % (self.flag("mixup_off_epoch"), self.mixup_off_epoch, self.flag("epochs"),
                                        self.epochs))

    def _validate_optimizer(self, bad):
        import mxnet as mx
        known = sorted(k for k in mx.optimizer.Optimizer.opt_registry if k not in ("test", "nagoriginal"))
        if self.optimizer.name.lower() not in known:
            bad("optimizer", "%s is not an MXNet optimizer; choose one of %s" % (self.optimizer.name, ", ".join(known)))
        if self.optimizer.clip_gradient is not None and not self.optimizer.clip_gradient > 0:
            bad("clip_gradient", "must be > 0, got %g" % self.optimizer.clip_gradient)

    def _validate_schedule(self, bad):
        sch, warm = self.schedule, int(self.schedule.warmup_epochs)
        if warm and self.schedule.warmup_lr < 0:
            bad("warmup_lr", "must be >= 0, got %g" % self.schedule.warmup_lr)
        if sch.mode in ("cosine", "poly", "linear"):
            if not 0 <= sch.target_lr < self.lr:
                bad("target_lr", "(%g) must be in [0, %s %g): the rate the %s schedule ends at"
                    % (sch.target_lr, self.flag("lr"), self.lr, sch.mode))
            if sch.mode == "poly" and not sch.power > 0:
                bad("power", "must be > 0, got %g" % sch.power)
        if sch.decay_period < 0:
            bad("decay_period", "must be >= 0 (0 = use %s), got %d" % (self.flag("decay_epochs"), sch.decay_period))
        if sch.mode != "step":
            return
        if not 0 < sch.factor <= 1:
            bad("decay_factor", "must be in (0, 1], got %g" % sch.factor)
        if sch.decay_period:
            if sch.decay_period >= self.epochs:
                self.warnings.append("%s %d is not before the last epoch (%s %d): the rate never decays"
                                     % (self.flag("decay_period"), sch.decay_period, self.flag("epochs"), self.epochs))
            return
        neg = [e for e in sch.decay_epochs if e <= 0]
        if neg:
            bad("decay_epochs", "%s: decay epochs must be positive (epochs done before the decay)"
                % ",".join("%g" % e for e in neg))
        late = [e for e in sch.decay_epochs if e - sch.decay_shift >= self.epochs]
        if late:
            self.warnings.append("%s %s: epoch(s) %s not before the last epoch (%s %d), so the rate never decays there"
                                 % (self.flag("decay_epochs"), ",".join("%g" % e for e in sch.decay_epochs),
                                    ",".join("%g" % e for e in late), self.flag("epochs"), self.epochs))

    def _validate_kvstore(self, bad):
        kv = self.kv_store
        if kv not in KVSTORES:
            bad("kv_store", "%s is not a kvstore type; choose one of %s" % (kv, ", ".join(KVSTORES)))
        gpus = [g for g in str(self.devices or "").split(",") if g.strip() not in ("", "-1", "cpu")]
        if kv == "nccl" and not gpus:
            bad("kv_store", "nccl needs GPUs (%s); on the CPU pass %s device" % (self.flag("devices"),
                                                                               self.flag("kv_store")))
        if kv == "horovod" and not self.dry_run:
            import importlib.util
            if importlib.util.find_spec("horovod") is None:
                bad("kv_store", "horovod needs Horovod (pip install horovod), or pass %s device" % self.flag("kv_store"))
        if kv.startswith("dist") and "DMLC_ROLE" not in os.environ and not self.dry_run:
            bad("kv_store", "%s needs the distributed launcher: run the same command through `python tools/launch.py "
                            "-n WORKERS ...` (see README, Scale-out), or pass %s device" % (kv, self.flag("kv_store")))

    def check_batch(self, num_images, per_worker, workers):
        """A batch larger than a worker's share of ``num_images`` training images (one line with the numbers)."""
        share = num_images // max(1, workers)
        if per_worker > share:
            raise UsageError("%s: a batch of %d images per worker is larger than a worker's share of the training "
                             "data (%d images / %d worker%s = %d): lower %s"
                             % (self.flag("global_batch"), per_worker, num_images, workers,
                                "" if workers == 1 else "s", share, self.flag("global_batch")))


def check_output_dir(path, flag):
    """Raise UsageError unless ``path`` is, or can be created as, a writable folder (probed in the nearest
    existing parent by :func:`~mxrepro.fileio.probe_writable`, so nothing is left behind)."""
    why = probe_writable(path)
    if why is None:
        return
    if why.endswith("is a file, not a folder"):
        raise UsageError("%s %s: %s" % (flag, path, why))
    raise UsageError("%s %s is not writable (%s): choose another output folder" % (flag, path, why))
