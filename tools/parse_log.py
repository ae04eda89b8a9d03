#!/usr/bin/env python
"""Training logs -> a table, a CSV of the per-epoch rows and a PNG of the curves.

Two readers:

* **this project's logs** (every training script, one engine: mxrepro/engine/loop.py). When
  ``<prefix>-metrics.jsonl`` lies beside the log (``<prefix>`` = the log's name, else the ``prefix``
  of the log's ``config:`` line) its records are used, and ``<prefix>-warm-metrics.jsonl`` for the
  FBN ``--warmup`` epoch; otherwise the log lines
  ``[Epoch E/T] train: loss= top1= lr= speed= img/s time= s | val: top1= topK= ...`` and
  ``Epoch[E] Batch[i/N] Update[U] speed= img/s loss= top1= lr=`` (``Warmup `` before either marks the
  ``--warmup`` epoch). A ``*-metrics.jsonl`` can also be given instead of the log.
* **the original scripts' logs** (MXNet Module.fit: ``Epoch[e] Train-accuracy=``,
  ``Validation-accuracy=``, ``Validation-top_k_accuracy_5=``, ``Time cost=``, Speedometer
  ``Epoch[e] Batch [a-b] Speed: X samples/sec accuracy=A`` and the LR scheduler's
  ``Update[U]: Change learning rate to X``), whose epochs e are 0-based.

Epochs in the output count completed epochs (1 = after the first epoch); the ``--warmup`` epoch is
epoch 0 (phase ``warmup``), its batches lie between -1 and 0. A log is a timeline: a resumed or
restarted run's records replace the ones they reach back to. Runs are labelled by the shortest
path suffix that tells them apart (``a/train`` and ``b/train`` for ``runs/aff/{a,b}/train.log``).

The PNG has accuracy (or error) against epochs, and the LR at every logged batch as well as at each
epoch's end, so a per-iteration ramp (the FBN slow-start) shows as a ramp. Runs of one epoch are
drawn as points.

    python tools/parse_log.py LOG [LOG...] [--csv curves.csv] [--png curves.png] [--error] [--title T]

CSV columns: run, phase, epoch, train_loss, train_acc, val_acc, val_topk, k, lr, update, speed,
time, source (metrics.jsonl, log or original).
"""
import argparse
import csv
import json
import math
import os
import re
import sys
from collections import OrderedDict

FIELDS = ["run", "phase", "epoch", "train_loss", "train_acc", "val_acc", "val_topk", "k", "lr", "update",
          "speed", "time", "source"]

_NUM = r"([-+]?(?:[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?|nan|inf))"

# this project's engine (mxrepro/engine/loop.py)
_EPOCH = re.compile(r"(?:(Warmup) )?\[Epoch (\d+)(?:/\d+)?\] train: loss=%s top1=%s lr=%s speed=%s img/s time=%s s"
                    r"(?: \| val: top1=%s(?: top(\d+)=%s)?)?" % ((_NUM,) * 7))
_BATCH = re.compile(r"(?:(Warmup) )?Epoch\[(\d+)\] Batch\[(\d+)/(\d+)\] Update\[(\d+)\] speed=%s img/s loss=%s "
                    r"top1=%s lr=%s" % ((_NUM,) * 4))
_CONFIG = re.compile(r"\bconfig: (\{.*\})\s*$")
_ITERS = re.compile(r"training epochs \d+\.\.\d+, (\d+) iterations per epoch")

# the original scripts (MXNet Module.fit, Speedometer, lr_scheduler)
_MOD = re.compile(r"Epoch\[(\d+)\]\s+(Train|Validation)-([A-Za-z_0-9-]+)=" + _NUM)
_TIME = re.compile(r"Epoch\[(\d+)\]\s+Time cost=" + _NUM)
_SPEED = re.compile(r"Epoch\[(\d+)\]\s+Batch\s+\[(?:\d+-)?(\d+)\]\s+Speed:\s*" + _NUM + r" samples/sec"
                    r"(?:.*?\baccuracy=" + _NUM + ")?")
_CHANGE = re.compile(r"Update\[(\d+)\]: Change learning rate to " + _NUM)
_ORIG_KEYS = {("Train", "accuracy"): "train_acc", ("Train", "cross-entropy"): "train_loss",
              ("Validation", "accuracy"): "val_acc", ("Validation", "top_k_accuracy_5"): "val_topk"}

_PHASES = {"warmup": 0, "train": 1}
_END = math.inf  # an epoch record sits after every batch of its epoch


class Run:
    """The records of one log: ``epochs`` (per-epoch dicts, see FIELDS) and ``batches`` (per logged
    batch: phase, epoch, batch, iters (batches per epoch or None), update, lr, loss, top1, speed;
    ``lr_only`` for the original scheduler's change lines)."""

    def __init__(self, source):
        self.source = source
        self._recs = []  # (position, kind, dict) in the order written
        self._max = None  # the highest position held

    def _cut(self, pos, inclusive=True):
        """A record at ``pos`` supersedes what an earlier attempt wrote at or after it."""
        if self._max is None or pos > self._max or (pos == self._max and not inclusive):
            return  # the usual case: the log moves forward
        self._recs = [r for r in self._recs if (r[0] < pos if inclusive else r[0] <= pos)]
        self._max = max((r[0] for r in self._recs), default=None)

    def _append(self, pos, kind, rec):
        self._recs.append((pos, kind, rec))
        self._max = pos if self._max is None else max(self._max, pos)

    def add_epoch(self, phase, epoch, values, merge=False):
        pos = (_PHASES[phase], epoch, _END)
        if merge:  # the original format spreads one epoch over several lines
            self._cut(pos, inclusive=False)
            for r in reversed(self._recs):
                if r[0] == pos and r[1] == "epoch":
                    r[2].update(values)
                    return
        else:
            self._cut(pos)
        self._append(pos, "epoch", dict(values, phase=phase, epoch=epoch, source=self.source))

    def add_batch(self, phase, epoch, batch, values):
        pos = (_PHASES[phase], epoch, batch)
        self._cut(pos)
        self._append(pos, "batch", dict(values, phase=phase, epoch=epoch, batch=batch))

    def add_lr_change(self, lr, update):
        """The original scheduler's ``Change learning rate``: placed after the last record."""
        pos = self._recs[-1][0] if self._recs else (1, 1, 0)
        self._append(pos, "batch", dict(phase="train", epoch=pos[1], batch=pos[2], lr=lr, update=update,
                                        lr_only=True))

    @property
    def epochs(self):
        rows = [dict(r[2]) for r in sorted(self._recs, key=lambda r: r[0]) if r[1] == "epoch"]
        for r in rows:
            if r["phase"] == "warmup":
                r["epoch"] = 0
        return rows

    @property
    def batches(self):
        return [r[2] for r in sorted(self._recs, key=lambda r: r[0]) if r[1] == "batch"]

    def __bool__(self):
        return bool(self._recs)


def _f(s):
    return float(s) if s is not None else None


# ------------------------------------------------------------------------------------------------
# readers
# ------------------------------------------------------------------------------------------------
def metrics_files(log_path):
    """(metrics.jsonl, warm-up metrics.jsonl or None) beside ``log_path``, or (None, None)."""
    d = os.path.dirname(os.path.abspath(log_path))
    prefixes = [os.path.splitext(os.path.basename(log_path))[0]]
    try:
        with open(log_path, errors="replace") as f:
            for line in f:
                m = _CONFIG.search(line)
                if m:
                    try:
                        p = json.loads(m.group(1)).get("prefix")
                    except ValueError:
                        continue
                    if p and p not in prefixes:
                        prefixes.append(p)
    except OSError:
        pass
    for p in prefixes:
        main = os.path.join(d, p + "-metrics.jsonl")
        if os.path.isfile(main):
            warm = os.path.join(d, p + "-warm-metrics.jsonl")
            return main, warm if os.path.isfile(warm) else None
    return None, None


def _read_jsonl(path, phase, run):
    with open(path, errors="replace") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                r = json.loads(line)
            except ValueError:
                continue  # a line cut short by a crash
            if not isinstance(r, dict) or "epoch" not in r:
                continue
            ep = int(r["epoch"])
            if r.get("kind") == "batch":
                run.add_batch(phase, ep, int(r["batch"]), dict(
                    iters=None, update=r.get("update"), lr=r.get("lr"), loss=r.get("loss"), top1=r.get("top1"),
                    speed=r.get("speed")))
            elif r.get("kind") == "epoch":
                vals = dict(train_loss=r.get("train_loss"), train_acc=r.get("train_top1"), lr=r.get("lr"),
                            update=r.get("update"), speed=r.get("speed"), time=r.get("time"))
                if r.get("val_top1") is not None:
                    vals["val_acc"] = r["val_top1"]
                if r.get("val_topk") is not None:
                    vals.update(val_topk=r["val_topk"], k=r.get("k"))
                run.add_epoch(phase, ep, {k: v for k, v in vals.items() if v is not None})


def _iters_from_log(log_path):
    """{(phase, epoch): batches per epoch} from the log's batch lines, and the header's figure."""
    per, header = {}, None
    if not log_path:
        return per, header
    with open(log_path, errors="replace") as f:
        for line in f:
            m = _BATCH.search(line)
            if m:
                per[("warmup" if m.group(1) else "train", int(m.group(2)))] = int(m.group(4))
                continue
            m = _ITERS.search(line)
            if m and header is None:
                header = int(m.group(1))
    return per, header


def read_metrics(main, warm=None, log_path=None):
    """A :class:`Run` from the engine's metrics.jsonl (and the warm-up one)."""
    run = Run("metrics.jsonl")
    if warm:
        _read_jsonl(warm, "warmup", run)
    _read_jsonl(main, "train", run)
    per, header = _iters_from_log(log_path)
    ends = {(r["phase"], r["epoch"]): r.get("update") for _, kind, r in run._recs if kind == "epoch"}
    from_updates = {}
    for (ph, ep), u in ends.items():
        prev = ends.get((ph, ep - 1))
        if u is not None and prev is not None and u > prev:
            from_updates[(ph, ep)] = int(u) - int(prev)
        elif u is not None and u > 0 and int(u) % ep == 0:
            from_updates[(ph, ep)] = int(u) // ep  # an epoch's last update is epoch x batches per epoch
    for b in run.batches:
        key = (b["phase"], b["epoch"])
        b["iters"] = per.get(key) or from_updates.get(key) or (header if b["phase"] == "train" else None)
    return run


def read_log(path):
    """A :class:`Run` from the lines of a log of either format."""
    run = Run("log")
    original = False
    with open(path, errors="replace") as f:
        for line in f:
            m = _EPOCH.search(line)
            if m:
                g = m.groups()
                vals = dict(train_loss=_f(g[2]), train_acc=_f(g[3]), lr=_f(g[4]), speed=_f(g[5]), time=_f(g[6]))
                if g[7] is not None:
                    vals["val_acc"] = _f(g[7])
                if g[8] is not None:
                    vals.update(k=int(g[8]), val_topk=_f(g[9]))
                run.add_epoch("warmup" if g[0] else "train", int(g[1]), vals)
                continue
            m = _BATCH.search(line)
            if m:
                g = m.groups()
                run.add_batch("warmup" if g[0] else "train", int(g[1]), int(g[2]), dict(
                    iters=int(g[3]), update=int(g[4]), speed=_f(g[5]), loss=_f(g[6]), top1=_f(g[7]), lr=_f(g[8])))
                continue
            m = _MOD.search(line)
            if m:
                key = _ORIG_KEYS.get((m.group(2), m.group(3)))
                if key:
                    original = True
                    run.add_epoch("train", int(m.group(1)) + 1, {key: float(m.group(4))}, merge=True)
                continue
            m = _TIME.search(line)
            if m:
                original = True
                run.add_epoch("train", int(m.group(1)) + 1, {"time": float(m.group(2))}, merge=True)
                continue
            m = _SPEED.search(line)
            if m:
                original = True
                run.add_batch("train", int(m.group(1)) + 1, int(m.group(2)), dict(
                    iters=None, speed=float(m.group(3)), top1=_f(m.group(4))))
                continue
            m = _CHANGE.search(line)
            if m:
                original = True
                run.add_lr_change(float(m.group(2)), int(m.group(1)))
    if original:
        run.source = "original"
        by_epoch = {}
        for b in run.batches:
            if b.get("speed") is not None:
                by_epoch.setdefault(b["epoch"], []).append(b["speed"])
        for pos, kind, r in run._recs:
            r["source"] = "original"
            sp = sorted(by_epoch.get(r["epoch"], []))
            if kind == "epoch" and sp and "speed" not in r:
                r["speed"] = sp[len(sp) // 2]  # median Speedometer reading of the epoch
        top = max((b["batch"] for b in run.batches if not b.get("lr_only")), default=0)
        for b in run.batches:
            b["iters"] = top or None  # the Speedometer does not say how many batches an epoch has
    return run


def read_run(path):
    """A :class:`Run` of one log (or metrics.jsonl): the metrics.jsonl beside a log of this project is
    preferred to its lines."""
    if path.endswith(".jsonl"):
        warm = path[:-len("-metrics.jsonl")] + "-warm-metrics.jsonl" if path.endswith("-metrics.jsonl") else None
        return read_metrics(path, warm if warm and os.path.isfile(warm) else None)
    main, warm = metrics_files(path)
    if main:
        run = read_metrics(main, warm, path)
        if run:
            return run
    return read_log(path)


def parse(path):
    """One log -> its per-epoch rows (dicts with the keys of FIELDS but ``run``), in epoch order."""
    return read_run(path).epochs


# ------------------------------------------------------------------------------------------------
# labels, CSV, plot
# ------------------------------------------------------------------------------------------------
def run_labels(paths):
    """Unique labels: the file name without extension, lengthened by parent folders where two paths
    would share it (``a/train``, ``b/train``)."""
    cands = []
    for p in paths:
        parts = [x for x in os.path.abspath(p).split(os.sep) if x]
        stem = os.path.splitext(parts[-1])[0]
        if stem.endswith("-metrics"):
            stem = stem[:-len("-metrics")]
        c = ["/".join(parts[-1 - i:-1] + [stem]) for i in range(len(parts))]
        c.append("/".join(parts))  # with the extension: the last resort for a.log vs a.txt
        cands.append(c)
    level = [0] * len(paths)
    while True:
        labels = [c[min(lv, len(c) - 1)] for c, lv in zip(cands, level)]
        groups = {}
        for i, lab in enumerate(labels):
            groups.setdefault(lab, []).append(i)
        clash = [ix for ix in groups.values() if len(ix) > 1]
        if not clash or all(all(level[i] >= len(cands[i]) - 1 for i in ix) for ix in clash):
            return labels
        for ix in clash:
            for i in ix:
                level[i] += 1


def run_name(path):
    return run_labels([path])[0]


def write_csv(runs, path):
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, FIELDS)
        w.writeheader()
        for name, run in runs.items():
            for r in (run.epochs if isinstance(run, Run) else run):
                w.writerow(dict({k: ("" if r.get(k) is None else r.get(k)) for k in FIELDS}, run=name))


def _x(b):
    """Fractional epoch of a batch record (its epoch ends at ``epoch``; warm-up ends at 0)."""
    n = b.get("iters") or None
    frac = min(b["batch"] / n, 1.0) if n else 1.0
    if b["phase"] == "warmup":
        return -1.0 + frac
    return b["epoch"] - 1 + frac


def lr_points(run):
    """(x, lr) of every logged batch and every epoch end, in order (x in epochs)."""
    pts = [(_x(b), b["lr"]) for b in run.batches if b.get("lr") is not None]
    pts += [(float(r["epoch"]), r["lr"]) for r in run.epochs if r.get("lr") is not None]
    return sorted(pts, key=lambda t: t[0])


def plot(runs, path, error=False, title=None):
    """Write the PNG; returns what was drawn: [dict(run, curve, x, y, marker)] (curve: train, val, lr)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (ax, axlr) = plt.subplots(1, 2, figsize=(12, 4.5), gridspec_kw={"width_ratios": [2, 1]})
    tr = (lambda a: 1 - a) if error else (lambda a: a)
    drawn = []

    def draw(axis, name, curve, pts, color, label, **kw):
        if not pts:
            return
        xs, ys = zip(*pts)
        if len(pts) == 1:  # a run of one epoch: a point (a line through one point is invisible)
            kw.update(linestyle="none", marker="o", markersize=7)
        else:
            kw.setdefault("marker", "o" if len(pts) <= 30 else None)
            kw.setdefault("markersize", 3)
        axis.plot(xs, ys, color=color, label=label, **kw)
        drawn.append(dict(run=name, curve=curve, x=list(xs), y=list(ys), marker=kw.get("marker")))

    for i, (name, run) in enumerate(runs.items()):
        c = "C%d" % (i % 10)
        rows = run.epochs
        for key, style, lab in (("train_acc", "--", "train"), ("val_acc", "-", "val")):
            draw(ax, name, lab, [(r["epoch"], tr(r[key])) for r in rows if r.get(key) is not None], c,
                 "%s %s" % (name, lab), linestyle=style)
        # the LR logged at a batch was in use since the previous point (steps-pre), so an epoch-boundary
        # decay shows at the boundary; the original scheduler logs only changes, valid from there on
        draw(axlr, name, "lr", lr_points(run), c, name,
             drawstyle="steps-post" if run.source == "original" else "steps-pre")
    ax.set_xlabel("epoch")
    ax.set_ylabel("error" if error else "accuracy")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    lrs = [y for d in drawn if d["curve"] == "lr" for y in d["y"]]
    if lrs and min(lrs) > 0 and max(lrs) / min(lrs) >= 20:  # several decays: a log axis keeps them apart
        axlr.set_yscale("log")
    axlr.set_xlabel("epoch (LR at every logged batch and epoch end)")
    axlr.set_ylabel("learning rate")
    axlr.grid(alpha=0.3)
    if axlr.get_legend_handles_labels()[0]:
        axlr.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return drawn


def summary_line(name, run, width=32):
    rows = [r for r in run.epochs if r["phase"] == "train"]
    vals = [r["val_acc"] for r in rows if r.get("val_acc") is not None]
    return "%-*s epochs %3d  final val acc %s  best %s  (%s)" % (
        width, name, len(rows), "%.4f" % vals[-1] if vals else "-", "%.4f" % max(vals) if vals else "-", run.source)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__[__doc__.find("\n\n"):],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("logs", nargs="+", help="training log files (or *-metrics.jsonl)")
    ap.add_argument("--csv", help="write all runs' per-epoch rows here")
    ap.add_argument("--png", help="write the curves here (accuracy or error, and LR, against epochs)")
    ap.add_argument("--error", action="store_true", help="plot error (1 - accuracy) instead of accuracy")
    ap.add_argument("--title", help="figure title")
    args = ap.parse_args(argv)
    paths, seen = [], set()
    for p in args.logs:
        if not os.path.isfile(p):
            print("error: no such log file: %s" % p, file=sys.stderr)
            return 2
        if os.path.realpath(p) in seen:
            print("warning: %s given twice; read once" % p, file=sys.stderr)
            continue
        seen.add(os.path.realpath(p))
        paths.append(p)
    runs = OrderedDict()
    for name, p in zip(run_labels(paths), paths):
        run = read_run(p)
        if not run.epochs:
            print("warning: no epoch records found in %s (is it a training log?)" % p, file=sys.stderr)
        runs[name] = run
    width = max(32, max(len(n) for n in runs))
    for name, run in runs.items():
        print(summary_line(name, run, width))
    if args.csv:
        write_csv(runs, args.csv)
        print("wrote", args.csv)
    if args.png:
        plot(runs, args.png, error=args.error, title=args.title)
        print("wrote", args.png)
    return 0


if __name__ == "__main__":
    sys.exit(main())
