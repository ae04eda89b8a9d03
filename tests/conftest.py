"""Shared test set-up and fixtures.

The package is imported first so OMP_NUM_THREADS is set before mxnet, and the FBN symbol networks are
registered (``symbols``) for the registry-wide tests. Fixtures: the embedded scikit-learn digits as
RecordIO files in the CIFAR layout (``digits_dir``, every image) and a small subset in both the CIFAR
and the ImageNet layout (``digits_small``), a 4-class synthetic ``.rec`` pair that survives crops and
flips (``toy_rec``), a NumPy BatchNorm reference (``np_batchnorm``) and ``load_script``."""
import importlib.util
import os

import numpy as np
import pytest

import mxrepro  # noqa: F401  (threads; the FB operators load with mxnet)
import mxnet as mx
import symbols  # noqa: F401  (registers the FBN --network names)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_script(relpath):
    """Import a training script (``cifar/train_aff_cifar.py``...) as a module, by its path."""
    path = os.path.join(ROOT, relpath)
    name = os.path.splitext(os.path.basename(path))[0]
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def np_batchnorm(x, gamma, beta, mean, var, eps=1e-5):
    """Inference BatchNorm over axis 1 of an NCHW (or NC) array."""
    shape = (1, -1) + (1,) * (x.ndim - 2)
    return (x - mean.reshape(shape)) / np.sqrt(var.reshape(shape) + eps) * gamma.reshape(shape) + beta.reshape(shape)


@pytest.fixture(scope="session", name="np_bn")
def np_bn_fixture():
    return np_batchnorm


def write_digits(out, splits, size=32):
    """scikit-learn's digits (8x8, 10 classes) upsampled to ``size`` x ``size`` x 3 PNG records;
    ``splits`` = {name: image indices}. Writes ``<name>.rec/.idx`` like tools/prepare_digits.py."""
    import cv2
    from sklearn.datasets import load_digits
    ds = load_digits()
    for split, idx in splits.items():
        w = mx.recordio.MXIndexedRecordIO(os.path.join(out, split + ".idx"), os.path.join(out, split + ".rec"), "w")
        for j, i in enumerate(idx):
            im = cv2.resize((ds.images[i] * 255 / 16).astype(np.uint8), (size, size), interpolation=cv2.INTER_LINEAR)
            w.write_idx(j, mx.recordio.pack_img(mx.recordio.IRHeader(0, float(ds.target[i]), j, 0),
                                                np.repeat(im[:, :, None], 3, 2), img_fmt=".png"))
        w.close()
    return out


@pytest.fixture(scope="session")
def digits_dir(tmp_path_factory):
    """All 1797 digits: train.rec (1437) / test.rec (360), the split of tools/prepare_digits.py's size."""
    order = np.random.RandomState(0).permutation(1797)
    return write_digits(str(tmp_path_factory.mktemp("digits")), {"train": order[:1437], "test": order[1437:]})


@pytest.fixture(scope="session")
def digits_small(tmp_path_factory):
    """256 training and 64 test digits, in the CIFAR layout (train/test.rec) and, in the same folder, the
    ImageNet layout (val.rec/.idx links to test.rec/.idx)."""
    order = np.random.RandomState(1).permutation(1797)
    d = write_digits(str(tmp_path_factory.mktemp("digits_small")), {"train": order[:256], "test": order[256:320]})
    for ext in (".rec", ".idx"):
        os.symlink(os.path.join(d, "test" + ext), os.path.join(d, "val" + ext))
    return d


def write_toy_rec(path, n, rng, size=32):
    """Four easily separable classes that survive pad/crop/mirror: horizontal stripes, vertical
    stripes, checkerboard, random noise; random colours, period and phase."""
    yy, xx = np.mgrid[0:size, 0:size]
    rec = mx.recordio.MXIndexedRecordIO(str(path)[:-4] + ".idx", str(path), "w")
    for i in range(n):
        c = i % 4
        period, ph = rng.uniform(4, 9), rng.uniform(0, 2 * np.pi)
        sy, sx = np.sin(2 * np.pi * yy / period + ph), np.sin(2 * np.pi * xx / period + ph)
        w = [sy > 0, sx > 0, sy * sx > 0, rng.rand(size, size) > 0.5][c].astype(np.float32)[..., None]
        img = w * rng.uniform(0, 255, 3) + (1 - w) * rng.uniform(0, 255, 3) + rng.normal(0, 10, (size, size, 3))
        rec.write_idx(i, mx.recordio.pack_img(mx.recordio.IRHeader(0, float(c), i, 0),
                                              np.clip(img, 0, 255).astype(np.uint8), img_fmt=".png"))
    rec.close()


@pytest.fixture(scope="session")
def toy_rec(tmp_path_factory):
    """A 4-class CIFAR-layout folder: train.rec (320 images), test.rec (80)."""
    d = tmp_path_factory.mktemp("toycifar")
    rng = np.random.RandomState(0)
    write_toy_rec(d / "train.rec", 320, rng)
    write_toy_rec(d / "test.rec", 80, rng)
    return d
