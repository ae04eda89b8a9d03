"""One Gluon training core for every Gluon family (AFF, bL-Net, ...): a config + a loop object.

    cfg = TrainConfig(num_classes=100, batch_size=128, num_epochs=400, lr=0.2, lr_mode='step',
                      lr_decay_epoch=(300, 350), initializer='xavier', save_prefix='aff-resnet32')
    history = fit(net, cfg, contexts, train_loader, val_loader)

What it does (gluon-cv's ``train_imagenet.py``/``train_cifar`` recipe, aff.md §3, mxnet-notes §2):

* learning rate: gluon-cv ``LRScheduler``/``LRSequential`` -- optional linear warmup from
  ``warmup_lr`` then ``lr_mode`` (step/cosine/poly/linear/constant) to ``target_lr``, updated per
  iteration, or per epoch with ``lr_step_per='epoch'`` (cosine then equals PyTorch's
  ``CosineAnnealingLR(T_max=num_epochs)``). Step decays happen at the absolute epochs in
  ``lr_decay_epoch``; ``lr_decay_shift`` moves them earlier (the AFF CIFAR script's bug, aff.md §3.2).
* optimiser: ``nag`` (Nesterov SGD) by default, ``no_wd`` = wd_mult 0 on ``.*beta|.*gamma|.*bias``;
  ``mixup`` (batch mixed with its reverse, lambda ~ Beta(a, a), off for the last ``mixup_off_epoch``
  epochs) and ``label_smoothing`` eta as dense targets, exactly gluon-cv's one-hot formulas;
* devices and scale-out: several contexts (``split_and_load``), a kvstore (``dist_*`` through
  :func:`mxrepro.common.create_kvstore`), data sharded per worker by the loaders (:mod:`mxrepro.data`);
* ``dtype='float16'``: ``net.cast`` + ``multi_precision`` on GPUs; on a CPU it stops before training;
* top-1/top-5 on the validation set every epoch; checkpoints ``<prefix>-NNNN.params/.states/.json``
  every ``save_frequency`` epochs (NNNN = epochs done) and ``<prefix>-best.*`` on improvement, all
  written atomically, rank 0 only; ``resume_epoch`` (or ``auto_resume``) restores parameters, trainer
  states (momentum, update count) and the best-so-far and rebuilds the schedule from the config at
  that update count; the data order and the random draws of epoch ``e`` depend only on (seed, e), so
  a resumed run continues exactly (bit-identical with SGD; MXNet's CPU ``nag_mom_update`` is itself
  not run-to-run deterministic under the threaded engine);
* ``init_params``: start from given weights with a fresh schedule (the reference's ``--resume-from``);
* ``hooks``: objects with any of ``make_lr_scheduler(loop, iters_per_epoch)``, ``make_loss(loop)``,
  ``on_train_begin(loop)``, ``on_epoch_begin(loop, epoch)``, ``on_batch_end(loop, epoch, i)``,
  ``on_epoch_end(loop, epoch, record)``
  let another recipe change a piece without copying the loop (bL-Net: ``optimizer='nag'``,
  ``lr_mode='cosine'``, ``lr_step_per='epoch'``, ``warmup_epochs=0``, ``no_wd=False`` is pure config).

Log lines (parsed by tools/parse_log.py): ``[Epoch E] train: loss=L top1=A lr=R speed=S img/s
time=T s | val: top1=A1 top5=A5 err-top1=E1 err-top5=E5 | best top1=B (epoch K)``; one JSON object per
epoch also goes to ``<save_dir>/<prefix>-metrics.jsonl``.
"""
import json
import logging
import math
import os
import time
from dataclasses import asdict, dataclass, field
from typing import Optional, Sequence

import mxnet as mx
import numpy as np
from mxnet import autograd, gluon
from gluoncv.utils import LRScheduler, LRSequential

from .common import atomic_write, create_kvstore, latest_checkpoint, worker_shard
from .data import seed_everything

__all__ = ["TrainConfig", "TrainLoop", "fit", "make_lr_scheduler", "EpochStepScheduler", "IterationScheduler",
           "smooth_labels",
           "add_train_args", "config_from_args", "contexts_from_args", "parse_epochs",
           "mixup_labels", "check_dtype", "make_initializer", "make_kvstore"]

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    """Everything the loop needs besides the network and data (defaults: gluon-cv ImageNet recipe)."""
    num_classes: int = 1000
    num_epochs: int = 120
    batch_size: int = 128              # per device (as gluon-cv); the loaders get batch_size * #contexts
    optimizer: str = "nag"
    lr: float = 0.1
    momentum: float = 0.9
    wd: float = 1e-4
    no_wd: bool = False
    optimizer_params: dict = field(default_factory=dict)  # extra optimiser kwargs
    lr_mode: str = "cosine"            # step | cosine | poly | linear | constant
    lr_decay: float = 0.1
    lr_decay_epoch: Sequence[float] = (40, 60)
    lr_decay_period: int = 0
    lr_decay_shift: float = 0.0        # decay at (epoch - shift): 0 = the epochs given
    warmup_epochs: int = 0
    warmup_lr: float = 0.0
    target_lr: float = 0.0
    poly_power: float = 2.0
    lr_step_per: str = "iteration"     # iteration | epoch
    label_smoothing: float = 0.0       # eta (0.1 in gluon-cv); 0 = off
    mixup: bool = False
    mixup_alpha: float = 0.2
    mixup_off_epoch: int = 0
    initializer: object = "msra"       # msra (gluon-cv MSRAPrelu) | xavier | kaiming_out | an mx.init object
    dtype: str = "float32"
    hybridize: bool = True
    kv_store: str = "device"
    save_dir: str = "params"
    save_prefix: str = "model"
    save_frequency: int = 10
    save_best: bool = True
    resume_epoch: int = 0
    resume_params: str = ""
    resume_states: str = ""
    auto_resume: bool = False
    init_params: str = ""              # start from these weights with a fresh schedule (reference --resume-from)
    log_interval: int = 50
    seed: Optional[int] = 0
    max_batches: int = 0               # cap batches per epoch (smoke tests, benchmarks); 0 = all
    top_k: int = 5

    def to_dict(self):
        d = asdict(self)
        if not isinstance(d["initializer"], (str, type(None))):
            d["initializer"] = repr(d["initializer"])
        return d


# ------------------------------------------------------------------------------------------------
# Pieces
# ------------------------------------------------------------------------------------------------
def check_dtype(dtype, contexts):
    """Stop before any training when the dtype cannot run on the contexts."""
    if dtype not in ("float32", "float16"):
        raise SystemExit("error: --dtype must be float32 or float16, got %r" % dtype)
    if dtype == "float16" and any(c.device_type == "cpu" for c in contexts):
        raise SystemExit("error: --dtype float16 needs GPUs (MXNet's CPU kernels have no fast float16 path and "
                         "several ops lack it). Pass --dtype float32 to train on the CPU, or run on GPUs "
                         "(--num-gpus N / --gpus 0,1).")


def make_initializer(init):
    """``'msra'`` -> gluon-cv's MSRAPrelu (ImageNet, aff.md §3.1), ``'xavier'`` -> Xavier (CIFAR, §3.2),
    ``'kaiming_out'`` -> He-normal fan-out (bL-Net); an ``mx.init.Initializer`` passes through."""
    if isinstance(init, mx.init.Initializer):
        return init
    table = {"msra": lambda: mx.init.MSRAPrelu(),
             "xavier": lambda: mx.init.Xavier(),
             "kaiming_out": lambda: mx.init.Xavier(rnd_type="gaussian", factor_type="out", magnitude=2)}
    if init not in table:
        raise ValueError("initializer must be one of %s or an mx.init.Initializer" % sorted(table))
    return table[init]()


class EpochStepScheduler(mx.lr_scheduler.LRScheduler):
    """Holds the rate constant within an epoch: ``lr(update) = inner(epoch of that update)``, the inner
    schedule counting epochs (PyTorch-style per-epoch scheduling, used by bL-Net)."""

    def __init__(self, inner, iters_per_epoch):
        super().__init__()
        self.inner, self.iters_per_epoch = inner, int(iters_per_epoch)

    def __call__(self, num_update):
        return self.inner(max(0, int(num_update) - 1) // self.iters_per_epoch)


class IterationScheduler(mx.lr_scheduler.LRScheduler):
    """MXNet calls a scheduler with the 1-based update count; gluon-cv's schedules are written for the
    0-based iteration index. ``lr(update n) = inner(n - 1)``: the first update uses the warmup's start
    value and a step decay at epoch e applies from the first iteration of epoch e exactly."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def __call__(self, num_update):
        return self.inner(max(0, int(num_update) - 1))


def make_lr_scheduler(cfg, iters_per_epoch):
    """gluon-cv schedule for ``cfg``: [linear warmup] + main mode, per iteration or per epoch."""
    per_epoch = cfg.lr_step_per == "epoch"
    if cfg.lr_step_per not in ("iteration", "epoch"):
        raise ValueError("lr_step_per must be 'iteration' or 'epoch'")
    unit = 1 if per_epoch else iters_per_epoch
    warm = int(cfg.warmup_epochs)
    if warm >= cfg.num_epochs:
        raise ValueError("warmup_epochs (%d) must be smaller than num_epochs (%d)" % (warm, cfg.num_epochs))
    main_epochs = cfg.num_epochs - warm
    if cfg.lr_decay_period > 0:
        decay_at = list(range(cfg.lr_decay_period, cfg.num_epochs, cfg.lr_decay_period))
    else:
        decay_at = [float(e) for e in cfg.lr_decay_epoch]
    # absolute epoch -> epochs after the warmup, where the main scheduler's count starts
    steps = [e - cfg.lr_decay_shift - warm for e in decay_at]
    if cfg.lr_mode == "step" and not cfg.lr_decay_shift and any(s <= 0 for s in steps):
        raise ValueError("step decay epochs %s must come after the %d warmup epochs" % (decay_at, warm))
    scheds = []
    if warm > 0:
        scheds.append(LRScheduler("linear", base_lr=cfg.warmup_lr, target_lr=cfg.lr, nepochs=warm,
                                  iters_per_epoch=unit))
    # per epoch, one extra count so the last epoch is not already at target_lr (CosineAnnealingLR)
    main_iters = main_epochs * unit + (1 if per_epoch and cfg.lr_mode != "step" else 0)
    scheds.append(LRScheduler(cfg.lr_mode, base_lr=cfg.lr, target_lr=cfg.target_lr, niters=main_iters,
                              step_iter=[int(round(s * unit)) for s in steps], step_factor=cfg.lr_decay,
                              power=cfg.poly_power))
    sched = LRSequential(scheds)
    return EpochStepScheduler(sched, iters_per_epoch) if per_epoch else IterationScheduler(sched)


def smooth_labels(label, classes, eta=0.1):
    """gluon-cv label smoothing: one-hot with on = 1 - eta + eta/K, off = eta/K."""
    return label.one_hot(classes, on_value=1 - eta + eta / classes, off_value=eta / classes)


def mixup_labels(label, classes, lam=1.0, eta=0.0):
    """gluon-cv mixup targets: lam * onehot(y) + (1 - lam) * onehot(y reversed), optionally smoothed."""
    y1 = smooth_labels(label, classes, eta)
    y2 = smooth_labels(label[::-1], classes, eta)
    return lam * y1 + (1 - lam) * y2


def make_kvstore(kv_store):
    """A KVStore object for distributed types (needs the launcher), else the type string (Gluon then
    skips the kvstore on a single device)."""
    if kv_store.startswith("dist") or kv_store == "horovod":
        from .engine.dist import guard_worker  # a crashed worker must not hang the others
        return guard_worker(create_kvstore(kv_store))
    return kv_store


# ------------------------------------------------------------------------------------------------
# The loop
# ------------------------------------------------------------------------------------------------
class TrainLoop:
    """State + steps of one training run; see the module docstring. ``run()`` trains and returns the
    per-epoch history (list of dicts)."""

    def __init__(self, net, cfg, contexts, train_data, val_data=None, hooks=(), kvstore=None):
        self.net, self.cfg, self.ctx = net, cfg, list(contexts)
        self.train_data, self.val_data = train_data, val_data
        self.hooks = list(hooks)
        check_dtype(cfg.dtype, self.ctx)
        self.kv = kvstore if kvstore is not None else make_kvstore(cfg.kv_store)
        self.rank, self.num_workers = worker_shard(self.kv if not isinstance(self.kv, str) else None)
        self.iters_per_epoch = train_data.num_batches
        if cfg.max_batches:
            self.iters_per_epoch = min(self.iters_per_epoch, cfg.max_batches)
        if self.iters_per_epoch <= 0:
            raise ValueError("the training data yields no batch; check the dataset and --batch-size")
        self.begin_epoch = 0
        self.history, self.best = [], {"top1": -1.0, "epoch": -1}
        self.trainer = None
        self.prefix = os.path.join(cfg.save_dir, cfg.save_prefix) if cfg.save_dir else ""

    # -- hooks ---------------------------------------------------------------------------------
    def _hook(self, name, *args):
        out = None
        for h in self.hooks:
            fn = getattr(h, name, None)
            if fn is not None:
                r = fn(self, *args)
                out = r if r is not None else out
        return out

    # -- set-up --------------------------------------------------------------------------------
    def _resume_paths(self):
        cfg = self.cfg
        epoch = cfg.resume_epoch
        if not epoch and cfg.auto_resume and self.prefix:
            epoch = latest_checkpoint(self.prefix) or 0
        if not epoch:
            return 0, None, None
        params = cfg.resume_params or "%s-%04d.params" % (self.prefix, epoch)
        states = cfg.resume_states or "%s-%04d.states" % (self.prefix, epoch)
        if not os.path.exists(params):
            raise SystemExit("error: cannot resume at epoch %d: %s does not exist (pass --resume-params)"
                             % (epoch, params))
        return epoch, params, states if os.path.exists(states) else None

    def setup(self):
        cfg, net = self.cfg, self.net
        if cfg.seed is not None:
            seed_everything(cfg.seed)
        self.begin_epoch, params, states = self._resume_paths()
        if params:
            net.load_parameters(params, ctx=self.ctx, cast_dtype=True)
            log.info("resumed parameters from %s (epoch %d)", params, self.begin_epoch)
            meta = os.path.splitext(params)[0] + ".json"
            if os.path.exists(meta):
                with open(meta) as f:
                    m = json.load(f)
                self.history, self.best = m.get("history", []), m.get("best", self.best)
        elif cfg.init_params:
            net.load_parameters(cfg.init_params, ctx=self.ctx, cast_dtype=True)
            log.info("initialised weights from %s (fresh schedule)", cfg.init_params)
        else:
            net.initialize(make_initializer(cfg.initializer), ctx=self.ctx)
        if cfg.dtype != "float32":
            net.cast(cfg.dtype)
        if cfg.hybridize:
            # static_shape=False: the validation batch size differs, and re-planning static shapes made
            # runs diverge at the 1e-4 level (run-to-run), which breaks bit-for-bit resume checks
            net.hybridize(static_alloc=True)
        if cfg.no_wd:
            for p in net.collect_params(".*beta|.*gamma|.*bias").values():
                p.wd_mult = 0.0
        sched = self._hook("make_lr_scheduler", self.iters_per_epoch) or make_lr_scheduler(cfg, self.iters_per_epoch)
        sched.base_lr = cfg.lr  # what mx.optimizer would overwrite it with (silences its warning)
        opt = {"learning_rate": cfg.lr, "wd": cfg.wd, "lr_scheduler": sched}
        if cfg.optimizer in ("sgd", "nag", "signum", "lbsgd"):
            opt["momentum"] = cfg.momentum
        if cfg.dtype != "float32":
            opt["multi_precision"] = True
        opt.update(cfg.optimizer_params)
        # Synchronous distributed training updates in the workers (the servers only sum gradients):
        # rank 0 can then save the optimizer state, and the schedule steps in every worker.
        sync_dist = isinstance(self.kv, mx.kv.KVStore) and "dist" in self.kv.type and "_sync" in self.kv.type
        self.trainer = gluon.Trainer(net.collect_params(), cfg.optimizer, opt, kvstore=self.kv,
                                     update_on_kvstore=False if sync_dist else None)
        start_update = self.begin_epoch * self.iters_per_epoch
        if states:
            self.trainer.load_states(states)
            # momentum and the update count come from the states; the schedule from this config, so a
            # resumed run with a changed --num-epochs follows the new schedule (identical otherwise)
            self.trainer._optimizer.lr_scheduler = sched
            log.info("resumed trainer states from %s (update %d)", states, self.trainer._optimizer.num_update)
        elif self.begin_epoch:
            log.warning("no trainer states for epoch %d: momentum restarts, the schedule continues", self.begin_epoch)
        if self.trainer._optimizer.num_update < start_update:
            o = self.trainer._optimizer
            o.begin_num_update = o.num_update = start_update
        self.loss_fn = self._hook("make_loss") or gluon.loss.SoftmaxCrossEntropyLoss(
            sparse_label=not (cfg.mixup or cfg.label_smoothing > 0))
        self._hook("on_train_begin")

    # -- steps ---------------------------------------------------------------------------------
    def _split(self, data, label):
        data = gluon.utils.split_and_load(data, self.ctx, batch_axis=0, even_split=False)
        label = gluon.utils.split_and_load(label, self.ctx, batch_axis=0, even_split=False)
        if self.cfg.dtype != "float32":
            data = [d.astype(self.cfg.dtype) for d in data]
        return data, label

    def _targets(self, data, label, epoch):
        """(inputs, loss targets, hard labels for the train accuracy) for one batch."""
        cfg = self.cfg
        eta = cfg.label_smoothing
        if cfg.mixup:
            lam = float(np.random.beta(cfg.mixup_alpha, cfg.mixup_alpha))
            if epoch >= cfg.num_epochs - cfg.mixup_off_epoch:
                lam = 1.0
            data = [lam * x + (1 - lam) * x[::-1] for x in data]
            targets = [mixup_labels(y, cfg.num_classes, lam, eta) for y in label]
            hard = label if lam >= 0.5 else [y[::-1] for y in label]
            return data, targets, hard
        if eta > 0:
            return data, [smooth_labels(y, cfg.num_classes, eta) for y in label], label
        return data, label, label

    def train_epoch(self, epoch):
        cfg, trainer = self.cfg, self.trainer
        self.train_data.set_epoch(epoch)
        if cfg.seed is not None:
            seed_everything(cfg.seed * 7919 + epoch + 1)
        acc = mx.metric.Accuracy()
        total_loss, seen, tic, btic = 0.0, 0, time.time(), time.time()
        step_scale = self.num_workers if isinstance(self.kv, mx.kv.KVStore) and "dist" in self.kv.type \
            and "_sync" in self.kv.type else 1
        for i, (data, label) in enumerate(self.train_data):
            if i >= self.iters_per_epoch:
                break
            n = data.shape[0]
            data, label = self._split(data, label)
            data, targets, hard = self._targets(data, label, epoch)
            with autograd.record():
                outputs = [self.net(x) for x in data]
                losses = [self.loss_fn(o, t) for o, t in zip(outputs, targets)]
            autograd.backward(losses)
            trainer.step(n * step_scale)
            self._hook("on_batch_end", epoch, i)
            total_loss += sum(l.sum().asscalar() for l in losses)
            acc.update(hard, [o.astype("float32") for o in outputs])
            seen += n
            if cfg.log_interval and (i + 1) % cfg.log_interval == 0:
                log.info("Epoch[%d] Batch[%d/%d] speed=%.1f img/s loss=%.4f top1=%.4f lr=%.6f", epoch + 1, i + 1,
                         self.iters_per_epoch, cfg.log_interval * n / max(time.time() - btic, 1e-9),
                         total_loss / seen, acc.get()[1], trainer.learning_rate)
                btic = time.time()
        if not math.isfinite(total_loss):
            raise FloatingPointError("training loss became %s in epoch %d; lower --lr" % (total_loss, epoch + 1))
        dt = time.time() - tic
        return {"train_loss": total_loss / max(seen, 1), "train_top1": acc.get()[1], "lr": trainer.learning_rate,
                "speed": seen / max(dt, 1e-9), "time": dt}

    def evaluate(self, data=None):
        """(top-1, top-k) accuracy of the current network on ``data`` (default: the validation set)."""
        data = data if data is not None else self.val_data
        k = min(self.cfg.top_k, self.cfg.num_classes)
        m1, mk = mx.metric.Accuracy(), mx.metric.TopKAccuracy(top_k=k) if k > 1 else mx.metric.Accuracy()
        data.set_epoch(0)
        for x, y in data:
            xs, ys = self._split(x, y)
            outs = [self.net(v).astype("float32") for v in xs]
            m1.update(ys, outs)
            mk.update(ys, outs)
        return m1.get()[1], mk.get()[1]

    # -- checkpoints ---------------------------------------------------------------------------
    def save(self, tag):
        """Write ``<prefix>-<tag>.params/.states/.json`` atomically (rank 0 only)."""
        if not self.prefix or self.rank != 0:
            return None
        base = "%s-%s" % (self.prefix, tag)
        atomic_write(base + ".params", self.net.save_parameters)
        atomic_write(base + ".states", self.trainer.save_states)
        meta = {"epoch": len(self.history) and self.history[-1]["epoch"], "best": self.best,
                "history": self.history, "config": self.cfg.to_dict()}

        def dump(p):
            with open(p, "w") as f:
                json.dump(meta, f, indent=1, default=str)
        atomic_write(base + ".json", dump)
        return base

    def _log_epoch(self, rec):
        s = "[Epoch %d] train: loss=%.4f top1=%.4f lr=%.6f speed=%.1f img/s time=%.1f s" % (
            rec["epoch"], rec["train_loss"], rec["train_top1"], rec["lr"], rec["speed"], rec["time"])
        if "val_top1" in rec:
            s += " | val: top1=%.4f top5=%.4f err-top1=%.4f err-top5=%.4f | best top1=%.4f (epoch %d)" % (
                rec["val_top1"], rec["val_top5"], 1 - rec["val_top1"], 1 - rec["val_top5"], self.best["top1"],
                self.best["epoch"])
        log.info(s)
        if self.prefix and self.rank == 0:
            os.makedirs(os.path.dirname(os.path.abspath(self.prefix)), exist_ok=True)
            with open(self.prefix + "-metrics.jsonl", "a") as f:
                f.write(json.dumps(rec) + "\n")

    # -- driver --------------------------------------------------------------------------------
    def run(self):
        if self.trainer is None:
            self.setup()
        cfg = self.cfg
        log.info("training %d -> %d epochs, %d iterations/epoch, %d context(s), worker %d/%d", self.begin_epoch,
                 cfg.num_epochs, self.iters_per_epoch, len(self.ctx), self.rank, self.num_workers)
        for epoch in range(self.begin_epoch, cfg.num_epochs):
            self._hook("on_epoch_begin", epoch)
            rec = {"epoch": epoch + 1}
            rec.update(self.train_epoch(epoch))
            if self.val_data is not None:
                top1, top5 = self.evaluate()
                rec.update(val_top1=top1, val_top5=top5)
                if top1 > self.best["top1"]:
                    self.best = {"top1": top1, "top5": top5, "epoch": epoch + 1}
                    self.history.append(rec)
                    if cfg.save_best:
                        self.save("best")
                else:
                    self.history.append(rec)
            else:
                self.history.append(rec)
            self._log_epoch(rec)
            done = epoch + 1
            if cfg.save_frequency and (done % cfg.save_frequency == 0 or done == cfg.num_epochs):
                self.save("%04d" % done)
            self._hook("on_epoch_end", epoch, rec)
        return self.history


def fit(net, cfg, contexts, train_data, val_data=None, hooks=(), kvstore=None):
    """Train ``net`` with ``cfg`` (see :class:`TrainConfig`); returns the per-epoch history."""
    loop = TrainLoop(net, cfg, contexts, train_data, val_data, hooks=hooks, kvstore=kvstore)
    return loop.run()


# ------------------------------------------------------------------------------------------------
# Command-line helpers shared by the Gluon scripts (gluon-cv flag names)
# ------------------------------------------------------------------------------------------------
def add_train_args(parser):
    """Add the gluon-cv training flags every Gluon script shares; set per-script defaults with
    ``parser.set_defaults(...)`` afterwards."""
    g = parser.add_argument_group("training (gluon-cv flags)")
    g.add_argument("--batch-size", type=int, default=128, help="batch size per device (x devices). default 128")
    g.add_argument("--num-gpus", type=int, default=0, help="number of GPUs (0 = CPU). Ignored if --gpus is given")
    g.add_argument("--gpus", type=str, default=None, help="GPU ids such as 0,1 ('' = CPU); overrides --num-gpus")
    g.add_argument("-j", "--num-data-workers", dest="num_workers", type=int, default=2,
                   help="data loading workers / decoding threads. default 2")
    g.add_argument("--num-epochs", type=int, default=120, help="training epochs")
    g.add_argument("--optimizer", type=str, default="nag", help="optimizer (nag = Nesterov SGD). default nag")
    g.add_argument("--lr", type=float, default=0.1, help="peak learning rate (not scaled with the batch size)")
    g.add_argument("--momentum", type=float, default=0.9, help="momentum. default 0.9")
    g.add_argument("--wd", type=float, default=1e-4, help="weight decay. default 1e-4")
    g.add_argument("--no-wd", action="store_true", help="no weight decay on BN gamma/beta and biases")
    g.add_argument("--lr-mode", type=str, default="cosine", choices=["step", "cosine", "poly", "linear", "constant"],
                   help="schedule after the warmup. default cosine")
    g.add_argument("--lr-decay", type=float, default=0.1, help="step decay factor. default 0.1")
    g.add_argument("--lr-decay-period", type=int, default=0, help="decay every N epochs (step mode); 0 = use "
                   "--lr-decay-epoch")
    g.add_argument("--lr-decay-epoch", type=str, default="40,60", help="epochs at which step mode decays, e.g. 30,60")
    g.add_argument("--warmup-epochs", type=int, default=0, help="linear warmup epochs from --warmup-lr")
    g.add_argument("--warmup-lr", type=float, default=0.0, help="learning rate at the start of the warmup")
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
                   help="hybrid = hybridize the network (static graph). default hybrid")
    g.add_argument("--kv-store", type=str, default="device",
                   help="kvstore: local, device, dist_sync, dist_device_sync, dist_async (needs tools/launch.py), "
                        "horovod")
    g.add_argument("--save-dir", type=str, default="params", help="checkpoint folder")
    g.add_argument("--save-frequency", "--save-period", dest="save_frequency", type=int, default=10,
                   help="checkpoint every N epochs (the best one is saved whenever it improves); 0 = never")
    g.add_argument("--resume-epoch", type=int, default=0, help="resume after this many epochs")
    g.add_argument("--resume-params", type=str, default="", help="parameters to resume from "
                   "(default SAVE_DIR/PREFIX-NNNN.params)")
    g.add_argument("--resume-states", type=str, default="", help="trainer states to resume from")
    g.add_argument("--auto-resume", action="store_true", help="resume from the latest checkpoint in --save-dir")
    g.add_argument("--log-interval", type=int, default=50, help="log every N batches")
    g.add_argument("--logging-file", type=str, default="", help="also log to this file")
    g.add_argument("--seed", type=int, default=0, help="random seed (data order, augmentation, init). default 0")
    g.add_argument("--max-batches", type=int, default=0, help="cap batches per epoch (smoke runs); 0 = all")
    return parser


def parse_epochs(text):
    """``'300,350'`` -> [300.0, 350.0]; empty -> []."""
    return [float(e) for e in str(text).split(",") if e.strip()]


def contexts_from_args(args):
    """Contexts from ``--gpus`` (wins when given) or ``--num-gpus``."""
    from .common import num_gpus_contexts, parse_gpus
    if getattr(args, "gpus", None) is not None:
        return parse_gpus(args.gpus)
    return num_gpus_contexts(getattr(args, "num_gpus", 0) or 0)


def config_from_args(args, **overrides):
    """A TrainConfig from the flags of :func:`add_train_args` (+ overrides)."""
    cfg = TrainConfig(
        num_epochs=args.num_epochs, batch_size=args.batch_size, optimizer=args.optimizer, lr=args.lr,
        momentum=args.momentum, wd=args.wd, no_wd=args.no_wd, lr_mode=args.lr_mode, lr_decay=args.lr_decay,
        lr_decay_epoch=parse_epochs(args.lr_decay_epoch), lr_decay_period=args.lr_decay_period,
        warmup_epochs=args.warmup_epochs, warmup_lr=args.warmup_lr, target_lr=args.target_lr,
        lr_step_per=args.lr_step_per, label_smoothing=0.1 if args.label_smoothing else 0.0, mixup=args.mixup,
        mixup_alpha=args.mixup_alpha, mixup_off_epoch=args.mixup_off_epoch, dtype=args.dtype,
        hybridize=args.mode == "hybrid", kv_store=args.kv_store, save_dir=args.save_dir,
        save_frequency=args.save_frequency, resume_epoch=args.resume_epoch, resume_params=args.resume_params,
        resume_states=args.resume_states, auto_resume=args.auto_resume, log_interval=args.log_interval,
        seed=args.seed, max_batches=args.max_batches)
    for k, v in overrides.items():
        if not hasattr(cfg, k):
            raise AttributeError("TrainConfig has no field %r" % k)
        setattr(cfg, k, v)
    return cfg
