#!/usr/bin/env python
"""CPU images/s at CIFAR size for ResNet-32 vs AFF-ResNet-32 vs iAFF-ResNet-32 (blocks 5, channel
times 4, 100 classes), in one run, next to the multiply-add overhead and the paper's FLOP overhead.

    python tools/bench_aff.py [--batch-size 32] [--iters 4] [--repeats 5] [--mode both] [--fused both]

Training = forward + backward + Nesterov update (the training core's optimizer); inference =
forward in predict mode. The AFF networks use the fused operators (``AFFGate``, ``AddMean``,
mxrepro.models.fused); ``--fused both`` (the default) also builds them with MXNet's own operators
("unfused" rows), so one process times before and after. Models are measured round-robin,
``--repeats`` times, and the median round of each is reported (the best one in brackets), so a
burst of load on a shared machine hurts all of them alike; wall-clock images/s and process CPU
seconds per image are both printed, with the CPU's vector extensions. The paper (supplement) gives FLOPs,
not speed: AFF-ResNet-50 4.3 vs 4.1 GFLOPs (+4.88%); its Table 7 puts AFF in a basic block (r=4)
at +2.78% (+3.70% in a stage-doubling block). The author notes MS-CAM runs slower than its FLOPs
suggest because its local point-wise convs run at full resolution (issue #1, docs/reference/aff.md §5).
"""
import argparse
import os
import sys
import time


import statistics  # noqa: E402

import mxrepro  # noqa: E402  (sets OMP_NUM_THREADS before mxnet)
import mxnet as mx  # noqa: E402
from mxnet import autograd, gluon, nd  # noqa: E402

from mxrepro.flops import count_macs, count_params  # noqa: E402
from mxrepro.models import fused, get_model  # noqa: E402
from mxrepro.sysinfo import cpu_summary  # noqa: E402

MODELS = [("ResNet-32", "cifar_resnet"), ("AFF-ResNet-32", "aff_cifar_resnet"), ("iAFF-ResNet-32", "iaff_cifar_resnet")]
PAPER = {"AFF-ResNet-32": "+2.78% per basic block (+3.70% stage-doubling); AFF-ResNet-50 +4.88%",
         "iAFF-ResNet-32": "(not given; two MS-CAMs, about twice AFF)"}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--batch-size", type=int, default=32, help="images per step")
    p.add_argument("--iters", type=int, default=4, help="timed steps per round")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps before the first round")
    p.add_argument("--repeats", type=int, default=5, help="rounds; the median one of each model is reported")
    p.add_argument("--mode", choices=["train", "infer", "both"], default="both")
    p.add_argument("--fused", choices=["on", "off", "both"], default="both",
                   help="AFF networks with the fused operators, with MXNet's own, or both (one row each)")
    p.add_argument("--blocks", type=int, default=5, help="blocks per stage (5 = ResNet-32)")
    p.add_argument("--channel-times", type=int, default=4, help="width multiplier")
    return p.parse_args(argv)


class Runner:
    """One model with its data and trainer; ``step(train)`` runs one timed unit of work."""

    def __init__(self, name, args, use_fused=True):
        with fused.fused_ops(use_fused):
            self.net = get_model(name, classes=100, blocks=args.blocks, channel_times=args.channel_times)
        self.params, _ = count_params(self.net)
        self.macs = count_macs(self.net(mx.sym.var("data")), (1, 3, 32, 32))["macs"]
        self.net.initialize(mx.init.Xavier())
        self.net.hybridize(static_alloc=True, static_shape=True)
        self.x = nd.random.uniform(-1, 1, shape=(args.batch_size, 3, 32, 32))
        self.y = nd.array(nd.random.randint(0, 100, shape=(args.batch_size,)).asnumpy())
        self.loss = gluon.loss.SoftmaxCrossEntropyLoss()
        self.trainer = gluon.Trainer(self.net.collect_params(), "nag",
                                     {"learning_rate": 0.01, "momentum": 0.9, "wd": 1e-4})
        self.rounds = {}

    def step(self, train):
        if train:
            with autograd.record():
                loss = self.loss(self.net(self.x), self.y)
            loss.backward()
            self.trainer.step(self.x.shape[0])
        else:
            self.net(self.x).wait_to_read()

    def measure(self, train, iters):
        mx.nd.waitall()
        t, c = time.time(), time.process_time()
        for _ in range(iters):
            self.step(train)
        mx.nd.waitall()
        wall, cpu = time.time() - t, time.process_time() - c
        n = iters * self.x.shape[0]
        self.rounds.setdefault("train" if train else "infer", []).append((n / wall, cpu / n * 1000.0))

    def result(self, key):
        """(median images/s, best images/s, median CPU ms per image) over the rounds."""
        r = self.rounds[key]
        return statistics.median(a for a, _ in r), max(a for a, _ in r), statistics.median(c for _, c in r)


def main(argv=None):
    args = parse_args(argv)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    ncpu = os.cpu_count() or 1
    print("CPU benchmark, 32x32 input, batch %d, %d steps x %d rounds (median reported), OMP_NUM_THREADS=%s, "
          "%d CPUs, load average %.1f" % (args.batch_size, args.iters, args.repeats, os.environ.get("OMP_NUM_THREADS"),
                                          ncpu, load))
    print("CPU: " + cpu_summary())
    if load > ncpu + 0.5:
        print("WARNING: the machine is busy (load %.1f on %d CPUs): wall-clock numbers are pessimistic and their "
              "ratios noisy; compare the CPU ms/img columns too" % (load, ncpu))
    variants = {"on": [True], "off": [False], "both": [True, False]}[args.fused]
    if True in variants and not fused.available():
        print("WARNING: the loaded operator library has no fused operators; the 'fused' rows are unfused")
    runners = []
    for label, name in MODELS:
        for use in (variants if name != MODELS[0][1] else [True]):  # ResNet-32 has no fusion
            tag = "" if name == MODELS[0][1] or args.fused != "both" else (" fused" if use else " unfused")
            runners.append((label + tag, Runner(name, args, use)))
    modes = {"train": [True], "infer": [False], "both": [False, True]}[args.mode]
    for _, r in runners:
        for train in modes:
            for _ in range(args.warmup):
                r.step(train)
    from tqdm import tqdm
    with tqdm(total=args.repeats * len(modes) * len(runners), desc="measuring", file=sys.stderr) as bar:
        for _ in range(args.repeats):
            for train in modes:
                for label, r in runners:
                    bar.set_postfix_str("%s %s" % (label, "train" if train else "infer"))
                    r.measure(train, args.iters)
                    bar.update()
    mx.nd.waitall()

    base = runners[0][1]
    head = "%-24s %8s %9s %9s" % ("model", "params", "GMACs/img", "MACs +%")
    keys = (["infer"] if False in modes else []) + (["train"] if True in modes else [])
    for m in keys:
        head += " | %6s img/s (best) %7s %9s" % (m, "time +%", "CPU ms/img")
    print(head)
    for label, r in runners:
        row = "%-24s %7.3fM %9.4f %8.2f%%" % (label, r.params / 1e6, r.macs / 1e9, 100.0 * (r.macs / base.macs - 1))
        for m in keys:
            ips, best, cpu = r.result(m)
            row += " | %11.1f (%5.1f) %6.1f%% %10.2f" % (ips, best, 100.0 * (base.result(m)[0] / ips - 1), cpu)
        print(row)
    print("\npaper FLOP overhead (supplement): " + "; ".join("%s: %s" % kv for kv in PAPER.items()))
    print("time +% = extra time per image relative to ResNet-32 (wall clock, median rounds).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
