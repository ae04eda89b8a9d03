"""Small pieces every training script shares: devices, logging, crash-safe files, checkpoints,
kvstore and data sharding. Module-API (FBN) and Gluon (AFF, bL-Net) scripts both use these."""
import glob
import logging
import os
import re
import sys
import tempfile

import mxnet as mx


def parse_gpus(gpus):
    """``'0,1'`` -> [gpu(0), gpu(1)]; empty/None -> [cpu()]. Asking for GPUs that do not exist is an
    error that says what is available (the stock CPU wheel has none)."""
    if gpus is None or str(gpus).strip() in ("", "-1", "cpu"):
        return [mx.cpu()]
    try:
        ids = [int(g) for g in str(gpus).split(",") if g.strip() != ""]
    except ValueError:
        raise SystemExit("error: --gpus expects a comma-separated list of GPU ids such as 0,1 (empty for CPU), got %r" % gpus)
    try:
        n = mx.context.num_gpus()
    except mx.base.MXNetError:
        n = 0
    bad = [i for i in ids if i < 0 or i >= n]
    if bad:
        raise SystemExit("error: --gpus %s asks for GPU(s) %s but this MXNet sees %d GPU(s)%s. "
                         "Pass --gpus '' to train on the CPU." % (gpus, bad, n,
                                                                   " (CPU-only wheel)" if not mx.runtime.Features().is_enabled("CUDA") else ""))
    return [mx.gpu(i) for i in ids]


def num_gpus_contexts(num_gpus):
    """gluon-cv style ``--num-gpus N`` -> contexts (0 -> CPU)."""
    return parse_gpus(",".join(str(i) for i in range(int(num_gpus))) if int(num_gpus) > 0 else "")


def setup_logging(log_file=None, level=logging.INFO, fmt="%(asctime)s %(message)s"):
    """Log to the console and, when given, to ``log_file`` (its folder is created)."""
    root = logging.getLogger()
    root.setLevel(level)
    for h in list(root.handlers):
        root.removeHandler(h)
    handlers = [logging.StreamHandler(sys.stdout)]
    if log_file:
        d = os.path.dirname(os.path.abspath(log_file))
        os.makedirs(d, exist_ok=True)
        handlers.append(logging.FileHandler(log_file))
    for h in handlers:
        h.setFormatter(logging.Formatter(fmt))
        root.addHandler(h)
    return root


def atomic_write(path, write_fn):
    """Call ``write_fn(tmp_path)`` then rename onto ``path``: a crash never leaves a half file."""
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".tmp-", suffix=os.path.splitext(path)[1])
    os.close(fd)
    try:
        write_fn(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file the usual permissions
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def checkpoint_epochs(prefix, suffix=".params"):
    """Epoch numbers N of the existing ``<prefix>-NNNN<suffix>`` files, sorted."""
    pat = re.compile(re.escape(os.path.basename(prefix)) + r"-(\d{4})" + re.escape(suffix) + "$")
    out = []
    for f in glob.glob(prefix + "-*" + suffix):
        m = pat.search(os.path.basename(f))
        if m:
            out.append(int(m.group(1)))
    return sorted(out)


def latest_checkpoint(prefix, suffix=".params"):
    """The highest saved epoch for ``prefix`` or None."""
    eps = checkpoint_epochs(prefix, suffix)
    return eps[-1] if eps else None


def create_kvstore(kv_store):
    """``mx.kv.create`` with a clear message for the distributed types launched by hand."""
    if kv_store.startswith("dist") and "DMLC_ROLE" not in os.environ:
        raise SystemExit("error: --kv-store %s needs the distributed launcher: run it through "
                         "`python tools/launch.py -n WORKERS ...` (see README, Scale-out)" % kv_store)
    if kv_store == "horovod":
        try:
            import horovod.mxnet  # noqa: F401
        except ImportError:
            raise SystemExit("error: --kv-store horovod needs Horovod (pip install horovod)")
    return mx.kv.create(kv_store)


def worker_shard(kv):
    """(part_index, num_parts) for this worker, so every worker reads a disjoint equal share."""
    if kv is not None and "dist" in kv.type:
        return kv.rank, kv.num_workers
    return 0, 1
