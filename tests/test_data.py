"""Dataset preparation: tools/prepare_{cifar,imagenet,digits}.py and mxrepro/datasets.py.

Inputs are made here: CIFAR archives in the official python pickle format (docs:
https://www.cs.toronto.edu/~kriz/cifar.html), a small ImageNet-style folder with broken files (a
truncated photograph in train/ and in val/, a zero-byte .jpg, text named .jpg, a .txt), RGBA,
greyscale, CMYK and 16-bit images, names with spaces and non-ASCII characters, an empty class and a
flat val/. Outputs are read back with mx.io.ImageRecordIter and mx.recordio and compared with the
sources independently of the tools' own code paths."""
import collections
import io
import json
import os
import pickle
import re
import subprocess
import sys
import tarfile

import cv2
import mxnet as mx
import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
from tools import prepare_cifar, prepare_digits, prepare_imagenet  # noqa: E402
from mxrepro import datasets as D  # noqa: E402
from mxrepro import integrity as I  # noqa: E402


def run_tool(name, *args):
    """Run a tool as a user would; returns the CompletedProcess."""
    return subprocess.run([sys.executable, os.path.join(ROOT, "tools", name)] + [str(a) for a in args],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=300)


def read_lst(path):
    with open(path) as f:
        return [(int(p[0]), float(p[1]), p[2]) for p in (ln.rstrip("\n").split("\t") for ln in f)]


def read_records(prefix):
    """[(header, BGR image)] in file order via mx.recordio, decoded as the loaders do (colour)."""
    r = mx.recordio.MXIndexedRecordIO(prefix + ".idx", prefix + ".rec", "r")
    out = [mx.recordio.unpack_img(r.read_idx(k), iscolor=1) for k in r.keys]
    r.close()
    return out


# --------------------------------------------------------------------------- CIFAR archives
CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def _pickled(obj):
    return pickle.dumps(obj, protocol=2)


def _add(tar, name, payload):
    ti = tarfile.TarInfo(name)
    ti.size = len(payload)
    tar.addfile(ti, io.BytesIO(payload))


def make_cifar10(path, rng, per_batch=6, n_test=8):
    """cifar-10-python.tar.gz layout; keys are bytes, as the original Python-2 pickles load."""
    src = {}
    with tarfile.open(path, "w:gz") as tar:
        for split, batches in (("train", ["data_batch_%d" % i for i in range(1, 6)]), ("test", ["test_batch"])):
            imgs, labs = [], []
            for b in batches:
                n = per_batch if split == "train" else n_test
                img = rng.randint(0, 256, (n, 32, 32, 3)).astype(np.uint8)  # RGB
                lab = rng.randint(0, 10, n).tolist()
                data = np.empty((n, 3072), np.uint8)
                for c in range(3):  # row-major R, G, B planes of 1024 each
                    data[:, c * 1024:(c + 1) * 1024] = img[:, :, :, c].reshape(n, 1024)
                _add(tar, "cifar-10-batches-py/" + b, _pickled(
                    {b"batch_label": b"batch", b"labels": lab, b"data": data,
                     b"filenames": [("f%d.png" % i).encode() for i in range(n)]}))
                imgs.append(img)
                labs += lab
            src[split] = (np.concatenate(imgs), np.array(labs))
        _add(tar, "cifar-10-batches-py/batches.meta", _pickled(
            {b"label_names": [n.encode() for n in CIFAR10_NAMES], b"num_cases_per_batch": per_batch,
             b"num_vis": 3072}))
        _add(tar, "cifar-10-batches-py/readme.html", b"<html></html>")
    return src


def make_cifar100(path, rng, n_train=40, n_test=10):
    """cifar-100-python.tar.gz layout with fine_labels and coarse_labels (str keys)."""
    src = {}
    with tarfile.open(path, "w:gz") as tar:
        for split, n in (("train", n_train), ("test", n_test)):
            img = rng.randint(0, 256, (n, 32, 32, 3)).astype(np.uint8)
            fine = rng.randint(0, 100, n)
            coarse = fine // 5  # any fixed map: the test only needs both columns to differ
            data = np.concatenate([img[:, :, :, c].reshape(n, 1024) for c in range(3)], axis=1)
            _add(tar, "cifar-100-python/" + split, _pickled(
                {"filenames": ["x%d.png" % i for i in range(n)], "batch_label": split,
                 "fine_labels": fine.tolist(), "coarse_labels": coarse.tolist(), "data": data}))
            src[split] = (img, fine, coarse)
        _add(tar, "cifar-100-python/meta", _pickled(
            {"fine_label_names": ["fine%02d" % i for i in range(100)],
             "coarse_label_names": ["coarse%02d" % i for i in range(20)]}))
        _add(tar, "cifar-100-python/file.txt~", b"")
    return src


@pytest.fixture(scope="module")
def archives(tmp_path_factory):
    d = tmp_path_factory.mktemp("cifar_src")
    rng = np.random.RandomState(7)
    c10 = make_cifar10(str(d / "cifar-10-python.tar.gz"), rng)
    c100 = make_cifar100(str(d / "cifar-100-python.tar.gz"), rng)
    return dict(dir=d, c10=c10, c100=c100)


@pytest.fixture(scope="module")
def cifar10_out(archives, tmp_path_factory):
    out = tmp_path_factory.mktemp("c10") / "cifar10"
    res = run_tool("prepare_cifar.py", "--dataset", "cifar10", "--out", out,
                   "--src", archives["dir"] / "cifar-10-python.tar.gz", "--threads", 2)
    assert res.returncode == 0, res.stderr
    return out, res


def check_cifar_output(out, images, labels, names):
    """Records == source pixels (PNG is lossless) and labels, through both readers."""
    assert open(os.path.join(out, "labels.txt")).read().split("\n")[:-1] == names
    for split in ("train", "test"):
        img, lab = images[split], labels[split]
        lst = read_lst(os.path.join(out, split + ".lst"))
        assert sorted(i for i, _, _ in lst) == list(range(len(lab)))
        recs = read_records(os.path.join(out, split))
        assert [int(h.id) for h, _ in recs] == [i for i, _, _ in lst]
        for h, bgr in recs:
            assert bgr.shape == (32, 32, 3)
            np.testing.assert_array_equal(bgr[:, :, ::-1], img[int(h.id)])
            assert h.label == lab[int(h.id)]
        it = mx.io.ImageRecordIter(path_imgrec=os.path.join(out, split + ".rec"),
                                   path_imgidx=os.path.join(out, split + ".idx"), data_shape=(3, 32, 32),
                                   batch_size=len(lab), shuffle=False, preprocess_threads=1)
        batch = it.next()
        order = [i for i, _, _ in lst]
        np.testing.assert_array_equal(batch.data[0].asnumpy(), img[order].transpose(0, 3, 1, 2).astype(np.float32))
        np.testing.assert_array_equal(batch.label[0].asnumpy(), lab[order].astype(np.float32))
        # the image folder mirrors the labels: <NN_name>/<id>.png
        for i, l, rel in lst:
            assert rel.split("/")[1] == D.class_folder(int(l), names[int(l)], len(names))


def test_cifar10_records_match_archive(archives, cifar10_out):
    out, res = cifar10_out
    src = archives["c10"]
    assert "verified (pixel-exact)" in res.stdout
    assert len(read_records(str(out / "train"))) == 30 and len(read_records(str(out / "test"))) == 8
    check_cifar_output(str(out), {s: v[0] for s, v in src.items()}, {s: v[1] for s, v in src.items()},
                       CIFAR10_NAMES)
    # the train records are shuffled, the test records keep the archive order
    assert [i for i, _, _ in read_lst(str(out / "train.lst"))] != list(range(30))
    assert [i for i, _, _ in read_lst(str(out / "test.lst"))] == list(range(8))


def test_cifar100_fine_by_default_and_coarse_on_request(archives, tmp_path):
    src = archives["c100"]
    images = {s: v[0] for s, v in src.items()}
    fine_out, coarse_out = tmp_path / "fine", tmp_path / "coarse"
    # extracted-folder input for one of the two runs
    with tarfile.open(str(archives["dir"] / "cifar-100-python.tar.gz")) as t:
        t.extractall(str(tmp_path / "x"))
    res = run_tool("prepare_cifar.py", "--dataset", "cifar100", "--out", fine_out,
                   "--src", tmp_path / "x" / "cifar-100-python")
    assert res.returncode == 0, res.stderr
    check_cifar_output(str(fine_out), images, {s: v[1] for s, v in src.items()},
                       ["fine%02d" % i for i in range(100)])
    assert prepare_cifar.main(["--dataset", "cifar100", "--out", str(coarse_out), "--coarse-labels",
                               "--src", str(archives["dir"] / "cifar-100-python.tar.gz")]) == 0
    check_cifar_output(str(coarse_out), images, {s: v[2] for s, v in src.items()},
                       ["coarse%02d" % i for i in range(20)])
    info = json.load(open(str(coarse_out / "prepare_info.json")))
    assert info["outputs"]["train"]["settings"]["labels"] == "coarse_labels"
    assert len(info["outputs"]["train"]["label_counts"]) == 20
    for split in ("train", "test"):  # label range per split, read back for the engine's --num-classes check
        coarse = src[split][2]
        assert info["outputs"][split]["labels"] == dict(min=int(coarse.min()), max=int(coarse.max()), num_classes=20,
                                                        present=len(set(coarse.tolist())))
        s = I.label_summary(str(coarse_out / (split + ".rec")))
        assert tuple(s) == (20, coarse.min(), coarse.max()) and s.source == "prepare_info.json"


def test_cifar_rerun_skips_force_redoes_and_settings_clash(archives, cifar10_out, capsys):
    out, _ = cifar10_out
    rec = str(out / "train.rec")
    before = os.stat(rec).st_ino, os.stat(rec).st_mtime_ns
    args = ["--dataset", "cifar10", "--out", str(out), "--src", str(archives["dir"])]
    assert prepare_cifar.main(args) == 0
    assert "nothing to do" in capsys.readouterr().out
    assert (os.stat(rec).st_ino, os.stat(rec).st_mtime_ns) == before
    # other settings in the same folder: refused without --force
    assert prepare_cifar.main(["--dataset", "cifar100", "--out", str(out), "--src", str(archives["dir"])]) == 2
    assert "--force" in capsys.readouterr().err
    # a half-written output is not taken as done ...
    assert D.rec_complete(str(out / "train"), 30)
    with open(rec, "r+b") as f:
        f.truncate(os.path.getsize(rec) - 10)
    assert not D.rec_complete(str(out / "train"), 30)
    assert not D.small_dataset_present(str(out), "prepare_cifar", ["train", "test"],
                                       json.load(open(str(out / "prepare_info.json")))["outputs"]["train"]["settings"])
    # ... and --force rebuilds it
    assert prepare_cifar.main(args + ["--force"]) == 0
    assert "verified (pixel-exact)" in capsys.readouterr().out
    assert (os.stat(rec).st_ino, os.stat(rec).st_mtime_ns) != before
    assert D.rec_complete(str(out / "train"), 30)


def test_cifar_wrong_inputs_give_clear_errors(archives, tmp_path, capsys, monkeypatch):
    c10 = str(archives["dir"] / "cifar-10-python.tar.gz")
    c100 = str(archives["dir"] / "cifar-100-python.tar.gz")
    cases = [
        (["--dataset", "cifar10", "--src", c100], ["--dataset cifar100"]),
        (["--dataset", "cifar100", "--src", c10], ["--dataset cifar10", "cifar-100-python/train"]),
        (["--dataset", "cifar10", "--src", str(tmp_path / "missing.tar.gz")], ["does not exist"]),
    ]
    (tmp_path / "empty").mkdir()
    cases.append((["--dataset", "cifar10", "--src", str(tmp_path / "empty")], ["empty", "cifar-10-batches-py"]))
    (tmp_path / "junk.tar.gz").write_bytes(b"this is not a tarball")
    cases.append((["--dataset", "cifar10", "--src", str(tmp_path / "junk.tar.gz")], ["not a readable tar"]))
    for args, words in cases:
        assert prepare_cifar.main(args + ["--out", str(tmp_path / "o")]) == 2, args
        err = capsys.readouterr().err
        assert err.startswith("error: ") and "Traceback" not in err
        for w in words:
            assert w in err, (w, err)
    # offline: the download fails fast and says to use --src
    monkeypatch.setitem(prepare_cifar.SPECS["cifar10"], "url", "http://127.0.0.1:9/cifar-10-python.tar.gz")
    assert prepare_cifar.main(["--dataset", "cifar10", "--out", str(tmp_path / "dl")]) == 2
    err = capsys.readouterr().err
    assert "could not download" in err and "--src" in err
    assert not os.path.exists(str(tmp_path / "dl" / "cifar-10-python.tar.gz.part"))


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_cifar_pickles_load_in_every_protocol_and_refuse_code():
    want = np.arange(2 * 3072).astype(np.uint8).reshape(2, 3072)
    for proto in range(pickle.HIGHEST_PROTOCOL + 1):
        got = prepare_cifar._load_pickle(pickle.dumps(
            {b"data": want, b"labels": [1, np.int64(2)], b"filenames": [b"a.png", b"b.png"]}, protocol=proto), "x")
        np.testing.assert_array_equal(got["data"], want)
        assert got["labels"] == [1, 2] and got["filenames"] == ["a.png", "b.png"]
    with pytest.raises(D.DatasetError, match="posix.system|os.system|unexpected object"):
        prepare_cifar._load_pickle(pickle.dumps({"data": _Evil()}), "evil")


# --------------------------------------------------------------------------- ImageNet-style folders
def _photos():
    from sklearn.datasets import load_sample_images
    return [np.ascontiguousarray(im[:, :, ::-1]) for im in load_sample_images().images]  # BGR


def make_image_folder(root, rng):
    """train/<wnid>/* and a flat val/ plus its label file: random images of known sizes, real
    photographs in several colour layouts, and broken files. Returns (classes, val_labels, sizes,
    bad) where ``bad`` maps each broken file (relative to its split) to the reason's first words."""
    classes = ["n01440764", "n01443537", "n01484850", "n09999999"]  # the last one stays empty
    sizes, bad = {}, {}
    for c in classes[:3]:
        os.makedirs(os.path.join(root, "train", c))
        for i in range(3):
            h, w = [(50, 70), (90, 40), (60, 60)][i]
            path = os.path.join(root, "train", c, "%s_%d.JPEG" % (c, i))
            cv2.imwrite(path, rng.randint(0, 256, (h, w, 3)).astype(np.uint8))
            sizes["train/%s/%s_%d.JPEG" % (c, c, i)] = (h, w)
    os.makedirs(os.path.join(root, "train", classes[3]))
    photo = cv2.resize(_photos()[0], (96, 64), interpolation=cv2.INTER_AREA)
    good = os.path.join(root, "train", classes[1])
    cv2.imwrite(os.path.join(good, "photo ü rgba.png"), np.dstack([photo, np.full((64, 96), 200, np.uint8)]))
    cv2.imwrite(os.path.join(good, "grey photo.png"), cv2.cvtColor(photo, cv2.COLOR_BGR2GRAY))
    cv2.imwrite(os.path.join(good, "deep16.png"), photo.astype(np.uint16) * 257)
    from PIL import Image
    Image.fromarray(photo[:, :, ::-1]).convert("CMYK").save(os.path.join(good, "cmyk.jpg"), "JPEG")
    for n in ("photo ü rgba.png", "grey photo.png", "deep16.png", "cmyk.jpg"):
        sizes["train/%s/%s" % (classes[1], n)] = (64, 96)
    full = cv2.imencode(".jpg", cv2.resize(_photos()[1], (120, 80)))[1].tobytes()
    c0 = os.path.join(root, "train", classes[0])
    with open(os.path.join(c0, "cut photo é.JPEG"), "wb") as f:
        f.write(full[:len(full) * 2 // 3])  # a real photograph cut off: cv2.imread still decodes it
    with open(os.path.join(c0, "truncated.JPEG"), "wb") as f:
        f.write(b"\xff\xd8\xff\xe0" + b"\0" * 40)  # JPEG magic, no image
    open(os.path.join(c0, "empty.jpg"), "wb").close()
    with open(os.path.join(root, "train", classes[2], "fake.jpg"), "w") as f:
        f.write("text with an image name")
    bad.update({classes[0] + "/cut photo é.JPEG": "truncated JPEG", classes[0] + "/truncated.JPEG": "corrupt JPEG",
                classes[0] + "/empty.jpg": "empty file", classes[2] + "/fake.jpg": "not a JPEG or PNG"})
    with open(os.path.join(root, "train", classes[1], "README.txt"), "w") as f:
        f.write("not an image")
    os.makedirs(os.path.join(root, "val"))
    labels = {}
    for k in range(6):
        name = "ILSVRC2012_val_%08d.JPEG" % (k + 1)
        cv2.imwrite(os.path.join(root, "val", name), rng.randint(0, 256, (64, 48, 3)).astype(np.uint8))
        labels[name] = classes[k % 3]
        sizes["val/" + name] = (64, 48)
    name = "ILSVRC2012_val_00000007.JPEG"
    with open(os.path.join(root, "val", name), "wb") as f:
        f.write(full[:len(full) // 2])
    labels[name] = classes[1]
    bad["%s/%s" % (classes[1], name)] = "truncated JPEG"
    with open(os.path.join(root, "val_labels.txt"), "w") as f:
        for n, c in labels.items():
            f.write("%s %s\n" % (n, c))
    return classes, labels, sizes, bad


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    data = tmp_path_factory.mktemp("imagenet_src")
    return (data,) + make_image_folder(str(data), np.random.RandomState(3))


def test_imagenet_folder_to_fbn_and_gluon_records(image_folder, tmp_path):
    data, classes, val_labels, sizes, bad = image_folder
    out = tmp_path / "out"
    res = run_tool("prepare_imagenet.py", data, "--out", out, "--val-labels", data / "val_labels.txt",
                   "--threads", 2)
    assert res.returncode == 0, res.stderr
    assert "13 images packed of 17 found" in res.stdout and "4 corrupt, 1 non-image files" in res.stdout
    assert "6 images packed of 7 found" in res.stdout and "1 corrupt, 0 non-image files" in res.stdout
    assert "labels 0..2 (3 of 4 classes)" in res.stdout
    # every skipped file is listed by path with its reason
    for rel, why in bad.items():
        assert "      %s: %s" % (rel, why) in res.stdout, (rel, res.stdout)
    assert "      %s/README.txt" % classes[1] in res.stdout
    assert "1 class folders hold no readable image" in res.stderr and classes[3] in res.stderr
    info = json.load(open(str(out / "prepare_info.json")))
    assert info["inputs"]["train"]["images"] == 13 and info["inputs"]["val"]["images"] == 6
    train_bad = sorted(r for r in bad if not r.endswith("00000007.JPEG"))
    assert info["inputs"]["train"]["corrupt"] == train_bad
    assert info["inputs"]["val"]["corrupt"] == ["%s/ILSVRC2012_val_00000007.JPEG" % classes[1]]
    for split in ("train", "val"):
        for rel, why in info["inputs"][split]["corrupt_reasons"].items():
            assert why.startswith(bad[rel])
        assert info["inputs"][split]["labels"] == dict(min=0, max=2, num_classes=4, present=3)
    assert open(str(out / "synsets.txt")).read().split() == classes
    # the flat val/ was sorted by symlinks, DATA_ROOT untouched
    assert sorted(os.listdir(str(out / "val_by_class"))) == classes[:3]
    assert len([f for f in os.listdir(str(data / "val")) if f.endswith(".JPEG")]) == 7

    def source(rel):  # lists are relative to the common root of train/ and val_by_class/
        for key in sizes:
            if rel.endswith(key.split("/", 1)[1]):
                return key
        raise KeyError(rel)

    for name, short in (("train_480_q90", 480), ("train_256_q90", 256), ("val_256_q90", 256),
                        ("train", None), ("val", None)):
        lst = {i: (l, rel) for i, l, rel in read_lst(str(out / (name + ".lst")))}
        assert not [rel for _, rel in lst.values() if any(rel.endswith(b) for b in bad)]  # nothing broken packed
        recs = read_records(str(out / name))
        assert len(recs) == (13 if name.startswith("train") else 6)
        for h, img in recs:
            label, rel = lst[int(h.id)]
            key = source(rel)
            want = classes.index(key.split("/")[1]) if key.startswith("train") else classes.index(
                val_labels[key.split("/")[1]])
            assert h.label == label == want
            hh, ww = sizes[key]
            if short:  # im2rec: short side -> N, long side -> long * N // short
                exp = (short, ww * short // hh) if hh <= ww else (hh * short // ww, short)
                assert img.shape == exp + (3,), (name, key, img.shape)
            else:
                assert img.shape == (hh, ww, 3) and img.dtype == np.uint8, (name, key, img.shape)
        entry = info["outputs"][name]
        assert entry["labels"] == dict(min=0, max=2, num_classes=4, present=3)
        st = os.stat(str(out / (name + ".rec")))
        assert entry["file"] == dict(size=st.st_size, mtime_ns=st.st_mtime_ns)
        s = I.label_summary(str(out / (name + ".rec")))
        assert tuple(s) == (4, 0, 2) and s.source == "prepare_info.json"
    # gluon records hold the original file bytes (pass-through), RGBA/grey/CMYK/16-bit included
    r = mx.recordio.MXIndexedRecordIO(str(out / "train.idx"), str(out / "train.rec"), "r")
    lst = {i: rel for i, _, rel in read_lst(str(out / "train.lst"))}
    for k in r.keys:
        _, payload = mx.recordio.unpack(r.read_idx(k))
        assert payload == open(str(data / "train" / lst[k].split("train/", 1)[1]), "rb").read()
    r.close()
    it = mx.io.ImageRecordIter(path_imgrec=str(out / "val_256_q90.rec"), path_imgidx=str(out / "val_256_q90.idx"),
                               data_shape=(3, 224, 224), batch_size=6, preprocess_threads=1)
    assert it.next().data[0].shape == (6, 3, 224, 224)
    it = mx.io.ImageRecordIter(path_imgrec=str(out / "train.rec"), path_imgidx=str(out / "train.idx"),
                               data_shape=(3, 32, 32), resize=32, batch_size=13, preprocess_threads=1)
    assert it.next().data[0].shape == (13, 3, 32, 32)

    # re-run: nothing repacked; --formats fbn alone is also all present
    stamp = {f: os.stat(str(out / f)).st_mtime_ns for f in os.listdir(str(out)) if f.endswith(".rec")}
    assert prepare_imagenet.main([str(data), "--out", str(out), "--val-labels", str(data / "val_labels.txt"),
                                  "--formats", "fbn"]) == 0
    assert {f: os.stat(str(out / f)).st_mtime_ns for f in stamp} == stamp
    # a damaged record header is noticed on the re-run (the header walk), and --force rebuilds
    off = int(open(str(out / "train_256_q90.idx")).read().split()[3])
    with open(str(out / "train_256_q90.rec"), "r+b") as f:
        f.seek(off)
        f.write(b"\0\0\0\0")
    os.utime(str(out / "train_256_q90.rec"), ns=(stamp["train_256_q90.rec"], stamp["train_256_q90.rec"]))
    with pytest.raises(I.DataError, match="record 1 at byte %d is corrupt" % off):
        I.verify_recordio(str(out / "train_256_q90.rec"))
    settings = info["outputs"]["train_256_q90"]["settings"]
    assert not D.PrepInfo(str(out), "prepare_imagenet").done("train_256_q90", settings)


def test_imagenet_read_back_failure_names_record_and_source(image_folder, tmp_path, capsys, monkeypatch):
    """If a broken image reached im2rec (here: the image check switched off), the read-back check
    in the work folder stops the tool: one line naming the record and its source, exit 2, and no
    .rec moved into place."""
    data, classes, _, _, bad = image_folder
    out = tmp_path / "out"
    monkeypatch.setattr(D, "validate_images", lambda *a, **k: {})
    rc = prepare_imagenet.main([str(data), "--out", str(out), "--val-labels", str(data / "val_labels.txt"),
                                "--formats", "gluon", "--threads", "2"])
    err = capsys.readouterr().err.replace("\r", "\n")
    assert rc == 2
    line = [ln for ln in err.splitlines() if ln.startswith("error: ")]
    assert len(line) == 1 and "Traceback" not in err
    m = re.match(r"error: (\S+) record (\d+) at byte (\d+) \(id (\d+), source (.+?)\) does not decode: (.+)$",
                 line[0])
    assert m, line[0]
    assert m.group(1) == str(out / "train.rec") + ":"
    lst = {i: rel for i, _, rel in read_lst(str(out / "train.lst"))}
    src = m.group(5)  # relative to the common root of train/ and val_by_class/
    key = src.rsplit("train/", 1)[1]
    assert lst[int(m.group(4))] == src and key in bad
    assert m.group(6).startswith(bad[key])
    assert not [f for f in os.listdir(str(out)) if f.endswith((".rec", ".idx")) or f.startswith(".im2rec")]
    assert json.load(open(str(out / "prepare_info.json")))["outputs"] == {}


def test_sort_val_label_formats(tmp_path):
    classes = ["n01", "n02", "n03"]
    names = ["ILSVRC2012_val_%08d.JPEG" % (k + 1) for k in range(6)]
    truth = [classes[k % 3] for k in range(6)]

    def fresh(tag):
        d = tmp_path / tag / "val"
        d.mkdir(parents=True)
        for n in names:
            (d / n).write_bytes(b"x")
        return d

    def check(d, dest=None):
        dest = dest or d
        for n, c in zip(names, truth):
            assert os.path.exists(str(dest / c / n)), (n, c)

    # 'filename wnid' (names without extension also match), moved in place; one unlabelled image
    d = fresh("wnid")
    (tmp_path / "a.txt").write_text("".join("%s %s\n" % (os.path.splitext(n)[0], c)
                                            for n, c in list(zip(names, truth))[:5]))
    res = D.sort_val(str(d), str(tmp_path / "a.txt"))
    assert res["sorted"] == 5 and res["unlabelled"] == [names[5]]
    assert sorted(os.listdir(str(d))) == sorted(classes + [names[5]])
    # 0-based ids into the sorted class list (Caffe's val.txt), copied elsewhere
    d = fresh("ids")
    (tmp_path / "b.txt").write_text("".join("%s %d\n" % (n, classes.index(c)) for n, c in zip(names, truth)))
    D.sort_val(str(d), str(tmp_path / "b.txt"), dest_dir=str(tmp_path / "ids" / "sorted"), mode="copy",
               classes=classes)
    check(d, tmp_path / "ids" / "sorted")
    assert sorted(os.listdir(str(d))) == names  # copies leave the sources in place
    # ILSVRC ground truth (1-based IDs, sorted-name order) + synsets whose ID order is not sorted
    d = fresh("gt")
    id_order = ["n03", "n01", "n02"]  # ID 1 = n03, ...
    (tmp_path / "syn.txt").write_text("".join("%s some words\n" % w for w in id_order))
    (tmp_path / "gt.txt").write_text("".join("%d\n" % (id_order.index(c) + 1) for c in truth))
    with pytest.raises(D.DatasetError, match="--val-synsets"):
        D.sort_val(str(d), str(tmp_path / "gt.txt"))
    D.sort_val(str(d), str(tmp_path / "gt.txt"), synsets=D.load_synsets(str(tmp_path / "syn.txt")), mode="symlink")
    check(d)
    assert os.path.islink(str(d / truth[0] / names[0]))
    # Kaggle LOC_val_solution.csv
    d = fresh("csv")
    (tmp_path / "c.csv").write_text("ImageId,PredictionString\n" + "".join(
        "%s,%s 1 2 3 4 %s 5 6 7 8\n" % (os.path.splitext(n)[0], c, c) for n, c in zip(names, truth)))
    D.sort_val(str(d), str(tmp_path / "c.csv"), classes=classes)
    check(d)
    # labels naming a class that train/ lacks
    d = fresh("bad")
    (tmp_path / "bad.txt").write_text("%s n99\n" % names[0])
    with pytest.raises(D.DatasetError, match="n99"):
        D.sort_val(str(d), str(tmp_path / "bad.txt"), classes=classes)


def test_load_synsets_reads_devkit_meta_mat(tmp_path):
    scipy_io = pytest.importorskip("scipy.io")
    rec = np.zeros(3, dtype=[("ILSVRC2012_ID", "O"), ("WNID", "O"), ("words", "O"), ("num_children", "O")])
    rec[0], rec[1], rec[2] = (1, "n02119789", "kit fox", 0), (2, "n02100735", "setter", 0), (1001, "n00001", "x", 5)
    scipy_io.savemat(str(tmp_path / "meta.mat"), {"synsets": rec.reshape(-1, 1)})
    assert D.load_synsets(str(tmp_path / "meta.mat")) == {1: "n02119789", 2: "n02100735"}


def test_imagenet_error_paths(tmp_path, capsys):
    res = run_tool("prepare_imagenet.py", tmp_path / "nowhere", "--out", tmp_path / "o")
    assert res.returncode == 2
    assert "does not exist" in res.stderr and "train/<class>" in res.stderr and "Traceback" not in res.stderr
    (tmp_path / "d" / "train").mkdir(parents=True)
    (tmp_path / "d" / "val").mkdir()
    assert prepare_imagenet.main([str(tmp_path / "d"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "no class folders" in err and "empty" in err
    (tmp_path / "d" / "train" / "a").mkdir()
    (tmp_path / "d" / "train" / "a" / "x.txt").write_text("no image")
    cv2.imwrite(str(tmp_path / "d" / "val" / "v.jpg"), np.zeros((8, 8, 3), np.uint8))
    assert prepare_imagenet.main([str(tmp_path / "d"), "--out", str(tmp_path / "o")]) == 2
    assert "--val-labels" in capsys.readouterr().err  # flat val without labels
    os.remove(str(tmp_path / "d" / "val" / "v.jpg"))
    (tmp_path / "d" / "val" / "a").mkdir()
    cv2.imwrite(str(tmp_path / "d" / "val" / "a" / "v.jpg"), np.zeros((8, 8, 3), np.uint8))
    assert prepare_imagenet.main([str(tmp_path / "d"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "holds no images" in err and "a/x.txt" in err  # train/a holds only a .txt


# --------------------------------------------------------------------------- embedded digits
def test_digits_counts_balance_and_images(tmp_path):
    from sklearn.datasets import load_digits
    out = tmp_path / "digits"
    res = run_tool("prepare_digits.py", "--out", out)
    assert res.returncode == 0, res.stderr
    d = load_digits()
    per_class = np.bincount(d.target, minlength=10)
    got = {}
    for split in ("train", "test"):
        recs = read_records(str(out / split))
        got[split] = collections.Counter(int(h.label) for h, _ in recs)
        for h, img in recs:
            assert img.shape == (32, 32, 3) and img.dtype == np.uint8
            assert (img[:, :, 0] == img[:, :, 1]).all() and (img[:, :, 0] == img[:, :, 2]).all()
            assert int(h.label) == d.target[int(h.id)]
            small = cv2.resize(img[:, :, 0].astype(np.float64), (8, 8), interpolation=cv2.INTER_AREA)
            assert np.corrcoef(small.ravel(), d.images[int(h.id)].ravel())[0, 1] > 0.9
        ids = [int(h.id) for h, _ in recs]
        assert len(set(ids)) == len(ids)
    assert sum(got["train"].values()) + sum(got["test"].values()) == 1797
    assert sum(got["test"].values()) == 360
    for c in range(10):  # stratified: every class split 80/20 to within one image
        assert got["train"][c] + got["test"][c] == per_class[c]
        assert abs(got["test"][c] - 0.2 * per_class[c]) <= 1
    assert open(str(out / "labels.txt")).read().split() == [str(i) for i in range(10)]
    # the image folders load with gluon's ImageFolderDataset with the same labels
    ds = mx.gluon.data.vision.ImageFolderDataset(str(out / "images" / "test"))
    assert len(ds) == 360 and ds.synsets == [str(i) for i in range(10)]
    assert collections.Counter(int(l) for _, l in ds.items) == got["test"]
    # a re-run skips; another split seed is refused without --force
    stamp = os.stat(str(out / "train.rec")).st_mtime_ns
    assert prepare_digits.main(["--out", str(out)]) == 0
    assert os.stat(str(out / "train.rec")).st_mtime_ns == stamp
    assert prepare_digits.main(["--out", str(out), "--seed", "1"]) == 2
    # intensity map: 0 -> 0, 16 -> 255, 8 -> 128 (nearest keeps the 4x4 blocks exactly)
    x = prepare_digits.digits_to_images(np.array([[[0, 16] * 4, [8] * 8] * 4], np.float64), interp="nearest")
    assert x.shape == (1, 32, 32, 3) and set(np.unique(x).tolist()) == {0, 128, 255}
    assert (x[0, :4, :4] == 0).all() and (x[0, :4, 4:8] == 255).all() and (x[0, 4:8, :4] == 128).all()
