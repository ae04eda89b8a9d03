#!/usr/bin/env python
"""`./run.sh demo`: the whole system on a fresh machine, on CPU, in a few minutes.

1. turns scikit-learn's handwritten digits (shipped inside the package, no network) into the
   CIFAR layout with im2rec (tools/prepare_digits.py -> data/digits/{train,test}.rec);
2. trains the CIFAR pre-activation ResNet baseline (`resnet-small`) and its FBN variant
   (`resnet-small-fmconv`: BN -> tanh -> FMConvolution3 + 1x1 conv head) with cifar/train_cifar.py,
   the same script and flags as the paper's CIFAR commands, only smaller (--res-module-num);
3. prints a table (network, parameters, test accuracy, images/s) and writes the training curves
   (tools/parse_log.py) to demo_out/curves.png.

    python tools/demo.py [--epochs 10] [--res-module-num 2] [--out demo_out]
"""
import argparse
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
import mxrepro  # noqa: E402,F401  (threads, operator library)
import symbols  # noqa: E402,F401  (registers the FBN networks)

import parse_log  # noqa: E402

NETWORKS = [("resnet-small", "baseline (ReLU, avg-pool, FC)"),
            ("resnet-small-fmconv", "FBN (tanh, FB layer F=20 + 1x1 conv)")]


def run(cmd, log_path=None):
    print("$ " + " ".join(cmd), flush=True)
    t = time.time()
    res = subprocess.run(cmd, cwd=ROOT)
    if res.returncode != 0:
        raise SystemExit("demo: step failed with exit code %d: %s%s" % (
            res.returncode, " ".join(cmd), ("\n  see " + log_path) if log_path else ""))
    return time.time() - t


def count_params(network, classes, n):
    from mxrepro import flops
    return flops.count_params(mxrepro.get_symbol(network, num_classes=classes, res_module_num=n), (1, 3, 32, 32))[0]


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
    with open(os.path.join(args.data_dir, "train.lst")) as f:
        n_train = sum(1 for line in f if line.strip())
    steps = "%d" % max(1, int(args.epochs * 0.7))
    logs = []
    for net, _ in NETWORKS:
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
        if os.path.exists(log):
            os.remove(log)  # a fresh run each time: the table must describe this run only
        run(cmd, log)
        logs.append(log)

    runs = {net: parse_log.parse(log) for (net, _), log in zip(NETWORKS, logs)}
    print()
    print("| network | head | parameters | test accuracy (final / best) | train images/s |")
    print("|---|---|---|---|---|")
    for net, head in NETWORKS:
        rows = runs[net]
        vals = [r["val_acc"] for r in rows if "val_acc" in r]
        speeds = sorted(r["speed"] for r in rows if "speed" in r)
        print("| %s (n=%d) | %s | %.3fM | %.3f / %.3f | %.0f |" % (
            net, args.res_module_num, head, count_params(net, 10, args.res_module_num) / 1e6,
            vals[-1] if vals else float("nan"), max(vals) if vals else float("nan"),
            speeds[len(speeds) // 2] if speeds else float("nan")))
    png = os.path.join(args.out, "curves.png")
    csv = os.path.join(args.out, "curves.csv")
    parse_log.main(logs + ["--png", png, "--csv", csv,
                           "--title", "digits (sklearn) in CIFAR layout: baseline vs FBN, CPU"])
    print("chance level: 0.100; %d training / %d test images; demo took %.0f s" % (
        n_train, 1797 - n_train, time.time() - t0))
    return 0


if __name__ == "__main__":
    sys.exit(main())
