"""Full, read-only and failing disks: the checks before the first step and the one-line stop during a run.

* :func:`check_outputs`: every path of :meth:`RunConfig.output_paths` is, or can be created as, a
  writable file or folder (tested without leaving anything behind).
* :func:`check_free_space`: the free space of each file system the run writes to against the size
  of the checkpoints (:func:`checkpoint_bytes`) plus a margin for the log and metrics.
* :func:`writing`: a write site's failure (ENOSPC, EDQUOT, EROFS, EIO; an MXNet or OpenCV write that
  fails on a full or read-only file system) becomes :class:`WriteFailed` naming the file, which the
  engine turns into :class:`~mxrepro.engine.config.DiskFull` (one line, exit status 3).
"""
import contextlib
import errno
import os
import shutil

from ..fileio import nearest_existing as _existing, probe_writable
from .config import UsageError

__all__ = ["DISK_ERRNOS", "WriteFailed", "writing", "disk_errno", "mount_point", "free_bytes", "check_outputs",
           "check_output_file", "probe_writable", "checkpoint_bytes", "states_per_param", "check_free_space",
           "count_params", "check_start_space", "verify_saved", "guard_saves", "full_message", "append_line", "describe", "remedy", "MB"]

DISK_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO}
MB = 1024.0 * 1024.0
LOW_SPACE = 1 << 20   # a write that fails with less than this free counts as "disk full"

# optimizer states kept per parameter (momentum, Adam's mean and variance, ...); unknown names: 2
_STATES = {"sgd": 1, "nag": 1, "nag_original": 1, "signum": 1, "lars": 1, "lbsgd": 1, "adagrad": 1, "rmsprop": 1,
           "adam": 2, "adamw": 2, "nadam": 2, "adamax": 2, "lamb": 2, "adadelta": 2, "ftrl": 2, "dcasgd": 2,
           "ftml": 3, "sgld": 0}


class WriteFailed(Exception):
    """A write to ``path`` failed because of the disk (``errno`` one of DISK_ERRNOS)."""

    def __init__(self, path, err, reason):
        super().__init__("%s: %s" % (path, reason))
        self.path, self.errno, self.reason = path, err, reason


def mount_point(path):
    """The mount point of the file system that holds (or would hold) ``path``."""
    p = _existing(path)
    while not os.path.ismount(p):
        p = os.path.dirname(p)
    return p


def free_bytes(path):
    """Bytes an unprivileged writer may still use on the file system of ``path`` (tests replace this)."""
    return shutil.disk_usage(_existing(path)).free


def disk_errno(path):
    """EROFS when the file system of ``path`` is read-only, ENOSPC when it is (nearly) full, else None:
    the cause of a write that failed without an errno (MXNet's and OpenCV's writers)."""
    try:
        st = os.statvfs(_existing(path))
    except OSError:
        return None
    if st.f_flag & os.ST_RDONLY:
        return errno.EROFS
    if free_bytes(path) < LOW_SPACE:
        return errno.ENOSPC
    return None


def describe(err):
    """A few words for a disk errno ("disk full", ...)."""
    return {errno.ENOSPC: "disk full", errno.EDQUOT: "disk quota exceeded", errno.EROFS: "read-only file system",
            errno.EIO: "I/O error"}.get(err, os.strerror(err))


def remedy(err, path):
    """What to do about ``err`` on the file system of ``path``."""
    fs = mount_point(path)
    if err in (errno.ENOSPC, errno.EDQUOT):
        return "free space on %s" % fs
    if err == errno.EROFS:
        return "make %s writable" % fs
    return "check the disk of %s" % fs


@contextlib.contextmanager
def writing(path):
    """Run a write to ``path``; a disk failure becomes :class:`WriteFailed` (other errors pass through)."""
    try:
        yield
    except WriteFailed:
        raise
    except OSError as e:
        if e.errno not in DISK_ERRNOS:
            raise
        raise WriteFailed(path, e.errno, e.strerror or describe(e.errno))
    except Exception as e:  # MXNet's stream writer and others report no errno: ask the file system
        err = disk_errno(path)
        if err is None:
            raise
        raise WriteFailed(path, err, os.strerror(err))


# -- writable before the first step ---------------------------------------------------------------
def check_output_file(path, flag):
    """UsageError unless ``path`` is a writable file or can be created as one (nothing is written)."""
    p = os.path.abspath(path)
    if os.path.isdir(p):
        raise UsageError("%s %s is a folder, not a file: give a file name" % (flag, path))
    if os.path.exists(p):
        try:
            with open(p, "a"):
                pass
        except OSError as e:
            raise UsageError("%s %s is not writable (%s): choose another path" % (flag, path, e.strerror or e))
        return
    why = probe_writable(os.path.dirname(p))
    if why:
        raise UsageError("%s %s is not writable (%s): choose another path" % (flag, path, why))


def check_outputs(cfg):
    """Every path of ``cfg.output_paths()`` writable (one UsageError naming the flag and the path)."""
    from .config import check_output_dir
    seen = set()
    for flag, path, kind in cfg.output_paths():
        key = os.path.abspath(path)
        if key in seen:
            continue
        seen.add(key)
        if kind == "dir":
            check_output_dir(path, flag)
        else:
            check_output_file(path, flag)


# -- free space --------------------------------------------------------------------------------------
def states_per_param(opt):
    """Optimizer state arrays per parameter for an OptimizerSpec (fp16 master copies included)."""
    n = _STATES.get(str(opt.name).lower(), 2)
    if str(opt.name).lower() in ("sgd", "signum") and not opt.momentum:
        n = 0
    return n + (1 if opt.multi_precision else 0)


def checkpoint_bytes(num_params, opt):
    """Size of one checkpoint: float32 parameters plus the optimizer's states, plus 64 KiB of headers."""
    return int(num_params) * 4 * (1 + states_per_param(opt)) + (64 << 10)


def copies(cfg, done=0):
    """Checkpoint copies the rest of the run adds: ``latest`` and ``best`` (independent files) and, while one
    epoch's unit is written, their new copies beside the old ones (a resumed run holds the old ones
    already); every periodic ``NNNN`` still to come (they are kept) and FBN's warm-up checkpoint."""
    sf = cfg.save_frequency
    periodic = sum(1 for e in range(done + 1, cfg.epochs + 1) if sf and (e % sf == 0 or e == cfg.epochs))
    return (2 if done else 4) + periodic + (1 if cfg.warmup_phase and not done else 0)


def log_bytes(cfg, batches_per_epoch):
    """Margin for the log and metrics: 1 MiB + 1 KiB per logged line of the whole run."""
    lines_per_epoch = (batches_per_epoch or 1000) // max(cfg.log_interval, 1) + 2 if cfg.log_interval else 2
    return (1 << 20) + cfg.epochs * lines_per_epoch * 1024


def check_free_space(cfg, num_params, batches_per_epoch=None, done=0):
    """UsageError with the numbers when a file system the run writes to has less free space than
    ``copies(cfg, done)`` checkpoints (checkpoint folder) plus the log margin (log folder). Returns the needs."""
    ck = checkpoint_bytes(num_params, cfg.optimizer)
    n = copies(cfg, done)
    lb = log_bytes(cfg, batches_per_epoch)
    need = {}   # mount point -> [bytes, what, a path on it, the flag]
    for path, size, what, flag in ((cfg.ckpt_dir, ck * n, "%d checkpoints of %.1f MB" % (n, ck / MB),
                                    cfg.flag("checkpoint_dir") if cfg.checkpoint_dir else cfg.flag("output_dir")),
                                   (cfg.log_path, lb, "%.1f MB for the log and metrics" % (lb / MB),
                                    cfg.flag("log_file") if "log_file" in cfg.flags else cfg.flag("output_dir"))):
        fs = mount_point(path)
        if fs in need:
            need[fs][0] += size
            need[fs][1] += " + " + what
        else:
            need[fs] = [size, what, path, flag]
    for fs, (size, what, path, flag) in need.items():
        free = free_bytes(path)
        if free < size:
            raise UsageError("not enough free space on %s for %s %s: needs %.1f MB (%s), %.1f MB free; free space "
                             "there or choose another %s" % (fs, flag, path, size / MB, what, free / MB, flag))
    return need


def count_params(model, input_shape):
    """Parameters (with BN statistics) of a Gluon block or Symbol for one input of ``input_shape``,
    from shape inference (nothing is initialised); None when the shapes cannot be inferred."""
    import mxnet as mx
    import numpy as np
    try:
        sym = model if isinstance(model, mx.sym.Symbol) else model(mx.sym.var("data"))
        arg, _, aux = sym.infer_shape(data=(1,) + tuple(input_shape))
        if arg is None:
            return None
        names = sym.list_arguments()
        return int(sum(np.prod(s) for n, s in zip(names, arg) if n != "data" and not n.endswith("label"))
                   + sum(np.prod(s) for s in aux or ()))
    except Exception:  # an unusual model: the check falls back to the parameter count after the step is built
        return None


def check_start_space(engine):
    """:func:`check_free_space` for a prepared Engine (model built, resume plan known; a dry run notes a
    shortfall in its plan); returns the parameter count, or None when the shapes are known only once
    the step is built (checked then)."""
    cfg, data = engine.cfg, engine.data
    n = data.num_train() if engine.have_data else None
    upe = data.batches_per_epoch(n, engine.per_worker, engine.workers) if n else None
    params = count_params(engine.model, cfg.input_shape)
    if params is not None:
        meta = engine.ckpt_plan[1]
        try:
            check_free_space(cfg, params, min(upe, cfg.max_batches or upe) if upe else None,
                             done=int(meta["epoch"]) if meta else 0)
        except UsageError as e:
            if not cfg.dry_run:
                raise
            cfg.notes.append(str(e))   # a plan made elsewhere: said, not refused
    return params


def verify_saved(path):
    """After ``mx.nd.save(path, ...)``: on a (nearly) full file system MXNet can lose the file's last
    buffered bytes without an error, so there the file is read back; a short file raises ENOSPC."""
    if disk_errno(path) != errno.ENOSPC:
        return
    import mxnet as mx
    try:
        mx.nd.load(path)
    except mx.base.MXNetError:
        raise OSError(errno.ENOSPC, "No space left on device (the file was cut short)", path)


def guard_saves(ckpt):
    """Make every ``ckpt.save(tags, ...)`` report a disk failure as :class:`WriteFailed` naming the checkpoint
    (the first of the unit's tags)."""
    save = ckpt.save

    def guarded(tags, *args, **kw):
        with writing(ckpt.path(tags if isinstance(tags, str) else list(tags)[0], ".params")):
            return save(tags, *args, **kw)
    ckpt.save = guarded
    return ckpt


def full_message(e, epoch, ckpt_dir, prefix):
    """The one line of a run stopped by :class:`WriteFailed` ``e`` at ``epoch``, naming the last complete
    checkpoint as a re-run will find it."""
    from .checkpoint import Checkpointer
    last = Checkpointer(ckpt_dir, prefix, None).find_resume()
    return "%s while writing %s at epoch %d: %s and run the same command to resume; %s" % (
        describe(e.errno), e.path, epoch, remedy(e.errno, e.path),
        "the last complete checkpoint is %s (epoch %d)" % (last["params_path"], last["epoch"]) if last
        else "no checkpoint was complete yet")


def append_line(path, text):
    """Append ``text`` to ``path``; a failed write is cut back to the previous end (no half line stays)."""
    with writing(path):
        size = os.path.getsize(path) if os.path.exists(path) else 0
        try:
            with open(path, "a") as f:
                f.write(text)
        except BaseException:
            try:
                os.truncate(path, size)
            except OSError:
                pass
            raise
