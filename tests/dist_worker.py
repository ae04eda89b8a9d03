#!/usr/bin/env python
"""Self-contained worker for tests/test_distributed.py: trains a tiny Gluon network (AFF/bL-Net
path: ``gluon.Trainer`` on a kvstore) or a tiny Module-API network with an FB layer (FBN path:
``Module.init_optimizer(kvstore=...)``) for a few steps on a fixed synthetic dataset, then writes
its parameters to ``<out-dir>/<family>-task<DMLC_TASK_ID>.npz``.

Worker ``r`` of ``n`` takes, at step ``t``, rows ``[t*n*B + r*B, t*n*B + (r+1)*B)``: the union of
the shards of step ``t`` is exactly the batch of step ``t`` of a single process with batch
``n*B`` (``train(..., rank=0, num_workers=1, batch=n*B)``), which is what dist_sync must
reproduce. No BatchNorm and no DropFactor (p=0): per-worker batch statistics and per-worker masks
are not expected to match a single process.

    python tools/launch.py -n 2 -s 1 --loopback python tests/dist_worker.py --family gluon --out-dir /tmp/x
"""
import argparse
import os
import sys

import numpy as np  # noqa: E402

import mxrepro  # noqa: E402,F401  (threads before mxnet; FB operator for the Module family)
import mxnet as mx  # noqa: E402
from mxnet import autograd, gluon  # noqa: E402

from mxrepro.engine import dist as distributed  # noqa: E402

CLASSES = 5
SHAPE = (3, 8, 8)


def opt_params(family, lr_step=2):
    """SGD-momentum with a schedule that drops at update ``lr_step + 1``, of the kind each family's
    scripts use: gluoncv's LRScheduler (Gluon) and the engine's schedule with the FBN slow-start
    (mxrepro.engine.schedule, Module). Under dist_sync the optimizer and its scheduler are pickled to the
    server and run there: the server must be able to import them (tools/launch.py's server
    bootstrap) and its update count must advance once per synchronous step (= per worker
    iteration), not once per worker push."""
    if family == "gluon":
        from gluoncv.utils import LRScheduler
        sched = LRScheduler("step", base_lr=0.1, niters=100, step_iter=[lr_step], step_factor=0.3)
    else:
        from mxrepro.engine.schedule import ScheduleSpec, build_schedule
        sched = build_schedule(ScheduleSpec("step", decay_epochs=[lr_step], factor=0.3, warmup_epochs=1, warmup_lr=0.05,
                                            warmup_mode="slowstart"),
                               0.1, num_epochs=100, updates_per_epoch=1)
    return {"learning_rate": 0.1, "momentum": 0.9, "wd": 1e-4, "lr_scheduler": sched}


def make_data(rows, seed=0):
    rs = np.random.RandomState(seed)
    x = rs.uniform(-1, 1, size=(rows,) + SHAPE).astype(np.float32)
    y = rs.randint(0, CLASSES, size=rows).astype(np.float32)
    return x, y


def shard_rows(step, rank, num_workers, batch):
    start = step * num_workers * batch + rank * batch
    return slice(start, start + batch)


def init_values(shapes, seed=1):
    """Deterministic initial values by parameter name (sorted), independent of MXNet's RNG."""
    rs = np.random.RandomState(seed)
    return {n: rs.normal(0, 0.3, size=shapes[n]).astype(np.float32) for n in sorted(shapes)}


# ------------------------------------------------------------------------------------------ Gluon
def gluon_net():
    net = gluon.nn.HybridSequential(prefix="net_")
    with net.name_scope():
        net.add(gluon.nn.Conv2D(4, 3, padding=1, activation="relu", prefix="conv0_"),
                gluon.nn.MaxPool2D(2),
                gluon.nn.Dense(8, activation="relu", prefix="fc0_"),
                gluon.nn.Dense(CLASSES, prefix="fc1_"))
    return net


def train_gluon(kv, rank, num_workers, steps, batch, data, lr_step=2):
    """``trainer.step(batch * num_workers)`` under dist_sync: the server sums the workers' gradients
    and applies rescale_grad once, so this normalises by the combined batch (as mxrepro/engine/steps.py)."""
    x, y = data
    net = gluon_net()
    net.initialize(mx.init.Zero())
    net(mx.nd.zeros((1,) + SHAPE))
    params = net.collect_params()
    vals = init_values({n: p.shape for n, p in params.items()})
    for n, p in params.items():
        p.set_data(mx.nd.array(vals[n]))
    trainer = gluon.Trainer(params, "sgd", opt_params("gluon", lr_step), kvstore=kv if kv is not None else "local")
    loss_fn = gluon.loss.SoftmaxCrossEntropyLoss()
    for t in range(steps):
        rows = shard_rows(t, rank, num_workers, batch)
        xb, yb = mx.nd.array(x[rows]), mx.nd.array(y[rows])
        with autograd.record():
            loss = loss_fn(net(xb), yb)
        loss.backward()
        trainer.step(batch * num_workers)
    return {n: p.data().asnumpy() for n, p in params.items()}, vals


# ----------------------------------------------------------------------------------------- Module
def fbn_symbol():
    data = mx.sym.Variable("data")
    body = mx.sym.Convolution(data, num_filter=4, kernel=(3, 3), pad=(1, 1), name="conv0")
    body = mx.sym.Activation(body, act_type="relu")
    body = mx.sym.FMConvolution1(data=body, num_filter=CLASSES, num_factor=2, kernel=(1, 1), p=0.0,
                                 name="bilinear1")
    body = mx.sym.Pooling(body, global_pool=True, kernel=(1, 1), pool_type="avg")
    return mx.sym.SoftmaxOutput(mx.sym.Flatten(body), name="softmax")


def train_module(kv, rank, num_workers, steps, batch, data, lr_step=2):
    """Module API as mxrepro/engine/steps.py: for dist_sync kvstores Module itself sets
    rescale_grad = 1/(batch*num_workers) and the optimizer runs on the servers."""
    x, y = data
    sym = fbn_symbol()
    mod = mx.mod.Module(sym, context=mx.cpu(), data_names=("data",), label_names=("softmax_label",))
    mod.bind(data_shapes=[("data", (batch,) + SHAPE)], label_shapes=[("softmax_label", (batch,))])
    shapes = dict(zip(sym.list_arguments(), sym.infer_shape(data=(batch,) + SHAPE)[0]))
    vals = init_values({n: s for n, s in shapes.items() if n not in ("data", "softmax_label")})
    mod.init_params(arg_params={n: mx.nd.array(v) for n, v in vals.items()}, aux_params={})
    mod.init_optimizer(kvstore=kv if kv is not None else "local", optimizer="sgd",
                       optimizer_params=opt_params("module", lr_step))
    for t in range(steps):
        rows = shard_rows(t, rank, num_workers, batch)
        mod.forward_backward(mx.io.DataBatch([mx.nd.array(x[rows])], [mx.nd.array(y[rows])]))
        mod.update()
    arg, _ = mod.get_params()
    return {n: a.asnumpy() for n, a in arg.items()}, vals


TRAIN = {"gluon": train_gluon, "module": train_module}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--family", choices=sorted(TRAIN), required=True)
    p.add_argument("--kv-store", default="dist_sync")
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--batch", type=int, default=4, help="per-worker batch")
    p.add_argument("--out-dir", required=True)
    args = p.parse_args(argv)
    kv = mx.kv.create(args.kv_store)
    distributed.guard_worker(kv)
    rank, n = (kv.rank, kv.num_workers) if "dist" in kv.type else (0, 1)
    data = make_data(args.steps * n * args.batch)
    params, _ = TRAIN[args.family](kv, rank, n, args.steps, args.batch, data)
    task = os.environ.get("DMLC_TASK_ID", "0")
    out = os.path.join(args.out_dir, "%s-task%s.npz" % (args.family, task))
    np.savez(out, __rank__=rank, __num_workers__=n, **params)
    print("worker task %s rank %d/%d wrote %s" % (task, rank, n, out), flush=True)
    return 0


if __name__ == "__main__":
    with distributed.fail_fast():
        sys.exit(main())
