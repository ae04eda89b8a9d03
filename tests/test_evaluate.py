"""tools/evaluate.py: a checkpoint evaluated by the tool scores what the training run's own validation
measured (a Gluon AFF network and an FBN symbol network, trained here on the embedded digits with the
real training entry points); every protocol's preprocessing against an independent NumPy computation
(the bilinear filters written out, the crop offsets of torchvision and MXNet, the papers' constants);
the paper-number lookup against the registry; the one-line errors (exit status 2)."""
import csv
import json
import math
import os
import shutil
import subprocess
import sys

import cv2
import mxnet as mx
import numpy as np
import pytest

from mxrepro import evaluate as E
from mxrepro.engine import DataError, UsageError
from mxrepro.models import model_info
from mxrepro.recipes import aff, fbn
from tools import evaluate as tool

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
AFF_PREFIX = "digits-aff_cifar_resnet-8-c1-s1"
KW = {"blocks": 1, "channel_times": 1, "avg_down": True}
# AFF-ResNet-8 on 256 digits: with --lr 0.05 the best of 6 epochs beat the commonest class (12/64) by
# 0.11-0.20 over seeds 0-4, where 3 epochs at --lr 0.1 did not (from 0.08 below to 0.05 above)
AFF_EPOCHS = 6


# ------------------------------------------------------------------------------------------------
# Training runs (the real entry points) and their own validation records
# ------------------------------------------------------------------------------------------------
def _history(meta_path):
    with open(meta_path) as f:
        return {h["epoch"]: h for h in json.load(f)["history"]}


def _test_labels(rec):
    r = mx.recordio.MXIndexedRecordIO(os.path.splitext(rec)[0] + ".idx", rec, "r")
    out = [int(mx.recordio.unpack(r.read_idx(k))[0].label) for k in r.keys]
    r.close()
    return np.array(out)


@pytest.fixture(scope="module")
def aff_run(digits_small, tmp_path_factory):
    """AFF-ResNet-8 (blocks 1, width x1, HEAD-style avg-down shortcuts) on 256 digits, AFF_EPOCHS epochs, via open-aff's
    train_cifar.py flags."""
    out = str(tmp_path_factory.mktemp("aff_run"))
    argv = ["--dataset", "digits", "--data-dir", digits_small, "--model", "resnet", "--askc-type", "ASKCFuse",
            "--blocks", "1", "--channel-times", "1", "--avg-down", "--gpus", "", "--batch-size", "16",
            "--num-epochs", str(AFF_EPOCHS),
            "--lr", "0.05", "-j", "0", "--save-dir", out, "--log-interval", "1000", "--save-frequency", "1"]
    assert aff.main_cifar(argv) == 0
    return out


@pytest.fixture(scope="module")
def fbn_run(digits_small, tmp_path_factory):
    """ResNet-11-FBN (resnet-small-fmconv, n=1, FMConvolution3 head) on 256 digits, 3 epochs, via the FBN
    train_cifar.py flags: model/<prefix>-symbol.json + -NNNN.params."""
    out = str(tmp_path_factory.mktemp("fbn_run"))
    argv = ["--gpus", "", "--data-dir", digits_small, "--network", "resnet-small-fmconv", "--res-module-num", "1",
            "--num-classes", "10", "--batch-size", "16", "--num-epoches", "3", "--lr", "0.02", "--fmconv-drop", "0",
            "--bn-mom", "0.5", "--frequent", "100", "--model-prefix", "dig", "--output-dir", out]
    assert fbn.main("cifar", argv) == 0
    return out


def _above_constant(history, labels):
    """The model's predictions depend on the image: better than always answering the commonest class."""
    best = max(h["val_top1"] for h in history.values())
    return best > np.bincount(labels).max() / len(labels)


def _run_tool(argv, capsys=None):
    row_path = argv[argv.index("--json") + 1] if "--json" in argv else None
    assert tool.main(argv + ["--workers", "0", "--no-progress"]) == 0
    if row_path:
        with open(row_path) as f:
            return json.load(f)
    return None


def _folder_from_rec(rec, root, classes):
    """The records of ``rec`` as PNG files ROOT/<label>/<n>.png (lossless: the same pixels)."""
    r = mx.recordio.MXIndexedRecordIO(os.path.splitext(rec)[0] + ".idx", rec, "r")
    for c in range(classes):
        os.makedirs(os.path.join(root, str(c)), exist_ok=True)
    for k in r.keys:
        header, img = mx.recordio.unpack(r.read_idx(k))
        with open(os.path.join(root, str(int(header.label)), "%04d.png" % k), "wb") as f:
            f.write(img)
    r.close()
    return root


def test_gluon_checkpoint_scores_what_its_training_run_measured(aff_run, digits_small, tmp_path):
    test_rec = os.path.join(digits_small, "test.rec")
    labels = _test_labels(test_rec)
    hist = _history(os.path.join(aff_run, AFF_PREFIX + "-latest.json"))
    assert _above_constant(hist, labels), hist
    for epoch in (1, AFF_EPOCHS):
        weights = os.path.join(aff_run, "%s-%04d.params" % (AFF_PREFIX, epoch))
        # the model, its keywords and classes come from the .json the engine wrote beside the weights
        row = _run_tool(["--weights", weights, "--data", test_rec, "--json", str(tmp_path / "r.json"),
                         "--csv", str(tmp_path / "r.csv")])
        rec = hist[epoch]
        assert row["images"] == len(labels) == 64 and row["protocol"] == "aff-cifar" and row["num_classes"] == 10
        assert row["top1_correct"] == round(rec["val_top1"] * len(labels))
        assert row["top5_correct"] == round(rec["val_topk"] * len(labels)) and rec["k"] == 5
        assert row["top1_err"] == pytest.approx(100 * (1 - rec["val_top1"]), abs=1e-4)
        assert row["top5_err"] == pytest.approx(100 * (1 - rec["val_topk"]), abs=1e-4)
        assert row["weights_bytes"] == os.path.getsize(weights) and len(row["weights_sha256"]) == 16
        assert row["model"] == "aff_cifar_resnet" and row["model_kwargs"] == KW
    # the same images as a folder (PNG, so the same pixels), another batch size with a short last batch
    folder = _folder_from_rec(test_rec, str(tmp_path / "images"), 10)
    row = _run_tool(["--model", "aff_cifar_resnet", "--weights", weights, "--data", folder, "--batch-size", "7",
                     "--json", str(tmp_path / "f.json"), "--csv", str(tmp_path / "r.csv")])
    assert row["data_kind"] == "folder" and row["images"] == 64
    assert row["top1_correct"] == round(hist[AFF_EPOCHS]["val_top1"] * 64)
    with open(tmp_path / "r.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3 and list(rows[0]) == list(E.ROW_FIELDS)
    assert [int(r["top1_correct"]) for r in rows] == [round(hist[e]["val_top1"] * 64) for e in (1, AFF_EPOCHS, AFF_EPOCHS)]
    assert json.loads(rows[0]["model_kwargs"]) == KW and rows[0]["paper_top1_err"] == ""
    # --limit: the first N images
    row = _run_tool(["--weights", weights, "--data", test_rec, "--limit", "10", "--json", str(tmp_path / "l.json")])
    assert row["images"] == 10 and row["limit"] == 10


def test_open_aff_checkpoint_layout_is_read_off_the_file(aff_run, digits_small, tmp_path):
    """The trained weights saved under open-aff's HEAD attribute names (CIFARAFFResNet: features.K.I.resfwd.*,
    attention.local_att.*, downsample.1 after the AvgPool), without the engine's .json: the tool finds the
    avg-down layout in the file (depth and width come from --kw) and scores what the training run measured."""
    from mxrepro.models import get_model
    from mxrepro.weights import aff_name_map, detect_aff_layout
    net = get_model("aff_cifar_resnet", classes=10, **KW)
    net.load_parameters(os.path.join(aff_run, AFF_PREFIX + "-%04d.params" % AFF_EPOCHS))
    names = aff_name_map(net, "head")
    params = net._collect_params_with_prefix()
    official = {src: params[ours].data() for ours, src in names.items()}
    assert detect_aff_layout(list(official)) == "head" and len(set(official) & set(params)) * 2 < len(params)
    path = str(tmp_path / "AFF-ResNet-8-best.params")
    mx.nd.save(path, official)
    row = _run_tool(["--model", "aff_cifar_resnet", "--kw", "blocks=1", "--kw", "channel_times=1", "--weights", path,
                     "--data", os.path.join(digits_small, "test.rec"), "--json", str(tmp_path / "o.json")])
    hist = _history(os.path.join(aff_run, AFF_PREFIX + "-latest.json"))
    assert row["weights_format"] == "open-aff .params (head layout)" and row["model_kwargs"] == KW
    assert row["top1_correct"] == round(hist[AFF_EPOCHS]["val_top1"] * 64) and row["recorded_top1_err"] is None


def test_fbn_symbol_checkpoint_scores_what_its_training_run_measured(fbn_run, digits_small, tmp_path):
    test_rec = os.path.join(digits_small, "test.rec")
    labels = _test_labels(test_rec)
    model = os.path.join(fbn_run, "model")
    hist = _history(os.path.join(model, "dig-latest.json"))
    assert _above_constant(hist, labels), hist
    assert os.path.exists(os.path.join(model, "dig-symbol.json"))
    for epoch in (1, 2, 3):
        weights = os.path.join(model, "dig-%04d.params" % epoch)
        row = _run_tool(["--model", "resnet-small-fmconv", "--weights", weights, "--data", test_rec,
                         "--json", str(tmp_path / "r.json")])
        assert row["protocol"] == "fbn" and row["weights_format"] == "Module checkpoint (dig-symbol.json)"
        assert row["top1_correct"] == round(hist[epoch]["val_top1"] * 64), (epoch, row, hist[epoch])
        assert row["top5_correct"] == round(hist[epoch]["val_topk"] * 64)
        assert row["recorded_top1_err"] == pytest.approx(100 * (1 - hist[epoch]["val_top1"]), abs=1e-4)
    # the symbol rebuilt by name from the registry (the run's keywords come from the .json), and the checkpoint
    # with no .json beside it at all (then --kw gives the keywords)
    row = _run_tool(["--weights", weights, "--data", test_rec, "--rebuild", "--batch-size", "5",
                     "--json", str(tmp_path / "b.json")])
    assert row["weights_format"] == "Module checkpoint (symbol rebuilt by name)"
    assert row["top1_correct"] == round(hist[3]["val_top1"] * 64)
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(weights, bare / "x-0003.params")
    row = _run_tool(["--model", "resnet-small-fmconv", "--kw", "res_module_num=1", "--weights",
                     str(bare / "x-0003.params"), "--data", test_rec, "--json", str(tmp_path / "c.json")])
    assert row["top1_correct"] == round(hist[3]["val_top1"] * 64) and row["num_classes"] == 10
    # an image folder with the FBN protocol (mean subtraction, no resize at 32x32)
    folder = _folder_from_rec(test_rec, str(tmp_path / "images"), 10)
    row = _run_tool(["--model", "resnet-small-fmconv", "--weights", weights, "--data", folder,
                     "--json", str(tmp_path / "f.json")])
    assert row["top1_correct"] == round(hist[3]["val_top1"] * 64)


# ------------------------------------------------------------------------------------------------
# Protocols against an independent NumPy computation
# ------------------------------------------------------------------------------------------------
def np_bilinear(img, out_h, out_w):
    """OpenCV INTER_LINEAR written out: pixel centres at (i + 0.5) * in / out - 0.5, 2x2 neighbours, edges
    clamped, no prefilter (float result)."""
    def axis(n_in, n_out):
        src = (np.arange(n_out) + 0.5) * n_in / n_out - 0.5
        src = np.clip(src, 0, None)
        i0 = np.minimum(np.floor(src).astype(int), n_in - 1)
        i1 = np.minimum(i0 + 1, n_in - 1)
        return i0, i1, (src - i0)
    y0, y1, wy = axis(img.shape[0], out_h)
    x0, x1, wx = axis(img.shape[1], out_w)
    f = img.astype(np.float64)
    rows = f[y0] * (1 - wy)[:, None, None] + f[y1] * wy[:, None, None]
    return rows[:, x0] * (1 - wx)[None, :, None] + rows[:, x1] * wx[None, :, None]


def np_pil_bilinear(img, out_h, out_w):
    """PIL's BILINEAR resampling written out: a triangle filter stretched by the scale when shrinking, over
    [centre - support, centre + support), weights normalised; horizontal pass, then vertical."""
    def matrix(n_in, n_out):
        scale = n_in / n_out
        fs = max(scale, 1.0)
        m = np.zeros((n_out, n_in))
        for i in range(n_out):
            c = (i + 0.5) * scale
            lo, hi = max(int(c - fs + 0.5), 0), min(int(c + fs + 0.5), n_in)
            x = np.arange(lo, hi)
            w = np.clip(1 - np.abs((x - c + 0.5) / fs), 0, None)
            m[i, lo:hi] = w / w.sum()
        return m
    f = img.astype(np.float64)
    f = np.einsum("ox,hxc->hoc", matrix(img.shape[1], out_w), f)
    return np.einsum("oy,ywc->owc", matrix(img.shape[0], out_h), f)


def short_side(h, w, s):
    return (s, int(s * w / h)) if h <= w else (int(s * h / w), s)


def torchvision_crop(h, w, s):
    return int(round((h - s) / 2.0)), int(round((w - s) / 2.0))


def mxnet_crop(h, w, s):
    return (h - s) // 2, (w - s) // 2


@pytest.fixture(scope="module")
def one_image(tmp_path_factory):
    """A 300x403 RGB noise image (a one-pixel shift changes everything) as PNG in a .rec/.idx and in a
    folder, and a 32x32 one for the CIFAR protocol."""
    d = tmp_path_factory.mktemp("one")
    rng = np.random.RandomState(5)
    out = {}
    for name, shape in (("big", (300, 403, 3)), ("small", (32, 32, 3))):
        rgb = rng.randint(0, 256, shape).astype(np.uint8)
        png = cv2.imencode(".png", rgb[:, :, ::-1])[1].tobytes()
        w = mx.recordio.MXIndexedRecordIO(str(d / (name + ".idx")), str(d / (name + ".rec")), "w")
        w.write_idx(0, mx.recordio.pack(mx.recordio.IRHeader(0, 3.0, 0, 0), png))
        w.close()
        for c in range(4):
            (d / name / str(c)).mkdir(parents=True)
        (d / name / "3" / "a.png").write_bytes(png)
        out[name] = dict(rgb=rgb, rec=str(d / (name + ".rec")), folder=str(d / name))
    return out


def _first(path, protocol):
    data, label = next(iter(E.open_data(path).batches(protocol, 1, 0)))
    assert int(label.asnumpy()[0]) == 3
    return data.asnumpy()[0]


def _reference(rgb, resize, crop, s, mean, std, unit, resampler=np_bilinear):
    h, w = rgb.shape[:2]
    x = rgb.astype(np.float64)
    if resize:
        nh, nw = short_side(h, w, resize)
        x = np.clip(np.round(resampler(rgb, nh, nw)), 0, 255)
        h, w = nh, nw
    top, left = crop(h, w, s)
    x = x[top:top + s, left:left + s]
    if unit:
        x = x / 255.0
    x = x - np.array(mean)
    if std is not None:
        x = x / np.array(std)
    return x.transpose(2, 0, 1)


def _close(got, ref, unit_tol, std, unit=True):
    """Resampling in integer arithmetic (OpenCV, PIL) is within ``unit_tol`` grey levels of the float
    reference; the mean error is far below one level."""
    scale = (1 / 255.0 if unit else 1.0) / (np.min(std) if std is not None else 1.0)
    diff = np.abs(got - ref) / scale
    assert got.shape == ref.shape
    assert diff.max() <= unit_tol + 1e-3 and diff.mean() < 0.3, (diff.max(), diff.mean())


TV_MEAN, TV_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
GCV_MEAN, GCV_STD = (123.68, 116.779, 103.939), (58.393, 57.12, 57.375)


@pytest.mark.parametrize("backend", ["pil", "opencv"])
def test_blnet_protocol_is_torchvision_resize_crop_normalise(one_image, backend):
    img = one_image["big"]
    p = E.make_protocol("blnet", 224, backend=backend)
    assert p.resize == 256 == int(224 / 0.875 + 0.5)
    # 300x403 -> 256x343: torchvision's crop starts at column round(59.5) = 60, MXNet's at 59
    assert short_side(300, 403, 256) == (256, 343) and torchvision_crop(256, 343, 224) == (16, 60)
    ref = _reference(img["rgb"], 256, torchvision_crop, 224, TV_MEAN, TV_STD, True,
                     np_pil_bilinear if backend == "pil" else np_bilinear)
    for path in (img["rec"], img["folder"]):
        _close(_first(path, p), ref, 1.0, TV_STD)
    shifted = _reference(img["rgb"], 256, mxnet_crop, 224, TV_MEAN, TV_STD, True,
                         np_pil_bilinear if backend == "pil" else np_bilinear)
    assert np.abs(_first(img["rec"], p) - shifted).mean() > 0.1  # the offset rule is really checked


def test_pil_and_opencv_bilinear_differ_when_shrinking(one_image):
    """The documented difference: PIL averages over the whole footprint, OpenCV samples 2x2 pixels."""
    img = one_image["big"]
    a = _first(img["rec"], E.make_protocol("blnet", 224, backend="pil"))
    b = _first(img["rec"], E.make_protocol("blnet", 224, backend="opencv"))
    assert np.abs(a - b).mean() * 255 * 0.224 > 5  # grey levels, on noise
    assert a.std() < b.std()  # the wider filter smooths more


def test_aff_protocol_is_gluoncv(one_image):
    img = one_image["big"]
    p = E.make_protocol("aff", 224)
    assert p.resize == math.ceil(224 / 0.875)
    # .rec: ImageRecordIter(resize=256, data_shape=224) with gluon-cv's RecordIO constants (0-255 scale)
    ref = _reference(img["rgb"], 256, mxnet_crop, 224, GCV_MEAN, GCV_STD, False)
    _close(_first(img["rec"], p), ref, 1.0, GCV_STD, unit=False)
    # folder: gluon-cv's DataLoader path, Resize(256, keep_ratio) + CenterCrop + ToTensor + Normalize
    ref = _reference(img["rgb"], 256, mxnet_crop, 224, TV_MEAN, TV_STD, True)
    _close(_first(img["folder"], p), ref, 1.0, TV_STD)
    from mxnet.gluon.data.vision import transforms as T
    gluon = T.Compose([T.Resize(256, keep_ratio=True), T.CenterCrop(224), T.ToTensor(), T.Normalize(TV_MEAN, TV_STD)])
    assert np.abs(gluon(mx.nd.array(img["rgb"], dtype="uint8")).asnumpy() - _first(img["folder"], p)).max() < 1e-5


def test_aff_cifar_and_fbn_protocols(one_image):
    small = one_image["small"]
    p = E.make_protocol("aff-cifar", 32)
    ref = _reference(small["rgb"], 0, mxnet_crop, 32, (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010), True)
    for path in (small["rec"], small["folder"]):
        assert np.abs(_first(path, p) - ref).max() < 1e-5
    # FBN: mean subtraction only; 32x32 networks are not resized, ImageNet ones get short side 256
    p = E.make_protocol("fbn", 32)
    assert p.resize == 0 and p.std is None
    ref = _reference(small["rgb"], 0, mxnet_crop, 32, GCV_MEAN, None, False)
    for path in (small["rec"], small["folder"]):
        assert np.abs(_first(path, p) - ref).max() < 1e-4
    big = one_image["big"]
    p = E.make_protocol("fbn", 224)
    assert p.resize == 256
    ref = _reference(big["rgb"], 256, mxnet_crop, 224, GCV_MEAN, None, False)
    for path in (big["rec"], big["folder"]):
        _close(_first(path, p), ref, 1.0, None, unit=False)
    # on the original's val_256 files the short-side resize changes nothing
    r = cv2.resize(big["rgb"], (343, 256), interpolation=cv2.INTER_LINEAR)
    assert np.array_equal(E.make_protocol("fbn", 224).transform(r), E.make_protocol("fbn", 224, resize=0).transform(r))


def test_default_protocol_by_family():
    assert [E.default_protocol(n) for n in ("bl_resnet50", "aff_resnet50", "resnet50_v1b", "aff_cifar_resnet",
                                            "cifar_resnet", "resnet-small-fmconv", "inception-bn")] == \
        ["blnet", "aff", "aff", "aff-cifar", "aff-cifar", "fbn", "fbn"]


# ------------------------------------------------------------------------------------------------
# Paper numbers (from the registry)
# ------------------------------------------------------------------------------------------------
def test_paper_numbers_come_from_the_registry_and_only_for_the_papers_configuration():
    bl = model_info("bl_resnet50").cfg["paper"]
    got = E.paper_numbers("bl_resnet50", {}, 1000, bl["params_m"])
    assert (got["paper_top1_err"], got["reference_top1_err"]) == (bl["top1_err"], bl["top1_err_official"])
    a4 = model_info("bl_resnet50_a4_b4").cfg["paper"]
    assert E.paper_numbers("bl_resnet50", {"alpha": 4, "beta": 4}, 1000)["paper_top1_err"] == a4["top1_err"]
    assert E.paper_numbers("bl_resnet50", {}, 10)["paper_top1_err"] is None  # another head
    assert E.paper_numbers("bl_resnet50", {}, 1000, 20.0)["paper_top1_err"] is None  # another network
    assert E.paper_numbers("bl_resnet101", {"alpha": 4}, 1000)["paper_top1_err"] is None  # no such row
    for name in ("bl_resnet101", "bl_resnext50_32x4d", "bl_resnext101_32x4d", "bl_seresnext50_32x4d",
                 "bl_seresnext101_32x4d"):
        want = model_info(name).cfg["paper"]["top1_err_official"]
        assert E.paper_numbers(name, {}, 1000)["reference_top1_err"] == want
    want = model_info("aff_resnet50").cfg["paper"]["top1_err"]
    assert E.paper_numbers("aff_resnet50", {}, 1000)["paper_top1_err"] == want
    c = model_info("aff_cifar_resnet").cfg["paper"]
    got = E.paper_numbers("aff_cifar_resnet", {}, 100)["reference_top1_err"]
    assert got == pytest.approx(100 - c["acc_fine100_reference"])
    assert E.paper_numbers("aff_cifar_resnet", {"blocks": 1}, 100)["reference_top1_err"] is None
    fb = model_info("resnet-fmconv").cfg["paper"]["resnet-34-fbn"]
    got = E.paper_numbers("resnet-fmconv", {"depth": 34}, 1000)
    assert (got["paper_top1_err"], got["paper_top5_err"]) == (fb["top1_err"], fb["top5_err"])
    small = model_info("resnet-small-fmconv").cfg["paper"]["resnet-164-fbn"]
    for classes in (10, 100):
        got = E.paper_numbers("resnet-small-fmconv", {"res_module_num": 18}, classes)["paper_top1_err"]
        assert got == small["cifar%d_err" % classes]
    assert E.paper_numbers("resnet-small-fmconv", {"res_module_num": 1}, 10)["paper_top1_err"] is None


# ------------------------------------------------------------------------------------------------
# Errors: one line, exit status 2, nothing written
# ------------------------------------------------------------------------------------------------
def test_errors(aff_run, fbn_run, digits_small, tmp_path, capsys):
    test_rec = os.path.join(digits_small, "test.rec")
    aff_w = os.path.join(aff_run, AFF_PREFIX + "-%04d.params" % AFF_EPOCHS)
    fbn_w = os.path.join(fbn_run, "model", "dig-0003.params")
    out = str(tmp_path / "never.json")

    def fails(exc, match, argv):
        with pytest.raises(exc, match=match) as e:
            tool.main(argv + ["--workers", "0", "--no-progress", "--json", out])
        assert "\n" not in str(e.value) and not os.path.exists(out)

    fails(UsageError, "weights not found", ["--model", "aff_cifar_resnet", "--weights", "nope.params",
                                            "--data", test_rec])
    fails(DataError, "no such file", ["--weights", aff_w, "--data", str(tmp_path / "nope.rec")])
    fails(UsageError, "unknown model", ["--model", "aff_resnet5", "--weights", aff_w, "--data", test_rec])
    # a .rec without its index, a truncated .rec, a root holding train/ and val/
    shutil.copy(test_rec, tmp_path / "noidx.rec")
    fails(DataError, r"index noidx.idx is missing", ["--weights", aff_w, "--data", str(tmp_path / "noidx.rec")])
    raw = open(test_rec, "rb").read()
    (tmp_path / "cut.rec").write_bytes(raw[:len(raw) // 2])
    shutil.copy(os.path.splitext(test_rec)[0] + ".idx", tmp_path / "cut.idx")
    fails(DataError, "cut.rec", ["--weights", aff_w, "--data", str(tmp_path / "cut.rec")])
    for s in ("train", "val"):
        (tmp_path / "root" / s / "0").mkdir(parents=True)
    fails(DataError, "not class folders", ["--weights", aff_w, "--data", str(tmp_path / "root")])
    # weights that do not fit the model: the weights module's named errors, in one line
    fails(UsageError, "wrong weights for aff_cifar_resnet: .*missing", ["--weights", aff_w, "--data", test_rec,
                                                                        "--kw", "blocks=2"])
    fails(UsageError, "trained as resnet-small-fmconv", ["--model", "aff_cifar_resnet", "--weights", fbn_w,
                                                         "--data", test_rec])
    shutil.copy(fbn_w, tmp_path / "module.params")
    fails(UsageError, "wrong weights for aff_cifar_resnet", ["--model", "aff_cifar_resnet", "--weights",
                                                             str(tmp_path / "module.params"), "--data", test_rec])
    shutil.copy(aff_w, tmp_path / "g-0001.params")
    fails(UsageError, "not a Module checkpoint", ["--model", "resnet-small-fmconv", "--weights",
                                                  str(tmp_path / "g-0001.params"), "--data", test_rec])
    fails(UsageError, "wrong weights for resnet-small-fmconv: .*rebuilt symbol",
          ["--weights", fbn_w, "--data", test_rec, "--rebuild", "--kw", "res_module_num=2"])
    # classes mismatch: head vs --num-classes, data vs head
    fails(UsageError, "classes mismatch: --num-classes 5 but .* 10-class head", ["--weights", aff_w, "--data", test_rec,
                                                                                "--num-classes", "5"])
    folder = _folder_from_rec(test_rec, str(tmp_path / "images"), 12)
    fails(UsageError, "classes mismatch: .* 12 class folders but aff_cifar_resnet has 10 outputs",
          ["--weights", aff_w, "--data", folder])
    # bad flags
    fails(UsageError, "backend pil applies to --protocol blnet", ["--weights", aff_w, "--data", test_rec,
                                                                  "--backend", "pil"])
    (tmp_path / "other.csv").write_text("a,b\n1,2\n")
    fails(UsageError, "other columns", ["--weights", aff_w, "--data", test_rec, "--csv", str(tmp_path / "other.csv")])
    # the real command line: status 2, one line on stderr
    p = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "evaluate.py"), "--model", "bl_resnet50",
                        "--weights", aff_w, "--data", test_rec, "--workers", "0"], capture_output=True, text=True,
                       cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT), timeout=300)
    err = [l for l in p.stderr.splitlines() if l.startswith("error:")]
    assert p.returncode == 2 and len(err) == 1 and "trained as aff_cifar_resnet" in err[0], p.stderr
