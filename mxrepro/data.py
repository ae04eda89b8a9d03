"""Gluon-side data loading shared by the AFF and bL-Net scripts (and anything built on mxrepro.train).

Layouts (made by tools/prepare_cifar.py, tools/prepare_digits.py, tools/prepare_imagenet.py):

* CIFAR-like (cifar10, cifar100, digits): ``DIR/train.rec, DIR/test.rec`` (+ ``.idx``) and
  ``DIR/images/{train,test}/<class>/*.png``.
* ImageNet-like: ``DIR/train.rec, DIR/val.rec`` (+ ``.idx``) for ``--use-rec`` and
  ``DIR/train/<class>/*, DIR/val/<class>/*`` otherwise.

Every loader yields ``(data, label)`` NDArray batches, knows its number of batches per epoch, and
takes ``set_epoch(e)``: shuffling (and, with ``num_workers=0``, augmentation) is a function of
(seed, epoch), so a resumed run sees the same data as an uninterrupted one. ``num_parts`` /
``part_index`` give every distributed worker a disjoint, equal share (mxnet-notes §1.2, §6).

Augmentation follows gluon-cv's scripts: CIFAR RandomCrop(32, pad 4) + flip + Normalize(CIFAR
mean/std) (aff.md §3.2); ImageNet RandomResizedCrop(0.08-1, 3/4-4/3) + flip + jitter 0.4 + lighting
0.1, evaluation resize ceil(224/0.875) + centre crop (aff.md §3.1).
"""
import logging
import math
import os
import random

import mxnet as mx
import numpy as np
from mxnet import gluon
from mxnet.gluon.data.vision import transforms

__all__ = ["CIFAR_MEAN", "CIFAR_STD", "IMAGENET_MEAN_RGB", "IMAGENET_STD_RGB", "DATASET_CLASSES",
           "ShardedShuffleSampler", "Loader", "DatasetLoader", "RecIterLoader", "cifar_transforms",
           "imagenet_transforms", "cifar_datasets", "imagenet_folder_datasets", "imagenet_rec_iters",
           "count_records", "seed_everything", "num_classes_of"]

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2023, 0.1994, 0.2010)
IMAGENET_MEAN_RGB = (123.68, 116.779, 103.939)
IMAGENET_STD_RGB = (58.393, 57.12, 57.375)
DATASET_CLASSES = {"cifar10": 10, "cifar100": 100, "digits": 10, "imagenet": 1000}


def seed_everything(seed):
    """Seed Python, NumPy and MXNet generators (augmentation, mixup, initialisation)."""
    random.seed(seed)
    np.random.seed(seed % (2 ** 32))
    mx.random.seed(seed)


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
    """Interface of the training core's data: iterate ``(data, label)``; ``num_batches``,
    ``num_samples`` per epoch; ``set_epoch(e)``."""
    num_batches = 0
    num_samples = 0

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
                 seed=0):
        self.dataset = dataset.transform_first(transform) if transform is not None else dataset
        self.sampler = ShardedShuffleSampler(len(dataset), shuffle=train, num_parts=num_parts,
                                             part_index=part_index, seed=seed)
        self.batch_size, self.train, self.seed = batch_size, train, seed
        last = "discard" if train else "keep"
        self.loader = gluon.data.DataLoader(self.dataset, batch_sampler=gluon.data.BatchSampler(
            self.sampler, batch_size, last), num_workers=num_workers)
        n = len(self.sampler)
        self.num_batches = n // batch_size if train else int(math.ceil(n / float(batch_size)))
        self.num_samples = self.num_batches * batch_size if train else n
        if train and self.num_batches == 0:
            raise ValueError("batch size %d is larger than this worker's %d training samples; lower --batch-size"
                             % (batch_size, n))

    def set_epoch(self, epoch):
        self.sampler.set_epoch(epoch)

    def __iter__(self):
        for data, label in self.loader:
            yield data, label


class RecIterLoader(Loader):
    """``mx.io.ImageRecordIter`` as a Loader. Validation batches are trimmed to the true record count
    (the iterator pads the last batch, and ``batch.pad`` is stale after ``reset()``, mxnet-notes §7)."""

    def __init__(self, rec_iter, num_samples, batch_size, train):
        self.it, self.batch_size, self.train = rec_iter, batch_size, train
        self.num_samples = int(num_samples)
        self.num_batches = int(math.ceil(self.num_samples / float(batch_size)))
        if train:
            self.num_batches = max(1, self.num_samples // batch_size)
            self.num_samples = self.num_batches * batch_size

    def __iter__(self):
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
    """gluon-cv ImageNet pipeline for image folders (the DataLoader path of aff.md §3.1)."""
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
# Datasets
# ------------------------------------------------------------------------------------------------
def _need(path, what, hint):
    if not os.path.exists(path):
        raise FileNotFoundError("%s not found: %s. %s" % (what, path, hint))
    return path


def count_records(idx_path):
    """Number of records listed in an im2rec ``.idx`` file."""
    with open(idx_path) as f:
        return sum(1 for line in f if line.strip())


def _prep_hint(data_dir, dataset):
    if dataset == "digits":
        return "Create it with `python tools/prepare_digits.py --out %s`." % data_dir
    if dataset in ("cifar10", "cifar100"):
        return "Create it with `python tools/prepare_cifar.py --dataset %s --out %s`." % (dataset, data_dir)
    return "Point --data-dir at a folder with train/test .rec files or images/{train,test}/<class>/."


def cifar_datasets(data_dir, use_rec=True, dataset="cifar100"):
    """(train, test) Gluon datasets of a CIFAR-layout folder: ImageRecordDataset on
    ``train.rec``/``test.rec`` when ``use_rec``, ImageFolderDataset on ``images/{train,test}`` otherwise.
    Samples are (HxWx3 uint8 image, label)."""
    data_dir = os.path.expanduser(data_dir)
    hint = _prep_hint(data_dir, dataset)
    if use_rec:
        out = []
        for split in ("train", "test"):
            rec = _need(os.path.join(data_dir, split + ".rec"), "RecordIO file", hint)
            _need(os.path.splitext(rec)[0] + ".idx", "RecordIO index", hint)
            out.append(gluon.data.vision.ImageRecordDataset(rec, flag=1))
        return tuple(out)
    out = []
    for split in ("train", "test"):
        root = _need(os.path.join(data_dir, "images", split), "image folder", hint + " (or pass --use-rec)")
        out.append(gluon.data.vision.ImageFolderDataset(root, flag=1))
    return tuple(out)


def imagenet_folder_datasets(data_dir):
    """(train, val) ImageFolderDatasets of ``DIR/train/<class>`` and ``DIR/val/<class>``."""
    data_dir = os.path.expanduser(data_dir)
    hint = "Expected DIR/train/<class>/*.JPEG and DIR/val/<class>/*.JPEG (tools/prepare_imagenet.py sorts val/)."
    return tuple(gluon.data.vision.ImageFolderDataset(_need(os.path.join(data_dir, s), "image folder", hint))
                 for s in ("train", "val"))


def imagenet_rec_iters(rec_train, rec_train_idx, rec_val, rec_val_idx, batch_size, num_workers=4, input_size=224,
                       crop_ratio=0.875, jitter=0.4, lighting=0.1, num_parts=1, part_index=0, seed=0):
    """(train, val) RecIterLoaders over ``mx.io.ImageRecordIter`` with gluon-cv's ImageNet
    augmentation (aff.md §3.1). The training records are sharded with ``num_parts``/``part_index``."""
    hint = "Make them with `python tools/prepare_imagenet.py` (gluon-cv im2rec recipe) or pass --rec-train etc."
    for p in (rec_train, rec_train_idx, rec_val, rec_val_idx):
        _need(os.path.expanduser(p), "RecordIO file", hint)
    rec_train, rec_train_idx, rec_val, rec_val_idx = (os.path.expanduser(p) for p in
                                                      (rec_train, rec_train_idx, rec_val, rec_val_idx))
    norm = dict(mean_r=IMAGENET_MEAN_RGB[0], mean_g=IMAGENET_MEAN_RGB[1], mean_b=IMAGENET_MEAN_RGB[2],
                std_r=IMAGENET_STD_RGB[0], std_g=IMAGENET_STD_RGB[1], std_b=IMAGENET_STD_RGB[2])
    threads = max(1, int(num_workers))
    train = mx.io.ImageRecordIter(
        path_imgrec=rec_train, path_imgidx=rec_train_idx, preprocess_threads=threads, shuffle=True,
        batch_size=batch_size, data_shape=(3, input_size, input_size), rand_mirror=True, random_resized_crop=True,
        max_aspect_ratio=4. / 3., min_aspect_ratio=3. / 4., max_random_area=1, min_random_area=0.08,
        brightness=jitter, saturation=jitter, contrast=jitter, pca_noise=lighting, num_parts=num_parts,
        part_index=part_index, seed=seed, **norm)
    val = mx.io.ImageRecordIter(
        path_imgrec=rec_val, path_imgidx=rec_val_idx, preprocess_threads=threads, shuffle=False,
        batch_size=batch_size, resize=int(math.ceil(input_size / crop_ratio)), data_shape=(3, input_size, input_size),
        **norm)
    n_train = count_records(rec_train_idx) // num_parts
    n_val = count_records(rec_val_idx)
    logging.info("RecordIO: %d training records for this worker (%d parts), %d validation records",
                 n_train, num_parts, n_val)
    return RecIterLoader(train, n_train, batch_size, True), RecIterLoader(val, n_val, batch_size, False)
