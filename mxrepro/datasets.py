"""Dataset preparation shared by ``tools/prepare_{cifar,imagenet,digits}.py``.

Every ``.rec``/``.idx`` pair is packed by the MXNet wheel's own ``mxnet/tools/im2rec.py`` run as a
subprocess with this interpreter, never by a rewrite. This module adds
what im2rec lacks:

* ``.lst`` files written here when labels need exact control (``index\\tlabel\\trelpath``): CIFAR
  fine/coarse labels, ImageNet val labels that must use the train synset ids;
* image validation *before* packing: each file's bytes must hold a complete JPEG/PNG stream and
  decode with ``cv2.imdecode`` (:func:`mxrepro.integrity.image_problem`), so corrupt, truncated,
  zero-byte and non-image files are skipped, listed with the reason and counted (``cv2.imread``,
  im2rec's own test, decodes a truncated JPEG partly; im2rec's pass-through mode would pack any
  of them, and its single-process mode crashes on one);
* packing in a private working folder (im2rec packs *every* ``PREFIX*.lst`` beside PREFIX, so
  ``train`` would also pick up ``train_480_q90.lst``), read-back checks there (record headers,
  index, every record's id and label against the list, sampled decodes), and an atomic move into
  place only when they pass;
* idempotence: ``prepare_info.json`` in the output folder records what was made with which settings,
  so a re-run skips outputs that exist and verify, and ``--force`` redoes them.

Bad input raises :class:`DatasetError` whose message says what is expected where; the tools print it
and exit with status 2 (no traceback). It is a :class:`mxrepro.integrity.DataError`, the type the
training-time checks raise. The output folder is checked before anything is written
(:func:`check_out`: writable, free space where the size is known); a write that fails on a full or
read-only disk prints one line and exits with status 3, and what the run wrote is removed first.
"""
import collections
import contextlib
import hashlib
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np
import mxnet as mx
from tqdm import tqdm

from . import integrity as I
from .engine import disk
from .integrity import INFO_FILE, DataError

# im2rec's own --exts default, which is also what libmxnet's decoder (ImageRecordIter) reads back.
IMAGE_EXTS = (".jpeg", ".jpg", ".png")
LIST_SEED = 100  # the seed im2rec --list uses for its shuffle
LIST_SHOWN = 20  # skipped files named in a tool's printed summary (all of them in prepare_info.json)


class DatasetError(DataError):
    """Bad input (missing/empty folder, wrong archive, malformed label file) or an output that
    fails its read-back check: exit status 2."""


def run_cli(fn, argv):
    """Run ``fn(argv)`` for a tool's ``main``: DataError (DatasetError included) -> its one-line
    message on stderr and status 2."""
    try:
        return fn(argv)
    except DataError as e:
        sys.stdout.flush()
        print("error: %s" % e, file=sys.stderr)
        return 2
    except (disk.WriteFailed, OSError) as e:
        if isinstance(e, disk.WriteFailed):
            err, path = e.errno, e.path
        elif e.errno in disk.DISK_ERRNOS:
            err, path = e.errno, e.filename or "the output folder"
        else:
            raise
        sys.stdout.flush()
        print("error: %s while writing %s: %s and run the same command (what this run wrote was removed)"
              % (disk.describe(err), path, disk.remedy(err, path)), file=sys.stderr)
        return 3


def check_positive(value, flag, what, low=1, high=None):
    """DatasetError (exit 2) unless ``low <= value`` (``<= high``)."""
    if value < low or (high is not None and value > high):
        raise DatasetError("%s %s must be %s (%s)" % (flag, value, "at least %s" % low if high is None else
                                                        "between %s and %s" % (low, high), what))


def check_out(out_dir, need_bytes=None, flag="--out"):
    """DatasetError (exit 2) unless ``out_dir`` is, or can be created as, a writable folder with at least
    ``need_bytes`` free (when the size is known). Nothing is written."""
    why = disk.probe_writable(out_dir)
    if why:
        raise DatasetError("%s %s is not writable (%s): choose another output folder" % (flag, out_dir, why))
    if need_bytes:
        free = disk.free_bytes(out_dir)
        if free < need_bytes:
            raise DatasetError("not enough free space on %s for %s %s: needs about %.1f MB, %.1f MB free; free "
                               "space there or choose another %s" % (disk.mount_point(out_dir), flag, out_dir,
                                                                     need_bytes / disk.MB, free / disk.MB, flag))


def small_dataset_bytes(num_images, size):
    """Upper bound of :func:`build_small_dataset`'s output: every image twice (PNG tree and records) at
    its raw size plus headers (PNG rarely compresses below that for natural images)."""
    return 2 * num_images * (size * size * 3 + 512) + (1 << 20)


@contextlib.contextmanager
def removed_on_failure(out_dir, partial=()):
    """Run a tool's writes; when they fail, remove what they added to ``out_dir`` (the folder itself when
    it did not exist before) and the ``partial`` paths under it they were rewriting, so that a re-run
    starts clean."""
    existed = os.path.isdir(out_dir)
    before = set(os.listdir(out_dir)) if existed else set()
    try:
        yield
    except BaseException:
        if not existed:
            shutil.rmtree(out_dir, ignore_errors=True)
        elif os.path.isdir(out_dir):
            for rel in partial:
                shutil.rmtree(os.path.join(out_dir, rel), ignore_errors=True)
            for name in set(os.listdir(out_dir)) - before:
                p = os.path.join(out_dir, name)
                if os.path.isdir(p) and not os.path.islink(p):
                    shutil.rmtree(p, ignore_errors=True)
                else:
                    os.remove(p)
        raise


def warn(msg):
    """A warning line on stderr that does not break tqdm bars."""
    tqdm.write("warning: %s" % msg, file=sys.stderr)


def log(msg):
    tqdm.write(msg, file=sys.stdout)


# ---------------------------------------------------------------------------------------------
# im2rec
# ---------------------------------------------------------------------------------------------
def im2rec_script():
    """Path of the wheel's ``mxnet/tools/im2rec.py``."""
    path = os.path.join(os.path.dirname(mx.__file__), "tools", "im2rec.py")
    if not os.path.isfile(path):
        raise DatasetError("im2rec.py not found at %s: this MXNet wheel lacks mxnet/tools/ "
                           "(reinstall mxnet==1.9.1 with ./run.sh setup)" % path)
    return path


_COUNT_RE = re.compile(r"count:\s*(\d+)")
_CREATE_RE = re.compile(r"Creating \.rec file from (.+?\.lst) in ")
_FAIL_RE = re.compile(r"(imread read blank \(None\) image for file: |pack_img error[^:]*: ?)(.+?)\s*$")


def run_im2rec(args, total=None, desc="im2rec", list_sizes=None):
    """Run ``python im2rec.py ARGS`` with this interpreter and a tqdm bar fed by im2rec's
    ``count:`` lines. ``list_sizes`` maps .lst basenames to sizes (for several lists in one call).
    Returns the paths im2rec reported as unreadable; raises RuntimeError when it fails."""
    cmd = [sys.executable, im2rec_script()] + [str(a) for a in args]
    # PYTHONUTF8: im2rec opens the .lst with the default encoding; ours are UTF-8 whatever the locale
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1", PYTHONUTF8="1")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                            encoding="utf-8", errors="replace")
    tail = collections.deque(maxlen=60)
    failed = []
    base, current = 0, 0
    with tqdm(total=total, desc=desc, unit="img", leave=False, disable=total is None) as bar:
        for line in proc.stdout:
            tail.append(line)
            m = _CREATE_RE.search(line)
            if m and list_sizes:
                base += current
                current = list_sizes.get(os.path.basename(m.group(1)), 0)
                continue
            m = _COUNT_RE.search(line)
            if m:
                bar.n = min(base + int(m.group(1)), total or 0)
                bar.refresh()
                continue
            m = _FAIL_RE.search(line)
            if m:
                failed.append(m.group(2))
        bar.n = total or 0
        bar.refresh()
    rc = proc.wait()
    if rc != 0:
        raise RuntimeError("im2rec failed (exit %d): %s\n%s" % (rc, " ".join(cmd), "".join(tail)))
    return failed


def im2rec_list(prefix, root, recursive=True, shuffle=True, exts=IMAGE_EXTS):
    """Step 1 of im2rec: ``im2rec.py --list PREFIX ROOT`` -> ``PREFIX.lst`` (read back as items)."""
    args = [prefix, root, "--list"]
    if recursive:
        args.append("--recursive")
    if not shuffle:
        args.append("--no-shuffle")
    args += ["--exts"] + list(exts)
    run_im2rec(args, desc="im2rec --list")
    return read_lst(prefix + ".lst")


def write_lst(path, items):
    """Write an im2rec list: one ``index\\tlabel\\trelpath`` line per (index, label, relpath)."""
    def _write(tmp):
        with open(tmp, "w", encoding="utf-8") as f:
            for idx, label, rel in items:
                why = name_problem(rel)
                if why:
                    raise DatasetError("%r: %s" % (rel, why))
                f.write("%d\t%f\t%s\n" % (int(idx), float(label), rel))
    _atomic(path, _write)
    return path


def read_lst(path):
    """Read an im2rec list -> [(index, label, relpath)] (first label column only)."""
    out = []
    with open(path, encoding="utf-8", errors="surrogateescape") as f:
        for line in f:
            parts = line.rstrip("\n").split("\t")
            if len(parts) < 3:
                continue
            out.append((int(parts[0]), float(parts[1]), parts[-1]))
    return out


def pack(jobs, root, out_dir, *, resize=0, quality=95, encoding=".jpg", pass_through=False,
         pack_label=False, num_thread=2, desc="packing", check=None):
    """Step 2 of im2rec for one setting: ``jobs`` maps an output name to its list items (all
    relative to ``root``); writes ``out_dir/NAME.{rec,idx,lst}``. The lists are packed in one im2rec
    call inside a private folder (im2rec packs every ``PREFIX*.lst`` it sees) and moved into place
    only when complete and, with ``check``, after ``check(name, work_prefix, failed)`` returned for
    every output (it raises DatasetError to keep them all out). ``num_thread`` >= 2 so an
    unreadable image is skipped, not a crash. Returns ``(failed, checked)``: the paths im2rec
    reported as unreadable and ``{name: check's result}``."""
    os.makedirs(out_dir, exist_ok=True)
    work = tempfile.mkdtemp(prefix=".im2rec-", dir=out_dir)
    try:
        sizes = {}
        for name, items in jobs.items():
            write_lst(os.path.join(work, name + ".lst"), items)
            sizes[name + ".lst"] = len(items)
        args = [work, root, "--num-thread", max(2, int(num_thread))]
        if pass_through:
            args.append("--pass-through")
        else:
            args += ["--quality", quality, "--encoding", encoding]
            if resize:
                args += ["--resize", resize]
        if pack_label:
            args.append("--pack-label")
        failed = run_im2rec(args, total=sum(sizes.values()), desc=desc, list_sizes=sizes)
        for name in jobs:
            for ext in (".idx", ".rec", ".lst"):
                src = os.path.join(work, name + ext)
                if not os.path.exists(src):
                    raise RuntimeError("im2rec did not write %s" % src)
        checked = {name: check(name, os.path.join(work, name), failed) if check else None for name in jobs}
        for name in jobs:
            for ext in (".idx", ".rec", ".lst"):
                os.replace(os.path.join(work, name + ext), os.path.join(out_dir, name + ext))
        return failed, checked
    finally:
        shutil.rmtree(work, ignore_errors=True)


def clean_stale_work(out_dir):
    """Remove ``.im2rec-*`` folders a killed run left behind."""
    if os.path.isdir(out_dir):
        for d in os.listdir(out_dir):
            if d.startswith(".im2rec-"):
                shutil.rmtree(os.path.join(out_dir, d), ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# read-back checks
# ---------------------------------------------------------------------------------------------
def _label_of(header):
    lab = header.label
    return float(lab) if np.ndim(lab) == 0 else float(np.asarray(lab).ravel()[0])


def read_rec(prefix, decode="all", sample=50, on_image=None, desc=None):
    """Read ``PREFIX.rec`` through its ``PREFIX.idx`` with ``mx.recordio``; return a dict with
    ``count``, ``ids`` (record header ids in file order), ``labels`` (Counter of int labels),
    ``shapes`` (Counter of HxWxC of the decoded records) and ``undecodable`` (ids).
    ``decode='all'`` decodes every record (``unpack_img``), ``'sample'`` decodes ``sample`` records
    spread over the file, ``None`` none; ``on_image(header, image)`` sees each decoded record."""
    rec, idx = prefix + ".rec", prefix + ".idx"
    r = mx.recordio.MXIndexedRecordIO(idx, rec, "r")
    try:
        keys = list(r.keys)
        if decode == "all":
            pick = None
        elif decode == "sample" and keys:
            pick = set(keys[int(i)] for i in np.linspace(0, len(keys) - 1, min(sample, len(keys))))
        else:
            pick = set()
        ids, labels, shapes, bad = [], collections.Counter(), collections.Counter(), []
        for k in tqdm(keys, desc=desc or ("reading " + os.path.basename(rec)), unit="rec",
                      leave=False, disable=len(keys) < 5000):
            s = r.read_idx(k)
            if pick is None or k in pick:
                header, img = mx.recordio.unpack_img(s, iscolor=-1)
                if img is None:
                    bad.append(int(header.id))
                else:
                    shapes[img.shape] += 1
                    if on_image is not None:
                        on_image(header, img)
            else:
                header, _ = mx.recordio.unpack(s)
            ids.append(int(header.id))
            labels[int(round(_label_of(header)))] += 1
        return dict(count=len(keys), ids=ids, labels=labels, shapes=shapes, undecodable=bad)
    finally:
        r.close()


def verify_records(prefix, items, *, shown, sample=50, short_side=0, decode_all=False):
    """Read-back check of a freshly packed ``PREFIX.rec/.idx`` against its list ``items``
    ``[(index, label, relpath)]``; ``shown`` is the name used in messages (the final path, as
    ``prefix`` may be a work folder). Checks, in one header walk plus sampled decodes:

    * the record headers and the index (:func:`mxrepro.integrity.scan_recordio`, ``check_idx``);
    * one record per list item, in list order, each with the list's label;
    * ``sample`` records (all with ``decode_all``) decode completely (``image_problem``), with
      short side ``short_side`` when it is set.

    Raises DatasetError naming the record and its source file (one line); returns
    ``dict(count, labels=Counter, shapes=Counter, label_min, label_max)``."""
    rec, idx = prefix + ".rec", prefix + ".idx"
    src = {int(i): rel for i, _, rel in items}
    redo = "nothing was written; fix or remove that image and re-run"
    hint = "im2rec wrote a broken file (disk full?); nothing was written; re-run"

    def where(k, rid, pos=None):
        return "%s: record %d%s (id %d, source %s)" % (shown, k, " at byte %d" % pos if pos is not None else "",
                                                        rid, src.get(int(rid), "not in the list"))

    scan = I.scan_recordio(rec, name=shown, hint=hint)
    I.check_idx(idx, rec, scan, name=shown, hint=hint)
    ids = [int(i) for i in scan.ids]
    want = [int(i) for i, _, _ in items]
    if ids != want:
        have = set(ids)
        missing = [i for i in want if i not in have]
        if missing:
            raise DatasetError("%s: %d of %d images were not packed (e.g. %s): im2rec could not read them; %s"
                               % (shown, len(missing), len(want), ", ".join(src[i] for i in missing[:3]), redo))
        k = next(k for k, (a, b) in enumerate(zip(ids, want)) if a != b) if len(ids) == len(want) else len(want)
        raise DatasetError("%s: record %d has id %s, the list has %s there (%d records for %d list entries); %s"
                           % (shown, k, ids[k] if k < len(ids) else "-", want[k] if k < len(want) else "-",
                              len(ids), len(want), hint))
    want_label = np.asarray([float(l) for _, l, _ in items], np.float32)
    wrong = np.flatnonzero(scan.labels != want_label)
    if len(wrong):
        k = int(wrong[0])
        raise DatasetError("%s has label %g, the list says %g; %s" % (where(k, ids[k]), scan.labels[k],
                                                                       want_label[k], hint))
    shapes = collections.Counter()
    numbers = range(len(scan)) if decode_all else I.sample_positions(len(scan), sample)
    with I.open_records(rec) as rf:
        for k in numbers:
            pos = int(scan.starts[k])
            _, _, rid, data = I.record_payload(rf, pos)
            img, why = I.image_decode(data)
            if why:
                raise DatasetError("%s does not decode: %s; the image changed or broke after it was checked: %s"
                                   % (where(k, rid, pos), why, redo))
            if short_side and min(img.shape[:2]) != short_side:
                raise DatasetError("%s has short side %d, expected %d; %s" % (where(k, rid, pos), min(img.shape[:2]),
                                                                             short_side, hint))
            shapes[img.shape] += 1
    labels = collections.Counter(int(round(float(l))) for l in scan.labels)
    return dict(count=len(scan), labels=labels, shapes=shapes,
                label_min=I._num(scan.labels.min()) if len(scan) else None,
                label_max=I._num(scan.labels.max()) if len(scan) else None)


def label_info(labels, num_classes):
    """The ``labels`` entry of prepare_info.json: min/max label, the dataset's class count and the
    number of classes present, from an iterable of labels."""
    a = np.asarray(list(labels), np.float64)
    return dict(min=I._num(a.min()) if a.size else None, max=I._num(a.max()) if a.size else None,
                num_classes=int(num_classes), present=int(len(np.unique(a))))


def rec_complete(prefix, expected_count):
    """Cheap check for an existing output: both files exist, the index has ``expected_count``
    entries, the last offset lies inside the .rec and the last record unpacks."""
    rec, idx = prefix + ".rec", prefix + ".idx"
    if not (os.path.isfile(rec) and os.path.isfile(idx)):
        return False
    try:
        r = mx.recordio.MXIndexedRecordIO(idx, rec, "r")
        try:
            if len(r.keys) != expected_count:
                return False
            if expected_count == 0:
                return True
            last = max(r.keys, key=lambda k: r.idx[k])
            if r.idx[last] >= os.path.getsize(rec):
                return False
            mx.recordio.unpack(r.read_idx(last))
            return True
        finally:
            r.close()
    except Exception:  # noqa: BLE001  (any read error means "redo")
        return False


# ---------------------------------------------------------------------------------------------
# idempotence record
# ---------------------------------------------------------------------------------------------
class PrepInfo:
    """``OUT/prepare_info.json``: per output, the settings and record count it was made with."""

    def __init__(self, out_dir, tool, force=False):
        self.out_dir, self.tool = out_dir, tool
        self.path = os.path.join(out_dir, INFO_FILE)
        self.data = {"tool": tool, "outputs": {}, "inputs": {}}
        if not force and os.path.isfile(self.path):
            try:
                with open(self.path) as f:
                    old = json.load(f)
                if old.get("tool") == tool:
                    self.data = old
            except (OSError, ValueError):
                pass

    def done(self, name, settings):
        """True when ``OUT/NAME.rec/.idx`` exist, were made with ``settings``, are unchanged since
        (size and mtime, when recorded) and pass a header walk with the recorded count."""
        entry = self.data["outputs"].get(name)
        if not entry or entry.get("settings") != _jsonable(settings):
            return False
        prefix = os.path.join(self.out_dir, name)
        if not rec_complete(prefix, entry.get("count", -1)):
            return False
        stamp = entry.get("file")
        try:
            if stamp and {k: stamp.get(k) for k in ("size", "mtime_ns")} != I.file_stamp(prefix + ".rec"):
                return False
            scan = I.scan_recordio(prefix + ".rec")
            I.check_idx(prefix + ".idx", prefix + ".rec", scan)
        except (OSError, DataError):
            return False
        return len(scan) == entry.get("count", -1)

    def record(self, name, settings, count, **extra):
        """Store an output's settings, count and ``extra`` (e.g. ``labels``); ``file`` (size and
        mtime_ns of ``NAME.rec``) is added when the file exists, so readers can tell the entry still
        describes it."""
        entry = dict(settings=_jsonable(settings), count=int(count), **_jsonable(extra))
        rec = os.path.join(self.out_dir, name + ".rec")
        if os.path.isfile(rec):
            entry["file"] = I.file_stamp(rec)
        self.data["outputs"][name] = entry
        self.save()

    def forget(self, name):
        self.data["outputs"].pop(name, None)

    def save(self):
        def _write(tmp):
            with open(tmp, "w") as f:
                json.dump(self.data, f, indent=1, sort_keys=True)
        _atomic(self.path, _write)


def _jsonable(x):
    return json.loads(json.dumps(x))


def _atomic(path, write_fn):
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".tmp-")
    os.close(fd)
    try:
        write_fn(tmp)
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


_UMASK = os.umask(0)
os.umask(_UMASK)


def stamped(root, relpaths):
    """``relpath<TAB>size<TAB>mtime_ns`` per file (for :func:`fingerprint`); a missing file gets -1 -1."""
    out = []
    for rel in relpaths:
        try:
            st = os.stat(os.path.join(root, rel))
            out.append("%s\t%d\t%d" % (rel, st.st_size, st.st_mtime_ns))
        except OSError:
            out.append("%s\t-1\t-1" % rel)
    return out


def fingerprint(strings):
    """sha1 of sorted strings: detects a changed input tree without re-reading images."""
    h = hashlib.sha1()
    for s in sorted(strings):
        h.update(s.encode("utf-8", "surrogateescape") + b"\n")
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------
# image folders
# ---------------------------------------------------------------------------------------------
def is_image_name(name, exts=IMAGE_EXTS):
    return os.path.splitext(name)[1].lower() in exts


def check_dir(path, what, expected):
    """DatasetError unless ``path`` is an existing folder; ``expected`` says what should be there."""
    if not os.path.exists(path):
        raise DatasetError("%s %s does not exist; expected %s" % (what, path, expected))
    if not os.path.isdir(path):
        raise DatasetError("%s %s is not a folder; expected %s" % (what, path, expected))


def scan_tree(root, exts=IMAGE_EXTS):
    """Walk ``root`` (following links, sorted): ``(images, others)`` as relpaths, where ``others``
    are files whose extension is not an image extension (hidden files included)."""
    images, others = [], []
    for path, dirs, files in os.walk(root, followlinks=True):
        dirs.sort()
        for f in sorted(files):
            rel = os.path.relpath(os.path.join(path, f), root)
            (images if is_image_name(f, exts) else others).append(rel)
    return images, others


def name_problem(rel):
    """Why the relative path ``rel`` cannot go in an im2rec .lst (None when it can): im2rec splits
    lines at tabs and reads the list as UTF-8 (run_im2rec sets PYTHONUTF8)."""
    if any(c in rel for c in "\t\n\r"):
        return "file name contains a tab or line break (it cannot go in an im2rec .lst)"
    try:
        rel.encode("utf-8")
    except UnicodeEncodeError:
        return "file name is not valid UTF-8 (it cannot go in an im2rec .lst)"
    return None


def image_problem(path):
    """Why the image file ``path`` would not be packed and read back intact (None when it would):
    its bytes hold a complete JPEG/PNG stream that ``cv2.imdecode`` decodes
    (:func:`mxrepro.integrity.image_problem`)."""
    return I.file_problem(path)


def image_ok(path):
    return image_problem(path) is None


def validate_images(root, relpaths, threads=2, desc="checking images"):
    """Check every image (:func:`name_problem`, :func:`image_problem`) in ``threads`` threads
    (file reads and cv2 release the GIL), in bounded batches; return ``{relpath: reason}`` for
    the ones that fail."""
    bad = {}
    if not relpaths:
        return bad
    relpaths = list(relpaths)

    def one(rel):
        return name_problem(rel) or image_problem(os.path.join(root, rel))

    step = 512 * max(1, int(threads))  # bounded batches: a million pending futures would not fit
    with ThreadPoolExecutor(max(1, int(threads))) as ex, \
            tqdm(total=len(relpaths), desc=desc, unit="img", leave=False) as bar:
        for start in range(0, len(relpaths), step):
            batch = relpaths[start:start + step]
            for rel, why in zip(batch, ex.map(one, batch)):
                if why:
                    bad[rel] = why
            bar.update(len(batch))
    return bad


def list_paths(what, paths, reasons=None, shown=LIST_SHOWN):
    """Log ``what`` and up to ``shown`` of ``paths`` one per line (with ``reasons[path]``)."""
    if not paths:
        return
    log("    %s (%d):" % (what, len(paths)))
    for p in paths[:shown]:
        log("      %s%s" % (p, ": %s" % reasons[p] if reasons and p in reasons else ""))
    if len(paths) > shown:
        log("      ... and %d more (all listed in %s)" % (len(paths) - shown, INFO_FILE))


def class_folder(label, name, num_classes):
    """Folder name for class ``label``: zero-padded id (so a sorted listing is label order, as
    ``ImageFolderDataset`` assumes) plus the class name when it adds something."""
    width = len(str(max(num_classes - 1, 0)))
    name = re.sub(r"[\s/\\]+", "_", str(name)).strip("_")
    sid = "%0*d" % (width, label)
    return sid if name in ("", str(label)) else "%s_%s" % (sid, name)


def write_lines(path, lines):
    def _write(tmp):
        with open(tmp, "w") as f:
            for s in lines:
                f.write("%s\n" % s)
    _atomic(path, _write)


# ---------------------------------------------------------------------------------------------
# small in-memory datasets (CIFAR, digits): images + lists + PNG records + pixel-exact check
# ---------------------------------------------------------------------------------------------
def build_small_dataset(out_dir, splits, class_names, *, settings, tool, force=False, threads=2):
    """Write the CIFAR-style layout from in-memory arrays.

    ``splits`` maps a split name (``train``/``test``) to ``(images, labels, ids, shuffle)``:
    ``images`` uint8 (N, H, W, 3) **RGB**, ``labels`` ints in ``[0, len(class_names))``, ``ids``
    unique ints (the record header id, e.g. the position in the source), ``shuffle`` whether the
    record order is shuffled (seed 100, like im2rec --list).

    Produces ``OUT/images/SPLIT/<class folder>/<id>.png``, ``OUT/SPLIT.lst``, ``OUT/SPLIT.rec/.idx``
    (PNG bytes stored as-is with im2rec ``--pass-through``: lossless), ``OUT/labels.txt`` and
    ``OUT/prepare_info.json``. Every record is read back and compared pixel-exactly with its
    source. Returns a summary dict; skips the work when all outputs exist, match ``settings`` and
    verify (unless ``force``)."""
    info = PrepInfo(out_dir, tool, force=force)
    settings = dict(settings, num_classes=len(class_names))
    done = small_dataset_present(out_dir, tool, list(splits), settings, force=force)
    if done:
        return done
    existing = [s for s in splits if s in info.data["outputs"]
                and info.data["outputs"][s].get("settings") != _jsonable(settings)]
    if existing and not force:
        raise DatasetError("%s already holds %s made with other settings (%s); pass --force to "
                           "overwrite them or choose another --out"
                           % (out_dir, ", ".join(s + ".rec" for s in existing),
                              info.data["outputs"][existing[0]]["settings"]))
    first = np.asarray(next(iter(splits.values()))[0])
    check_out(out_dir, small_dataset_bytes(sum(len(v[1]) for v in splits.values()), max(first.shape[1:3] or (32,))))
    with removed_on_failure(out_dir, partial=[os.path.join("images", s) for s in splits]):
        clean_stale_work(out_dir)
        ncls = len(class_names)
        folders = [class_folder(i, n, ncls) for i, n in enumerate(class_names)]
        jobs, summary = {}, {}
        for split, (images, labels, ids, shuffle) in splits.items():
            images = np.asarray(images)
            labels = np.asarray(labels).astype(np.int64)
            ids = np.asarray(ids).astype(np.int64)
            if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
                raise ValueError("images must be uint8 (N,H,W,3), got %s %s" % (images.dtype, images.shape))
            if len(set(ids.tolist())) != len(ids):
                raise ValueError("record ids of %s are not unique" % split)
            if len(labels) and (labels.min() < 0 or labels.max() >= ncls):
                raise DatasetError("%s labels out of range [0, %d): min %d max %d"
                                   % (split, ncls, labels.min(), labels.max()))
            split_dir = os.path.join(out_dir, "images", split)
            shutil.rmtree(split_dir, ignore_errors=True)
            for f in sorted(set(labels.tolist())):
                os.makedirs(os.path.join(split_dir, folders[f]), exist_ok=True)
            width = len(str(max(int(ids.max()) if len(ids) else 0, 1)))
            items = []
            with disk.writing(split_dir):
                for img, lab, i in tqdm(zip(images, labels, ids), total=len(ids), desc="writing %s PNGs" % split,
                                        unit="img", leave=False):
                    rel = os.path.join(split, folders[lab], "%0*d.png" % (width, i))
                    if not cv2.imwrite(os.path.join(out_dir, "images", rel), img[:, :, ::-1]):
                        raise RuntimeError("could not write %s" % rel)
                    items.append((int(i), int(lab), rel))
            if shuffle:
                random.Random(LIST_SEED).shuffle(items)
            jobs[split] = items
            info.forget(split)
        info.save()

        def check(split, prefix, failed):
            """Every record: headers, index, id order, labels (verify_records), then pixel-exact."""
            images, _, ids, _ = splits[split]
            shown = os.path.join(out_dir, split + ".rec")
            got = verify_records(prefix, jobs[split], shown=shown, sample=0)
            pos = {int(i): k for k, i in enumerate(ids)}
            src = {int(i): rel for i, _, rel in jobs[split]}
            images = np.asarray(images)
            mism = []

            def compare(header, img):
                k = pos.get(int(header.id))
                if k is None or img.shape != images[k].shape or not np.array_equal(img, images[k][:, :, ::-1]):
                    mism.append(int(header.id))

            dec = read_rec(prefix, decode="all", on_image=compare)
            bad = mism + dec["undecodable"]
            if bad:
                raise DatasetError("%s: %d records differ from their source images (e.g. id %d, source images/%s); "
                                   "nothing was written" % (shown, len(bad), bad[0], src.get(bad[0], "?")))
            got["shapes"] = dec["shapes"]
            return got

        with disk.writing(os.path.join(out_dir, "+".join(jobs) + ".rec")):
            _, checked = pack(jobs, os.path.join(out_dir, "images"), out_dir, pass_through=True, num_thread=threads,
                              desc="im2rec " + "+".join(jobs), check=check)
        write_lines(os.path.join(out_dir, "labels.txt"), class_names)
        for split in splits:
            got = checked[split]
            hist = [got["labels"].get(c, 0) for c in range(ncls)]
            info.record(split, settings, got["count"], label_counts=hist,
                        labels=label_info(got["labels"].elements(), ncls),
                        shape=list(next(iter(got["shapes"]))) if got["shapes"] else None)
            summary[split] = info.data["outputs"][split]
        return dict(skipped=False, **summary)


def small_dataset_present(out_dir, tool, split_names, settings, force=False):
    """The skip test of :func:`build_small_dataset`, cheap enough to run before loading any data:
    a summary dict when every split's outputs exist, match ``settings`` (which must include
    ``num_classes``) and verify, else None."""
    if force:
        return None
    info = PrepInfo(out_dir, tool)
    if all(info.done(s, settings) for s in split_names) and os.path.isfile(os.path.join(out_dir, "labels.txt")):
        log("%s: all outputs present and verified (%s); nothing to do (--force to redo)"
            % (out_dir, ", ".join("%s.rec %d" % (s, info.data["outputs"][s]["count"]) for s in split_names)))
        return dict(skipped=True, **{s: info.data["outputs"][s] for s in split_names})
    return None


def print_small_summary(out_dir, result, class_names):
    """Summary lines for build_small_dataset's result."""
    verb = "present" if result.get("skipped") else "written and verified (pixel-exact)"
    log("summary (%s): %d classes, labels.txt" % (out_dir, len(class_names)))
    for split in ("train", "test"):
        e = result.get(split)
        if not e:
            continue
        hist = e.get("label_counts") or [0]
        used = [i for i, c in enumerate(hist) if c] or [0]
        log("  %-5s %s.rec/.idx: %6d records %s, labels %d..%d (%d of %d classes present), "
            "per class min %d max %d, image %s"
            % (split, split, e["count"], verb, min(used), max(used), sum(1 for c in hist if c), len(hist),
               min(hist), max(hist), "x".join(str(s) for s in (e.get("shape") or []))))


# ---------------------------------------------------------------------------------------------
# flat ImageNet val/ -> class folders
# ---------------------------------------------------------------------------------------------
def load_synsets(path):
    """ILSVRC2012_ID -> synset for the 1-based ground-truth list. ``path`` is the devkit's
    ``data/meta.mat`` (leaf synsets, read with scipy) or a text file whose line *i* starts with the
    synset of ID *i*. (The devkit's IDs are **not** the sorted-wnid order: ID 1 is n02119789.)"""
    if not os.path.isfile(path):
        raise DatasetError("synset file %s does not exist; expected the devkit's data/meta.mat or a "
                           "text file with one synset per line (line i = ILSVRC2012_ID i)" % path)
    if path.lower().endswith(".mat"):
        import scipy.io
        try:
            syn = scipy.io.loadmat(path, squeeze_me=True)["synsets"]
            ids, wnids, kids = syn["ILSVRC2012_ID"], syn["WNID"], syn["num_children"]
        except Exception as e:  # noqa: BLE001
            raise DatasetError("%s is not the ILSVRC devkit meta.mat (no synsets/ILSVRC2012_ID/WNID: %s)" % (path, e))
        return {int(i): str(w) for i, w, k in zip(np.atleast_1d(ids), np.atleast_1d(wnids),
                                                   np.atleast_1d(kids)) if int(k) == 0}
    out = {}
    with open(path) as f:
        for line in f:
            tok = line.split()
            if tok:
                out[len(out) + 1] = tok[0]
    if not out:
        raise DatasetError("synset file %s is empty" % path)
    return out


def read_val_labels(label_file, names, classes=None, synsets=None):
    """Map flat val file names to class-folder names from ``label_file``, one of:

    * ``filename label`` lines, label a synset/folder name (``n01440764``) or a 0-based integer id
      into ``classes`` (the sorted train folders, e.g. Caffe's ``val.txt``);
    * ``ImageId,PredictionString`` CSV (Kaggle's ``LOC_val_solution.csv``: first synset is the label);
    * one 1-based ILSVRC2012_ID per line (``ILSVRC2012_validation_ground_truth.txt``), line *k*
      for the *k*-th file of the sorted names; needs ``synsets`` (see :func:`load_synsets`).

    Names match with or without extension. Returns ``{filename: folder}`` for the labelled names."""
    if not os.path.isfile(label_file):
        raise DatasetError("val label file %s does not exist; expected lines 'filename label', the "
                           "ILSVRC2012 ground-truth list or LOC_val_solution.csv" % label_file)
    with open(label_file) as f:
        lines = [ln.strip() for ln in f if ln.strip() and not ln.startswith("#")]
    if not lines:
        raise DatasetError("val label file %s is empty" % label_file)
    by_name = {}
    if all(re.fullmatch(r"\d+", ln) for ln in lines):
        if synsets is None:
            raise DatasetError("%s is a 1-based ILSVRC2012_ID list (ground truth); pass --val-synsets "
                               "with the devkit's data/meta.mat (or a text file, line i = synset of ID i)"
                               % label_file)
        names = sorted(names)
        if len(lines) != len(names):
            raise DatasetError("%s has %d labels but val/ holds %d images; the ground-truth list "
                               "needs all val images, in sorted-name order" % (label_file, len(lines), len(names)))
        for n, ln in zip(names, lines):
            if int(ln) not in synsets:
                raise DatasetError("ILSVRC2012_ID %s in %s is not in the synset list" % (ln, label_file))
            by_name[n] = synsets[int(ln)]
        return by_name
    for ln in lines:
        if "," in ln:
            name, _, rest = ln.partition(",")
            if name.strip() == "ImageId":
                continue
            tok = rest.split()
            label = tok[0] if tok else ""
        else:
            tok = ln.split()
            if len(tok) < 2:
                raise DatasetError("cannot read line %r of %s: expected 'filename label'" % (ln, label_file))
            name, label = tok[0], tok[1]
        if re.fullmatch(r"\d+", label):
            if classes is None or int(label) >= len(classes):
                raise DatasetError("%s gives integer label %s for %s but there are %s classes; integer "
                                   "labels index the sorted train/ class folders"
                                   % (label_file, label, name, len(classes) if classes else "no"))
            label = classes[int(label)]
        by_name[os.path.basename(name.strip())] = label
    out = {}
    for n in names:
        lab = by_name.get(n, by_name.get(os.path.splitext(n)[0]))
        if lab is not None:
            out[n] = lab
    return out


def sort_val(val_dir, label_file, dest_dir=None, mode="move", classes=None, synsets=None):
    """Put the images lying directly in ``val_dir`` into ``dest_dir/<class>/`` (default: in place,
    ``val_dir/<class>/``) by ``mode`` ``move``/``symlink``/``copy``, with labels from
    :func:`read_val_labels`. Idempotent (present targets are left alone). Returns a dict with
    ``sorted`` (count), ``unlabelled`` (names left in place) and ``classes`` (folders used)."""
    check_dir(val_dir, "val folder", "the flat validation images")
    if mode not in ("move", "symlink", "copy"):
        raise ValueError("mode must be move, symlink or copy")
    dest_dir = dest_dir or val_dir
    names = sorted(f for f in os.listdir(val_dir)
                   if os.path.isfile(os.path.join(val_dir, f)) and is_image_name(f))
    if not names:
        return dict(sorted=0, unlabelled=[], classes=[])
    labels = read_val_labels(label_file, names, classes=classes, synsets=synsets)
    if classes is not None:
        unknown = sorted(set(labels.values()) - set(classes))
        if unknown:
            raise DatasetError("%s names classes that are not train/ folders: %s"
                               % (label_file, ", ".join(unknown[:5])))
    done = 0
    for n in tqdm(names, desc="sorting val", unit="img", leave=False):
        if n not in labels:
            continue
        src, dst_dir = os.path.join(val_dir, n), os.path.join(dest_dir, labels[n])
        dst = os.path.join(dst_dir, n)
        os.makedirs(dst_dir, exist_ok=True)
        if not os.path.lexists(dst):
            if mode == "move":
                shutil.move(src, dst)
            elif mode == "symlink":
                os.symlink(os.path.abspath(src), dst)
            else:
                shutil.copy2(src, dst)
        done += 1
    unlabelled = [n for n in names if n not in labels]
    if unlabelled:
        warn("%d val images have no label in %s and stay unsorted (e.g. %s)"
             % (len(unlabelled), label_file, ", ".join(unlabelled[:3])))
    return dict(sorted=done, unlabelled=unlabelled, classes=sorted(set(labels.values())))
