"""Training logic shared by ``cifar/train_cifar.py`` and ``imagenet/train_imagenet.py`` (FBN,
fbn.md sections 3 and 5; Module API).

The scripts accept every published command line of the original repository unchanged (fbn.md
5.2, 5.4, the README) and add a few switches:

* ``--reference-compat`` turns on the released code's quirks that affect the published numbers
  (each also has its own flag): weight decay on every parameter (``--wd-mode all``), CIFAR pad
  fill 255 (``--pad-fill 255``), DropFactor scaling of the released operator
  (``--dropfactor-mode reference``) and its data gradient (``--fb-grad-mode reference``).
  Defaults are the corrected behaviour: no weight decay on biases and BN gamma/beta, pad fill 127
  (about the mean, i.e. ~0 after mean subtraction), inverted DropFactor, exact gradient.
* ``--dry-run`` builds everything (symbol, shapes, parameter count, LR schedule, optimizer,
  iterators when the data exist, a bound and initialised module) and stops before training.
* Resume: ``--retrain --model-load-epoch N`` (begin epoch defaults to N), or automatically from
  the newest complete checkpoint of ``--model-prefix`` (``--no-auto-resume`` to start over).
  Parameters, optimizer state and the LR schedule continue exactly: the scheduler is a pure
  function of the global update count.
"""
import argparse
import json
import logging
import math
import os
import random
import sys
import time

import mxrepro  # noqa: F401  (OMP threads + FB operator library before mxnet)
import mxnet as mx
import numpy as np

from mxrepro import common

# RGB mean of the reference iterators (fbn.md 5.1); no std scaling.
MEAN_RGB = (123.68, 116.779, 103.939)
DATASETS = {
    "cifar": dict(train="train.rec", val="test.rec", num_examples=50000, data_shape=32, num_classes=10,
                  network="inception-bn-small", num_epoches=400, data_dir="data/cifar10", optimizer="sgd",
                  metrics=("acc",)),
    "imagenet": dict(train=None, val="val_256_q90.rec", num_examples=1281167, data_shape=224, num_classes=1000,
                     network="inception-bn", num_epoches=80, data_dir="data/imagenet", optimizer="nag",
                     metrics=("acc", "top_k_accuracy_5")),
}
COMPAT_DEFAULTS = dict(wd_mode=("no-bias-bn", "all"), pad_fill=(127, 255),
                       dropfactor_mode=("inverted", "reference"), fb_grad_mode=("exact", "reference"))


# --------------------------------------------------------------------------------------------- CLI
def build_parser(dataset):
    """Argument parser of the FBN training scripts; ``dataset`` is 'cifar' or 'imagenet'."""
    d = DATASETS[dataset]
    from symbols import NETWORKS_CIFAR, NETWORKS_IMAGENET
    nets = NETWORKS_CIFAR if dataset == "cifar" else NETWORKS_IMAGENET
    p = argparse.ArgumentParser(
        description="Train %s networks (baselines and Factorized Bilinear Networks, ICCV 2017) with the "
                    "MXNet Module API. Every command line of the original repository works unchanged; see "
                    "docs/fbn.md." % ("CIFAR" if dataset == "cifar" else "ImageNet"),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    g = p.add_argument_group("devices and data")
    g.add_argument("--gpus", type=str, default=None,
                   help="comma-separated GPU ids, e.g. 0,1; empty string = CPU; default: GPU 0 if one is visible, else CPU")
    g.add_argument("--data-dir", type=str, default=d["data_dir"],
                   help="folder with %s" % ("train.rec and test.rec" if dataset == "cifar" else
                                            "train_256_q90.rec / train_480_q90.rec and val_256_q90.rec"))
    g.add_argument("--data-type", type=str, default="cifar10" if dataset == "cifar" else "imagenet",
                   help="accepted for compatibility with the original scripts; unused")
    g.add_argument("--data-shape", type=int, default=d["data_shape"], help="input crop size")
    g.add_argument("--num-classes", type=int, default=d["num_classes"], help="number of classes")
    g.add_argument("--num-examples", type=int, default=None,
                   help="training images (all workers); default: counted from the train .idx file, else %d"
                        % d["num_examples"])
    if dataset == "imagenet":
        g.add_argument("--aug-level", type=int, default=2, choices=[1, 2, 3],
                       help="1: random crop+mirror on train_256_q90.rec; 2: +scale [0.533,1], aspect 0.25, HSL "
                            "(36,50,50) on train_480_q90.rec; 3: +rotation 10 and shear 0.1")
    else:
        g.add_argument("--pad-fill", type=int, default=None,
                       help="value of the 4-pixel padding before the random crop (default 127; the reference "
                            "used MXNet's default 255, restored by --reference-compat)")
    g.add_argument("--data-nthreads", type=int, default=4, help="decoding threads of the ImageRecordIter")
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
                        "missing a factor x in the diagonal term; fbn.md 1.4)")
    g.add_argument("--memonger", action="store_true",
                   help="trade compute for memory: sets MXNET_BACKWARD_DO_MIRROR=1 (MXNet's built-in mirroring; "
                        "the original called the external mxnet-memonger search_plan, not packaged for MXNet 1.9)")

    g = p.add_argument_group("optimisation")
    g.add_argument("--lr", type=float, default=0.1, help="base learning rate")
    g.add_argument("--mom", type=float, default=0.9, help="momentum")
    g.add_argument("--wd", type=float, default=0.0001, help="weight decay")
    g.add_argument("--wd-mode", choices=["all", "no-bias-bn"], default=None,
                   help="parameters that get weight decay: no-bias-bn (default: every *_weight, no biases or BN "
                        "gamma/beta) or all (the reference, --reference-compat)")
    g.add_argument("--optimizer", choices=["sgd", "nag"], default=d["optimizer"],
                   help="SGD with momentum (CIFAR reference) or Nesterov (ImageNet reference)")
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
    g.add_argument("--init", type=str, default="xavier", choices=["xavier"],
                   help="initializer: Xavier gaussian, fan-in, magnitude 2 (the only one the reference supports)")
    g.add_argument("--seed", type=int, default=None, help="random seed (MXNet, NumPy, iterators)")

    g = p.add_argument_group("checkpoints, logs, resume")
    g.add_argument("--model-prefix", type=str, default=None,
                   help="checkpoint name: model/<prefix>-symbol.json, model/<prefix>-NNNN.params/.states; log "
                        "log/<prefix>.log (default: derived from network and classes)")
    g.add_argument("--output-dir", type=str, default=".", help="folder that holds model/ and log/")
    g.add_argument("--log-file", type=str, default=None, help="log file (default log/<prefix>.log)")
    g.add_argument("--frequent", type=int, default=50, help="log speed, metrics and LR every N batches")
    g.add_argument("--retrain", action="store_true", help="start from model/<model-load-prefix>-<model-load-epoch>")
    g.add_argument("--model-load-epoch", type=int, default=0, help="checkpoint epoch loaded by --retrain")
    g.add_argument("--model-load-prefix", type=str, default=None,
                   help="checkpoint prefix loaded by --retrain (default: --model-prefix)")
    g.add_argument("--begin-epoch", type=int, default=None,
                   help="epoch to start from (default: the loaded checkpoint's epoch, else 0)")
    g.add_argument("--auto-resume", dest="auto_resume", action="store_true", default=True,
                   help="continue from the newest checkpoint of --model-prefix if there is one (default)")
    g.add_argument("--no-auto-resume", dest="auto_resume", action="store_false",
                   help="ignore existing checkpoints and start from scratch (overwriting them)")

    g = p.add_argument_group("modes")
    g.add_argument("--reference-compat", action="store_true",
                   help="reproduce the released code's quirks: --wd-mode all, --pad-fill 255, "
                        "--dropfactor-mode reference, --fb-grad-mode reference (explicit flags win)")
    g.add_argument("--dry-run", action="store_true",
                   help="build symbol, schedule, optimizer, iterators (if the data exist) and module, then stop")
    p.set_defaults(dataset=dataset)
    return p


def parse_args(dataset, argv=None):
    args = build_parser(dataset).parse_args(argv)
    return resolve_args(args)


def resolve_args(args):
    """Fill the defaults that depend on other flags (compat mode, prefix, begin epoch)."""
    ds = DATASETS[args.dataset]
    for key, (fixed, ref) in COMPAT_DEFAULTS.items():
        if hasattr(args, key) and getattr(args, key) is None:
            setattr(args, key, ref if args.reference_compat else fixed)
    try:
        args.lr_steps = [int(x) for x in args.lr_step.replace(" ", "").split(",") if x != ""]
    except ValueError:
        raise SystemExit("error: --lr-step expects comma-separated epochs such as 100,150 (or nothing), got %r"
                         % args.lr_step)
    if args.model_prefix is None:
        args.model_prefix = ("cifar%d_%s" % (args.num_classes, args.network) if args.dataset == "cifar"
                             else "imagenet_%s" % args.network)
    from symbols import NETWORKS_CIFAR, NETWORKS_IMAGENET
    nets = NETWORKS_CIFAR if args.dataset == "cifar" else NETWORKS_IMAGENET
    if args.network not in nets:
        raise SystemExit("error: --network %s is not a %s network; choose one of %s"
                         % (args.network, args.dataset, ", ".join(nets)))
    if args.batch_size < 1 or args.num_epoches < 1:
        raise SystemExit("error: --batch-size and --num-epoches must be positive")
    if not 0.0 <= args.fmconv_drop < 1.0:
        raise SystemExit("error: --fmconv-drop is a drop rate in [0, 1), got %s" % args.fmconv_drop)
    args.model_dir = os.path.join(args.output_dir, "model")
    args.prefix_path = os.path.join(args.model_dir, args.model_prefix)
    if args.log_file is None:
        args.log_file = os.path.join(args.output_dir, "log", args.model_prefix + ".log")
    args.train_rec = os.path.join(args.data_dir, train_rec_name(args))
    args.val_rec = os.path.join(args.data_dir, ds["val"])
    return args


def train_rec_name(args):
    if args.dataset == "cifar":
        return "train.rec"
    return "train_256_q90.rec" if args.aug_level == 1 else "train_480_q90.rec"


# ------------------------------------------------------------------------------------ LR schedule
class SlowStartScheduler(mx.lr_scheduler.LRScheduler):
    """FBN's slow-start schedule (fbn.md 3.1) as a pure function of the update count.

    Let t = begin_epoch * epoch_size + num_update - 1 be the 0-based index of the current
    iteration counted from epoch 0 (MXNet calls the scheduler with num_update = 1 on the first
    update of this process). Then

        t < slowstart * epoch_size : lr = base_lr * (scale + (1 - scale) * t / (slowstart * epoch_size))
        otherwise                  : lr = base_lr * factor ** #{s in steps : t >= s * epoch_size}

    ``steps`` are ABSOLUTE epochs, so a run resumed at ``begin_epoch`` (with a fresh optimizer whose
    counter starts at 0) follows exactly the sequence of an uninterrupted run. Differences from the
    original FMConvScheduler: no one-iteration lag at the steps, and no restarted ramp on resume.
    ``last_update``/``last_lr`` record the latest call (global 1-based update, value) for logging.
    """

    def __init__(self, epoch_size, steps=(), factor=0.1, slowstart=0, scale=0.1, begin_epoch=0, base_lr=0.1):
        super().__init__(base_lr=base_lr)
        if epoch_size < 1:
            raise ValueError("epoch_size must be >= 1")
        self.epoch_size = int(epoch_size)
        self.steps = sorted(int(s) for s in steps)
        self.factor = float(factor)
        self.slowstart = int(slowstart)
        self.scale = float(scale)
        self.begin_epoch = int(begin_epoch)
        self.last_update = None
        self.last_lr = None

    def lr_at(self, t):
        """Learning rate of the 0-based global iteration ``t``."""
        ramp = self.slowstart * self.epoch_size
        if t < ramp:
            return self.base_lr * (self.scale + (1.0 - self.scale) * t / float(ramp))
        n = sum(1 for s in self.steps if t >= s * self.epoch_size)
        return self.base_lr * self.factor ** n

    def __call__(self, num_update):
        t = self.begin_epoch * self.epoch_size + max(int(num_update), 1) - 1
        lr = self.lr_at(t)
        self.last_update, self.last_lr = t + 1, lr
        return lr


# ----------------------------------------------------------------------------------------- data
def count_records(rec_path):
    """Number of records of a .rec file, from its .idx (None when there is no index)."""
    idx = os.path.splitext(rec_path)[0] + ".idx"
    if not os.path.exists(idx):
        return None
    with open(idx) as f:
        return sum(1 for line in f if line.strip())


def get_iterators(args, part_index=0, num_parts=1, seed=0):
    """ImageRecordIters configured as the reference (fbn.md 5.1 / 5.3): mean subtraction only.
    The training file's .idx, when present, is passed so shuffling covers the whole file. Validation is not sharded (every worker scores the whole set) and reads whole batches from the
    start each epoch (round_batch=False) so it can be counted exactly."""
    common_kw = dict(label_width=1, data_name="data", label_name="softmax_label", mean_r=MEAN_RGB[0],
                     mean_g=MEAN_RGB[1], mean_b=MEAN_RGB[2], batch_size=args.batch_size,
                     data_shape=(3, args.data_shape, args.data_shape), preprocess_threads=args.data_nthreads)
    if args.dataset == "cifar":
        aug = dict(pad=4, fill_value=args.pad_fill, rand_crop=True, rand_mirror=True)
    else:
        lvl = args.aug_level
        aug = dict(pad=0, rand_crop=True, rand_mirror=True, max_random_scale=1.0,
                   min_random_scale=1.0 if lvl == 1 else 0.533, max_aspect_ratio=0.0 if lvl == 1 else 0.25,
                   random_h=0 if lvl == 1 else 36, random_s=0 if lvl == 1 else 50, random_l=0 if lvl == 1 else 50,
                   max_rotate_angle=0 if lvl <= 2 else 10, max_shear_ratio=0.0 if lvl <= 2 else 0.1)
    idx = os.path.splitext(args.train_rec)[0] + ".idx"
    if os.path.exists(idx):  # with its index the iterator shuffles the whole file, not only chunks
        aug["path_imgidx"] = idx
    train = mx.io.ImageRecordIter(path_imgrec=args.train_rec, shuffle=True, prefetch_buffer=4, seed=seed,
                                  num_parts=num_parts, part_index=part_index, **aug, **common_kw)
    val = mx.io.ImageRecordIter(path_imgrec=args.val_rec, rand_crop=False, rand_mirror=False, round_batch=False,
                                prefetch_buffer=4, **common_kw)
    return train, val


def create_metric(args):
    metrics = [mx.metric.Accuracy()]
    if args.dataset == "imagenet":
        metrics.append(mx.metric.TopKAccuracy(top_k=5))
    return mx.metric.CompositeEvalMetric(metrics)


# ------------------------------------------------------------------------------------ optimizer
def param_names(symbol):
    return [n for n in symbol.list_arguments() if n != "data" and not n.endswith("_label")]


def wd_mults(names, wd_mode):
    """Weight-decay multipliers by name: `all` -> none (wd everywhere, the reference);
    `no-bias-bn` -> 0 for *_bias, *_gamma, *_beta."""
    if wd_mode == "all":
        return {}
    return {n: 0.0 for n in names if n.endswith(("_bias", "_gamma", "_beta"))}


def lr_mults(names, args, log=None):
    """--fmconv (only without slow-start) and --freeze multipliers, keyed by name (fbn.md 3.2)."""
    mult = {}
    if args.fmconv:
        if args.fmconv_slowstart == 0:
            mult.update({n: args.fmconv_scale for n in names if n.startswith("bilinear")})
        elif log:
            log.info("--fmconv is ignored because --fmconv-slowstart > 0 (as in the reference)")
    if args.freeze:
        frozen = [n for n in names if "cifar" not in n]
        if len(frozen) == len(names):
            raise SystemExit("error: --freeze sets lr_mult 0 on every parameter whose name lacks 'cifar' (the "
                             "B-CNN baseline's head); network %s has no such head, so nothing would train"
                             % args.network)
        mult.update({n: 0.0 for n in frozen})
    return mult


def make_optimizer(args, symbol, scheduler, rescale_grad, lr=None, name=None, wd_mult=None):
    """SGD-momentum / NAG with clip_gradient=10 and rescale_grad 1/batch (fbn.md 3.2). Multipliers
    are keyed by parameter name (Module fills in idx2name), so they hold for any device count."""
    names = param_names(symbol)
    opt = mx.optimizer.create(name or args.optimizer, learning_rate=args.lr if lr is None else lr,
                              momentum=args.mom, wd=args.wd, clip_gradient=10.0, rescale_grad=rescale_grad,
                              lr_scheduler=scheduler)
    opt.set_wd_mult(wd_mults(names, args.wd_mode) if wd_mult is None else wd_mult)
    opt.set_lr_mult(lr_mults(names, args))
    return opt


def build_symbol(args):
    from symbols import get_symbol
    return get_symbol(args.network, num_classes=args.num_classes, res_module_num=args.res_module_num,
                      depth=args.depth, fmconv_factor=args.fmconv_factor, fmconv_drop=args.fmconv_drop,
                      bn_mom=args.bn_mom, workspace=args.workspace, memonger=args.memonger,
                      dropfactor_mode=args.dropfactor_mode, grad_mode=args.fb_grad_mode)


# ----------------------------------------------------------------------------------- checkpoints
def save_checkpoint(mod, symbol, prefix, epoch, save_states=True):
    """Atomically write <prefix>-symbol.json, <prefix>-NNNN.states, then <prefix>-NNNN.params (the
    params file is written last: its presence marks a complete checkpoint)."""
    common.atomic_write(prefix + "-symbol.json", symbol.save)
    if save_states:
        common.atomic_write("%s-%04d.states" % (prefix, epoch), mod.save_optimizer_states)
    arg, aux = mod.get_params()
    blob = {"arg:" + k: v for k, v in arg.items()}
    blob.update({"aux:" + k: v for k, v in aux.items()})
    common.atomic_write("%s-%04d.params" % (prefix, epoch), lambda tmp: mx.nd.save(tmp, blob))
    logging.info('Saved checkpoint to "%s-%04d.params"', prefix, epoch)


def load_params(prefix, epoch):
    path = "%s-%04d.params" % (prefix, epoch)
    if not os.path.exists(path):
        raise SystemExit("error: checkpoint %s not found (check --model-load-prefix/--model-load-epoch and "
                         "--output-dir)" % path)
    arg, aux = {}, {}
    for k, v in mx.nd.load(path).items():
        kind, name = k.split(":", 1)
        (arg if kind == "arg" else aux)[name] = v
    return arg, aux


def resume_plan(args, symbol):
    """(load_prefix, load_epoch, begin_epoch, reason) for this run; load_epoch None = from scratch."""
    if args.retrain:
        load_prefix = os.path.join(args.model_dir, args.model_load_prefix or args.model_prefix)
        begin = args.model_load_epoch if args.begin_epoch is None else args.begin_epoch
        return load_prefix, args.model_load_epoch, begin, "--retrain"
    if args.auto_resume and args.begin_epoch is None:
        last = common.latest_checkpoint(args.prefix_path)
        if last is not None:
            sym_file = args.prefix_path + "-symbol.json"
            if os.path.exists(sym_file) and mx.sym.load(sym_file).tojson() != symbol.tojson():
                raise SystemExit("error: model/%s-*.params were written by a different network or settings; "
                                 "use another --model-prefix, or --no-auto-resume to overwrite them"
                                 % args.model_prefix)
            return args.prefix_path, last, last, "auto-resume (newest checkpoint; --no-auto-resume starts over)"
    return None, None, args.begin_epoch or 0, "from scratch"


# ------------------------------------------------------------------------------------- training
class BatchLogger:
    """Every ``frequent`` batches: the global update count and the LR the optimizer used."""

    def __init__(self, scheduler, frequent):
        self.scheduler, self.frequent = scheduler, max(1, frequent)

    def __call__(self, param):
        if (param.nbatch + 1) % self.frequent == 0 and self.scheduler.last_lr is not None:
            logging.info("Epoch[%d] Batch[%d] Update[%d] lr=%.8g", param.epoch, param.nbatch + 1,
                         self.scheduler.last_update, self.scheduler.last_lr)


def evaluate(mod, val, metric, num_val):
    """Validation metrics on exactly ``num_val`` images (ImageRecordIter's ``pad`` is unreliable
    after reset(), fbn.md notes / mxnet-notes 7), or on whole batches minus pad when unknown."""
    metric.reset()
    val.reset()
    seen = 0
    for batch in val:
        bs = batch.data[0].shape[0]
        valid = bs - batch.pad if num_val is None else min(bs, num_val - seen)
        if valid <= 0:
            break
        mod.forward(batch, is_train=False)
        out = mod.get_outputs()[0]
        metric.update([batch.label[0][:valid]], [out[:valid]])
        seen += valid
    return metric.get_name_value()


def run_epochs(mod, train, val, args, begin_epoch, end_epoch, num_val, batch_cbs, after_epoch, tag=""):
    """Module-API training loop (as Module.fit: forward_backward, update, metric, callbacks,
    Train-/Validation- log lines)."""
    metric = create_metric(args)   # whole epoch: the Train- line
    window = create_metric(args)   # reset by the Speedometer every `frequent` batches
    for epoch in range(begin_epoch, end_epoch):
        tic = time.time()
        metric.reset()
        window.reset()
        train.reset()
        nbatch = 0
        for batch in train:
            mod.forward_backward(batch)
            mod.update()
            mod.update_metric(metric, batch.label)
            mod.update_metric(window, batch.label)
            param = mx.model.BatchEndParam(epoch=epoch, nbatch=nbatch, eval_metric=window, locals=None)
            for cb in batch_cbs:
                cb(param)
            nbatch += 1
        for name, value in metric.get_name_value():
            logging.info("%sEpoch[%d] Train-%s=%f", tag, epoch, name, value)
        logging.info("%sEpoch[%d] Time cost=%.3f", tag, epoch, time.time() - tic)
        after_epoch(epoch + 1)
        if val is not None:
            for name, value in evaluate(mod, val, create_metric(args), num_val):
                logging.info("%sEpoch[%d] Validation-%s=%f", tag, epoch, name, value)


def setup_devices(args, log):
    try:
        return common.parse_gpus(args.gpus if args.gpus is not None else ("0" if _num_gpus() else ""))
    except SystemExit as e:
        if not args.dry_run:
            raise
        log.warning("dry run: %s -- planning on the CPU instead", e)
        return [mx.cpu()]


def _num_gpus():
    try:
        return mx.context.num_gpus()
    except mx.base.MXNetError:
        return 0


def main(dataset, argv=None):
    """Entry point of train_cifar.py / train_imagenet.py; returns 0 on success."""
    args = parse_args(dataset, argv)
    kv = args.kv_store
    if args.kv_store.startswith("dist") or args.kv_store == "horovod":
        kv = common.create_kvstore(args.kv_store)
    part_index, num_parts = common.worker_shard(None if isinstance(kv, str) else kv)
    rank = part_index
    log_file = args.log_file if rank == 0 else args.log_file.replace(".log", "-rank%d.log" % rank)
    common.setup_logging(log_file)
    log = logging.getLogger()
    os.makedirs(args.model_dir, exist_ok=True)
    log.info("Start: %s %s", os.path.basename(sys.argv[0]) or dataset, " ".join(argv if argv is not None else sys.argv[1:]))
    log.info("args: %s", json.dumps({k: v for k, v in sorted(vars(args).items())}, default=str))
    log.info("quirk settings: wd-mode=%s%s dropfactor-mode=%s fb-grad-mode=%s (%s)", args.wd_mode,
             " pad-fill=%d" % args.pad_fill if dataset == "cifar" else "", args.dropfactor_mode,
             args.fb_grad_mode, "reference-compat" if args.reference_compat else "corrected defaults")
    if args.seed is not None:
        random.seed(args.seed)
        np.random.seed(args.seed)
        mx.random.seed(args.seed)
    if args.memonger:
        os.environ["MXNET_BACKWARD_DO_MIRROR"] = "1"
        log.info("--memonger: MXNET_BACKWARD_DO_MIRROR=1 (recompute cheap activations in backward)")

    ctxs = setup_devices(args, log)
    # dist_sync: the servers only sum gradients and every worker applies the same update locally
    # (MXNET_UPDATE_ON_KVSTORE=0), so the optimizer state (momentum) lives in the workers and is
    # checkpointed by rank 0, and the LR scheduler runs (and is logged) in the worker. dist_async
    # keeps the optimizer on the servers: its state cannot be saved (momentum restarts on resume).
    dist = not isinstance(kv, str) and "dist" in kv.type
    local_update = dist and "_sync" in kv.type and os.environ.get("MXNET_UPDATE_ON_KVSTORE", "0") == "0"
    if local_update:
        os.environ["MXNET_UPDATE_ON_KVSTORE"] = "0"
    save_states = not dist or local_update
    if dist:
        log.info("kvstore %s: rank %d of %d, %s", kv.type, kv.rank, kv.num_workers,
                 "updates in the workers" if local_update else "updates on the servers (no optimizer state saved)")

    num_examples = args.num_examples
    if num_examples is None:
        num_examples = count_records(args.train_rec) or DATASETS[dataset]["num_examples"]
    epoch_size = max(1, int(math.ceil(num_examples / float(num_parts) / args.batch_size)))
    num_val = count_records(args.val_rec)

    symbol = build_symbol(args)
    n_params = symbols_count(symbol, args)
    log.info("network %s: %d parameters (%.3fM), input 3x%dx%d, %d classes", args.network, n_params,
             n_params / 1e6, args.data_shape, args.data_shape, args.num_classes)

    load_prefix, load_epoch, begin_epoch, why = resume_plan(args, symbol)
    sched = SlowStartScheduler(epoch_size, args.lr_steps, factor=0.1, slowstart=args.fmconv_slowstart,
                               scale=args.fmconv_scale, begin_epoch=begin_epoch, base_lr=args.lr)
    log.info("epoch size %d updates (%d examples / %d worker(s) / batch %d); LR %s; steps %s; slow-start %d "
             "epoch(s) from %.3g", epoch_size, num_examples, num_parts, args.batch_size, args.lr,
             args.lr_steps or "none", args.fmconv_slowstart, args.fmconv_scale * args.lr)
    if load_epoch is not None:
        log.info("resume (%s): loading %s-%04d.params, continuing at epoch %d", why, load_prefix, load_epoch,
                 begin_epoch)
    if begin_epoch >= args.num_epoches:
        log.info("nothing to do: begin epoch %d >= --num-epoches %d", begin_epoch, args.num_epoches)
        return 0

    have_data = os.path.exists(args.train_rec) and os.path.exists(args.val_rec)
    if have_data:
        train, val = get_iterators(args, part_index, num_parts, seed=(args.seed or 0) + 1000 * begin_epoch + rank)
        train = mx.io.ResizeIter(train, epoch_size, reset_internal=True)
        data_shapes, label_shapes = train.provide_data, train.provide_label
    elif not args.dry_run:
        missing = [p for p in (args.train_rec, args.val_rec) if not os.path.exists(p)]
        raise SystemExit("error: data not found: %s. Point --data-dir at the folder with the .rec files (see "
                         "docs/fbn.md, Data) or use --dry-run to check the command without data."
                         % ", ".join(missing))
    else:
        train = val = None
        log.info("dry run: data not found in %s (%s, %s) -- iterators skipped", args.data_dir,
                 os.path.basename(args.train_rec), os.path.basename(args.val_rec))
        data_shapes = [("data", (args.batch_size, 3, args.data_shape, args.data_shape))]
        label_shapes = [("softmax_label", (args.batch_size,))]

    if args.dry_run:
        # Bind a small copy on the first device: shapes, parameters and the optimizer are built for
        # real, without allocating the full batch.
        small = max(2, len(ctxs))
        data_shapes = [(n, (small,) + tuple(s[1:])) for n, s in data_shapes]
        label_shapes = [(n, (small,) + tuple(s[1:])) for n, s in label_shapes]
        ctxs = [mx.cpu()]
    init = mx.init.Xavier(rnd_type="gaussian", factor_type="in", magnitude=2)
    rescale = 1.0 / (args.batch_size * (num_parts if "_sync" in args.kv_store else 1))
    mod = mx.mod.Module(symbol, context=ctxs, data_names=("data",), label_names=("softmax_label",))
    mod.bind(data_shapes=data_shapes, label_shapes=label_shapes, for_training=True)

    arg_params = aux_params = None
    if load_epoch is not None:
        if args.dry_run and not os.path.exists("%s-%04d.params" % (load_prefix, load_epoch)):
            log.info("dry run: checkpoint %s-%04d.params not found here -- initialising instead", load_prefix,
                     load_epoch)
        else:
            arg_params, aux_params = load_params(load_prefix, load_epoch)
    warm_prefix = args.prefix_path + "-warm"
    do_warmup = args.warmup and load_epoch is None and begin_epoch == 0
    if do_warmup and dist and not os.path.exists(warm_prefix + "-0001.params"):
        raise SystemExit("error: --warmup cannot run under a distributed kvstore (it would need a second "
                         "optimizer on the same kvstore); run the warm-up epoch once with a single process "
                         "(same command, --num-epoches 1, no launcher): its %s-0001.params is then reused"
                         % warm_prefix)
    if args.dry_run:
        mod.init_params(init, arg_params=arg_params, aux_params=aux_params, allow_missing=False)
        mod.init_optimizer(kvstore=kv, optimizer=make_optimizer(args, symbol, sched, 1.0 / small))
        log.info("dry run: LR at epoch start %s", ", ".join(
            "%d:%.4g" % (e, sched.lr_at(e * epoch_size))
            for e in sorted({0, begin_epoch, args.fmconv_slowstart, *args.lr_steps}) if e < args.num_epoches))
        if do_warmup:
            log.info("dry run: would first train 1 warm-up epoch at lr %g", args.lr * args.fmconv_scale)
        log.info("dry run: built %s on %s; stopping before training (%d epochs %d..%d would follow)",
                 args.network, ctxs, args.num_epoches - begin_epoch, begin_epoch, args.num_epoches - 1)
        return 0

    if do_warmup:
        arg_params, aux_params = run_warmup(args, symbol, ctxs, kv, init, train, val, num_val, rescale,
                                            data_shapes, label_shapes, warm_prefix, rank)
    mod.init_params(init, arg_params=arg_params, aux_params=aux_params, allow_missing=False)
    mod.init_optimizer(kvstore=kv, optimizer=make_optimizer(args, symbol, sched, rescale))
    if local_update:  # start every worker from rank 0's parameters (the kvstore holds them after init)
        arg, aux = mod.get_params()
        for name in param_names(symbol):
            kv.pull(name, out=arg[name])
        mod.set_params(arg, aux)
    if load_epoch is not None:
        states = "%s-%04d.states" % (load_prefix, load_epoch)
        if os.path.exists(states):
            mod.load_optimizer_states(states)
            log.info("loaded optimizer state %s", states)
        else:
            log.warning("no optimizer state %s: momentum restarts from zero", states)

    def after_epoch(epoch):
        if rank == 0:
            save_checkpoint(mod, symbol, args.prefix_path, epoch, save_states=save_states)

    cbs = [mx.callback.Speedometer(args.batch_size, args.frequent), BatchLogger(sched, args.frequent)]
    try:
        run_epochs(mod, train, val, args, begin_epoch, args.num_epoches, num_val, cbs, after_epoch)
    except KeyboardInterrupt:
        log.info("interrupted; run the same command again to resume from the newest checkpoint")
        return 130
    log.info("finished %d epochs; checkpoints in %s-NNNN.params", args.num_epoches, args.prefix_path)
    return 0


def run_warmup(args, symbol, ctxs, kv, init, train, val, num_val, rescale, data_shapes, label_shapes,
               warm_prefix, rank):
    """--warmup (fbn.md 5.1): one extra epoch at lr*fmconv_scale with a fresh optimizer, saved as
    <prefix>-warm-0001.params; reused if it already exists. With --reference-compat the warm-up
    optimizer uses MXNet's string-optimizer rule (no wd on biases/beta), as the original."""
    if os.path.exists(warm_prefix + "-0001.params"):
        logging.info("warm-up: reusing %s-0001.params", warm_prefix)
        return load_params(warm_prefix, 1)
    lr = args.lr * args.fmconv_scale
    logging.info("warm-up: 1 epoch at lr %g before the schedule", lr)
    wmod = mx.mod.Module(symbol, context=ctxs, data_names=("data",), label_names=("softmax_label",))
    wmod.bind(data_shapes=data_shapes, label_shapes=label_shapes, for_training=True)
    wmod.init_params(init)
    names = param_names(symbol)
    # the original's warm-up used the string optimizer 'sgd', whose rule exempts *_bias and *_beta
    wd_mult = ({n: 0.0 for n in names if n.endswith(("_bias", "_beta"))} if args.reference_compat
               else wd_mults(names, args.wd_mode))
    opt = make_optimizer(args, symbol, None, rescale, lr=lr, name="sgd", wd_mult=wd_mult)
    wmod.init_optimizer(kvstore=kv, optimizer=opt)

    def save(_epoch):
        if rank == 0:
            save_checkpoint(wmod, symbol, warm_prefix, 1, save_states=False)

    # logged as epoch -1 ("Warmup Epoch[-1] ..."), so log parsers do not take it for epoch 0
    run_epochs(wmod, train, val, args, -1, 0, num_val, [mx.callback.Speedometer(args.batch_size, args.frequent)],
               save, tag="Warmup ")
    return wmod.get_params()


def symbols_count(symbol, args):
    from symbols import count_params
    return count_params(symbol, (1, 3, args.data_shape, args.data_shape))
