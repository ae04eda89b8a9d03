"""The same guarantees for every family, through the real training scripts on the embedded digits:
an FBN symbol network (cifar/train_cifar.py), an AFF model (cifar/train_aff_cifar.py) and a bL-Net model
(imagenet/train_blnet.py).

* kill -9 in the middle of epoch 3, then the same command: the run resumes after epoch 2 and ends with
  the same parameters, learning rates and best score as an uninterrupted run (same LR and optimizer
  state: plain SGD, one decoding thread, so both runs are deterministic);
* every check before the first step: a one-line message naming the flag, exit status 2, nothing written;
* a diverging run (``--lr 1e6 --resume-changed`` on a resumed run): stops naming the epoch and iteration, exit status 1,
  ``latest`` and ``best`` stay the last good ones;
* SIGINT / SIGTERM: "interrupted at epoch E, iteration I; run the same command to resume", exit status
  130 / 143, and the last complete epoch is an intact checkpoint.
"""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import mxnet as mx
import numpy as np
import pytest

from mxrepro.engine import DataError, UsageError
from mxrepro.engine.checkpoint import Checkpointer
from mxrepro.recipes import aff, blnet, fbn

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Family:
    def __init__(self, name, script, argv, out_flag, epochs_flag, ckpt, prefix, main):
        self.name, self.script, self.argv, self.out_flag = name, script, argv, out_flag
        self.epochs_flag, self.ckpt, self.prefix, self.main = epochs_flag, ckpt, prefix, main

    def args(self, data, out, epochs=4, extra=()):
        return [a.format(data=data) for a in self.argv] + [self.out_flag, str(out), self.epochs_flag, str(epochs)] + \
            list(extra)

    def cmd(self, data, out, **kw):
        return [sys.executable, os.path.join(ROOT, self.script)] + self.args(data, out, **kw)

    def checkpoints(self, out):
        return Checkpointer(os.path.join(str(out), self.ckpt), self.prefix, None)


FAMILIES = {
    "fbn": Family("fbn", "cifar/train_cifar.py",
                  ["--gpus", "", "--data-dir", "{data}", "--network", "resnet-small-fmconv", "--res-module-num", "1",
                   "--num-classes", "10", "--batch-size", "32", "--lr", "0.02", "--lr-step", "3",
                   "--fmconv-slowstart", "1", "--frequent", "1", "--model-prefix", "g", "--data-nthreads", "1"],
                  "--output-dir", "--num-epoches", "model", "g", lambda argv: fbn.main("cifar", argv)),
    "aff": Family("aff", "cifar/train_aff_cifar.py",
                  ["--dataset", "digits", "--data-dir", "{data}", "--model", "resnet", "--askc-type", "ASKCFuse",
                   "--blocks", "1", "--channel-times", "1", "--gpus", "", "--batch-size", "32", "--lr", "0.05",
                   "--lr-decay-epoch", "3", "--optimizer", "sgd", "-j", "0", "--save-frequency", "2",
                   "--log-interval", "1"],
                  "--save-dir", "--num-epochs", "", "digits-aff_cifar_resnet-8-c1-s1", aff.main_cifar),
    "blnet": Family("blnet", "imagenet/train_blnet.py",
                    ["{data}", "-a", "bl_resnet50", "--alpha", "4", "--input-size", "32", "--batch-size", "32",
                     "-j", "1", "--optimizer", "sgd", "--lr", "0.05", "--save-frequency", "0", "--log-interval", "1",
                     "--max-batches", "4"],
                    "--save-dir", "--epochs", "", "bl_resnet50", blnet.main),
}


def _run(cmd, timeout=900, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=str(kw.pop("cwd", ROOT)),
                          env=dict(os.environ, PYTHONUNBUFFERED="1"), **kw)


def _until(cmd, marker, sig, timeout=600):
    """Start ``cmd``, send ``sig`` once a stdout line contains ``marker``; (exit status, stdout, stderr)."""
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                         env=dict(os.environ, PYTHONUNBUFFERED="1"))
    out, t0 = [], time.time()
    for line in p.stdout:
        out.append(line)
        if marker in line:
            p.send_signal(sig)
            break
        if time.time() - t0 > timeout:
            p.kill()
            break
    rest, err = p.communicate(timeout=timeout)
    return p.returncode, "".join(out) + rest, err


def _params(path):
    return {k: v.asnumpy() for k, v in mx.nd.load(path).items()}


def _batches(out, fam):
    """{update: lr} of the per-batch records in the run's metrics file."""
    log_dir = os.path.join(str(out), "log") if fam.name == "fbn" else str(out)
    recs = [json.loads(l) for l in open(os.path.join(log_dir, fam.prefix + "-metrics.jsonl"))]
    return {r["update"]: r["lr"] for r in recs if r["kind"] == "batch"}


@pytest.mark.slow  # the default suite kills at a checkpoint file step and at a random moment instead
@pytest.mark.parametrize("name", sorted(FAMILIES))          # (tests/test_guarantees_ckpt.py), same end state
def test_kill_and_resume_equals_an_uninterrupted_run(name, digits_small, tmp_path):
    fam = FAMILIES[name]
    ref, cut = tmp_path / "ref", tmp_path / "cut"
    r = _run(fam.cmd(digits_small, ref))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    rc, out, err = _until(fam.cmd(digits_small, cut), "Epoch[3] Batch[2/", signal.SIGKILL)
    assert rc == -signal.SIGKILL, out[-2000:] + err[-2000:]
    meta = fam.checkpoints(cut).read("latest")
    assert meta["epoch"] == 2, meta
    r = _run(fam.cmd(digits_small, cut))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "2 epoch(s) done" in r.stdout and "training epochs 3..4" in r.stdout, r.stdout[-3000:]
    # same parameters at the end, same learning rate at every update, same best
    a = fam.checkpoints(ref)
    b = fam.checkpoints(cut)
    pa, pb = _params(a.path("latest", ".params")), _params(b.path("latest", ".params"))
    assert sorted(pa) == sorted(pb)
    for k in pa:
        np.testing.assert_allclose(pb[k], pa[k], rtol=1e-5, atol=1e-6, err_msg=k)
    lr_ref, lr_cut = _batches(ref, fam), _batches(cut, fam)
    assert lr_ref == {u: lr_cut[u] for u in lr_ref}, "learning rates differ after the resume"
    assert a.read("best")["best"] == b.read("best")["best"]
    hist = a.read("latest")["history"]
    assert a.read("best")["best"]["top1"] == max(h["val_top1"] for h in hist)
    assert not [f for f in os.listdir(b.dir) if f.startswith(".tmp")]


CHECKS = {  # family -> [(extra argv, fragment of the message)]
    "fbn": [(["--lr", "-1"], "--lr"), (["--lr", "0"], "--lr"), (["--batch-size", "0"], "--batch-size"),
            (["--fmconv-slowstart", "4"], "--fmconv-slowstart"), (["--fmconv-factor", "0"], "--fmconv-factor"),
            (["--num-classes", "5"], "--num-classes 5 is too small"), (["--res-module-num", "0"], "--res-module-num")],
    "aff": [(["--lr", "-1"], "--lr"), (["--batch-size", "0"], "--batch-size"),
            (["--warmup-epochs", "4"], "--warmup-epochs"), (["--r", "0"], "--r"), (["--blocks", "0"], "--blocks"),
            (["--num-classes", "5"], "--num-classes 5 is too small")],
    "blnet": [(["--lr", "-1"], "--lr"), (["--batch-size", "0"], "--batch-size"), (["--alpha", "0"], "--alpha"),
              (["--num-classes", "5"], "--num-classes 5 is too small"), (["-a", "bl_resnet7"], "--arch")],
}


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_checks_before_the_first_step_write_nothing(name, digits_small, tmp_path):
    fam = FAMILIES[name]
    out = tmp_path / "out"
    cases = CHECKS[name] + [([fam.epochs_flag, "0"], fam.epochs_flag)]
    for extra, fragment in cases:
        with pytest.raises((UsageError, DataError)) as e:
            fam.main(fam.args(digits_small, out) + extra)
        msg = str(e.value)
        assert fragment in msg and "\n" not in msg, (extra, msg)
        assert not out.exists(), (extra, "something was written")
    with pytest.raises(UsageError, match="not writable"):
        fam.main(fam.args(digits_small, "/proc/mxrepro-test/out"))
    if name == "fbn":  # the ImageNet FBN script: --depth outside the network's set
        with pytest.raises(UsageError, match="--depth 7"):
            fbn.main("imagenet", ["--network", "resnet", "--depth", "7", "--output-dir", str(out)])
    # the exit status and the one-line message of the script itself
    r = _run(fam.cmd(digits_small, out, extra=["--lr", "-1"]))
    assert r.returncode == 2 and r.stderr.strip().startswith("error: --lr") and len(r.stderr.strip().splitlines()) == 1, \
        r.stderr[-2000:]
    assert not out.exists()


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_interrupt_and_divergence_keep_the_last_good_checkpoint(name, digits_small, tmp_path):
    fam = FAMILIES[name]
    out = tmp_path / "run"
    sig = signal.SIGTERM if name == "blnet" else signal.SIGINT
    rc, text, err = _until(fam.cmd(digits_small, out, epochs=2), "Epoch[2] Batch[2/", sig)
    assert rc == 128 + sig, text[-2000:] + err[-2000:]
    # the signal lands in iteration 2 or, when the process is already past the logged line, in iteration 3
    assert re.search(r"interrupted at epoch 2, iteration [23]; run the same command to resume", text), text[-2000:]
    ck = fam.checkpoints(out)
    assert ck.read("latest")["epoch"] == 1 and ck.read("best") is not None
    r = _run(fam.cmd(digits_small, out, epochs=2))   # resumable
    assert r.returncode == 0 and "1 epoch(s) done" in r.stdout, r.stdout[-2000:] + r.stderr[-2000:]
    best = open(ck.path("best", ".json")).read()
    latest_params = open(ck.path("latest", ".params"), "rb").read()
    r = _run(fam.cmd(digits_small, out, epochs=3, extra=["--lr", "1e6", "--resume-changed"]))
    assert r.returncode == 1, r.stdout[-2000:] + r.stderr[-2000:]
    assert "at epoch 3, iteration" in r.stderr and "the last good checkpoint is kept" in r.stderr, r.stderr[-2000:]
    assert ck.read("latest")["epoch"] == 2
    assert open(ck.path("latest", ".params"), "rb").read() == latest_params
    assert open(ck.path("best", ".json")).read() == best
