#!/usr/bin/env python
"""CPU throughput of ResNet-50 vs bL-ResNet-50 (alpha=2, beta=4) at 224x224, in one run.

The paper's point (docs/reference/blnet.md §2.1) is that the ~30% fewer multiply-adds (2.86 G vs 4.09 G, ratio 0.70)
show up as speed. This prints images/s of both (hybridized, static memory), the measured time ratio
and the multiply-add ratio side by side. Rounds alternate between the models so that machine noise
hits both alike; the median round is reported, with the CPU's vector extensions.

The bL networks merge Big and Little with the fused ``UpsampleAdd`` operator (mxrepro.models.fused);
``--fused both`` (the default) also times them with MXNet's UpSampling + slice_like + add + ReLU
("unfused" rows) in the same process, so the ratios before and after come from one run.

    python tools/bench_blnet.py                        # inference, batch 8, 224x224
    python tools/bench_blnet.py --mode train --batch-size 16
    python tools/bench_blnet.py --models resnet50_v1b bl_resnet50 bl_resnet50_a4_b4 --fused on
"""
import argparse
import os
import statistics
import sys
import time


import mxrepro  # noqa: E402  (threads before mxnet)
import mxnet as mx  # noqa: E402
from mxnet import autograd, gluon  # noqa: E402
from tqdm import tqdm  # noqa: E402

from mxrepro.flops import macs_of_model  # noqa: E402
from mxrepro.models import fused, get_model  # noqa: E402
from mxrepro.sysinfo import cpu_summary  # noqa: E402


def build(name, size, batch, ctx, mode, use_fused=True):
    with fused.fused_ops(use_fused):
        net = get_model(name)
    net.initialize(ctx=ctx)
    net.hybridize(static_alloc=True, static_shape=True)
    x = mx.nd.random.uniform(shape=(batch, 3, size, size), ctx=ctx)
    y = mx.nd.zeros((batch,), ctx=ctx)
    loss_fn = gluon.loss.SoftmaxCrossEntropyLoss()

    def step():
        if mode == "train":
            with autograd.record():
                loss = loss_fn(net(x), y)
            loss.backward()
        else:
            net(x)
        mx.nd.waitall()
    return step


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__[__doc__.find("\n\n"):])
    p.add_argument("--models", nargs="+", default=["resnet50_v1b", "bl_resnet50"],
                   help="registered models; the first is the baseline (default: resnet50_v1b bl_resnet50)")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--mode", choices=("inference", "train"), default="inference",
                   help="inference = forward only; train = forward + backward")
    p.add_argument("--rounds", type=int, default=5, help="timed rounds per model (alternating)")
    p.add_argument("--iters", type=int, default=3, help="batches per round")
    p.add_argument("--warmup", type=int, default=2, help="untimed batches per model first")
    p.add_argument("--fused", choices=("on", "off", "both"), default="both",
                   help="bL networks with the fused merge, with MXNet's own operators, or both (one row each)")
    args = p.parse_args(argv)

    ctx = mx.cpu()
    print("CPU benchmark: %s, batch %d, %dx%d, OMP_NUM_THREADS=%s, %d rounds x %d batches, load average %.1f"
          % (args.mode, args.batch_size, args.size, args.size, os.environ.get("OMP_NUM_THREADS"), args.rounds,
             args.iters, os.getloadavg()[0]))
    print("CPU: " + cpu_summary())
    variants = {"on": [True], "off": [False], "both": [True, False]}[args.fused]
    steps, macs, labels = {}, {}, []
    for name in args.models:
        m = macs_of_model(name, input_size=args.size)["macs"] / 1e9
        has_merge = name.startswith("bl_")
        for use in (variants if has_merge else [True]):
            label = name + (" unfused" if has_merge and not use else (" fused" if has_merge and
                                                                     args.fused == "both" else ""))
            labels.append(label)
            macs[label] = m
            steps[label] = build(name, args.size, args.batch_size, ctx, args.mode, use)
            for _ in tqdm(range(args.warmup), desc="warm-up %s" % label, leave=False):
                steps[label]()
    times = {n: [] for n in labels}
    cpu = {n: [] for n in labels}
    for _ in tqdm(range(args.rounds), desc="rounds", leave=False):
        for name in labels:
            t, c = time.perf_counter(), time.process_time()
            for _ in range(args.iters):
                steps[name]()
            n_img = args.iters * args.batch_size
            times[name].append((time.perf_counter() - t) / n_img)
            cpu[name].append((time.process_time() - c) / n_img)
    base = labels[0]
    t0, c0 = statistics.median(times[base]), statistics.median(cpu[base])
    print("%-26s %8s %10s %11s %15s %10s" % ("model", "GMACs", "images/s", "time ratio", "CPU-s/image", "MAC ratio"))
    for name in labels:
        t, c = statistics.median(times[name]), statistics.median(cpu[name])
        print("%-26s %8.3f %10.2f %11.3f %8.3f (%.3f) %10.3f" % (name, macs[name], 1.0 / t, t / t0, c, c / c0,
                                                                 macs[name] / macs[base]))
    try:
        load = os.getloadavg()[0]
        if load > (os.cpu_count() or 1) * 1.5:
            print("warning: load average %.1f on %d cores: wall-clock numbers are unreliable; the CPU-seconds "
                  "per image (process time, ratio in brackets) are the steadier comparison" % (load, os.cpu_count()))
    except OSError:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
