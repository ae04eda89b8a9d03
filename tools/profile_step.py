#!/usr/bin/env python
"""Per-operator breakdown of one training (or inference) step of registered Gluon models, from
MXNet's profiler (aggregate stats).

    python tools/profile_step.py --model aff_cifar_resnet                      # 32x32, batch 32, train
    python tools/profile_step.py --model cifar_resnet aff_cifar_resnet iaff_cifar_resnet
    python tools/profile_step.py --model resnet50_v1b bl_resnet50 --batch-size 4 --iters 2   # 224x224
    python tools/profile_step.py --model aff_cifar_resnet --fused both          # fused vs unfused graph
    python tools/profile_step.py --model resnet50_v1b --mode infer --top 15

A training step is forward + backward (+ the optimizer update unless ``--no-update``), on random
data, with the network hybridized (static memory) as the benchmarks run it. The engine's bulk
execution, which merges consecutive operators into one profiler entry, is switched off here
(``MXNET_EXEC_BULK_EXEC_TRAIN=0`` / ``..._INFERENCE=0``; ``--bulk`` keeps it), so every operator is
timed on its own: the step is somewhat slower than in the benchmarks, but the shares are the
point. Rows are operator names (``_backward_X`` is X's backward), sorted by total time, with the
share of the summed operator time and the wall-clock time per step; ``--by-group`` also sums them
into forward / backward / optimizer / other.

Several models (or ``--fused both``) are profiled in one process, one step of each in turn, so that
load on a shared machine hits them alike; a last table puts their top operators side by side, with
each model's difference to the first one.
"""
import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__[__doc__.find("\n\n"):])
    p.add_argument("--model", nargs="+", required=True, help="registered model name(s) (mxrepro.models.get_model)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--input-size", type=int, default=None, help="default: the first model's registered input size")
    p.add_argument("--mode", choices=("train", "infer"), default="train")
    p.add_argument("--iters", type=int, default=3, help="profiled steps per model (tables give per-step times)")
    p.add_argument("--warmup", type=int, default=2, help="unprofiled steps first")
    p.add_argument("--top", type=int, default=25, help="rows to print (0 = all)")
    p.add_argument("--no-update", action="store_true", help="train mode: leave the optimizer update out")
    p.add_argument("--bulk", action="store_true", help="keep the engine's bulk execution (merged entries)")
    p.add_argument("--by-group", action="store_true", help="also print forward/backward/optimizer totals")
    p.add_argument("--fused", choices=("on", "off", "both"), default="on",
                   help="build the models with the fused operators (mxrepro.models.fused), without, or both")
    p.add_argument("--json", help="write every model's rows and totals here")
    p.add_argument("--kw", nargs="*", default=[], metavar="KEY=VALUE",
                   help="extra get_model keyword arguments (values parsed as Python literals when possible)")
    return p.parse_args(argv)


OPTIMIZER_OPS = ("sgd_update", "sgd_mom_update", "nag_mom_update", "adam_update", "mp_", "multi_", "preloaded_")


def group_of(op):
    if op.startswith("_backward") or op.startswith("backward_"):
        return "backward"
    if op.startswith(OPTIMIZER_OPS):
        return "optimizer"
    if op in ("add_n", "ElementWiseSum"):
        return "backward (gradient sums)"
    if op.startswith(("_copyto", "_zeros", "CopyCPU", "Delete")) or op in ("_full", "SetValueOp"):
        return "other"
    return "forward"


def operator_rows(stats_json):
    """{name: (count, total_ms)} from mx.profiler.dumps(format='json')."""
    d = json.loads(stats_json)
    ops = d.get("Time", {}).get("operator", {})
    return {name: (int(v["Count"]), float(v["Total"])) for name, v in ops.items()}


class Profiled:
    """One model, its data and trainer; ``step()`` runs one unit of work."""

    def __init__(self, label, name, use_fused, args, size, kw):
        import mxnet as mx
        from mxnet import gluon
        from mxrepro.models import fused, get_model, model_info
        cfg = model_info(name).cfg
        classes = int(kw.get("classes", cfg.get("num_classes", 1000)))
        with fused.fused_ops(use_fused):
            self.net = get_model(name, **kw)
        self.label, self.train, self.update = label, args.mode == "train", not args.no_update
        self.net.initialize(mx.init.Xavier())
        self.net.hybridize(static_alloc=True, static_shape=True)
        self.x = mx.nd.random.uniform(-1, 1, shape=(args.batch_size, 3, size, size))
        self.y = mx.nd.array(mx.nd.random.randint(0, classes, shape=(args.batch_size,)).asnumpy())
        self.loss_fn = gluon.loss.SoftmaxCrossEntropyLoss()
        self.trainer = gluon.Trainer(self.net.collect_params(), "nag",
                                     {"learning_rate": 0.01, "momentum": 0.9, "wd": 1e-4})
        self.ops, self.walls = {}, []

    def step(self):
        import mxnet as mx
        from mxnet import autograd
        if self.train:
            with autograd.record():
                loss = self.loss_fn(self.net(self.x), self.y)
            loss.backward()
            if self.update:
                self.trainer.step(self.x.shape[0])
        else:
            self.net(self.x)
        mx.nd.waitall()

    def profiled_step(self):
        import mxnet as mx
        mx.nd.waitall()
        mx.profiler.dumps(reset=True)
        mx.profiler.set_state("run")
        t0 = time.perf_counter()
        self.step()
        self.walls.append((time.perf_counter() - t0) * 1000.0)
        mx.profiler.set_state("stop")
        for name, (c, t) in operator_rows(mx.profiler.dumps(format="json", reset=True)).items():
            oc, ot = self.ops.get(name, (0, 0.0))
            self.ops[name] = (oc + c, ot + t)

    def rows(self):
        n = len(self.walls)
        rows = [(name, c / n, t / n) for name, (c, t) in self.ops.items()]
        return sorted(rows, key=lambda r: -r[2])


def print_table(p, top, by_group):
    rows = p.rows()
    total = sum(r[2] for r in rows)
    print("\n== %s: per step wall %.1f ms (median of %d), operators %.1f ms (%d kinds, %.0f calls)"
          % (p.label, statistics.median(p.walls), len(p.walls), total, len(rows), sum(r[1] for r in rows)))
    print("%-40s %7s %10s %9s %7s %7s" % ("operator", "calls", "total ms", "ms/call", "% ops", "cum %"))
    cum = 0.0
    shown = rows if top <= 0 else rows[:top]
    for name, c, t in shown:
        cum += t
        print("%-40s %7.0f %10.2f %9.3f %6.1f%% %6.1f%%" % (name[:40], c, t, t / max(c, 1e-9), 100 * t / total,
                                                           100 * cum / total))
    if len(shown) < len(rows):
        rest = rows[len(shown):]
        print("%-40s %7.0f %10.2f %9s %6.1f%%" % ("(%d others)" % len(rest), sum(r[1] for r in rest),
                                                  sum(r[2] for r in rest), "", 100 * sum(r[2] for r in rest) / total))
    print("%-40s %7.0f %10.2f" % ("total", sum(r[1] for r in rows), total))
    if by_group:
        groups = {}
        for name, c, t in rows:
            g = groups.setdefault(group_of(name), [0.0, 0.0])
            g[0] += c
            g[1] += t
        print("%-40s %7s %10s %7s" % ("group", "calls", "total ms", "%"))
        for g, (c, t) in sorted(groups.items(), key=lambda kv: -kv[1][1]):
            print("%-40s %7.0f %10.2f %6.1f%%" % (g, c, t, 100 * t / total))


def print_comparison(profs, top):
    base = dict((n, t) for n, _, t in profs[0].rows())
    per = [dict((n, t) for n, _, t in p.rows()) for p in profs]
    names = sorted(set().union(*per), key=lambda n: -max(d.get(n, 0.0) for d in per))
    if top > 0:
        names = names[:top]
    w = max(14, max(len(p.label) for p in profs))
    print("\n== side by side, ms per step (difference to %s in brackets)" % profs[0].label)
    print("%-32s" % "operator" + "".join(" %*s" % (w + 10, p.label[:w + 10]) for p in profs))
    for n in names:
        cells = []
        for i, d in enumerate(per):
            v = d.get(n, 0.0)
            cells.append("%.1f" % v if i == 0 else "%.1f (%+.1f)" % (v, v - base.get(n, 0.0)))
        print("%-32s" % n[:32] + "".join(" %*s" % (w + 10, c) for c in cells))
    tot = [sum(d.values()) for d in per]
    walls = [statistics.median(p.walls) for p in profs]
    print("%-32s" % "operators total" + "".join(" %*s" % (w + 10, "%.1f" % t if i == 0 else "%.1f (%+.1f%%)" % (
        t, 100 * (t / tot[0] - 1))) for i, t in enumerate(tot)))
    print("%-32s" % "wall (median step)" + "".join(" %*s" % (w + 10, "%.1f" % t if i == 0 else "%.1f (%+.1f%%)" % (
        t, 100 * (t / walls[0] - 1))) for i, t in enumerate(walls)))


def main(argv=None):
    args = parse_args(argv)
    if not args.bulk:
        os.environ["MXNET_EXEC_BULK_EXEC_TRAIN"] = "0"
        os.environ["MXNET_EXEC_BULK_EXEC_INFERENCE"] = "0"
    import mxrepro  # noqa: F401  (threads and the operator library before mxnet)
    import mxnet as mx
    from mxrepro.cli import parse_kw
    from mxrepro.models import model_info
    from mxrepro.sysinfo import cpu_summary, load_average

    try:
        kw = parse_kw(args.kw)
    except ValueError as e:
        raise SystemExit("error: %s" % e)
    size = args.input_size or int(model_info(args.model[0]).cfg.get("input_size", 224))
    variants = {"on": [True], "off": [False], "both": [True, False]}[args.fused]
    profs = []
    for name in args.model:
        for use in variants:
            label = name + ("" if args.fused != "both" else (" fused" if use else " unfused"))
            profs.append(Profiled(label, name, use, args, size, kw))
    for p in profs:
        for _ in range(args.warmup):
            p.step()
    # the trace file goes to a scratch folder: MXNet's profiler replaces its target file, so /dev/null
    # would become a regular file
    scratch = tempfile.mkdtemp(prefix="profile_step-")
    mx.profiler.set_config(profile_symbolic=True, profile_imperative=True, profile_memory=False,
                           profile_api=False, aggregate_stats=True, filename=os.path.join(scratch, "trace.json"))
    for _ in range(args.iters):  # round-robin: machine load hits every model alike
        for p in profs:
            p.profiled_step()

    print("%s, batch %d, %dx%d, %d profiled steps per model, bulk execution %s, OMP_NUM_THREADS=%s, "
          "load average %.1f" % ("training step" + ("" if args.no_update else " + update") if args.mode == "train"
                                 else "inference", args.batch_size, size, size, args.iters,
                                 "on" if args.bulk else "off", os.environ.get("OMP_NUM_THREADS"), load_average()[0]))
    print("CPU: " + cpu_summary())
    for p in profs:
        print_table(p, args.top, args.by_group)
    if len(profs) > 1:
        print_comparison(profs, args.top)
    shutil.rmtree(scratch, ignore_errors=True)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(dict(mode=args.mode, batch_size=args.batch_size, input_size=size, load=load_average()[0],
                           models=[dict(label=p.label, wall_ms=statistics.median(p.walls),
                                        rows=[dict(op=n, calls=c, ms=t) for n, c, t in p.rows()]) for p in profs]),
                      fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
