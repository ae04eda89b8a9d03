"""tools/parse_log.py on synthetic logs: this project's format (log lines and metrics.jsonl), the original
scripts' Module.fit format, unique labels for logs that share a file name, resumed runs, the PNG and CSV."""
import csv
import importlib.util
import json
import os
import struct

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_spec = importlib.util.spec_from_file_location("parse_log", os.path.join(ROOT, "tools", "parse_log.py"))
pl = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(pl)

TS = "2026-01-01 10:00:00,000 "


def batch(e, i, n, u, lr, loss=2.0, top1=0.1, speed=100.0, warm=False):
    return TS + "%sEpoch[%d] Batch[%d/%d] Update[%d] speed=%.1f img/s loss=%.4f top1=%.4f lr=%.6g" % (
        "Warmup " if warm else "", e, i, n, u, speed, loss, top1, lr)


def epoch(e, t, lr, val=None, top5=None, top1=0.2, loss=1.5, speed=120.0, time_s=9.5, warm=False, best=None):
    s = TS + "%s[Epoch %d/%d] train: loss=%.4f top1=%.4f lr=%.6g speed=%.1f img/s time=%.1f s" % (
        "Warmup " if warm else "", e, t, loss, top1, lr, speed, time_s)
    if val is not None:
        s += " | val: top1=%.4f" % val
        if top5 is not None:
            s += " top5=%.4f" % top5
        s += " err-top1=%.4f" % (1 - val)
        if top5 is not None:
            s += " err-top5=%.4f" % (1 - top5)
        s += " | best top1=%.4f (epoch %d)" % (best or val, e)
    return s


def write(path, lines):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return str(path)


def fbn_log(path, ramp=True):
    """2 epochs of 20 batches, logged every 5, a slow-start ramp over epoch 1, a --warmup epoch first."""
    lines = [TS + "Start: python cifar/train_cifar.py --warmup",
             TS + "Warmup training epochs 1..1, 20 iterations per epoch, global batch 8",
             batch(1, 10, 20, 10, 0.001, warm=True), batch(1, 20, 20, 20, 0.001, warm=True),
             epoch(1, 1, 0.001, val=0.15, top5=0.55, warm=True),
             TS + "training epochs 1..2, 20 iterations per epoch, global batch 8"]
    for i in (5, 10, 15, 20):
        lines.append(batch(1, i, 20, i, 0.001 + 0.009 * (i - 1) / 20 if ramp else 0.01))
    lines.append(epoch(1, 2, 0.001 + 0.009 * 19 / 20 if ramp else 0.01, val=0.30, top5=0.70))
    for i in (5, 10, 15, 20):
        lines.append(batch(2, i, 20, 20 + i, 0.01))
    lines.append(epoch(2, 2, 0.01, val=0.45, top5=0.80))
    return write(path, lines)


def test_project_log_lines(tmp_path):
    run = pl.read_run(fbn_log(str(tmp_path / "log" / "fbn.log")))
    assert run.source == "log"
    rows = run.epochs
    assert [(r["phase"], r["epoch"]) for r in rows] == [("warmup", 0), ("train", 1), ("train", 2)]
    r1 = rows[1]
    assert (r1["val_acc"], r1["val_topk"], r1["k"], r1["train_acc"], r1["train_loss"], r1["time"]) == (
        0.30, 0.70, 5, 0.2, 1.5, 9.5)
    # the LR panel: every logged batch, at its fraction of the epoch, plus the epoch ends
    pts = pl.lr_points(run)
    xs = [x for x, _ in pts]
    assert xs == sorted(xs) and xs[:2] == [-0.5, 0.0]  # the warm-up epoch lies in (-1, 0]
    ramp = [(x, lr) for x, lr in pts if 0 < x <= 1]
    assert [x for x, _ in ramp] == [0.25, 0.5, 0.75, 1.0, 1.0]
    assert len({round(lr, 9) for _, lr in ramp}) == 4  # four different rates inside epoch 1
    assert ramp[0][1] == pytest.approx(0.001 + 0.009 * 4 / 20, rel=1e-5)
    # the summary ignores the warm-up epoch
    assert "epochs   2  final val acc 0.4500  best 0.4500" in pl.summary_line("x", run)


def test_metrics_jsonl_preferred_and_found_by_prefix(tmp_path):
    """AFF-style layout: the log is train.log, the prefix (from the config line) names the jsonl."""
    d = tmp_path / "run1"
    log = write(str(d / "train.log"), [
        TS + 'config: {"prefix": "cifar_aff", "epochs": 2}',
        batch(1, 10, 10, 10, 0.1), epoch(1, 2, 0.1, val=0.3), epoch(2, 2, 0.1, val=0.4)])
    recs = [{"kind": "batch", "epoch": 1, "batch": 5, "update": 5, "lr": 0.05, "loss": 2.1, "top1": 0.11, "speed": 9.0},
            {"kind": "epoch", "epoch": 1, "train_loss": 2.0, "train_top1": 0.123456789, "lr": 0.1, "update": 10,
             "speed": 10.0, "time": 1.25, "val_top1": 0.31234567, "val_topk": None, "k": 1},
            {"kind": "batch", "epoch": 2, "batch": 5, "update": 15, "lr": 0.1, "loss": 1.9, "top1": 0.2, "speed": 9.0},
            {"kind": "epoch", "epoch": 2, "train_loss": 1.8, "train_top1": 0.2, "lr": 0.1, "update": 20,
             "speed": 10.0, "time": 1.0, "val_top1": 0.41234567, "val_topk": 0.9, "k": 3}]
    with open(str(d / "cifar_aff-metrics.jsonl"), "w") as f:
        f.write("".join(json.dumps(r) + "\n" for r in recs) + '{"kind": "epo')  # a line cut short by a crash
    run = pl.read_run(log)
    assert run.source == "metrics.jsonl"
    rows = run.epochs
    assert [r["val_acc"] for r in rows] == [0.31234567, 0.41234567]  # full precision, not the log's 4 digits
    assert "val_topk" not in rows[0] and (rows[1]["val_topk"], rows[1]["k"]) == (0.9, 3)
    # batches per epoch from the log's Batch[i/N] lines: batch 5 of 10 is half an epoch
    assert [x for x, _ in pl.lr_points(run)] == [0.5, 1.0, 1.5, 2.0]
    # the jsonl given directly, no log: batches per epoch from the epochs' update counts
    direct = pl.read_run(str(d / "cifar_aff-metrics.jsonl"))
    assert [x for x, _ in pl.lr_points(direct)] == [0.5, 1.0, 1.5, 2.0]
    # without the jsonl the log lines are read
    os.remove(str(d / "cifar_aff-metrics.jsonl"))
    assert [r["val_acc"] for r in pl.read_run(log).epochs] == [0.3, 0.4]


def test_warmup_metrics_file(tmp_path):
    d = tmp_path / "log"
    log = fbn_log(str(d / "p.log"))
    warm = [{"kind": "batch", "epoch": 1, "batch": 10, "update": 10, "lr": 0.001, "loss": 2.2, "top1": 0.1, "speed": 5},
            {"kind": "epoch", "epoch": 1, "train_loss": 2.2, "train_top1": 0.1, "lr": 0.001, "update": 20, "speed": 5,
             "time": 3.0, "val_top1": 0.125, "val_topk": 0.5, "k": 5}]
    main = [{"kind": "epoch", "epoch": 1, "train_loss": 2.0, "train_top1": 0.2, "lr": 0.01, "update": 20,
             "speed": 5, "time": 3.0, "val_top1": 0.25, "val_topk": 0.6, "k": 5}]
    for name, recs in (("p-warm-metrics.jsonl", warm), ("p-metrics.jsonl", main)):
        with open(str(d / name), "w") as f:
            f.write("".join(json.dumps(r) + "\n" for r in recs))
    rows = pl.read_run(log).epochs
    assert [(r["phase"], r["epoch"], r["val_acc"]) for r in rows] == [("warmup", 0, 0.125), ("train", 1, 0.25)]


ORIGINAL = [
    "2017-06-01 10:00:00,000 Node[0] Start training with [gpu(0), gpu(1)]",
    "2017-06-01 10:00:10,000 Node[0] Epoch[0] Batch [20]\tSpeed: 1021.50 samples/sec\tTrain-accuracy=0.120000",
    "2017-06-01 10:00:20,000 Node[0] Epoch[0] Batch [40]\tSpeed: 1000.00 samples/sec\tTrain-accuracy=0.150000",
    "2017-06-01 10:00:25,000 Node[0] Epoch[0] Batch [60]\tSpeed: 990.00 samples/sec\tTrain-accuracy=0.150000",
    "2017-06-01 10:00:30,000 Node[0] Epoch[0] Train-accuracy=0.160000",
    "2017-06-01 10:00:30,000 Node[0] Epoch[0] Time cost=30.125",
    '2017-06-01 10:00:31,000 Node[0] Saved checkpoint to "model/cifar100_x-0001.params"',
    "2017-06-01 10:00:35,000 Node[0] Epoch[0] Validation-accuracy=0.200000",
    "2017-06-01 10:00:35,000 Node[0] Epoch[0] Validation-top_k_accuracy_5=0.600000",
    "2017-06-01 10:00:36,000 Node[0] Update[61]: Change learning rate to 1.00000e-02",
    "2017-06-01 10:00:40,000 Node[0] Epoch[1] Batch [0-20]\tSpeed: 800.00 samples/sec\taccuracy=0.300000",
    "2017-06-01 10:00:50,000 Node[0] Epoch[1] Train-accuracy=0.350000",
    "2017-06-01 10:00:50,000 Node[0] Epoch[1] Time cost=20.000",
    "2017-06-01 10:00:55,000 Node[0] Epoch[1] Validation-accuracy=0.400000",
]


def test_original_module_fit_format(tmp_path):
    run = pl.read_run(write(str(tmp_path / "orig.log"), ORIGINAL))
    assert run.source == "original"
    rows = run.epochs
    assert [r["epoch"] for r in rows] == [1, 2]  # 0-based in the log
    assert (rows[0]["train_acc"], rows[0]["val_acc"], rows[0]["val_topk"], rows[0]["time"]) == (0.16, 0.2, 0.6, 30.125)
    assert rows[0]["speed"] == 1000.0  # median Speedometer reading of the epoch
    assert (rows[1]["val_acc"], rows[1]["speed"]) == (0.4, 800.0) and "val_topk" not in rows[1]
    assert pl.lr_points(run) == [(1.0, 0.01)]  # the scheduler's change, at the end of epoch 1


def test_resume_and_restart_replace_what_they_reach_back_to(tmp_path):
    lines = [batch(1, 10, 20, 10, 0.1), batch(1, 20, 20, 20, 0.1), epoch(1, 3, 0.1, val=0.3),
             batch(2, 10, 20, 30, 0.1, loss=9.0),  # interrupted in epoch 2
             TS + "Start: again", batch(2, 10, 20, 30, 0.1, loss=1.0), batch(2, 20, 20, 40, 0.1),
             epoch(2, 3, 0.1, val=0.4), epoch(3, 3, 0.1, val=0.5)]
    run = pl.read_run(write(str(tmp_path / "r.log"), lines))
    assert [r["val_acc"] for r in run.epochs] == [0.3, 0.4, 0.5]
    assert [b["loss"] for b in run.batches if b["epoch"] == 2] == [1.0, 2.0]
    # a fresh start into the same log (--no-auto-resume) replaces the whole earlier run
    lines += [TS + "Start: fresh", batch(1, 10, 20, 10, 0.2), batch(1, 20, 20, 20, 0.2), epoch(1, 1, 0.2, val=0.1)]
    run = pl.read_run(write(str(tmp_path / "r.log"), lines))
    assert [(r["epoch"], r["val_acc"]) for r in run.epochs] == [(1, 0.1)]


def test_labels_unique_for_shared_file_names():
    paths = ["runs/aff/a/train.log", "runs/aff/b/train.log", "runs/x/a/train.log", "log/demo.log"]
    labels = pl.run_labels(paths)
    assert len(set(labels)) == 4
    assert labels == ["aff/a/train", "b/train", "x/a/train", "demo"]
    assert pl.run_labels(["log/a.log", "old/a.txt"]) == ["log/a", "old/a"]
    assert pl.run_labels(["run/fbn.log"]) == ["fbn"]


def _png_size(path):
    with open(path, "rb") as f:
        head = f.read(24)
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", head[16:24])


def test_main_two_runs_one_file_name_csv_png(tmp_path, capsys):
    a = fbn_log(str(tmp_path / "runs" / "a" / "train.log"))
    b = write(str(tmp_path / "runs" / "b" / "train.log"), [batch(1, 10, 20, 10, 0.1), epoch(1, 1, 0.1, val=0.25)])
    orig = write(str(tmp_path / "orig" / "train.log"), ORIGINAL)
    out_csv, out_png = str(tmp_path / "c.csv"), str(tmp_path / "c.png")
    assert pl.main([a, b, orig, "--csv", out_csv, "--png", out_png, "--error", "--title", "t"]) == 0
    text = capsys.readouterr().out
    assert "a/train " in text and "b/train " in text and "orig/train " in text
    with open(out_csv) as f:
        rows = list(csv.DictReader(f))
    assert [(r["run"], r["phase"], r["epoch"]) for r in rows] == [
        ("a/train", "warmup", "0"), ("a/train", "train", "1"), ("a/train", "train", "2"),
        ("b/train", "train", "1"), ("orig/train", "train", "1"), ("orig/train", "train", "2")]
    assert float(rows[2]["val_acc"]) == 0.45 and rows[2]["k"] == "5" and rows[4]["source"] == "original"
    w, h = _png_size(out_png)
    assert w > 500 and h > 200
    # what is drawn: the one-epoch run as a point, error = 1 - accuracy, the ramp per logged batch
    drawn = pl.plot({n: pl.read_run(p) for n, p in (("a", a), ("b", b))}, str(tmp_path / "d.png"), error=True)
    by = {(d["run"], d["curve"]): d for d in drawn}
    assert by[("b", "val")]["x"] == [1] and by[("b", "val")]["marker"] == "o"
    assert by[("b", "val")]["y"] == [pytest.approx(0.75)]
    assert by[("a", "val")]["x"] == [0, 1, 2] and by[("a", "val")]["y"] == pytest.approx([0.85, 0.7, 0.55])
    assert len(by[("a", "lr")]["x"]) == 2 + 1 + 4 + 1 + 4 + 1
    assert pl.main([a, a]) == 0 and "given twice" in capsys.readouterr().err
    assert pl.main([str(tmp_path / "missing.log")]) == 2
