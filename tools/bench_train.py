#!/usr/bin/env python
"""Training throughput on the CPU: ResNet-164 vs ResNet-164-FBN on CIFAR-shaped data.

    python tools/bench_train.py                       # batch 64, CIFAR-100 head, F=20
    python tools/bench_train.py --batch-size 128 --rounds 5 --iters 3 --json out.json

Both networks are trained in the same process with the engine's Module step and the optimizer
cifar/train_cifar.py builds (its recipe: SGD momentum, clip 10, Xavier init, slow-start schedule) on
random 3x32x32 batches; measurement rounds alternate
between the two networks so machine-load drift hits both equally. Prints images/s for each, the
median step times and their ratio (the issue's target: FBN step time <= 1.20x the baseline's).
"""
import argparse
import json
import os
import statistics
import sys
import time


import mxrepro  # noqa: F401
import mxnet as mx
import numpy as np
import symbols  # noqa: F401  (registers the FBN networks)

from mxrepro.engine import build_schedule, make_optimizer
from mxrepro.engine.steps import ModuleStep
from mxrepro.recipes import fbn


def make_module(network, a):
    args = fbn.build_parser("cifar").parse_args([
        "--network", network, "--num-classes", str(a.num_classes), "--res-module-num", str(a.res_module_num),
        "--batch-size", str(a.batch_size), "--gpus", "", "--fmconv-factor", str(a.fmconv_factor),
        "--lr-step", "100,150", "--fmconv-slowstart", "3", "--num-epoches", "200"])
    cfg, _, build = fbn.config_from_args(args, [])
    step = ModuleStep(build(a.num_classes), [mx.cpu()], a.batch_size, (3, 32, 32))
    step.initialize(cfg.initializer)
    sched = build_schedule(cfg.schedule, cfg.lr, cfg.epochs, 390)
    step.bind_optimizer(make_optimizer(cfg.optimizer, cfg.lr, sched, 1.0 / a.batch_size), "local",
                        cfg.optimizer.rules)
    mod = step.mod
    rng = np.random.RandomState(0)
    batch = mx.io.DataBatch(data=[mx.nd.array(rng.randn(a.batch_size, 3, 32, 32) * 60)],
                            label=[mx.nd.array(rng.randint(0, a.num_classes, a.batch_size))])
    return mod, batch


def step(mod, batch, n):
    """(wall seconds, process CPU seconds) per training step, averaged over ``n`` steps."""
    tic, cpu = time.perf_counter(), time.process_time()
    for _ in range(n):
        mod.forward_backward(batch)
        mod.update()
    mx.nd.waitall()
    return (time.perf_counter() - tic) / n, (time.process_time() - cpu) / n


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--res-module-num", type=int, default=18, help="18 = ResNet-164")
    ap.add_argument("--num-classes", type=int, default=100)
    ap.add_argument("--fmconv-factor", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=2, help="untimed iterations per network")
    ap.add_argument("--iters", type=int, default=2, help="iterations per timed round")
    ap.add_argument("--rounds", type=int, default=5, help="alternating rounds (median is reported)")
    ap.add_argument("--json", type=str, default=None, help="also write the results to this file")
    a = ap.parse_args(argv)

    nets = ("resnet-small", "resnet-small-fmconv")
    mods = {n: make_module(n, a) for n in nets}
    for n in nets:
        step(*mods[n], a.warmup)
    times = {n: [] for n in nets}
    cpu = {n: [] for n in nets}
    try:
        from tqdm import tqdm
        rounds = tqdm(range(a.rounds), desc="rounds", file=sys.stderr)
    except ImportError:
        rounds = range(a.rounds)
    for r in rounds:
        for n in (nets if r % 2 == 0 else nets[::-1]):
            wall, c = step(*mods[n], a.iters)
            times[n].append(wall)
            cpu[n].append(c)
    med = {n: statistics.median(times[n]) for n in nets}
    cmed = {n: statistics.median(cpu[n]) for n in nets}
    depth = 9 * a.res_module_num + 2
    res = dict(batch_size=a.batch_size, depth=depth, num_classes=a.num_classes, fmconv_factor=a.fmconv_factor,
               omp_threads=os.environ.get("OMP_NUM_THREADS"), fb_gemm=_backend(),
               baseline_img_s=a.batch_size / med[nets[0]], fbn_img_s=a.batch_size / med[nets[1]],
               baseline_step_s=med[nets[0]], fbn_step_s=med[nets[1]], step_ratio=med[nets[1]] / med[nets[0]],
               baseline_cpu_s=cmed[nets[0]], fbn_cpu_s=cmed[nets[1]], cpu_ratio=cmed[nets[1]] / cmed[nets[0]],
               rounds={n: times[n] for n in nets}, load_avg=_load())
    print("CPU training, batch %d, %s threads, FB sgemm: %s" % (a.batch_size, res["omp_threads"], res["fb_gemm"]))
    print("  ResNet-%d       %7.1f images/s  (step %.3f s)" % (depth, res["baseline_img_s"], res["baseline_step_s"]))
    print("  ResNet-%d-FBN   %7.1f images/s  (step %.3f s)" % (depth, res["fbn_img_s"], res["fbn_step_s"]))
    print("  FBN / baseline step time: %.3fx (target <= 1.20x); process CPU time ratio %.3fx"
          % (res["step_ratio"], res["cpu_ratio"]))
    if res["load_avg"] and res["load_avg"] > (os.cpu_count() or 1):
        print("  warning: load average %.1f on %d cores -- other jobs share the CPU; absolute figures are not "
              "representative (the ratio is more robust)" % (res["load_avg"], os.cpu_count() or 1))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=1)
    return 0


def _load():
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


def _backend():
    try:
        return mxrepro.ops.gemm_backend()
    except Exception:  # noqa: BLE001  (older operator builds have no query)
        return "unknown"


if __name__ == "__main__":
    sys.exit(main())
