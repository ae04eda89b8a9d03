#!/usr/bin/env python
"""Training logs of every script of this project -> CSV and a PNG of the curves.

Reads both formats, per epoch:
  * Module API (cifar/train_cifar.py, imagenet/train_imagenet.py): `Epoch[E] Train-accuracy=`,
    `Epoch[E] Validation-accuracy=` / `Validation-top_k_accuracy_5=`, `Epoch[E] Time cost=`,
    Speedometer `Speed: X samples/sec` and the scripts' `Epoch[E] Batch[B] Update[U] lr=` lines
    (E is 0-based there);
  * Gluon scripts (mxrepro/train.py): `[Epoch N] train: loss= top1= lr= speed= img/s time= s |
    val: top1= top5=` (N counts completed epochs).
Epochs in the output count completed epochs (1 = after the first epoch).

    python tools/parse_log.py log/a.log log/b.log --csv curves.csv --png curves.png [--error]
"""
import argparse
import csv
import os
import re
import sys
from collections import OrderedDict

FIELDS = ["run", "epoch", "train_acc", "val_acc", "val_top5", "lr", "speed", "time"]

_MOD = re.compile(r"Epoch\[(\d+)\]\s+(Train|Validation)-(accuracy|top_k_accuracy_5)=([0-9.eE+-]+)")
_TIME = re.compile(r"Epoch\[(\d+)\]\s+Time cost=([0-9.eE+-]+)")
_SPEED = re.compile(r"Epoch\[(\d+)\]\s+Batch\s*\[[\d-]+\]\s+Speed:\s*([0-9.]+) samples/sec")
_LR = re.compile(r"Epoch\[(\d+)\]\s+Batch\[\d+\]\s+Update\[\d+\]\s+lr=([0-9.eE+-]+)")
_GLUON = re.compile(r"\[Epoch (\d+)\] train: loss=\S+ top1=([0-9.]+) lr=([0-9.eE+-]+) speed=([0-9.]+) img/s "
                    r"time=([0-9.]+) s(?: \| val: top1=([0-9.]+) top5=([0-9.]+))?")


def parse(path):
    """One log -> list of per-epoch dicts (sorted by epoch; a resumed run's later lines win)."""
    rows = OrderedDict()
    speeds = {}

    def row(ep):
        return rows.setdefault(ep, {"epoch": ep})

    with open(path, errors="replace") as f:
        for line in f:
            m = _GLUON.search(line)
            if m:
                r = row(int(m.group(1)))
                r.update(train_acc=float(m.group(2)), lr=float(m.group(3)), speed=float(m.group(4)),
                         time=float(m.group(5)))
                if m.group(6):
                    r.update(val_acc=float(m.group(6)), val_top5=float(m.group(7)))
                continue
            m = _MOD.search(line)
            if m:
                key = {("Train", "accuracy"): "train_acc", ("Validation", "accuracy"): "val_acc",
                       ("Validation", "top_k_accuracy_5"): "val_top5"}.get((m.group(2), m.group(3)))
                if key:
                    row(int(m.group(1)) + 1)[key] = float(m.group(4))
                continue
            m = _TIME.search(line)
            if m:
                row(int(m.group(1)) + 1)["time"] = float(m.group(2))
                continue
            m = _SPEED.search(line)
            if m:
                speeds.setdefault(int(m.group(1)) + 1, []).append(float(m.group(2)))
                continue
            m = _LR.search(line)
            if m:
                row(int(m.group(1)) + 1)["lr"] = float(m.group(2))
    for ep, sp in speeds.items():
        sp = sorted(sp)
        row(ep).setdefault("speed", sp[len(sp) // 2])   # median Speedometer reading of the epoch
    return [rows[k] for k in sorted(rows)]


def run_name(path):
    return os.path.splitext(os.path.basename(path))[0]


def write_csv(runs, path):
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, FIELDS)
        w.writeheader()
        for name, rows in runs.items():
            for r in rows:
                w.writerow(dict({k: r.get(k, "") for k in FIELDS}, run=name))


def plot(runs, path, error=False, title=None):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (ax, axlr) = plt.subplots(1, 2, figsize=(12, 4.5), gridspec_kw={"width_ratios": [2, 1]})
    tr = (lambda a: 1 - a) if error else (lambda a: a)
    for i, (name, rows) in enumerate(runs.items()):
        c = "C%d" % (i % 10)
        for key, style, lab in (("train_acc", "--", "train"), ("val_acc", "-", "val")):
            pts = [(r["epoch"], tr(r[key])) for r in rows if key in r]
            if pts:
                ax.plot(*zip(*pts), style, color=c, label="%s %s" % (name, lab))
        pts = [(r["epoch"], r["lr"]) for r in rows if "lr" in r]
        if pts:
            axlr.plot(*zip(*pts), "-", color=c, label=name)
    ax.set_xlabel("epoch")
    ax.set_ylabel("error" if error else "accuracy")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    axlr.set_xlabel("epoch")
    axlr.set_ylabel("learning rate")
    axlr.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("logs", nargs="+", help="training log files")
    ap.add_argument("--csv", help="write all runs' per-epoch rows here")
    ap.add_argument("--png", help="write the curves here (accuracy or error, and LR, against epochs)")
    ap.add_argument("--error", action="store_true", help="plot error (1 - accuracy) instead of accuracy")
    ap.add_argument("--title", help="figure title")
    args = ap.parse_args(argv)
    runs = OrderedDict()
    for p in args.logs:
        if not os.path.isfile(p):
            print("error: no such log file: %s" % p, file=sys.stderr)
            return 2
        rows = parse(p)
        if not rows:
            print("warning: no epoch lines found in %s (is it a training log of this project?)" % p, file=sys.stderr)
        runs[run_name(p)] = rows
    for name, rows in runs.items():
        last = next((r for r in reversed(rows) if "val_acc" in r), None)
        best = max((r["val_acc"] for r in rows if "val_acc" in r), default=None)
        print("%-32s epochs %3d  final val acc %s  best %s" % (
            name, len(rows), "%.4f" % last["val_acc"] if last else "-", "%.4f" % best if best is not None else "-"))
    if args.csv:
        write_csv(runs, args.csv)
        print("wrote", args.csv)
    if args.png:
        plot(runs, args.png, error=args.error, title=args.title)
        print("wrote", args.png)
    return 0


if __name__ == "__main__":
    sys.exit(main())
