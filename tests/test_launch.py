"""tools/launch.py, mxrepro/launcher.py and mxrepro/engine/dist.py (docs/reference/mxnet.md §1.4): a loopback dist_sync
job, a failing worker, a hanging worker, ssh mode through a stand-in ssh client, a launcher or training
run killed with -9 (nothing of it left running: mxrepro/lifeline.py), and the pieces (host file, --env,
thread split, dmlc_tracker shim). Only 127.0.0.1 is ever used."""
import os
import shlex
import shutil
import stat
import subprocess
import sys
import threading
import time
import uuid

import pytest

import mxrepro  # noqa: F401  (threads before mxnet)
from mxrepro import launcher as dist

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAUNCH = os.path.join(ROOT, "tools", "launch.py")
PY = sys.executable

# A worker for the launcher tests (only the kvstore and the worker-side helpers); one of four modes.
KV_WORKER = r'''
import os, signal, sys, time
from mxrepro.engine import dist as d
mode, task = sys.argv[1], os.environ["DMLC_TASK_ID"]
if mode == "hang":
    if task == "0":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)   # only SIGKILL ends this one
    print("worker %s hangs" % task, flush=True)
    time.sleep(600)
import mxnet as mx


class MainOnlySchedule(mx.lr_scheduler.LRScheduler):
    """Defined in __main__: the servers cannot unpickle it."""


with d.fail_fast():
    kv = mx.kv.create("dist_sync")
    d.guard_worker(kv)
    if mode == "loop":  # as the training loop: SIGTERM is only recorded and acted on between steps
        caught = []
        signal.signal(signal.SIGTERM, lambda *a: caught.append(1))
        kv.init(5, mx.nd.zeros((4,)))
        out = mx.nd.zeros((4,))
        for step in range(100000):
            if caught:
                print("interrupted", flush=True)
                sys.exit(143)
            kv.push(5, mx.nd.ones((4,)))
            kv.pull(5, out=out)
            out.wait_to_read()
            if step == 2:
                print("worker %s looping" % task, flush=True)
    if mode == "badopt":
        kv.set_optimizer(mx.optimizer.SGD(learning_rate=0.1, lr_scheduler=MainOnlySchedule(0.1)))
    if mode == "fail" and task == "1":
        print("worker 1 gives up", flush=True)
        sys.exit(3)
    kv.init(3, mx.nd.zeros((4,)))
    kv.push(3, mx.nd.ones((4,)) * (kv.rank + 1))
    out = mx.nd.zeros((4,))
    kv.pull(3, out=out)
    print("RESULT task=%s rank=%d value=%s" % (task, kv.rank, out.asnumpy().tolist()), flush=True)
'''


def tagged_pids(tag):
    """Processes (ours) whose environment carries the test tag: children the launcher left behind."""
    needle = ("MXREPRO_TEST_TAG=%s" % tag).encode()
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            with open("/proc/%s/environ" % pid, "rb") as f:
                if needle in f.read().split(b"\0"):
                    found.append(int(pid))
        except OSError:
            pass
    return found


def no_leftovers(tag, wait=5.0):
    end = time.time() + wait
    while time.time() < end:
        left = tagged_pids(tag)
        if not left:
            return []
        time.sleep(0.2)
    return tagged_pids(tag)


def launch(args, tag, timeout=360, env=None):
    cmd = [PY, LAUNCH, "--env", "MXREPRO_TEST_TAG:%s" % tag] + args
    t0 = time.time()
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=timeout,
                       cwd=ROOT, env=dict(os.environ, **(env or {})))
    return r.returncode, r.stdout, r.stderr, time.time() - t0


@pytest.fixture
def worker_script(tmp_path):
    p = tmp_path / "kv_worker.py"
    p.write_text(KV_WORKER)
    return str(p)


# --------------------------------------------------------------------------------------------------
# Real jobs on 127.0.0.1
# --------------------------------------------------------------------------------------------------
def test_loopback_dist_sync_push_pull(worker_script):
    """2 workers + 1 server + scheduler: each pushes rank+1, both pull 1+2 = 3."""
    tag = uuid.uuid4().hex
    rc, out, err, _ = launch(["-n", "2", "-s", "1", "--loopback", "--timeout", "300",
                              PY, worker_script, "ok"], tag)
    assert rc == 0, "launcher failed:\n%s\n%s" % (out[-3000:], err[-3000:])
    results = [l for l in out.splitlines() if "RESULT" in l]
    assert len(results) == 2, out
    ranks = set()
    for line in results:
        assert line.startswith("[worker "), line            # every line carries its worker label
        assert "value=[3.0, 3.0, 3.0, 3.0]" in line, line
        ranks.add(int(line.split("rank=")[1].split()[0]))
        task = line.split("task=")[1].split()[0]
        assert line.startswith("[worker %s" % task), line   # prefix = the launch index
    assert ranks == {0, 1}
    assert "127.0.0.1" in err and "job done: 2 worker(s)" in err
    assert no_leftovers(tag) == []


def test_failing_worker_stops_the_job(worker_script):
    """Worker 1 exits 3 while worker 0 waits for it in dist_sync: the launcher stops everything at
    once, names the worker, its exit code and its last output, and exits 3."""
    tag = uuid.uuid4().hex
    rc, out, err, elapsed = launch(["-n", "2", "-s", "1", "--loopback", "--timeout", "300",
                                    PY, worker_script, "fail"], tag)
    assert rc == 3, (rc, out[-2000:], err[-2000:])
    # a few seconds on an idle machine; the bound leaves room for a loaded CI box
    assert elapsed < 120, "took %.0f s: the failure was not acted on before the time limit" % elapsed
    assert "job FAILED: worker 1" in err and "exited with code 3" in err, err
    assert "worker 1 gives up" in err.split("exited with code 3", 1)[1], err   # the tail is shown
    assert "stopping" in err and "scheduler" in err and "server 0" in err
    assert no_leftovers(tag) == []


def test_server_that_cannot_load_the_optimizer_stops_the_job(worker_script):
    """A server that fails to unpickle the workers' optimizer only prints "Exception ignored" and
    carries on without one (it would then store summed gradients as weights): the launcher treats
    that output as fatal. A scheduler class defined in the worker's __main__ cannot be imported
    on a server, so this job must fail, quickly and with the server's traceback."""
    tag = uuid.uuid4().hex
    rc, out, err, elapsed = launch(["-n", "2", "-s", "1", "--loopback", "--timeout", "300",
                                    PY, worker_script, "badopt"], tag)
    assert rc == 1, (rc, out[-2000:], err[-2000:])
    assert elapsed < 120, elapsed
    assert "job FAILED: server 0 raised while handling a command from the workers" in err, err
    assert "MainOnlySchedule" in err                       # the server's traceback is in the report
    assert no_leftovers(tag) == []


def test_hanging_worker_is_killed_at_the_timeout(worker_script):
    """Workers that never finish (one ignores SIGTERM) are killed at --timeout; exit status 124."""
    tag = uuid.uuid4().hex
    limit = 6
    rc, out, err, elapsed = launch(["-n", "2", "-s", "1", "--loopback", "--timeout", str(limit),
                                    "--term-grace", "1", PY, worker_script, "hang"], tag)
    assert rc == 124, (rc, err)
    assert limit <= elapsed < limit + 40, elapsed
    assert "time limit of 6 s reached" in err
    assert "worker 0 still running at the time limit" in err and "worker 0 hangs" in err
    assert "ignored SIGTERM" in err and "worker 0" in err.split("ignored SIGTERM")[0].splitlines()[-1]
    assert no_leftovers(tag) == []


def _kill_launcher_mid_job(worker_cmd, tag, workers=2):
    """Start a 2-worker local job, kill -9 the launcher once every worker is stepping; the job's pids."""
    p = subprocess.Popen([PY, LAUNCH, "--env", "MXREPRO_TEST_TAG:%s" % tag, "-n", str(workers), "-s", "1",
                          "--loopback", "--timeout", "300"] + worker_cmd, stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL, text=True, cwd=ROOT)
    seen, t0 = set(), time.time()
    for line in p.stdout:
        if "looping" in line:
            seen.add(line.split("looping")[0])
        if len(seen) == workers or time.time() - t0 > 240:
            break
    job = tagged_pids(tag)
    p.kill()
    p.wait()   # reaped: the launcher is gone, not a zombie
    p.stdout.close()
    assert len(seen) == workers and len(job) >= workers + 2, (seen, job)
    return job


def test_killed_launcher_takes_the_job_with_it(worker_script):
    """kill -9 of tools/launch.py while 2 workers step: workers, server and scheduler end within seconds
    (PR_SET_PDEATHSIG from the launcher; a worker blocked on the dead server by the launcher watchdog)."""
    tag = uuid.uuid4().hex
    job = _kill_launcher_mid_job([PY, worker_script, "loop"], tag)
    assert no_leftovers(tag, wait=10) == [], "left running: %s (job was %s)" % (tagged_pids(tag), job)


@pytest.mark.slow
def test_killed_launcher_behind_a_shell_takes_the_job_with_it(worker_script):
    """The same when each process is a shell's child (the shell gets the parent-death signal, not Python):
    the launcher watchdog in every process that imports mxrepro ends it."""
    tag = uuid.uuid4().hex
    server = "sh -c %s" % shlex.quote("%s -c 'import mxrepro, mxnet'; true" % shlex.quote(PY))
    cmd = "%s %s loop; true" % (shlex.quote(PY), shlex.quote(worker_script))
    job = _kill_launcher_mid_job(["--server-command", server, "sh", "-c", cmd], tag)
    assert no_leftovers(tag, wait=10) == [], "left running: %s (job was %s)" % (tagged_pids(tag), job)


FAKE_SSH = r'''#!/bin/bash
# Stand-in for the ssh client: records host and port, then runs the remote command here.
port=22
while [ $# -gt 0 ]; do
  case "$1" in -o) shift 2;; -p) port=$2; shift 2;; -*) shift;; *) break;; esac
done
host=$1; shift
echo "$host $port" >> %(log)s
exec bash -c "$*"
'''

SSH_WORKER = r'''
import os
keys = ("DMLC_ROLE", "DMLC_TASK_ID", "DMLC_NODE_HOST", "DMLC_NUM_WORKER", "DMLC_PS_ROOT_URI", "OMP_NUM_THREADS")
print("ENV " + " ".join("%s=%s" % (k, os.environ.get(k)) for k in keys) + " CWD=" + os.getcwd(), flush=True)
'''


def test_ssh_mode_with_stand_in_client(tmp_path):
    """ssh mode: servers then workers spread over the host file's entries, environment exported in
    the remote script, run in --sync-dst-dir's path; servers that outlive the workers are stopped
    through the remote watcher (closing the ssh stdin), leaving nothing behind."""
    log = tmp_path / "ssh.log"
    ssh = tmp_path / "fake_ssh"
    ssh.write_text(FAKE_SSH % {"log": log})
    ssh.chmod(ssh.stat().st_mode | stat.S_IEXEC)
    hosts = tmp_path / "hosts"
    hosts.write_text("# two entries for one machine\n127.0.0.1\n127.0.0.1:2222 slots=2\n")
    script = tmp_path / "ssh_worker.py"
    script.write_text(SSH_WORKER)
    tag = uuid.uuid4().hex
    sleeper = "%s -c 'import time; time.sleep(600)'" % PY
    rc, out, err, elapsed = launch(
        ["-n", "2", "-s", "1", "-H", str(hosts), "--host-ip", "127.0.0.1", "--ssh", str(ssh),
         "--server-command", sleeper, "--grace", "1", "--env-worker", "OMP_NUM_THREADS:1",
         "--timeout", "60", PY, str(script)], tag)
    assert rc == 0, (out, err)
    envs = sorted(l for l in out.splitlines() if " ENV " in l)
    assert len(envs) == 2, out
    # dmlc_tracker/ssh.py order: server 0 on host entry 0, then workers on entries 1, 0
    assert envs[0].startswith("[worker 0@127.0.0.1]") and "DMLC_TASK_ID=0" in envs[0], envs
    assert envs[1].startswith("[worker 1@127.0.0.1]") and "DMLC_TASK_ID=1" in envs[1], envs
    for line in envs:
        for kv in ("DMLC_ROLE=worker", "DMLC_NODE_HOST=127.0.0.1", "DMLC_NUM_WORKER=2",
                   "DMLC_PS_ROOT_URI=127.0.0.1", "OMP_NUM_THREADS=1", "CWD=%s" % ROOT):
            assert kv in line, (kv, line)
    assert sorted(log.read_text().split("\n")[:-1]) == ["127.0.0.1 22", "127.0.0.1 22", "127.0.0.1 2222"]
    assert "server 0@127.0.0.1 did not exit" in err
    assert no_leftovers(tag) == [], "the remote server survived the launcher"


# --------------------------------------------------------------------------------------------------
# Pieces
# --------------------------------------------------------------------------------------------------
def test_dmlc_tracker_shim():
    tracker = dist.patch_dmlc_tracker()
    t = threading.Thread(target=lambda: None)
    t.start()
    t.join()
    assert t.isAlive() is False and hasattr(tracker, "PSTracker")
    assert dist.host_ip(loopback=True) == "127.0.0.1"
    assert dist.host_ip("127.0.0.1") == "127.0.0.1"      # an explicit address passes through


def test_launcher_does_not_import_mxnet():
    """A launcher that imported mxnet with DMLC_ROLE set would become a ps-lite node itself."""
    code = ("import runpy, sys; sys.argv = %r\n"
            "try:\n    runpy.run_path(%r, run_name='__main__')\nexcept SystemExit:\n    pass\n"
            "print('MXNET_IMPORTED', 'mxnet' in sys.modules)"
            % (["launch.py", "-n", "2", "-s", "1", "--loopback", "--dry-run", "python", "x.py"], LAUNCH))
    r = subprocess.run([PY, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                       timeout=60, env=dict(os.environ, DMLC_ROLE="server"))
    assert "MXNET_IMPORTED False" in r.stdout, r.stdout + r.stderr
    lines = [l for l in r.stdout.splitlines() if l.startswith(("scheduler", "server", "worker"))]
    assert [l.split()[0] for l in lines] == ["scheduler", "server", "worker", "worker"], r.stdout
    assert all("DMLC_PS_ROOT_URI=127.0.0.1" in l and "DMLC_NODE_HOST=127.0.0.1" in l for l in lines)


def test_local_jobs_environment(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    jobs = dist.local_jobs(["python", "t.py"], 2, 1, "127.0.0.1", env={"FOO": "1"},
                           env_worker={"BAR": "2"}, cpus=8)
    assert [j.name for j in jobs] == ["scheduler", "server 0", "worker 0", "worker 1"]
    port = jobs[0].env["DMLC_PS_ROOT_PORT"]
    for j in jobs:
        assert j.env["DMLC_PS_ROOT_URI"] == "127.0.0.1" and j.env["DMLC_NODE_HOST"] == "127.0.0.1"
        assert j.env["DMLC_PS_ROOT_PORT"] == port and j.env["DMLC_NUM_WORKER"] == "2"
        assert j.env["DMLC_ROLE"] == j.role and j.env["FOO"] == "1"
    assert [j.env["OMP_NUM_THREADS"] for j in jobs] == ["1", "1", "4", "4"]   # 8 cores / 2 workers
    assert [j.env.get("BAR") for j in jobs] == [None, None, "2", "2"]
    assert jobs[0].argv[:2] == ["python", "-c"] and jobs[2].argv == ["python", "t.py"]
    assert "_init_kvstore_server_module()" in jobs[0].argv[2] and jobs[1].argv == jobs[0].argv
    assert [j.env["DMLC_TASK_ID"] for j in jobs[2:]] == ["0", "1"]
    # an explicit thread count wins, for every role
    jobs = dist.local_jobs(["./t.sh"], 3, 1, "127.0.0.1", env={"OMP_NUM_THREADS": "2"}, cpus=8)
    assert {j.env["OMP_NUM_THREADS"] for j in jobs} == {"2"}
    assert jobs[0].argv == ["./t.sh"]                   # not python: the command itself serves
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert "OMP_NUM_THREADS" not in dist.local_jobs(["python", "t.py"], 2, 1, "127.0.0.1")[2].env


def test_small_parsers(tmp_path, monkeypatch):
    h = tmp_path / "hosts"
    h.write_text("node1\n\n# comment\nnode2:2200 slots=4\n10.0.0.3  # trailing\n")
    assert dist.parse_hostfile(str(h)) == [("node1", "22"), ("node2", "2200"), ("10.0.0.3", "22")]
    h.write_text("# nothing\n")
    with pytest.raises(SystemExit, match="lists no host"):
        dist.parse_hostfile(str(h))
    monkeypatch.setenv("SOME_VAR", "x:y")
    assert dist.parse_env_pairs(["A:1", "B=2:3", "SOME_VAR"]) == {"A": "1", "B": "2:3", "SOME_VAR": "x:y"}
    monkeypatch.delenv("SOME_VAR")
    with pytest.raises(SystemExit, match="not set"):
        dist.parse_env_pairs(["SOME_VAR"])
    with pytest.raises(SystemExit, match="not a valid"):
        dist.parse_env_pairs(["1BAD:1"])
    assert dist.normalize_command(["--", "python", "a.py"]) == ["python", "a.py"]
    assert dist.normalize_command(["python a.py --x 'b c'"]) == ["python", "a.py", "--x", "b c"]
    with pytest.raises(SystemExit, match="no command"):
        dist.normalize_command([])
    boot = dist.server_command([".venv/bin/python3.11", "-u", "cifar/train.py", "--x"])
    assert boot[:2] == [".venv/bin/python3.11", "-c"] and "import mxrepro, mxnet" in boot[2]
    assert dist.server_command(["python", "a.py"], override="py -c 'import mxnet'") == ["py", "-c", "import mxnet"]
    assert dist.threads_per_worker(3, cpus=2) == 1 and dist.threads_per_worker(2, cpus=16) == 8


def test_ssh_job_layout():
    jobs = dist.ssh_jobs(["python", "t.py"], 3, 2, [("h1", "22"), ("h2", "2022")], "127.0.0.1", "/w",
                         env={"X": "a b"})
    assert [j.name for j in jobs] == ["scheduler", "server 0@h1", "server 1@h2", "worker 0@h1",
                                      "worker 1@h2", "worker 2@h1"]
    assert jobs[0].host is None and jobs[0].env["DMLC_ROLE"] == "scheduler"
    w1 = jobs[4]
    assert w1.argv[-3:-1] == ["2022", "h2"]
    bash, dash_c, script = shlex.split(w1.argv[-1])      # what the remote login shell runs
    assert (bash, dash_c) == ("bash", "-c")
    for s in ("export DMLC_ROLE=worker", "export DMLC_NODE_HOST=h2", "export DMLC_TASK_ID=1",
              "export X='a b'", "cd /w", "setsid python t.py"):
        assert s in script, (s, script)


def test_sync_dir(tmp_path):
    """--sync-dst-dir: rsync over the job's ssh command (the stand-in client runs it here); without
    rsync the error says what to install."""
    log = tmp_path / "ssh.log"
    ssh = tmp_path / "fake_ssh"
    ssh.write_text(FAKE_SSH % {"log": log})
    ssh.chmod(ssh.stat().st_mode | stat.S_IEXEC)
    src, dst = tmp_path / "src", tmp_path / "dst"
    (src / "sub").mkdir(parents=True)
    (src / "sub" / "a.txt").write_text("hello")
    if shutil.which("rsync") is None:
        with pytest.raises(SystemExit, match="needs rsync"):
            dist.sync_dir(str(src), [("127.0.0.1", "22")], str(dst), ssh=str(ssh))
    else:
        dist.sync_dir(str(src), [("127.0.0.1", "2222")], str(dst), ssh=str(ssh))
        assert (dst / "sub" / "a.txt").read_text() == "hello"
        assert log.read_text().split() == ["127.0.0.1", "2222"]


# --------------------------------------------------------------------------------------------------
# Data-loader worker processes end with their training process
# --------------------------------------------------------------------------------------------------
POOL_PARENT = r'''
import sys, time, multiprocessing
from mxrepro.lifeline import loader_workers_die_with_parent
if sys.argv[1] == "on":
    loader_workers_die_with_parent()
def work(i):
    time.sleep(2)                 # busy when the parent dies
    return b"x" * 1000000         # then a result for a parent that is gone
if __name__ == "__main__":
    pool = multiprocessing.Pool(2)
    pool.map_async(work, range(4))
    print("started", flush=True)
    time.sleep(60)
'''


def _running(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.parametrize("hook", ["on", "off"])
def test_pool_workers_die_with_a_killed_parent(hook, tmp_path):
    """multiprocessing workers (what Gluon's DataLoader uses) busy when their parent is killed -9: with
    loader_workers_die_with_parent they are gone at once and print nothing; without it they finish their
    task and die on a BrokenPipeError traceback (the control case: the test sees the failure)."""
    script = tmp_path / "parent.py"
    script.write_text(POOL_PARENT)
    p = subprocess.Popen([PY, str(script), hook], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT))
    assert p.stdout.readline().strip() == "started"
    time.sleep(0.5)
    kids = [int(x) for x in subprocess.run(["pgrep", "-P", str(p.pid)], capture_output=True, text=True).stdout.split()]
    assert len(kids) == 2
    p.kill()
    p.wait()
    err = p.stderr.read()   # EOF once every worker is gone
    p.stdout.close()
    p.stderr.close()
    end = time.time() + 3   # a killed process closes its files just before it is gone
    while time.time() < end and any(_running(k) for k in kids):
        time.sleep(0.05)
    if hook == "on":
        assert err == "" and not [k for k in kids if _running(k)], err
    else:
        assert "BrokenPipeError" in err
        for k in kids:
            if _running(k):
                os.kill(k, 9)


def test_killed_training_run_takes_its_loader_workers(digits_small, tmp_path):
    """kill -9 of a training run reading with -j 2 (DataLoader worker processes): no process of it is left
    within seconds, none printed a traceback, and the next run (which resumes) shows none either."""
    from test_guarantees import FAMILIES
    fam = FAMILIES["aff"]
    tag = uuid.uuid4().hex
    cmd = fam.cmd(digits_small, tmp_path / "run", epochs=1, extra=["-j", "2"])
    env = dict(os.environ, PYTHONUNBUFFERED="1", MXREPRO_TEST_TAG=tag, PYTHONPATH=ROOT)
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env)
    head = []
    for line in p.stdout:
        head.append(line)
        if "Epoch[1] Batch[3/" in line:
            break
    loaders = [pid for pid in tagged_pids(tag) if pid != p.pid]
    assert len(loaders) >= 2, (loaders, "".join(head)[-2000:])
    p.kill()
    p.wait()
    assert no_leftovers(tag, wait=5) == []
    rest = p.stderr.read() + p.stdout.read()
    p.stdout.close()
    p.stderr.close()
    assert "Traceback" not in rest and "BrokenPipe" not in rest, rest[-2000:]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "Traceback" not in r.stderr + r.stdout and "BrokenPipe" not in r.stderr + r.stdout, r.stderr[-2000:]
    assert no_leftovers(tag) == []
