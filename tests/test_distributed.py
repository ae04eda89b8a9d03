"""dist_sync training through tools/launch.py on 127.0.0.1: one scheduler, one server and
two workers train a tiny network for a few steps; both workers must end with identical
parameters, equal (float tolerance) to one process trained on the union of the shards.
Gluon (gluon.Trainer: the AFF / bL-Net path) and Module API with an FB layer (the FBN path);
the worker is tests/dist_worker.py. The LR schedule runs on the server (update_on_kvstore) and
must count one update per synchronous step."""
import os
import re
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import write_toy_rec

import mxrepro  # noqa: F401  (threads and FB operator before mxnet)

import dist_worker as dw

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAUNCH = os.path.join(ROOT, "tools", "launch.py")
WORKER = os.path.join(ROOT, "tests", "dist_worker.py")
STEPS, BATCH, WORKERS = 3, 4, 2


def run_job(family, out_dir, timeout=360):
    cmd = [sys.executable, LAUNCH, "-n", str(WORKERS), "-s", "1", "--loopback", "--timeout", "300",
           sys.executable, WORKER, "--family", family, "--steps", str(STEPS), "--batch", str(BATCH),
           "--out-dir", str(out_dir)]
    t0 = time.time()
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=timeout, cwd=ROOT)
    assert r.returncode == 0, "distributed job failed (%.0f s):\n%s\n%s" % (time.time() - t0, r.stdout[-4000:],
                                                                            r.stderr[-4000:])
    return r


@pytest.mark.parametrize("family", ["gluon", "module"])
def test_dist_sync_equals_single_process(family, tmp_path):
    run_job(family, tmp_path)
    dumps = [np.load(str(tmp_path / ("%s-task%d.npz" % (family, t)))) for t in range(WORKERS)]
    assert sorted(int(d["__rank__"]) for d in dumps) == [0, 1]          # both ranks took part
    assert all(int(d["__num_workers__"]) == WORKERS for d in dumps)
    names = sorted(n for n in dumps[0].files if not n.startswith("__"))
    assert len(names) >= 4

    data = dw.make_data(STEPS * WORKERS * BATCH)
    ref, init = dw.TRAIN[family](None, 0, 1, STEPS, WORKERS * BATCH, data)   # one process, combined batches
    alone, _ = dw.TRAIN[family](None, 0, 1, STEPS, BATCH, data)              # as if the kvstore did nothing
    early, _ = dw.TRAIN[family](None, 0, 1, STEPS, WORKERS * BATCH, data, lr_step=1)  # LR drop one step early
    assert sorted(ref) == names
    for n in names:
        a, b = dumps[0][n], dumps[1][n]
        # the workers pull the same server copy: bitwise identical
        assert np.array_equal(a, b), "%s differs between the workers (max %g)" % (n, np.abs(a - b).max())
        np.testing.assert_allclose(a, ref[n], rtol=1e-4, atol=2e-6, err_msg="%s vs single process" % n)
        # the check is meaningful: training moved the parameter, and a run on per-worker batches is far off
        assert np.abs(ref[n] - init[n]).max() > 1e-3, n
    # the comparison would notice wrong data or a schedule counted differently on the server
    for other in (alone, early):
        gap = max(np.abs(other[n] - ref[n]).max() for n in names)
        assert gap > 1e-4, gap


# --------------------------------------------------------------------------------------------------
# The project's training scripts through tools/launch.py (a few batches on a 4-class toy .rec set)
# --------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def toy_rec(tmp_path_factory):
    """64 training and 16 test 32x32 PNG records, 4 classes (conftest.write_toy_rec)."""
    d = tmp_path_factory.mktemp("toy_rec")
    rng = np.random.RandomState(0)
    write_toy_rec(d / "train.rec", 64, rng)
    write_toy_rec(d / "test.rec", 16, rng)
    return d


def launch_script(args, cwd, timeout_s):
    cmd = [sys.executable, LAUNCH, "-n", "2", "-s", "1", "--loopback", "--timeout", str(timeout_s),
           sys.executable] + args
    return subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=str(cwd),
                          timeout=timeout_s + 60)


def test_gluon_script_dist_sync(toy_rec, tmp_path):
    """cifar/train_aff_cifar.py (the engine's Gluon step) with --kv-store dist_sync: each of the
    two workers runs 64 / 2 / 8 = 4 iterations per epoch on its shard, the servers load the
    script's gluoncv LR schedule, and the job ends cleanly."""
    r = launch_script([os.path.join(ROOT, "cifar", "train_aff_cifar.py"), "--dataset", "toy", "--data-dir",
                       str(toy_rec), "--use-rec", "--num-classes", "4", "--model", "resnet", "--blocks", "1",
                       "--channel-times", "1", "--batch-size", "8", "--num-epochs", "2", "--log-interval", "1",
                       "--lr", "0.05", "--kv-store", "dist_sync", "--save-dir", "", "-j", "0", "--seed", "1"],
                      tmp_path, 400)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    assert "Exception ignored" not in r.stdout
    for w in (0, 1):
        lines = [l for l in r.stdout.splitlines() if l.startswith("[worker %d" % w)]
        batches = re.findall(r"Epoch\[(\d+)\] Batch\[(\d+)/(\d+)\].*loss=([0-9.naif]+)", "\n".join(lines))
        assert [(int(e), int(b)) for e, b, _, _ in batches] == [(e, b) for e in (1, 2) for b in (1, 2, 3, 4)], lines
        assert all(n == "4" for _, _, n, _ in batches)
        assert all(float(x) < 10 for _, _, _, x in batches), batches    # finite, no blow-up
    ranks = set(re.findall(r"kvstore rank (\d) of 2", r.stdout))
    assert ranks == {"0", "1"}
    assert "global batch 16 = 8 per device x 1 device x 2 workers" in r.stdout


def test_fbn_script_dist_sync(toy_rec, tmp_path):
    """cifar/train_cifar.py (Module API) with --kv-store dist_sync: the epoch is 64 / 2 workers / 8 = 4
    updates on every worker, the LR schedule counts them per worker (--lr-step 1: 0.05 for updates
    1-4, 0.005 for 5-8), rank 0 writes the checkpoints (with the optimizer state)."""
    r = launch_script([os.path.join(ROOT, "cifar", "train_cifar.py"), "--gpus", "", "--data-dir", str(toy_rec),
                       "--network", "resnet-small", "--res-module-num", "1", "--num-classes", "4",
                       "--batch-size", "8", "--num-epoches", "2", "--lr", "0.05", "--lr-step", "1",
                       "--frequent", "1", "--model-prefix", "toy", "--kv-store", "dist_sync", "--seed", "1"],
                      tmp_path, 400)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    assert "Exception ignored" not in r.stdout
    ranks = set()
    for log in ("toy.log", "toy-rank1.log"):
        text = (tmp_path / "log" / log).read_text()
        assert "4 iterations per epoch, global batch 16 = 8 per device x 1 device x 2 workers" in text, text[-2000:]
        ranks |= set(re.findall(r"kvstore dist_sync: rank (\d) of 2", text))
        lrs = [(int(u), float(lr)) for u, lr in re.findall(r"Update\[(\d+)\].*? lr=([0-9.e+-]+)", text)]
        assert lrs == [(u, 0.05 if u <= 4 else 0.005) for u in range(1, 9)], lrs
    assert ranks == {"0", "1"}
    files = sorted(os.listdir(tmp_path / "model"))
    assert files == sorted(["toy-%s.%s" % (t, e) for t in ("0001", "0002", "latest", "best")
                            for e in ("params", "states", "json")] + ["toy-symbol.json"]), files
