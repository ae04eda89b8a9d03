"""The shared Gluon training core (mxrepro/train.py) and data loaders (mxrepro/data.py): schedules,
label helpers, sharding, a real-data run far above chance, exact resume, the CIFAR script end to end."""
import json
import math
import os
import sys

import mxnet as mx
import numpy as np
import pytest
from conftest import load_script
from mxnet import nd
from mxnet.gluon.data.vision import transforms

from mxrepro.data import CIFAR_MEAN, CIFAR_STD, DatasetLoader, ShardedShuffleSampler, cifar_datasets
from mxrepro.models import get_model
from mxrepro.train import (TrainConfig, TrainLoop, make_lr_scheduler, mixup_labels, smooth_labels)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ------------------------------------------------------------------------------------------------
# Learning-rate schedules (gluon-cv LRScheduler / LRSequential)
# ------------------------------------------------------------------------------------------------
def _lrs(cfg, ipe):
    s = make_lr_scheduler(cfg, ipe)
    return [s(u) for u in range(1, cfg.num_epochs * ipe + 1)]  # MXNet passes the 1-based update count


def test_warmup_cosine_values():
    # mxnet-notes §2: 5 warmup + 95 cosine epochs at 10 it/epoch -> 0, .204, .4, .200, 0 at 0/25/50/525/999
    lrs = _lrs(TrainConfig(lr=0.4, warmup_epochs=5, num_epochs=100, lr_mode="cosine"), 10)
    np.testing.assert_allclose([lrs[i] for i in (0, 25, 50, 525, 999)], [0, 0.2041, 0.4, 0.1997, 0], atol=1e-4)
    assert max(lrs) == pytest.approx(0.4) and all(b <= a + 1e-12 for a, b in zip(lrs[50:], lrs[51:]))


def test_step_decays_at_the_given_epochs_and_the_original_shift():
    ipe = 4
    cfg = TrainConfig(lr=1.0, warmup_epochs=2, num_epochs=10, lr_mode="step", lr_decay_epoch=(5, 8))
    lrs = _lrs(cfg, ipe)
    by_epoch = [lrs[e * ipe:(e + 1) * ipe] for e in range(10)]
    assert by_epoch[0][0] == 0 and by_epoch[1][-1] == pytest.approx(1.0)
    assert all(v == 1.0 for e in (2, 3, 4) for v in by_epoch[e])
    assert all(v == pytest.approx(0.1) for e in (5, 6, 7) for v in by_epoch[e])
    assert all(v == pytest.approx(0.01) for e in (8, 9) for v in by_epoch[e])
    # the AFF CIFAR script's bug (aff.md §3.2): decays moved earlier by the warmup length
    cfg.lr_decay_shift = 2
    lrs = _lrs(cfg, ipe)
    assert lrs[3 * ipe] == pytest.approx(0.1) and lrs[3 * ipe - 1] == 1.0 and lrs[6 * ipe] == pytest.approx(0.01)
    with pytest.raises(ValueError):
        make_lr_scheduler(TrainConfig(warmup_epochs=5, num_epochs=10, lr_mode="step", lr_decay_epoch=(3,)), 4)


def test_per_epoch_cosine_is_pytorch_cosine_annealing():
    ipe, E = 3, 6
    lrs = _lrs(TrainConfig(lr=0.1, num_epochs=E, lr_mode="cosine", lr_step_per="epoch"), ipe)
    for e in range(E):
        want = 0.05 * (1 + math.cos(math.pi * e / E))
        assert all(v == pytest.approx(want, abs=1e-12) for v in lrs[e * ipe:(e + 1) * ipe])


def test_label_helpers_closed_form():
    y = nd.array([0, 2, 1])
    s = smooth_labels(y, 4, 0.1).asnumpy()
    np.testing.assert_allclose(s[1], [0.025, 0.025, 0.925, 0.025], rtol=1e-6)
    m = mixup_labels(y, 3, lam=0.7).asnumpy()
    np.testing.assert_allclose(m, [[0.7, 0.3, 0], [0, 0, 1], [0.3, 0.7, 0]], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(mixup_labels(y, 4, 0.6, 0.1).asnumpy().sum(axis=1), 1.0, rtol=1e-6)


def test_sharded_sampler_disjoint_equal_deterministic():
    parts = []
    for k in range(3):
        s = ShardedShuffleSampler(10, num_parts=3, part_index=k, seed=5)
        s.set_epoch(2)
        parts.append(list(s))
        assert len(parts[-1]) == len(s) == 3
    flat = sum(parts, [])
    assert len(set(flat)) == 9 and set(flat) <= set(range(10))
    s = ShardedShuffleSampler(10, seed=5)
    s.set_epoch(1)
    a = list(s)
    s.set_epoch(1)
    assert list(s) == a and sorted(a) == list(range(10))
    s.set_epoch(2)
    assert list(s) != a
    assert list(ShardedShuffleSampler(7, shuffle=False)) == list(range(7))


# ------------------------------------------------------------------------------------------------
# Real data: scikit-learn's digits (issue C's embedded dataset)
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def digits_dir(tmp_path_factory):
    """data/digits when tools/prepare_digits.py made it, else the same digits written here as .rec."""
    d = os.path.join(ROOT, "data", "digits")
    if os.path.exists(os.path.join(d, "train.rec")) and os.path.exists(os.path.join(d, "test.idx")):
        return d
    import cv2
    from sklearn.datasets import load_digits
    ds = load_digits()
    out = str(tmp_path_factory.mktemp("digits"))
    rng = np.random.RandomState(0)
    order = rng.permutation(len(ds.images))
    splits = {"train": order[:1437], "test": order[1437:]}
    for split, idx in splits.items():
        w = mx.recordio.MXIndexedRecordIO(os.path.join(out, split + ".idx"), os.path.join(out, split + ".rec"), "w")
        for j, i in enumerate(idx):
            im = cv2.resize((ds.images[i] * 255 / 16).astype(np.uint8), (32, 32), interpolation=cv2.INTER_LINEAR)
            w.write_idx(j, mx.recordio.pack_img(mx.recordio.IRHeader(0, float(ds.target[i]), j, 0),
                                                np.repeat(im[:, :, None], 3, 2), img_fmt=".png"))
        w.close()
    return out


def _loaders(data_dir, bs=32, size=16):
    """Digits at 16x16 (they are 8x8 upsampled, nothing is lost) to keep the runs short."""
    t = transforms.Compose([transforms.Resize(size), transforms.ToTensor(), transforms.Normalize(CIFAR_MEAN, CIFAR_STD)])
    train, test = cifar_datasets(data_dir, use_rec=True, dataset="digits")
    return (DatasetLoader(train, bs, t, train=True, seed=3),
            DatasetLoader(test, 120, t, train=False))


def test_aff_net_learns_digits_far_above_chance(digits_dir, tmp_path):
    train, test = _loaders(digits_dir)
    net = get_model("aff_cifar_resnet", blocks=1, channel_times=1, classes=10)
    cfg = TrainConfig(num_classes=10, num_epochs=2, lr=0.1, lr_mode="cosine", initializer="xavier",
                      save_dir=str(tmp_path), save_prefix="aff", save_frequency=1, log_interval=0)
    loop = TrainLoop(net, cfg, [mx.cpu()], train, test)
    hist = loop.run()
    assert loop.best["top1"] >= 0.7, hist  # chance is 0.1 (measured ~0.94)
    assert hist[-1]["train_loss"] < hist[0]["train_loss"]
    assert all(0 < r["val_top1"] <= r["val_top5"] <= 1 for r in hist)
    files = set(os.listdir(tmp_path))
    assert {"aff-0001.params", "aff-0001.states", "aff-0002.json", "aff-best.params", "aff-metrics.jsonl"} <= files
    assert not [f for f in files if f.startswith(".tmp")]
    with open(tmp_path / "aff-metrics.jsonl") as f:
        assert [json.loads(line)["epoch"] for line in f] == [1, 2]


class _RecordLR:
    def __init__(self):
        self.lrs = []

    def on_batch_end(self, loop, epoch, i):
        self.lrs.append((epoch, i, loop.trainer.learning_rate))


class _Interrupted(Exception):
    pass


class _InterruptAfter:
    def __init__(self, epochs):
        self.epochs = epochs

    def on_epoch_end(self, loop, epoch, rec):
        if epoch + 1 == self.epochs:
            raise _Interrupted()


def _resume_cfg(save_dir, epochs, **kw):
    # SGD with momentum: MXNet 1.9.1's nag_mom_update is not run-to-run deterministic under the threaded
    # engine on the CPU (it is with MXNET_ENGINE_TYPE=NaiveEngine), so bit-exactness is checked with sgd.
    return TrainConfig(optimizer="sgd", num_classes=10, num_epochs=epochs, lr=0.1, lr_mode="step", lr_decay_epoch=(2,), warmup_epochs=1,
                       initializer="xavier", mixup=True, mixup_alpha=0.4, label_smoothing=0.1, no_wd=True,
                       save_dir=str(save_dir), save_prefix="r", save_frequency=1, max_batches=5, log_interval=0,
                       seed=11, **kw)


def _params(net):
    return {k.split("_", 1)[1]: p.data().asnumpy() for k, p in net.collect_params().items()}


def test_resume_continues_exactly(digits_dir, tmp_path):
    """3 epochs in one go == a run killed after epoch 2 + resume: same learning rates, same weights."""
    def net():
        return get_model("cifar_resnet", blocks=1, channel_times=1, classes=10)
    train, test = _loaders(digits_dir)
    rec_a = _RecordLR()
    a = net()
    TrainLoop(a, _resume_cfg(tmp_path / "a", 3), [mx.cpu()], train, test, hooks=[rec_a]).run()

    b = net()
    with pytest.raises(_Interrupted):  # killed after the epoch-2 checkpoint
        TrainLoop(b, _resume_cfg(tmp_path / "b", 3), [mx.cpu()], train, test, hooks=[_InterruptAfter(2)]).run()
    rec_b = _RecordLR()
    b2 = net()
    loop = TrainLoop(b2, _resume_cfg(tmp_path / "b", 3, auto_resume=True), [mx.cpu()], train, test, hooks=[rec_b])
    hist = loop.run()
    assert loop.begin_epoch == 2 and [r["epoch"] for r in hist] == [1, 2, 3]
    assert rec_b.lrs == [r for r in rec_a.lrs if r[0] == 2] and rec_b.lrs[0][2] == pytest.approx(0.01)
    pa, pb = _params(a), _params(b2)
    assert pa.keys() == pb.keys()
    for k in pa:
        np.testing.assert_array_equal(pb[k], pa[k], err_msg=k)

    # without trainer states the schedule still continues (momentum restarts)
    os.remove(tmp_path / "b" / "r-0002.states")
    rec_c = _RecordLR()
    TrainLoop(net(), _resume_cfg(tmp_path / "b", 3, resume_epoch=2), [mx.cpu()], train, test, hooks=[rec_c]).run()
    assert [r[2] for r in rec_c.lrs] == [r[2] for r in rec_b.lrs]


def test_cifar_script_end_to_end(digits_dir, tmp_path):
    train_aff_cifar = load_script("cifar/train_aff_cifar.py")
    argv = ["--dataset", "digits", "--data-dir", digits_dir, "--model", "resnet", "--askc-type",
            "ResGlobLocaforGlobLocaCha", "--blocks", "1", "--channel-times", "1", "--gpus", "", "--batch-size", "16",
            "--num-epochs", "2", "--lr", "0.1", "--lr-decay-epoch", "1", "--max-batches", "3", "-j", "0",
            "--save-dir", str(tmp_path / "p"), "--logging-dir", str(tmp_path / "logs"), "--save-frequency", "1",
            "--mixup", "--label-smoothing", "--no-wd", "--orig-decay-shift", "--orig-no-wd", "--orig-always-mixup"]
    assert train_aff_cifar.main(argv[:argv.index("--num-epochs") + 1] + ["1"] + argv[argv.index("--num-epochs") + 2:]) == 0
    assert train_aff_cifar.main(argv + ["--auto-resume"]) == 0
    run = "digits-iaff_cifar_resnet-8-c1-s1"
    with open(tmp_path / "p" / ("%s-0002.json" % run)) as f:
        meta = json.load(f)
    assert [h["epoch"] for h in meta["history"]] == [1, 2]
    cfg = meta["config"]
    assert cfg["no_wd"] is False and cfg["lr_decay_shift"] == 10 and cfg["mixup_alpha"] == 1.0
    assert cfg["initializer"] == "xavier" and cfg["num_classes"] == 10
    log = open(tmp_path / "logs" / ("train_%s.log" % run)).read()
    assert "[Epoch 2] train:" in log and "val: top1=" in log and "resumed trainer states" in log


def _imagenet_layout(digits_dir, tmp_path):
    """The digits as an ImageNet-style folder: train/val .rec/.idx and train/, val/ class folders."""
    d = tmp_path / "imnet"
    d.mkdir()
    for src, dst in (("train", "train"), ("test", "val")):
        for ext in (".rec", ".idx"):
            os.symlink(os.path.join(digits_dir, src + ext), str(d / (dst + ext)))
        if os.path.isdir(os.path.join(digits_dir, "images", src)):
            os.symlink(os.path.join(digits_dir, "images", src), str(d / dst))
    return d


def test_imagenet_loaders_exact_counts_and_shards(digits_dir, tmp_path):
    from mxrepro.data import count_records, imagenet_rec_iters
    d = _imagenet_layout(digits_dir, tmp_path)
    n_val = count_records(str(d / "val.idx"))
    kw = {k: str(d / f) for k, f in (("rec_train", "train.rec"), ("rec_train_idx", "train.idx"),
                                      ("rec_val", "val.rec"), ("rec_val_idx", "val.idx"))}
    train, val = imagenet_rec_iters(batch_size=64, num_workers=1, input_size=24, num_parts=2, part_index=1, **kw)
    assert train.num_samples == (count_records(kw["rec_train_idx"]) // 2) // 64 * 64
    for _ in range(2):  # every epoch, every validation record exactly once despite the padded last batch
        sizes = [x.shape[0] for x, y in val]
        assert sum(sizes) == n_val and sizes[-1] == n_val % 64
    x, y = next(iter(train))
    assert x.shape == (64, 3, 24, 24) and abs(float(x.mean().asscalar())) < 3
    if (d / "train").exists():  # image-folder path with the gluon-cv transforms
        from mxrepro.data import imagenet_folder_datasets, imagenet_transforms
        tr, va = imagenet_folder_datasets(str(d))
        assert len(va) == n_val and len(tr.synsets) == 10
        x, y = next(iter(DatasetLoader(tr, 16, imagenet_transforms(True, 24), train=True)))
        assert x.shape == (16, 3, 24, 24)
        x, y = next(iter(DatasetLoader(va, 16, imagenet_transforms(False, 24), train=False)))
        assert x.shape == (16, 3, 24, 24)


def test_imagenet_script_end_to_end(digits_dir, tmp_path):
    train_aff_imagenet = load_script("imagenet/train_aff_imagenet.py")
    d = _imagenet_layout(digits_dir, tmp_path)
    argv = ["--askc-type", "ASKCFuse", "--mixup", "--label-smoothing", "--no-wd", "--last-gamma", "--use-rec",
            "--data-dir", str(d), "--num-classes", "10", "--input-size", "32", "--batch-size", "8", "--gpus", "",
            "--num-epochs", "2", "--warmup-epochs", "1", "--max-batches", "2", "-j", "1", "--save-dir",
            str(tmp_path / "p"), "--logging-file", str(tmp_path / "im.log"), "--save-frequency", "1"]
    assert train_aff_imagenet.main(argv) == 0
    with open(tmp_path / "p" / "imagenet-aff_resnet50-s3-0002.json") as f:
        meta = json.load(f)
    assert [h["epoch"] for h in meta["history"]] == [1, 2] and meta["config"]["initializer"] == "msra"
    assert "err-top5=" in open(tmp_path / "im.log").read()
