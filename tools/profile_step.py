#!/usr/bin/env python
"""Per-operator breakdown of one training (or inference) step of any registered Gluon model, from
MXNet's profiler (aggregate stats).

    python tools/profile_step.py --model aff_cifar_resnet                      # 32x32, batch 32, train
    python tools/profile_step.py --model bl_resnet50 --batch-size 4 --iters 2  # 224x224
    python tools/profile_step.py --model resnet50_v1b --mode infer --top 15
    python tools/profile_step.py --model aff_cifar_resnet --no-fused           # the unfused graph

A training step is forward + backward (+ the optimizer update unless ``--no-update``), on random
data, with the network hybridized (static memory) as the benchmarks run it. The engine's bulk
execution, which merges consecutive operators into one profiler entry, is switched off here
(``MXNET_EXEC_BULK_EXEC_TRAIN=0`` / ``..._INFERENCE=0``; ``--bulk`` keeps it), so every operator is
timed on its own: the step is somewhat slower than in the benchmarks, but the shares are the
point. Rows are operator names (``_backward_X`` is X's backward), sorted by total time, with the
share of the summed operator time and of the wall-clock time per step; ``--by-group`` also sums
them into forward / backward / optimizer / other.
"""
import argparse
import json
import os
import sys
import time


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__[__doc__.find("\n\n"):])
    p.add_argument("--model", required=True, help="registered model name (mxrepro.models.get_model)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--input-size", type=int, default=None, help="default: the model's registered input size")
    p.add_argument("--mode", choices=("train", "infer"), default="train")
    p.add_argument("--iters", type=int, default=3, help="profiled steps (the table gives per-step times)")
    p.add_argument("--warmup", type=int, default=2, help="unprofiled steps first")
    p.add_argument("--top", type=int, default=25, help="rows to print (0 = all)")
    p.add_argument("--no-update", action="store_true", help="train mode: leave the optimizer update out")
    p.add_argument("--bulk", action="store_true", help="keep the engine's bulk execution (merged entries)")
    p.add_argument("--by-group", action="store_true", help="also print forward/backward/optimizer totals")
    p.add_argument("--no-fused", action="store_true",
                   help="build the model with the fused operators switched off (MXREPRO_FUSED=0)")
    p.add_argument("--json", help="write the rows and totals here")
    p.add_argument("--kw", nargs="*", default=[], metavar="KEY=VALUE",
                   help="extra get_model keyword arguments (values parsed as Python literals when possible)")
    return p.parse_args(argv)


def _literal(v):
    import ast
    try:
        return ast.literal_eval(v)
    except (ValueError, SyntaxError):
        return v


OPTIMIZER_OPS = ("sgd_update", "sgd_mom_update", "nag_mom_update", "adam_update", "mp_", "multi_", "preloaded_")


def group_of(op):
    if op.startswith("_backward") or op.startswith("backward_"):
        return "backward"
    if op.startswith(OPTIMIZER_OPS):
        return "optimizer"
    if op in ("add_n", "ElementWiseSum"):
        return "backward (gradient sums)"
    if op.startswith("_copyto") or op.startswith("_zeros") or op == "_full" or op.startswith("CopyCPU"):
        return "other"
    return "forward"


def operator_rows(stats_json):
    """[(name, count, total_ms)] from mx.profiler.dumps(format='json')."""
    d = json.loads(stats_json)
    ops = d.get("Time", {}).get("operator", {})
    return [(name, int(v["Count"]), float(v["Total"])) for name, v in ops.items()]


def main(argv=None):
    args = parse_args(argv)
    if not args.bulk:
        os.environ["MXNET_EXEC_BULK_EXEC_TRAIN"] = "0"
        os.environ["MXNET_EXEC_BULK_EXEC_INFERENCE"] = "0"
    if args.no_fused:
        os.environ["MXREPRO_FUSED"] = "0"
    import mxrepro  # noqa: F401  (threads and the operator library before mxnet)
    import mxnet as mx
    from mxnet import autograd, gluon
    from mxrepro.models import get_model, model_info

    kw = dict(kv.split("=", 1) for kv in args.kw)
    kw = {k: _literal(v) for k, v in kw.items()}
    cfg = model_info(args.model).cfg
    size = args.input_size or int(cfg.get("input_size", 224))
    classes = int(kw.get("classes", cfg.get("num_classes", 1000)))
    net = get_model(args.model, **kw)
    net.initialize(mx.init.Xavier())
    net.hybridize(static_alloc=True, static_shape=True)
    x = mx.nd.random.uniform(-1, 1, shape=(args.batch_size, 3, size, size))
    y = mx.nd.array(mx.nd.random.randint(0, classes, shape=(args.batch_size,)).asnumpy())
    loss_fn = gluon.loss.SoftmaxCrossEntropyLoss()
    trainer = gluon.Trainer(net.collect_params(), "nag", {"learning_rate": 0.01, "momentum": 0.9, "wd": 1e-4})
    train = args.mode == "train"

    def step():
        if train:
            with autograd.record():
                loss = loss_fn(net(x), y)
            loss.backward()
            if not args.no_update:
                trainer.step(args.batch_size)
        else:
            net(x)
        mx.nd.waitall()

    for _ in range(args.warmup):
        step()
    mx.profiler.set_config(profile_symbolic=True, profile_imperative=True, profile_memory=False,
                           profile_api=False, aggregate_stats=True, filename=os.devnull)
    mx.profiler.dumps(reset=True)
    mx.profiler.set_state("run")
    t0 = time.perf_counter()
    for _ in range(args.iters):
        step()
    wall = (time.perf_counter() - t0) / args.iters * 1000.0
    mx.profiler.set_state("stop")
    rows = operator_rows(mx.profiler.dumps(format="json", reset=True))
    rows = [(n, c / args.iters, t / args.iters) for n, c, t in rows]
    rows.sort(key=lambda r: -r[2])
    total = sum(r[2] for r in rows)

    try:
        load = os.getloadavg()[0]
    except OSError:
        load = float("nan")
    print("%s, %s, batch %d, %dx%d, %d profiled steps, bulk execution %s, fused ops %s, OMP_NUM_THREADS=%s, "
          "load average %.1f" % (args.model, "training step" + ("" if args.no_update else " + update") if train
                                 else "inference", args.batch_size, size, size, args.iters,
                                 "on" if args.bulk else "off", "off" if args.no_fused else "on",
                                 os.environ.get("OMP_NUM_THREADS"), load))
    print("per step: wall %.1f ms, operators %.1f ms (%d operator kinds, %.0f calls)"
          % (wall, total, len(rows), sum(r[1] for r in rows)))
    print("%-40s %7s %10s %9s %7s %7s" % ("operator", "calls", "total ms", "ms/call", "% ops", "cum %"))
    cum = 0.0
    shown = rows if args.top <= 0 else rows[:args.top]
    for name, c, t in shown:
        cum += t
        print("%-40s %7.0f %10.2f %9.3f %6.1f%% %6.1f%%" % (name[:40], c, t, t / max(c, 1e-9), 100 * t / total,
                                                           100 * cum / total))
    if len(shown) < len(rows):
        rest = rows[len(shown):]
        print("%-40s %7.0f %10.2f %9s %6.1f%%" % ("(%d others)" % len(rest), sum(r[1] for r in rest),
                                                  sum(r[2] for r in rest), "", 100 * sum(r[2] for r in rest) / total))
    print("%-40s %7.0f %10.2f" % ("total", sum(r[1] for r in rows), total))
    groups = {}
    for name, c, t in rows:
        g = groups.setdefault(group_of(name), [0.0, 0.0])
        g[0] += c
        g[1] += t
    if args.by_group:
        print("\n%-40s %7s %10s %7s" % ("group", "calls", "total ms", "%"))
        for g, (c, t) in sorted(groups.items(), key=lambda kv: -kv[1][1]):
            print("%-40s %7.0f %10.2f %6.1f%%" % (g, c, t, 100 * t / total))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(dict(model=args.model, mode=args.mode, batch_size=args.batch_size, input_size=size,
                           wall_ms=wall, op_ms=total, fused=not args.no_fused, load=load,
                           rows=[dict(op=n, calls=c, ms=t) for n, c, t in rows],
                           groups={g: dict(calls=c, ms=t) for g, (c, t) in groups.items()}), fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
