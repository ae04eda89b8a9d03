"""FBN recipe: the command lines of the original ``cifar/train_cifar.py`` and ``imagenet/train_imagenet.py``
(docs/reference/fbn.md §5) mapped onto the engine, for the Module-API symbol networks of ``symbols/``.

Every published command line works unchanged (docs/reference/fbn.md §5.2, §5.4, the README). Switches beyond the
original:

* ``--reference-compat`` turns on the released code's quirks that affect the published numbers (each
  also has its own flag): weight decay on every parameter (``--wd-mode all``), CIFAR pad fill 255
  (``--pad-fill 255``), the released operator's DropFactor scaling (``--dropfactor-mode reference``)
  and data gradient (``--fb-grad-mode reference``), the original epoch size ``floor(N / batch)`` for
  the LR schedule (``--epoch-size-mode original``), and on ImageNet the MXNet-0.x Nesterov update
  (``--optimizer nag_original``). Defaults are the corrected behaviour: no weight decay on biases and
  BN gamma/beta, pad fill 127 (about the mean), inverted DropFactor, exact gradient, the schedule
  counted in the iterator's own batches, MXNet 1.9's NAG.
* ``--dry-run`` prints the resolved plan without data and writes nothing.
* Resume: a re-run of the same command continues from ``model/<prefix>-latest`` (or the newest
  ``model/<prefix>-NNNN.params``, including checkpoints of the original scripts);
  ``--retrain --model-load-epoch N [--model-load-prefix P]`` loads ``model/P-NNNN.params`` explicitly;
  ``--no-auto-resume`` starts over.

``--batch-size`` is the total over the devices of one worker (the original's meaning): the global
batch is ``--batch-size`` x workers.
"""
import argparse
import os

from ..ckptfile import add_override_flag, check_weights
from ..cli import HelpFormatter, expected_workers, given, script_argv
from ..data import IMAGENET_MEAN_RGB, RecordIterData, add_check_args, fbn_rec_kwargs
from ..engine import OptimizerSpec, ParamRule, RunConfig, ScheduleSpec, UsageError
from ..models.registry import get_model, list_models, model_info

__all__ = ["DATASETS", "build_parser", "config_from_args", "main"]

# Per dataset: the original's file names and defaults (docs/reference/fbn.md §5.1, §5.3). num_examples is the full
# dataset size, used only to show a plan without data (--dry-run).
DATASETS = {
    "cifar": dict(val="test.rec", num_examples=50000, data_shape=32, num_classes=10, network="inception-bn-small",
                  num_epoches=400, data_dir="data/cifar10", optimizer="sgd"),
    "imagenet": dict(val="val_256_q90.rec", num_examples=1281167, data_shape=224, num_classes=1000,
                     network="inception-bn", num_epoches=80, data_dir="data/imagenet", optimizer="nag"),
}
COMPAT_DEFAULTS = dict(wd_mode=("no-bias-bn", "all"), pad_fill=(127, 255), dropfactor_mode=("inverted", "reference"),
                       fb_grad_mode=("exact", "reference"), epoch_size_mode=("loader", "original"))
FLAGS = dict(epochs="--num-epoches", global_batch="--batch-size", lr="--lr", warmup_epochs="--fmconv-slowstart",
             warmup_lr="--fmconv-scale", decay_epochs="--lr-step", num_classes="--num-classes", wd="--wd",
             momentum="--mom", output_dir="--output-dir", checkpoint_dir="--output-dir", devices="--gpus",
             fresh="--no-auto-resume", resume="--retrain/--model-load-epoch", log_interval="--frequent",
             optimizer="--optimizer", kv_store="--kv-store")


def _networks(dataset):
    """The FBN symbol networks of the registry for 'cifar' (32x32 inputs) or 'imagenet' (224x224)."""
    size = DATASETS[dataset]["data_shape"]
    return [n for n in list_models(family="fbn", kind="symbol") if model_info(n).cfg.get("input_size") == size]


def build_parser(dataset):
    """Argument parser of the FBN training scripts; ``dataset`` is 'cifar' or 'imagenet'."""
    d = DATASETS[dataset]
    nets = _networks(dataset)
    p = argparse.ArgumentParser(
        description="Train %s networks (baselines and Factorized Bilinear Networks, ICCV 2017) with the MXNet Module "
                    "API. Every command line of the original repository works unchanged; see docs/fbn.md."
                    % ("CIFAR" if dataset == "cifar" else "ImageNet"), formatter_class=HelpFormatter)
    g = p.add_argument_group("devices and data")
    g.add_argument("--gpus", type=str, default=None,
                   help="comma-separated GPU ids, e.g. 0,1; empty string = CPU (default: GPU 0 if one is visible, "
                        "else the CPU)")
    g.add_argument("--data-dir", type=str, default=d["data_dir"],
                   help="folder with %s" % ("train.rec and test.rec" if dataset == "cifar" else
                                            "train_256_q90.rec / train_480_q90.rec and val_256_q90.rec"))
    g.add_argument("--data-type", type=str, default="cifar10" if dataset == "cifar" else "imagenet",
                   help="accepted for compatibility with the original scripts; unused")
    g.add_argument("--data-shape", type=int, default=d["data_shape"], help="input crop size")
    g.add_argument("--num-classes", type=int, default=d["num_classes"], help="number of classes")
    g.add_argument("--num-examples", type=int, default=None,
                   help="training images per epoch (all workers; default: every record of the training file, "
                        "counted from it)")
    if dataset == "imagenet":
        g.add_argument("--aug-level", type=int, default=2, choices=[1, 2, 3],
                       help="1: random crop+mirror on train_256_q90.rec; 2: +scale [0.533,1], aspect 0.25, HSL "
                            "(36,50,50) on train_480_q90.rec; 3: +rotation 10 and shear 0.1")
    else:
        g.add_argument("--pad-fill", type=int, default=None,
                       help="value of the 4-pixel padding before the random crop (default 127; the original "
                            "padded with MXNet's 255, restored by --reference-compat)")
    g.add_argument("--data-nthreads", type=int, default=4, help="decoding threads of the ImageRecordIter")
    add_check_args(g)
    g.add_argument("--kv-store", type=str, default="device",
                   help="kvstore type: local, device, nccl, dist_sync, dist_device_sync, dist_async")

    g = p.add_argument_group("network")
    g.add_argument("--network", type=str, default=d["network"], help="one of: " + ", ".join(nets))
    g.add_argument("--res-module-num", type=int, default=18,
                   help="modules per stage of resnet-small: 18 = ResNet-164, 111 = ResNet-1001")
    g.add_argument("--depth", type=int, default=50, help="depth of the ImageNet resnet (18/34/50/101/152/200/269)")
    g.add_argument("--bn-mom", type=float, default=0.9, help="BatchNorm momentum")
    g.add_argument("--workspace", type=int, default=512, help="convolution / FMConvolution1 workspace (MB)")
    g.add_argument("--fmconv-factor", type=int, default=20, help="number of factors F of the FB layer")
    g.add_argument("--fmconv-drop", type=float, default=0.5, help="DropFactor drop rate of the FB layer")
    g.add_argument("--dropfactor-mode", choices=["inverted", "reference", "paper"], default=None,
                   help="DropFactor scaling: inverted (default; train 1/q, test 1), reference (the released code: "
                        "train 1/q, test q), paper (Fig. 1: train 1, test q)")
    g.add_argument("--fb-grad-mode", choices=["exact", "reference"], default=None,
                   help="data gradient of the FB layer: exact (default) or reference (the released code's, "
                        "missing a factor x in the diagonal term; docs/reference/fbn.md §1.4)")
    g.add_argument("--memonger", action="store_true",
                   help="trade compute for memory: sets MXNET_BACKWARD_DO_MIRROR=1 (MXNet's built-in mirroring; "
                        "the original called the external mxnet-memonger search_plan, not packaged for MXNet 1.9)")

    g = p.add_argument_group("optimisation")
    g.add_argument("--lr", type=float, default=0.1, help="base learning rate")
    g.add_argument("--mom", type=float, default=0.9, help="momentum")
    g.add_argument("--wd", type=float, default=0.0001, help="weight decay")
    g.add_argument("--wd-mode", choices=["all", "no-bias-bn"], default=None,
                   help="parameters that get weight decay: no-bias-bn (default: every *_weight, no biases or BN "
                        "gamma/beta) or all (the original, --reference-compat)")
    g.add_argument("--optimizer", choices=["sgd", "nag", "nag_original"], default=None,
                   help="default: sgd (momentum) on CIFAR, nag (MXNet 1.9's Nesterov) on ImageNet; nag_original = "
                        "the MXNet-0.x Nesterov formula the original ran (ImageNet with --reference-compat)")
    g.add_argument("--batch-size", type=int, default=256, help="total batch size over all devices of a worker")
    g.add_argument("--num-epoches", type=int, default=d["num_epoches"], help="last epoch (absolute)")
    g.add_argument("--lr-step", type=str, default="",
                   help="comma-separated ABSOLUTE epochs at which the LR is multiplied by 0.1 (may be empty)")
    g.add_argument("--fmconv-slowstart", type=int, default=0,
                   help="epochs of linear LR warm-up from fmconv_scale*lr to lr (applies to every parameter)")
    g.add_argument("--fmconv-scale", type=float, default=0.1,
                   help="start ratio of the slow-start ramp; lr factor of --warmup and lr_mult of --fmconv")
    g.add_argument("--fmconv", action="store_true",
                   help="without slow-start: lr_mult fmconv_scale for parameters named bilinear*")
    g.add_argument("--freeze", action="store_true",
                   help="lr_mult 0 for every parameter whose name lacks 'cifar' (B-CNN baseline fine-tuning)")
    g.add_argument("--warmup", action="store_true",
                   help="first train one extra epoch at lr*fmconv_scale (saved as <prefix>-warm-0001)")
    g.add_argument("--epoch-size-mode", choices=["loader", "original"], default=None,
                   help="updates per epoch of the LR schedule: loader (default: the batches the iterator yields, "
                        "ceil(N / batch)) or original (floor(N / batch) as the original scheduler, so its steps fall "
                        "at update 39,000 / 58,500 on CIFAR at batch 128; --reference-compat)")
    g.add_argument("--init", type=str, default="xavier", choices=["xavier"],
                   help="initializer: Xavier gaussian, fan-in, magnitude 2 (the only one the original supports)")
    g.add_argument("--seed", type=int, default=0, help="random seed (MXNet, NumPy, iterators)")

    g = p.add_argument_group("checkpoints, logs, resume")
    g.add_argument("--model-prefix", type=str, default=None,
                   help="checkpoint name: model/<prefix>-symbol.json, model/<prefix>-NNNN.params/.states and "
                        "-latest/-best; log log/<prefix>.log (default: derived from network and classes)")
    g.add_argument("--output-dir", type=str, default=".", help="folder that holds model/ and log/")
    g.add_argument("--log-file", type=str, default=None,
                   help="log file, relative to --output-dir (default: OUTPUT_DIR/log/<prefix>.log)")
    g.add_argument("--frequent", type=int, default=50, help="log speed, metrics and LR every N batches")
    g.add_argument("--retrain", action="store_true", help="start from model/<model-load-prefix>-<model-load-epoch>")
    g.add_argument("--model-load-epoch", type=int, default=0, help="checkpoint epoch loaded by --retrain")
    g.add_argument("--model-load-prefix", type=str, default=None,
                   help="checkpoint prefix loaded by --retrain (default: --model-prefix)")
    g.add_argument("--begin-epoch", type=int, default=None,
                   help="epochs done at the --retrain checkpoint (default: --model-load-epoch)")
    g.add_argument("--pretrained", type=str, default="",
                   help="start from the parameters of this checkpoint (model/<prefix>-NNNN.params of any FBN network) "
                        "with a fresh schedule: parameters of the same name and shape are loaded, the others (e.g. a "
                        "head with another --num-classes) initialised")
    add_override_flag(g)
    g.add_argument("--auto-resume", dest="auto_resume", action="store_true", default=True,
                   help="continue from the newest checkpoint of --model-prefix if there is one (the default)")
    g.add_argument("--no-auto-resume", dest="auto_resume", action="store_false",
                   help="ignore existing checkpoints and start from scratch (overwriting them)")
    g.add_argument("--resume-changed", action="store_true",
                    help="continue the checkpoint although settings that define the run changed (a plain "
                         "re-run with other settings stops and lists them); the new settings are recorded")

    g = p.add_argument_group("modes")
    g.add_argument("--reference-compat", action="store_true",
                   help="reproduce the released code's quirks: --wd-mode all, --pad-fill 255, --dropfactor-mode "
                        "reference, --fb-grad-mode reference, --epoch-size-mode original, ImageNet --optimizer "
                        "nag_original (explicit flags win)")
    g.add_argument("--dry-run", action="store_true", help="print the resolved plan and the command, write nothing")
    p.set_defaults(dataset=dataset)
    return p


def _resolve(args):
    """Defaults that depend on other flags (compat mode, prefix)."""
    ds = DATASETS[args.dataset]
    for key, (fixed, ref) in COMPAT_DEFAULTS.items():
        if hasattr(args, key) and getattr(args, key) is None:
            setattr(args, key, ref if args.reference_compat else fixed)
    if args.optimizer is None:
        args.optimizer = "nag_original" if args.dataset == "imagenet" and args.reference_compat else ds["optimizer"]
    try:
        args.lr_steps = [int(x) for x in args.lr_step.replace(" ", "").split(",") if x != ""]
    except ValueError:
        raise UsageError("--lr-step expects comma-separated epochs such as 100,150 (or nothing), got %r" % args.lr_step)
    if args.model_prefix is None:
        args.model_prefix = ("cifar%d_%s" % (args.num_classes, args.network) if args.dataset == "cifar"
                             else "imagenet_%s" % args.network)
    return args


def _check(args):
    nets = _networks(args.dataset)
    if args.network not in nets:
        raise UsageError("--network %s is not a%s %s network; choose one of %s" % (
            args.network, "n" if args.dataset == "imagenet" else "", args.dataset, ", ".join(nets)))
    depths = model_info(args.network).cfg.get("depths")
    if depths and args.depth not in depths:
        raise UsageError("--depth %d is not a depth of %s; choose one of %s" % (
            args.depth, args.network, ", ".join(map(str, depths))))
    if "fmconv" in args.network or "bilinear" in args.network:
        if args.fmconv_factor < 1:
            raise UsageError("--fmconv-factor %d: the FB layer needs at least 1 factor" % args.fmconv_factor)
        if not 0.0 <= args.fmconv_drop < 1.0:
            raise UsageError("--fmconv-drop %s: a DropFactor drop rate must be in [0, 1)" % args.fmconv_drop)
    if args.res_module_num < 1:
        raise UsageError("--res-module-num %d: every stage needs at least 1 module" % args.res_module_num)
    if not 0 < args.fmconv_scale <= 1:
        raise UsageError("--fmconv-scale %g must be in (0, 1]" % args.fmconv_scale)
    if args.data_shape < 8:
        raise UsageError("--data-shape %d is too small" % args.data_shape)
    if args.frequent < 1:
        raise UsageError("--frequent %d must be at least 1" % args.frequent)
    if args.num_examples is not None and args.num_examples < 1:
        raise UsageError("--num-examples %d must be positive" % args.num_examples)
    if args.model_load_epoch < 0 or (args.begin_epoch is not None and args.begin_epoch < 0):
        raise UsageError("--model-load-epoch / --begin-epoch must be >= 0")
    if args.data_nthreads < 1:
        raise UsageError("--data-nthreads %d must be at least 1 (decoding threads)" % args.data_nthreads)
    if args.workspace < 1:
        raise UsageError("--workspace %d must be at least 1 (MB)" % args.workspace)
    if not 0 <= args.bn_mom < 1:
        raise UsageError("--bn-mom %g must be in [0, 1)" % args.bn_mom)
    if getattr(args, "pad_fill", None) is not None and not 0 <= args.pad_fill <= 255:
        raise UsageError("--pad-fill %d must be a pixel value in 0..255" % args.pad_fill)
    if args.retrain and args.pretrained:
        raise UsageError("--retrain continues a checkpoint and --pretrained starts fresh from one: pass one of them")


def _warnings(args, argv):
    """Flags the original accepted and ignored: one warning line each (the run goes on)."""
    out = []
    if not args.retrain:
        for flag in ("--model-load-epoch", "--model-load-prefix", "--begin-epoch"):
            if given(argv, flag):
                out.append("%s has no effect without --retrain" % flag)
    return out


def _rules(args, names_rule_for_warmup=False):
    """Weight-decay and learning-rate multipliers by name (docs/reference/fbn.md §3.2)."""
    rules = []
    if args.wd_mode == "no-bias-bn":
        rules.append(ParamRule(r"(_bias|_gamma|_beta)$", wd_mult=0.0, why="--wd-mode no-bias-bn"))
    if args.fmconv and args.fmconv_slowstart == 0:
        rules.append(ParamRule(r"^bilinear", lr_mult=args.fmconv_scale, why="--fmconv"))
    if args.freeze:
        rules.append(ParamRule("cifar", lr_mult=0.0, invert=True, why="--freeze"))
    return rules


def _train_file(args):
    if args.dataset == "cifar":
        return "train.rec"
    return "train_256_q90.rec" if args.aug_level == 1 else "train_480_q90.rec"


def config_from_args(args, argv):
    """(RunConfig, data spec, model builder) of parsed FBN arguments."""
    args = _resolve(args)
    _check(args)
    check_weights(args.pretrained, "--pretrained", not args.ignore_checksum, missing_ok=args.dry_run)
    ds = DATASETS[args.dataset]
    workers = expected_workers(args.kv_store)
    if args.gpus is None:
        from ..engine.loop import visible_gpus
        args.gpus = "0" if visible_gpus() else ""
    notes = ["quirk settings: wd-mode=%s%s dropfactor-mode=%s fb-grad-mode=%s epoch-size-mode=%s optimizer=%s (%s)" % (
        args.wd_mode, " pad-fill=%d" % args.pad_fill if args.dataset == "cifar" else "", args.dropfactor_mode,
        args.fb_grad_mode, args.epoch_size_mode, args.optimizer,
        "--reference-compat" if args.reference_compat else "corrected defaults")]
    if args.fmconv and args.fmconv_slowstart > 0:
        notes.append("--fmconv is ignored because --fmconv-slowstart > 0 (as in the original)")
    if args.memonger:
        os.environ["MXNET_BACKWARD_DO_MIRROR"] = "1"
        notes.append("--memonger: MXNET_BACKWARD_DO_MIRROR=1 (recompute cheap activations in backward)")
    rules = _rules(args)
    if args.freeze:
        names = get_model(args.network, **_net_kwargs(args, args.num_classes)).list_arguments()
        if not any("cifar" in n for n in names):
            raise UsageError("--freeze sets lr_mult 0 on every parameter whose name lacks 'cifar' (the B-CNN "
                             "baseline's head); network %s has no such head, so nothing would train" % args.network)
    warm = None
    if args.warmup:
        # the original's warm-up used the string optimizer 'sgd', whose rule exempts *_bias and *_beta
        wrules = ([ParamRule(r"(_bias|_beta)$", wd_mult=0.0, why="warm-up 'sgd' string optimizer")]
                  if args.reference_compat else _rules(args))
        warm = {"lr": args.lr * args.fmconv_scale,
                "optimizer": OptimizerSpec("sgd", args.mom, args.wd, clip_gradient=10.0, rules=wrules)}
    retrain_path = None
    if args.retrain:
        retrain_path = os.path.join(args.output_dir, "model", "%s-%04d.params" % (
            args.model_load_prefix or args.model_prefix, args.model_load_epoch))
    train_kw, val_kw = fbn_rec_kwargs(args.dataset, args.data_shape, getattr(args, "pad_fill", 127),
                                      getattr(args, "aug_level", 2), IMAGENET_MEAN_RGB)
    data = RecordIterData(os.path.join(args.data_dir, _train_file(args)), os.path.join(args.data_dir, ds["val"]),
                          train_kw, val_kw, last_batch="pad", threads=args.data_nthreads,
                          nominal_train=ds["num_examples"], num_examples=args.num_examples,
                          hint="Point --data-dir at the folder with the .rec files (see docs/fbn.md, Data)")
    data.set_check(args.data_check, args.skip_bad_records, crop=args.data_shape, crop_flag="--data-shape",
                   expect=args.data_shape if args.dataset == "cifar" else None,
                   expect_why="the CIFAR recipe pads by 4 and crops %d px without resizing, so a larger image is only "
                              "partly seen" % args.data_shape)
    cfg = RunConfig(
        family="fbn", model=args.network, model_kwargs=_net_kwargs(args, None), num_classes=args.num_classes,
        input_shape=(3, args.data_shape, args.data_shape), epochs=args.num_epoches,
        global_batch=args.batch_size * workers, lr=args.lr, devices=args.gpus, kv_store=args.kv_store,
        lr_rule="--batch-size %d per worker x %d worker(s); --lr as given" % (args.batch_size, workers),
        schedule=ScheduleSpec(mode="step", decay_epochs=args.lr_steps, factor=0.1, warmup_epochs=args.fmconv_slowstart,
                              warmup_lr=args.fmconv_scale * args.lr, warmup_mode="slowstart", per="iteration",
                              epoch_size="floor" if args.epoch_size_mode == "original" else "loader"),
        optimizer=OptimizerSpec(args.optimizer, args.mom, args.wd, clip_gradient=10.0, rules=rules),
        initializer="xavier_fbn", output_dir=args.output_dir, checkpoint_dir=os.path.join(args.output_dir, "model"),
        prefix=args.model_prefix,
        log_file=os.path.join(args.output_dir, args.log_file or os.path.join("log", args.model_prefix + ".log")),
        save_frequency=1, resume="fresh" if not args.auto_resume and not args.retrain else (retrain_path or "auto"),
        resume_epoch=(args.begin_epoch if args.begin_epoch is not None else args.model_load_epoch) if args.retrain
        else None, init_params=args.pretrained,
        resume_changed=args.resume_changed, warmup_phase=warm, seed=args.seed, log_interval=args.frequent, top_k=5,
        flags=dict(FLAGS, log_file="--log-file") if args.log_file else FLAGS,
        command=list(argv), notes=notes, dry_run=args.dry_run, log_auto=not given(argv, "--frequent"),
        warnings=_warnings(args, argv))
    return cfg, data, lambda classes: get_model(args.network, **_net_kwargs(args, classes))


def _net_kwargs(args, classes):
    kw = dict(res_module_num=args.res_module_num, depth=args.depth, fmconv_factor=args.fmconv_factor,
              fmconv_drop=args.fmconv_drop, bn_mom=args.bn_mom, workspace=args.workspace, memonger=args.memonger,
              dropfactor_mode=args.dropfactor_mode, grad_mode=args.fb_grad_mode)
    if classes is not None:
        kw["num_classes"] = classes
    return kw


def main(dataset, argv=None, prog=None):
    """Entry point of train_cifar.py / train_imagenet.py; returns the exit status."""
    import sys
    from ..engine import run
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(dataset).parse_args(argv)
    cfg, data, build = config_from_args(args, script_argv(prog or "python %s/train_%s.py" % (dataset, dataset), argv))
    return run(cfg, data, build)
