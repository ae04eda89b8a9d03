"""The gluon-cv training flags the AFF scripts share (open-aff's ``train_imagenet.py`` / ``train_cifar.py``
take them from gluon-cv's scripts, docs/reference/aff.md §3) and their translation into the engine's config.

``--batch-size`` is per device, as in gluon-cv: the global batch is ``--batch-size`` x devices x workers.
The learning rate is used as given (gluon-cv's scripts do not scale it with the batch).
"""
import os

from ..ckptfile import add_override_flag
from ..cli import device_count, expected_workers, given
from ..data import add_check_args
from ..engine import OptimizerSpec, ParamRule, ScheduleSpec, UsageError

__all__ = ["add_train_args", "check_train_args", "parse_epochs", "devices_from_args", "resume_from_args",
           "schedule_from_args", "optimizer_from_args", "FLAGS"]

FLAGS = dict(epochs="--num-epochs", global_batch="--batch-size", lr="--lr", warmup_epochs="--warmup-epochs",
             warmup_lr="--warmup-lr", decay_epochs="--lr-decay-epoch", num_classes="--num-classes", wd="--wd",
             momentum="--momentum", output_dir="--save-dir", devices="--gpus", fresh="--no-resume",
             resume="--resume-params", save_frequency="--save-frequency", log_interval="--log-interval",
             dtype="--dtype", decay_factor="--lr-decay", decay_period="--lr-decay-period", target_lr="--target-lr")


def add_train_args(parser):
    """Add the gluon-cv training flags; set per-script defaults with ``parser.set_defaults(...)`` afterwards."""
    g = parser.add_argument_group("training (gluon-cv flags)")
    g.add_argument("--batch-size", type=int, default=128, help="batch size PER DEVICE (x devices x workers = global)")
    g.add_argument("--num-gpus", type=int, default=0, help="number of GPUs (0 = CPU); --gpus wins when given")
    g.add_argument("--gpus", type=str, default=None, help="GPU ids such as 0,1 ('' = CPU); overrides --num-gpus")
    g.add_argument("-j", "--num-data-workers", dest="num_workers", type=int, default=4,
                   help="data loading workers / decoding threads")
    g.add_argument("--num-epochs", type=int, default=120, help="training epochs")
    g.add_argument("--optimizer", type=str, default="nag", help="optimizer (nag = Nesterov SGD)")
    g.add_argument("--lr", type=float, default=0.1, help="peak learning rate (not scaled with the batch size)")
    g.add_argument("--momentum", type=float, default=0.9, help="momentum")
    g.add_argument("--wd", type=float, default=1e-4, help="weight decay")
    g.add_argument("--no-wd", action="store_true", help="no weight decay on BN gamma/beta and biases")
    g.add_argument("--lr-mode", type=str, default="cosine", choices=["step", "cosine", "poly", "linear", "constant"],
                   help="schedule after the warm-up")
    g.add_argument("--lr-decay", type=float, default=0.1, help="step decay factor")
    g.add_argument("--lr-decay-period", type=int, default=0,
                   help="decay every N epochs (step mode); 0 = use --lr-decay-epoch")
    g.add_argument("--lr-decay-epoch", type=str, default="40,60", help="epochs at which step mode decays, e.g. 30,60")
    g.add_argument("--warmup-epochs", type=int, default=0, help="linear warm-up epochs from --warmup-lr")
    g.add_argument("--warmup-lr", type=float, default=0.0, help="learning rate at the start of the warm-up")
    g.add_argument("--target-lr", type=float, default=0.0, help="final learning rate of cosine/poly/linear")
    g.add_argument("--lr-step-per", type=str, default="iteration", choices=["iteration", "epoch"],
                   help="update the learning rate every iteration (gluon-cv) or once per epoch (PyTorch)")
    g.add_argument("--label-smoothing", action="store_true", help="label smoothing with eta 0.1")
    g.add_argument("--mixup", action="store_true", help="mixup training")
    g.add_argument("--mixup-alpha", type=float, default=0.2, help="mixup Beta(alpha, alpha)")
    g.add_argument("--mixup-off-epoch", type=int, default=0, help="no mixup during the last N epochs")
    g.add_argument("--dtype", type=str, default="float32", choices=["float32", "float16"],
                   help="float16 = fp16 weights with fp32 master copies (GPUs only)")
    g.add_argument("--mode", type=str, default="hybrid", choices=["hybrid", "imperative"],
                   help="hybrid = hybridize the network (static graph)")
    g.add_argument("--kv-store", type=str, default="device",
                   help="kvstore: local, device, dist_sync, dist_device_sync, dist_async (needs tools/launch.py), "
                        "horovod")
    g.add_argument("--save-dir", type=str, default=None,
                   help="the run's folder: checkpoints, log and metrics (default: runs/aff/<run name>)")
    g.add_argument("--save-frequency", "--save-period", dest="save_frequency", type=int, default=10,
                   help="periodic checkpoint every N epochs (latest is written every epoch, best on improvement); "
                        "0 = only those")
    g.add_argument("--resume-epoch", type=int, default=None,
                   help="resume from SAVE_DIR/<run>-NNNN.params of this epoch (default: the latest checkpoint)")
    g.add_argument("--resume-params", type=str, default="", help="parameters to resume from (with --resume-epoch "
                   "or its .json beside it)")
    g.add_argument("--resume-states", type=str, default="", help="trainer states to resume from (default: beside "
                   "--resume-params)")
    g.add_argument("--auto-resume", action="store_true",
                   help="resume from the latest checkpoint in --save-dir (the default; kept for old command lines)")
    g.add_argument("--no-resume", action="store_true", help="start from scratch, overwriting the run's checkpoints")
    g.add_argument("--resume-changed", action="store_true",
                    help="continue the checkpoint although settings that define the run changed (a plain "
                         "re-run with other settings stops and lists them); the new settings are recorded")
    g.add_argument("--pretrained", type=str, default="",
                   help="start from these weights (this project's .params, or a released checkpoint converted by "
                        "name, docs/weights.md) with a fresh schedule")
    add_override_flag(g)
    g.add_argument("--log-interval", type=int, default=50, help="log every N batches")
    g.add_argument("--logging-file", type=str, default="",
                   help="log file; a relative path lands in --save-dir (default: SAVE_DIR/<run>.log)")
    g.add_argument("--seed", type=int, default=0, help="random seed (data order, augmentation, init)")
    g.add_argument("--max-batches", type=int, default=0, help="cap batches per epoch (smoke runs); 0 = all")
    add_check_args(g)
    g.add_argument("--dry-run", action="store_true", help="print the resolved plan and the command, write nothing")
    return parser


def check_train_args(args, argv):
    """The checks of the shared gluon-cv flags that the engine's RunConfig.validate does not make (flags that
    contradict each other, loader settings); one-line UsageErrors naming the flag."""
    if args.num_workers < 0:
        raise UsageError("-j/--num-data-workers %d must be >= 0 (0 = load in the training process)" % args.num_workers)
    if args.resume_epoch is not None and args.resume_epoch < 0:
        raise UsageError("--resume-epoch %d must be >= 0" % args.resume_epoch)
    if args.no_resume:
        for flag in ("--resume-epoch", "--resume-params", "--resume-states", "--auto-resume"):
            if given(argv, flag):
                raise UsageError("--no-resume starts from scratch but %s asks to resume: drop one of them" % flag)
    start = "--pretrained" if args.pretrained else "--resume-from" if getattr(args, "resume_from", "") else None
    if start and (args.resume_params or args.resume_epoch is not None):
        raise UsageError("%s starts fresh from weights but %s continues a checkpoint: pass one of them"
                         % (start, "--resume-params" if args.resume_params else "--resume-epoch"))
    if args.resume_states and not args.resume_params:
        raise UsageError("--resume-states %s needs --resume-params (the parameters the states belong to)"
                         % args.resume_states)
    if args.mixup_off_epoch and not (args.mixup or getattr(args, "orig_always_mixup", False)) \
            and given(argv, "--mixup-off-epoch"):
        raise UsageError("--mixup-off-epoch %d has no effect without --mixup: add --mixup or drop it"
                         % args.mixup_off_epoch)


def parse_epochs(text, flag="--lr-decay-epoch"):
    """``'300,350'`` -> [300.0, 350.0]; empty -> []."""
    try:
        return [float(e) for e in str(text).split(",") if e.strip()]
    except ValueError:
        raise UsageError("%s expects comma-separated epochs such as 30,60, got %r" % (flag, text))


def devices_from_args(args):
    """The ``--gpus`` string (``--gpus`` wins, else ``--num-gpus N`` -> 0..N-1)."""
    if getattr(args, "gpus", None) is not None:
        return args.gpus
    n = int(getattr(args, "num_gpus", 0) or 0)
    if n < 0:
        raise UsageError("--num-gpus %d must be >= 0" % n)
    return ",".join(str(i) for i in range(n))


def global_batch(args, devices):
    if args.batch_size < 1:
        raise UsageError("--batch-size %d must be at least 1 (it is per device)" % args.batch_size)
    return args.batch_size * device_count(devices) * expected_workers(args.kv_store)


def resume_from_args(args, save_dir, prefix):
    """(resume, resume_epoch, resume_states) for the engine from the gluon-cv resume flags."""
    if args.no_resume:
        return "fresh", None, ""
    if args.resume_params:
        return args.resume_params, args.resume_epoch, args.resume_states
    if args.resume_epoch is not None:
        return os.path.join(save_dir, "%s-%04d.params" % (prefix, args.resume_epoch)), args.resume_epoch, \
            args.resume_states
    return "auto", None, ""


def schedule_from_args(args, warmup_epochs=None, decay_shift=0.0, mode=None):
    return ScheduleSpec(mode=mode or args.lr_mode, decay_epochs=parse_epochs(args.lr_decay_epoch),
                        factor=args.lr_decay, decay_period=args.lr_decay_period, decay_shift=decay_shift,
                        warmup_epochs=args.warmup_epochs if warmup_epochs is None else warmup_epochs,
                        warmup_lr=args.warmup_lr, target_lr=args.target_lr, per=args.lr_step_per)


def optimizer_from_args(args, no_wd=None):
    rules = [ParamRule(r".*beta|.*gamma|.*bias", wd_mult=0.0, why="--no-wd")] if (
        args.no_wd if no_wd is None else no_wd) else []
    return OptimizerSpec(args.optimizer, args.momentum, args.wd, rules=rules, multi_precision=args.dtype != "float32")


def log_flags(args):
    """``{'log_file': flag}`` when the user chose the log's place (messages then name that flag), else {}."""
    for name, flag in (("logging_dir", "--logging-dir"), ("logging_file", "--logging-file")):
        if getattr(args, name, None):
            return {"log_file": flag}
    return {}


def log_path(args, save_dir, prefix):
    if not args.logging_file:
        return os.path.join(save_dir, prefix + ".log")
    return args.logging_file if os.path.isabs(args.logging_file) else os.path.join(save_dir, args.logging_file)
