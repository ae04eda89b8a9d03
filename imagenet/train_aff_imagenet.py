#!/usr/bin/env python
"""Train AFF / iAFF (or plain) ResNet / ResNeXt on ImageNet: the AFF reference's
``train_imagenet.py`` command lines (gluon-cv flags), run by mxrepro.train (docs/aff.md; aff.md §3.1).

    python imagenet/train_aff_imagenet.py --askc-type ASKCFuse --mixup --mode hybrid --lr 0.075 \\
        --lr-mode cosine --num-epochs 180 --batch-size 128 --num-gpus 2 -j 48 --warmup-epochs 5 \\
        --dtype float16 --use-rec --last-gamma --no-wd --label-smoothing \\
        --save-dir params_resnet50_v1b_best_AFF --logging-file resnet50_v1b_best_AFF.log

Architecture: the paper-era v1b layout (7x7 stem, strided 1x1 shortcut), fusion r=16 in stages
>= --start-layer (3). ``--deep-stem --avg-down`` give the reference HEAD's ResNet-D-style variant.
Data: ``--use-rec`` reads ``--rec-train/--rec-val`` (default DATA_DIR/{train,val}.rec + .idx) with
ImageRecordIter; otherwise ``--data-dir`` holds ``train/<class>/`` and ``val/<class>/`` folders.

Fixed reference bug with a restoring switch (docs/aff.md §5): ``--orig-resnext-last-gamma`` (the
reference built ResNeXt without kwargs, so its last BN gamma was always zero, whatever
``--last-gamma`` said; by default ``--last-gamma`` means the same for ResNet and ResNeXt).
"""
import argparse
import logging
import os
import sys


import mxrepro  # noqa: E402  (sets OMP_NUM_THREADS before mxnet)
from mxrepro.common import setup_logging, worker_shard  # noqa: E402
from mxrepro.data import (DatasetLoader, imagenet_folder_datasets, imagenet_rec_iters,  # noqa: E402
                          imagenet_transforms)
from mxrepro.models import get_model  # noqa: E402
from mxrepro.models.aff import imagenet_cli_model  # noqa: E402
from mxrepro.train import (TrainLoop, add_train_args, check_dtype, config_from_args,  # noqa: E402
                           contexts_from_args, make_kvstore)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="Train AFF/iAFF ResNet/ResNeXt on ImageNet (AFF, WACV 2021).",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    m = p.add_argument_group("model (reference flags)")
    m.add_argument("--model", type=str, default="resnet",
                   help="resnet | resnext | resnext50_32x4d_askc (paper-era name) | a registered model name")
    m.add_argument("--askc-type", type=str, default="ASKCFuse",
                   help="fusion: ASKCFuse (AFF), ResGlobLocaforGlobLocaCha (iAFF), DirectAdd (baseline), "
                        "ResGlobGlobCha / ResLocaLocaCha (Table 3 ablations), ...")
    m.add_argument("--num-layer", type=int, default=50, help="depth: 50, 101 or 152")
    m.add_argument("--start-layer", type=int, default=3, help="fusion in stages >= this (1-4; 5 = none)")
    m.add_argument("--r", type=int, default=16, help="fusion reduction ratio")
    m.add_argument("--last-gamma", action="store_true", help="zero-init the last BN gamma of every bottleneck")
    m.add_argument("--deep-stem", action="store_true", help="3-conv stem (reference HEAD variant)")
    m.add_argument("--stem-width", type=int, default=None, help="deep-stem width (default 32 ResNet, 64 ResNeXt)")
    m.add_argument("--avg-down", action="store_true", help="AvgPool + 1x1 projection shortcuts (HEAD variant)")
    m.add_argument("--num-classes", type=int, default=1000, help="output classes")
    m.add_argument("--summary", action="store_true", help="print parameters and multiply-adds, then exit")
    m.add_argument("--use-pretrained", action="store_true", help="not available (no published MXNet weights)")
    m.add_argument("--use-se", action="store_true", help="accepted for compatibility; unused (as the reference)")
    m.add_argument("--batch-norm", action="store_true", help="accepted for compatibility; unused")
    m.add_argument("--use-gn", action="store_true", help="accepted for compatibility; unused")
    d = p.add_argument_group("data")
    d.add_argument("--data-dir", type=str, default=None, help="image folders train/, val/ (default data/imagenet)")
    d.add_argument("--use-rec", action="store_true", help="read RecordIO with ImageRecordIter")
    d.add_argument("--rec-train", type=str, default=None, help="default DATA_DIR/train.rec")
    d.add_argument("--rec-train-idx", type=str, default=None, help="default DATA_DIR/train.idx")
    d.add_argument("--rec-val", type=str, default=None, help="default DATA_DIR/val.rec")
    d.add_argument("--rec-val-idx", type=str, default=None, help="default DATA_DIR/val.idx")
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
    add_train_args(p)
    p.set_defaults(batch_size=128, num_epochs=160, lr=0.075, lr_mode="cosine", warmup_epochs=5, num_workers=4,
                   mixup_alpha=0.2, mixup_off_epoch=0, save_frequency=10, logging_file="train_imagenet.log")
    return p.parse_args(argv)


def build(args):
    """(net, registry name, run name)."""
    if args.use_pretrained:
        raise SystemExit("error: --use-pretrained: no MXNet AFF weights were published (aff.md §4)")
    if args.teacher:
        raise SystemExit("error: --teacher (distillation) is not supported by this reproduction")
    try:
        name, kw = imagenet_cli_model(args.model, args.askc_type, args.num_layer)
    except ValueError as e:
        raise SystemExit("error: %s" % e)
    resnext = "resnext" in name
    kw.update(classes=args.num_classes, last_gamma=bool(args.last_gamma or (resnext and args.orig_resnext_last_gamma)))
    if name.startswith(("aff_", "iaff_")):
        kw.update(start_layer=args.start_layer, fusion_r=args.r)
    if args.deep_stem:
        kw.update(deep_stem=True, stem_width=args.stem_width or (64 if resnext else 32))
    if args.avg_down:
        kw["avg_down"] = True
    net = get_model(name, **kw)
    run = "imagenet-%s-s%d%s" % (name, args.start_layer, "-d" if args.deep_stem or args.avg_down else "")
    return net, name, run


def main(argv=None):
    args = parse_args(argv)
    net, name, run = build(args)
    if args.summary:
        from mxrepro.flops import count_macs, count_params
        import mxnet as mx
        tr, tot = count_params(net)
        rep = count_macs(net(mx.sym.var("data")), (1, 3, args.input_size, args.input_size))
        print("%s: %.3fM trainable parameters (%.3fM with BN statistics), %.3f G multiply-adds at %d "
              "(%.3f G in the reference's counting)" % (run, tr / 1e6, tot / 1e6, rep.gmacs, args.input_size,
                                                         rep.ref_gmacs))
        return 0
    contexts = contexts_from_args(args)
    check_dtype(args.dtype, contexts)
    setup_logging(args.logging_file)
    logging.info("arguments: %s", vars(args))
    kv = make_kvstore(args.kv_store)
    part, parts = worker_shard(kv if not isinstance(kv, str) else None)
    bs = args.batch_size * len(contexts)
    data_dir = args.data_dir or os.path.join(mxrepro.ROOT, "data", "imagenet")
    try:
        if args.use_rec:
            if args.auto_aug:
                logging.warning("--auto_aug is ignored with --use-rec (as in the reference)")
            rec = {k: getattr(args, k) or os.path.join(data_dir, f) for k, f in (
                ("rec_train", "train.rec"), ("rec_train_idx", "train.idx"), ("rec_val", "val.rec"),
                ("rec_val_idx", "val.idx"))}
            train, val = imagenet_rec_iters(batch_size=bs, num_workers=args.num_workers, input_size=args.input_size,
                                            crop_ratio=args.crop_ratio, num_parts=parts, part_index=part,
                                            seed=args.seed, **rec)
        else:
            if args.auto_aug:
                raise SystemExit("error: --auto_aug needs autogluon's ImageNet AutoAugment policy, which is not "
                                 "installed here; drop the flag")
            train_set, val_set = imagenet_folder_datasets(data_dir)
            train = DatasetLoader(train_set, bs, imagenet_transforms(True, args.input_size), train=True,
                                  num_workers=args.num_workers, num_parts=parts, part_index=part, seed=args.seed)
            val = DatasetLoader(val_set, bs, imagenet_transforms(False, args.input_size, args.crop_ratio),
                                train=False, num_workers=args.num_workers)
    except FileNotFoundError as e:
        raise SystemExit("error: %s" % e)
    cfg = config_from_args(args, num_classes=args.num_classes, initializer="msra", save_prefix=run)
    logging.info("model %s (%s), batch %d on %s, %d iterations per epoch", name, run, bs, contexts, train.num_batches)
    loop = TrainLoop(net, cfg, contexts, train, val, kvstore=kv)
    loop.run()
    logging.info("best top-1 error %.4f (top-5 %.4f) at epoch %d", 1 - loop.best["top1"],
                 1 - loop.best.get("top5", 0.0), loop.best["epoch"])
    return 0


if __name__ == "__main__":
    from mxrepro.engine.dist import fail_fast
    with fail_fast():
        sys.exit(main())
