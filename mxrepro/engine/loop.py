"""The training engine: one loop, one set of guarantees for every family.

    from mxrepro.engine import run
    exit_code = run(cfg, data, build_model)

``cfg`` is a :class:`~mxrepro.engine.config.RunConfig`, ``data`` a data spec of :mod:`mxrepro.data`
(it knows its files, label range and loaders) and ``build_model(num_classes)`` returns a Gluon
HybridBlock or a Symbol. In order:

1. **Checks, before anything is written** (one-line messages naming the flag, exit status 2): the
   config's values (:meth:`RunConfig.validate`), every output path and the free space (:mod:`.disk`),
   devices and the global batch, the
   data's presence and integrity, labels against the head size (a head smaller than the data's
   classes is an error; the class count comes from the data when the script does not fix it), the
   model builder's own arguments.
2. ``--dry-run`` stops here and prints the resolved plan and the command; it writes nothing.
3. The run's lock (one run per checkpoint prefix) and the recovery of an interrupted checkpoint
   write; logging to ``<output_dir>/<prefix>.log``; resume from the newest valid checkpoint, written
   with the same settings, unless told to start fresh (:mod:`.checkpoint`); the LR schedule rebuilt
   from the config at the checkpoint's update count (:mod:`.schedule`); the optimizer built by
   :mod:`.optim`; one step implementation (:mod:`.steps`).
4. Epochs: every epoch re-seeds Python/NumPy/MXNet from (seed, epoch) and sets the loaders' epoch
   (data order and augmentation are functions of the epoch), trains, validates (top-1, top-k for
   k < classes), saves ``latest``, ``best`` when it improved, ``NNNN`` every ``save_frequency`` (one unit).
5. A non-finite or exploding loss, or non-finite parameters at the end of an epoch, stop the run
   (exit status 1) naming the epoch and iteration; nothing of that epoch is saved, so ``latest`` and
   ``best`` stay the last good ones. SIGINT / SIGTERM end the run with "interrupted at epoch E,
   iteration I; run the same command to resume" (exit status 130 / 143). A write that fails on a full
   or read-only disk stops it with one line naming the last complete checkpoint (exit status 3).

Log lines (one format for every family; tools/parse_log.py reads them):
``Epoch[E] Batch[i/N] Update[U] speed=S img/s loss=L top1=A lr=R eta epoch M:SS run M:SS`` every
``log_interval`` batches (without an explicit interval, ``cfg.log_auto``: at least 5 per epoch and one
every 30 s) and
``[Epoch E/T] train: loss=L top1=A lr=R speed=S img/s time=T s | val: top1=A1 top5=A5 err-top1=E1
err-top5=E5 | best top1=B (epoch K)`` per epoch; ``<prefix>-metrics.jsonl`` beside the log holds one
JSON record per logged batch and per epoch. The full config goes to the log file (a ``config: {...}`` line
the console does not show) and to ``<output_dir>/config.json``.
"""
import dataclasses
import json
import logging
import math
import os
import random
import shlex
import signal
import sys
import time

import mxnet as mx
import numpy as np

from . import disk, dist
from ..cli import device_count
from ..fileio import atomic_write
from .checkpoint import Checkpointer, RunLock
from .config import DataError, DiskFull, Diverged, Interrupted, UsageError
from .optim import OptimizerSpec, make_optimizer
from .schedule import ScheduleSpec, build_schedule
from .steps import GluonStep, ModuleStep

__all__ = ["run", "parse_devices", "seed_everything", "setup_logging", "DIVERGED_LOSS"]

log = logging.getLogger("mxrepro")

# Mean cross-entropy per sample above which a run counts as diverged: an untrained 1000-class head
# starts at ln(1000) = 6.9; a loss a hundred times that only comes from a blown-up step.
DIVERGED_LOSS = 1000.0
# Without an explicit log interval, a progress line at least this often (seconds).
LOG_SECONDS = 30.0


# ------------------------------------------------------------------------------------------------
# Small pieces
# ------------------------------------------------------------------------------------------------
def seed_everything(seed):
    """Seed Python, NumPy and MXNet generators (augmentation, mixup, DropFactor, initialisation)."""
    random.seed(seed)
    np.random.seed(seed % (2 ** 32))
    mx.random.seed(seed % (2 ** 31))


def epoch_seed(seed, epoch):
    return seed * 7919 + epoch + 1


def visible_gpus():
    """GPUs this MXNet can use (0 with the CPU wheel)."""
    try:
        return mx.context.num_gpus()
    except mx.base.MXNetError:
        return 0


def parse_devices(devices, flag="--gpus"):
    """``'0,1'`` -> [gpu(0), gpu(1)]; empty -> [cpu()]. GPUs that do not exist are an error that says
    what is available (the stock CPU wheel has none)."""
    if devices is None or str(devices).strip() in ("", "-1", "cpu"):
        return [mx.cpu()]
    try:
        ids = [int(g) for g in str(devices).split(",") if g.strip() != ""]
    except ValueError:
        raise UsageError("%s expects a comma-separated list of GPU ids such as 0,1 (empty for the CPU), got %r"
                         % (flag, devices))
    n = visible_gpus()
    bad = [i for i in ids if i < 0 or i >= n]
    if bad:
        cuda = mx.runtime.Features().is_enabled("CUDA")
        raise UsageError("%s %s asks for GPU(s) %s but this MXNet sees %d GPU(s)%s; pass %s '' to train on the CPU"
                         % (flag, devices, bad, n, "" if cuda else " (CPU-only wheel)", flag))
    return [mx.gpu(i) for i in ids]


class QuietFileHandler(logging.FileHandler):
    """A log file that stops at its first failed write (disk full, read-only) with one note on stderr,
    instead of a traceback for every later line; the console keeps logging."""
    failed = False

    def emit(self, record):
        if not self.failed:
            super().emit(record)

    def handleError(self, record):
        if self.failed:
            return
        self.failed = True
        e = sys.exc_info()[1]
        sys.stderr.write("note: cannot write the log file %s (%s); the log continues on the console only\n"
                         % (self.baseFilename, getattr(e, "strerror", None) or e))
        try:
            self.close()
        except (OSError, ValueError):
            pass


def setup_logging(log_file=None, level=logging.INFO):
    """Log to the console and, when given, to ``log_file`` (its folder is created; see QuietFileHandler)."""
    root = logging.getLogger()
    root.setLevel(level)
    for h in list(root.handlers):  # the handlers of an earlier run in this process (others are left alone)
        if getattr(h, "_mxrepro", False):
            root.removeHandler(h)
            h.close()
    handlers = [logging.StreamHandler(sys.stdout)]
    if log_file:
        os.makedirs(os.path.dirname(os.path.abspath(log_file)), exist_ok=True)
        handlers.append(QuietFileHandler(log_file))
    handlers[0].addFilter(_console_only)
    for h in handlers:
        h._mxrepro = True
        h.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
        root.addHandler(h)


def _console_only(record):
    """Logging filter of the console handler: records logged with ``extra={"file_only": True}`` (the full
    config) go to the log file only."""
    return not getattr(record, "file_only", False)


def _hms(seconds):
    """4:31, 1:02:03."""
    s = int(round(max(0.0, seconds)))
    return "%d:%02d:%02d" % (s // 3600, s // 60 % 60, s % 60) if s >= 3600 else "%d:%02d" % (s // 60, s % 60)


def batch_line(cfg, per_worker, ndev, workers):
    return "global batch %d = %d per device x %d device%s x %d worker%s" % (
        cfg.global_batch, per_worker // ndev, ndev, "" if ndev == 1 else "s", workers, "" if workers == 1 else "s")


def _metrics(num_classes, top_k):
    k = min(top_k, num_classes - 1)  # top-k only when it is informative (k < classes)
    return mx.metric.Accuracy(), (mx.metric.TopKAccuracy(top_k=k) if k > 1 else None), k


class _Signals:
    """SIGINT / SIGTERM while training: the handler only records the signal and :meth:`check`, called
    between batches, raises :class:`Interrupted` (an exception raised inside the handler could land in
    a logging call, which swallows it)."""
    caught = None

    def __enter__(self):
        self.old = {}
        _Signals.caught = None
        for s in (signal.SIGINT, signal.SIGTERM):
            self.old[s] = signal.signal(s, self._record)
        return self

    @staticmethod
    def _record(signum, frame):
        _Signals.caught = signum

    @staticmethod
    def check():
        if _Signals.caught is not None:
            raise Interrupted(_Signals.caught)

    def __exit__(self, *exc):
        for s, h in self.old.items():
            signal.signal(s, h)
        _Signals.caught = None
        return False


def _flatten(d, pre=""):
    """{"a": {"b": 1}} -> {"a.b": 1} (lists and scalars are values)."""
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(_flatten(v, pre + k + "."))
        else:
            out[pre + k] = v
    return out


def _short(v):
    return v if not isinstance(v, str) or len(v) < 80 else "..." + v[-77:]


# ------------------------------------------------------------------------------------------------
# The run
# ------------------------------------------------------------------------------------------------
class Engine:
    def __init__(self, cfg, data, build_model, tag=""):
        self.cfg, self.data, self.build_model, self.tag = cfg, data, build_model, tag
        self.where = (0, 0)  # (epoch, iteration) for the interruption message
        self.lock, self.resume_notes = None, []
        self._val_time = 0.0  # seconds of the last validation (for the ETA)

    # -- checks ------------------------------------------------------------------------------------
    def prepare(self):
        """Everything that can fail on bad input, before anything is written."""
        cfg = self.cfg
        cfg.validate()
        disk.check_outputs(cfg)
        try:
            self.contexts = parse_devices(cfg.devices, cfg.flag("devices"))
        except UsageError as e:
            if not cfg.dry_run:
                raise
            cfg.notes.append("planned on the CPU: %s" % e)
            self.contexts = [mx.cpu(i) for i in range(device_count(cfg.devices))]
        if cfg.dtype == "float16" and any(c.device_type == "cpu" for c in self.contexts):
            raise UsageError("%s float16 needs GPUs (MXNet's CPU kernels have no fast float16 path); pass %s float32 "
                             "to train on the CPU" % (cfg.flag("dtype"), cfg.flag("dtype")))
        if cfg.warmup_phase and cfg.kv_store.startswith("dist"):
            raise UsageError("--warmup cannot run under a distributed kvstore (it needs a second optimizer on the "
                             "same kvstore): run the warm-up epoch once without the launcher (same command, one "
                             "epoch); its %s-warm-0001.params is then reused" % cfg.prefix)
        self.kv = dist.create_kvstore(cfg.kv_store) if not cfg.dry_run else cfg.kv_store
        self.rank, self.workers = dist.worker_shard(self.kv)
        ndev = len(self.contexts)
        if cfg.global_batch % (self.workers * ndev):
            raise UsageError("%s: global batch %d does not split evenly over %d device(s) x %d worker(s)"
                             % (cfg.flag("global_batch"), cfg.global_batch, ndev, self.workers))
        self.per_worker = cfg.global_batch // self.workers
        self.have_data = self.data.exists()
        if not self.have_data and not cfg.dry_run:
            raise DataError(self.data.missing_message())
        self.summary = None
        if self.have_data:
            if not cfg.dry_run:
                self.data.verify()
            self.summary = self.data.label_summary()
        n_train = self.data.num_train() if self.have_data else self.data.nominal_train
        if n_train:
            cfg.check_batch(n_train, self.per_worker, self.workers)
        asked = getattr(self.data, "num_examples", None)
        if self.have_data and asked and asked > n_train:
            cfg.warnings.append("%s %d is more than the %d records of %s: an epoch is those %d"
                                % (cfg.flag("num_examples"), asked, n_train, self.data.name, n_train))
        self.num_classes = self._num_classes()
        try:
            self.model = self.build_model(self.num_classes)
        except (ValueError, TypeError) as e:
            raise UsageError("cannot build %s: %s" % (cfg.model, e))
        # free space first (the lock file itself needs some): epochs done as the checkpoints on disk say now
        self.ckpt_plan = ("probe", None if cfg.resume == "fresh" else
                          Checkpointer(cfg.ckpt_dir, cfg.prefix, None).find_resume())
        self.space_params = disk.check_start_space(self) if self.rank == 0 else 0
        try:
            self._take_lock()
            self.ckpt_plan = self._resume_plan()
        except BaseException:
            self.release()
            raise

    # -- one run per checkpoint prefix -------------------------------------------------------------
    def _take_lock(self):
        """Rank 0 of a real run takes ``<prefix>.lock`` in the checkpoint folder (held until the process
        ends), then finishes or discards an interrupted checkpoint write and removes temporary files.
        A dry run only says when a run is active."""
        cfg = self.cfg
        lock = RunLock(cfg.ckpt_dir, cfg.prefix)
        if cfg.dry_run:
            info = lock.active()
            if info:
                cfg.notes.append("a run is active on %s: %s" % (lock.path, RunLock.describe(info)))
            return
        if self.rank != 0:  # rank 0 recovers an interrupted write: read the checkpoints after it has
            journal, t0 = Checkpointer(cfg.ckpt_dir, cfg.prefix, None).journal, time.time()
            while os.path.exists(journal) and time.time() - t0 < 300:
                time.sleep(0.5)
            return
        try:
            stale = lock.acquire(shlex.join(cfg.command) if cfg.command else cfg.model)
        except BlockingIOError as e:
            raise UsageError("another run is training into %s (%s): wait for it to end or stop it, or choose another "
                             "output folder or prefix" % (os.path.join(cfg.ckpt_dir, cfg.prefix + "-*"),
                                                          RunLock.describe(e.holder)))
        self.lock = lock
        if stale:
            self.resume_notes.append("taking over the lock %s of a run that is no longer running (%s)"
                                     % (lock.path, RunLock.describe(stale)))
        done = Checkpointer(cfg.ckpt_dir, cfg.prefix, None).recover()
        if done:
            self.resume_notes.append(done)

    def release(self):
        """Give up the run's lock (also done by the kernel when the process ends)."""
        if self.lock is not None:
            self.lock.release()
            self.lock = None

    def _num_classes(self):
        cfg, s = self.cfg, self.summary
        if s is None:
            if cfg.num_classes is None:
                if cfg.dry_run:
                    return 1000
                raise UsageError("%s is needed: the data does not say how many classes it has" % cfg.flag("num_classes"))
            return cfg.num_classes
        n, lo, hi = s["num_classes"], s["min"], s["max"]
        if lo < 0:
            raise DataError("%s has negative labels (%g): re-make it with the prepare tools" % (self.data.name, lo))
        if cfg.num_classes is None:
            return int(max(n, hi + 1))
        if hi >= cfg.num_classes:
            raise UsageError("%s %d is too small for %s: its labels go up to %d (%d classes); pass %s %d"
                             % (cfg.flag("num_classes"), cfg.num_classes, self.data.name, hi, hi + 1,
                                cfg.flag("num_classes"), hi + 1))
        if hi + 1 < cfg.num_classes:
            log.warning("%s has labels 0..%d but the head has %d outputs (%s): the extra outputs are never a target",
                        self.data.name, hi, cfg.num_classes, cfg.flag("num_classes"))
        return cfg.num_classes

    def _resume_plan(self):
        """(what, meta): how this run starts, decided before anything is written."""
        cfg = self.cfg
        probe = Checkpointer(cfg.ckpt_dir, cfg.prefix, step=None)
        if cfg.resume == "fresh":
            return "fresh", None
        if cfg.resume not in ("auto", ""):
            path = cfg.resume
            if not os.path.isfile(path):
                if not cfg.dry_run:
                    raise UsageError("%s %s does not exist" % (cfg.flag("resume"), path))
                cfg.notes.append("the checkpoint to resume from, %s, is not here" % path)
            meta = None
            side = os.path.splitext(path)[0] + ".json"
            if os.path.exists(side):
                with open(side) as f:
                    meta = json.load(f)
            epoch = cfg.resume_epoch if cfg.resume_epoch is not None else (meta or {}).get("epoch")
            if epoch is None:
                import re
                m = re.search(r"-(\d{4})\.params$", path)
                if not m:
                    raise UsageError("%s %s: cannot tell how many epochs it holds; pass the epoch too"
                                     % (cfg.flag("resume"), path))
                epoch = int(m.group(1))
            states = cfg.resume_states or os.path.splitext(path)[0] + ".states"
            return "explicit", dict(meta or {}, epoch=int(epoch), params_path=path,
                                    states_path=states if os.path.exists(states) else None,
                                    num_update=(meta or {}).get("num_update") if cfg.resume_epoch is None else None)
        meta = probe.find_resume()
        rejected = probe.rejected_line()
        if meta is None:
            if rejected:
                self.resume_notes.append("%s and no other checkpoint is valid: starting from scratch" % rejected)
            return "fresh", None
        if rejected:
            self.resume_notes.append("%s; resuming from epoch %d (%s)" % (
                rejected, int(meta["epoch"]), os.path.splitext(os.path.basename(meta["params_path"]))[0]))
        self._check_settings(meta)
        return "auto", meta

    def _check_settings(self, meta):
        """Stop (UsageError) when the checkpoint was written with other settings, unless --resume-changed;
        keys the checkpoint does not record (older checkpoints) are not compared, with a warning."""
        cfg = self.cfg
        old = (meta.get("config") or {}).get("fingerprint")
        if old is None:
            return
        old, new = _flatten(old), _flatten(self._fingerprint())
        name = os.path.basename(meta["params_path"])
        unknown = sorted(k for k in new if k not in old)
        if unknown:
            self.resume_notes.append("%s does not record %s: not checked" % (name, ", ".join(unknown)))
        diff = ["%s %s -> %s" % (k, _short(old[k]), _short(new[k]))
                for k in sorted(old) if k in new and old[k] != new[k]]
        if not diff:
            return
        if not cfg.resume_changed:
            raise UsageError("%s was written with other settings (%s): pass %s to start fresh or %s to continue with "
                             "the new settings" % (name, "; ".join(diff), cfg.flag("fresh"),
                                                   cfg.flag("resume_changed")))
        self.resume_notes.append("%s: continuing with changed settings (%s)" % (cfg.flag("resume_changed"),
                                                                                "; ".join(diff)))

    def _fingerprint(self):
        fp = self.cfg.fingerprint()
        fp["num_classes"] = self.num_classes
        fp["data"] = self._data_fingerprint()
        return fp

    def _data_fingerprint(self):
        """Path and size of each data file, and the training records when they are counted anyway."""
        paths = list(getattr(self.data, "paths", []))
        names = ["train", "val"] if len(paths) == 2 else ["file%d" % i for i in range(len(paths))]
        out = {}
        for n, p in zip(names, paths):
            out[n] = {"path": os.path.abspath(p)}
            if os.path.isfile(p):
                out[n]["size"] = os.path.getsize(p)
        if self.have_data and not self.cfg.dry_run:
            out["train_records"] = self.data.num_train()
        return out

    # -- dry run -------------------------------------------------------------------------------------
    def plan_lines(self):
        cfg = self.cfg
        ndev = len(self.contexts)
        lines = ["%s%s: %s, %d classes, input %s" % (self.tag, cfg.family, cfg.model, self.num_classes,
                                                       "x".join(map(str, cfg.input_shape)))]
        n_train = self.data.num_train() if self.have_data else None
        shown = n_train if n_train is not None else self.data.nominal_train
        upe = self.data.batches_per_epoch(shown, self.per_worker, self.workers) if shown else None
        if cfg.max_batches and upe:
            upe = min(upe, cfg.max_batches)
        lines.append(batch_line(cfg, self.per_worker, ndev, self.workers) + ("; " + cfg.lr_rule if cfg.lr_rule else ""))
        lines.append("data: %s (%s)" % (self.data.name, "%d training images" % n_train if n_train is not None else
                                        "not found: %d images assumed for this plan" % shown if shown else "not found"))
        lines.append("epochs: %d, %s updates per epoch" % (cfg.epochs, upe if upe else "?"))
        if upe:
            sched = build_schedule(cfg.schedule, cfg.lr, cfg.epochs,
                                   self._schedule_unit(upe, shown // self.workers))
            pts = sched.changes(cfg.epochs)
            lines.append("LR: %s %g (%s, per %s)%s%s" % (
                cfg.schedule.mode, cfg.lr, cfg.optimizer.name, cfg.schedule.per,
                "; warm-up %d epoch(s) from %g" % (cfg.schedule.warmup_epochs, cfg.schedule.warmup_lr)
                if cfg.schedule.warmup_epochs else "",
                "; then " + ", ".join("%.6g from update %d" % (lr, u) for u, lr in pts) if pts else ""))
        lines.append("devices: %s; kvstore %s" % (", ".join(str(c) for c in self.contexts), cfg.kv_store))
        lines.append("output: log %s, checkpoints %s-{latest,best,NNNN}.*" % (cfg.log_path, os.path.join(cfg.ckpt_dir,
                                                                                                        cfg.prefix)))
        what, meta = self.ckpt_plan
        lines.append("start: %s" % ("from scratch" if what == "fresh" else "resume from %s (%d epoch(s) done)" % (
            meta["params_path"], meta["epoch"])))
        for n in self.resume_notes:
            lines.append("checkpoint: " + n)
        for w in cfg.warnings:
            lines.append("warning: " + w)
        for n in cfg.notes:
            lines.append("note: " + n)
        if cfg.command:
            lines.append("command: " + shlex.join([a for a in cfg.command if a != "--dry-run"]))
        return lines

    # -- training ------------------------------------------------------------------------------------
    def _schedule_unit(self, iters, records):
        """Updates per epoch as the schedule counts them (see ScheduleSpec.epoch_size)."""
        if self.cfg.schedule.epoch_size == "floor":
            return max(1, records // self.per_worker)
        return iters

    def make_step(self):
        cfg = self.cfg
        if isinstance(self.model, mx.sym.Symbol):
            return ModuleStep(self.model, self.contexts, self.per_worker, cfg.input_shape)
        return GluonStep(self.model, self.contexts, self.num_classes, dtype=cfg.dtype, hybridize=cfg.hybridize,
                         label_smoothing=cfg.label_smoothing, mixup=cfg.mixup, mixup_alpha=cfg.mixup_alpha,
                         mixup_off_epoch=cfg.mixup_off_epoch, num_epochs=cfg.epochs)

    def run(self):
        cfg = self.cfg
        what, meta = self.ckpt_plan
        begin = int(meta["epoch"]) if meta else 0
        if begin >= cfg.epochs:
            log.info("%snothing to do: %d epoch(s) already done (%s %d)", self.tag, begin, cfg.flag("epochs"),
                     cfg.epochs)
            return 0
        if what == "fresh":
            old = Checkpointer(cfg.ckpt_dir, cfg.prefix, None).existing()
            if old and cfg.resume == "fresh":
                log.warning("%sstarting fresh: %d file(s) of %s will be overwritten", self.tag, len(old), cfg.prefix)
        train, val = self.data.loaders(self.per_worker, part=self.rank, parts=self.workers, seed=cfg.seed or 0)
        iters = train.num_batches if not cfg.max_batches else min(train.num_batches, cfg.max_batches)
        if iters < 1:
            raise DataError("%s yields no training batch of %d images for this worker: lower the batch size"
                            % (self.data.name, self.per_worker))
        init_path = None
        if what == "fresh" and cfg.warmup_phase:
            init_path, code = self._warmup()
            if code:
                return code
        elif what == "fresh" and cfg.init_params:
            init_path = cfg.init_params
        sched = build_schedule(cfg.schedule, cfg.lr, cfg.epochs, self._schedule_unit(iters, train.num_records))
        step = self.make_step()
        ckpt = disk.guard_saves(Checkpointer(cfg.ckpt_dir, cfg.prefix, step, rank=self.rank, log=log))
        if cfg.seed is not None:
            seed_everything(cfg.seed)
        try:
            fresh = step.initialize(cfg.initializer, meta["params_path"] if meta else init_path,
                                    partial=not meta and bool(init_path))
        except (ValueError, AssertionError, mx.base.MXNetError) as e:
            raise UsageError("cannot load %s into %s: %s" % (meta["params_path"] if meta else init_path, cfg.model,
                                                             str(e).split("\n")[0]))
        if init_path and not meta:
            log.info("%sinitialised from %s with a fresh schedule%s", self.tag, init_path,
                     "; initialised anew (not in the file or another shape, e.g. a new head): %s" % ", ".join(fresh)
                     if fresh else "")
        rescale = 1.0 / (self.per_worker * (self.workers if dist.is_sync_dist(self.kv) else 1))
        opt = make_optimizer(cfg.optimizer, cfg.lr, sched, rescale)
        step.bind_optimizer(opt, self.kv, cfg.optimizer.rules)
        start_update = begin * iters
        if meta:
            if meta.get("num_update") is not None:
                start_update = int(meta["num_update"])
            if meta.get("states_path"):
                step.load_states(meta["states_path"])
            else:
                log.warning("%sno optimizer state beside %s: momentum restarts from zero", self.tag, meta["params_path"])
        o = step.optimizer
        o.lr_scheduler = sched  # the schedule of this config, not the pickled one
        o.begin_num_update = o.num_update = start_update
        if getattr(o, "_index_update_count", None):
            for k in o._index_update_count:
                o._index_update_count[k] = start_update
        best = (meta or {}).get("best") or {"top1": -1.0, "epoch": 0}
        on_disk = self._best_bar(ckpt, what)
        if on_disk and on_disk.get("top1", -1) > best.get("top1", -1):
            best = on_disk
        history = list((meta or {}).get("history", []))
        if meta:
            log.info("%sresume (%s): %s, %d epoch(s) done, update %d, lr %.6g next, best top-1 %.4f (epoch %d)",
                     self.tag, "explicit" if what == "explicit" else
                     "newest valid checkpoint; %s starts over" % cfg.flag("fresh"),
                     meta["params_path"], begin, start_update, sched.lr_at(start_update), best.get("top1", -1),
                     best.get("epoch", 0))
        log.info("%straining epochs %d..%d, %d iterations per epoch, %s, %d parameters", self.tag, begin + 1,
                 cfg.epochs, iters, batch_line(cfg, self.per_worker, len(self.contexts), self.workers), step.num_params())
        if self.rank == 0 and getattr(self, "space_params", 0) is None:  # shapes known only now
            disk.check_free_space(cfg, step.num_params(), done=begin)
        self.metrics_path = cfg.metrics_path if self.rank == 0 else None
        with _Signals():
            try:
                for epoch in range(begin, cfg.epochs):
                    rec = self._epoch(step, train, val, epoch, iters)
                    if not step.params_finite():
                        raise Diverged("parameters became non-finite at epoch %d, iteration %d (the end of the "
                                       "epoch); lower %s (now %g)" % (epoch + 1, iters, cfg.flag("lr"), cfg.lr))
                    improved = val is not None and rec.get("val_top1", -1) > best.get("top1", -1)
                    if improved:
                        best = {"top1": rec["val_top1"], "top5": rec.get("val_topk"), "epoch": epoch + 1}
                    rec["best_top1"], rec["best_epoch"] = best["top1"], best["epoch"]
                    history.append(rec)
                    state = {"epoch": epoch + 1, "num_update": int(step.optimizer.num_update), "best": best,
                             "seed": cfg.seed, "history": history[-1000:],
                             "config": {"fingerprint": self._fingerprint(), "model": cfg.model}}
                    tags = ["latest"] + (["best"] if improved else [])
                    if cfg.save_frequency and ((epoch + 1) % cfg.save_frequency == 0 or epoch + 1 == cfg.epochs):
                        tags.append("%04d" % (epoch + 1))
                    ckpt.save(tags, state)  # one unit: all of them or none
                    self._log_epoch(rec, best)
                    if self.rank == 0:
                        for hook in cfg.on_epoch:
                            hook(rec)
            except Interrupted as e:
                log.info("%sinterrupted at epoch %d, iteration %d; run the same command to resume (the last complete "
                         "epoch is in %s)", self.tag, self.where[0], self.where[1], ckpt.path("latest", ".params"))
                return e.exit_code
            except disk.WriteFailed as e:
                raise DiskFull(disk.full_message(e, self.where[0], cfg.ckpt_dir, cfg.prefix))
        log.info("%sfinished %d epochs; best top-1 %.4f (error %.4f) at epoch %d; checkpoints %s-{latest,best,NNNN}",
                 self.tag, cfg.epochs, best["top1"], 1 - best["top1"], best["epoch"], ckpt.base)
        return 0

    def _best_bar(self, ckpt, what):
        """The on-disk ``best`` a new best must beat: always on a resume; on a start from scratch when the
        valid ``best`` on disk was written with the same settings (a restarted run never replaces a better one)."""
        m = ckpt.read("best")
        if not m or not m.get("best"):
            return None
        if what == "fresh":
            old = (m.get("config") or {}).get("fingerprint")
            if old is not None and _flatten(old) != _flatten(self._fingerprint()):
                return None
            log.info("%sthe best on disk, top-1 %.4f (epoch %d, %s), is the bar for this run's best", self.tag,
                     m["best"].get("top1", -1), m["best"].get("epoch", 0), os.path.basename(m["params_path"]))
        return m["best"]

    def _warmup(self):
        """FBN ``--warmup`` (docs/reference/fbn.md §5.1): one extra epoch at a low rate with a fresh optimizer, saved as
        ``<prefix>-warm-0001.params`` and reused when it exists; returns (its parameter file, exit status)."""
        cfg = self.cfg
        ph = cfg.warmup_phase
        wcfg = dataclasses.replace(cfg, prefix=cfg.prefix + "-warm", epochs=1, lr=ph["lr"],
                                   schedule=ScheduleSpec(mode="constant"), optimizer=ph["optimizer"],
                                   warmup_phase=None, save_frequency=1, resume="auto", init_params="", notes=[],
                                   log_file=cfg.log_path)
        eng = Engine(wcfg, self.data, self.build_model, tag="Warmup ")
        eng.prepare()
        try:
            done = Checkpointer(wcfg.ckpt_dir, wcfg.prefix, None).path("0001", ".params")
            if os.path.exists(done):
                log.info("warm-up: reusing %s", done)
                return done, 0
            log.info("warm-up: 1 epoch at lr %g (%s) before the schedule", ph["lr"], ph["optimizer"].name)
            return done, eng.run()
        finally:
            eng.release()

    def _epoch(self, step, train, val, epoch, iters):
        cfg = self.cfg
        if cfg.seed is not None:
            seed_everything(epoch_seed(cfg.seed, epoch))
        train.set_epoch(epoch)
        acc = mx.metric.Accuracy()
        total, seen, tic, btic, bseen = 0.0, 0, time.time(), time.time(), 0
        every = min(cfg.log_interval, max(1, iters // 5)) if cfg.log_auto else cfg.log_interval
        last_line = tic
        for i, (data, label) in enumerate(train):
            if i >= iters:
                break
            _Signals.check()
            self.where = (epoch + 1, i + 1)
            loss, outputs, hard = step.train_batch(data, label, epoch)
            n = data.shape[0]
            if not math.isfinite(loss) or loss / n > DIVERGED_LOSS:
                raise Diverged("the training loss became %s at epoch %d, iteration %d (update %d); lower %s (now %g)"
                               % ("%.3g per image" % (loss / n) if math.isfinite(loss) else loss, epoch + 1, i + 1,
                                  step.optimizer.num_update, cfg.flag("lr"), cfg.lr))
            total += loss
            seen += n
            bseen += n
            acc.update(hard, outputs)
            now = time.time()
            if (i + 1) % every == 0 or (cfg.log_auto and now - last_line >= LOG_SECONDS and i + 1 < iters):
                lr = step.optimizer.learning_rate
                speed = bseen / max(now - btic, 1e-9)
                per_batch = (now - tic) / (i + 1)
                eta_epoch = per_batch * (iters - i - 1) + self._val_time
                eta_run = eta_epoch + (cfg.epochs - epoch - 1) * (per_batch * iters + self._val_time)
                log.info("%sEpoch[%d] Batch[%d/%d] Update[%d] speed=%.1f img/s loss=%.4f top1=%.4f lr=%.6g "
                         "eta epoch %s run %s", self.tag, epoch + 1, i + 1, iters, step.optimizer.num_update, speed,
                         total / seen, acc.get()[1], lr, _hms(eta_epoch), _hms(eta_run))
                self._record({"kind": "batch", "epoch": epoch + 1, "batch": i + 1, "update": step.optimizer.num_update,
                              "lr": lr, "loss": total / seen, "top1": acc.get()[1], "speed": speed,
                              "eta_epoch_s": round(eta_epoch, 1), "eta_run_s": round(eta_run, 1)})
                btic, bseen, last_line = now, 0, now
        _Signals.check()
        dt = time.time() - tic
        rec = {"kind": "epoch", "epoch": epoch + 1, "train_loss": total / max(seen, 1), "train_top1": acc.get()[1],
               "lr": step.optimizer.learning_rate, "update": step.optimizer.num_update, "speed": seen / max(dt, 1e-9),
               "time": dt}
        if val is not None:
            self.where = (epoch + 1, iters)
            vtic = time.time()
            top1, topk, k = self.evaluate(step, val)
            self._val_time = time.time() - vtic
            rec.update(val_top1=top1, val_topk=topk, k=k)
        return rec

    def evaluate(self, step, val):
        """(top-1, top-k or None, k) of the current parameters on ``val`` (every sample exactly once)."""
        m1, mk, k = _metrics(self.num_classes, self.cfg.top_k)
        val.set_epoch(0)
        for data, label in val:
            _Signals.check()
            outs = step.predict(data)
            labels = mx.gluon.utils.split_and_load(label, [o.context for o in outs], even_split=False) \
                if len(outs) > 1 else [label]
            m1.update(labels, outs)
            if mk is not None:
                mk.update(labels, outs)
        return m1.get()[1], (mk.get()[1] if mk is not None else None), k

    def _record(self, rec):
        if self.metrics_path:
            disk.append_line(self.metrics_path, json.dumps(rec) + "\n")

    def _log_epoch(self, rec, best):
        s = "%s[Epoch %d/%d] train: loss=%.4f top1=%.4f lr=%.6g speed=%.1f img/s time=%.1f s" % (
            self.tag, rec["epoch"], self.cfg.epochs, rec["train_loss"], rec["train_top1"], rec["lr"], rec["speed"],
            rec["time"])
        if "val_top1" in rec:
            s += " | val: top1=%.4f" % rec["val_top1"]
            if rec.get("val_topk") is not None:
                s += " top%d=%.4f" % (rec["k"], rec["val_topk"])
            s += " err-top1=%.4f" % (1 - rec["val_top1"])
            if rec.get("val_topk") is not None:
                s += " err-top%d=%.4f" % (rec["k"], 1 - rec["val_topk"])
            s += " | best top1=%.4f (epoch %d)" % (best["top1"], best["epoch"])
        log.info(s)
        self._record(rec)


def run(cfg, data, build_model):
    """Check, then train (or with ``cfg.dry_run`` print the plan); returns the exit status."""
    eng = Engine(cfg, data, build_model)
    eng.prepare()
    try:
        return _run_prepared(eng)
    finally:
        eng.release()


def _run_prepared(eng):
    cfg = eng.cfg
    if cfg.dry_run:
        for line in eng.plan_lines():
            print(line)
        print("dry run: nothing written")
        return 0
    setup_logging(cfg.log_path if eng.rank == 0 else os.path.splitext(cfg.log_path)[0] + "-rank%d.log" % eng.rank)
    log.info("Start: %s", shlex.join(cfg.command) if cfg.command else cfg.model)
    for line in eng.plan_lines()[:-1] if cfg.command else eng.plan_lines():
        log.info(line)
    conf = cfg.to_dict()
    log.info("config: %s", json.dumps(conf, default=str, sort_keys=True), extra={"file_only": True})
    if eng.rank == 0:
        def dump(tmp):
            with open(tmp, "w") as f:
                json.dump(conf, f, default=str, sort_keys=True, indent=1)
        atomic_write(os.path.join(cfg.output_dir, "config.json"), dump)
        log.info("full config: %s and the log", os.path.join(cfg.output_dir, "config.json"))
    if dist.is_dist(eng.kv):
        log.info("kvstore %s: rank %d of %d, %s", eng.kv.type, eng.kv.rank, eng.kv.num_workers,
                 "updates in the workers" if dist.is_sync_dist(eng.kv) else "updates on the servers (no optimizer state)")
    return eng.run()
