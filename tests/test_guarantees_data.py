"""Every record checked, for each family script (FAMILIES of test_guarantees: FBN cifar/train_cifar.py, AFF
cifar/train_aff_cifar.py, bL-Net imagenet/train_blnet.py) on a few digits packed here:

* PNG payloads overwritten (record headers intact): refused before anything is written, exit status 2, one
  line naming the file, the record and its byte offset; ``--skip-bad-records`` trains without them and
  lists them; the second run reads the check from its cache (``(cached)`` in the check line);
* images smaller than the crop: refused naming the record, the size and the flag; larger than a CIFAR
  recipe expects: one warning line with the sizes (the ImageNet recipe resizes: no warning);
* a file that breaks after its check (between the check and the first batch) stops training with one
  DataError naming the record.
"""
import os
import subprocess
import sys

import mxnet as mx
import numpy as np
import pytest

from conftest import write_digits
from mxrepro import data as D
from mxrepro.engine import DataError
from test_guarantees import FAMILIES

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
N_TRAIN, N_TEST = 96, 32


def make_data(folder, size=32):
    """96 training and 32 test digits of ``size`` px: train/test.rec, val.rec/.idx linked to test."""
    os.makedirs(folder, exist_ok=True)
    order = np.random.RandomState(2).permutation(1797)
    write_digits(folder, {"train": order[:N_TRAIN], "test": order[N_TRAIN:N_TRAIN + N_TEST]}, size=size)
    for ext in (".rec", ".idx"):
        os.symlink(os.path.join(folder, "test" + ext), os.path.join(folder, "val" + ext))
    return folder


def offsets(rec):
    r = mx.recordio.MXIndexedRecordIO(rec[:-4] + ".idx", rec, "r")
    out = [int(r.idx[k]) for k in r.keys]
    r.close()
    return out


def corrupt(rec, records):
    """Overwrite the inside of the PNG payload of ``records`` (record headers and PNG signature intact)."""
    offs = offsets(rec) + [os.path.getsize(rec)]
    b = bytearray(open(rec, "rb").read())
    for k in records:
        start, end = offs[k] + 8 + 24 + 40, offs[k + 1] - 20
        b[start:end] = b"\x55" * (end - start)
    with open(rec, "wb") as f:
        f.write(bytes(b))


def args(fam, data, out, extra=()):
    a = fam.args(data, out, epochs=1, extra=list(extra))
    return a + ["--fmconv-slowstart", "0"] if fam.name == "fbn" else a


def run_script(fam, data, out, extra=()):
    return subprocess.run([sys.executable, os.path.join(ROOT, fam.script)] + args(fam, data, out, extra),
                          capture_output=True, text=True, timeout=600, cwd=ROOT,
                          env=dict(os.environ, PYTHONUNBUFFERED="1"))


def check_lines(text):
    return [ln for ln in text.splitlines() if ln.startswith("data check: ")]


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_corrupt_payloads_refused_then_skipped_from_the_cache(name, tmp_path, capsys):
    fam = FAMILIES[name]
    data = make_data(str(tmp_path / "data"))
    rec = os.path.join(data, "train.rec")
    corrupt(rec, [7, 50])
    out = tmp_path / "out"
    r = run_script(fam, data, out)
    err = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(err) == 1, r.stderr[-3000:]
    assert err[0].startswith("error: %s: record 7 at byte %d does not decode" % (rec, offsets(rec)[7])), err
    assert "2 records fail: 7, 50" in err[0] and "--skip-bad-records" in err[0], err
    assert not out.exists()
    assert os.path.isfile(rec + ".check.json")
    # the same data with the flag, in process: trains on the other records, lists the skipped ones, and the
    # check comes from the cache the refused run wrote (no second decode)
    assert fam.main(args(fam, data, out, ["--skip-bad-records"])) == 0
    lines = check_lines(capsys.readouterr().out)
    train = [ln for ln in lines if ln.startswith("data check: train.rec:")]
    assert len(train) == 1 and "(cached)" in train[0], lines
    assert "%d records checked, 2 do not decode" % N_TRAIN in train[0], train
    assert train[0].endswith("skipping 2 records (--skip-bad-records): 7, 50"), train
    logs = [os.path.join(d, f) for d, _, fs in os.walk(str(out)) for f in fs if f.endswith(".log")]
    assert len(logs) == 1 and train[0] in open(logs[0]).read(), logs  # the run's log lists them too


def test_skipped_records_are_not_read(tmp_path):
    """The ImageRecordIter reads the copy without the skipped records: every other label once, in order."""
    data = make_data(str(tmp_path / "data"))
    rec = os.path.join(data, "train.rec")
    labels = [mx.recordio.unpack(mx.recordio.MXIndexedRecordIO(rec[:-4] + ".idx", rec, "r").read_idx(k))[0].label
              for k in range(N_TRAIN)]
    corrupt(rec, [0, 31, N_TRAIN - 1])
    tr, va = D.fbn_rec_kwargs("cifar", 32)
    spec = D.RecordIterData(rec, rec, tr, va, threads=1).set_check(skip_bad=True)  # validation reads it in order
    spec.verify()
    assert spec.num_train() == N_TRAIN - 3
    _, val = spec.loaders(1)
    got = [float(label.asnumpy()[0]) for _, label in val]
    assert got == [lab for k, lab in enumerate(labels) if k not in (0, 31, N_TRAIN - 1)]


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_images_smaller_than_the_crop_are_refused(name, tmp_path):
    fam = FAMILIES[name]
    data = make_data(str(tmp_path / "data"), size=16)
    out = tmp_path / "out"
    with pytest.raises(DataError) as e:
        fam.main(args(fam, data, out))
    msg = str(e.value)
    flag = {"fbn": " (--data-shape 32)", "aff": "", "blnet": " (--input-size 32)"}[name]
    assert msg.startswith("%s: record 0 is 16x16, smaller than the 32x32 crop%s (%d such records" % (
        os.path.join(data, "train.rec"), flag, N_TRAIN)), msg
    assert "\n" not in msg and "--skip-bad-records" in msg
    with pytest.raises(DataError, match="--skip-bad-records would leave none of its %d records" % N_TRAIN):
        fam.main(args(fam, data, out, ["--skip-bad-records"]))  # every image is too small
    assert not out.exists()


@pytest.mark.parametrize("name", ["fbn", "aff", pytest.param("blnet", marks=pytest.mark.slow)])
def test_images_larger_than_a_cifar_recipe_expects_warn_once(name, tmp_path, caplog):
    fam = FAMILIES[name]
    data = make_data(str(tmp_path / "data"), size=48)
    with caplog.at_level("WARNING", logger="mxrepro.data"):
        assert fam.main(args(fam, data, tmp_path / "out")) == 0
    warned = [r.getMessage() for r in caplog.records if r.name == "mxrepro.data" and "larger than" in r.getMessage()]
    if name == "blnet":  # the ImageNet recipe resizes: any size at least the crop is fine
        assert warned == []
    else:
        assert len(warned) == 1, warned
        assert "larger than the 32x32 expected (train.rec %d of %d, e.g. 48x48; test.rec %d of %d, e.g. 48x48)" % (
            N_TRAIN, N_TRAIN, N_TEST, N_TEST) in warned[0], warned


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_a_file_broken_after_its_check_stops_training(name, tmp_path, monkeypatch):
    fam = FAMILIES[name]
    data = make_data(str(tmp_path / "data"))
    rec = os.path.join(data, "train.rec")
    for cls in (D.RecordIterData, D.DatasetData):  # break the file between the check and the first batch
        def loaders(self, *a, _orig=cls.loaders, **k):
            got = _orig(self, *a, **k)
            corrupt(rec, [5])
            return got
        monkeypatch.setattr(cls, "loaders", loaders)
    with pytest.raises(DataError) as e:
        fam.main(args(fam, data, tmp_path / "out"))
    msg = str(e.value)
    assert msg.startswith("%s: record 5 at byte %d does not decode" % (rec, offsets(rec)[5])), msg
    assert "after its check (during training)" in msg and "\n" not in msg


def test_an_mxnet_error_names_the_record_by_decoding_again(tmp_path):
    """A payload broken under an unchanged size and mtime: ImageRecordIter (no padding) raises an MXNetError that
    names no record; the loader decodes the file again and names it."""
    data = make_data(str(tmp_path / "data"))
    rec = os.path.join(data, "test.rec")
    tr, va = D.fbn_rec_kwargs("cifar", 32)
    spec = D.RecordIterData(os.path.join(data, "train.rec"), rec, tr, va, threads=1)
    spec.verify()
    st = os.stat(rec)
    corrupt(rec, [9])
    os.utime(rec, ns=(st.st_atime_ns, st.st_mtime_ns))
    _, val = spec.loaders(8)
    with pytest.raises(DataError) as e:
        list(val)
    msg = str(e.value)
    assert msg.startswith("%s: record 9 at byte %d does not decode" % (rec, offsets(rec)[9])), msg
    assert "\n" not in msg and "during training" in msg
