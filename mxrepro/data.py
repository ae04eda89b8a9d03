"""Data for the training engine: loaders, the papers' augmentations, and one *data spec* per layout.

A data spec knows its files and answers the engine's questions before anything is built:
``exists()`` / ``missing_message()``, ``verify()`` (RecordIO integrity: every record header, the
``.idx`` offsets, every record decoded and its size checked against the crop, cached, one
``data check:`` line per file; :func:`mxrepro.integrity.check_records`, settings from
``set_check``), ``label_summary()`` (label range and
class count, from the prepare tools' ``prepare_info.json`` or a header scan), ``num_train()`` and
``loaders(batch, part, parts, seed)``:

* :class:`RecordIterData` -- ``mx.io.ImageRecordIter`` on a train/val ``.rec`` pair (the FBN scripts;
  the gluon-cv ``--use-rec`` path of AFF and bL-Net). The training iterator is re-created every epoch
  with a seed derived from (seed, epoch), so a resumed run reads the same order as an uninterrupted
  one; an error MXNet's reader still raises is reported with the file name.
* :class:`DatasetData` -- Gluon datasets behind a DataLoader: CIFAR-layout ``.rec`` files
  (``ImageRecordDataset``) or image folders (``ImageFolderDataset``, wrapped so an undecodable image
  is skipped with a warning naming it, and the run stops past 1% of failures).

Layouts (made by tools/prepare_cifar.py, tools/prepare_digits.py, tools/prepare_imagenet.py):

* CIFAR-like (cifar10, cifar100, digits): ``DIR/train.rec, DIR/test.rec`` (+ ``.idx``) and
  ``DIR/images/{train,test}/<class>/*.png``.
* ImageNet-like: ``DIR/train.rec, DIR/val.rec`` (+ ``.idx``) and ``DIR/train/<class>/*,
  DIR/val/<class>/*``; the FBN scripts read ``train_256_q90.rec``/``train_480_q90.rec`` and
  ``val_256_q90.rec``.

Every loader yields ``(data, label)`` NDArray batches, knows its number of batches per epoch, and
takes ``set_epoch(e)``: shuffling (and, with ``num_workers=0``, augmentation) is a function of
(seed, epoch). ``num_parts`` / ``part_index`` give every distributed worker a disjoint, equal share
(docs/reference/mxnet.md §1.2, §6).

Augmentation: FBN (docs/reference/fbn.md §5.1, §5.3) mean subtraction only, CIFAR pad 4 + random crop + flip,
ImageNet the tornadomeet levels; gluon-cv (AFF, docs/reference/aff.md §3) CIFAR RandomCrop(32, pad 4) + flip +
Normalize(CIFAR mean/std), ImageNet RandomResizedCrop(0.08-1, 3/4-4/3) + flip + jitter 0.4 +
lighting 0.1, evaluation resize ceil(224/0.875) + centre crop; bL-Net (docs/reference/blnet.md §3) the same without
lighting.
"""
import logging
import math
import os

import mxnet as mx
import numpy as np
from mxnet import gluon
from mxnet.gluon.data.vision import transforms

from . import integrity
from .lifeline import loader_workers_die_with_parent

log = logging.getLogger(__name__)

__all__ = ["CIFAR_MEAN", "CIFAR_STD", "IMAGENET_MEAN_RGB", "IMAGENET_STD_RGB", "DATASET_CLASSES",
           "ShardedShuffleSampler", "Loader", "DatasetLoader", "RecIterLoader", "cifar_transforms",
           "imagenet_transforms", "RecordIterData", "DatasetData", "cifar_data", "imagenet_folder_data",
           "num_classes_of", "fbn_rec_kwargs", "gluoncv_rec_kwargs", "add_check_args"]

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2023, 0.1994, 0.2010)
IMAGENET_MEAN_RGB = (123.68, 116.779, 103.939)
IMAGENET_STD_RGB = (58.393, 57.12, 57.375)
DATASET_CLASSES = {"cifar10": 10, "cifar100": 100, "digits": 10, "imagenet": 1000}


def num_classes_of(dataset, fallback=None):
    """Classes of a known dataset name, else ``fallback``."""
    return DATASET_CLASSES.get(str(dataset).lower(), fallback)


class ShardedShuffleSampler(gluon.data.sampler.Sampler):
    """Per-epoch permutation (a function of ``seed`` and the epoch set with ``set_epoch``), strided
    into ``num_parts`` disjoint shards of equal length ``length // num_parts``. Unlike gluon-cv's
    SplitSampler it does not hand contiguous (class-sorted) blocks to the workers."""

    def __init__(self, length, shuffle=True, num_parts=1, part_index=0, seed=0):
        if not 0 <= part_index < num_parts:
            raise ValueError("part_index %d out of range for %d parts" % (part_index, num_parts))
        self.length, self.shuffle = int(length), shuffle
        self.num_parts, self.part_index, self.seed = num_parts, part_index, seed
        self.epoch = 0

    def set_epoch(self, epoch):
        self.epoch = int(epoch)

    def __iter__(self):
        idx = (np.random.RandomState((self.seed * 1000003 + self.epoch) % (2 ** 32)).permutation(self.length)
               if self.shuffle else np.arange(self.length))
        part = idx[self.part_index::self.num_parts][:len(self)]
        return iter(part.tolist())

    def __len__(self):
        return self.length // self.num_parts if self.shuffle or self.num_parts > 1 else self.length


class Loader:
    """Interface of the engine's loaders: iterate ``(data, label)``; ``num_batches``, ``num_samples``
    per epoch and ``num_records`` (this worker's share of the dataset); ``set_epoch(e)``."""
    num_batches = 0
    num_samples = 0
    num_records = 0

    def set_epoch(self, epoch):
        pass

    def __iter__(self):
        raise NotImplementedError

    def __len__(self):
        return self.num_batches


class DatasetLoader(Loader):
    """A Gluon dataset (transform applied to the image) behind a DataLoader with a sharded sampler.

    ``train=True``: shuffled, incomplete last batch dropped (constant batch size, as gluon-cv and the
    distributed kvstore need); ``train=False``: in order, every sample exactly once."""

    def __init__(self, dataset, batch_size, transform=None, train=True, num_workers=0, num_parts=1, part_index=0,
                 seed=0, guard=None):
        self.source, self.guard = dataset, guard
        self.dataset = dataset.transform_first(transform) if transform is not None else dataset
        self.sampler = ShardedShuffleSampler(len(dataset), shuffle=train, num_parts=num_parts,
                                             part_index=part_index, seed=seed)
        self.batch_size, self.train, self.seed = batch_size, train, seed
        last = "discard" if train else "keep"
        if num_workers > 0:  # worker processes end with this one, even on kill -9 (mxrepro.lifeline)
            loader_workers_die_with_parent()
        self.loader = gluon.data.DataLoader(self.dataset, batch_sampler=gluon.data.BatchSampler(
            self.sampler, batch_size, last), num_workers=num_workers)
        n = self.num_records = len(self.sampler)
        self.num_batches = n // batch_size if train else int(math.ceil(n / float(batch_size)))
        self.num_samples = self.num_batches * batch_size if train else n
        if train and self.num_batches == 0:
            raise ValueError("batch size %d is larger than this worker's %d training samples; lower --batch-size"
                             % (batch_size, n))

    def set_epoch(self, epoch):
        self.sampler.set_epoch(epoch)
        if hasattr(self.source, "set_epoch"):  # integrity.SafeDataset counts skipped images per epoch
            self.source.set_epoch(epoch)

    def __iter__(self):
        if self.guard is not None:
            self.guard()
        for data, label in self.loader:
            yield data, label
        if self.guard is not None:  # a file that changed during the epoch: before its checkpoint
            self.guard()


class RecIterLoader(Loader):
    """``mx.io.ImageRecordIter`` as a Loader. ``make_iter(seed)`` creates the iterator; for training it is
    re-created by ``set_epoch(e)`` with ``seed + e`` (the order of epoch e is then a function of (seed,
    e)). ``last_batch``: 'pad' = ceil(n / batch) batches, the last one completed from the start of the
    file (the iterator's ``round_batch``, as the original FBN scripts), 'discard' = floor(n / batch).
    Validation batches are trimmed to the true record count (the iterator pads the last batch, and
    ``batch.pad`` is stale after ``reset()``, docs/reference/mxnet.md §7). MXNet errors name ``path``."""

    def __init__(self, make_iter, num_samples, batch_size, train, path, last_batch="discard", seed=0, guard=None):
        self.make_iter, self.batch_size, self.train, self.path = make_iter, int(batch_size), train, path
        self.guard = guard  # guard(None) before each epoch, guard(error) on an MXNetError (may raise DataError)
        self.seed, self.epoch, self.it = int(seed), 0, None
        self.num_samples = self.num_records = int(num_samples)
        if train:
            n = self.num_samples / float(batch_size)
            self.num_batches = max(1, int(math.ceil(n)) if last_batch == "pad" else int(n))
            self.num_samples = self.num_batches * self.batch_size
        else:
            self.num_batches = int(math.ceil(self.num_samples / float(batch_size)))

    def set_epoch(self, epoch):
        if self.train and (self.it is None or epoch != self.epoch):
            self.it = None
        self.epoch = int(epoch)

    def __iter__(self):
        if self.guard is not None:
            self.guard(None)
        try:
            yield from self._batches()
            if self.guard is not None:  # a file that changed during the epoch: before its checkpoint
                self.guard(None)
        except mx.base.MXNetError as e:
            if self.guard is not None:
                self.guard(e)
            with integrity.mxnet_errors(self.path):
                raise e from None

    def _batches(self):
        if self.it is None:
            self.it = self.make_iter(self.seed + (self.epoch if self.train else 0))
        else:
            self.it.reset()
        left = self.num_samples
        for i, batch in enumerate(self.it):
            if i >= self.num_batches or left <= 0:
                break
            data, label = batch.data[0], batch.label[0]
            if data.shape[0] > left:
                data, label = data[:left], label[:left]
            left -= data.shape[0]
            yield data, label


# ------------------------------------------------------------------------------------------------
# Transforms
# ------------------------------------------------------------------------------------------------
def cifar_transforms(train, mean=CIFAR_MEAN, std=CIFAR_STD, pad=4, size=32):
    """The reference CIFAR pipeline: [RandomCrop(size, pad) + flip] + ToTensor + Normalize."""
    steps = []
    if train:
        from gluoncv.data.transforms.block import RandomCrop
        steps += [RandomCrop(size, pad=pad), transforms.RandomFlipLeftRight()]
    steps += [transforms.ToTensor(), transforms.Normalize(list(mean), list(std))]
    return transforms.Compose(steps)


def imagenet_transforms(train, input_size=224, crop_ratio=0.875, jitter=0.4, lighting=0.1):
    """gluon-cv ImageNet pipeline for image folders (the DataLoader path of docs/reference/aff.md §3.1)."""
    norm = transforms.Normalize([m / 255.0 for m in IMAGENET_MEAN_RGB], [s / 255.0 for s in IMAGENET_STD_RGB])
    if train:
        return transforms.Compose([transforms.RandomResizedCrop(input_size), transforms.RandomFlipLeftRight(),
                                   transforms.RandomColorJitter(brightness=jitter, contrast=jitter,
                                                                saturation=jitter),
                                   transforms.RandomLighting(lighting), transforms.ToTensor(), norm])
    resize = int(math.ceil(input_size / crop_ratio))
    return transforms.Compose([transforms.Resize(resize, keep_ratio=True), transforms.CenterCrop(input_size),
                               transforms.ToTensor(), norm])




# ------------------------------------------------------------------------------------------------
# Data specs (what the engine asks of the data; see the module doc)
# ------------------------------------------------------------------------------------------------
def num_classes_of(dataset, fallback=None):
    """Classes of a known dataset name, else ``fallback``."""
    return DATASET_CLASSES.get(str(dataset).lower(), fallback)


class _Spec:
    name = "data"
    nominal_train = None   # images assumed by a dry run without data (never for training)
    last_batch = "discard"
    check_opts = dict(mode="auto", skip_bad=False, crop=None, crop_flag=None, expect=None, expect_why="")

    def set_check(self, mode="auto", skip_bad=False, crop=None, crop_flag=None, expect=None, expect_why=""):
        """How :meth:`verify` checks each ``.rec`` (:func:`mxrepro.integrity.check_records`): ``mode``
        auto/full/sample; ``skip_bad``: leave undecodable and too-small records out instead of stopping;
        ``crop``: images with a shorter side are too small (``crop_flag`` names the flag); ``expect``:
        one warning when images are larger (``expect_why`` says why that size is expected)."""
        self.check_opts = dict(mode=mode, skip_bad=bool(skip_bad), crop=crop, crop_flag=crop_flag, expect=expect,
                               expect_why=expect_why)
        return self

    def _check_rec(self, rec, idx=None):
        """Check one ``.rec``, print its one-line result; DataError for bad or too-small records
        unless skipping; returns (RecordCheck, byte offsets of the records to leave out)."""
        o = self.check_opts
        c = integrity.check_records(rec, idx, mode=o["mode"])
        if not hasattr(self, "_stamps"):
            self._stamps, self._drop = {}, {}
        self._stamps[rec] = integrity.file_stamp(rec)
        skip_hint = "or pass --skip-bad-records to train without them"
        errors, drop = [], []
        if c.bad_count:
            errors.append(integrity.bad_record_message(rec, c.bad, c.bad_count, "%s, " % integrity._hint(rec)))
            drop += [(k, pos) for k, pos, _ in c.bad]
        crop = o["crop"]
        small = c.too_small(crop) if crop else []
        if small:
            flag = " (%s %d)" % (o["crop_flag"], crop) if o["crop_flag"] else ""
            k, h, w = small[0]
            errors.append(
                "%s: record %d is %dx%d, smaller than the %dx%d crop%s (%d such record%s: %s%s); re-make the data at %d "
                "px or more%s, " % (rec, k, h, w, crop, crop, flag, len(small), "" if len(small) == 1 else "s",
                                   ", ".join(str(s[0]) for s in small[:10]), ", ..." if len(small) > 10 else "", crop,
                                   ", lower %s" % o["crop_flag"] if o["crop_flag"] else ""))
            starts = integrity.scan_recordio(rec, progress=False).starts
            drop += [(k, int(starts[k])) for k, _, _ in small]
        drop = sorted(set(drop))
        if errors and not o["skip_bad"]:
            raise integrity.DataError(errors[0] + skip_hint)
        if errors and len(drop) >= c.summary.records:
            raise integrity.DataError(errors[0][:-2] + " (--skip-bad-records would leave none of its %d records)"
                                      % c.summary.records)
        expect = o["expect"]
        if expect:
            n, hw = c.larger_than(expect)
            if n:
                self._large.append("%s %d of %d%s, e.g. %dx%d" % (os.path.basename(rec), n, c.decoded,
                                                                 "" if c.full else " sampled", hw[0], hw[1]))
        line = "data check: " + c.line()
        if not c.full:
            line += "; --data-check full decodes every record"
        if drop:
            line += "; skipping %d record%s (--skip-bad-records): %s%s" % (
                len(drop), "" if len(drop) == 1 else "s", ", ".join(str(k) for k, _ in drop[:20]),
                ", ..." if len(drop) > 20 else "")
        self._say(line)
        self._drop[rec] = drop
        return c, [pos for _, pos in drop]

    def _say(self, line):
        """Print a check line now (logging starts after the checks) and keep it for the log file."""
        print(line, flush=True)
        self.__dict__.setdefault("_lines", []).append((logging.INFO, line))

    def _log_lines(self):
        """Write the kept check lines to the run's log file(s) only (the console already has them)."""
        lines = self.__dict__.pop("_lines", [])
        for h in logging.getLogger().handlers:
            if isinstance(h, logging.FileHandler):
                for level, line in lines:
                    h.handle(log.makeRecord(log.name, level, __file__, 0, line, (), None))

    def _check_all(self, recs, idx=None):
        """:meth:`_check_rec` of each file, then ONE warning for images larger than expected."""
        self._large, out = [], []
        for rec in recs:
            out.append(self._check_rec(rec, (idx or {}).get(rec)))
        o = self.check_opts
        if self._large:
            msg = "%s: images larger than the %dx%d expected (%s)%s" % (
                self.name, o["expect"], o["expect"], "; ".join(self._large), ": " + o["expect_why"] if o["expect_why"]
                else "")
            log.warning(msg)
            self.__dict__.setdefault("_lines", []).append((logging.WARNING, msg))
        return out

    def _recheck(self, rec, idx=None, err=None):
        """Before an epoch (``err`` None): when ``rec`` changed since its check, check it again; after
        an MXNet error: decode every record afresh. DataError naming the first new bad record."""
        if not getattr(self, "_stamps", None) or rec not in self._stamps:
            return
        if err is None and integrity.file_stamp(rec) == self._stamps[rec]:
            return
        c = integrity.check_records(rec, idx, mode="full", use_cache=err is None)
        known = set(k for k, _ in self._drop.get(rec, ()))
        bad = [b for b in c.bad if b[0] not in known]
        if bad:
            raise integrity.DataError(integrity.bad_record_message(
                rec, bad, len(bad), "the file changed or broke after its check (during training); %s"
                % integrity._hint(rec)))
        self._stamps[rec] = integrity.file_stamp(rec)
        if err is None:
            log.warning("%s changed during training; every record still decodes", rec)

    def batches_per_epoch(self, n, per_worker, workers):
        share = n // workers
        return max(1, int(math.ceil(share / float(per_worker)))) if self.last_batch == "pad" else share // per_worker

    def missing_message(self):
        missing = [p for p in self.paths if not os.path.exists(p)]
        return "data not found: %s. %s (--dry-run checks a command without data)" % (", ".join(missing), self.hint)

    def exists(self):
        return all(os.path.exists(p) for p in self.paths)


def _merge_labels(summaries):
    return {"num_classes": max(s.num_classes for s in summaries), "min": min(s.min for s in summaries),
            "max": max(s.max for s in summaries)}


class RecordIterData(_Spec):
    """``ImageRecordIter`` on ``train_rec`` / ``val_rec``; ``train_kwargs`` / ``val_kwargs`` are its
    augmentation and normalisation arguments (see :func:`fbn_rec_kwargs`, :func:`gluoncv_rec_kwargs`)."""

    def __init__(self, train_rec, val_rec, train_kwargs, val_kwargs, *, last_batch="discard", threads=4,
                 nominal_train=None, num_examples=None, idx=None,
                 hint="Make the files with the tools/prepare_*.py scripts"):
        self.train_rec, self.val_rec, self.num_examples = train_rec, val_rec, num_examples
        self.idx = {rec: os.path.splitext(rec)[0] + ".idx" for rec in (train_rec, val_rec)}
        self.idx.update({k: v for k, v in (idx or {}).items() if v})
        self.train_kwargs, self.val_kwargs = dict(train_kwargs), dict(val_kwargs)
        self.last_batch, self.threads, self.nominal_train, self.hint = last_batch, max(1, int(threads)), nominal_train, hint
        self.paths = [train_rec, val_rec]
        self.name = train_rec
        self._scans = {}

    def verify(self):
        self._use = {}
        for rec, (c, drop) in zip(self.paths, self._check_all(self.paths, self.idx)):
            self._scans[rec] = c.summary._replace(records=c.summary.records - len(drop))
            if drop:
                k = [k for k, _ in self._drop[rec]]
                out_rec, out_idx, size = integrity.filtered_copy(rec, k)
                self._say("data check: %s is read from %s (a copy without the skipped records, %.1f MB)"
                          % (rec, out_rec, size / 1e6))
                self._use[rec] = (out_rec, out_idx)

    def _guard(self, rec):
        def guard(err):
            self._recheck(rec, self.idx[rec], err)
        return guard

    def label_summary(self):
        return _merge_labels([integrity.label_summary(p) for p in self.paths])

    def _count(self, rec):
        if rec not in self._scans:
            self._scans[rec] = integrity.verify_recordio(rec, self.idx[rec], sample_decode=0)
        return self._scans[rec].records

    def num_train(self):
        """Training images per epoch: every record, or ``num_examples`` when that is fewer."""
        n = self._count(self.train_rec)
        return min(n, self.num_examples) if self.num_examples else n

    def _source(self, rec):
        """ImageRecordIter file arguments for ``rec`` (its filtered copy when records are skipped)."""
        if rec in getattr(self, "_use", {}):
            use, idx = self._use[rec]
            return {"path_imgrec": use, "path_imgidx": idx}
        return dict(path_imgrec=rec, **({"path_imgidx": self.idx[rec]} if os.path.exists(self.idx[rec]) else {}))

    def loaders(self, batch, part=0, parts=1, seed=0):
        self._log_lines()
        common = dict(data_name="data", label_name="softmax_label", batch_size=batch,
                      preprocess_threads=self.threads, verbose=False)  # verbose: a "use N threads" line per reset

        def make_train(s):
            return mx.io.ImageRecordIter(shuffle=True, seed=s, num_parts=parts, part_index=part,
                                         **self._source(self.train_rec), **common, **self.train_kwargs)

        def make_val(_):
            return mx.io.ImageRecordIter(shuffle=False, round_batch=False, **self._source(self.val_rec), **common,
                                         **self.val_kwargs)
        train = RecIterLoader(make_train, self.num_train() // parts, batch, True, self.train_rec,
                              last_batch=self.last_batch, seed=seed, guard=self._guard(self.train_rec))
        val = RecIterLoader(make_val, self._count(self.val_rec), batch, False, self.val_rec,
                            guard=self._guard(self.val_rec))
        return train, val


def fbn_rec_kwargs(dataset, data_shape, pad_fill=127, aug_level=2, mean=IMAGENET_MEAN_RGB):
    """(train, val) ImageRecordIter arguments of the original FBN scripts (docs/reference/fbn.md §5.1, §5.3): mean
    subtraction only; CIFAR pad 4 (fill ``pad_fill``) + random crop + mirror; ImageNet random crop +
    mirror, level 2 adds scale [0.533, 1], aspect 0.25 and HSL (36, 50, 50), level 3 rotation 10 and
    shear 0.1."""
    norm = dict(label_width=1, mean_r=mean[0], mean_g=mean[1], mean_b=mean[2],
                data_shape=(3, data_shape, data_shape))
    if dataset == "cifar":
        aug = dict(pad=4, fill_value=int(pad_fill), rand_crop=True, rand_mirror=True)
    else:
        lvl = aug_level
        aug = dict(pad=0, rand_crop=True, rand_mirror=True, max_random_scale=1.0,
                   min_random_scale=1.0 if lvl == 1 else 0.533, max_aspect_ratio=0.0 if lvl == 1 else 0.25,
                   random_h=0 if lvl == 1 else 36, random_s=0 if lvl == 1 else 50, random_l=0 if lvl == 1 else 50,
                   max_rotate_angle=0 if lvl <= 2 else 10, max_shear_ratio=0.0 if lvl <= 2 else 0.1)
    return dict(norm, prefetch_buffer=4, **aug), dict(norm, prefetch_buffer=4, rand_crop=False, rand_mirror=False)


def gluoncv_rec_kwargs(input_size=224, crop_ratio=0.875, jitter=0.4, lighting=0.1):
    """(train, val) ImageRecordIter arguments of gluon-cv's ImageNet recipe (docs/reference/aff.md §3.1; bL-Net without
    lighting): RandomResizedCrop 0.08-1, aspect 3/4-4/3, mirror, colour jitter, PCA lighting; evaluation
    resize ceil(input/crop_ratio) + centre crop; ImageNet mean/std."""
    norm = dict(mean_r=IMAGENET_MEAN_RGB[0], mean_g=IMAGENET_MEAN_RGB[1], mean_b=IMAGENET_MEAN_RGB[2],
                std_r=IMAGENET_STD_RGB[0], std_g=IMAGENET_STD_RGB[1], std_b=IMAGENET_STD_RGB[2],
                data_shape=(3, input_size, input_size))
    train = dict(norm, rand_mirror=True, random_resized_crop=True, max_aspect_ratio=4. / 3.,
                 min_aspect_ratio=3. / 4., max_random_area=1, min_random_area=0.08, brightness=jitter,
                 saturation=jitter, contrast=jitter, pca_noise=lighting)
    val = dict(norm, resize=int(math.ceil(input_size / crop_ratio)))
    return train, val


class DatasetData(_Spec):
    """Gluon datasets behind DataLoaders. ``make_sets()`` returns the (train, val) datasets of (HxWx3
    uint8 image, label) samples; ``paths`` are what must exist; ``rec_files`` are checked by
    :func:`mxrepro.integrity.verify_recordio`, ``label_paths`` give the label range."""

    def __init__(self, name, paths, make_sets, train_transform, val_transform, *, num_workers=0, rec_files=(),
                 label_paths=(), nominal_train=None, hint=""):
        self.name, self.paths, self.make_sets = name, list(paths), make_sets
        self.train_transform, self.val_transform = train_transform, val_transform
        self.num_workers, self.rec_files, self.label_paths = int(num_workers), list(rec_files), list(label_paths)
        self.nominal_train, self.hint = nominal_train, hint
        self._sets = None

    def _datasets(self):
        if self._sets is None:
            self._sets = self.make_sets()
            tr, va = self._sets
            for ds in (tr, va):
                drop = getattr(self, "_offsets", {}).get(getattr(ds, "filename", None))
                if drop and hasattr(ds, "exclude"):
                    ds.exclude(drop)
            syn_t, syn_v = getattr(tr, "synsets", None), getattr(va, "synsets", None)
            if syn_t is not None and syn_v is not None and syn_t != syn_v:
                raise integrity.DataError("%s: the training and validation folders have different classes (%d vs %d "
                                          "folders)" % (self.name, len(syn_t), len(syn_v)))
            if len(tr) == 0:
                raise integrity.DataError("%s: no training images" % self.name)
        return self._sets

    def verify(self):
        self._offsets = {rec: res[1] for rec, res in zip(self.rec_files, self._check_all(self.rec_files))}
        self._datasets()

    def _guard(self):
        for rec in self.rec_files:
            self._recheck(rec)

    def label_summary(self):
        return _merge_labels([integrity.label_summary(p) for p in self.label_paths])

    def num_train(self):
        return len(self._datasets()[0])

    def loaders(self, batch, part=0, parts=1, seed=0):
        self._log_lines()
        tr, va = self._datasets()
        train = DatasetLoader(tr, batch, self.train_transform, train=True, num_workers=self.num_workers,
                              num_parts=parts, part_index=part, seed=seed, guard=self._guard)
        val = DatasetLoader(va, batch, self.val_transform, train=False, num_workers=self.num_workers)
        return train, val


def cifar_data(data_dir, use_rec=True, dataset="cifar100", num_workers=0, train_transform=None,
               val_transform=None):
    """A CIFAR-layout folder (tools/prepare_cifar.py / prepare_digits.py): ``train.rec``/``test.rec``
    through ImageRecordDataset, or ``images/{train,test}/<class>/`` through image-folder datasets
    that skip undecodable files. Default transforms: gluon-cv's CIFAR ones."""
    data_dir = os.path.expanduser(data_dir)
    if dataset == "digits":
        hint = "Create it with `python tools/prepare_digits.py --out %s`." % data_dir
    elif dataset in ("cifar10", "cifar100"):
        hint = "Create it with `python tools/prepare_cifar.py --dataset %s --out %s`." % (dataset, data_dir)
    else:
        hint = "Point --data-dir at a folder with train.rec/test.rec or images/{train,test}/<class>/."
    tt = train_transform if train_transform is not None else cifar_transforms(True)
    vt = val_transform if val_transform is not None else cifar_transforms(False)
    if use_rec:
        recs = [os.path.join(data_dir, s + ".rec") for s in ("train", "test")]
        return DatasetData(data_dir, recs, lambda: tuple(integrity.RecordDataset(r, flag=1) for r in recs),
                           tt, vt, num_workers=num_workers, rec_files=recs, label_paths=recs, hint=hint,
                           nominal_train=50000)
    roots = [os.path.join(data_dir, "images", s) for s in ("train", "test")]
    return DatasetData(data_dir, roots, lambda: tuple(integrity.SafeImageFolderDataset(r, flag=1) for r in roots),
                       tt, vt, num_workers=num_workers, label_paths=roots[:1], hint=hint + " (or pass --use-rec)",
                       nominal_train=50000)


def imagenet_folder_data(data_dir, train_transform, val_transform, num_workers=0):
    """``DIR/train/<class>/`` and ``DIR/val/<class>/`` image folders (undecodable images skipped)."""
    data_dir = os.path.expanduser(data_dir)
    roots = [os.path.join(data_dir, s) for s in ("train", "val")]
    return DatasetData(data_dir, roots, lambda: tuple(integrity.SafeImageFolderDataset(r) for r in roots),
                       train_transform, val_transform, num_workers=num_workers, label_paths=roots[:1],
                       nominal_train=1281167,
                       hint="Expected DIR/train/<class>/*.JPEG and DIR/val/<class>/*.JPEG (tools/prepare_imagenet.py "
                            "sorts val/), or train.rec/val.rec")


def add_check_args(group):
    """The data-check flags every training script has (same names everywhere)."""
    group.add_argument("--data-check", choices=("auto", "full", "sample"), default="auto",
                       help="before training, decode every record of each .rec (full), or only 16 spread over it "
                            "(sample); auto = full up to %d records (cached beside the data while the file is "
                            "unchanged)" % integrity.FULL_CHECK_MAX)
    group.add_argument("--skip-bad-records", action="store_true",
                       help="leave records that do not decode or are smaller than the crop out (listed) instead of "
                            "stopping; with ImageRecordIter this reads a copy of the .rec without them")
