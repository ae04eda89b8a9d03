#!/usr/bin/env python
"""`./run.sh demo`: the whole system on a fresh machine, on the CPU.

1. turns scikit-learn's handwritten digits (shipped inside the package, no network) into the
   CIFAR layout with im2rec (tools/prepare_digits.py -> data/digits/{train,test}.rec);
2. trains the CIFAR pre-activation ResNet baseline (`resnet-small`) and its FBN variant
   (`resnet-small-fmconv`: BN -> tanh -> FMConvolution3 + 1x1 conv head) with cifar/train_cifar.py,
   the same script and flags as the paper's CIFAR commands, only smaller (--res-module-num), each for
   --epochs epochs (OUT = --out, default demo_out: checkpoints in OUT/model, logs and metrics.jsonl in
   OUT/log);
3. prints a table (network, parameters, test accuracy, images/s) and writes the training curves and
   their CSV (tools/parse_log.py) to OUT/curves.png and OUT/curves.csv.

Duration: nearly all of it is training, 2 x --epochs epochs (default 10) on 1,437 images of 32x32.
Measured on a 2-core machine that other jobs kept loaded (1-minute load average up to 7): 11 minutes
(671 s, 406 CPU-seconds) at the default, 3 minutes (173 s) with --epochs 2. From
the CPU-seconds an idle 2-core machine needs about 4 to 7 minutes at the default (not measured idle).
When the load average exceeds the number of cores during training, the table says so: its images/s
are then not comparable with other runs.

    python tools/demo.py [--epochs 10] [--res-module-num 2] [--out demo_out]
"""
import argparse
import os
import shlex
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
import mxrepro  # noqa: E402,F401  (threads, operator library)
import symbols  # noqa: E402,F401  (registers the FBN networks)

import parse_log  # noqa: E402

NETWORKS = [("resnet-small", "baseline (ReLU, avg-pool, FC)"),
            ("resnet-small-fmconv", "FBN (tanh, FB layer F=20 + 1x1 conv)")]


def cores():
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


class LoadWatch:
    """The highest 1-minute load average seen while the block runs (sampled every ``every`` s)."""

    def __init__(self, every=5.0):
        self.every, self.peak = every, None
        self._stop = threading.Event()

    def sample(self):
        try:
            load = os.getloadavg()[0]
        except (AttributeError, OSError):  # not on every platform
            return
        self.peak = load if self.peak is None else max(self.peak, load)

    def _loop(self):
        while not self._stop.wait(self.every):
            self.sample()

    def __enter__(self):
        self.sample()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.sample()
        return False


def load_caveat(peak, ncores):
    """The table's timing caveat, or None when the machine was not overloaded."""
    if peak is None or peak <= ncores:
        return None
    return "load average %.1f on %d core%s: the img/s figures are not comparable" % (
        peak, ncores, "" if ncores == 1 else "s")


def run(cmd, log_path=None):
    from mxrepro.cli import python_cmd
    print("$ " + shlex.join([python_cmd() if a == sys.executable else a for a in cmd]), flush=True)
    t = time.time()
    res = subprocess.run(cmd, cwd=ROOT)
    if res.returncode != 0:
        raise SystemExit("demo: step failed with exit code %d: %s%s" % (
            res.returncode, shlex.join(cmd), ("\n  see " + log_path) if log_path else ""))
    return time.time() - t


def count_params(network, classes, n):
    from mxrepro import flops
    return flops.count_params(mxrepro.get_symbol(network, num_classes=classes, res_module_num=n), (1, 3, 32, 32))[0]


def count_lines(path):
    with open(path) as f:
        return sum(1 for line in f if line.strip())


def train(net, args, n_train, steps):
    """Train ``net`` from scratch with cifar/train_cifar.py; returns its log file."""
    prefix = "demo_%s" % net
    log = os.path.join(args.out, "log", prefix + ".log")
    cmd = [sys.executable, os.path.join(ROOT, "cifar", "train_cifar.py"), "--gpus", "",
           "--data-dir", args.data_dir, "--num-classes", "10", "--num-examples", str(n_train),
           "--network", net, "--res-module-num", str(args.res_module_num),
           "--batch-size", str(args.batch_size), "--lr", str(args.lr), "--wd", "1e-4",
           "--num-epoches", str(args.epochs), "--lr-step", steps, "--frequent", "10",
           "--model-prefix", prefix, "--output-dir", args.out, "--no-auto-resume", "--seed", "1"]
    if net.endswith("fmconv"):
        cmd += ["--fmconv-slowstart", "1", "--fmconv-drop", "0.5", "--fmconv-factor", "20"]
    # a fresh run each time: the table must describe this run only (the engine appends to both files)
    for old in (log, os.path.join(args.out, "log", prefix + "-metrics.jsonl")):
        if os.path.exists(old):
            os.remove(old)
    run(cmd, log)
    return log


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=10, help="epochs per network")
    ap.add_argument("--res-module-num", type=int, default=2, help="bottleneck modules per stage (18 = ResNet-164)")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=0.02, help="base LR (on this small set the FB weights run away at 0.05-0.1 with DropFactor unless the FB layer gets a lower LR, see docs/fbn.md \"Training stability\"; 0.02 trains both)")
    ap.add_argument("--data-dir", default=os.path.join(ROOT, "data", "digits"))
    ap.add_argument("--out", default=os.path.join(ROOT, "demo_out"), help="checkpoints, logs, curves")
    args = ap.parse_args(argv)

    t0 = time.time()
    run([sys.executable, os.path.join(ROOT, "tools", "prepare_digits.py"), "--out", args.data_dir])
    n_train, n_test = (count_lines(os.path.join(args.data_dir, n + ".lst")) for n in ("train", "test"))
    steps = "%d" % max(1, int(args.epochs * 0.7))
    logs = []
    watch = LoadWatch()
    with watch:
        for net, _ in NETWORKS:
            logs.append(train(net, args, n_train, steps))
    caveat = load_caveat(watch.peak, cores())

    runs = {net: parse_log.parse(log) for (net, _), log in zip(NETWORKS, logs)}
    print()
    print("| network | head | parameters | test accuracy (final / best) | train images/s |")
    print("|---|---|---|---|---|")
    for net, head in NETWORKS:
        rows = [r for r in runs[net] if r.get("phase", "train") == "train"]
        vals = [r["val_acc"] for r in rows if r.get("val_acc") is not None]
        speeds = sorted(r["speed"] for r in rows if r.get("speed") is not None)
        print("| %s (n=%d) | %s | %.3fM | %.3f / %.3f | %.0f%s |" % (
            net, args.res_module_num, head, count_params(net, 10, args.res_module_num) / 1e6,
            vals[-1] if vals else float("nan"), max(vals) if vals else float("nan"),
            speeds[len(speeds) // 2] if speeds else float("nan"), " (*)" if caveat else ""))
    if caveat:
        print("(*) " + caveat)
    png = os.path.join(args.out, "curves.png")
    csv = os.path.join(args.out, "curves.csv")
    parse_log.main(logs + ["--png", png, "--csv", csv,
                           "--title", "digits (sklearn) in CIFAR layout: baseline vs FBN, CPU"])
    print("chance level: 0.100; %d training / %d test images; demo took %.0f s; peak 1-minute load average "
          "during training %s on %d cores" % (n_train, n_test, time.time() - t0,
                                              "?" if watch.peak is None else "%.1f" % watch.peak, cores()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
