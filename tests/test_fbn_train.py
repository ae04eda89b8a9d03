"""FBN training scripts (issue B; fbn.md sections 3, 5): slow-start LR schedule (closed form,
resume invariance, as driven by MXNet's optimizer), every published command line in dry-run mode,
flags and compat switches, and an end-to-end run on a tiny CIFAR-layout dataset that is killed and
resumed."""
import os
import re
import shlex
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import mxrepro  # noqa: F401
import mxnet as mx

from mxrepro import fbn_train
from mxrepro.fbn_train import SlowStartScheduler

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CIFAR = os.path.join(ROOT, "cifar", "train_cifar.py")
IMAGENET = os.path.join(ROOT, "imagenet", "train_imagenet.py")

# Every published command line (fbn.md 5.2 / 5.4, original cifar/run.sh, imagenet/run.sh, README).
SEED_COMMANDS = [
    ("cifar", "--gpus 2,3 --data-dir /mnt/hdd/lytton/mx_data/cifar-100 --lr 0.2 --wd 0.0001 --batch-size 128 "
              "--data-shape 32 --num-epoches 400 --network inception-bn-small --num-classes 100 --lr-step 200,300 "
              "--model-prefix cifar100_inception"),
    ("cifar", "--gpus 2,3 --data-dir /mnt/hdd/lytton/mx_data/cifar-100 --lr 0.2 --wd 0.0001 --batch-size 128 "
              "--data-shape 32 --num-epoches 400 --network inception-bn-small-fmconv --num-classes 100 "
              "--lr-step 200,300 --model-prefix cifar100_inception_fmconv --fmconv-slowstart 3  --fmconv-drop 0.5 "
              "--fmconv-factor 20 "),
    ("cifar", "--gpus 2,3 --data-dir /mnt/hdd/lytton/mx_data/cifar-100 --lr 0.1 --wd 0.0001 --batch-size 128 "
              "--data-shape 32 --num-epoches 200 --network resnet-small --num-classes 100 --lr-step 100,150 "
              "--model-prefix cifar100_res18 --warmup --res-module-num 18"),
    ("cifar", "--gpus 2,3 --data-dir /mnt/hdd/lytton/mx_data/cifar-100 --lr 0.1 --wd 0.0001 --batch-size 128 "
              "--data-shape 32 --num-epoches 200 --network resnet-small-fmconv --num-classes 100 --lr-step 100,150 "
              "--model-prefix cifar100_res18_fmconv  --res-module-num 18  --fmconv-slowstart 3 --fmconv-drop 0.5 "
              "--fmconv-factor 20"),
    ("cifar", "--gpus 2,3 --data-dir /mnt/hdd/lytton/mx_data/cifar-100 --lr 0.1 --wd 0.0001 --batch-size 128 "
              "--data-shape 32 --num-epoches 100 --network resnet-small-fmconv --num-classes 100 --lr-step 50,75 "
              "--model-prefix cifar100_res18_fmconv22-3  --res-module-num 18  --fmconv-slowstart 3 --fmconv-drop 0.5 "
              "--fmconv-factor 20"),
    ("imagenet", "--gpus 0,1,2,3,4,5,6,7  --model-prefix resnet34-fmconv --network resnet-fmconv --batch-size 256 "
                 "--aug-level 2  --num-epoches 120 --frequent 50  --lr 0.1 --wd 0.0001   --lr-step 60,75,90  "
                 "--fmconv-drop 0.5  --fmconv-slowstart 1 --depth 34 --fmconv-factor 50"),
    ("imagenet", "--gpus 4,5,6,7  --model-prefix inception-bn-fmconv --network inception-bn-fmconv --batch-size 128 "
                 "--aug-level 2 --log-file log/inception-bn-fmconv.log --num-epoches 55 --frequent 50  --lr 0.1 "
                 "--wd 0.0001  --fmconv-slowstart 1 --fmconv-factor 20 --fmconv-drop 0.5 --lr-step 60,75,90"),
    ("imagenet", "--gpus 0,1,2,3,4,5,6,7  --model-prefix resnet34-fmconv --network resnet-fmconv --batch-size 256 "
                 "--aug-level 2  --num-epoches 120 --frequent 50  --lr 0.1 --wd 0.0001   --lr-step 60,75,90  "
                 "--fmconv-drop 0.5  --fmconv-slowstart 1 --fmconv-factor 50 --depth 34"),
    # README L83: the extra --aug-level 1 epochs, resuming the ResNet-34-FBN run
    ("imagenet", "--gpus 0,1,2,3,4,5,6,7 --model-prefix resnet34-fmconv --network resnet-fmconv --batch-size 256 "
                 "--aug-level=1 --num-epoches 130 --lr 0.1 --wd 0.0001 --lr-step 60,75,90 --fmconv-drop 0.5 "
                 "--fmconv-slowstart 1 --depth 34 --fmconv-factor 50 --retrain --model-load-epoch 120 --begin-epoch 120"),
]


# ------------------------------------------------------------------------------ LR schedule
def expected_lr(t, epoch_size, base, steps, slowstart, scale):
    """Closed form of fbn.md 3.1 for the 0-based global iteration t (epoch-wise bookkeeping)."""
    epoch, within = divmod(t, epoch_size)
    if epoch < slowstart:
        frac = (epoch * epoch_size + within) / float(slowstart * epoch_size)
        return base * (scale + (1 - scale) * frac)
    lr = base
    for s in steps:
        if epoch >= s:
            lr *= 0.1
    return lr


@pytest.mark.parametrize("slowstart,steps", [(3, [5, 8]), (0, [2]), (2, []), (1, [1, 4])])
def test_scheduler_closed_form_and_resume(slowstart, steps):
    es, base, scale, total = 7, 0.2, 0.1, 10
    full = SlowStartScheduler(es, steps, slowstart=slowstart, scale=scale, base_lr=base)
    seq = [full(u) for u in range(1, es * total + 1)]
    want = [expected_lr(t, es, base, steps, slowstart, scale) for t in range(es * total)]
    np.testing.assert_allclose(seq, want, rtol=1e-12)
    assert seq[0] == pytest.approx(base * (scale if slowstart else 1))
    for begin in range(1, total):  # a fresh optimizer (counter from 1) resumed at `begin`
        res = SlowStartScheduler(es, steps, slowstart=slowstart, scale=scale, base_lr=base, begin_epoch=begin)
        np.testing.assert_allclose([res(u) for u in range(1, es * (total - begin) + 1)], seq[es * begin:])
    assert full.last_update == es * total and full.last_lr == seq[-1]


def test_scheduler_driven_by_mxnet_optimizer():
    """MXNet's SGD calls the scheduler with num_update starting at 1: the first update uses
    fmconv_scale * lr and the sequence advances once per step."""
    sched = SlowStartScheduler(4, [3], slowstart=2, scale=0.1)
    opt = mx.optimizer.create("sgd", learning_rate=0.5, momentum=0.9, lr_scheduler=sched)
    assert sched.base_lr == 0.5
    upd = mx.optimizer.get_updater(opt)
    w, g = mx.nd.ones((3,)), mx.nd.ones((3,))
    seen = []
    for _ in range(16):
        upd(0, g, w)
        seen.append(sched.last_lr)
    np.testing.assert_allclose(seen, [expected_lr(t, 4, 0.5, [3], 2, 0.1) for t in range(16)])


# ------------------------------------------------------------------------------- CLI / dry run
@pytest.mark.parametrize("dataset,cmd", SEED_COMMANDS, ids=["%s-%d" % (d, i) for i, (d, _) in enumerate(SEED_COMMANDS)])
def test_seed_command_lines_dry_run(dataset, cmd, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv = shlex.split(cmd) + ["--dry-run"]
    assert fbn_train.main(dataset, argv) == 0
    log = open(fbn_train.parse_args(dataset, argv).log_file).read()
    assert "dry run: built" in log and "stopping before training" in log
    if "--retrain" in argv:  # the README's fine-tuning step: starts at 120, LR already decayed 3x
        assert "continuing at epoch 120" in log and "(10 epochs 120..129 would follow)" in log
        assert "train_256_q90.rec" in log and "120:0.0001" in log


def test_help_lists_flags():
    out = subprocess.run([sys.executable, CIFAR, "--help"], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    flags = ["--gpus", "--data-dir", "--lr", "--wd", "--mom", "--bn-mom", "--batch-size", "--data-shape",
             "--num-epoches", "--network", "--num-classes", "--lr-step", "--model-prefix", "--res-module-num",
             "--depth", "--fmconv-slowstart", "--fmconv-drop", "--fmconv-factor", "--fmconv-scale", "--frequent",
             "--kv-store", "--retrain", "--model-load-epoch", "--model-load-prefix", "--begin-epoch",
             "--num-examples", "--workspace", "--warmup", "--fmconv", "--freeze", "--init", "--memonger",
             "--log-file", "--reference-compat", "--dry-run", "--no-auto-resume", "--pad-fill"]
    for f in flags:
        assert f in out.stdout, f
    h = fbn_train.build_parser("imagenet").format_help()
    assert "--aug-level" in h and "train_480_q90.rec" in h


def test_missing_gpus_and_data_are_clear_errors(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    base = ["--network", "resnet-small", "--res-module-num", "1", "--data-dir", str(tmp_path / "nodata")]
    if mx.context.num_gpus() == 0:
        with pytest.raises(SystemExit, match="--gpus ''"):
            fbn_train.main("cifar", base + ["--gpus", "0"])
    with pytest.raises(SystemExit, match="data not found"):
        fbn_train.main("cifar", base + ["--gpus", ""])
    with pytest.raises(SystemExit, match="lr-step"):
        fbn_train.parse_args("cifar", ["--lr-step", "10,x"])
    with pytest.raises(SystemExit, match="not a imagenet network"):
        fbn_train.parse_args("imagenet", ["--network", "resnet-small"])
    assert fbn_train.parse_args("cifar", ["--lr-step", ""]).lr_steps == []


def test_reference_compat_switch():
    fixed = fbn_train.parse_args("cifar", [])
    ref = fbn_train.parse_args("cifar", ["--reference-compat"])
    assert (fixed.wd_mode, fixed.pad_fill, fixed.dropfactor_mode, fixed.fb_grad_mode) == \
        ("no-bias-bn", 127, "inverted", "exact")
    assert (ref.wd_mode, ref.pad_fill, ref.dropfactor_mode, ref.fb_grad_mode) == \
        ("all", 255, "reference", "reference")
    mixed = fbn_train.parse_args("cifar", ["--reference-compat", "--pad-fill", "127", "--fb-grad-mode", "exact"])
    assert (mixed.wd_mode, mixed.pad_fill, mixed.fb_grad_mode) == ("all", 127, "exact")
    sym = fbn_train.build_symbol(fbn_train.parse_args("cifar", ["--reference-compat", "--network",
                                                                "resnet-small-fmconv", "--res-module-num", "1"]))
    assert '"dropfactor_mode": "reference"' in sym.tojson() and '"grad_mode": "reference"' in sym.tojson()


def test_weight_decay_and_lr_multipliers():
    """Effective per-parameter wd / lr of the optimizer after Module fills idx2name."""
    args = fbn_train.parse_args("cifar", ["--network", "resnet-small-fmconv", "--res-module-num", "1",
                                          "--fmconv", "--fmconv-scale", "0.3"])
    sym = fbn_train.build_symbol(args)
    mod = mx.mod.Module(sym, context=mx.cpu())
    mod.bind(data_shapes=[("data", (2, 3, 32, 32))], label_shapes=[("softmax_label", (2,))])
    mod.init_params(mx.init.Xavier())
    opt = fbn_train.make_optimizer(args, sym, None, 0.5)
    mod.init_optimizer(optimizer=opt)
    names = dict(enumerate(mod._exec_group.param_names))
    wds = dict(zip(names.values(), opt._get_wds(list(names))))
    lrs = dict(zip(names.values(), opt._get_lrs(list(names))))
    assert wds["convolution0_weight"] == pytest.approx(1e-4) and wds["bilinear_weight"] == pytest.approx(1e-4)
    assert wds["convolution0_bias"] == 0 and wds["batchnorm0_gamma"] == 0 and wds["bilinear_bias"] == 0
    assert lrs["bilinear_weight"] == pytest.approx(0.3 * 0.1) and lrs["convolution0_weight"] == pytest.approx(0.1)
    ref = fbn_train.parse_args("cifar", ["--reference-compat"])
    opt2 = fbn_train.make_optimizer(ref, sym, None, 0.5)
    opt2.idx2name = names
    assert all(w == pytest.approx(1e-4) for w in opt2._get_wds(list(names)))


# ------------------------------------------------------------------------------ end to end
def _write_rec(path, n, rng, size=32):
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


@pytest.fixture(scope="module")
def toy_data(tmp_path_factory):
    d = tmp_path_factory.mktemp("toycifar")
    rng = np.random.RandomState(0)
    _write_rec(d / "train.rec", 320, rng)
    _write_rec(d / "test.rec", 80, rng)
    return d


def _lr_lines(text):
    return [(int(u), float(lr)) for u, lr in re.findall(r"Update\[(\d+)\] lr=([0-9.e+-]+)", text)]


def test_end_to_end_kill_and_resume(toy_data, tmp_path):
    """Small FBN ResNet (n=1) on a 4-class toy set: killed after its 2nd checkpoint, restarted with
    the same command; the LR sequence equals the closed form and the accuracy is far above chance."""
    cmd = [sys.executable, CIFAR, "--gpus", "", "--data-dir", str(toy_data), "--network", "resnet-small-fmconv",
           "--res-module-num", "1", "--num-classes", "4", "--batch-size", "32", "--num-epoches", "5",
           "--lr", "0.05", "--lr-step", "4", "--fmconv-slowstart", "1", "--bn-mom", "0.5", "--frequent", "1",
           "--model-prefix", "toy", "--seed", "3"]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    p = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    marker = tmp_path / "model" / "toy-0002.params"
    t0 = time.time()
    while not marker.exists() and p.poll() is None and time.time() - t0 < 300:
        time.sleep(0.05)
    assert marker.exists(), "the first run did not reach its 2nd checkpoint"
    p.send_signal(signal.SIGKILL)
    p.wait()
    first = (tmp_path / "log" / "toy.log").read_text()
    done = max(int(f[4:8]) for f in os.listdir(tmp_path / "model") if re.match(r"toy-\d{4}\.params$", f))
    assert done >= 2

    out = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    log = (tmp_path / "log" / "toy.log").read_text()
    second = log[len(first):]
    assert "continuing at epoch %d" % done in second
    assert "loaded optimizer state" in second
    # LR: every logged update of both runs follows the closed form (epoch size 320/32 = 10)
    lrs = dict(_lr_lines(first))
    resumed = _lr_lines(second)
    assert resumed[0][0] == done * 10 + 1 and resumed[-1][0] == 50
    for u, lr in list(lrs.items()) + resumed:
        assert lr == pytest.approx(expected_lr(u - 1, 10, 0.05, [4], 1, 0.1), rel=1e-6), u
    assert set(range(1, 51)) <= set(lrs) | {u for u, _ in resumed}
    # checkpoints complete, no temporary files left behind
    files = sorted(os.listdir(tmp_path / "model"))
    for e in range(1, 6):
        assert "toy-%04d.params" % e in files and "toy-%04d.states" % e in files
    assert "toy-symbol.json" in files and not [f for f in files if f.startswith(".tmp")]
    accs = [float(a) for a in re.findall(r"Epoch\[4\] Validation-accuracy=([0-9.]+)", second)]
    assert accs and accs[-1] >= 0.6, accs  # chance is 0.25
    # the resumed model really is the trained one: reload the final checkpoint and score it
    sym, arg, aux = mx.model.load_checkpoint(str(tmp_path / "model" / "toy"), 5)
    it = mx.io.ImageRecordIter(path_imgrec=str(toy_data / "test.rec"), data_shape=(3, 32, 32), batch_size=16,
                               mean_r=123.68, mean_g=116.779, mean_b=103.939, round_batch=False)
    mod = mx.mod.Module(sym, context=mx.cpu())
    mod.bind(it.provide_data, it.provide_label, for_training=False)
    mod.set_params(arg, aux)
    acc = dict(mod.score(it, "acc"))["accuracy"]
    assert acc == pytest.approx(accs[-1], abs=0.02)


def test_warmup_retrain_and_dry_run_with_data(toy_data, tmp_path, monkeypatch):
    """--warmup (one extra epoch, its own checkpoint), then --retrain from epoch 1, and a dry run
    that builds the iterators when the data exist (baseline ResNet, n=1, one epoch each)."""
    monkeypatch.chdir(tmp_path)
    base = ["--gpus", "", "--data-dir", str(toy_data), "--network", "resnet-small", "--res-module-num", "1",
            "--num-classes", "4", "--batch-size", "64", "--lr", "0.05", "--frequent", "100", "--model-prefix", "w"]
    assert fbn_train.main("cifar", base + ["--warmup", "--num-epoches", "1", "--reference-compat"]) == 0
    log = open("log/w.log").read()
    assert "Warmup Epoch[-1] Validation-accuracy" in log
    assert re.search(r"\d Epoch\[0\] Validation-accuracy", log)
    assert os.path.exists("model/w-warm-0001.params") and os.path.exists("model/w-0001.params")
    assert fbn_train.main("cifar", base + ["--retrain", "--model-load-epoch", "1", "--num-epoches", "2"]) == 0
    log = open("log/w.log").read()
    assert "continuing at epoch 1" in log and "Epoch[1] Validation-accuracy" in log
    assert os.path.exists("model/w-0002.params")
    assert fbn_train.main("cifar", base + ["--num-epoches", "2"]) == 0  # already finished: nothing to do
    assert "nothing to do" in open("log/w.log").read()
    assert fbn_train.main("cifar", base + ["--dry-run", "--model-prefix", "d"]) == 0
    log = open("log/d.log").read()
    assert "iterators skipped" not in log and "epoch size 5 updates (320 examples" in log
