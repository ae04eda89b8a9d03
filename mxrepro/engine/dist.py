"""The worker side of distributed training (``--kv-store dist_*`` under ``tools/launch.py``; the
launcher itself is :mod:`mxrepro.launcher`): kvstore creation with clear errors, the rank
announcement the launcher reads, and the fail-fast exit that keeps a crashed worker from hanging
the job at the kvstore's shutdown barrier (docs/reference/mxnet.md §1.4, §6). A worker whose launcher
dies ends with it: SIGTERM from the kernel, and the launcher watchdog (:mod:`mxrepro.lifeline`) when
it is blocked on a dead server and never gets to act on the signal."""
import os
import sys

from ..launcher import RANK_MARK
from ..lifeline import watch_launcher

__all__ = ["create_kvstore", "worker_shard", "announce_rank", "fail_fast", "guard_worker", "is_dist", "is_sync_dist"]


def create_kvstore(kv_store):
    """``mx.kv.create`` for distributed types (with a clear message when they are launched by hand, and
    the worker guard installed); the type string otherwise (Module and Gluon create local ones)."""
    if not (kv_store.startswith("dist") or kv_store == "horovod"):
        return kv_store
    if kv_store.startswith("dist") and "DMLC_ROLE" not in os.environ:
        raise SystemExit("error: --kv-store %s needs the distributed launcher: run it through "
                         "`python tools/launch.py -n WORKERS ...` (see README, Scale-out)" % kv_store)
    if kv_store == "horovod":
        try:
            import horovod.mxnet  # noqa: F401
        except ImportError:
            raise SystemExit("error: --kv-store horovod needs Horovod (pip install horovod)")
    import mxnet as mx
    return guard_worker(mx.kv.create(kv_store))


def is_dist(kv):
    return kv is not None and not isinstance(kv, str) and "dist" in kv.type


def is_sync_dist(kv):
    return is_dist(kv) and "_sync" in kv.type


def worker_shard(kv):
    """(part_index, num_parts) for this worker, so every worker reads a disjoint equal share."""
    if is_dist(kv):
        return kv.rank, kv.num_workers
    return 0, 1


def announce_rank(kv):
    """Print the line from which the launcher learns this worker's ``kv.rank`` (ps-lite numbers
    workers itself, so it can differ from the launch index ``DMLC_TASK_ID``); the launcher then
    labels the worker's output ``[worker I (kv.rank R)]``. No-op for non-dist kvstores."""
    if kv is not None and "dist" in getattr(kv, "type", ""):
        print("%s%d of %d (launch index %s)" % (RANK_MARK, kv.rank, kv.num_workers,
                                                os.environ.get("DMLC_TASK_ID", "?")), flush=True)


def _hard_exit(code):
    for f in (sys.stdout, sys.stderr):
        try:
            f.flush()
        except Exception:
            pass
    os._exit(code)


class fail_fast(object):
    """Context manager for a worker's main: when it ends with an exception or ``sys.exit(N != 0)``
    while this process is a ps-lite worker (``DMLC_ROLE=worker``), print the error and leave with
    ``os._exit`` at once.

    Why: the normal interpreter shutdown destroys the dist kvstore, whose destructor waits for
    pending pushes/pulls and then at a barrier for every other worker (MXNet's KVStoreDist), so
    a crashed worker would hang until the launcher's ``--timeout`` instead of failing the job now.
    A normal return is left alone (the barrier is how workers finish together). Outside a
    distributed job it changes nothing.

        if __name__ == '__main__':
            with mxrepro.engine.dist.fail_fast():
                main()
    """

    def __enter__(self):
        return self

    def __exit__(self, etype, value, tb):
        if etype is None or os.environ.get("DMLC_ROLE") != "worker":
            return False
        if issubclass(etype, SystemExit):
            code = value.code
            if code is None or code == 0:
                return False
            if not isinstance(code, int):
                sys.stderr.write("%s\n" % code)
                code = 1
        else:
            import traceback
            traceback.print_exception(etype, value, tb)
            code = 130 if issubclass(etype, KeyboardInterrupt) else 1
        sys.stderr.write("worker %s: exiting with code %d without the kvstore shutdown barrier "
                         "(mxrepro.engine.dist.fail_fast)\n" % (os.environ.get("DMLC_TASK_ID", "?"), code))
        _hard_exit(code)


def guard_worker(kv):
    """Call right after creating the kvstore in a worker: announces the rank to the launcher
    (:func:`announce_rank`) and, for dist kvstores, makes an uncaught exception end the process at
    once (``sys.excepthook`` -> traceback, then ``os._exit(1)``; see :class:`fail_fast` for why).
    ``sys.exit(N)`` is not an exception hook case: wrap ``main()`` in :class:`fail_fast` too."""
    if kv is None or "dist" not in getattr(kv, "type", ""):
        return kv
    watch_launcher()  # normally running since `import mxrepro`; a no-op when not launched
    announce_rank(kv)
    previous = sys.excepthook

    def hook(etype, value, tb):
        previous(etype, value, tb)
        _hard_exit(130 if issubclass(etype, KeyboardInterrupt) else 1)
    sys.excepthook = hook
    return kv
