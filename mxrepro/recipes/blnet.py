"""bL-Net recipe: the official IBM/BigLittleNet ``imagenet-train.py`` recipe (docs/reference/blnet.md §3) on the engine.

    python imagenet/train_blnet.py DATA_DIR -a bl_resnet50 --alpha 2 --beta 4 --gpus 0,1,2,3   # the paper run

Defaults = the official recipe: 110 epochs; Nesterov SGD momentum 0.9; lr 0.1 for a global batch of
256, scaled linearly with the global batch (``--lr-scaling none`` keeps --lr as given); cosine to 0
stepped once per epoch (PyTorch ``CosineAnnealingLR(T_max=epochs)``); no warm-up; weight decay 1e-4 on
ALL parameters (BN and biases included); plain cross-entropy; RandomResizedCrop 224 (0.08-1, 3/4-4/3)
+ ColorJitter(0.4, 0.4, 0.4) + horizontal flip (+ RandomRotation(10) first for bL-SEResNeXt, the
official "strong" augmentation); evaluation resize 256 + centre crop 224; top-1/top-5 every epoch.
MXNet's NAG equals PyTorch's Nesterov SGD except at the per-epoch lr changes (docs/reference/blnet.md §3 note).

``--batch-size`` is the total over the devices (the official meaning); under a distributed kvstore
the global batch is that times the workers. DATA_DIR holds train/<class>/ and val/<class>/ image
folders, or train.rec/.idx and val.rec/.idx (``python tools/prepare_imagenet.py ROOT --out DIR
--formats gluon``; used automatically when present and there are no folders, or with --use-rec).
"""
import argparse
import os
import re

import cv2
import mxnet as mx
import numpy as np
from mxnet.gluon import Block
from mxnet.gluon.data.vision import transforms

from ..ckptfile import add_override_flag, check_weights
from ..cli import HelpFormatter, device_count, expected_workers, given, script_argv
from ..data import RecordIterData, add_check_args, gluoncv_rec_kwargs, imagenet_folder_data, imagenet_transforms
from ..engine import OptimizerSpec, RunConfig, ScheduleSpec, UsageError
from ..models import get_model, list_models, model_info

__all__ = ["build_parser", "config_from_args", "main", "BASE_BATCH", "RandomRotate"]

BASE_BATCH = 256  # the official lr 0.1 is for this global batch
FLAGS = dict(epochs="--epochs", global_batch="--batch-size", lr="--lr", num_classes="--num-classes", wd="--wd",
             momentum="--momentum", output_dir="--save-dir", devices="--gpus", fresh="--resume fresh",
             resume="--resume", save_frequency="--save-frequency", log_interval="--log-interval", dtype="--dtype")


def _archs():
    return list_models(family="blnet") + ["resnet50_v1b", "resnet101_v1b", "resnet152_v1b"]


def build_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__[__doc__.find("\n\n"):],
                                formatter_class=type("F", (HelpFormatter, argparse.RawDescriptionHelpFormatter), {}))
    p.add_argument("data", metavar="DATA_DIR", nargs="?", default=None,
                   help="folder with train/ and val/ class folders or train.rec/val.rec (default: data/imagenet)")
    m = p.add_argument_group("model")
    m.add_argument("-a", "--arch", default="bl_resnet50", help="registered model: %s" % ", ".join(_archs()))
    m.add_argument("--alpha", type=int, default=None, help="bL-Net Little-branch width ratio (default: 2)")
    m.add_argument("--beta", type=int, default=None, help="bL-Net Little-branch depth ratio (default: 4)")
    m.add_argument("--num-classes", type=int, default=None, help="output classes (default: from the data)")
    m.add_argument("--summary", action="store_true", help="print parameters and multiply-adds, then exit")
    d = p.add_argument_group("data")
    d.add_argument("--use-rec", action="store_true", help="read DATA_DIR/{train,val}.rec (automatic when they exist "
                   "and there are no train/ val/ folders)")
    d.add_argument("--rec-train", default=None, help="training .rec (default: DATA_DIR/train.rec)")
    d.add_argument("--rec-train-idx", default=None, help="default: --rec-train with .idx")
    d.add_argument("--rec-val", default=None, help="validation .rec (default: DATA_DIR/val.rec)")
    d.add_argument("--rec-val-idx", default=None, help="default: --rec-val with .idx")
    d.add_argument("--input-size", type=int, default=224, help="training / evaluation crop")
    d.add_argument("--crop-ratio", type=float, default=0.875, help="evaluation resize = input/ratio (256 for 224)")
    d.add_argument("--color-jitter", type=float, default=0.4, help="brightness/contrast/saturation jitter")
    d.add_argument("--strong-aug", choices=("auto", "on", "off"), default="auto",
                   help="RandomRotation(10) before the crop; auto = on for bL-SEResNeXt only (official)")
    d.add_argument("-j", "--workers", type=int, default=4, help="data loading workers")
    o = p.add_argument_group("optimisation (official recipe defaults)")
    o.add_argument("--epochs", type=int, default=110, help="epochs")
    o.add_argument("-b", "--batch-size", type=int, default=BASE_BATCH, help="TOTAL batch over all devices")
    o.add_argument("--lr", type=float, default=0.1, help="learning rate for a global batch of 256")
    o.add_argument("--lr-scaling", choices=("linear", "none"), default="linear",
                   help="linear: use lr * global batch / 256 (Goyal et al.); none: use --lr as given")
    o.add_argument("--lr-mode", choices=("cosine", "step"), default="cosine",
                   help="cosine to 0, or the official alternative step (/10 every 30 epochs)")
    o.add_argument("--momentum", type=float, default=0.9, help="momentum")
    o.add_argument("--wd", "--weight-decay", dest="wd", type=float, default=1e-4,
                   help="weight decay on all parameters")
    o.add_argument("--optimizer", default="nag", help="nag = Nesterov SGD; sgd for plain momentum")
    r = p.add_argument_group("run")
    r.add_argument("--gpus", default="", help="GPU ids, e.g. 0,1,2,3 (default: the CPU)")
    r.add_argument("--kv-store", default="device", help="local, device, dist_sync (tools/launch.py), horovod")
    r.add_argument("--dtype", default="float32", choices=("float32", "float16"), help="float16 needs GPUs")
    r.add_argument("--mode", default="hybrid", choices=("hybrid", "imperative"), help="hybridize the network or not")
    r.add_argument("--save-dir", default=None, help="the run's folder: checkpoints, log, metrics (default: "
                                                    "runs/blnet/ARCH)")
    r.add_argument("--save-frequency", type=int, default=10,
                   help="periodic checkpoint every N epochs (latest is written every epoch, best on improvement)")
    r.add_argument("--resume", default="auto", metavar="auto|fresh|EPOCH|PATH",
                   help="auto: continue from the latest checkpoint in --save-dir when there is one (the default); "
                        "fresh: start over; an epoch number or a SAVE_DIR/ARCH-NNNN.params path (its .states and "
                        ".json are used when present)")
    r.add_argument("--resume-changed", action="store_true",
                    help="continue the checkpoint although settings that define the run changed (a plain "
                         "re-run with other settings stops and lists them); the new settings are recorded")
    r.add_argument("--pretrained", default="", help="start from these weights (this project's .params or a released "
                                                    "bL-Net .pth, docs/weights.md) with a fresh schedule")
    add_override_flag(r)
    r.add_argument("--log-interval", type=int, default=50, help="log every N batches")
    r.add_argument("--seed", type=int, default=0, help="random seed")
    r.add_argument("--max-batches", type=int, default=0, help="cap batches per epoch (smoke runs); 0 = all")
    r.add_argument("--dry-run", action="store_true", help="print the resolved plan and the command, write nothing")
    add_check_args(d)
    return p


def model_kwargs(args):
    """Builder kwargs; --alpha/--beta only apply to bL models (and not to the fixed _aX_bY names)."""
    if args.arch not in list_models():
        raise UsageError("-a/--arch %s is not a registered model; choose from %s" % (args.arch, ", ".join(_archs())))
    kw = {}
    if model_info(args.arch).family == "blnet":
        for k in ("alpha", "beta"):
            v = getattr(args, k)
            if v is None:
                continue
            if v < 1:
                raise UsageError("--%s %d must be at least 1" % (k, v))
            fixed = model_info(args.arch).cfg.get("paper", {}).get(k)
            if re.search(r"_a\d_b\d$", args.arch):
                if v != fixed:
                    raise UsageError("-a %s fixes %s=%s; use -a bl_resnet50 --%s %d" % (args.arch, k, fixed, k, v))
            else:
                kw[k] = v
    elif args.alpha is not None or args.beta is not None:
        raise UsageError("--alpha/--beta only apply to bL-Net models (-a bl_...), not %s" % args.arch)
    return kw


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


def _data(args, data_dir, strong, notes):
    has_folders = all(os.path.isdir(os.path.join(data_dir, s)) for s in ("train", "val"))
    use_rec = args.use_rec or args.rec_train is not None or (
        not has_folders and os.path.exists(os.path.join(data_dir, "train.rec")))
    if use_rec:
        if strong:
            notes.append("RandomRotation(10) (strong augmentation) is not applied with RecordIO input")
        tr, va = gluoncv_rec_kwargs(args.input_size, args.crop_ratio, jitter=args.color_jitter, lighting=0.0)
        rt = args.rec_train or os.path.join(data_dir, "train.rec")
        rv = args.rec_val or os.path.join(data_dir, "val.rec")
        return RecordIterData(rt, rv, tr, va, last_batch="discard", threads=args.workers, nominal_train=1281167,
                              idx={rt: args.rec_train_idx, rv: args.rec_val_idx},
                              hint="Point DATA_DIR at an ImageNet folder (train/ and val/ class folders) or pack one "
                                   "with tools/prepare_imagenet.py --formats gluon")
    t = imagenet_transforms(True, args.input_size, args.crop_ratio, jitter=args.color_jitter, lighting=0.0)
    if strong:
        t = transforms.Compose([RandomRotate(10), t])
    return imagenet_folder_data(data_dir, t, imagenet_transforms(False, args.input_size, args.crop_ratio), args.workers)


def _checked_data(args, data_dir, strong, notes):
    return _data(args, data_dir, strong, notes).set_check(args.data_check, args.skip_bad_records, crop=args.input_size,
                                                          crop_flag="--input-size")


def _check(args):
    """bL-Net flags the engine does not check (data and augmentation); one-line UsageErrors."""
    if args.input_size < 32:
        raise UsageError("--input-size %d must be at least 32 (the network downsamples 32 times)" % args.input_size)
    if not 0 < args.crop_ratio <= 1:
        raise UsageError("--crop-ratio %g must be in (0, 1] (evaluation crop / resize)" % args.crop_ratio)
    if args.color_jitter < 0:
        raise UsageError("--color-jitter %g must be >= 0" % args.color_jitter)
    if args.workers < 0:
        raise UsageError("-j/--workers %d must be >= 0 (0 = load in the training process)" % args.workers)
    if args.pretrained and args.resume not in ("auto", "fresh"):
        raise UsageError("--pretrained starts fresh from weights but --resume %s continues a checkpoint: pass one of "
                         "them" % args.resume)


def config_from_args(args, argv):
    _check(args)
    check_weights(args.pretrained, "--pretrained", not args.ignore_checksum, missing_ok=args.dry_run)
    kw = model_kwargs(args)
    workers = expected_workers(args.kv_store)
    ndev = device_count(args.gpus)
    if args.batch_size < 1:
        raise UsageError("-b/--batch-size %d must be at least 1" % args.batch_size)
    if args.batch_size % ndev:
        raise UsageError("-b/--batch-size %d (the total) must be divisible by the %d devices" % (args.batch_size, ndev))
    glob_batch = args.batch_size * workers
    lr = args.lr * glob_batch / BASE_BATCH if args.lr_scaling == "linear" else args.lr
    rule = ("--lr-scaling linear: lr %g = %g x global batch %d / %d" % (lr, args.lr, glob_batch, BASE_BATCH)
            if args.lr_scaling == "linear" else "--lr-scaling none: --lr as given")
    save_dir = args.save_dir or os.path.join("runs", "blnet", args.arch)
    data_dir = os.path.expanduser(args.data or os.path.join("data", "imagenet"))
    strong = args.strong_aug == "on" or (args.strong_aug == "auto" and args.arch.startswith("bl_seresnext"))
    notes = []
    data = _checked_data(args, data_dir, strong, notes)
    resume, repoch = args.resume, None
    if re.fullmatch(r"\d+", resume or ""):
        repoch = int(resume)
        resume = os.path.join(save_dir, "%s-%04d.params" % (args.arch, repoch))
    elif resume not in ("auto", "fresh") and not resume.endswith(".params"):
        raise UsageError("--resume %s: expected auto, fresh, an epoch number or a PREFIX-NNNN.params checkpoint" % resume)
    cfg = RunConfig(
        family="blnet", model=args.arch, model_kwargs=kw, num_classes=args.num_classes,
        input_shape=(3, args.input_size, args.input_size), epochs=args.epochs, global_batch=glob_batch, lr=lr,
        lr_rule=rule, devices=args.gpus, kv_store=args.kv_store,
        schedule=ScheduleSpec(mode=args.lr_mode, decay_period=30 if args.lr_mode == "step" else 0, factor=0.1,
                              per="epoch"),
        optimizer=OptimizerSpec(args.optimizer, args.momentum, args.wd, multi_precision=args.dtype != "float32"),
        initializer="kaiming_out", dtype=args.dtype, hybridize=args.mode == "hybrid", output_dir=save_dir,
        prefix=args.arch, log_file=os.path.join(save_dir, args.arch + ".log"), save_frequency=args.save_frequency,
        resume=resume, resume_epoch=repoch, resume_changed=args.resume_changed, init_params=args.pretrained,
        seed=args.seed,
        log_interval=args.log_interval, max_batches=args.max_batches, top_k=5, flags=FLAGS, command=list(argv),
        log_auto=not given(argv, "--log-interval"),
        notes=notes, dry_run=args.dry_run)
    return cfg, data, lambda classes: get_model(args.arch, classes=classes, **kw)


def main(argv=None, prog="python imagenet/train_blnet.py"):
    import sys
    from ..engine import run
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    if args.summary:
        from .. import flops
        net = get_model(args.arch, classes=args.num_classes or 1000, **model_kwargs(args))
        tr, _ = flops.count_params(net)
        rep = flops.count_macs(net(mx.sym.var("data")), (1, 3, args.input_size, args.input_size))
        print("%s: %d parameters (%.2f M), %.3f G multiply-adds at %d" % (args.arch, tr, tr / 1e6, rep.gmacs,
                                                                           args.input_size))
        return 0
    cfg, data, build = config_from_args(args, script_argv(prog, argv))
    return run(cfg, data, build)
