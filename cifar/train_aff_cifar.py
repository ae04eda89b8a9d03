#!/usr/bin/env python
"""Train AFF / iAFF (or plain) CIFAR ResNet / ResNeXt: the AFF reference's ``train_cifar.py`` command
lines, run by mxrepro.train (docs/aff.md; spec aff.md §3.2).

    python cifar/train_aff_cifar.py --model resnet --dataset cifar100 --blocks 5 --channel-times 4 \\
        --gpus 0 --start-layer 1 --num-epochs 400 --mode hybrid -j 2 --batch-size 128 --wd 0.0001 \\
        --lr 0.2 --lr-decay 0.1 --lr-decay-epoch 300,350

Data: ``--data-dir`` (default data/<dataset>) in the CIFAR layout of tools/prepare_cifar.py /
tools/prepare_digits.py (``train.rec``/``test.rec`` or ``images/{train,test}/<class>/``).

The reference's bugs are fixed by default; these switches restore them (docs/aff.md §5):
``--coarse-labels`` (train/test on the 20 CIFAR-100 superclasses with 100 outputs),
``--orig-no-wd`` (--no-wd ignored without --cosine), ``--orig-decay-shift`` (step decays moved
earlier by the warmup epochs), ``--orig-always-mixup`` (the paper-era script: mixup alpha 1 always on,
off for the last 20 epochs), ``--orig-resnext-last-gamma`` (ResNeXt last BN gamma always zero).
"""
import argparse
import logging
import os
import sys


import mxrepro  # noqa: E402  (sets OMP_NUM_THREADS before mxnet)
from mxrepro.common import setup_logging, worker_shard  # noqa: E402
from mxrepro.data import DatasetLoader, cifar_datasets, cifar_transforms, num_classes_of  # noqa: E402
from mxrepro.models import get_model  # noqa: E402
from mxrepro.models.aff import cifar_cli_model  # noqa: E402
from mxrepro.train import (TrainLoop, add_train_args, check_dtype, config_from_args,  # noqa: E402
                           contexts_from_args, make_kvstore)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="Train AFF/iAFF CIFAR ResNet/ResNeXt (AFF, WACV 2021).",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    m = p.add_argument_group("model (reference flags)")
    m.add_argument("--model", type=str, default="resnet",
                   help="resnet | resnext | resnext29_32x4d | resnext38_32x4d | resnext47_32x4d | a registered name")
    m.add_argument("--askc-type", type=str, default="ASKCFuse",
                   help="fusion: ASKCFuse (AFF), ResGlobLocaforGlobLocaCha (iAFF), DirectAdd, or an ablation "
                        "(ResGlobGlobCha, ResLocaLocaCha, AYforXplusY, XplusAYforY, AXYforXplusY, Concat, ...)")
    m.add_argument("--blocks", type=int, default=None, help="blocks per stage (default 5 for resnet, 4 for resnext)")
    m.add_argument("--channel-times", type=int, default=4, help="width multiplier of [16, 16, 32, 64]")
    m.add_argument("--start-layer", type=int, default=1, help="fusion in stages >= this (1-3; 4 = none)")
    m.add_argument("--r", type=int, default=None, help="fusion reduction (default 4 resnet, 16 resnext)")
    m.add_argument("--deep-stem", action="store_true", help="3-conv stem (resnet)")
    m.add_argument("--avg-down", action="store_true", help="AvgPool + 1x1 projection shortcuts (reference HEAD)")
    m.add_argument("--last-gamma", action="store_true", help="zero-init the last BN gamma of each block (resnext)")
    m.add_argument("--num-classes", type=int, default=None, help="output classes (default from --dataset)")
    m.add_argument("--summary", action="store_true", help="print parameters and multiply-adds, then exit")
    m.add_argument("--drop-rate", type=float, default=0.0, help="accepted for compatibility; unused (as the reference)")
    d = p.add_argument_group("data")
    d.add_argument("--dataset", type=str, default="cifar100", help="cifar10 | cifar100 | digits | other folder name")
    d.add_argument("--data-dir", type=str, default=None, help="dataset folder (default data/<dataset>)")
    d.add_argument("--use-rec", action="store_true", help="read train.rec/test.rec (default when they exist)")
    d.add_argument("--use-images", action="store_true", help="read images/{train,test}/<class>/ instead")
    d.add_argument("--auto_aug", "--auto-aug", dest="auto_aug", action="store_true",
                   help="AutoAugment (needs autogluon's policy; not available here)")
    r = p.add_argument_group("reference compatibility")
    r.add_argument("--cosine", action="store_true", help="linear warmup + cosine (the reference's switch)")
    r.add_argument("--save-plot-dir", type=str, default=None, help="write a train/test error plot here")
    r.add_argument("--logging-dir", type=str, default="logs", help="log folder (file train_<run>.log)")
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
    add_train_args(p)
    p.set_defaults(batch_size=128, num_epochs=400, lr=0.2, lr_mode="step", lr_decay_epoch="300,350",
                   warmup_epochs=None, mixup_alpha=1.0, mixup_off_epoch=40, num_workers=2, save_frequency=10)
    return p.parse_args(argv)


def build(args):
    """(net, registry name, run name, num_classes) from the arguments."""
    if args.coarse_labels and args.dataset != "cifar100":
        raise SystemExit("error: --coarse-labels only applies to --dataset cifar100")
    classes = args.num_classes or num_classes_of(args.dataset)
    if not classes:
        raise SystemExit("error: unknown --dataset %r: pass --num-classes" % args.dataset)
    try:
        name, kw = cifar_cli_model(args.model, args.askc_type, args.blocks, args.channel_times)
    except ValueError as e:
        raise SystemExit("error: %s" % e)
    kw.update(classes=classes)
    if args.start_layer != 1:
        kw["start_layer"] = args.start_layer
    if args.r:
        kw["fusion_r"] = args.r
    if args.avg_down:
        kw["avg_down"] = True
    is_resnext = "resnext" in name
    if args.deep_stem:
        if is_resnext:
            raise SystemExit("error: --deep-stem applies to --model resnet only")
        kw["deep_stem"] = True
    if is_resnext:
        kw["last_gamma"] = bool(args.last_gamma or args.orig_resnext_last_gamma)
    net = get_model(name, **kw)
    depth = 6 * kw.get("blocks", 5) + 2 if not is_resnext else None
    run = "%s-%s%s-s%d" % (args.dataset + ("_coarse" if args.coarse_labels else ""), name,
                          "-%d-c%d" % (depth, args.channel_times) if depth else "", args.start_layer)
    return net, name, run, classes


def main(argv=None):
    args = parse_args(argv)
    if args.auto_aug:
        raise SystemExit("error: --auto_aug needs the autogluon CIFAR AutoAugment policy, which is not installed "
                         "in this project; drop the flag (the published paper-era runs did not use it)")
    net, name, run, classes = build(args)
    if args.summary:
        from mxrepro.flops import count_macs, count_params
        import mxnet as mx
        tr, tot = count_params(net)
        rep = count_macs(net(mx.sym.var("data")), (1, 3, 32, 32))
        print("%s: %s, %d classes: %.3fM trainable parameters (%.3fM with BN statistics), %.4f G multiply-adds "
              "at 32x32" % (run, name, classes, tr / 1e6, tot / 1e6, rep.gmacs))
        return 0
    contexts = contexts_from_args(args)
    check_dtype(args.dtype, contexts)
    log_file = args.logging_file or os.path.join(args.logging_dir, "train_%s.log" % run)
    setup_logging(log_file)
    logging.info("arguments: %s", vars(args))

    # reference semantics: --cosine = warmup (default 10) + cosine; step mode has no warmup unless asked
    warm_given = args.warmup_epochs is not None
    warmup = args.warmup_epochs if warm_given else (10 if args.cosine else 0)
    overrides = dict(num_classes=classes, initializer="xavier", warmup_epochs=warmup,
                     save_prefix=run, init_params=args.resume_from)
    if args.cosine:
        overrides["lr_mode"] = "cosine"
    if args.orig_no_wd and args.no_wd and not args.cosine:
        logging.info("--orig-no-wd: --no-wd ignored without --cosine (reference behaviour)")
        overrides["no_wd"] = False
    if args.orig_decay_shift:
        overrides["lr_decay_shift"] = args.warmup_epochs if warm_given else 10
    if args.orig_always_mixup:
        overrides.update(mixup=True, mixup_alpha=1.0, mixup_off_epoch=20)
    kv = make_kvstore(args.kv_store)
    cfg = config_from_args(args, **overrides)
    cfg.kv_store = args.kv_store

    data_dir = args.data_dir or os.path.join(mxrepro.ROOT, "data", "cifar100_coarse" if args.coarse_labels
                                             else args.dataset)
    use_rec = args.use_rec or (not args.use_images and os.path.exists(os.path.join(data_dir, "train.rec")))
    try:
        train_set, test_set = cifar_datasets(data_dir, use_rec=use_rec, dataset=args.dataset)
    except FileNotFoundError as e:
        raise SystemExit("error: %s" % e)
    part, parts = worker_shard(kv if not isinstance(kv, str) else None)
    bs = args.batch_size * len(contexts)
    train = DatasetLoader(train_set, bs, cifar_transforms(True), train=True, num_workers=args.num_workers,
                          num_parts=parts, part_index=part, seed=args.seed)
    test = DatasetLoader(test_set, bs, cifar_transforms(False), train=False, num_workers=args.num_workers)
    logging.info("model %s (%s), %d classes, data %s (%s), %d train / %d test images, batch %d on %s", name, run,
                 classes, data_dir, "rec" if use_rec else "images", len(train_set), len(test_set), bs, contexts)

    hooks = []
    if args.save_plot_dir:
        hooks.append(_PlotHook(os.path.join(args.save_plot_dir, "%s_history.png" % run)))
    loop = TrainLoop(net, cfg, contexts, train, test, hooks=hooks, kvstore=kv)
    loop.run()
    logging.info("best test top-1 %.4f at epoch %d", loop.best["top1"], loop.best["epoch"])
    return 0


class _PlotHook:
    """Train/test error curves after every epoch (gluon-cv TrainingHistory, as the reference)."""

    def __init__(self, path):
        from gluoncv.utils import TrainingHistory
        import matplotlib
        matplotlib.use("Agg")
        self.path, self.hist = path, TrainingHistory(["training-error", "test-error"])

    def on_epoch_end(self, loop, epoch, rec):
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        self.hist.update([1 - rec["train_top1"], 1 - rec.get("val_top1", 0.0)])
        self.hist.plot(save_path=self.path)


if __name__ == "__main__":
    from mxrepro.engine.dist import fail_fast
    with fail_fast():
        sys.exit(main())
