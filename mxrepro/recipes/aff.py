"""AFF recipes: the command lines of open-aff's ``train_imagenet.py`` and ``train_cifar.py`` (gluon-cv flags,
docs/reference/aff.md §3) mapped onto the engine.

The reference's bugs are fixed by default; these switches restore them (docs/aff.md §5):
``--coarse-labels`` (train/test on the 20 CIFAR-100 superclasses with 100 outputs), ``--orig-no-wd``
(--no-wd ignored without --cosine), ``--orig-decay-shift`` (step decays moved earlier by the warm-up
epochs), ``--orig-always-mixup`` (the paper-era CIFAR script: mixup alpha 1 always on, off for the last 20
epochs), ``--orig-resnext-last-gamma`` (ResNeXt last BN gamma always zero).
"""
import argparse
import os

from ..ckptfile import check_weights
from ..cli import HelpFormatter, given, script_argv
from ..data import (RecordIterData, cifar_data, gluoncv_rec_kwargs, imagenet_folder_data,
                    imagenet_transforms, num_classes_of)
from ..engine import RunConfig, UsageError
from ..models import get_model
from ..models.aff import cifar_cli_model, imagenet_cli_model
from . import gluoncv as G

__all__ = ["cifar_parser", "imagenet_parser", "cifar_config", "imagenet_config", "main_cifar", "main_imagenet",
           "summary"]


def _model_args(m):
    m.add_argument("--askc-type", type=str, default="ASKCFuse",
                   help="fusion: ASKCFuse (AFF), ResGlobLocaforGlobLocaCha (iAFF), DirectAdd (baseline), the "
                        "Table 3/4 ablations (ResGlobGlobCha, ResLocaLocaCha, AYforXplusY, XplusAYforY, "
                        "AXYforXplusY, Concat, ...) or another fusion of mxrepro.models.fusions")
    m.add_argument("--summary", action="store_true", help="print parameters and multiply-adds, then exit")


# ------------------------------------------------------------------------------------------------- CIFAR
def cifar_parser():
    p = argparse.ArgumentParser(description="Train AFF/iAFF CIFAR ResNet/ResNeXt (AFF, WACV 2021) on the shared "
                                            "engine; open-aff's train_cifar.py command lines.",
                                formatter_class=HelpFormatter)
    m = p.add_argument_group("model (reference flags)")
    m.add_argument("--model", type=str, default="resnet",
                   help="resnet | resnext | resnext29_32x4d | resnext38_32x4d | resnext47_32x4d | a registered name")
    _model_args(m)
    m.add_argument("--blocks", type=int, default=None, help="blocks per stage (default 5 for resnet, 4 for resnext)")
    m.add_argument("--channel-times", type=int, default=4, help="width multiplier of [16, 16, 32, 64]")
    m.add_argument("--start-layer", type=int, default=1, help="fusion in stages >= this (1-3; 4 = none)")
    m.add_argument("--r", type=int, default=None, help="fusion reduction (default 4 resnet, 16 resnext)")
    m.add_argument("--deep-stem", action="store_true", help="3-conv stem (resnet)")
    m.add_argument("--avg-down", action="store_true", help="AvgPool + 1x1 projection shortcuts (reference HEAD)")
    m.add_argument("--last-gamma", action="store_true", help="zero-init the last BN gamma of each block (resnext)")
    m.add_argument("--num-classes", type=int, default=None, help="output classes (default: from --dataset)")
    m.add_argument("--drop-rate", type=float, default=0.0, help="accepted for compatibility; unused (as the reference)")
    d = p.add_argument_group("data")
    d.add_argument("--dataset", type=str, default="cifar100", help="cifar10 | cifar100 | digits | other folder name")
    d.add_argument("--data-dir", type=str, default=None, help="dataset folder (default: data/<dataset>)")
    d.add_argument("--use-rec", action="store_true", help="read train.rec/test.rec (the default when they exist)")
    d.add_argument("--use-images", action="store_true", help="read images/{train,test}/<class>/ instead")
    d.add_argument("--auto_aug", "--auto-aug", dest="auto_aug", action="store_true",
                   help="AutoAugment (needs autogluon's policy; not available here)")
    r = p.add_argument_group("reference compatibility")
    r.add_argument("--cosine", action="store_true", help="linear warm-up + cosine (the reference's switch)")
    r.add_argument("--save-plot-dir", type=str, default=None, help="write a train/test error plot here")
    r.add_argument("--logging-dir", type=str, default=None,
                   help="log folder (file train_<run>.log; default: --save-dir)")
    r.add_argument("--resume-from", type=str, default="", help="start from these weights with a fresh schedule")
    r.add_argument("--coarse-labels", action="store_true",
                   help="ORIGINAL BUG: data prepared with the 20 CIFAR-100 superclasses (default dir "
                        "data/cifar100_coarse), 100 outputs as the reference")
    r.add_argument("--orig-no-wd", action="store_true", help="ORIGINAL BUG: --no-wd only acts with --cosine")
    r.add_argument("--orig-decay-shift", action="store_true",
                   help="ORIGINAL BUG: step decays at EPOCH - warmup (290/440 for 300,450 with warmup 10)")
    r.add_argument("--orig-always-mixup", action="store_true",
                   help="paper-era script: mixup alpha 1 on every run, off for the last 20 epochs")
    r.add_argument("--orig-resnext-last-gamma", action="store_true",
                   help="ORIGINAL BUG: ResNeXt last BN gamma zero-initialised whatever --last-gamma says")
    G.add_train_args(p)
    p.set_defaults(batch_size=128, num_epochs=400, lr=0.2, lr_mode="step", lr_decay_epoch="300,350",
                   warmup_epochs=None, mixup_alpha=1.0, mixup_off_epoch=40, num_workers=2, save_frequency=10)
    return p


def cifar_model(args):
    """(registry name, builder kwargs without classes, run name)."""
    if args.coarse_labels and args.dataset != "cifar100":
        raise UsageError("--coarse-labels only applies to --dataset cifar100")
    try:
        name, kw = cifar_cli_model(args.model, args.askc_type, args.blocks, args.channel_times)
    except ValueError as e:
        raise UsageError(str(e))
    if not 1 <= args.start_layer <= 4:
        raise UsageError("--start-layer %d must be 1-4: fusion in the stages >= it (4 = none)" % args.start_layer)
    if args.channel_times < 1:
        raise UsageError("--channel-times %d must be at least 1" % args.channel_times)
    if args.start_layer != 1:
        kw["start_layer"] = args.start_layer
    if args.r is not None:
        if args.r < 1:
            raise UsageError("--r %d: the fusion reduction ratio must be at least 1" % args.r)
        kw["fusion_r"] = args.r
    if args.avg_down:
        kw["avg_down"] = True
    is_resnext = "resnext" in name
    if args.deep_stem:
        if is_resnext:
            raise UsageError("--deep-stem applies to --model resnet only")
        kw["deep_stem"] = True
    if is_resnext:
        kw["last_gamma"] = bool(args.last_gamma or args.orig_resnext_last_gamma)
    if kw.get("blocks", 1) < 1:
        raise UsageError("--blocks %d: every stage needs at least 1 block" % kw["blocks"])
    depth = 6 * kw.get("blocks", 5) + 2 if not is_resnext else None
    run = "%s-%s%s-s%d" % (args.dataset + ("_coarse" if args.coarse_labels else ""), name,
                          "-%d-c%d" % (depth, args.channel_times) if depth else "", args.start_layer)
    return name, kw, run


def cifar_config(args, argv):
    G.check_train_args(args, argv)
    if args.use_rec and args.use_images:
        raise UsageError("--use-rec and --use-images ask for different inputs: pass one of them")
    if args.auto_aug:
        raise UsageError("--auto_aug needs the autogluon CIFAR AutoAugment policy, which is not installed in this "
                         "project; drop the flag (the published paper-era runs did not use it)")
    check_weights(args.pretrained or args.resume_from, "--pretrained" if args.pretrained else "--resume-from",
                  not args.ignore_checksum, missing_ok=args.dry_run)
    name, kw, run = cifar_model(args)
    devices = G.devices_from_args(args)
    save_dir = args.save_dir or os.path.join("runs", "aff", run)
    # reference semantics: --cosine = warm-up (default 10) + cosine; step mode has no warm-up unless asked
    warm_given = args.warmup_epochs is not None
    warmup = args.warmup_epochs if warm_given else (10 if args.cosine else 0)
    notes, no_wd = [], args.no_wd
    if args.orig_no_wd and args.no_wd and not args.cosine:
        notes.append("--orig-no-wd: --no-wd ignored without --cosine (reference behaviour)")
        no_wd = False
    mixup, alpha, off = args.mixup, args.mixup_alpha, args.mixup_off_epoch
    if args.orig_always_mixup:
        mixup, alpha, off = True, 1.0, 20
    data_dir = args.data_dir or os.path.join("data", "cifar100_coarse" if args.coarse_labels else args.dataset)
    use_rec = args.use_rec or (not args.use_images and os.path.exists(os.path.join(data_dir, "train.rec")))
    data = cifar_data(data_dir, use_rec=use_rec, dataset=args.dataset, num_workers=args.num_workers)
    data.set_check(args.data_check, args.skip_bad_records, crop=32, expect=32,
                   expect_why="the CIFAR recipe crops 32 px (pad 4) without resizing, so a larger image is only partly "
                              "seen")
    resume, repoch, rstates = G.resume_from_args(args, save_dir, run)
    log_file = os.path.join(args.logging_dir, "train_%s.log" % run) if args.logging_dir else G.log_path(args, save_dir, run)
    cfg = RunConfig(
        family="aff", model=name, model_kwargs=kw, num_classes=args.num_classes or num_classes_of(args.dataset),
        input_shape=(3, 32, 32), epochs=args.num_epochs, global_batch=G.global_batch(args, devices), lr=args.lr,
        lr_rule="--batch-size %d per device; --lr as given (not scaled with the batch)" % args.batch_size,
        devices=devices, kv_store=args.kv_store,
        schedule=G.schedule_from_args(args, warmup_epochs=warmup, mode="cosine" if args.cosine else None,
                                      decay_shift=(warmup if args.orig_decay_shift else 0.0)),
        optimizer=G.optimizer_from_args(args, no_wd=no_wd), initializer="xavier", dtype=args.dtype,
        hybridize=args.mode == "hybrid", label_smoothing=0.1 if args.label_smoothing else 0.0, mixup=mixup,
        mixup_alpha=alpha, mixup_off_epoch=off, output_dir=save_dir, prefix=run, log_file=log_file,
        save_frequency=args.save_frequency, resume=resume, resume_epoch=repoch, resume_states=rstates,
        resume_changed=args.resume_changed,
        init_params=args.pretrained or args.resume_from, seed=args.seed, log_interval=args.log_interval,
        log_auto=not given(argv, "--log-interval"),
        max_batches=args.max_batches, flags=dict(G.FLAGS, num_classes="--num-classes", **G.log_flags(args)),
        command=list(argv),
        notes=notes, dry_run=args.dry_run)
    if args.save_plot_dir:
        plot = os.path.join(args.save_plot_dir, "%s_history.png" % run)
        cfg.extra_outputs.append(("--save-plot-dir", plot))
        cfg.on_epoch.append(_PlotHook(plot))
    return cfg, data, lambda classes: get_model(name, classes=classes, **kw)


class _PlotHook:
    """Train/test error curves after every epoch (gluon-cv TrainingHistory, as the reference)."""

    def __init__(self, path):
        from gluoncv.utils import TrainingHistory
        import matplotlib
        matplotlib.use("Agg")
        self.path, self.hist = path, TrainingHistory(["training-error", "test-error"])

    def __call__(self, rec):
        from ..engine import disk
        self.hist.update([1 - rec["train_top1"], 1 - rec.get("val_top1", 0.0)])
        with disk.writing(self.path):
            os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
            self.hist.plot(save_path=self.path)


# ---------------------------------------------------------------------------------------------- ImageNet
def imagenet_parser():
    p = argparse.ArgumentParser(description="Train AFF/iAFF ResNet/ResNeXt on ImageNet (AFF, WACV 2021) on the "
                                            "shared engine; open-aff's train_imagenet.py command lines.",
                                formatter_class=HelpFormatter)
    m = p.add_argument_group("model (reference flags)")
    m.add_argument("--model", type=str, default="resnet",
                   help="resnet | resnext | resnext50_32x4d_askc (paper-era name) | a registered model name")
    _model_args(m)
    m.add_argument("--num-layer", type=int, default=50, help="depth: 50, 101 or 152")
    m.add_argument("--start-layer", type=int, default=3, help="fusion in stages >= this (1-4; 5 = none)")
    m.add_argument("--r", type=int, default=16, help="fusion reduction ratio")
    m.add_argument("--last-gamma", action="store_true", help="zero-init the last BN gamma of every bottleneck")
    m.add_argument("--deep-stem", action="store_true", help="3-conv stem (reference HEAD variant)")
    m.add_argument("--stem-width", type=int, default=None, help="deep-stem width (default 32 ResNet, 64 ResNeXt)")
    m.add_argument("--avg-down", action="store_true", help="AvgPool + 1x1 projection shortcuts (HEAD variant)")
    m.add_argument("--num-classes", type=int, default=None, help="output classes (default: from the data, 1000 for "
                                                                   "ImageNet)")
    m.add_argument("--use-pretrained", action="store_true", help="use --pretrained PATH (no weights ship with this "
                                                                  "project)")
    m.add_argument("--use-se", action="store_true", help="accepted for compatibility; unused (as the reference)")
    m.add_argument("--batch-norm", action="store_true", help="accepted for compatibility; unused")
    m.add_argument("--use-gn", action="store_true", help="accepted for compatibility; unused")
    d = p.add_argument_group("data")
    d.add_argument("--data-dir", type=str, default=None, help="image folders train/, val/ or the .rec files "
                                                               "(default: data/imagenet)")
    d.add_argument("--use-rec", action="store_true", help="read RecordIO with ImageRecordIter")
    d.add_argument("--rec-train", type=str, default=None, help="default: DATA_DIR/train.rec")
    d.add_argument("--rec-train-idx", type=str, default=None, help="default: DATA_DIR/train.idx")
    d.add_argument("--rec-val", type=str, default=None, help="default: DATA_DIR/val.rec")
    d.add_argument("--rec-val-idx", type=str, default=None, help="default: DATA_DIR/val.idx")
    d.add_argument("--input-size", type=int, default=224, help="training crop size")
    d.add_argument("--crop-ratio", type=float, default=0.875, help="evaluation crop / resize ratio")
    d.add_argument("--auto_aug", "--auto-aug", dest="auto_aug", action="store_true",
                   help="ignored with --use-rec, as in the reference (it was never applied to the published runs)")
    r = p.add_argument_group("reference compatibility")
    r.add_argument("--teacher", type=str, default=None, help="distillation is not supported")
    r.add_argument("--temperature", type=float, default=20, help="unused")
    r.add_argument("--hard-weight", type=float, default=0.5, help="unused")
    r.add_argument("--orig-resnext-last-gamma", action="store_true",
                   help="ORIGINAL BUG: ResNeXt last BN gamma always zero-initialised, whatever --last-gamma says")
    G.add_train_args(p)
    p.set_defaults(batch_size=128, num_epochs=160, lr=0.075, lr_mode="cosine", warmup_epochs=5, num_workers=4,
                   mixup_alpha=0.2, mixup_off_epoch=0, save_frequency=10)
    return p


def imagenet_model(args):
    if args.use_pretrained and not args.pretrained:
        raise UsageError("--use-pretrained: no AFF weights ship with this project; pass --pretrained PATH to a "
                         "checkpoint (docs/weights.md)")
    if args.teacher:
        raise UsageError("--teacher (distillation) is not supported by this reproduction")
    try:
        name, kw = imagenet_cli_model(args.model, args.askc_type, args.num_layer)
    except ValueError as e:
        raise UsageError(str(e))
    resnext = "resnext" in name
    kw.update(last_gamma=bool(args.last_gamma or (resnext and args.orig_resnext_last_gamma)))
    if args.r < 1:
        raise UsageError("--r %d: the fusion reduction ratio must be at least 1" % args.r)
    if not 1 <= args.start_layer <= 5:
        raise UsageError("--start-layer %d must be 1-5: fusion in the stages >= it (5 = none)" % args.start_layer)
    if args.stem_width is not None and args.stem_width < 1:
        raise UsageError("--stem-width %d must be at least 1" % args.stem_width)
    if name.startswith(("aff_", "iaff_")):
        kw.update(start_layer=args.start_layer, fusion_r=args.r)
    if args.deep_stem:
        kw.update(deep_stem=True, stem_width=args.stem_width or (64 if resnext else 32))
    if args.avg_down:
        kw["avg_down"] = True
    run = "imagenet-%s-s%d%s" % (name, args.start_layer, "-d" if args.deep_stem or args.avg_down else "")
    return name, kw, run


def imagenet_config(args, argv):
    G.check_train_args(args, argv)
    check_weights(args.pretrained, "--pretrained", not args.ignore_checksum, missing_ok=args.dry_run)
    if args.input_size < 32:
        raise UsageError("--input-size %d must be at least 32 (the network downsamples 32 times)" % args.input_size)
    if not 0 < args.crop_ratio <= 1:
        raise UsageError("--crop-ratio %g must be in (0, 1] (evaluation crop / resize)" % args.crop_ratio)
    name, kw, run = imagenet_model(args)
    devices = G.devices_from_args(args)
    save_dir = args.save_dir or os.path.join("runs", "aff", run)
    data_dir = args.data_dir or os.path.join("data", "imagenet")
    notes = []
    if args.use_rec or args.rec_train:
        if args.auto_aug:
            notes.append("--auto_aug is ignored with --use-rec (as in the reference)")
        tr, va = gluoncv_rec_kwargs(args.input_size, args.crop_ratio)
        rt = args.rec_train or os.path.join(data_dir, "train.rec")
        rv = args.rec_val or os.path.join(data_dir, "val.rec")
        data = RecordIterData(rt, rv, tr, va, last_batch="discard", threads=args.num_workers, nominal_train=1281167,
                              idx={rt: args.rec_train_idx, rv: args.rec_val_idx},
                              hint="Make them with `python tools/prepare_imagenet.py ROOT --out DIR --formats gluon` "
                                   "or pass --rec-train/--rec-val")
    else:
        if args.auto_aug:
            raise UsageError("--auto_aug needs autogluon's ImageNet AutoAugment policy, which is not installed here; "
                             "drop the flag")
        data = imagenet_folder_data(data_dir, imagenet_transforms(True, args.input_size),
                                    imagenet_transforms(False, args.input_size, args.crop_ratio), args.num_workers)
    data.set_check(args.data_check, args.skip_bad_records, crop=args.input_size, crop_flag="--input-size")
    resume, repoch, rstates = G.resume_from_args(args, save_dir, run)
    cfg = RunConfig(
        family="aff", model=name, model_kwargs=kw, num_classes=args.num_classes,
        input_shape=(3, args.input_size, args.input_size), epochs=args.num_epochs,
        global_batch=G.global_batch(args, devices), lr=args.lr,
        lr_rule="--batch-size %d per device; --lr as given (not scaled with the batch)" % args.batch_size,
        devices=devices, kv_store=args.kv_store, schedule=G.schedule_from_args(args),
        optimizer=G.optimizer_from_args(args), initializer="msra", dtype=args.dtype, hybridize=args.mode == "hybrid",
        label_smoothing=0.1 if args.label_smoothing else 0.0, mixup=args.mixup, mixup_alpha=args.mixup_alpha,
        mixup_off_epoch=args.mixup_off_epoch, output_dir=save_dir, prefix=run, log_file=G.log_path(args, save_dir, run),
        save_frequency=args.save_frequency, resume=resume, resume_epoch=repoch, resume_states=rstates,
        resume_changed=args.resume_changed,
        init_params=args.pretrained, seed=args.seed, log_interval=args.log_interval, max_batches=args.max_batches,
        log_auto=not given(argv, "--log-interval"), flags=dict(G.FLAGS, **G.log_flags(args)), command=list(argv),
        notes=notes, dry_run=args.dry_run)
    return cfg, data, lambda classes: get_model(name, classes=classes, **kw)


# ------------------------------------------------------------------------------------------------ shared
def summary(name, kw, classes, size, run):
    """Parameters and multiply-adds of the configured model (``--summary``)."""
    import mxnet as mx
    from .. import flops
    net = get_model(name, classes=classes, **kw)
    rep = flops.count_macs(net(mx.sym.var("data")), (1, 3, size, size))
    tr, tot = flops.count_params(net)
    return ("%s: %s, %d classes: %.3fM trainable parameters (%.3fM with BN statistics), %.4f G multiply-adds at %dx%d "
            "(%.4f G in the reference's counting)" % (run, name, classes, tr / 1e6, tot / 1e6, rep.gmacs, size, size,
                                                     rep.ref_gmacs))


def _main(parser, make, argv, prog, size_of, default_classes):
    import sys
    from ..engine import run
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser().parse_args(argv)
    if args.summary:
        name, kw, runname = (cifar_model if parser is cifar_parser else imagenet_model)(args)
        classes = args.num_classes or default_classes(args)
        print(summary(name, kw, classes, size_of(args), runname))
        return 0
    cfg, data, build = make(args, script_argv(prog, argv))
    return run(cfg, data, build)


def main_cifar(argv=None, prog="python cifar/train_aff_cifar.py"):
    return _main(cifar_parser, cifar_config, argv, prog, lambda a: 32, lambda a: num_classes_of(a.dataset, 100))


def main_imagenet(argv=None, prog="python imagenet/train_aff_imagenet.py"):
    return _main(imagenet_parser, imagenet_config, argv, prog, lambda a: a.input_size, lambda a: 1000)
