"""How one step is computed: the only place where the Module-API (FBN symbols) and Gluon (AFF,
bL-Net) runs differ. Everything around it (schedule, optimizer, data, checkpoints, metrics, logging,
interruption) is :mod:`mxrepro.engine.loop`.

Both classes offer the same methods: ``param_names()``, ``initialize(init, params_path)``,
``bind_optimizer(optimizer, kv, rules)``, ``train_batch(data, label, epoch) -> (loss sum, outputs,
hard labels)``, ``predict(data) -> (outputs, labels split like them)``, ``save_params`` /
``load_params`` / ``save_states`` / ``load_states`` (paths), ``params_finite()`` and
``optimizer``.

* :class:`ModuleStep` -- an executor step: ``Module.forward_backward`` + ``Module.update`` on a
  Symbol whose output is ``SoftmaxOutput``; checkpoints in the ``mx.model.save_checkpoint`` format
  (``arg:``/``aux:`` names) plus ``<prefix>-symbol.json``; ``Module.save_optimizer_states``.
* :class:`GluonStep` -- an autograd step: ``autograd.record`` + ``backward`` + ``Trainer.step`` on a
  HybridBlock returning logits (softmax cross-entropy; gluon-cv's mixup and label smoothing as dense
  targets); ``save_parameters`` and ``Trainer.save_states``.

Distributed ``*_sync`` kvstores: the servers only sum gradients and every worker applies the same
update (the optimizer state lives in the workers, so rank 0 can checkpoint it, and the schedule
steps in every worker); ``dist_async`` keeps the optimizer on the servers (no state to save).
"""
import os

import mxnet as mx
import numpy as np
from mxnet import autograd, gluon

from . import disk, dist
from .optim import multipliers

__all__ = ["make_initializer", "ModuleStep", "GluonStep", "smooth_labels", "mixup_labels"]


def make_initializer(init):
    """``'xavier_fbn'`` -> Xavier gaussian fan-in magnitude 2 (the original FBN, docs/reference/fbn.md §1.5),
    ``'msra'`` -> gluon-cv's MSRAPrelu (AFF ImageNet, docs/reference/aff.md §3.1), ``'xavier'`` -> Xavier (AFF CIFAR,
    §3.2), ``'kaiming_out'`` -> He-normal fan-out (bL-Net); an ``mx.init.Initializer`` passes through."""
    if isinstance(init, mx.init.Initializer):
        return init
    table = {"xavier_fbn": lambda: mx.init.Xavier(rnd_type="gaussian", factor_type="in", magnitude=2),
             "msra": lambda: mx.init.MSRAPrelu(),
             "xavier": lambda: mx.init.Xavier(),
             "kaiming_out": lambda: mx.init.Xavier(rnd_type="gaussian", factor_type="out", magnitude=2)}
    if init not in table:
        raise ValueError("initializer must be one of %s or an mx.init.Initializer" % sorted(table))
    return table[init]()


def smooth_labels(label, classes, eta=0.1):
    """gluon-cv label smoothing: one-hot with on = 1 - eta + eta/K, off = eta/K."""
    return label.one_hot(classes, on_value=1 - eta + eta / classes, off_value=eta / classes)


def mixup_labels(label, classes, lam=1.0, eta=0.0):
    """gluon-cv mixup targets: lam * onehot(y) + (1 - lam) * onehot(y reversed), optionally smoothed."""
    return lam * smooth_labels(label, classes, eta) + (1 - lam) * smooth_labels(label[::-1], classes, eta)


def _all_finite(arrays):
    for a in arrays:
        if not np.isfinite(a.asnumpy()).all():
            return False
    return True


def _local_update(kv):
    """Synchronous distributed training updates in the workers (see the module doc)."""
    return dist.is_sync_dist(kv) and os.environ.get("MXNET_UPDATE_ON_KVSTORE", "0") == "0"


class ModuleStep:
    """Executor step of a Module-API network (``symbol`` ends in ``SoftmaxOutput`` named by ``label_name``)."""
    kind = "module"

    def __init__(self, symbol, contexts, batch, input_shape, label_name="softmax_label"):
        self.symbol, self.ctx, self.batch = symbol, list(contexts), int(batch)
        self.label_name = label_name
        self.mod = mx.mod.Module(symbol, context=self.ctx, data_names=("data",), label_names=(label_name,))
        self.mod.bind(data_shapes=[("data", (self.batch,) + tuple(input_shape))],
                      label_shapes=[(label_name, (self.batch,))], for_training=True)
        self.can_save_states = True
        self.kv = None

    def param_names(self):
        return [n for n in self.symbol.list_arguments() if n != "data" and n != self.label_name]

    def initialize(self, init, params_path=None, partial=False):
        """Initialise, or load ``params_path`` (all parameters; with ``partial`` those whose name and shape
        match, the rest initialised: fine-tuning with another head). Returns the initialised names."""
        arg = aux = None
        fresh = []
        if params_path:
            arg, aux = load_module_params(params_path)
            if partial:
                want = self._shapes()
                fresh = sorted(n for n in want if n not in arg and n not in aux
                               or tuple((arg if n in arg else aux)[n].shape) != want[n])
                arg = {k: v for k, v in arg.items() if k in want and k not in fresh}
                aux = {k: v for k, v in aux.items() if k in want and k not in fresh}
            else:
                missing = sorted(set(self.param_names()) - set(arg))
                if missing:
                    raise ValueError("%s lacks %d parameter(s) of this network, e.g. %s" % (
                        params_path, len(missing), ", ".join(missing[:5])))
        self.mod.init_params(make_initializer(init), arg_params=arg, aux_params=aux, allow_missing=bool(fresh),
                             allow_extra=True, force_init=True)
        return fresh

    def _shapes(self):
        arg_shapes, _, aux_shapes = self.symbol.infer_shape(**dict(self.mod.data_shapes + self.mod.label_shapes))
        out = {n: tuple(s) for n, s in zip(self.symbol.list_arguments(), arg_shapes) if n in set(self.param_names())}
        out.update({n: tuple(s) for n, s in zip(self.symbol.list_auxiliary_states(), aux_shapes)})
        return out

    def bind_optimizer(self, optimizer, kv, rules=()):
        self.kv = kv
        local = _local_update(kv)
        if local:
            os.environ["MXNET_UPDATE_ON_KVSTORE"] = "0"
        self.can_save_states = not dist.is_dist(kv) or local
        wd, lr = multipliers(self.param_names(), rules)
        optimizer.set_wd_mult(wd)
        optimizer.set_lr_mult(lr)
        self.mod.init_optimizer(kvstore=kv, optimizer=optimizer, force_init=True)
        if local:  # start every worker from rank 0's parameters (the kvstore holds them after init)
            arg, aux = self.mod.get_params()
            for name in self.param_names():
                kv.pull(name, out=arg[name])
            self.mod.set_params(arg, aux)

    @property
    def optimizer(self):
        return self.mod._optimizer

    def train_batch(self, data, label, epoch):
        self.mod.forward_backward(mx.io.DataBatch(data=[data], label=[label]))
        self.mod.update()
        out = self.mod.get_outputs()[0]
        p = mx.nd.pick(out, label.as_in_context(out.context), axis=1)
        loss = float((-mx.nd.log(mx.nd.maximum(p, 1e-30))).sum().asscalar())
        return loss, [out], [label]

    def predict(self, data):
        # a label of the batch's size keeps the executor's shapes consistent when the last batch is short
        label = mx.nd.zeros((data.shape[0],), ctx=data.context)
        self.mod.forward(mx.io.DataBatch(data=[data], label=[label]), is_train=False)
        return [self.mod.get_outputs()[0]]

    def save_params(self, path):
        arg, aux = self.mod.get_params()
        blob = {"arg:" + k: v for k, v in arg.items()}
        blob.update({"aux:" + k: v for k, v in aux.items()})
        mx.nd.save(path, blob)
        disk.verify_saved(path)

    def load_params(self, path):
        arg, aux = load_module_params(path)
        self.mod.set_params(arg, aux, allow_missing=False, allow_extra=True)

    def save_states(self, path):
        self.mod.save_optimizer_states(path)

    def load_states(self, path):
        self.mod.load_optimizer_states(path)

    def write_extras(self, base):
        """``<prefix>-symbol.json`` beside the parameters (mx.model.load_checkpoint reads both), written
        by Python (MXNet's writer loses a failed tail silently on a full disk) and only when it changed."""
        from .checkpoint import atomic_write
        path, text = base + "-symbol.json", self.symbol.tojson()
        if os.path.isfile(path):
            with open(path) as f:
                if f.read() == text:
                    return

        def write(tmp):
            with open(tmp, "w") as f:
                f.write(text)
        atomic_write(path, write)

    def params_finite(self):
        arg, aux = self.mod.get_params()
        return _all_finite(list(arg.values()) + list(aux.values()))

    def num_params(self):
        arg, _ = self.mod.get_params()
        return sum(int(np.prod(v.shape)) for v in arg.values())


def _load_error(path, err):
    """One line for an MXNetError raised while reading ``path`` (no C++ stack trace)."""
    from ..ckptfile import mx_error_line
    return "%s: cannot be read as an MXNet .params file (%s)" % (os.path.basename(path), mx_error_line(err))


def _nd_load(path):
    """``mx.nd.load`` with a one-line ValueError for a missing, truncated or foreign file."""
    try:
        return mx.nd.load(path)
    except mx.base.MXNetError as e:
        raise ValueError(_load_error(path, e)) from None


def load_module_params(path):
    """(arg_params, aux_params) of a ``save_checkpoint``-format file (``arg:``/``aux:`` prefixes)."""
    arg, aux = {}, {}
    blob = _nd_load(path)
    if not isinstance(blob, dict):
        raise ValueError("%s holds an unnamed NDArray list, not named parameters" % path)
    for k, v in blob.items():
        kind, _, name = k.partition(":")
        if kind not in ("arg", "aux") or not name:
            raise ValueError("%s is not a Module checkpoint (key %r has no arg:/aux: prefix)" % (path, k))
        (arg if kind == "arg" else aux)[name] = v
    return arg, aux


class GluonStep:
    """Autograd step of a Gluon HybridBlock returning logits."""
    kind = "gluon"

    def __init__(self, net, contexts, num_classes, dtype="float32", hybridize=True, label_smoothing=0.0,
                 mixup=False, mixup_alpha=0.2, mixup_off_epoch=0, num_epochs=0):
        self.net, self.ctx, self.num_classes = net, list(contexts), int(num_classes)
        self.dtype, self.hybridize = dtype, hybridize
        self.eta, self.mixup, self.mixup_alpha = float(label_smoothing), bool(mixup), float(mixup_alpha)
        self.mixup_off_epoch, self.num_epochs = int(mixup_off_epoch), int(num_epochs)
        self.loss_fn = gluon.loss.SoftmaxCrossEntropyLoss(sparse_label=not (self.mixup or self.eta > 0))
        self.trainer, self.kv, self.step_scale = None, None, 1
        self.can_save_states = True

    def param_names(self):
        return [p.name for p in self.net.collect_params().values()]

    def initialize(self, init, params_path=None, partial=False):
        """Initialise, or load ``params_path`` (this project's .params by name; with ``partial`` the ones whose
        shape matches, the rest initialised: fine-tuning with another head; a released checkpoint goes through
        mxrepro.weights). Returns the initialised parameter names."""
        fresh = []
        if params_path and not partial:
            try:
                self.net.load_parameters(params_path, ctx=self.ctx, cast_dtype=True)
            except mx.base.MXNetError as e:
                raise ValueError(_load_error(params_path, e)) from None
        else:
            self.net.initialize(make_initializer(init), ctx=self.ctx, force_reinit=True)
            if params_path:
                fresh = self._load_matching(params_path)
        if self.dtype != "float32":
            self.net.cast(self.dtype)
        if self.hybridize:
            self.net.hybridize(static_alloc=True)
        return fresh

    def _load_matching(self, path):
        from ..weights import checkpoint_format, load_pretrained
        mine = self.net._collect_params_with_prefix()
        saved = _nd_load(path) if checkpoint_format(path) == "gluon-params" else {}
        if sum(k in saved for k in mine) < len(mine) / 2:  # not this project's names: a released checkpoint
            # every tensor mapped by name, or a named error; the recorded CRC was checked by the script
            # (mxrepro.ckptfile.check_weights, --ignore-checksum)
            load_pretrained(self.net, path, ctx=self.ctx, verify_crc=False, warn=lambda m: None)
            return []
        fresh = sorted(k for k, p in mine.items() if k not in saved or tuple(saved[k].shape) != tuple(p.shape))
        for k, p in mine.items():
            if k not in fresh:
                p.set_data(saved[k])
        return [mine[k].name for k in fresh]

    def bind_optimizer(self, optimizer, kv, rules=()):
        self.kv = kv
        params = self.net.collect_params()
        wd, lr = multipliers(list(params.keys()), rules)
        for name, p in params.items():
            if name in wd:
                p.wd_mult = wd[name]
            if name in lr:
                p.lr_mult = lr[name]
        sync = dist.is_sync_dist(kv)
        self.can_save_states = not dist.is_dist(kv) or sync
        self.step_scale = kv.num_workers if sync else 1
        self.trainer = gluon.Trainer(params, optimizer, kvstore=kv, update_on_kvstore=False if sync else None)

    @property
    def optimizer(self):
        return self.trainer._optimizer

    def _split(self, data, label):
        data = gluon.utils.split_and_load(data, self.ctx, batch_axis=0, even_split=False)
        label = gluon.utils.split_and_load(label, self.ctx, batch_axis=0, even_split=False)
        if self.dtype != "float32":
            data = [d.astype(self.dtype) for d in data]
        return data, label

    def _targets(self, data, label, epoch):
        """(inputs, loss targets, hard labels for the train accuracy) of one batch."""
        eta, k = self.eta, self.num_classes
        if self.mixup:
            lam = float(np.random.beta(self.mixup_alpha, self.mixup_alpha))
            if epoch >= self.num_epochs - self.mixup_off_epoch:
                lam = 1.0
            data = [lam * x + (1 - lam) * x[::-1] for x in data]
            hard = label if lam >= 0.5 else [y[::-1] for y in label]
            return data, [mixup_labels(y, k, lam, eta) for y in label], hard
        if eta > 0:
            return data, [smooth_labels(y, k, eta) for y in label], label
        return data, label, label

    def train_batch(self, data, label, epoch):
        n = data.shape[0]
        data, label = self._split(data, label)
        data, targets, hard = self._targets(data, label, epoch)
        with autograd.record():
            outputs = [self.net(x) for x in data]
            losses = [self.loss_fn(o, t) for o, t in zip(outputs, targets)]
        autograd.backward(losses)
        self.trainer.step(n * self.step_scale)
        loss = sum(float(l.sum().asscalar()) for l in losses)
        return loss, [o.astype("float32") for o in outputs], hard

    def predict(self, data):
        xs = gluon.utils.split_and_load(data, self.ctx, batch_axis=0, even_split=False)
        if self.dtype != "float32":
            xs = [x.astype(self.dtype) for x in xs]
        return [self.net(x).astype("float32") for x in xs]

    def save_params(self, path):
        self.net.save_parameters(path)
        disk.verify_saved(path)

    def load_params(self, path):
        self.net.load_parameters(path, ctx=self.ctx, cast_dtype=True)

    def save_states(self, path):
        self.trainer.save_states(path)

    def load_states(self, path):
        self.trainer.load_states(path)

    def write_extras(self, base):
        pass

    def params_finite(self):
        return _all_finite([p.data(self.ctx[0]) for p in self.net.collect_params().values()])

    def num_params(self):
        return sum(int(np.prod(p.shape)) for p in self.net.collect_params().values()
                   if p.grad_req != "null" and p.lr_mult != 0)
