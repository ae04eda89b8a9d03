"""Processes that end with the process that started them (Linux), so a killed launcher or training run
leaves no orphan behind:

* :func:`pdeathsig_preexec` -- a ``preexec_fn`` for ``subprocess.Popen``: the kernel sends the child a
  signal when the *thread* that started it ends (``PR_SET_PDEATHSIG``; kept across ``exec`` except for
  set-user-ID programs, and only for the direct child: a shell in between gets it, not its children);
* :func:`watch_launcher` -- the second line of defence in every process of a launched job (started by
  ``import mxrepro`` when ``MXREPRO_LAUNCHER_PID`` is set): a thread that ends the process group when the
  launcher is gone or the process was re-parented, even while the main thread is blocked in MXNet
  (a worker waiting on a dead server never reaches the point where it would act on SIGTERM);
* :func:`loader_workers_die_with_parent` -- Gluon DataLoader worker processes (``multiprocessing``
  fork children) get SIGKILL when the training process dies, and do not inherit its SIGTERM handler.

No MXNet import.
"""
import os
import signal
import sys
import threading
import time

__all__ = ["LAUNCHER_ENV", "pdeathsig_preexec", "die_with_parent", "watch_launcher", "loader_workers_die_with_parent"]

LAUNCHER_ENV = "MXREPRO_LAUNCHER_PID"   # set by the launcher: its pid (local jobs) or 'remote' (ssh jobs)
PR_SET_PDEATHSIG = 1
_prctl = None


def _libc_prctl():
    """libc's prctl, resolved once in the parent (nothing is imported between fork and exec)."""
    global _prctl
    if _prctl is None:
        try:
            import ctypes
            _prctl = ctypes.CDLL(None, use_errno=True).prctl
        except (OSError, AttributeError):  # not Linux
            _prctl = False
    return _prctl


def die_with_parent(sig, parent=None):
    """In a new child: receive ``sig`` when the parent thread ends; when ``parent`` (the pid that forked
    it) is already gone, take ``sig`` now. Returns True when the kernel accepted the request."""
    prctl = _libc_prctl()
    ok = bool(prctl) and prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0
    if parent is not None and os.getppid() != parent:
        os.kill(os.getpid(), int(sig))
    return ok


def pdeathsig_preexec(sig=signal.SIGTERM):
    """A ``preexec_fn`` giving the child ``sig`` when the calling thread ends (call it in the thread that
    lives as long as the children: the launcher's main thread)."""
    _libc_prctl()
    parent = os.getpid()

    def preexec():
        die_with_parent(sig, parent)
    return preexec


def _alive(pid):
    """False when ``pid`` does not exist or is a zombie."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True


def _end(reason):
    try:
        sys.stderr.write("%s (pid %d): %s; exiting\n" % (os.path.basename(sys.argv[0] or "python"), os.getpid(),
                                                         reason))
        sys.stderr.flush()
    except Exception:  # noqa: BLE001  (the launcher's end of the pipe may be gone)
        pass
    if os.getpgrp() == os.getpid():      # a group of its own (the launcher's jobs): data-loader children too
        os.killpg(os.getpid(), signal.SIGKILL)
    os._exit(143)


_watching = []


def watch_launcher(interval=0.5, env=None):
    """Start (once) the thread that ends this process when the launcher named by ``MXREPRO_LAUNCHER_PID``
    is gone, or when the parent this process started with is (it is re-parented). No-op without it."""
    env = os.environ if env is None else env
    value = env.get(LAUNCHER_ENV)
    if not value or _watching:
        return None
    launcher = int(value) if value.isdigit() else None
    parent = os.getppid()

    def run():
        while True:
            if launcher is not None and not _alive(launcher):
                _end("the launcher (pid %d) is gone" % launcher)
            if os.getppid() != parent:
                _end("its parent (pid %d) is gone" % parent)
            time.sleep(interval)
    t = threading.Thread(target=run, name="launcher-watchdog", daemon=True)
    t.start()
    _watching.append(t)
    return t


class _AfterFork:
    """multiprocessing after-fork hook (a weak-referenceable holder of the parent pid)."""

    def __init__(self, parent):
        self.parent = parent

    def __call__(self):
        signal.signal(signal.SIGTERM, signal.SIG_DFL)   # Pool.terminate() must end it, whatever the parent set
        if os.getppid() == self.parent:
            die_with_parent(signal.SIGKILL, self.parent)


_hook = []


def loader_workers_die_with_parent():
    """Every ``multiprocessing`` child this process forks from now on (Gluon DataLoader workers) is killed
    when this process dies (any way, kill -9 included), silently, and keeps SIGTERM's default action."""
    if _hook and _hook[0].parent == os.getpid():
        return
    import multiprocessing.util
    _libc_prctl()
    _hook[:] = [_AfterFork(os.getpid())]
    multiprocessing.util.register_after_fork(_hook[0], _AfterFork.__call__)
