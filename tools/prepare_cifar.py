#!/usr/bin/env python
"""CIFAR-10 / CIFAR-100 (official python archives) -> PNG images, .lst and im2rec RecordIO.

    python tools/prepare_cifar.py --dataset cifar10  --out data/cifar10  [--src cifar-10-python.tar.gz]
    python tools/prepare_cifar.py --dataset cifar100 --out data/cifar100 [--src DIR] [--coarse-labels]

Writes OUT/images/{train,test}/<NN_class>/<id>.png, OUT/{train,test}.lst, OUT/{train,test}.rec/.idx
(PNG bytes packed losslessly by the wheel's im2rec with --pass-through), OUT/labels.txt and
OUT/prepare_info.json; then reads every record back and checks it pixel-exactly against the archive.
CIFAR-100 uses the 100 fine labels unless --coarse-labels (the AFF reference trained on the 20
coarse ones by accident, see docs/aff.md). docs/datasets.md has the layout.
"""
import argparse
import hashlib
import io
import os
import pickle
import sys
import tarfile
import urllib.request

import mxrepro  # noqa: E402,F401  (sets OMP_NUM_THREADS before mxnet)
from mxrepro import datasets as D  # noqa: E402

import numpy as np  # noqa: E402
from tqdm import tqdm  # noqa: E402

SPECS = {
    "cifar10": dict(
        archive="cifar-10-python.tar.gz", folder="cifar-10-batches-py",
        url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        md5="c58f30108f718f92721af3b95e74349a",
        train=["data_batch_%d" % i for i in range(1, 6)], test=["test_batch"], meta="batches.meta",
        sizes=(50000, 10000)),
    "cifar100": dict(
        archive="cifar-100-python.tar.gz", folder="cifar-100-python",
        url="https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        md5="eb9058c3a382ffc7106e4002c42a8d85",
        train=["train"], test=["test"], meta="meta", sizes=(50000, 10000)),
}
# Folders of the other CIFAR downloads, to say what a wrong archive is.
OTHER_FOLDERS = {"cifar-10-batches-py": "the CIFAR-10 python archive (use --dataset cifar10)",
                 "cifar-100-python": "the CIFAR-100 python archive (use --dataset cifar100)",
                 "cifar-10-batches-bin": "the CIFAR-10 *binary* archive (the python version is needed)",
                 "cifar-100-binary": "the CIFAR-100 *binary* archive (the python version is needed)",
                 "cifar-10-batches-mat": "the CIFAR-10 *Matlab* archive (the python version is needed)"}


class _SafeUnpickler(pickle.Unpickler):
    """The CIFAR batches are pickled dicts of lists, bytes and numpy arrays: refuse anything else."""
    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
               ("numpy._core.multiarray", "scalar"), ("copy_reg", "_reconstructor"),
               ("copyreg", "_reconstructor"), ("__builtin__", "object"), ("builtins", "object"),
               ("_codecs", "encode"), ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer")}

    def find_class(self, module, name):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError("unexpected object %s.%s" % (module, name))
        return super().find_class(module, name)


def _load_pickle(raw, where):
    try:
        obj = _SafeUnpickler(io.BytesIO(raw), encoding="latin1").load()
    except Exception as e:  # noqa: BLE001
        raise D.DatasetError("%s is not a CIFAR python pickle (%s)" % (where, e))
    if not isinstance(obj, dict):
        raise D.DatasetError("%s is not a CIFAR python pickle (a dict was expected)" % where)
    out = {}
    for k, v in obj.items():
        k = k.decode("latin1") if isinstance(k, bytes) else k
        if isinstance(v, list):
            v = [x.decode("latin1") if isinstance(x, bytes) else x for x in v]
        out[k] = v
    return out


class _Source:
    """Members of a CIFAR python archive, read from the .tar.gz or from its extracted folder."""

    def __init__(self, path, spec, dataset):
        self.spec, self.dataset, self.path = spec, dataset, path
        self.tar = None
        expected = ("the official %s (%s) or its extracted folder %s/"
                    % (dataset.upper().replace("CIFAR", "CIFAR-"), spec["archive"], spec["folder"]))
        if not os.path.exists(path):
            raise D.DatasetError("--src %s does not exist; expected %s" % (path, expected))
        needed = spec["train"] + spec["test"] + [spec["meta"]]
        if os.path.isdir(path):
            for cand in (path, os.path.join(path, spec["folder"])):
                if all(os.path.isfile(os.path.join(cand, n)) for n in needed):
                    self.dir = cand
                    return
            tar_path = os.path.join(path, spec["archive"])
            if os.path.isfile(tar_path):
                path = self.path = tar_path
            else:
                present = sorted(os.listdir(path))
                hint = [OTHER_FOLDERS[f] for f in present if f in OTHER_FOLDERS and f != spec["folder"]]
                raise D.DatasetError(
                    "folder %s does not hold %s: expected the files %s there or in %s/%s%s"
                    % (path, expected, ", ".join(needed), path, spec["folder"],
                       (" (found %s)" % "; ".join(hint)) if hint else
                       (" (it holds: %s)" % ", ".join(present[:8]) if present else " (it is empty)")))
        try:
            self.tar = tarfile.open(path, "r:*")
        except (tarfile.TarError, OSError) as e:
            raise D.DatasetError("%s is not a readable tar archive (%s); expected %s" % (path, e, expected))
        names = {m.name.removeprefix("./"): m for m in self.tar.getmembers() if m.isfile()}
        self.members = names
        missing = [n for n in needed if "%s/%s" % (spec["folder"], n) not in names]
        if missing:
            tops = sorted({n.split("/")[0] for n in names})
            hint = [OTHER_FOLDERS[t] for t in tops if t in OTHER_FOLDERS and t != spec["folder"]]
            raise D.DatasetError(
                "%s is not %s: it lacks %s%s" % (
                    path, expected, ", ".join("%s/%s" % (spec["folder"], n) for n in missing[:4]),
                    (" -- it looks like %s" % hint[0]) if hint else
                    " (top-level entries: %s)" % (", ".join(tops[:8]) or "none")))

    def signature(self):
        """Name and byte size of each needed member: tells a re-run whether the source changed."""
        names = self.spec["train"] + self.spec["test"] + [self.spec["meta"]]
        if self.tar is None:
            return {n: os.path.getsize(os.path.join(self.dir, n)) for n in names}
        return {n: self.members["%s/%s" % (self.spec["folder"], n)].size for n in names}

    def load(self, name):
        if self.tar is None:
            where = os.path.join(self.dir, name)
            with open(where, "rb") as f:
                return _load_pickle(f.read(), where)
        where = "%s:%s/%s" % (self.path, self.spec["folder"], name)
        return _load_pickle(self.tar.extractfile(self.members["%s/%s" % (self.spec["folder"], name)]).read(), where)


def _split(src, names, label_key):
    """Concatenate batches -> (uint8 RGB (N,32,32,3), labels)."""
    datas, labels = [], []
    for name in names:
        b = src.load(name)
        if "data" not in b or label_key not in b:
            raise D.DatasetError("batch %s has no '%s'/'data' entry (keys: %s); is this the right "
                                 "--dataset?" % (name, label_key, ", ".join(sorted(b))))
        data = np.asarray(b["data"])
        if data.ndim != 2 or data.shape[1] != 3072 or len(b[label_key]) != data.shape[0]:
            raise D.DatasetError("batch %s: 'data' must be (N, 3072) with N labels, got %s and %d labels"
                                 % (name, data.shape, len(b[label_key])))
        if data.dtype != np.uint8:
            if data.min() < 0 or data.max() > 255:
                raise D.DatasetError("batch %s: pixel values outside 0..255" % name)
            data = data.astype(np.uint8)
        datas.append(data)
        labels.extend(int(x) for x in b[label_key])
    data = np.concatenate(datas).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(data), np.asarray(labels, np.int64)


ARCHIVE_BYTES = 172 * 1000 * 1000  # the official CIFAR-10 / CIFAR-100 python archives: 170.5 / 169.0 MB


def _md5(path):
    h = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def download(spec, out_dir):
    """Fetch the official archive into OUT (kept for re-runs); a clear error when offline."""
    dest = os.path.join(out_dir, spec["archive"])
    if os.path.isfile(dest):
        return dest
    os.makedirs(out_dir, exist_ok=True)
    part = dest + ".part"
    D.log("downloading %s -> %s" % (spec["url"], dest))
    try:
        with urllib.request.urlopen(spec["url"], timeout=30) as r, open(part, "wb") as f:
            total = int(r.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=spec["archive"], leave=False) as bar:
                for chunk in iter(lambda: r.read(1 << 20), b""):
                    f.write(chunk)
                    bar.update(len(chunk))
    except OSError as e:
        if os.path.exists(part):
            os.remove(part)
        if e.errno in D.disk.DISK_ERRNOS:  # a full or read-only disk, not the network: one line, exit 3
            raise D.disk.WriteFailed(part, e.errno, e.strerror)
        raise D.DatasetError("could not download %s (%s). Without network access, fetch %s elsewhere "
                             "and pass --src PATH (the .tar.gz or its extracted %s/ folder)"
                             % (spec["url"], e, spec["archive"], spec["folder"]))
    got = _md5(part)
    if got != spec["md5"]:
        os.remove(part)
        raise D.DatasetError("downloaded %s has md5 %s, expected %s; try again" % (spec["archive"], got, spec["md5"]))
    os.replace(part, dest)
    return dest


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", required=True, choices=sorted(SPECS), help="which CIFAR")
    p.add_argument("--out", required=True, help="output folder (created); train.rec/test.rec go here")
    p.add_argument("--src", default=None,
                   help="cifar-10-python.tar.gz / cifar-100-python.tar.gz, its extracted folder "
                        "(cifar-10-batches-py / cifar-100-python) or a folder holding either; "
                        "default: OUT/<archive> if present, else download from www.cs.toronto.edu")
    p.add_argument("--coarse-labels", action="store_true",
                   help="CIFAR-100 only: label with the 20 coarse superclasses instead of the 100 fine classes")
    p.add_argument("--threads", type=int, default=max(2, os.cpu_count() or 2),
                   help="im2rec packing processes (at least 2)")
    p.add_argument("--force", action="store_true", help="redo everything even when the outputs verify")
    return p.parse_args(argv)


def run(args):
    spec = SPECS[args.dataset]
    if args.coarse_labels and args.dataset != "cifar100":
        raise D.DatasetError("--coarse-labels only applies to --dataset cifar100")
    D.check_positive(args.threads, "--threads", "im2rec packing processes")
    out = os.path.abspath(args.out)
    # writable, with room for the archive when it is to be downloaded (the images are checked once known)
    fetch = not args.src and not os.path.isfile(os.path.join(out, spec["archive"]))
    D.check_out(out, ARCHIVE_BYTES if fetch else None)
    src_path = args.src if args.src else download(spec, out)
    src = _Source(src_path, spec, args.dataset)
    meta = src.load(spec["meta"])
    if args.dataset == "cifar10":
        label_key, names_key = "labels", "label_names"
    elif args.coarse_labels:
        label_key, names_key = "coarse_labels", "coarse_label_names"
    else:
        label_key, names_key = "fine_labels", "fine_label_names"
    if names_key not in meta:
        raise D.DatasetError("%s has no '%s' (keys: %s); is this the right --dataset?"
                             % (spec["meta"], names_key, ", ".join(sorted(meta))))
    class_names = [str(n) for n in meta[names_key]]
    settings = dict(dataset=args.dataset, labels=label_key, source=src.signature(), num_classes=len(class_names))
    done = D.small_dataset_present(out, "prepare_cifar", ["train", "test"], settings, force=args.force)
    if done:
        D.print_small_summary(out, done, class_names)
        return 0
    splits = {}
    for split, names, shuffle in (("train", spec["train"], True), ("test", spec["test"], False)):
        data, labels = _split(src, names, label_key)
        splits[split] = (data, labels, np.arange(len(labels)), shuffle)
        if len(labels) != spec["sizes"][split == "test"]:
            D.warn("%s has %d %s images (the official archive has %d)"
                   % (src_path, len(labels), split, spec["sizes"][split == "test"]))
    D.log("%s: %s from %s, %d classes (%s)" % (args.dataset, ", ".join("%s %d" % (s, len(v[1])) for s, v in splits.items()),
                                               src_path, len(class_names), label_key))
    result = D.build_small_dataset(out, splits, class_names, settings=settings, tool="prepare_cifar",
                                   force=args.force, threads=args.threads)
    D.print_small_summary(out, result, class_names)
    return 0


def main(argv=None):
    args = parse_args(argv)
    return D.run_cli(run, args)


if __name__ == "__main__":
    sys.exit(main())
