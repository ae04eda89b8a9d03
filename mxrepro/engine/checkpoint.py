"""Checkpoints: the same files and guarantees for the Module-API (FBN) and Gluon (AFF, bL-Net) runs.

A checkpoint ``<dir>/<prefix>-<tag>`` is ``.params`` (parameters), ``.states`` (optimizer state) and a
``.json`` description (epoch, update count, best score, settings, history, and the size and CRC-32 of
the other two files). Tags:

* ``latest``: after every epoch; ``best``: when the validation top-1 improved; ``NNNN`` (epochs done,
  4 digits): every ``save_frequency`` epochs. For Module-API networks ``<prefix>-NNNN.params``
  (``arg:``/``aux:`` names) + ``<prefix>-symbol.json`` load with ``mx.model.load_checkpoint``.
* Every tag is its own file (a copy, never a hard link) with its own CRC in its own ``.json``.

**One unit** (:meth:`Checkpointer.save`): all files of all tags of one epoch are written to temporary
names ``.tmp-<prefix>-<tag>.<ext>.<id>`` and fsynced; then a journal ``<prefix>.journal`` listing the
renames (with sizes and CRCs) is written and atomically renamed into place (the commit point); then
the renames (data files first, descriptions last), a folder fsync, and the journal is removed. A
failure before the commit point removes the temporary files and re-raises the original error (the
previous checkpoint stays intact); after it, :meth:`Checkpointer.recover` (run by the lock holder at
start) rolls the journal forward when every listed file is complete, else discards it.

**Fault injection** for tests: with ``MXREPRO_FAULT_CKPT=N`` in the environment the process kills
itself with SIGKILL just before the Nth file step of its checkpoint writes (counted from the start of
the process; :func:`commit_steps` says how many steps one write has).

**One run per prefix**: :class:`RunLock` holds ``<dir>/<prefix>.lock`` with ``fcntl.flock`` for the
life of the process (the kernel releases it when the process dies) and records pid, host, start time
and command in it.
"""
import errno
import fcntl
import glob
import json
import os
import re
import secrets
import shutil
import signal
import socket
import time

from ..fileio import atomic_write, crc32_of
from ..fileio import fsync_dir as _fsync_dir, fsync_path as _fsync_path, umask_mode as _umask_mode

__all__ = ["Checkpointer", "RunLock", "atomic_write", "crc32_of", "commit_steps", "FAULT_ENV"]

META_VERSION = 2
FAULT_ENV = "MXREPRO_FAULT_CKPT"
_steps_done = [0]


def _fault_point():
    """Count one checkpoint file step; with ``MXREPRO_FAULT_CKPT=N`` die with SIGKILL before the Nth."""
    n = os.environ.get(FAULT_ENV)
    if not n:
        return
    _steps_done[0] += 1
    if _steps_done[0] == int(n):
        os.kill(os.getpid(), signal.SIGKILL)


def commit_steps(num_tags, states=True):
    """File steps (fault points) of one :meth:`Checkpointer.save` of ``num_tags`` tags."""
    per_tag = 2 if states else 1
    # data files (written or copied) + fsync + descriptions + journal write + journal rename
    # + renames + folder fsync + journal removal
    return num_tags * per_tag + 1 + num_tags + 2 + num_tags * (per_tag + 1) + 2


def _copy(src, dst):
    """``dst`` becomes an independent copy of ``src`` (a reflink where the file system has them)."""
    with open(src, "rb") as fs, open(dst, "wb") as fd:
        try:
            fcntl.ioctl(fd.fileno(), 0x40049409, fs.fileno())  # FICLONE: shares blocks copy-on-write
            return
        except (OSError, AttributeError):
            pass
    shutil.copyfile(src, dst)


def _matches(path, size, crc):
    return os.path.isfile(path) and os.path.getsize(path) == size and crc32_of(path) == crc


class Checkpointer:
    """Checkpoints of one run under ``directory`` with file prefix ``prefix``. ``step`` (a GluonStep or
    ModuleStep) writes and reads the parameter and optimizer-state files; rank != 0 writes nothing.
    After :meth:`find_resume`, ``rejected`` maps each tag that exists but is not usable to the reason."""

    TAG_RE = r"(latest|best|\d{4}|symbol)"

    def __init__(self, directory, prefix, step, rank=0, log=None):
        self.dir, self.prefix, self.step, self.rank = directory, prefix, step, rank
        self.base = os.path.join(directory, prefix)
        self.journal = self.base + ".journal"
        self.log = log
        self.rejected = {}

    def path(self, tag, ext):
        return "%s-%s%s" % (self.base, tag, ext)

    def _tmp(self, tag, ext):
        return os.path.join(self.dir, ".tmp-%s-%s%s.%s" % (self.prefix, tag, ext, secrets.token_hex(4)))

    # -- writing --------------------------------------------------------------------------------
    def save(self, tags, meta):
        """Write ``tags`` (one tag or a list; all hold the current state) with description ``meta`` as one
        unit (see the module doc). An error before the commit point (e.g. ENOSPC) removes the temporary
        files and is re-raised with the previous checkpoints intact. Returns the first tag's description."""
        if self.rank != 0:
            return None
        tags = [tags] if isinstance(tags, str) else list(tags)
        os.makedirs(self.dir, exist_ok=True)
        created, renames = [], []
        mode = _umask_mode()
        try:
            self.step.write_extras(self.base)
            states = bool(self.step.can_save_states)
            first = {}
            for i, tag in enumerate(tags):
                for ext, writer in ((".params", self.step.save_params), (".states", self.step.save_states)):
                    if ext == ".states" and not states:
                        continue
                    tmp = self._tmp(tag, ext)
                    _fault_point()
                    created.append(tmp)
                    if i == 0:
                        writer(tmp)
                        first[ext] = tmp
                    else:
                        _copy(first[ext], tmp)
                    os.chmod(tmp, mode)
                    renames.append((tmp, self.path(tag, ext)))
            _fault_point()
            for tmp in created:
                _fsync_path(tmp)
            files = {"params": self._describe(first[".params"], self.path(tags[0], ".params"))}
            if states:
                files["states"] = self._describe(first[".states"], self.path(tags[0], ".states"))
            metas = []
            for tag in tags:
                m = dict(meta, version=META_VERSION, tag=tag, time=time.strftime("%Y-%m-%d %H:%M:%S"),
                         files={k: dict(v, name=os.path.basename(self.path(tag, "." + k))) for k, v in files.items()})
                tmp = self._tmp(tag, ".json")
                _fault_point()
                created.append(tmp)
                with open(tmp, "w") as f:
                    json.dump(m, f, indent=1, default=str)
                    f.flush()
                    os.fsync(f.fileno())
                os.chmod(tmp, mode)
                renames.append((tmp, self.path(tag, ".json")))
                metas.append(m)
            entries = [{"tmp": os.path.basename(t), "final": os.path.basename(p), "size": os.path.getsize(t),
                        "crc32": crc32_of(t)} for t, p in renames]
            jtmp = self._tmp("journal", "")
            _fault_point()
            created.append(jtmp)
            with open(jtmp, "w") as f:
                json.dump({"version": 1, "renames": entries}, f)
                f.flush()
                os.fsync(f.fileno())
            _fault_point()
            os.replace(jtmp, self.journal)  # the commit point
            created.remove(jtmp)
            _fsync_dir(self.dir)
        except BaseException:
            for t in created:
                try:
                    os.remove(t)
                except OSError:
                    pass
            raise
        for tmp, final in renames:
            _fault_point()
            os.replace(tmp, final)
        _fault_point()
        _fsync_dir(self.dir)
        _fault_point()
        os.remove(self.journal)
        _fsync_dir(self.dir)
        return metas[0]

    @staticmethod
    def _describe(tmp, final):
        return {"name": os.path.basename(final), "size": os.path.getsize(tmp), "crc32": crc32_of(tmp)}

    # -- recovery (lock holder only) ----------------------------------------------------------------
    def recover(self):
        """Finish (all listed files complete) or discard an interrupted write, then remove this prefix's
        temporary files. Call only while holding the run's lock. Returns a line saying what was done, or None."""
        msg = None
        if os.path.exists(self.journal):
            try:
                with open(self.journal) as f:
                    entries = json.load(f)["renames"]
                todo, ok = [], True
                for e in entries:
                    tmp, final = os.path.join(self.dir, e["tmp"]), os.path.join(self.dir, e["final"])
                    if _matches(tmp, e["size"], e["crc32"]):
                        todo.append((tmp, final))
                    elif not (not os.path.exists(tmp) and _matches(final, e["size"], e["crc32"])):
                        ok = False
                        break
            except (OSError, ValueError, KeyError, TypeError):
                entries, ok = [], False
            if ok:
                for tmp, final in todo:
                    os.replace(tmp, final)
                _fsync_dir(self.dir)
                msg = "completed the checkpoint write that was interrupted after its commit point (%s)" % \
                    ", ".join(sorted({e["final"].rsplit(".", 1)[0] for e in entries}))
            else:
                msg = "discarded an interrupted checkpoint write (%s): its files were incomplete" % \
                    os.path.basename(self.journal)
            os.remove(self.journal)
            _fsync_dir(self.dir)
        self.clean_tmp()
        return msg

    def clean_tmp(self):
        """Remove this prefix's temporary files (zero-byte ones included); returns their names."""
        pat = re.compile(r"^\.tmp-%s(-%s\.(params|states|json)|-journal)\.[0-9a-f]+$"
                         % (re.escape(self.prefix), self.TAG_RE))
        gone = []
        for f in os.listdir(self.dir) if os.path.isdir(self.dir) else []:
            if pat.match(f):
                try:
                    os.remove(os.path.join(self.dir, f))
                    gone.append(f)
                except OSError:
                    pass
        return gone

    # -- reading --------------------------------------------------------------------------------
    def read(self, tag):
        """The description of checkpoint ``tag`` if its files are complete and unchanged, else None (the
        reason in ``self.rejected[tag]`` when some of it exists)."""
        mpath = self.path(tag, ".json")
        self.rejected.pop(tag, None)
        if not os.path.exists(mpath):
            if os.path.exists(self.path(tag, ".params")) and tag in ("latest", "best"):
                self.rejected[tag] = "%s is missing" % os.path.basename(mpath)
            return None
        try:
            with open(mpath) as f:
                meta = json.load(f)
            for key, info in meta["files"].items():
                p = os.path.join(self.dir, info["name"])
                if not os.path.exists(p):
                    raise ValueError("%s is missing" % info["name"])
                if os.path.getsize(p) != info["size"]:
                    raise ValueError("%s has %d bytes, its description says %d" % (info["name"], os.path.getsize(p),
                                                                                  info["size"]))
                if crc32_of(p) != info["crc32"]:
                    raise ValueError("%s does not match the CRC-32 in its description" % info["name"])
            int(meta["epoch"])
        except (ValueError, KeyError, TypeError, OSError) as e:
            self.rejected[tag] = str(e) if not isinstance(e, (KeyError, TypeError)) else \
                "%s is not a checkpoint description" % os.path.basename(mpath)
            if isinstance(e, json.JSONDecodeError):
                self.rejected[tag] = "%s is not valid JSON" % os.path.basename(mpath)
            return None
        meta["params_path"] = os.path.join(self.dir, meta["files"]["params"]["name"])
        st = meta["files"].get("states")
        meta["states_path"] = os.path.join(self.dir, st["name"]) if st else None
        return meta

    def periodic_epochs(self):
        """Epoch numbers N of the existing ``<prefix>-NNNN.params`` / ``.json`` files, newest first."""
        pat = re.compile(re.escape(os.path.basename(self.base)) + r"-(\d{4})\.(params|json)$")
        out = set()
        for f in glob.glob(glob.escape(self.base) + "-*"):
            m = pat.match(os.path.basename(f))
            if m:
                out.add(int(m.group(1)))
        return sorted(out, reverse=True)

    def find_resume(self):
        """The newest usable checkpoint of any kind (``latest``, ``NNNN``, ``best``; at equal epochs in that
        order), or a bare ``NNNN.params`` of the original FBN scripts (no description: epoch from the name,
        states when the ``.states`` file exists); None when there is none. Fills ``rejected``."""
        self.rejected = {}
        found = []
        for rank, tag in [(2, "latest"), (0, "best")] + [(1, "%04d" % e) for e in self.periodic_epochs()]:
            m = self.read(tag)
            if m is not None:
                found.append((int(m["epoch"]), rank, m))
            elif rank == 1 and not os.path.exists(self.path(tag, ".json")):
                states = self.path(tag, ".states")
                found.append((int(tag), -1, {
                    "tag": tag, "epoch": int(tag), "num_update": None, "best": None,
                    "params_path": self.path(tag, ".params"), "states_path": states if os.path.exists(states) else None,
                    "foreign": True}))
        if not found:
            return None
        return max(found, key=lambda t: (t[0], t[1]))[2]

    def rejected_line(self):
        """The unusable checkpoints in one phrase: ``latest is incomplete (why); 0004 is ...``."""
        order = sorted(self.rejected, key=lambda t: (t != "latest", t))
        return "; ".join("%s is incomplete (%s)" % (t, self.rejected[t]) for t in order)

    def best_score(self):
        m = self.read("best")
        return m["best"] if m and m.get("best") else None

    def existing(self):
        """Files of this prefix that a fresh run would overwrite."""
        return sorted(glob.glob(glob.escape(self.base) + "-*"))


class RunLock:
    """``<directory>/<prefix>.lock``: one training run per checkpoint prefix. :meth:`acquire` takes an
    exclusive ``fcntl.flock`` (held until :meth:`release` or the process ends) and writes pid, host,
    start time and command into the file, so a refused run can name the running one."""

    def __init__(self, directory, prefix):
        self.path = os.path.join(directory, prefix + ".lock")
        self.fd = None

    def holder(self):
        """The recorded {pid, host, started, command} of the file, or None."""
        try:
            with open(self.path) as f:
                return json.loads(f.read() or "null")
        except (OSError, ValueError):
            return None

    @staticmethod
    def describe(info):
        if not info:
            return "a process that has not recorded itself yet"
        return "pid %s on %s, started %s, command: %s" % (info.get("pid"), info.get("host"), info.get("started"),
                                                          info.get("command"))

    def acquire(self, command):
        """Take the lock; returns the info of a dead run whose lock file was left behind (else None).
        Raises BlockingIOError with the running holder's info as ``.holder`` when another process has it."""
        os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                os.close(fd)
                if e.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    raise
                err = BlockingIOError(errno.EWOULDBLOCK, "locked", self.path)
                err.holder = self.holder()
                raise err
            try:  # the file may have been removed by a run that ended in between: lock the new one
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        old = os.read(fd, 1 << 16)
        try:
            stale = json.loads(old.decode() or "null")
        except ValueError:
            stale = {"pid": "?", "host": "?", "started": "?", "command": "(unreadable lock file)"} if old else None
        info = {"pid": os.getpid(), "host": socket.gethostname(),
                "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "command": command}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
        os.fsync(fd)
        self.fd = fd
        return stale

    def active(self):
        """Without taking it: the info of the run holding the lock, or None (dry runs)."""
        info = self.holder()
        if not info:
            return None
        if info.get("host") == socket.gethostname():
            try:
                os.kill(int(info["pid"]), 0)
            except (OSError, ValueError, TypeError, KeyError):
                return None
        return info

    def release(self):
        if self.fd is None:
            return
        try:
            if os.stat(self.path).st_ino == os.fstat(self.fd).st_ino:
                os.remove(self.path)
        except OSError:
            pass
        os.close(self.fd)
        self.fd = None
