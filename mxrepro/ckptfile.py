"""Reader-side checks of weight files, shared by every tool and training script that loads one.

* :func:`verify_checkpoint_file` -- this project's checkpoints (``<prefix>-<tag>.params`` / ``.states``)
  have a ``<prefix>-<tag>.json`` beside them recording each file's size and CRC-32
  (:mod:`mxrepro.engine.checkpoint`); a file that no longer matches is refused with one line naming it,
  unless the caller passes ``verify=False`` (the ``--ignore-checksum`` flag: loaded with a warning). A
  file without such a description (released or original weights) is not checked here.
* :func:`check_readable` / :func:`check_writable` -- one-line messages for missing, unreadable and
  unwritable paths, before anything is loaded or converted.
* :func:`mx_error_line` -- the meaningful line of an MXNetError (whose text carries a C++ stack trace
  and the word "Traceback").

No MXNet import: the checks run before a network is built.
"""
import json
import os
import re

from .fileio import crc32_of, probe_writable

__all__ = ["WeightsFileError", "ChecksumError", "OVERRIDE_FLAG", "description_of", "verify_checkpoint_file",
           "check_readable", "check_writable", "check_weights", "add_override_flag", "mx_error_line", "crc32_of"]

OVERRIDE_FLAG = "--ignore-checksum"


class WeightsFileError(ValueError):
    """A weight file that cannot be used; the message is one line naming the file."""


class ChecksumError(WeightsFileError):
    """A checkpoint whose size or CRC-32 differs from the one recorded beside it."""


def description_of(path):
    """(description path, recorded entry {name, size, crc32}) of the ``.json`` beside ``path``, or
    (None, None) when there is none or it describes no such file (not one of this project's checkpoints).
    An unreadable description raises :class:`ChecksumError`."""
    side = os.path.splitext(path)[0] + ".json"
    if not os.path.isfile(side):
        return None, None
    try:
        with open(side) as f:
            meta = json.load(f)
    except (OSError, ValueError) as e:
        raise ChecksumError("%s: its description %s cannot be read (%s); pass %s to load it unchecked"
                            % (path, os.path.basename(side), " ".join(str(e).split()), OVERRIDE_FLAG)) from None
    files = meta.get("files") if isinstance(meta, dict) else None
    if not isinstance(files, dict):
        return None, None
    key = "states" if path.endswith(".states") else "params"
    info = files.get(key)
    if not isinstance(info, dict) or "size" not in info or "crc32" not in info:
        return None, None
    return side, info


def check_readable(path, what="weights"):
    """One-line :class:`WeightsFileError` unless ``path`` is a readable, non-empty regular file."""
    if not path or not os.path.exists(path):
        raise WeightsFileError("%s not found: %s" % (what, path))
    if not os.path.isfile(path):
        raise WeightsFileError("%s: not a file (%s expected)" % (path, what))
    try:
        with open(path, "rb") as f:
            head = f.read(1)
    except OSError as e:
        raise WeightsFileError("%s: cannot be read (%s)" % (path, e.strerror or e)) from None
    if not head:
        raise WeightsFileError("%s: empty file (%s expected)" % (path, what))


def verify_checkpoint_file(path, verify=True, warn=None):
    """Check ``path`` against the size and CRC-32 recorded in the ``.json`` beside it.

    Returns the recorded entry (with ``verified`` True, or False when ``verify`` is off and it failed),
    or None when there is no description (released weights: nothing to check). A mismatch raises
    :class:`ChecksumError` (one line: file, recorded vs actual size and CRC); with ``verify=False`` it
    is passed to ``warn`` instead and the entry is returned."""
    check_readable(path)
    side, info = description_of(path)
    if info is None:
        return None
    size = os.path.getsize(path)
    crc = crc32_of(path)
    out = dict(info, description=side, verified=True)
    if size == info["size"] and crc == info["crc32"]:
        return out
    msg = ("%s does not match its description %s (recorded %d bytes, CRC-32 %08x; actual %d bytes, CRC-32 %08x): "
           "corrupted or changed since it was saved" % (path, os.path.basename(side), info["size"], info["crc32"],
                                                         size, crc))
    if verify:
        raise ChecksumError(msg + "; pass %s to load it anyway" % OVERRIDE_FLAG)
    if warn is not None:
        warn("warning: %s; loading it anyway (%s)" % (msg, OVERRIDE_FLAG))
    out["verified"] = False
    return out


def add_override_flag(parser):
    """The ``--ignore-checksum`` flag of the training scripts (the tools add it with their own help)."""
    parser.add_argument(OVERRIDE_FLAG, action="store_true",
                        help="load the starting weights even when they do not match the size and CRC-32 recorded in "
                             "the .json beside them (with a warning); released weights have no such record")


def check_weights(path, flag, verify=True, warn=None, missing_ok=False):
    """:func:`verify_checkpoint_file` for a command-line flag: a :class:`~mxrepro.engine.config.UsageError`
    ``<flag> <message>`` on failure (one line, exit status 2 through ``run_main``). Nothing for an empty
    path, nor for a missing one with ``missing_ok`` (a dry run)."""
    if not path or missing_ok and not os.path.exists(path):
        return None
    if warn is None:
        import sys

        def warn(m):
            print(m, file=sys.stderr, flush=True)
    try:
        return verify_checkpoint_file(path, verify=verify, warn=warn)
    except WeightsFileError as e:
        from .engine.config import UsageError
        raise UsageError("%s %s" % (flag, e)) from None


def check_writable(path, what="output"):
    """One-line :class:`WeightsFileError` unless a file can be created at ``path`` (its folder, or the
    nearest existing folder above it, accepts a new file; ``path`` itself is not a folder)."""
    path = os.path.abspath(path)
    if os.path.isdir(path):
        raise WeightsFileError("%s %s is a folder, not a file name" % (what, path))
    why = probe_writable(os.path.dirname(path))
    if why:
        raise WeightsFileError("%s %s cannot be written: %s" % (what, path, why))


_FRAME = re.compile(r"^(\s|Traceback \(most recent call last\)|Stack trace|\[bt\]|File \")")


def mx_error_line(err):
    """The meaningful line of an error text: for an MXNetError, its message without the stack trace, the
    'Traceback' header and the 'Check failed: <condition>:' prefix; else the first line."""
    text = str(err).strip()
    lines = [l.strip() for l in text.splitlines() if l.strip() and not _FRAME.match(l)]
    if not lines:
        return text.splitlines()[0] if text else type(err).__name__
    failed = [l for l in lines if "Check failed" in l or "Error" in l]
    line = failed[-1] if failed else lines[0]
    line = re.sub(r"^[A-Za-z]*(Error|FileSystem)?:\s*", "", line) if re.match(r"^[A-Za-z]+:\s", line) else line
    line = re.sub(r"^Check failed: .*?: (?=\S)", "", line).lstrip(": ")
    return line or lines[-1]
