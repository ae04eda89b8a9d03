#!/usr/bin/env python
"""scikit-learn's handwritten digits -> the CIFAR layout (the embedded dataset, no network).

    python tools/prepare_digits.py --out data/digits [--test-ratio 0.2] [--seed 0]

sklearn.datasets.load_digits ships inside the scikit-learn package: 1797 8x8 grey images of the
digits 0-9 (about 180 per class), intensities 0..16 (the UCI "optdigits" set). They become
32x32 3-channel images like CIFAR's, so every CIFAR script runs on them unchanged:

  * intensity v in 0..16 -> round(v * 255 / 16) in 0..255 (white digit on black, as in the source);
  * 8x8 -> 32x32 with cv2.resize INTER_LINEAR (default; --interp nearest keeps 4x4 blocks);
  * the grey plane is repeated into 3 identical channels;
  * a stratified train/test split (--test-ratio, --seed; 0.2 gives 1437 / 360 images).

Writes OUT/images/{train,test}/<digit>/<id>.png (image folders for ImageFolderDataset),
OUT/{train,test}.lst, OUT/{train,test}.rec/.idx (PNG packed losslessly by the wheel's im2rec with
--pass-through), OUT/labels.txt and OUT/prepare_info.json; every record is read back and compared
pixel-exactly. The record id is the image's index in load_digits(). Re-runs skip; --force redoes.
OUT is checked for writability and free space first (exit 2); a write that fails on a full or
read-only disk removes what this run wrote and exits 3 (docs/datasets.md).
"""
import argparse
import os
import sys

import mxrepro  # noqa: E402,F401  (sets OMP_NUM_THREADS before mxnet)
from mxrepro import datasets as D  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402

INTERP = {"linear": cv2.INTER_LINEAR, "nearest": cv2.INTER_NEAREST}
NUM_DIGITS = 1797  # images in load_digits()


def digits_to_images(images8, size=32, interp="linear"):
    """(N, 8, 8) float 0..16 -> (N, size, size, 3) uint8 RGB (see the module docstring)."""
    img = np.clip(np.rint(np.asarray(images8, np.float64) * (255.0 / 16.0)), 0, 255).astype(np.uint8)
    out = np.empty((len(img), size, size, 3), np.uint8)
    for i, im in enumerate(img):
        out[i] = cv2.resize(im, (size, size), interpolation=INTERP[interp])[:, :, None]
    return out


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="output folder (created)")
    p.add_argument("--test-ratio", type=float, default=0.2, help="fraction of each class held out for test")
    p.add_argument("--seed", type=int, default=0, help="seed of the stratified split")
    p.add_argument("--size", type=int, default=32, help="output side length")
    p.add_argument("--interp", choices=sorted(INTERP), default="linear", help="upscaling interpolation")
    p.add_argument("--threads", type=int, default=2, help="im2rec packing processes (at least 2)")
    p.add_argument("--force", action="store_true", help="redo even when the outputs verify")
    return p.parse_args(argv)


def run(args):
    if not 0.0 < args.test_ratio < 1.0:
        raise D.DatasetError("--test-ratio must lie in (0, 1), got %s" % args.test_ratio)
    D.check_positive(args.size, "--size", "the output side length in pixels", 1, 4096)
    D.check_positive(args.threads, "--threads", "im2rec packing processes")
    try:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
    except ImportError:
        raise D.DatasetError("scikit-learn is not installed in this environment (./run.sh setup installs it; "
                             "or pip install scikit-learn==1.5.2)")
    out = os.path.abspath(args.out)
    names = [str(i) for i in range(10)]
    settings = dict(dataset="sklearn_digits", test_ratio=args.test_ratio, seed=args.seed,
                    size=args.size, interp=args.interp, num_classes=10)
    done = D.small_dataset_present(out, "prepare_digits", ["train", "test"], settings, force=args.force)
    if done:
        D.print_small_summary(out, done, names)
        return 0
    D.check_out(out, D.small_dataset_bytes(NUM_DIGITS, args.size))
    d = load_digits()
    x = digits_to_images(d.images, args.size, args.interp)
    y = d.target.astype(np.int64)
    ids = np.arange(len(y))
    tr, te = train_test_split(ids, test_size=args.test_ratio, random_state=args.seed, stratify=y)
    te = np.sort(te)
    splits = {"train": (x[tr], y[tr], tr, True), "test": (x[te], y[te], te, False)}
    D.log("digits: %d images (train %d, test %d), 10 classes, %dx%dx3"
          % (len(y), len(tr), len(te), args.size, args.size))
    result = D.build_small_dataset(out, splits, names, settings=settings, tool="prepare_digits",
                                   force=args.force, threads=args.threads)
    D.print_small_summary(out, result, names)
    return 0


def main(argv=None):
    args = parse_args(argv)
    return D.run_cli(run, args)


if __name__ == "__main__":
    sys.exit(main())
