"""Data integrity checks the training scripts run before (and while) they read data.

MXNet's C++ RecordIO reader aborts the whole process (SIGABRT, ``dmlc::Error ... kMagic``) on one
bad record header, and raises tracebacks that name no file for a truncated ``.rec`` or an image
OpenCV cannot decode. This module checks the same things in Python first and reports each problem
as one :class:`DataError` whose message is a single line naming the file::

    data/imagenet/train.rec: record 1234 at byte 5678 is corrupt (bad magic 0x00000000); re-run ...

(the advice names the tool recorded in the folder's prepare_info.json: ``re-run
tools/prepare_imagenet.py with --force``).

Public API
----------
* :func:`verify_recordio` -- one sequential walk over the record headers of a ``.rec`` (payloads are
  skipped, not read), the ``.idx`` checked against it, a sampled decode; returns a
  :class:`RecordSummary`. Writes nothing unless ``repair=True`` (then a missing or stale ``.idx`` is
  rebuilt atomically).
* :func:`check_records` -- :func:`verify_recordio` plus a decode of every record in a process pool
  (:func:`decode_all`), image sizes recorded; cached beside the data (:func:`load_check`,
  :func:`save_check`); :func:`filtered_copy` writes a ``.rec`` without given records.
* :class:`RecordDataset` -- ImageRecordDataset whose read failures name the record and byte.
* :func:`label_summary` / :func:`check_labels` -- label range of a ``.rec``, ``.lst`` or image folder.
* :func:`image_problem` -- why the bytes of an image file would not decode completely (None if they do).
* :class:`SafeDataset` / :class:`SafeImageFolderDataset` -- Gluon datasets that skip undecodable
  images (warning naming each) and raise :class:`DataError` past a fraction of failures.
* :func:`mxnet_errors`, :func:`mxnet_call`, :class:`GuardedIter` -- turn an ``MXNetError`` raised by
  an MXNet reader into the one-line :class:`DataError` naming the file.

RecordIO layout (dmlc-core ``recordio.h``): each record is a little-endian uint32 magic
``0xced7230a``, a uint32 ``cflag << 29 | length``, the payload, zero padding to 4 bytes. ``cflag`` 0
is a whole record; a payload that contains the magic at a 4-byte aligned offset is split into parts
1 (first), 2 (middle) ... 3 (last), the magic itself dropped between them. im2rec payloads start
with the ``IRHeader`` struct ``IfQQ`` (flag, label, id, id2), then ``flag`` float labels when flag > 0
(the first of them is the label then), then the encoded image.
"""
import collections
import contextlib
import json
import logging
import os
import re
import struct
import tempfile
import time
from array import array

import cv2
import numpy as np
import mxnet as mx
from mxnet import gluon
from tqdm import tqdm

from .fileio import atomic_write

__all__ = ["DataError", "RecordSummary", "LabelSummary", "verify_recordio", "scan_recordio", "label_summary",
           "check_labels", "image_problem", "image_decode", "file_problem", "check_idx", "read_idx",
           "record_payload", "open_records", "sample_positions", "file_stamp", "SafeDataset",
           "SafeImageFolderDataset", "RecordDataset", "RecordCheck", "check_records", "decode_all", "load_check",
           "save_check", "cache_paths", "filtered_copy", "bad_record_message", "mxnet_errors", "mxnet_call",
           "mxnet_message", "GuardedIter", "INFO_FILE",
           "MAGIC"]

log = logging.getLogger(__name__)

MAGIC = 0xCED7230A
_LEN_MASK = (1 << 29) - 1
_HEAD = struct.Struct("<II")
_IRHEADER = struct.Struct("<IfQQ")  # flag, label, id, id2 (mx.recordio's 'IfQQ')
_F32 = struct.Struct("<f")
_MAGIC_BYTES = struct.pack("<I", MAGIC)
INFO_FILE = "prepare_info.json"  # written by tools/prepare_*.py beside their outputs
PROGRESS_BYTES = 256 << 20  # files at least this large get a tqdm bar (progress=None)


class DataError(Exception):
    """Bad or inconsistent data; the message is one line that names the file and what to do."""


def _hint(path):
    """What to do about a bad file: re-run the tool that made it (from prepare_info.json)."""
    info = os.path.join(os.path.dirname(os.path.abspath(path)), INFO_FILE)
    try:
        with open(info) as f:
            tool = json.load(f).get("tool")
    except (OSError, ValueError, AttributeError):
        tool = None
    if tool:
        return "re-run tools/%s.py with --force" % tool
    return "re-create it (tools/prepare_imagenet.py, prepare_cifar.py or prepare_digits.py, with --force)"


# ---------------------------------------------------------------------------------------------
# image bytes
# ---------------------------------------------------------------------------------------------
_JPEG_SOI = b"\xff\xd8\xff"
_PNG_SIG = b"\x89PNG\r\n\x1a\n"
# a marker inside entropy-coded data: 0xFF not followed by a stuffed 0x00, a restart marker or fill
_JPEG_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")
_OTHER_FORMATS = ((b"GIF8", "GIF"), (b"BM", "BMP"), (b"II*\x00", "TIFF"), (b"MM\x00*", "TIFF"),
                  (b"RIFF", "RIFF/WebP"), (b"\x00\x00\x00", "ISO media (HEIC/AVIF?)"), (b"%PDF", "PDF"))


def _jpeg_problem(b):
    """Walk the JPEG marker segments from SOI to EOI (entropy-coded scans skipped with a regex);
    a reason string when the stream ends or breaks before the end-of-image marker."""
    n, pos = len(b), 2
    while True:
        if pos >= n:
            return "truncated JPEG (the file ends before the end-of-image marker)"
        if b[pos] != 0xFF:  # extraneous bytes before a marker: decoders skip them (with a warning)
            nxt = b.find(b"\xff", pos)
            if nxt < 0:
                return "corrupt JPEG (no marker after byte %d)" % pos
            pos = nxt
            continue
        while pos < n and b[pos] == 0xFF:  # fill bytes
            pos += 1
        if pos >= n:
            return "truncated JPEG (the file ends before the end-of-image marker)"
        m = b[pos]
        pos += 1
        if m == 0xD9:
            return None  # EOI: anything after it (e.g. appended metadata) is ignored by decoders
        if m == 0x01 or 0xD0 <= m <= 0xD7:
            continue  # standalone markers
        if m == 0xD8 or m == 0x00:
            return "corrupt JPEG (unexpected marker 0xFF%02X at byte %d)" % (m, pos - 2)
        if pos + 2 > n:
            return "truncated JPEG (the file ends inside a marker segment)"
        seg = (b[pos] << 8) | b[pos + 1]
        if seg < 2:
            return "corrupt JPEG (segment length %d at byte %d)" % (seg, pos)
        pos += seg
        if pos > n:
            return "truncated JPEG (the file ends inside a marker segment)"
        if m == 0xDA:  # start of scan: entropy-coded data up to the next marker
            found = _JPEG_MARKER.search(b, pos)
            if found is None:
                return "truncated JPEG (the file ends inside the image data, no end-of-image marker)"
            pos = found.start()


def _png_problem(b):
    """Walk the PNG chunks to IEND; a reason string when the stream ends first."""
    n, pos, seen_idat = len(b), 8, False
    while True:
        if pos + 8 > n:
            return "truncated PNG (the file ends before the IEND chunk)"
        length, = struct.unpack_from(">I", b, pos)
        ctype = b[pos + 4:pos + 8]
        if length > 0x7FFFFFFF or not ctype.isalpha():
            return "corrupt PNG (bad chunk header at byte %d)" % pos
        pos += 12 + length
        if pos > n:
            return "truncated PNG (the file ends inside a %s chunk)" % ctype.decode("ascii")
        if ctype == b"IDAT":
            seen_idat = True
        elif ctype == b"IEND":
            return None if seen_idat else "corrupt PNG (no image data)"


def image_problem(data, decode=True):
    """Why the encoded image ``data`` (bytes) would not decode completely, or None when it does.

    The whole stream must be present (JPEG: the marker segments up to the end-of-image marker;
    PNG: the chunks up to IEND; only JPEG and PNG are accepted, as im2rec and ImageRecordIter
    expect), and with ``decode`` ``cv2.imdecode(data, IMREAD_COLOR)`` -- what im2rec, ``unpack_img``
    and the loaders do with it -- must return a non-empty image. OpenCV itself decodes a truncated
    JPEG read from disk partly, grey bottom and all, which is why the structure is checked too."""
    return image_decode(data, decode=decode)[1]


def image_decode(data, decode=True):
    """``(image, None)`` (BGR uint8 HxWx3; None when not ``decode``) or ``(None, reason)``: see
    :func:`image_problem`."""
    if not isinstance(data, bytes):
        data = bytes(data)
    if not data:
        return None, "empty file (0 bytes)"
    head = data[:12]
    if head.startswith(_JPEG_SOI):
        why = _jpeg_problem(data)
    elif head.startswith(_PNG_SIG):
        why = _png_problem(data)
    else:
        kind = next((name for sig, name in _OTHER_FORMATS if head.startswith(sig)), None)
        if kind is None and all(32 <= c < 127 or c in (9, 10, 13) for c in head):
            kind = "text"
        return None, "not a JPEG or PNG image (%s)" % ("looks like " + kind if kind else
                                                       "starts with 0x" + head[:4].hex())
    if why or not decode:
        return None, why
    try:
        img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    except cv2.error as e:
        return None, "OpenCV cannot decode it (%s)" % str(e).strip().splitlines()[-1][:120]
    if img is None or img.size == 0:
        return None, "OpenCV cannot decode it"
    return img, None


def file_problem(path, decode=True):
    """:func:`image_problem` of a file's bytes (plus unreadable files)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        return "cannot read it (%s)" % (e.strerror or e)
    return image_problem(data, decode=decode)


# ---------------------------------------------------------------------------------------------
# RecordIO header walk
# ---------------------------------------------------------------------------------------------
class RecordScan:
    """Result of :func:`scan_recordio`: per logical record its start byte, im2rec header id, label
    (the first label when ``flag`` > 0), and the label width (max flag)."""

    def __init__(self, path, size, starts, ids, labels, label_width):
        self.path, self.size = path, size
        self.starts = np.frombuffer(starts, np.uint64) if len(starts) else np.zeros(0, np.uint64)
        self.ids = np.frombuffer(ids, np.uint64) if len(ids) else np.zeros(0, np.uint64)
        self.labels = np.frombuffer(labels, np.float32) if len(labels) else np.zeros(0, np.float32)
        self.label_width = label_width

    def __len__(self):
        return len(self.starts)


def _corrupt(path, rec_no, pos, what, hint=None):
    return DataError("%s: record %d at byte %d is %s; %s" % (path, rec_no, pos, what, hint or _hint(path)))


class RecFile:
    """A file opened for positioned reads (``os.pread``), with its ``size``; a context manager."""

    def __init__(self, path):
        try:
            self._f = open(path, "rb", buffering=0)
        except OSError as e:
            raise DataError("%s: cannot open it (%s)" % (path, e.strerror or e)) from None
        self.size = os.fstat(self._f.fileno()).st_size

    def read(self, pos, n):
        if hasattr(os, "pread"):
            return os.pread(self._f.fileno(), n, pos)
        self._f.seek(pos)
        return self._f.read(n)

    def close(self):
        self._f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _payload(rf, pos, limit=None):
    """Logical payload of the record starting at ``pos`` (multi-part records joined, the magic put
    back between parts), at most ``limit`` bytes."""
    out = bytearray()
    while True:
        head = rf.read(pos, 8)
        if len(head) < 8:
            return bytes(out)
        _, lrec = _HEAD.unpack(head)
        cflag, length = lrec >> 29, lrec & _LEN_MASK
        out += rf.read(pos + 8, length if limit is None else max(0, min(length, limit - len(out))))
        pos += 8 + ((length + 3) & ~3)
        if cflag in (0, 3) or (limit is not None and len(out) >= limit) or pos + 8 > rf.size:
            return bytes(out)
        out += _MAGIC_BYTES


def scan_recordio(rec, progress=None, *, name=None, hint=None):
    """Walk the record headers of ``rec`` once, seeking past the payloads; return a RecordScan.
    Raises DataError naming the first record with a bad magic, impossible length, broken
    multi-part sequence, a payload too short for the im2rec header, or one cut off by the end of
    the file. ``progress``: tqdm bar (None: only for files of PROGRESS_BYTES or more). ``name`` and
    ``hint`` replace the path and the advice in messages."""
    with RecFile(rec) as rf:
        return _scan(rec, rf, progress, name=name, hint=hint)


_WINDOW = 65536  # bytes read at once while records are small; one header at a time past _BIG
_BIG = 32768


def _scan(path, rf, progress, name=None, hint=None):
    rec, size, read = name or path, rf.size, rf.read

    def _bad(rec_no, pos, what):
        return _corrupt(rec, rec_no, pos, what, hint or _hint(path))

    starts, ids, labels = array("Q"), array("Q"), array("f")
    head, irh, f32 = _HEAD.unpack_from, _IRHEADER.unpack_from, _F32.unpack_from
    pos, rec_no, open_multi, width = 0, 0, None, 0
    show = size >= PROGRESS_BYTES if progress is None else bool(progress)
    bar = tqdm(total=size, unit="B", unit_scale=True, desc="checking " + os.path.basename(path), leave=False,
               disable=not show)
    last = 0
    buf, b0, b1, window = b"", 0, 0, _WINDOW  # buf holds bytes [b0, b1) of the file
    try:
        while pos < size:
            if pos + 8 > size:
                raise _bad(rec_no, pos, "truncated (%d bytes left, a record header needs 8: the "
                                        "file was cut off)" % (size - pos))
            if pos + 36 > b1 and b1 < size:  # header + IRHeader + first label
                buf = read(pos, window)
                b0, b1 = pos, pos + len(buf)
            o = pos - b0
            magic, lrec = head(buf, o)
            if magic != MAGIC:
                raise _bad(rec_no if open_multi is None else open_multi[0], pos,
                               "corrupt (bad magic 0x%08x)" % magic)
            cflag, length = lrec >> 29, lrec & _LEN_MASK
            if cflag > 3:
                raise _bad(rec_no, pos, "corrupt (record flag %d)" % cflag)
            end = pos + 8 + ((length + 3) & ~3)
            if end > size:
                raise _bad(rec_no if open_multi is None else open_multi[0], pos,
                               "truncated (length %d runs past the end of the file at byte %d)" % (length, size))
            if cflag in (0, 1):
                if open_multi is not None:
                    raise _bad(open_multi[0], open_multi[1], "corrupt (multi-part record not closed "
                                                                      "before byte %d)" % pos)
                if cflag == 0 and length >= 24:
                    flag, label, rid, _ = irh(buf, o + 8)
                    if flag:
                        if 24 + 4 * flag > length:
                            raise _bad(rec_no, pos, "corrupt (header says %d labels, payload holds %d "
                                                    "bytes)" % (flag, length))
                        label, = f32(buf, o + 32)
                else:
                    p = _payload(rf, pos, limit=28)
                    if len(p) < 24:
                        raise _bad(rec_no, pos, "corrupt (payload of %d bytes is shorter than the "
                                                         "24-byte image record header)" % len(p))
                    flag, label, rid, _ = _IRHEADER.unpack_from(p, 0)
                    if flag and len(p) >= 28:
                        label, = _F32.unpack_from(p, 24)
                if flag > width:
                    width = flag
                starts.append(pos)
                ids.append(rid)
                labels.append(label)
                if cflag == 1:
                    open_multi = (rec_no, pos)
                rec_no += 1
            elif cflag == 2:
                if open_multi is None:
                    raise _bad(rec_no, pos, "corrupt (a continuation part without a start)")
            else:
                if open_multi is None:
                    raise _bad(rec_no, pos, "corrupt (a final part without a start)")
                open_multi = None
            pos = end
            window = _WINDOW if length < _BIG else 64
            if show and rec_no & 4095 == 0:
                bar.update(pos - last)
                last = pos
        if open_multi is not None:
            raise _bad(open_multi[0], open_multi[1], "truncated (multi-part record cut off by the "
                                                              "end of the file)")
    finally:
        bar.update(pos - last)
        bar.close()
    scan = RecordScan(path, size, starts, ids, labels, width)
    bad = np.flatnonzero(~np.isfinite(scan.labels))
    if len(bad):
        k = int(bad[0])
        raise _bad(k, int(scan.starts[k]), "corrupt (label %s)" % scan.labels[k])
    return scan


# ---------------------------------------------------------------------------------------------
# .idx
# ---------------------------------------------------------------------------------------------
_IDX_FIX = "rebuild it (python -m mxrepro.integrity %s --repair) or %s"


def read_idx(idx):
    """(keys, offsets) int64 arrays of an im2rec/MXIndexedRecordIO index (``key\\toffset`` lines)."""
    try:
        with open(idx, "rb") as f:
            data = f.read()
    except OSError as e:
        raise DataError("%s: cannot read it (%s)" % (idx, e.strerror or e)) from None
    tok = data.split()
    lines = [ln for ln in data.splitlines() if ln.strip()]
    if len(tok) == 2 * len(lines):
        try:  # fast path: every line is two integers
            a = np.fromiter(map(int, tok), np.int64, len(tok)).reshape(-1, 2)
            return a[:, 0].copy(), a[:, 1].copy()
        except (ValueError, OverflowError):
            pass
    keys, offs = array("q"), array("q")
    try:
        with open(idx, "rb") as f:
            for n, line in enumerate(f, 1):
                tok = line.split()
                if not tok:
                    continue
                try:
                    if len(tok) != 2:
                        raise ValueError
                    keys.append(int(tok[0]))
                    offs.append(int(tok[1]))
                except (ValueError, OverflowError):
                    rec = os.path.splitext(idx)[0] + ".rec"
                    raise DataError("%s: line %d is not 'key<TAB>offset' (%r); the index is damaged or stale; %s"
                                    % (idx, n, line.strip()[:60].decode("latin-1"), _IDX_FIX % (rec, _hint(rec)))) from None
    except OSError as e:
        raise DataError("%s: cannot read it (%s)" % (idx, e.strerror or e)) from None
    return np.asarray(keys, np.int64), np.asarray(offs, np.int64)


def check_idx(idx, rec, scan, *, name=None, hint=None):
    """DataError unless the index lists each record of ``scan`` once, at its start. ``name`` (the
    .rec) and ``hint`` replace the paths and the advice in messages."""
    keys, offs = read_idx(idx)
    if name:
        idx, rec = os.path.splitext(name)[0] + ".idx", name
    hint = "the index is stale or belongs to another file; " + (hint or _IDX_FIX % (rec, _hint(rec)))
    size = scan.size
    out = np.flatnonzero((offs < 0) | (offs >= max(size, 1)) if size else np.ones(len(offs), bool))
    if len(out):
        k = int(out[0])
        raise DataError("%s: entry %d (key %d) points at byte %d, outside %s (%d bytes); %s"
                        % (idx, k, keys[k], offs[k], rec, size, hint))
    starts = scan.starts.astype(np.int64)
    j = np.searchsorted(starts, offs)
    miss = np.flatnonzero((j >= len(starts)) | (starts[np.minimum(j, len(starts) - 1)] != offs)) if len(starts) \
        else np.arange(len(offs))
    if len(miss):
        k = int(miss[0])
        raise DataError("%s: entry %d (key %d) points at byte %d, which is not the start of a record of %s; %s"
                        % (idx, k, keys[k], offs[k], rec, hint))
    for what, arr in (("key", keys), ("offset", offs)):
        u, c = np.unique(arr, return_counts=True)
        if len(u) and c.max() > 1:
            raise DataError("%s: %s %d appears %d times; %s" % (idx, what, u[c.argmax()], c.max(), hint))
    if len(offs) != len(scan):
        raise DataError("%s: lists %d records but %s holds %d; %s" % (idx, len(offs), rec, len(scan), hint))


def _write_idx(idx, scan):
    """Write an index for ``scan`` atomically: keys are the record header ids when they are unique
    (what im2rec writes), else the record numbers."""
    keys = scan.ids.astype(np.int64)
    if len(np.unique(keys)) != len(keys):
        keys = np.arange(len(scan), dtype=np.int64)
    d = os.path.dirname(os.path.abspath(idx))
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".tmp-idx-")
    try:
        with os.fdopen(fd, "w") as f:
            for k, o in zip(keys.tolist(), scan.starts.tolist()):
                f.write("%d\t%d\n" % (k, o))
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, idx)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


# ---------------------------------------------------------------------------------------------
# verify_recordio
# ---------------------------------------------------------------------------------------------
class RecordSummary(collections.namedtuple(
        "RecordSummary", "path records bytes label_min label_max num_labels label_width idx idx_used "
                         "idx_rebuilt sampled seconds")):
    """What :func:`verify_recordio` found. ``label_*`` describe the first label of each record
    (None without records); ``num_labels`` is the number of distinct labels; ``idx`` the index
    path checked or written (None when there is none); ``idx_used`` whether an index was
    checked against the file; ``idx_rebuilt`` whether ``repair`` wrote one; ``sampled`` the
    number of records decoded."""

    def as_dict(self):
        return dict(self._asdict())

    def __str__(self):
        lab = ("labels %g..%g (%d distinct)" % (self.label_min, self.label_max, self.num_labels)
               if self.records else "no records")
        idx = ("index %s %s" % (os.path.basename(self.idx), "rebuilt" if self.idx_rebuilt else "ok") if self.idx_used
               else "no index (records counted by a scan)")
        return "%s: %d records, %.1f MB, %s, %s, %d sampled records decode" % (
            self.path, self.records, self.bytes / 1e6, lab, idx, self.sampled)


def _lst_sources(rec):
    """{id: relpath} from the .lst beside ``rec`` (im2rec writes one per .rec), else {}."""
    lst = os.path.splitext(rec)[0] + ".lst"
    out = {}
    try:
        with open(lst, encoding="utf-8", errors="surrogateescape") as f:
            for line in f:
                p = line.rstrip("\n").split("\t")
                if len(p) >= 3:
                    try:
                        out[int(p[0])] = p[-1]
                    except ValueError:
                        pass
    except OSError:
        pass
    return out


def sample_positions(n, k):
    """``k`` record numbers spread evenly over ``n`` records (first and last included)."""
    if n <= 0 or k <= 0:
        return []
    return sorted(set(int(i) for i in np.linspace(0, n - 1, min(int(k), n)).round()))


def record_payload(rf, pos):
    """``(flag, label, id, image bytes)`` of the record starting at byte ``pos`` of a .rec opened
    with :func:`open_records` (``label`` is the first label when flag > 0)."""
    payload = _payload(rf, pos)
    flag, label, rid, _ = _IRHEADER.unpack_from(payload, 0)
    if flag:
        label, = _F32.unpack_from(payload, 24)
    return flag, label, rid, memoryview(payload)[24 + 4 * flag:]


def open_records(rec):
    """``rec`` opened for :func:`record_payload` (a :class:`RecFile`; use it in a ``with``)."""
    return RecFile(rec)


def decode_records(rec, scan, numbers, rf=None):
    """Decode records ``numbers`` of ``scan``; DataError naming the first that does not decode
    (record number, byte, header id and, from the .lst beside it, the source file)."""
    with (contextlib.nullcontext(rf) if rf is not None else RecFile(rec)) as rf:
        sources = None
        for k in numbers:
            pos = int(scan.starts[k])
            _, _, rid, data = record_payload(rf, pos)
            why = image_problem(data)
            if why:
                if sources is None:
                    sources = _lst_sources(rec)
                src = sources.get(int(rid))
                raise DataError("%s: record %d at byte %d (id %d%s) does not decode: %s; %s"
                                % (rec, k, pos, rid, ", source %s in %s" % (
                                    src, os.path.basename(os.path.splitext(rec)[0] + ".lst")) if src else "",
                                   why, _hint(rec)))
    return len(numbers)


def verify_recordio(rec, idx=None, *, sample_decode=16, repair=False, progress=None, return_scan=False):
    """Check an im2rec ``.rec`` before training; return a :class:`RecordSummary`.

    * one sequential walk over the record headers (payloads skipped): every record's magic,
      length and flags, the file not cut off, labels finite -- :func:`scan_recordio`;
    * the index (``idx``, default the ``.idx`` beside ``rec``; ``False``: ignore any index): every
      offset inside the file and at a record start, each record listed exactly once, no repeated key;
    * ``sample_decode`` records spread over the file decoded as images (:func:`image_problem`;
      -1: every record, which reads the whole file).

    A missing index is not an error: the records are counted by the scan (``idx_used`` False). An
    empty file is. ``return_scan``: return ``(summary, scan)``.
    With ``repair=True`` a missing or inconsistent index is rewritten atomically from the scan;
    otherwise nothing is written. Any problem raises :class:`DataError` with one line such as
    ``PATH: record 12 at byte 3456 is corrupt (bad magic 0x00000000); re-run tools/...``."""
    t0 = time.time()
    if not os.path.isfile(rec):
        raise DataError("%s: no such file; %s" % (rec, _hint(rec)))
    if idx is None:
        idx = os.path.splitext(rec)[0] + ".idx"
    with RecFile(rec) as rf:
        if rf.size == 0:
            raise DataError("%s: empty file (0 records); %s" % (rec, _hint(rec)))
        scan = _scan(rec, rf, progress)
        used = rebuilt = False
        if idx:
            if os.path.isfile(idx):
                try:
                    check_idx(idx, rec, scan)
                except DataError:
                    if not repair:
                        raise
                    _write_idx(idx, scan)
                    rebuilt = True
                used = True
            elif repair:
                _write_idx(idx, scan)
                used = rebuilt = True
            else:
                idx = None
        numbers = range(len(scan)) if sample_decode < 0 else sample_positions(len(scan), sample_decode)
        sampled = decode_records(rec, scan, numbers, rf) if sample_decode else 0
    labels = scan.labels
    lmin, lmax = (_num(labels.min()), _num(labels.max())) if len(labels) else (None, None)
    summary = RecordSummary(rec, len(scan), scan.size, lmin, lmax, int(len(np.unique(labels))),
                            int(scan.label_width), idx or None, used, rebuilt, sampled, time.time() - t0)
    return (summary, scan) if return_scan else summary


def _num(x):
    x = float(x)
    return int(x) if x.is_integer() else x


# ---------------------------------------------------------------------------------------------
# full decode check: every record, in parallel, cached beside the data
# ---------------------------------------------------------------------------------------------
CHECK_VERSION = 1
FULL_CHECK_MAX = 300000   # mode "auto" decodes every record of files with at most this many records
QUIET_BELOW = 20000       # fewer records: no progress bar
_PER_PROCESS = 2048       # records per extra process (fewer: decoded in this process; see docs/datasets.md)
_KEEP_BAD = 10000         # bad records listed in the cache at most


def check_workers(n):
    """Processes for decoding ``n`` records: one per available core, none extra for small files."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(cores, n // _PER_PROCESS))


def _decode_chunk(job):
    """Decode the records at ``starts`` (numbered from ``lo``): ``(lo, sizes, bad)``, sizes an
    (n, 2) uint16 array of (height, width), bad a list of (record, byte, reason)."""
    rec, lo, starts = job
    sizes, bad = np.zeros((len(starts), 2), np.uint16), []
    with RecFile(rec) as rf:
        for j, pos in enumerate(starts):
            try:
                img, why = image_decode(record_payload(rf, pos)[3])
            except (struct.error, ValueError, OSError) as e:
                img, why = None, "unreadable (%s)" % e
            if img is None:
                bad.append((lo + j, int(pos), why))
            else:
                sizes[j] = min(img.shape[0], 65535), min(img.shape[1], 65535)
    return lo, sizes, bad


def decode_all(rec, starts, workers=None, progress=None, numbers=None):
    """Decode the records of ``rec`` starting at byte offsets ``starts`` (a process pool over
    index ranges); returns ``(sizes, bad)`` as :func:`_decode_chunk`, bad sorted by record.
    ``numbers``: the record numbers of ``starts`` (default 0..n-1). ``progress``: tqdm bar (None: on
    a terminal for QUIET_BELOW records or more)."""
    import multiprocessing as mp
    import sys
    starts = np.asarray(starts, np.uint64)
    n = len(starts)
    workers = check_workers(n) if workers is None else max(1, min(int(workers), max(n, 1)))
    chunk = max(64, min(4096, -(-n // (workers * 8))))
    jobs = [(rec, lo, starts[lo:lo + chunk].tolist()) for lo in range(0, n, chunk)]
    show = (n >= QUIET_BELOW and sys.stderr.isatty()) if progress is None else bool(progress)
    sizes, bad = np.zeros((n, 2), np.uint16), []
    with tqdm(total=n, unit="rec", desc="decoding " + os.path.basename(rec), leave=False, disable=not show) as bar:
        pool = mp.get_context("fork").Pool(workers) if workers > 1 else None
        try:
            for lo, sz, b in (pool.imap_unordered(_decode_chunk, jobs) if pool else map(_decode_chunk, jobs)):
                sizes[lo:lo + len(sz)] = sz
                bad += b
                bar.update(len(sz))
        finally:
            if pool:
                pool.terminate()
                pool.join()
    bad.sort()
    if numbers is not None:
        numbers = np.asarray(numbers)
        bad = [(int(numbers[k]), pos, why) for k, pos, why in bad]
    return sizes, bad


class RecordCheck:
    """Result of :func:`check_records`: ``summary`` (RecordSummary), ``full`` (every record decoded),
    ``numbers`` (decoded records; None = all), ``sizes`` ((n, 2) height/width of each decoded record,
    0 where it did not decode), ``bad`` ([(record, byte, reason)]), ``bad_count``, ``cached``,
    ``seconds`` and ``cache_path`` (None when it could not be written)."""

    def __init__(self, summary, full, numbers, sizes, bad, bad_count, cached=False, seconds=0.0, cache_path=None):
        self.summary, self.full, self.numbers, self.sizes = summary, full, numbers, sizes
        self.bad, self.bad_count, self.cached = bad, bad_count, cached
        self.seconds, self.cache_path = seconds, cache_path

    @property
    def path(self):
        return self.summary.path

    @property
    def decoded(self):
        return self.summary.records if self.numbers is None else len(self.numbers)

    def _record_numbers(self):
        return np.arange(len(self.sizes)) if self.numbers is None else np.asarray(self.numbers)

    def too_small(self, side):
        """[(record, height, width)] of decoded images whose shorter side is below ``side``."""
        ok = self.sizes.min(axis=1)
        k = np.flatnonzero((ok > 0) & (ok < side))
        nums = self._record_numbers()
        return [(int(nums[i]), int(self.sizes[i, 0]), int(self.sizes[i, 1])) for i in k]

    def larger_than(self, side):
        """(count, commonest (height, width)) of decoded images with a side above ``side``."""
        k = np.flatnonzero(self.sizes.max(axis=1) > side)
        if not len(k):
            return 0, None
        u, c = np.unique(self.sizes[k], axis=0, return_counts=True)
        return len(k), tuple(int(v) for v in u[c.argmax()])

    def size_range(self):
        """((min height, min width), (max height, max width)) of the decoded images, or None."""
        s = self.sizes[self.sizes.min(axis=1) > 0]
        return (tuple(int(v) for v in s.min(0)), tuple(int(v) for v in s.max(0))) if len(s) else None

    def line(self):
        """``train.rec: 1437 records decoded OK (cached)``-style summary."""
        what = "records" if self.full else "records, %d sampled," % self.decoded
        state = "decoded OK" if not self.bad_count else "checked, %d do not decode" % self.bad_count
        rng = self.size_range()
        sizes = (", %dx%d" % rng[0] if rng and rng[0] == rng[1] else ", %dx%d..%dx%d" % (rng[0] + rng[1]) if rng
                 else "")
        how = "cached" if self.cached else "%.1f s" % self.seconds
        return "%s: %d %s %s%s (%s)" % (os.path.basename(self.path), self.summary.records, what, state, sizes, how)


def cache_paths(rec):
    """Where the check of ``rec`` is stored: beside it (``<file>.check.json``, the real path of a
    link) and, when that folder is read-only, under the user's cache folder."""
    import hashlib
    real = os.path.realpath(rec)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return [real + ".check.json",
            os.path.join(base, "mxrepro", "data-check", hashlib.sha1(real.encode()).hexdigest()[:16] + ".json")]


def _pack_sizes(sizes):
    import base64
    import zlib
    return base64.b64encode(zlib.compress(np.ascontiguousarray(sizes, "<u2").tobytes(), 6)).decode("ascii")


def _unpack_sizes(text):
    import base64
    import zlib
    return np.frombuffer(zlib.decompress(base64.b64decode(text)), "<u2").reshape(-1, 2).astype(np.uint16)


def _stamp_or_none(path):
    try:
        return file_stamp(path) if path and os.path.isfile(path) else None
    except OSError:
        return None


def load_check(rec, idx=None):
    """The stored full check of ``rec`` (a :class:`RecordCheck`, ``cached`` True) when size and
    mtime of the file (and of ``idx``) are unchanged, else None."""
    stamp, istamp = file_stamp(rec), _stamp_or_none(idx)
    for path in cache_paths(rec):
        try:
            with open(path) as f:
                d = json.load(f)
            if (d.get("version") != CHECK_VERSION or d.get("file") != os.path.realpath(rec)
                    or d.get("stamp") != stamp or d.get("idx_stamp") != istamp):
                continue
            summary = RecordSummary(**dict(d["summary"], path=rec))
            return RecordCheck(summary, True, None, _unpack_sizes(d["sizes"]), [tuple(b) for b in d["bad"]],
                               int(d["bad_count"]), cached=True, seconds=d["seconds"], cache_path=path)
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return None


def _atomic_json(path, obj):
    def dump(tmp):
        with open(tmp, "w") as f:
            json.dump(obj, f)
    atomic_write(path, dump)


def save_check(rec, idx, check):
    """Store a full check (see :func:`cache_paths`); the path written, or None."""
    obj = dict(version=CHECK_VERSION, file=os.path.realpath(rec), stamp=file_stamp(rec), idx_stamp=_stamp_or_none(idx),
               summary=dict(check.summary.as_dict(), path=os.path.realpath(rec)), records=check.summary.records,
               size_range=check.size_range(), bad_count=check.bad_count, bad=[list(b) for b in check.bad[:_KEEP_BAD]],
               seconds=check.seconds, sizes=_pack_sizes(check.sizes))
    for path in cache_paths(rec):
        try:
            _atomic_json(path, obj)
            return path
        except OSError:
            continue
    return None


def check_records(rec, idx=None, *, mode="auto", workers=None, progress=None, use_cache=True):
    """Header walk and ``.idx`` check (:func:`verify_recordio`) plus a decode of every record
    (``mode`` "full", or "auto" for files of at most FULL_CHECK_MAX records) or of 16 spread over
    the file ("sample"); returns a :class:`RecordCheck`. Undecodable records are listed, not
    raised. A full check is stored (:func:`save_check`) and reused, in every mode, while the file is
    unchanged."""
    if mode not in ("auto", "full", "sample"):
        raise ValueError("mode must be auto, full or sample, not %r" % mode)
    if idx is None:
        idx = os.path.splitext(rec)[0] + ".idx"
    if use_cache and os.path.isfile(rec):  # a stored full check answers every mode
        got = load_check(rec, idx)
        if got is not None:
            return got
    t0 = time.time()
    summary, scan = verify_recordio(rec, idx, sample_decode=0, progress=progress, return_scan=True)
    full = mode == "full" or (mode == "auto" and len(scan) <= FULL_CHECK_MAX)
    numbers = None if full else sample_positions(len(scan), 16)
    starts = scan.starts if full else scan.starts[numbers]
    sizes, bad = decode_all(rec, starts, workers=workers, progress=progress, numbers=numbers)
    summary = summary._replace(sampled=len(starts), seconds=time.time() - t0)
    check = RecordCheck(summary, full, numbers, sizes, bad, len(bad), seconds=time.time() - t0)
    if full:
        check.cache_path = save_check(rec, idx, check)
    return check


def bad_record_message(rec, bad, count, why_end):
    """One line naming the first bad record (number, byte, reason) and how many more there are."""
    k, pos, why = bad[0]
    more = ""
    if count > 1:
        more = " (%d records fail: %s%s)" % (count, ", ".join(str(b[0]) for b in bad[:10]),
                                             ", ..." if count > 10 else "")
    return "%s: record %d at byte %d does not decode: %s%s; %s" % (rec, k, pos, why, more, why_end)


def filtered_copy(rec, drop, out=None):
    """Copy ``rec`` without the records numbered in ``drop`` (an ImageRecordIter reads every record
    in the byte range of an index entry, so a filtered .idx alone cannot leave one out): writes
    ``<rec>.skip-<hash>.rec`` and ``.idx`` beside it (else in the user's cache folder), reused while
    ``rec`` is unchanged; returns ``(rec path, idx path, bytes)``."""
    import hashlib
    drop = sorted(set(int(k) for k in drop))
    stamp = file_stamp(rec)
    key = hashlib.sha1(json.dumps([os.path.realpath(rec), stamp, drop]).encode()).hexdigest()[:10]
    name = os.path.basename(os.path.realpath(rec))[:-4] + ".skip-%s" % key
    scan = None
    for d in (os.path.dirname(os.path.realpath(rec)), os.path.dirname(cache_paths(rec)[1])):
        out_rec, out_idx = os.path.join(d, name + ".rec"), os.path.join(d, name + ".idx")
        if os.path.isfile(out_rec) and os.path.isfile(out_idx):
            return out_rec, out_idx, os.path.getsize(out_rec)
        if scan is None:
            scan = scan_recordio(rec, progress=False)
        ends = np.append(scan.starts[1:], np.uint64(scan.size))
        try:
            os.makedirs(d, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=d, prefix=".tmp-skip-")
        except OSError:
            continue
        tmp_idx = tmp + ".idx"
        try:
            pos, drop_set = 0, set(drop)
            with os.fdopen(fd, "wb") as f, RecFile(rec) as rf, open(tmp_idx, "w") as fi:
                for k in range(len(scan)):
                    if k in drop_set:
                        continue
                    a, b = int(scan.starts[k]), int(ends[k])
                    fi.write("%d\t%d\n" % (k, pos))
                    for p in range(a, b, 64 << 20):
                        f.write(rf.read(p, min(64 << 20, b - p)))
                    pos += b - a
            os.replace(tmp_idx, out_idx)
            os.replace(tmp, out_rec)
            return out_rec, out_idx, pos
        except OSError:
            continue
        finally:
            for t in (tmp, tmp_idx):
                if os.path.exists(t):
                    os.remove(t)
    raise DataError("%s: cannot write a copy without the bad records beside it or in the cache folder; "
                    "free some space or re-create the file" % rec)


# ---------------------------------------------------------------------------------------------
# labels
# ---------------------------------------------------------------------------------------------
class LabelSummary(collections.namedtuple("LabelSummary", "num_classes min max")):
    """``(num_classes, min, max)`` of a dataset's labels; ``source`` says where they came from:
    ``prepare_info.json``, ``scan`` (record headers), ``list`` (.lst) or ``folders``."""
    source = None


def file_stamp(path):
    """``{"size", "mtime_ns"}`` of a file, as the prepare tools store it in prepare_info.json."""
    st = os.stat(path)
    return dict(size=int(st.st_size), mtime_ns=int(st.st_mtime_ns))


def _from_info(rec):
    """Label info prepare_info.json holds for ``rec`` when it describes this very file (size and
    mtime unchanged), else None."""
    d, base = os.path.split(os.path.abspath(rec))
    try:
        with open(os.path.join(d, INFO_FILE)) as f:
            info = json.load(f)
        entry = info["outputs"][os.path.splitext(base)[0]]
        lab, stamp = entry["labels"], entry["file"]
        if {k: stamp[k] for k in ("size", "mtime_ns")} != file_stamp(rec):
            return None
        return int(lab["num_classes"]), lab["min"], lab["max"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _summary(t, source):
    s = LabelSummary(*t)
    s.source = source
    return s


def label_summary(path):
    """``(num_classes, min, max)`` of the labels of ``path`` (a LabelSummary, ``.source`` set):

    * ``.rec``: from ``prepare_info.json`` beside it when that describes this file unchanged (size
      and mtime), num_classes being the dataset's class count; else from a header scan
      (:func:`scan_recordio`), num_classes being the number of distinct labels;
    * ``.lst``: first label column, num_classes = distinct labels;
    * an image-folder root: num_classes = its sub-folders (ImageFolderDataset's labels 0..n-1)."""
    if os.path.isdir(path):
        folders = [d for d in sorted(os.listdir(path)) if os.path.isdir(os.path.join(path, d))]
        if not folders:
            raise DataError("%s: no class folders (expected ROOT/<class>/<image>)" % path)
        return _summary((len(folders), 0, len(folders) - 1), "folders")
    if not os.path.isfile(path):
        raise DataError("%s: no such file or folder" % path)
    ext = os.path.splitext(path)[1].lower()
    if ext == ".idx":
        path, ext = os.path.splitext(path)[0] + ".rec", ".rec"
    if ext == ".lst":
        labels = []
        with open(path, encoding="utf-8", errors="surrogateescape") as f:
            for n, line in enumerate(f, 1):
                p = line.rstrip("\n").split("\t")
                if len(p) < 3:
                    if line.strip():
                        raise DataError("%s: line %d is not 'index<TAB>label<TAB>path'" % (path, n))
                    continue
                try:
                    labels.append(float(p[1]))
                except ValueError:
                    raise DataError("%s: line %d has a label that is not a number (%r)" % (path, n, p[1])) from None
        if not labels:
            raise DataError("%s: empty list" % path)
        a = np.asarray(labels)
        return _summary((len(np.unique(a)), _num(a.min()), _num(a.max())), "list")
    if ext != ".rec":
        raise DataError("%s: expected a .rec, .idx or .lst file or an image folder" % path)
    got = _from_info(path)
    if got is not None:
        return _summary(got, INFO_FILE)
    scan = scan_recordio(path)
    if not len(scan):
        raise DataError("%s: holds no records; %s" % (path, _hint(path)))
    return _summary((len(np.unique(scan.labels)), _num(scan.labels.min()), _num(scan.labels.max())), "scan")


def check_labels(path, num_classes):
    """LabelSummary of ``path``; DataError when its labels do not lie in ``[0, num_classes)``."""
    s = label_summary(path)
    if s.min < 0 or s.max >= num_classes or s.max != int(s.max) or s.min != int(s.min):
        raise DataError("%s: labels run %s..%s but --num-classes is %d (labels must be integers in [0, %d)); "
                        "pass the right --num-classes or data folder" % (path, s.min, s.max, num_classes,
                                                                        num_classes))
    return s


# ---------------------------------------------------------------------------------------------
# MXNet errors -> DataError
# ---------------------------------------------------------------------------------------------
_SRC_PREFIX = re.compile(r"(\S+/)?\S+\.(cc|cpp|h|hpp|cu):\d+:?\s*")


_KNOWN = (("!buf.empty()", "an image in it is empty, e.g. a zero-byte file"),
          ("!ssize.empty()", "an image in it did not decode"),
          ("kMagic", "a record header is corrupt"),
          ("Cannot find any files", "the file does not exist"),
          ("No such file", "the file does not exist"))


def mxnet_message(err):
    """The informative line of an MXNetError (C++ stack and source paths dropped), prefixed with
    what it means for the common data errors."""
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    pick = [ln for ln in lines if ln.startswith("MXNetError:") or "Check failed" in ln or "rror:" in ln]
    line = (pick[-1] if pick else lines[-1] if lines else type(err).__name__)
    line = re.sub(r"^MXNetError:\s*", "", line)
    line = re.sub(r"^\[[\d:]+\]\s*", "", line)
    line = _SRC_PREFIX.sub("", line)[:300]
    meaning = next((m for key, m in _KNOWN if key in str(err)), None)
    return "%s: %s" % (meaning, line) if meaning else line


@contextlib.contextmanager
def mxnet_errors(path, what="reading"):
    """``with mxnet_errors("data/x.rec"): it = mx.io.ImageRecordIter(...)`` -- an MXNetError raised
    inside becomes ``DataError("data/x.rec: MXNet failed reading it (<reason>); <hint>")`` (the
    original stays in ``.mxnet_error``). Note: an abort inside MXNet's reader threads (bad magic)
    cannot be caught; :func:`verify_recordio` first."""
    try:
        yield
    except mx.base.MXNetError as e:
        find = ("`python -m mxrepro.integrity %s --sample -1` names the bad record, or %s" % (path, _hint(path))
                if str(path).endswith(".rec") else _hint(path))
        err = DataError("%s: MXNet failed %s it (%s); %s" % (path, what, mxnet_message(e), find))
        err.mxnet_error = e
        raise err from None


def mxnet_call(path, fn, *args, **kwargs):
    """``fn(*args, **kwargs)`` with :func:`mxnet_errors` around it."""
    with mxnet_errors(path):
        return fn(*args, **kwargs)


class GuardedIter:
    """An mx.io.DataIter whose ``next``/``reset``/iteration run under :func:`mxnet_errors`;
    other attributes (``provide_data``, ``batch_size`` ...) are the wrapped iterator's."""

    def __init__(self, it, path):
        self._it, self._path = it, path

    def __getattr__(self, name):
        return getattr(self._it, name)

    def __iter__(self):
        return self

    def __next__(self):
        with mxnet_errors(self._path):
            return self._it.next()

    next = __next__

    def reset(self):
        with mxnet_errors(self._path):
            return self._it.reset()


# ---------------------------------------------------------------------------------------------
# Gluon datasets that skip undecodable images
# ---------------------------------------------------------------------------------------------
class SafeDataset(gluon.data.Dataset):
    """Wrap a Gluon dataset of image files so an image that fails to load is skipped.

    A failing item (any exception from ``dataset[i]``; for datasets with ``items`` of
    ``(path, label)`` -- ImageFolderDataset -- and ``strict``, also a file whose stream is
    incomplete, see :func:`image_problem`) is logged once as a warning naming the file, and the
    next loadable item is returned in its place, so batches keep their size. Failures are counted
    per epoch (``set_epoch`` resets the counter; ``stats()`` reads it) and once more than
    ``max_bad_fraction`` of the dataset's files have failed, :class:`DataError` is raised naming
    some of them. Counters live in shared memory, so this works with DataLoader ``num_workers``
    0 (in process), > 0 (forked workers) and ``thread_pool``."""

    def __init__(self, dataset, max_bad_fraction=0.01, strict=True, name=None):
        import multiprocessing as mp
        self._data = dataset
        self._n = len(dataset)
        self.max_bad_fraction = float(max_bad_fraction)
        items = getattr(dataset, "items", None)
        self._files = (items is not None and len(items) == self._n
                       and all(isinstance(it, (tuple, list)) and isinstance(it[0], str) for it in items[:1]))
        self._strict = strict and self._files and hasattr(dataset, "_flag")
        self.name = name or getattr(dataset, "_root", None) or type(dataset).__name__
        self._lock = mp.Lock()
        self._seen = mp.RawArray("i", max(self._n, 1))  # epoch + 1 when item i last failed, 0 never
        self._count = mp.RawArray("i", 3)  # epoch, failures this epoch, distinct failed items

    def __len__(self):
        return self._n

    def describe(self, i):
        return self._data.items[i][0] if self._files else "item %d of %s" % (i, self.name)

    def set_epoch(self, epoch):
        with self._lock:
            self._count[0], self._count[1] = int(epoch), 0

    def _bad(self):
        return [self.describe(int(i)) for i in np.flatnonzero(np.frombuffer(self._seen, np.int32)[:self._n])]

    def stats(self):
        """``dict(epoch, skipped, bad_files)``: failures this epoch and all failing files so far."""
        with self._lock:
            return dict(epoch=self._count[0], skipped=self._count[1], bad_files=self._bad())

    def _load(self, i):
        if not self._strict:
            return self._data[i]
        path, label = self._data.items[i][0], self._data.items[i][1]
        with open(path, "rb") as f:
            data = f.read()
        why = image_problem(data, decode=False)
        if why:
            raise DataError(why)
        img = mx.image.imdecode(data, self._data._flag)
        t = getattr(self._data, "_transform", None)
        return t(img, label) if t is not None else (img, label)

    def _failed(self, i, err):
        with self._lock:
            epoch = self._count[0]
            first = self._seen[i] == 0
            if self._seen[i] != epoch + 1:
                self._seen[i] = epoch + 1
                self._count[1] += 1
            if first:
                self._count[2] += 1
            distinct, skipped = self._count[2], self._count[1]
        why = mxnet_message(err) if isinstance(err, mx.base.MXNetError) else str(err) or type(err).__name__
        if first:
            log.warning("skipping %s: %s (%d skipped this epoch)", self.describe(i), why, skipped)
        if distinct > self.max_bad_fraction * self._n:
            with self._lock:
                bad = self._bad()
            raise DataError("%s: %d of %d images (%.1f%%) failed to load, more than the %g%% allowed (%s%s; "
                            "last: %s); fix or remove them (tools/prepare_imagenet.py lists them)"
                            % (self.name, distinct, self._n, 100.0 * distinct / self._n,
                               100 * self.max_bad_fraction, ", ".join(bad[:5]), ", ..." if len(bad) > 5 else "",
                               why))

    def __getitem__(self, idx):
        for k in range(self._n):
            i = (idx + k) % self._n
            try:
                return self._load(i)
            except Exception as e:  # noqa: BLE001  (a loader failure of any kind skips the item)
                err = e
            self._failed(i, err)  # raises DataError past max_bad_fraction
        raise DataError("%s: no image of %d loads" % (self.name, self._n))


class SafeImageFolderDataset(SafeDataset):
    """``gluon.data.vision.ImageFolderDataset(root, flag, transform)`` behind :class:`SafeDataset`:
    same ``synsets``/``items``/labels, undecodable images skipped (warning naming each), DataError
    past ``max_bad_fraction`` (default 1%) of failures."""

    def __init__(self, root, flag=1, transform=None, max_bad_fraction=0.01, strict=True):
        ds = gluon.data.vision.ImageFolderDataset(root, flag=flag, transform=transform)
        if len(ds) == 0:
            raise DataError("%s: no images (%s) in class folders" % (root, "/".join(ds._exts)))
        super().__init__(ds, max_bad_fraction=max_bad_fraction, strict=strict, name=root)
        self.synsets, self.items = ds.synsets, ds.items


class RecordDataset(gluon.data.vision.ImageRecordDataset):
    """``ImageRecordDataset`` whose read or decode failure is a one-line :class:`DataError` naming
    the file, the record and its byte offset (never MXNet's traceback); ``exclude(offsets)`` leaves
    the records starting at those bytes out."""

    def __init__(self, filename, flag=1, transform=None):
        super().__init__(filename, flag, transform)
        self.filename, self._keep = filename, None

    def exclude(self, offsets):
        drop = set(int(o) for o in offsets)
        rec = self._record
        self._keep = [i for i, k in enumerate(rec.keys) if int(rec.idx[k]) not in drop]

    def __len__(self):
        return len(self._keep) if self._keep is not None else len(self._record.keys)

    def __getitem__(self, idx):
        k = self._keep[idx] if self._keep is not None else idx
        try:
            header, data = mx.recordio.unpack(self._record.read_idx(self._record.keys[k]))
            why = image_problem(data, decode=False)  # MXNet's OpenCV returns garbage for some broken PNGs
            if why:
                raise ValueError(why)
            img = mx.image.imdecode(data, self._flag)
            return self._transform(img, header.label) if self._transform is not None else (img, header.label)
        except Exception as e:  # noqa: BLE001  (MXNetError, struct.error ... from a changed file)
            why = mxnet_message(e) if isinstance(e, mx.base.MXNetError) else str(e) if isinstance(e, ValueError) \
                else "%s: %s" % (type(e).__name__, e)
            pos = self._record.idx[self._record.keys[k]]
            raise DataError("%s: record %d at byte %d does not decode during training (%s): the file changed or broke "
                            "after its check; %s" % (self.filename, k, pos, why.strip()[:200], _hint(self.filename))) \
                from None


# ---------------------------------------------------------------------------------------------
# command line: python -m mxrepro.integrity FILE.rec ... | --bench N | --bench-decode SPEC...
# ---------------------------------------------------------------------------------------------
def bench(n=100000, payload=(50, 300), folder=None):
    """Time :func:`verify_recordio` (header walk + .idx check, no decode) on a synthetic file of
    ``n`` records with random payloads of ``payload`` bytes; returns a dict with records/s."""
    rng = np.random.RandomState(0)
    with tempfile.TemporaryDirectory(dir=folder) as d:
        rec, idx = os.path.join(d, "bench.rec"), os.path.join(d, "bench.idx")
        w = mx.recordio.MXIndexedRecordIO(idx, rec, "w")
        for i in range(n):
            w.write_idx(i, mx.recordio.pack(mx.recordio.IRHeader(0, float(i % 1000), i, 0),
                                            rng.bytes(int(rng.randint(*payload)))))
        w.close()
        best = {}
        for what, fn in (("scan", lambda: scan_recordio(rec, progress=False)),
                         ("verify", lambda: verify_recordio(rec, sample_decode=0, progress=False))):
            times = []
            for _ in range(3):
                t0 = time.perf_counter()
                fn()
                times.append(time.perf_counter() - t0)
            best[what] = min(times)
        size = os.path.getsize(rec)
    return dict(records=n, bytes=size, scan_s=best["scan"], verify_s=best["verify"],
                scan_records_per_s=n / best["scan"], verify_records_per_s=n / best["verify"])


def _synthetic_rec(path, kind, n, seed=0):
    """Write ``n`` synthetic records: ``jpeg`` (smooth colour images of 200-260 px a side, quality
    90, about a 224-crop ImageNet record), ``jpeg500`` (500x375, ImageNet's commonest original size)
    or ``png32`` (32x32 PNG, CIFAR-like)."""
    rng = np.random.RandomState(seed)
    w = mx.recordio.MXIndexedRecordIO(os.path.splitext(path)[0] + ".idx", path, "w")
    for i in range(n):
        h, wd = {"png32": (32, 32), "jpeg500": (375, 500)}.get(kind) or tuple(rng.randint(200, 261, 2))
        low = rng.randint(0, 256, (max(2, h // 16), max(2, wd // 16), 3)).astype(np.uint8)
        img = cv2.resize(low, (int(wd), int(h)), interpolation=cv2.INTER_CUBIC)
        img = np.clip(img.astype(np.int16) + rng.randint(-12, 13, img.shape), 0, 255).astype(np.uint8)
        fmt = ".png" if kind == "png32" else ".jpg"
        w.write_idx(i, mx.recordio.pack_img(mx.recordio.IRHeader(0, float(i % 10), i, 0), img, quality=90, img_fmt=fmt))
    w.close()


def bench_decode(specs, workers=None, folder=None):
    """Time the full decode check (:func:`check_records`, cache unused) of each spec: a ``.rec``
    path, or ``jpeg:N`` / ``png32:N`` for a synthetic file (:func:`_synthetic_rec`); one process and
    ``workers`` (default every available core). Returns a list of dicts with records/s."""
    out = []
    with tempfile.TemporaryDirectory(dir=folder) as d:
        for spec in specs:
            if ":" in spec and not os.path.exists(spec):
                kind, n = spec.split(":", 1)
                if kind not in ("jpeg", "jpeg500", "png32"):
                    raise DataError("%s: expected a .rec file, jpeg:N, jpeg500:N or png32:N" % spec)
                path = os.path.join(d, "%s-%s.rec" % (kind, n))
                _synthetic_rec(path, kind, int(n))
            else:
                path = spec
            n = None
            for k in sorted({1, workers or check_workers(1 << 30)}):
                t0 = time.perf_counter()
                c = check_records(path, mode="full", workers=k, progress=False, use_cache=False)
                dt = time.perf_counter() - t0
                n = c.summary.records
                out.append(dict(file=spec, records=n, bytes=c.summary.bytes, workers=k, seconds=dt,
                                records_per_s=n / dt, bad=c.bad_count))
    return out


def main(argv=None):
    import argparse
    p = argparse.ArgumentParser(prog="python -m mxrepro.integrity",
                                description="Check im2rec RecordIO files (record headers, .idx, sampled decodes) "
                                            "or label ranges; exit 2 with a one-line error on the first problem.")
    p.add_argument("paths", nargs="*", metavar="PATH", help=".rec files (a .lst or image folder: label summary)")
    p.add_argument("--sample", type=int, default=16, help="records to decode per file (-1: all; default 16)")
    p.add_argument("--repair", action="store_true", help="rebuild a missing or stale .idx from the scan")
    p.add_argument("--bench", type=int, metavar="N", help="time the check on a synthetic file of N small records")
    p.add_argument("--bench-decode", nargs="+", metavar="SPEC",
                   help="time the full decode check of .rec files or synthetic jpeg:N / png32:N sets, with one "
                        "process and with every core (--workers); jpeg500:N = 500x375 JPEGs")
    p.add_argument("--workers", type=int, default=None, help="processes for --bench-decode (default: every core)")
    args = p.parse_args(argv)
    if args.bench_decode:
        for r in bench_decode(args.bench_decode, args.workers):
            print("%s: %d records (%.1f MB), %d process%s: %.2f s = %.0f records/s"
                  % (r["file"], r["records"], r["bytes"] / 1e6, r["workers"], "" if r["workers"] == 1 else "es",
                     r["seconds"], r["records_per_s"]))
    if args.bench:
        r = bench(args.bench)
        print("%d records (%.1f MB): header walk %.3f s = %.0f records/s; with .idx check %.3f s = %.0f records/s"
              % (r["records"], r["bytes"] / 1e6, r["scan_s"], r["scan_records_per_s"], r["verify_s"],
                 r["verify_records_per_s"]))
    try:
        for path in args.paths:
            if path.endswith(".rec"):
                print(verify_recordio(path, sample_decode=args.sample, repair=args.repair))
            else:
                s = label_summary(path)
                print("%s: %d classes, labels %s..%s (from %s)" % (path, s.num_classes, s.min, s.max, s.source))
    except DataError as e:
        print("error: %s" % e, file=__import__("sys").stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
