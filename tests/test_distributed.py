"""dist_sync training through tools/launch.py on 127.0.0.1 (issue G): one scheduler, one server and
two workers train a tiny network for a few steps; both workers must end with identical
parameters, equal (float tolerance) to one process trained on the union of the shards.
Gluon (gluon.Trainer: the AFF / bL-Net path) and Module API with an FB layer (the FBN path);
the worker is tests/dist_worker.py. The LR schedule runs on the server (update_on_kvstore) and
must count one update per synchronous step."""
import os
import subprocess
import sys
import time

import numpy as np
import pytest

import mxrepro  # noqa: F401  (threads and FB operator before mxnet)

import dist_worker as dw

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAUNCH = os.path.join(ROOT, "tools", "launch.py")
WORKER = os.path.join(ROOT, "tests", "dist_worker.py")
STEPS, BATCH, WORKERS = 3, 4, 2


def run_job(family, out_dir, timeout=150):
    cmd = [sys.executable, LAUNCH, "-n", str(WORKERS), "-s", "1", "--loopback", "--timeout", "120",
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
