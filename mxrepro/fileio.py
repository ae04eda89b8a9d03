"""File primitives shared by the checkpoints, the data checks, the weight readers and the disk checks
(no project or MXNet import, so every layer may use them).

* :func:`atomic_write` -- write through a temporary file in the same folder, fsync, rename: a reader sees
  the old file or the new one, never half of one.
* :func:`crc32_of` -- the CRC-32 that checkpoint descriptions record.
* :func:`probe_writable` -- can a file be created where a path would go (tested without leaving
  anything behind).
"""
import os
import secrets
import tempfile
import zlib

__all__ = ["atomic_write", "crc32_of", "fsync_path", "fsync_dir", "umask_mode", "nearest_existing", "probe_writable"]


def crc32_of(path, chunk=1 << 22):
    """CRC-32 of a file's bytes (as the checkpoint descriptions record it)."""
    c = 0
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            c = zlib.crc32(block, c)
    return c & 0xFFFFFFFF


def fsync_path(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(d):
    """fsync a folder (its renames reach the disk); quietly nothing where folders cannot be opened."""
    try:
        fd = os.open(d, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def umask_mode():
    """The mode a plain ``open(..., 'w')`` would give a new file (mkstemp makes 0600)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def _tmp_name(path):
    d, b = os.path.split(os.path.abspath(path))
    return os.path.join(d, ".tmp-%s.%s" % (b, secrets.token_hex(4)))


def atomic_write(path, write_fn):
    """Call ``write_fn(tmp_path)``, fsync, rename onto ``path``: a crash never leaves a half file."""
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    tmp = _tmp_name(path)
    try:
        write_fn(tmp)
        os.chmod(tmp, umask_mode())
        fsync_path(tmp)
        os.replace(tmp, path)
        fsync_dir(d)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def nearest_existing(path):
    """``path`` itself or its nearest existing parent (where a ``makedirs`` would start)."""
    p = os.path.abspath(path)
    while not os.path.exists(p) and os.path.dirname(p) != p:
        p = os.path.dirname(p)
    return p


def probe_writable(folder):
    """None when a file can be created in ``folder`` (or in the nearest existing parent, which is where
    a makedirs would start), else the reason."""
    probe = nearest_existing(folder)
    if not os.path.isdir(probe):
        return "%s is a file, not a folder" % probe
    try:
        fd, tmp = tempfile.mkstemp(prefix=".mxrepro-write-test-", dir=probe)
        os.close(fd)
        os.remove(tmp)
    except OSError as e:
        return "%s: %s" % (probe, e.strerror or e)
    return None
