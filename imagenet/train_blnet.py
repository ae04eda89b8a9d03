#!/usr/bin/env python
"""Train bL-ResNet / bL-ResNeXt / bL-SEResNeXt (Big-Little Net, ICLR 2019) or the ResNet-50 baseline on
ImageNet with the official IBM recipe, on the shared Gluon training core (mxrepro/train.py).

    python imagenet/train_blnet.py DATA_DIR --epochs 4 --lr 0.1 --alpha 2 --beta 4 --workers 4 -a bl_resnet50
    python imagenet/train_blnet.py DATA_DIR -a bl_resnet50 --gpus 0,1,2,3 --batch-size 256   # the paper run
    python imagenet/train_blnet.py DATA_DIR -a bl_resnet50 --resume auto                      # continue

DATA_DIR holds train/<class>/ and val/<class>/ image folders, or train.rec/.idx and val.rec/.idx
(`python tools/prepare_imagenet.py ROOT --out DIR --formats gluon`; used automatically when present,
or force with --use-rec / --rec-train ...).

Defaults = the official recipe (reference/blnet.md §3): 110 epochs; Nesterov SGD momentum 0.9; lr 0.1
for a total batch of 256, scaled linearly with --batch-size (--lr-scaling none keeps --lr as given);
cosine to 0 stepped once per epoch (PyTorch CosineAnnealingLR(T_max=epochs)); no warmup; weight decay
1e-4 on ALL parameters (BN and biases included); plain cross-entropy; RandomResizedCrop 224 (0.08-1,
3/4-4/3) + ColorJitter(0.4, 0.4, 0.4) + horizontal flip (+ RandomRotation(10) first for bL-SEResNeXt,
the official "strong" augmentation); evaluation resize 256 + centre crop 224; top-1/top-5 every epoch;
checkpoints SAVE_DIR/ARCH-NNNN.* every --save-frequency epochs and SAVE_DIR/ARCH-best.* on improvement.
MXNet's NAG equals PyTorch's Nesterov SGD except at the per-epoch lr changes (blnet.md §3 note).
"""
import argparse
import logging
import os
import re
import sys


import mxrepro  # noqa: E402  (sets OMP_NUM_THREADS before mxnet)
import cv2  # noqa: E402
import mxnet as mx  # noqa: E402
import numpy as np  # noqa: E402
from mxnet.gluon import Block  # noqa: E402
from mxnet.gluon.data.vision import transforms  # noqa: E402

from mxrepro.common import parse_gpus, setup_logging, worker_shard  # noqa: E402
from mxrepro.data import (DatasetLoader, IMAGENET_MEAN_RGB, IMAGENET_STD_RGB, imagenet_folder_datasets,  # noqa: E402
                          imagenet_rec_iters, imagenet_transforms)
from mxrepro.models import get_model, list_models, model_info  # noqa: E402
from mxrepro.train import TrainConfig, TrainLoop, check_dtype, make_kvstore, make_lr_scheduler  # noqa: E402

BASE_BATCH = 256  # the official lr 0.1 is for this total batch


def parse_args(argv=None):
    archs = list_models(family="blnet") + ["resnet50_v1b", "resnet101_v1b", "resnet152_v1b"]
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__[__doc__.find("\n\n"):],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data", metavar="DATA_DIR", nargs="?", default=None,
                   help="folder with train/ and val/ class folders or train.rec/val.rec (default data/imagenet)")
    m = p.add_argument_group("model")
    m.add_argument("-a", "--arch", default="bl_resnet50",
                   help="registered model: %s (default bl_resnet50)" % ", ".join(archs))
    m.add_argument("--alpha", type=int, default=None, help="bL-Net Little-branch width ratio (default 2)")
    m.add_argument("--beta", type=int, default=None, help="bL-Net Little-branch depth ratio (default 4)")
    m.add_argument("--num-classes", type=int, default=None,
                   help="output classes (default: number of train/ folders, or 1000 with RecordIO)")
    m.add_argument("--summary", action="store_true", help="print parameters and multiply-adds, then exit")
    d = p.add_argument_group("data")
    d.add_argument("--use-rec", action="store_true", help="read DATA_DIR/{train,val}.rec (automatic when they exist "
                   "and there are no train/ val/ folders)")
    d.add_argument("--rec-train", default=None, help="training .rec (default DATA_DIR/train.rec)")
    d.add_argument("--rec-train-idx", default=None, help="default: --rec-train with .idx")
    d.add_argument("--rec-val", default=None, help="validation .rec (default DATA_DIR/val.rec)")
    d.add_argument("--rec-val-idx", default=None, help="default: --rec-val with .idx")
    d.add_argument("--input-size", type=int, default=224, help="training / evaluation crop (default 224)")
    d.add_argument("--crop-ratio", type=float, default=0.875, help="evaluation resize = input/ratio (256 for 224)")
    d.add_argument("--color-jitter", type=float, default=0.4, help="brightness/contrast/saturation jitter (0.4)")
    d.add_argument("--strong-aug", choices=("auto", "on", "off"), default="auto",
                   help="RandomRotation(10) before the crop; auto = on for bL-SEResNeXt only (official)")
    d.add_argument("-j", "--workers", type=int, default=4, help="data loading workers (default 4)")
    o = p.add_argument_group("optimisation (official recipe defaults)")
    o.add_argument("--epochs", type=int, default=110, help="epochs (default 110)")
    o.add_argument("-b", "--batch-size", type=int, default=BASE_BATCH, help="TOTAL batch over all devices (256)")
    o.add_argument("--lr", type=float, default=0.1, help="learning rate for a total batch of 256 (default 0.1)")
    o.add_argument("--lr-scaling", choices=("linear", "none"), default="linear",
                   help="linear: use lr * batch/256 (Goyal et al.); none: use --lr as given")
    o.add_argument("--lr-mode", choices=("cosine", "step"), default="cosine",
                   help="cosine to 0 (default) or the official alternative step (/10 every 30 epochs)")
    o.add_argument("--momentum", type=float, default=0.9)
    o.add_argument("--wd", "--weight-decay", dest="wd", type=float, default=1e-4,
                   help="weight decay on all parameters (default 1e-4)")
    o.add_argument("--optimizer", default="nag", help="nag = Nesterov SGD (default); sgd for plain momentum")
    r = p.add_argument_group("run")
    r.add_argument("--gpus", default="", help="GPU ids, e.g. 0,1,2,3 (default: CPU)")
    r.add_argument("--kv-store", default="device", help="local, device, dist_sync (tools/launch.py), horovod")
    r.add_argument("--dtype", default="float32", choices=("float32", "float16"), help="float16 needs GPUs")
    r.add_argument("--mode", default="hybrid", choices=("hybrid", "imperative"))
    r.add_argument("--save-dir", default=None, help="checkpoints and logs (default runs/blnet/ARCH)")
    r.add_argument("--save-frequency", type=int, default=10, help="periodic checkpoint every N epochs (10)")
    r.add_argument("--resume", default="", metavar="auto|EPOCH|PATH",
                   help="continue a run: 'auto' = latest checkpoint in --save-dir, an epoch number, or a "
                        "SAVE_DIR/ARCH-NNNN.params path (its .states and .json are used when present)")
    r.add_argument("--log-interval", type=int, default=50, help="log every N batches")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--max-batches", type=int, default=0, help="cap batches per epoch (smoke runs); 0 = all")
    args = p.parse_args(argv)
    if args.arch not in list_models():
        p.error("unknown --arch %r; choose from %s" % (args.arch, ", ".join(archs)))
    return args


def is_bl(arch):
    return model_info(arch).family == "blnet"


def build_net(args, num_classes):
    """The network; --alpha/--beta only apply to bL models."""
    kw = {}
    if is_bl(args.arch):
        for k in ("alpha", "beta"):
            v = getattr(args, k)
            fixed = model_info(args.arch).cfg.get("paper", {}).get(k)
            if v is not None:
                if re.search(r"_a\d_b\d$", args.arch) and v != fixed:
                    raise SystemExit("error: %s fixes %s=%s; use -a bl_resnet50 --%s %d" % (args.arch, k, fixed, k, v))
                if not re.search(r"_a\d_b\d$", args.arch):
                    kw[k] = v
    elif args.alpha is not None or args.beta is not None:
        raise SystemExit("error: --alpha/--beta only apply to bL-Net models (-a bl_...), not %s" % args.arch)
    return get_model(args.arch, classes=num_classes, **kw)


def effective_lr(args):
    return args.lr * args.batch_size / BASE_BATCH if args.lr_scaling == "linear" else args.lr


def make_config(args, num_classes, n_ctx):
    """TrainConfig of the official recipe (reference/blnet.md §3)."""
    if args.batch_size % n_ctx:
        raise SystemExit("error: --batch-size %d (total) must be divisible by the %d devices" % (args.batch_size, n_ctx))
    save_dir = args.save_dir or os.path.join(mxrepro.ROOT, "runs", "blnet", args.arch)
    resume_epoch, resume_params, resume_states, auto = 0, "", "", False
    if args.resume == "auto":
        auto = True
    elif re.fullmatch(r"\d+", args.resume or ""):
        resume_epoch = int(args.resume)
    elif args.resume:
        m = re.search(r"-(\d{4})\.params$", args.resume)
        if not os.path.exists(args.resume) or not m:
            raise SystemExit("error: --resume %s: expected 'auto', an epoch number or an existing "
                             "PREFIX-NNNN.params checkpoint" % args.resume)
        resume_epoch, resume_params = int(m.group(1)), args.resume
        states = args.resume[:-len(".params")] + ".states"
        resume_states = states if os.path.exists(states) else ""
    return TrainConfig(
        num_classes=num_classes, num_epochs=args.epochs, batch_size=args.batch_size // n_ctx,
        optimizer=args.optimizer, lr=effective_lr(args), momentum=args.momentum, wd=args.wd, no_wd=False,
        lr_mode=args.lr_mode, lr_decay=0.1, lr_decay_period=30 if args.lr_mode == "step" else 0,
        warmup_epochs=0, target_lr=0.0, lr_step_per="epoch", label_smoothing=0.0, mixup=False,
        initializer="kaiming_out", dtype=args.dtype, hybridize=args.mode == "hybrid", kv_store=args.kv_store,
        save_dir=save_dir, save_prefix=args.arch, save_frequency=args.save_frequency, save_best=True,
        resume_epoch=resume_epoch, resume_params=resume_params, resume_states=resume_states, auto_resume=auto,
        log_interval=args.log_interval, seed=args.seed, max_batches=args.max_batches, top_k=5)


class ScheduleFromCommandLine:
    """TrainLoop hook: after a resume, use the schedule of THIS command line (e.g. a changed --epochs)
    rather than the one pickled in the trainer states, as the official code recreates its
    CosineAnnealingLR(T_max=epochs) on resume. (The core restores the pickled optimizer, whose
    scheduler still has the old length.)"""

    def on_train_begin(self, loop):
        if not loop.begin_epoch:
            return
        sched = make_lr_scheduler(loop.cfg, loop.iters_per_epoch)
        sched.base_lr = loop.cfg.lr
        opt = loop.trainer._optimizer
        opt.lr_scheduler, opt.lr = sched, loop.cfg.lr
        logging.info("resumed at epoch %d with this command line's schedule: lr %.6g for epoch %d",
                     loop.begin_epoch, sched(loop.begin_epoch * loop.iters_per_epoch + 1), loop.begin_epoch + 1)


class RandomRotate(Block):
    """torchvision RandomRotation(degrees): uniform angle, nearest, no expansion, zero fill, on the HWC
    uint8 image before the crop (the official bL-SEResNeXt "strong" augmentation)."""

    def __init__(self, degrees=10):
        super().__init__()
        self.degrees = degrees

    def forward(self, x):
        img = x.asnumpy()
        h, w = img.shape[:2]
        angle = np.random.uniform(-self.degrees, self.degrees)
        m = cv2.getRotationMatrix2D(((w - 1) / 2.0, (h - 1) / 2.0), angle, 1.0)
        out = cv2.warpAffine(img, m, (w, h), flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        return mx.nd.array(out.reshape(img.shape), dtype=x.dtype)


def train_transform(args, strong):
    """RandomResizedCrop + flip + ColorJitter (no PCA lighting: not in the official recipe) + normalise."""
    t = imagenet_transforms(True, args.input_size, args.crop_ratio, jitter=args.color_jitter, lighting=0.0)
    if strong:
        t = transforms.Compose([RandomRotate(10), t])
    return t


def _rec_paths(args, data_dir):
    rt = args.rec_train or os.path.join(data_dir, "train.rec")
    rv = args.rec_val or os.path.join(data_dir, "val.rec")
    return dict(rec_train=rt, rec_train_idx=args.rec_train_idx or os.path.splitext(rt)[0] + ".idx",
                rec_val=rv, rec_val_idx=args.rec_val_idx or os.path.splitext(rv)[0] + ".idx")


def make_data(args, data_dir, batch, part, parts, strong):
    """(train loader, val loader, number of classes or None)."""
    has_folders = all(os.path.isdir(os.path.join(data_dir, s)) for s in ("train", "val"))
    use_rec = args.use_rec or args.rec_train is not None or (
        not has_folders and os.path.exists(os.path.join(data_dir, "train.rec")))
    if use_rec:
        if strong:
            logging.warning("RandomRotation(10) (strong augmentation) is not applied with RecordIO input")
        train, val = imagenet_rec_iters(batch_size=batch, num_workers=args.workers, input_size=args.input_size,
                                        crop_ratio=args.crop_ratio, jitter=args.color_jitter, lighting=0.0,
                                        num_parts=parts, part_index=part, seed=args.seed, **_rec_paths(args, data_dir))
        return train, val, None
    if not has_folders:
        raise FileNotFoundError("%s has neither train/ + val/ class folders nor train.rec/val.rec. Point DATA_DIR at "
                                "an ImageNet folder, or pack one with tools/prepare_imagenet.py." % data_dir)
    train_set, val_set = imagenet_folder_datasets(data_dir)
    if train_set.synsets != val_set.synsets:
        raise SystemExit("error: train/ and val/ have different class folders (%d vs %d)"
                         % (len(train_set.synsets), len(val_set.synsets)))
    train = DatasetLoader(train_set, batch, train_transform(args, strong), train=True, num_workers=args.workers,
                          num_parts=parts, part_index=part, seed=args.seed)
    val = DatasetLoader(val_set, batch, imagenet_transforms(False, args.input_size, args.crop_ratio), train=False,
                        num_workers=args.workers)
    return train, val, len(train_set.synsets)


def main(argv=None):
    args = parse_args(argv)
    if args.summary:
        from mxrepro.flops import count_macs, count_params
        net = build_net(args, args.num_classes or 1000)
        tr, _ = count_params(net)
        rep = count_macs(net(mx.sym.var("data")), (1, 3, args.input_size, args.input_size))
        print("%s: %d parameters (%.2f M), %.3f G multiply-adds at %d" % (args.arch, tr, tr / 1e6, rep.gmacs,
                                                                           args.input_size))
        return 0
    contexts = parse_gpus(args.gpus)
    check_dtype(args.dtype, contexts)
    data_dir = os.path.expanduser(args.data or os.path.join(mxrepro.ROOT, "data", "imagenet"))
    setup_logging()
    kv = make_kvstore(args.kv_store)
    part, parts = worker_shard(kv if not isinstance(kv, str) else None)
    strong = args.strong_aug == "on" or (args.strong_aug == "auto" and args.arch.startswith("bl_seresnext"))
    try:
        train, val, n_found = make_data(args, data_dir, args.batch_size, part, parts, strong)
    except FileNotFoundError as e:
        raise SystemExit("error: %s" % e)
    save_dir = args.save_dir or os.path.join(mxrepro.ROOT, "runs", "blnet", args.arch)
    setup_logging(os.path.join(save_dir, args.arch + ".log"))
    logging.info("arguments: %s", vars(args))
    num_classes = args.num_classes or n_found or 1000
    if n_found and args.num_classes and args.num_classes != n_found:
        raise SystemExit("error: --num-classes %d but train/ has %d class folders" % (args.num_classes, n_found))
    net = build_net(args, num_classes)
    cfg = make_config(args, num_classes, len(contexts))
    logging.info("%s: %d classes, total batch %d on %s, lr %.4g (%s scaling from %.4g @ 256), %d iterations/epoch, "
                 "%d epochs, cosine per epoch, NAG, wd %.0e on all parameters", args.arch, num_classes,
                 args.batch_size, contexts, cfg.lr, args.lr_scaling, args.lr, train.num_batches, args.epochs, args.wd)
    loop = TrainLoop(net, cfg, contexts, train, val, hooks=[ScheduleFromCommandLine()], kvstore=kv)
    loop.run()
    logging.info("best top-1 error %.4f (top-5 %.4f) at epoch %d", 1 - loop.best["top1"],
                 1 - loop.best.get("top5", 0.0), loop.best["epoch"])
    return 0


if __name__ == "__main__":
    from mxrepro.engine.dist import fail_fast  # a crashed worker ends the job instead of hanging
    with fail_fast():
        sys.exit(main())
