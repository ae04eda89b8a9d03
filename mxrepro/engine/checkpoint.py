"""Checkpoints: the same files and guarantees for the Module-API (FBN) and Gluon (AFF, bL-Net) runs.

A checkpoint ``<dir>/<prefix>-<tag>`` is three files written atomically (temporary file + rename),
``.params`` and ``.states`` first and the ``.json`` description last, which records the size and
CRC-32 of the other two: a crash between the renames leaves a description that does not match, and
that checkpoint is skipped on resume instead of loading half of one.

* ``latest``: after every epoch (parameters, optimizer state, epochs done, update count, the best
  score so far, the seed; the schedule is rebuilt from the config at that update count). A re-run
  of the same command continues from it.
* ``best``: whenever the validation top-1 beats the best so far (also across a resume).
* ``NNNN`` (epochs done, 4 digits): every ``save_frequency`` epochs. For Module-API networks these
  are the original FBN scripts' files, ``<prefix>-NNNN.params`` (``arg:``/``aux:`` names, as
  ``mx.model.save_checkpoint`` writes them) + ``<prefix>-symbol.json``, loadable with
  ``mx.model.load_checkpoint(prefix, N)``. When ``latest`` and ``NNNN`` are written at the same
  epoch the second is a hard link of the first (no second copy on disk).

Parameters are written by ``net.save_parameters`` / ``mx.nd.save``, optimizer states by
``Trainer.save_states`` / ``Module.save_optimizer_states``.
"""
import glob
import json
import os
import re
import tempfile
import time
import zlib

__all__ = ["Checkpointer", "atomic_write", "crc32_of"]

META_VERSION = 1


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


def _link(src, dst):
    """``dst`` becomes the same file as ``src`` (hard link, copy where links are not possible)."""
    def write(tmp):
        os.remove(tmp)
        try:
            os.link(src, tmp)
        except OSError:
            import shutil
            shutil.copyfile(src, tmp)
    atomic_write(dst, write)


def crc32_of(path, chunk=1 << 22):
    c = 0
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            c = zlib.crc32(block, c)
    return c & 0xFFFFFFFF


def _describe(path):
    return {"name": os.path.basename(path), "size": os.path.getsize(path), "crc32": crc32_of(path)}


class Checkpointer:
    """Checkpoints of one run under ``directory`` with file prefix ``prefix``. ``step`` (a GluonStep or
    ModuleStep) writes and reads the parameter and optimizer-state files; rank != 0 writes nothing."""

    def __init__(self, directory, prefix, step, rank=0, log=None):
        self.dir, self.prefix, self.step, self.rank = directory, prefix, step, rank
        self.base = os.path.join(directory, prefix)
        self.log = log

    def path(self, tag, ext):
        return "%s-%s%s" % (self.base, tag, ext)

    # -- writing --------------------------------------------------------------------------------
    def save(self, tag, meta, same_as=None):
        """Write checkpoint ``tag`` with description ``meta`` (epoch, num_update, best, ...). With
        ``same_as`` (a tag just written for the same state) the files are linked instead of written."""
        if self.rank != 0:
            return None
        params, states = self.path(tag, ".params"), self.path(tag, ".states")
        if same_as is not None:
            _link(self.path(same_as, ".params"), params)
            if os.path.exists(self.path(same_as, ".states")):
                _link(self.path(same_as, ".states"), states)
        else:
            self.step.write_extras(self.base)
            atomic_write(params, self.step.save_params)
            if self.step.can_save_states:
                atomic_write(states, self.step.save_states)
        files = {"params": _describe(params)}
        if os.path.exists(states) and (same_as is not None or self.step.can_save_states):
            files["states"] = _describe(states)
        meta = dict(meta, version=META_VERSION, tag=tag, files=files, time=time.strftime("%Y-%m-%d %H:%M:%S"))

        def dump(p):
            with open(p, "w") as f:
                json.dump(meta, f, indent=1, default=str)
        atomic_write(self.path(tag, ".json"), dump)
        return meta

    # -- reading --------------------------------------------------------------------------------
    def read(self, tag):
        """The description of checkpoint ``tag`` if its files are complete and unchanged, else None (with
        a warning naming what is wrong)."""
        mpath = self.path(tag, ".json")
        if not os.path.exists(mpath):
            return None
        try:
            with open(mpath) as f:
                meta = json.load(f)
            for key, info in meta["files"].items():
                p = os.path.join(self.dir, info["name"])
                if not os.path.exists(p):
                    raise ValueError("%s is missing" % info["name"])
                if os.path.getsize(p) != info["size"] or crc32_of(p) != info["crc32"]:
                    raise ValueError("%s does not match its description (interrupted while saving?)" % info["name"])
        except (ValueError, KeyError, TypeError, json.JSONDecodeError) as e:
            if self.log:
                self.log.warning("checkpoint %s is not usable: %s", os.path.basename(mpath), e)
            return None
        meta["params_path"] = os.path.join(self.dir, meta["files"]["params"]["name"])
        st = meta["files"].get("states")
        meta["states_path"] = os.path.join(self.dir, st["name"]) if st else None
        return meta

    def periodic_epochs(self):
        """Epoch numbers N of the existing ``<prefix>-NNNN.params`` files, newest first."""
        pat = re.compile(re.escape(os.path.basename(self.base)) + r"-(\d{4})\.params$")
        out = []
        for f in glob.glob(glob.escape(self.base) + "-*.params"):
            m = pat.search(os.path.basename(f))
            if m:
                out.append(int(m.group(1)))
        return sorted(out, reverse=True)

    def find_resume(self):
        """The checkpoint a re-run continues from: ``latest`` when it is intact, else the newest intact
        ``NNNN`` (with its description), else a bare ``NNNN.params`` written by the original FBN
        scripts (no description: epoch from the name, states when the ``.states`` file exists)."""
        meta = self.read("latest")
        if meta is not None:
            return meta
        for e in self.periodic_epochs():
            tag = "%04d" % e
            m = self.read(tag)
            if m is not None:
                return m
            if not os.path.exists(self.path(tag, ".json")):
                states = self.path(tag, ".states")
                return {"tag": tag, "epoch": e, "num_update": None, "best": None, "params_path": self.path(tag, ".params"),
                        "states_path": states if os.path.exists(states) else None, "foreign": True}
        return None

    def best_score(self):
        m = self.read("best")
        return m["best"] if m and m.get("best") else None

    def existing(self):
        """Files of this prefix that a fresh run would overwrite."""
        return sorted(glob.glob(glob.escape(self.base) + "-*"))
