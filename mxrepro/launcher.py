"""The launcher side of data-parallel training on MXNet's parameter server (ps-lite,
``--kv-store dist_*``); ``tools/launch.py`` is its command-line front end (docs/reference/mxnet.md §1.4, §6):

* :func:`patch_dmlc_tracker` -- the ``dmlc_tracker`` package shipped in the mxnet 1.9.1 wheel calls
  ``Thread.isAlive`` (removed in Python 3.9); the shim restores it before the tracker is used.
* :func:`host_ip` -- the address the scheduler listens on: 127.0.0.1 for ``--loopback``, else the
  tracker's own ``get_host_ip`` (which never picks loopback on its own).
* :func:`local_jobs` / :func:`ssh_jobs` -- the processes of a job (scheduler, servers, workers) with
  the ``DMLC_*`` environment each one needs, for one host or for the hosts of a host file.
* :data:`SERVER_BOOTSTRAP` -- what servers run so that the optimizer the workers pickle to them
  (with gluoncv's or this project's LR schedulers) can be loaded.
* :class:`Supervisor` -- starts the processes in their own process groups, prefixes their output
  with their role and rank, and ends the whole group (SIGTERM, then SIGKILL) when a worker fails,
  a server or the scheduler dies early or cannot load the optimizer, or the time limit is reached,
  naming the culprit and printing the tail of its output.

The worker side (fail-fast exit, rank announcement) is :mod:`mxrepro.engine.dist`. Nothing here
imports mxnet (``import mxrepro.launcher`` does not load it either): a launcher that imported it with
``DMLC_ROLE`` set in its environment would turn into a parameter server itself.
"""
import collections
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time

from .lifeline import LAUNCHER_ENV, pdeathsig_preexec

# Environment forwarded to remote processes in ssh mode (the local value, when set). The tracker's
# own list (dmlc_tracker/ssh.py get_env) plus MXNet's and ps-lite's tuning variables.
SSH_FORWARD_KEYS = ("OMP_NUM_THREADS", "KMP_AFFINITY", "LD_LIBRARY_PATH", "DMLC_INTERFACE",
                    "DMLC_PS_VAN_TYPE", "PS_VERBOSE")
SSH_FORWARD_PREFIXES = ("MXNET_", "PS_")
_PY_RE = re.compile(r"^python[0-9.]*$")


# --------------------------------------------------------------------------------------------------
# dmlc_tracker
# --------------------------------------------------------------------------------------------------
def patch_dmlc_tracker():
    """Import the wheel's ``dmlc_tracker.tracker`` with ``Thread.isAlive`` restored; return it.

    dmlc_tracker/tracker.py (``PSTracker.join/alive``, ``RabitTracker.join/alive``) still calls the
    alias that Python 3.9 removed, so any use of the tracker's threads dies with AttributeError.
    """
    if not hasattr(threading.Thread, "isAlive"):
        threading.Thread.isAlive = threading.Thread.is_alive
    try:
        from dmlc_tracker import tracker
    except ImportError as e:  # pragma: no cover - the mxnet wheel always ships it
        raise SystemExit("error: cannot import dmlc_tracker (%s); it ships with the mxnet wheel: "
                         "run this with the project's Python (.venv/bin/python)" % e)
    return tracker


def host_ip(requested=None, loopback=False):
    """Address the scheduler (and, in local mode, every process) binds and advertises.

    ``loopback`` -> 127.0.0.1. ``requested`` may be an address, or 'auto'/'ip'/'dns' as in
    dmlc_tracker's ``get_host_ip`` (the default 'auto' picks the outgoing interface, never
    loopback). When the machine has no route at all the tracker's probe fails; fall back to
    loopback then, which is right for a single-host job.
    """
    if loopback:
        return "127.0.0.1"
    tracker = patch_dmlc_tracker()
    try:
        return tracker.get_host_ip(requested or "auto")
    except OSError as e:
        sys.stderr.write("launch: cannot find a non-loopback address (%s); using 127.0.0.1\n" % e)
        return "127.0.0.1"


# --------------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------------
def free_ports(host, n):
    """``n`` distinct free TCP ports on ``host``, ascending. All sockets are held until every port
    is chosen, so the ports differ; another program can still take one before ps-lite binds it
    (rare; the job then fails at start-up and can simply be rerun)."""
    socks, ports = [], []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
            s.bind((host, 0))
            socks.append(s)
            ports.append(s.getsockname()[1])
    finally:
        for s in socks:
            s.close()
    return sorted(ports)


def parse_env_pairs(pairs, what="--env"):
    """``['K:V', 'K=V', 'K2']`` -> {'K': 'V', 'K2': <local value of K2>} (mxnet launch.py syntax;
    the value is everything after the first ':' or '=')."""
    out = {}
    for item in pairs or []:
        m = re.match(r"^\s*([^:=]*)[:=](.*)$", item)
        if m:
            k, v = m.group(1), m.group(2)
        else:
            k = item
            if k not in os.environ:
                raise SystemExit("error: %s %s passes the local value of %s, but it is not set "
                                 "(use %s %s:VALUE)" % (what, k, k, what, k))
            v = os.environ[k]
        k = k.strip()
        if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", k):
            raise SystemExit("error: %s %r: %r is not a valid environment variable name" % (what, item, k))
        out[k] = v
    return out


def threads_per_worker(num_local_workers, cpus=None):
    """Cores split evenly between the workers on this host (at least 1 each)."""
    cpus = cpus or os.cpu_count() or 1
    return max(1, cpus // max(1, num_local_workers))


def parse_hostfile(path):
    """Host file of the tracker's ssh mode: one ``host[:ssh_port]`` per line; an mpi-style
    ``slots=N`` suffix, blank lines and ``#`` comments are ignored. -> [(host, port)]."""
    if not os.path.isfile(path):
        raise SystemExit("error: host file %s does not exist" % path)
    hosts = []
    with open(path) as f:
        for line in f:
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            line = line.split("slots=", 1)[0].strip().split()[0]
            host, port = line, "22"
            if line.count(":") == 1:
                host, port = line.split(":")
            if not port.isdigit():
                raise SystemExit("error: host file %s: bad ssh port in %r" % (path, line))
            hosts.append((host, port))
    if not hosts:
        raise SystemExit("error: host file %s lists no host" % path)
    return hosts


def normalize_command(command):
    """The user's command as argv. A leading ``--`` is dropped; a single argument with spaces
    (``launch.py -n 2 "python train.py --x 1"``, as mxnet's launcher allows) is split like a shell."""
    command = list(command or [])
    if command and command[0] == "--":
        command = command[1:]
    if len(command) == 1 and re.search(r"\s", command[0]):
        command = shlex.split(command[0])
    if not command:
        raise SystemExit("error: no command given: launch.py -n 2 [options] python train.py ...")
    return command


# What servers and the scheduler run when the command starts with a Python interpreter. Importing
# mxnet with DMLC_ROLE=server|scheduler runs the ps-lite loop *inside* ``import mxnet``
# (mxnet/kvstore/kvstore_server.py), while mxnet is half imported; a worker's optimizer arrives
# pickled and is unpickled there, so an LR scheduler from gluoncv (which refuses to import without
# a complete mxnet) or from this project fails, the server ignores the exception and runs with no
# optimizer at all: it then stores the summed gradients as the weights. The bootstrap imports
# mxnet completely with DMLC_ROLE hidden, then starts the server loop itself (the project's
# classes unpickle from the installed mxrepro package).
SERVER_BOOTSTRAP = (
    "import os; role = os.environ.pop('DMLC_ROLE'); "
    "import mxrepro, mxnet; os.environ['DMLC_ROLE'] = role; "
    "from mxnet.kvstore import kvstore_server; kvstore_server._init_kvstore_server_module()")


def server_command(command, override=None):
    """What the scheduler and servers run: the command's own Python interpreter with
    :data:`SERVER_BOOTSTRAP` (same environment as the workers; the optimizer the workers send can
    be unpickled); when the command does not start with a Python interpreter, the command itself,
    as dmlc_tracker does (its ``import mxnet`` then runs the server)."""
    if override:
        return shlex.split(override)
    if _PY_RE.match(os.path.basename(command[0])):
        return [command[0], "-c", SERVER_BOOTSTRAP]
    return list(command)


# --------------------------------------------------------------------------------------------------
# Lines the launcher reads in the processes' output
# --------------------------------------------------------------------------------------------------
RANK_MARK = "mxrepro-launch: kvstore rank "   # printed by mxrepro.engine.dist.announce_rank
# Printed by Python when the server's command callback (set_optimizer, ...) raised; ps-lite goes on.
CALLBACK_ERROR = "Exception ignored on calling ctypes callback function"


# --------------------------------------------------------------------------------------------------
# Job descriptions
# --------------------------------------------------------------------------------------------------
class Job(object):
    """One process of a distributed job: its role, rank (launch index), argv, environment delta,
    and for ssh mode the host it runs on."""

    def __init__(self, role, rank, argv, env, host=None, ssh_port=None):
        self.role, self.rank, self.argv, self.env = role, rank, list(argv), dict(env)
        self.host, self.ssh_port = host, ssh_port
        self.kv_rank = None      # ps-lite's kv.rank once the worker reports it (announce_rank)
        self.saw_traceback = False
        self.callback_error = None   # time a server printed an ignored exception of its controller

    @property
    def name(self):
        base = self.role if self.role == "scheduler" else "%s %d" % (self.role, self.rank)
        if self.kv_rank is not None and self.kv_rank != self.rank:
            base += " (kv.rank %d)" % self.kv_rank
        return base if self.host is None else "%s@%s" % (base, self.host)

    def __repr__(self):
        return "Job(%s, %s)" % (self.name, " ".join(self.argv))


def _merge(*dicts):
    out = {}
    for d in dicts:
        out.update({k: str(v) for k, v in d.items()})
    return out


def _common_env(num_workers, num_servers, root_uri, root_port, cluster):
    return {"DMLC_NUM_WORKER": str(num_workers), "DMLC_NUM_SERVER": str(num_servers),
            "DMLC_PS_ROOT_URI": root_uri, "DMLC_PS_ROOT_PORT": str(root_port),
            "DMLC_JOB_CLUSTER": cluster, "PYTHONUNBUFFERED": "1"}


def local_jobs(command, num_workers, num_servers, ip, env=None, env_worker=None, env_server=None,
               server_cmd=None, cpus=None):
    """Scheduler, servers and workers on this host, all bound to ``ip``.

    Every process gets ``DMLC_NODE_HOST=ip`` (ps-lite otherwise binds the first non-loopback
    interface). ``OMP_NUM_THREADS``: kept when set (in the environment or by ``--env`` /
    ``--env-worker``), else the cores split between the workers; servers and scheduler get 1
    thread unless told otherwise. ``DMLC_TASK_ID`` is the launch index; ``kv.rank`` is assigned
    by the ps-lite scheduler (in order of the nodes' ports, which ps-lite picks itself: neither
    DMLC_PORT nor DMLC_RANK is read by mxnet 1.9.1), so the two can differ.
    """
    env, env_worker, env_server = dict(env or {}), dict(env_worker or {}), dict(env_server or {})
    root_port = free_ports(ip, 1)[0]
    base = _common_env(num_workers, num_servers, ip, root_port, "local")
    base["DMLC_NODE_HOST"] = ip
    omp_set = "OMP_NUM_THREADS" in os.environ or "OMP_NUM_THREADS" in env
    ps_argv = server_command(command, server_cmd)
    ps_threads = {} if omp_set or "OMP_NUM_THREADS" in env_server else {"OMP_NUM_THREADS": "1"}
    w_threads = {} if omp_set or "OMP_NUM_THREADS" in env_worker else {
        "OMP_NUM_THREADS": str(threads_per_worker(num_workers, cpus))}
    jobs = [Job("scheduler", 0, ps_argv, _merge(base, {"DMLC_ROLE": "scheduler"}, ps_threads, env, env_server))]
    for i in range(num_servers):
        jobs.append(Job("server", i, ps_argv, _merge(
            base, {"DMLC_ROLE": "server", "DMLC_SERVER_ID": str(i)},
            ps_threads, env, env_server)))
    for i in range(num_workers):
        jobs.append(Job("worker", i, command, _merge(
            base, {"DMLC_ROLE": "worker", "DMLC_TASK_ID": str(i)},
            w_threads, env, env_worker)))
    return jobs


def remote_script(workdir, env, argv):
    """Bash script run through ssh for one remote process. The command runs in its own session
    (``setsid``); a watcher reads the ssh channel's stdin and, when it closes (the launcher closed
    it, or the launcher/ssh client died), sends SIGTERM and, 5 s later, SIGKILL to that session,
    so a stopped job leaves nothing behind on the remote hosts."""
    lines = ["cd %s || { echo 'launch: cannot cd to %s on' $(hostname); exit 97; }"
             % (shlex.quote(workdir), workdir.replace("'", ""))]
    lines += ["export %s=%s" % (k, shlex.quote(str(v))) for k, v in sorted(env.items())]
    lines += ["exec 3<&0",
              "setsid %s </dev/null 3<&- &" % shlex.join(argv),
              "pid=$!",
              "{ cat <&3 >/dev/null; kill -TERM -- -$pid || exit 0; "
              "for i in $(seq 50); do sleep 0.1; kill -0 -- -$pid || exit 0; done; "
              "kill -KILL -- -$pid; } >/dev/null 2>&1 &",
              "exec 3<&-",
              "wait $pid"]
    return "\n".join(lines)


def ssh_argv(ssh, host, port, script):
    """``ssh [opts] -p PORT HOST "bash -c '<script>'"``; the remote login shell parses the string."""
    return shlex.split(ssh) + ["-o", "StrictHostKeyChecking=no", "-o", "BatchMode=yes",
                               "-p", str(port), host, "bash -c %s" % shlex.quote(script)]


def ssh_jobs(command, num_workers, num_servers, hosts, root_uri, workdir, ssh="ssh", env=None,
             env_worker=None, env_server=None, server_cmd=None):
    """Scheduler on this host (``root_uri``); servers then workers spread round-robin over
    ``hosts`` (the order of dmlc_tracker/ssh.py), each started through ssh in ``workdir``.
    ``DMLC_NODE_HOST`` is the host-file name, so it must be an address the other hosts reach."""
    env, env_worker, env_server = dict(env or {}), dict(env_worker or {}), dict(env_server or {})
    root_port = free_ports("" if root_uri not in ("127.0.0.1", "::1") else root_uri, 1)[0]
    base = _common_env(num_workers, num_servers, root_uri, root_port, "ssh")
    fwd = {k: v for k, v in os.environ.items()
           if k in SSH_FORWARD_KEYS or k.startswith(SSH_FORWARD_PREFIXES)}
    ps_argv = server_command(command, server_cmd)
    jobs = [Job("scheduler", 0, ps_argv, _merge(base, {"DMLC_ROLE": "scheduler", "DMLC_NODE_HOST": root_uri},
                                                env, env_server))]
    for i in range(num_servers + num_workers):
        host, port = hosts[i % len(hosts)]
        if i < num_servers:
            role, rank, argv = "server", i, ps_argv
            extra, user = {"DMLC_SERVER_ID": str(i)}, env_server
        else:
            role, rank, argv = "worker", i - num_servers, command
            extra, user = {"DMLC_TASK_ID": str(i - num_servers)}, env_worker
        renv = _merge(fwd, base, {"DMLC_ROLE": role, "DMLC_NODE_HOST": host, LAUNCHER_ENV: "remote"}, extra, env, user)
        jobs.append(Job(role, rank, ssh_argv(ssh, host, port, remote_script(workdir, renv, argv)), {},
                        host=host, ssh_port=port))
    return jobs


def sync_dir(local_dir, hosts, dst_dir, ssh="ssh"):
    """``rsync -az`` ``local_dir`` to ``dst_dir`` on every host (``--sync-dst-dir``), like
    dmlc_tracker/ssh.py ``sync_dir`` but with the same ssh command as the job."""
    if subprocess.call(["sh", "-c", "command -v rsync >/dev/null"]) != 0:
        raise SystemExit("error: --sync-dst-dir needs rsync on this host (apt-get install rsync)")
    for host, port in hosts:
        rsh = "%s -o StrictHostKeyChecking=no -o BatchMode=yes -p %s" % (ssh, port)
        cmd = ["rsync", "-az", "-e", rsh, local_dir.rstrip("/") + "/", "%s:%s/" % (host, dst_dir.rstrip("/"))]
        sys.stderr.write("launch: %s\n" % " ".join(shlex.quote(c) for c in cmd))
        if subprocess.call(cmd) != 0:
            raise SystemExit("error: rsync to %s:%s failed (is rsync installed there and ssh "
                             "to %s:%s password-less?)" % (host, dst_dir, host, port))


# --------------------------------------------------------------------------------------------------
# Supervision
# --------------------------------------------------------------------------------------------------
def exit_status(rc):
    """Popen return code -> shell-style status (a signal N becomes 128+N)."""
    return 128 - rc if rc is not None and rc < 0 else rc


class Supervisor(object):
    """Runs a job's processes and ends them all together.

    Each process runs in its own session/process group (so its children are reached too), with
    stdout and stderr merged and copied line by line to ``out`` behind a ``[role rank]`` prefix;
    the last ``tail`` lines of each are kept for error messages. :meth:`run` returns the exit
    status of the job: 0 when every worker exited 0; on failure the exit status of the process
    that failed (a signal N counts as 128+N), or 1 when the workers did not follow a scheduler
    that ended; 124 on timeout (as ``timeout(1)``); 130 when interrupted. Remote (ssh) processes
    get a stdin pipe that :meth:`stop` closes (see :func:`remote_script`); local ones /dev/null.

    When the launcher itself dies (kill -9 included) its local processes end too: each gets SIGTERM from
    the kernel (``PR_SET_PDEATHSIG``, tied to the thread that calls :meth:`start`: call it from the main
    thread) and, as every process that imports mxrepro, a watchdog on the launcher's pid
    (``MXREPRO_LAUNCHER_PID``, :func:`mxrepro.lifeline.watch_launcher`) that ends its process group even
    when it is blocked on a dead server or started behind a shell.
    """

    def __init__(self, out=None, err=None, tail=20, term_grace=5.0, poll=0.05):
        self.out = out or sys.stdout
        self.err = err or sys.stderr
        self.tail_n, self.term_grace, self.poll = tail, term_grace, poll
        self.procs = []          # (job, Popen, tail deque, reader thread)
        self._lock = threading.Lock()
        self.t0 = time.time()

    # -- output -------------------------------------------------------------------------------
    def _say(self, msg):
        with self._lock:
            self.err.write("launch: %s\n" % msg)
            self.err.flush()

    def _reader(self, job, stream, tail):
        prefix = "[%s] " % job.name
        for raw in iter(stream.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip("\n")
            try:
                prefix = self._inspect(job, line, prefix)
            except Exception:              # never lose output over a parsing problem
                pass
            tail.append(line)
            with self._lock:
                self.out.write(prefix + line + "\n")
                self.out.flush()
        stream.close()

    def _inspect(self, job, line, prefix):
        """Markers in a process's output: its kv.rank, a traceback, a failed server command."""
        if line.startswith(RANK_MARK):
            m = re.match(r"(\d+)", line[len(RANK_MARK):])
            if m:
                job.kv_rank = int(m.group(1))
                prefix = "[%s] " % job.name
        if line.startswith("Traceback (most recent call last)"):
            job.saw_traceback = True
        if job.role != "worker" and CALLBACK_ERROR in line and job.callback_error is None:
            job.callback_error = time.time()
        return prefix

    # -- processes -----------------------------------------------------------------------------
    def start(self, job, cwd=None, base_env=None):
        env = dict(os.environ if base_env is None else base_env)
        env.update({k: str(v) for k, v in job.env.items()})
        if not job.host:  # the launcher watchdog of every local process (mxrepro.lifeline.watch_launcher)
            env[LAUNCHER_ENV] = str(os.getpid())
        try:
            p = subprocess.Popen(job.argv, env=env, cwd=cwd,
                                 stdin=subprocess.PIPE if job.host else subprocess.DEVNULL,
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                 start_new_session=True, preexec_fn=pdeathsig_preexec(signal.SIGTERM))
        except OSError as e:
            self.stop("could not start %s (%s: %s)" % (job.name, job.argv[0], e))
            raise SystemExit("error: could not start %s: %s (%s)" % (job.name, e, job.argv[0]))
        tail = collections.deque(maxlen=self.tail_n)
        t = threading.Thread(target=self._reader, args=(job, p.stdout, tail), daemon=True)
        t.start()
        self.procs.append((job, p, tail, t))
        return p

    def alive(self):
        return [job for job, p, _, _ in self.procs if p.poll() is None]

    def pids(self):
        return [p.pid for _, p, _, _ in self.procs]

    def stop(self, reason=None):
        """Close every stdin (remote watchers then end their command), SIGTERM every process group,
        wait up to ``term_grace`` seconds, then SIGKILL what is left. Returns the names killed."""
        running = self.alive()
        if reason and running:
            self._say("stopping %s: %s" % (", ".join(j.name for j in running), reason))
        for _, p, _, _ in self.procs:
            try:
                if p.stdin and not p.stdin.closed:
                    p.stdin.close()
            except OSError:
                pass
        if any(j.host for j in running):       # let remote watchers end their commands first
            self._wait_all(min(self.term_grace, 2.0))
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for _, p, _, _ in self.procs:
                try:
                    os.killpg(p.pid, sig)      # the group outlives its leader when children remain
                except (ProcessLookupError, PermissionError):
                    pass
            if sig == signal.SIGTERM and not self._wait_all(self.term_grace):
                self._say("%s ignored SIGTERM for %.0f s; sending SIGKILL"
                          % (", ".join(j.name for j in self.alive()), self.term_grace))
        self._wait_all(5.0)
        for _, _, _, t in self.procs:
            t.join(timeout=2.0)
        return [j.name for j in running]

    def _wait_all(self, seconds):
        end = time.time() + seconds
        while time.time() < end:
            if not self.alive():
                return True
            time.sleep(self.poll)
        return not self.alive()

    def _report(self, job, tail, what):
        lines = list(tail)
        msg = "%s %s after %.1f s" % (job.name, what, time.time() - self.t0)
        if lines:
            msg += "; last %d line(s) of its output:\n    %s" % (len(lines), "\n    ".join(lines))
        else:
            msg += " (it printed nothing)"
        self._say(msg)

    def _callback_failure(self, job, tail):
        self._report(job, tail, "failed to execute a command from the workers")
        self.stop("%s cannot run the workers' command" % job.name)
        self._say("job FAILED: %s raised while handling a command from the workers (usually "
                  "set_optimizer: the pickled optimizer or LR scheduler cannot be imported "
                  "there). Without it the server would store the summed gradients as the "
                  "weights. Make the class importable on the servers (a module on the path, "
                  "not __main__) or pass --server-command." % job.name)
        return 1

    def run(self, timeout=None, grace=30.0):
        """Supervise until the workers are done, one fails, or ``timeout`` seconds pass."""
        deadline = self.t0 + timeout if timeout else None
        ending = None
        workers = [(j, p, tl) for j, p, tl, _ in self.procs if j.role == "worker"]
        others = [(j, p, tl) for j, p, tl, _ in self.procs if j.role != "worker"]
        try:
            while True:
                for j, p, tl in workers:
                    rc = p.poll()
                    if rc is not None and rc != 0:
                        self._report(j, tl, "exited with code %s" % exit_status(rc))
                        self.stop("%s failed" % j.name)
                        self._say("job FAILED: %s exited with code %s" % (j.name, exit_status(rc)))
                        return exit_status(rc)
                if all(p.poll() == 0 for _, p, _ in workers):
                    break
                for j, p, tl in others:
                    rc = p.poll()
                    if rc is not None and rc != 0:
                        self._report(j, tl, "exited with code %s while workers were running" % exit_status(rc))
                        self.stop("%s died" % j.name)
                        self._say("job FAILED: %s exited with code %s before the workers finished"
                                  % (j.name, exit_status(rc)))
                        return exit_status(rc)
                    if rc == 0 and ending is None:
                        # ps-lite ends servers and scheduler once every worker has finalized its
                        # kvstore; the workers are then shutting down and get `grace` seconds.
                        ending = (j, time.time())
                bad = [(j, tl) for j, _, tl in others if j.callback_error and time.time() - j.callback_error > 1.0]
                if bad:
                    return self._callback_failure(*bad[0])
                if ending and time.time() - ending[1] > grace:
                    late = [j for j, p, _ in workers if p.poll() is None]
                    for j, p, tl in workers:
                        if p.poll() is None:
                            self._report(j, tl, "still running %.0f s after %s exited" % (grace, ending[0].name))
                    self.stop("%s exited %.0f s ago" % (ending[0].name, grace))
                    self._say("job FAILED: %s exited (code 0) but %s did not finish within --grace %.0f s"
                              % (ending[0].name, ", ".join(j.name for j in late), grace))
                    return 1
                if deadline and time.time() > deadline:
                    late = self.alive()
                    crashed = [j.name for j, p, tl in workers if p.poll() is None and j.saw_traceback]
                    for j, p, tl in workers:
                        if p.poll() is None:
                            self._report(j, tl, "still running at the time limit")
                    self.stop("time limit of %.0f s reached" % timeout)
                    self._say("job FAILED: time limit of %.0f s reached (--timeout); still running were %s"
                              % (timeout, ", ".join(j.name for j in late)))
                    if crashed:
                        self._say("hint: %s printed a traceback but did not exit: a worker whose "
                                  "dist kvstore is alive waits at the shutdown barrier for the "
                                  "others. Wrap the script's main() in "
                                  "mxrepro.cli.run_main() so a crash ends the job at once "
                                  "(docs/distributed.md)" % ", ".join(crashed))
                    return 124
                time.sleep(self.poll)
        except KeyboardInterrupt:
            self.stop("interrupted")
            self._say("job interrupted")
            return 130
        # every worker succeeded: the servers and scheduler leave once the workers finalize.
        end = time.time() + grace
        if deadline:
            end = min(end, max(deadline, time.time() + 1.0))
        while time.time() < end and any(p.poll() is None for _, p, _ in others):
            time.sleep(self.poll)
        left = [j.name for j, p, _ in others if p.poll() is None]
        if left:
            self._say("workers finished but %s did not exit within %.0f s; stopping them"
                      % (", ".join(left), grace))
        self.stop()
        # a short job can end before the server's "Exception ignored" line was acted on above: the
        # readers are joined now, so every line of the servers' output has been seen.
        bad = [(j, tl) for j, _, tl in others if j.callback_error]
        if bad:
            return self._callback_failure(*bad[0])
        bad = [(j.name, exit_status(p.returncode)) for j, p, _ in others
               if j.name not in left and p.returncode not in (0, None)]
        if bad:
            self._say("warning: after the workers finished, %s"
                      % ", ".join("%s exited with code %s" % b for b in bad))
        self._say("job done: %d worker(s) exited 0 in %.1f s" % (len(workers), time.time() - self.t0))
        return 0
