"""Crash-safe checkpoints through the real training scripts, for every family of tests/test_guarantees.py:

* (a) SIGKILL at a chosen file step of a checkpoint write (``MXREPRO_FAULT_CKPT=N``) and at random
  moments, each followed by the same command: the run ends with the parameters and the best of an
  uninterrupted run (2 kills per family here, at least 10 per family under ``-m slow``);
* (b) ``latest``, ``best`` and ``NNNN`` are independent files: a truncated ``latest`` leaves the others,
  and the re-run says so in one line and falls back; a restart from scratch never replaces a better best;
* (c) one run per checkpoint prefix: a second run is refused naming the first's pid; a dead run's lock
  is taken over;
* (d) a re-run with other settings is refused listing them (old -> new), and accepted with
  ``--resume-changed``; a checkpoint that records fewer settings still resumes.
"""
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from mxrepro.engine import UsageError
from mxrepro.engine.checkpoint import FAULT_ENV, RunLock, commit_steps
from test_guarantees import FAMILIES, ROOT, _params, _run

# smaller runs than tests/test_guarantees.py: 3 epochs of a few batches
EXTRA = {"fbn": ["--num-examples", "96"], "aff": ["--max-batches", "3"], "blnet": ["--max-batches", "2",
                                                                                    "--save-frequency", "2"]}
EPOCHS = 3


def _args(fam, data, out, epochs=EPOCHS, extra=()):
    return fam.args(data, out, epochs=epochs, extra=EXTRA[fam.name] + list(extra))


def _cmd(fam, data, out, **kw):
    return [sys.executable, os.path.join(ROOT, fam.script)] + _args(fam, data, out, **kw)


def _ckdir(fam, out):
    return os.path.join(str(out), fam.ckpt)


@pytest.fixture(scope="module")
def refs(digits_small, tmp_path_factory):
    """{family: (folder of an uninterrupted run, its duration in s)}, made on first use."""
    cache = {}

    def get(name):
        if name not in cache:
            fam = FAMILIES[name]
            out = tmp_path_factory.mktemp("ref-" + name)
            t = time.time()
            r = _run(_cmd(fam, digits_small, out))
            assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
            cache[name] = (out, time.time() - t)
        return cache[name]
    return get


def _total_steps(fam, ref):
    """File steps of all checkpoint writes of the reference run (tags per epoch from its history)."""
    hist = fam.checkpoints(ref).read("latest")["history"]
    freq = {"fbn": 1, "aff": 2, "blnet": 2}[fam.name]
    n = 0
    for h in hist:
        tags = 1 + (h["best_epoch"] == h["epoch"]) + (h["epoch"] % freq == 0 or h["epoch"] == EPOCHS)
        n += commit_steps(tags)
    return n


def _same_as_ref(fam, ref, cut):
    a, b = fam.checkpoints(ref), fam.checkpoints(cut)
    pa, pb = _params(a.path("latest", ".params")), _params(b.path("latest", ".params"))
    assert sorted(pa) == sorted(pb)
    for k in pa:
        np.testing.assert_allclose(pb[k], pa[k], rtol=1e-5, atol=1e-6, err_msg=k)
    assert a.read("best")["best"] == b.read("best")["best"]
    assert b.read("latest")["epoch"] == EPOCHS
    left = [f for f in os.listdir(b.dir) if f.startswith(".tmp") or f.endswith((".journal", ".lock"))]
    assert not left, left


def _kill_at_random(cmd, delay):
    """Start ``cmd``, SIGKILL it after ``delay`` s; its exit status (0 when it finished first)."""
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
    try:
        return p.wait(timeout=delay)
    except subprocess.TimeoutExpired:
        p.send_signal(signal.SIGKILL)
        return p.wait()


def _kills(name, digits_small, refs, tmp_path, plan, rng):
    """Run the family's command killed as ``plan`` says, each time the same command again, then to the end;
    ``plan`` items: "moment" (SIGKILL after a random part of the reference run's duration), "step" (at a
    random file step of all the run's checkpoint writes; only for a run from scratch), "first" (at a random
    file step of the run's first checkpoint write). Returns (kills, what happened)."""
    fam = FAMILIES[name]
    ref, dur = refs(name)
    out = tmp_path / "cut"
    cmd = _cmd(fam, digits_small, out)
    kills, log = 0, []
    for kind in plan:
        done = fam.checkpoints(out).read("latest")
        if kind == "moment":
            delay = rng.uniform(0.3, 0.9) * dur
            rc, what = _kill_at_random(cmd, delay), "after %.1f s" % delay
        else:
            # a run's first write has at least latest (+ best, always new in a run's first epoch)
            n = rng.randint(1, _total_steps(fam, ref) if kind == "step" else commit_steps(2 if done is None else 1))
            r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT,
                               env=dict(os.environ, PYTHONUNBUFFERED="1", **{FAULT_ENV: str(n)}))
            rc, what = r.returncode, "at step %d" % n
            if done is not None:  # a valid latest: the run continues it
                assert "start: from scratch" not in r.stdout, r.stdout[-3000:]
        log.append((kind, what, rc))
        assert rc in (0, -signal.SIGKILL), (log, rc)
        kills += rc == -signal.SIGKILL
    r = _run(cmd)
    assert r.returncode == 0, (log, r.stdout[-3000:] + r.stderr[-3000:])
    _same_as_ref(fam, ref, out)
    return kills, log


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_kills_at_file_steps_and_random_moments_end_like_an_uninterrupted_run(name, digits_small, refs, tmp_path):
    kills, log = _kills(name, digits_small, refs, tmp_path, ["first", "moment"], random.Random(name))
    assert log[0][2] == -signal.SIGKILL and kills >= 1, log


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_many_kills_end_like_an_uninterrupted_run(name, digits_small, refs, tmp_path):
    seed = int(os.environ.get("MXREPRO_KILL_SEED", "0"))
    got = 0
    for k in range(6):  # "step" and "first" kill unless the run is already complete: at least 10 kills
        kills, log = _kills(name, digits_small, refs, tmp_path / str(k), ["step", "first", "moment"],
                            random.Random("%s-%d-%d" % (name, seed, k)))
        got += kills
    assert got >= 10, got


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_tags_are_independent_and_a_broken_latest_falls_back(name, digits_small, refs, tmp_path, capsys):
    fam = FAMILIES[name]
    out = tmp_path / "run"
    shutil.copytree(str(refs(name)[0]), str(out))
    ck = fam.checkpoints(out)
    best, last = ck.read("best"), ck.read("%04d" % EPOCHS)
    with open(ck.path("latest", ".params"), "r+b") as f:
        f.truncate(100)
    assert ck.read("best") == best and ck.read("%04d" % EPOCHS) == last  # the others are intact
    assert fam.main(_args(fam, digits_small, out)) == 0
    text = capsys.readouterr().out
    lines = [l for l in text.splitlines() if "latest is incomplete" in l]
    assert len(lines) == 1 and "has 100 bytes" in lines[0], text[-3000:]
    assert lines[0].endswith("resuming from epoch %d (%s-%04d)" % (EPOCHS, fam.prefix, EPOCHS)), lines
    assert "nothing to do" in text


def test_a_restart_from_scratch_keeps_a_better_best(digits_small, refs, tmp_path, capsys):
    fam = FAMILIES["aff"]
    out = tmp_path / "run"
    shutil.copytree(str(refs("aff")[0]), str(out))
    ck = fam.checkpoints(out)
    meta = json.load(open(ck.path("best", ".json")))
    meta["best"]["top1"] = 0.99  # a best this short run cannot beat
    json.dump(meta, open(ck.path("best", ".json"), "w"))
    before = open(ck.path("best", ".params"), "rb").read()
    assert fam.main(_args(fam, digits_small, out, epochs=1, extra=["--no-resume"])) == 0
    assert "top-1 0.9900" in capsys.readouterr().out
    assert ck.read("best")["best"]["top1"] == 0.99 and open(ck.path("best", ".params"), "rb").read() == before
    assert ck.read("latest")["best"]["top1"] == 0.99


_HOLD = ("import sys, time; from mxrepro.engine.checkpoint import RunLock; RunLock(sys.argv[1], sys.argv[2])"
         ".acquire('holder command'); print('locked', flush=True); time.sleep(300)")


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_one_run_per_prefix_and_a_dead_runs_lock_is_taken_over(name, digits_small, refs, tmp_path, capsys):
    fam = FAMILIES[name]
    out = tmp_path / "run"
    shutil.copytree(str(refs(name)[0]), str(out))
    holder = subprocess.Popen([sys.executable, "-c", _HOLD, _ckdir(fam, out), fam.prefix], stdout=subprocess.PIPE,
                              text=True, cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT))
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(UsageError) as e:
            fam.main(_args(fam, digits_small, out))
        msg = str(e.value)
        assert "another run" in msg and "pid %d " % holder.pid in msg and "holder command" in msg and "\n" not in msg
        assert fam.main(_args(fam, digits_small, out, extra=["--dry-run"])) == 0
        assert "a run is active" in capsys.readouterr().out
    finally:
        holder.kill()
        holder.wait()
    assert fam.main(_args(fam, digits_small, out)) == 0  # the dead holder's file is left; its lock is not
    text = capsys.readouterr().out
    assert "taking over the lock" in text and "pid %d " % holder.pid in text, text[-2000:]
    assert not os.path.exists(RunLock(_ckdir(fam, out), fam.prefix).path)


def test_two_runs_at_once_script_exit_status(digits_small, tmp_path):
    """The tester's case: the same FBN command twice at once; the second stops with exit status 2."""
    fam = FAMILIES["fbn"]
    out = tmp_path / "run"
    first = subprocess.Popen(_cmd(fam, digits_small, out, epochs=2), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True, cwd=ROOT, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    try:
        for line in first.stdout:
            if "Epoch[1] Batch[1/" in line:
                first.send_signal(signal.SIGSTOP)  # paused while holding the lock, so the second surely meets it
                break
        r = _run(_cmd(fam, digits_small, out, epochs=2, extra=["--seed", "2"]))
    finally:
        first.send_signal(signal.SIGCONT)
        rest = first.communicate()[0]
    assert r.returncode == 2 and "pid %d " % first.pid in r.stderr and len(r.stderr.strip().splitlines()) == 1, \
        r.stderr[-2000:]
    assert first.returncode == 0, rest[-2000:]
    epochs = [json.loads(l)["epoch"] for l in open(os.path.join(str(out), "log", "g-metrics.jsonl"))
              if '"kind": "epoch"' in l]
    assert epochs == [1, 2]  # each epoch once: the second run wrote nothing


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_changed_settings_are_refused_then_accepted_with_resume_changed(name, digits_small, refs, tmp_path, capsys):
    fam = FAMILIES[name]
    out = tmp_path / "run"
    shutil.copytree(str(refs(name)[0]), str(out))
    other = tmp_path / "data"
    shutil.copytree(digits_small, str(other), symlinks=False)
    old_lr = fam.checkpoints(out).read("latest")["config"]["fingerprint"]["lr_schedule"]["lr"]
    changed = ["--lr", "0.5", "--seed", "7"]
    with pytest.raises(UsageError) as e:
        fam.main(fam.args(str(other), out, epochs=EPOCHS + 1, extra=EXTRA[name] + changed))
    msg = str(e.value)
    assert "\n" not in msg and "--resume-changed" in msg and {"fbn": "--no-auto-resume", "aff": "--no-resume",
                                                                 "blnet": "--resume fresh"}[name] in msg, msg
    for part in ("lr_schedule.lr %s -> " % old_lr, "seed 0 -> 7", "data.train.path %s" % digits_small):
        assert part in msg, (part, msg)
    again = fam.args(str(other), out, epochs=EPOCHS + 1, extra=EXTRA[name] + changed + ["--resume-changed"])
    assert fam.main(again) == 0
    text = capsys.readouterr().out
    assert "continuing with changed settings" in text and "%d epoch(s) done" % EPOCHS in text, text[-2000:]
    fp = fam.checkpoints(out).read("latest")["config"]["fingerprint"]
    assert fp["lr_schedule"]["lr"] > old_lr and fp["seed"] == 7 and fp["data"]["train"]["path"].startswith(str(other))


def test_a_checkpoint_with_fewer_recorded_settings_still_resumes(digits_small, refs, tmp_path, capsys):
    """Checkpoints of the earlier code recorded model, kwargs, classes, batch and input shape only."""
    fam = FAMILIES["aff"]
    out = tmp_path / "run"
    shutil.copytree(str(refs("aff")[0]), str(out))
    ck = fam.checkpoints(out)
    meta = json.load(open(ck.path("latest", ".json")))
    fp = meta["config"]["fingerprint"]
    meta["config"]["fingerprint"] = {k: fp[k] for k in ("model", "model_kwargs", "num_classes", "global_batch",
                                                        "input_shape")}
    json.dump(meta, open(ck.path("latest", ".json"), "w"))
    assert fam.main(_args(fam, digits_small, out, extra=["--lr", "0.5"])) == 0
    text = capsys.readouterr().out
    assert "does not record" in text and "lr_schedule.lr" in text and "nothing to do" in text, text[-2000:]
    fp["global_batch"] = 64
    meta["config"]["fingerprint"] = {k: fp[k] for k in ("model", "global_batch")}
    json.dump(meta, open(ck.path("latest", ".json"), "w"))
    with pytest.raises(UsageError, match="global_batch 64 -> 32"):
        fam.main(_args(fam, digits_small, out))
