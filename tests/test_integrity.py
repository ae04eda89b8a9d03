"""mxrepro.integrity: RecordIO header walk, .idx checks, image stream checks, label summaries,
skipping image datasets and MXNetError -> DataError.

Files are made here with mx.recordio (the writer im2rec uses) from real photographs
(sklearn's sample images) and then damaged byte by byte; expectations come from the RecordIO
layout (magic, cflag<<29|length, 4-byte padding) and from reading the files back with MXNet's own
readers, not from the module's code paths."""
import json
import logging
import os
import struct
import subprocess
import sys

import cv2
import mxnet as mx
import numpy as np
import pytest

from mxrepro import integrity as I

MAGIC = 0xCED7230A


@pytest.fixture(scope="module")
def photos():
    """Two real photographs (BGR), shrunk to keep the files small."""
    from sklearn.datasets import load_sample_images
    out = []
    for im in load_sample_images().images:
        out.append(cv2.resize(np.ascontiguousarray(im[:, :, ::-1]), (64, 43), interpolation=cv2.INTER_AREA))
    return out


def jpeg(img, **kw):
    params = [cv2.IMWRITE_JPEG_QUALITY, 90] + sum(([getattr(cv2, k), v] for k, v in kw.items()), [])
    ok, buf = cv2.imencode(".jpg", img, params)
    assert ok
    return buf.tobytes()


def png(img):
    ok, buf = cv2.imencode(".png", img)
    assert ok
    return buf.tobytes()


def write_rec(prefix, payloads, labels=None, ids=None, lst=True):
    """PREFIX.rec/.idx by mx.recordio (key = header id, as im2rec writes) and PREFIX.lst."""
    n = len(payloads)
    labels = [float(i % 3) for i in range(n)] if labels is None else labels
    ids = list(range(n)) if ids is None else ids
    w = mx.recordio.MXIndexedRecordIO(prefix + ".idx", prefix + ".rec", "w")
    for p, l, i in zip(payloads, labels, ids):
        w.write_idx(i, mx.recordio.pack(mx.recordio.IRHeader(0, l, i, 0), p))
    w.close()
    if lst:
        with open(prefix + ".lst", "w", encoding="utf-8") as f:
            for p, l, i in zip(payloads, labels, ids):
                f.write("%d\t%f\tcls %d/photo %d é.jpg\n" % (i, l, int(l), i))
    return prefix + ".rec"


def offsets(idx):
    return [int(line.split()[1]) for line in open(idx)]


def records(prefix):
    """(header, payload) of every record via MXNet's own indexed reader."""
    r = mx.recordio.MXIndexedRecordIO(prefix + ".idx", prefix + ".rec", "r")
    out = [mx.recordio.unpack(r.read_idx(k)) for k in r.keys]
    r.close()
    return out


@pytest.fixture
def good_rec(tmp_path, photos):
    payloads = [jpeg(photos[i % 2]) if i % 3 else png(photos[i % 2]) for i in range(12)]
    return write_rec(str(tmp_path / "train"), payloads, labels=[float(i % 4) for i in range(12)])


def one_line(err):
    msg = str(err)
    assert "\n" not in msg and "Traceback" not in msg
    return msg


# --------------------------------------------------------------------------- image bytes
def test_image_problem_accepts_photos_in_every_colour_layout(photos, tmp_path):
    img = photos[0]
    good = {
        "baseline JPEG": jpeg(img), "progressive JPEG": jpeg(img, IMWRITE_JPEG_PROGRESSIVE=1),
        "PNG": png(img), "grey PNG": png(cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)),
        "grey JPEG": jpeg(cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)),
        "RGBA PNG": png(np.dstack([img, np.full(img.shape[:2], 128, np.uint8)])),
        "16-bit PNG": png(img.astype(np.uint16) * 257),
        "JPEG + appended data": jpeg(img) + b"trailer after the end-of-image marker",
    }
    pil = pytest.importorskip("PIL.Image")
    import io
    buf = io.BytesIO()
    pil.fromarray(img[:, :, ::-1]).convert("CMYK").save(buf, "JPEG")
    good["CMYK JPEG"] = buf.getvalue()
    assert good["CMYK JPEG"][:2] == b"\xff\xd8"
    for what, data in good.items():
        assert I.image_problem(data) is None, what
        dec, why = I.image_decode(data)
        assert why is None and dec.ndim == 3 and dec.shape[2] == 3 and dec.dtype == np.uint8, what


def test_image_problem_rejects_truncated_empty_and_non_images(photos, tmp_path):
    full = jpeg(photos[1])
    prog = jpeg(photos[1], IMWRITE_JPEG_PROGRESSIVE=1)
    for data in (full, prog):
        for cut in (1, 2, 50, len(data) // 2, len(data) - 200):
            why = I.image_problem(data[:len(data) - cut])
            assert why and why.startswith("truncated JPEG"), (cut, why)
    # the premise: OpenCV reading the truncated file from disk still returns an image
    path = str(tmp_path / "cut.jpg")
    open(path, "wb").write(full[:len(full) // 2])
    assert cv2.imread(path, cv2.IMREAD_COLOR) is not None
    assert I.file_problem(path).startswith("truncated JPEG")
    p = png(photos[0])
    assert I.image_problem(p[:-12]).startswith("truncated PNG")  # IEND cut off
    assert I.image_problem(p[:len(p) // 2]).startswith("truncated PNG")
    assert I.image_problem(b"") == "empty file (0 bytes)"
    assert "not a JPEG or PNG" in I.image_problem(b"just some text, named .jpg")
    assert "GIF" in I.image_problem(b"GIF89a\x01\x00\x01\x00")
    assert I.image_problem(b"\xff\xd8\xff\xe0" + b"\0" * 40)  # JPEG magic, no image


# --------------------------------------------------------------------------- verify_recordio
def test_verify_good_file_matches_mxnet_reader(good_rec):
    prefix = good_rec[:-4]
    before = sorted(os.listdir(os.path.dirname(good_rec)))
    s = I.verify_recordio(good_rec, sample_decode=100)
    got = records(prefix)
    assert s.records == len(got) == 12
    assert s.bytes == os.path.getsize(good_rec)
    labels = [float(h.label) for h, _ in got]
    assert (s.label_min, s.label_max, s.num_labels) == (min(labels), max(labels), len(set(labels)))
    assert s.idx == prefix + ".idx" and s.idx_used and not s.idx_rebuilt and s.sampled == 12
    assert sorted(os.listdir(os.path.dirname(good_rec))) == before  # nothing written
    scan = I.scan_recordio(good_rec)
    assert scan.starts.tolist() == offsets(prefix + ".idx")
    assert scan.ids.tolist() == [int(h.id) for h, _ in got]
    assert "12 records" in str(s) and "labels 0..3" in str(s)


def test_multi_part_record_and_extra_labels(tmp_path, photos):
    """A payload holding the magic at a 4-byte aligned offset is split into parts by the writer."""
    img = png(photos[0])
    pad = b"\0" * ((-24 - len(img)) % 4)
    tricky = img + pad + struct.pack("<I", MAGIC) + b"abcd" + struct.pack("<I", MAGIC) + b"xy"
    prefix = str(tmp_path / "m")
    w = mx.recordio.MXIndexedRecordIO(prefix + ".idx", prefix + ".rec", "w")
    w.write_idx(0, mx.recordio.pack(mx.recordio.IRHeader(0, 1.0, 0, 0), png(photos[1])))
    w.write_idx(1, mx.recordio.pack(mx.recordio.IRHeader(0, 2.0, 1, 0), tricky))
    w.write_idx(2, mx.recordio.pack(mx.recordio.IRHeader(0, np.array([5.0, 7.0], np.float32), 2, 0), img))
    w.close()
    raw = open(prefix + ".rec", "rb").read()
    off = offsets(prefix + ".idx")
    assert struct.unpack_from("<I", raw, off[1] + 4)[0] >> 29 == 1  # really a multi-part record
    s = I.verify_recordio(prefix + ".rec", sample_decode=-1)
    assert s.records == 3 and s.sampled == 3 and s.label_width == 2
    assert (s.label_min, s.label_max) == (1, 5)  # the first of the packed labels
    assert [float(np.ravel(h.label)[0]) for h, _ in records(prefix)] == [1.0, 2.0, 5.0]


def test_flipped_record_header_is_one_line_error_where_mxnet_aborts(good_rec, tmp_path):
    prefix = good_rec[:-4]
    off = offsets(prefix + ".idx")[7]
    with open(good_rec, "r+b") as f:
        f.seek(off)
        f.write(b"\x00")
    with pytest.raises(I.DataError) as e:
        I.verify_recordio(good_rec)
    msg = one_line(e.value)
    assert msg.startswith("%s: record 7 at byte %d is corrupt (bad magic 0xced72300)" % (good_rec, off)), msg
    assert "re-" in msg  # says what to do
    # the premise: MXNet's own iterator kills the process on this file
    code = ("import mxnet as mx\nit = mx.io.ImageRecordIter(path_imgrec=%r, data_shape=(3, 32, 32), batch_size=4, "
            "preprocess_threads=1, resize=32)\nfor b in it: pass\n" % good_rec)
    res = subprocess.run([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         timeout=120)
    assert res.returncode in (-6, 134), (res.returncode, res.stderr[-500:])
    assert "kMagic" in res.stderr


def test_truncated_rec(good_rec, tmp_path):
    prefix = good_rec[:-4]
    off = offsets(prefix + ".idx")
    size = os.path.getsize(good_rec)
    os.truncate(good_rec, size - 10)  # inside the last payload
    with pytest.raises(I.DataError) as e:
        I.verify_recordio(good_rec)
    assert one_line(e.value).startswith("%s: record 11 at byte %d is truncated" % (good_rec, off[11]))
    os.truncate(good_rec, off[11] + 5)  # inside the last header
    with pytest.raises(I.DataError, match=r"record 11 at byte %d is truncated \(5 bytes left" % off[11]):
        I.verify_recordio(good_rec, idx=False)
    os.truncate(good_rec, 0)
    with pytest.raises(I.DataError, match="empty file"):
        I.verify_recordio(good_rec)
    os.truncate(good_rec, off[11] + 5)
    # mx.recordio's own reader says only "file do not align by 4 bytes" or similar, without the record
    r = mx.recordio.MXRecordIO(good_rec, "r")
    with pytest.raises(mx.base.MXNetError):
        while r.read() is not None:
            pass
    r.close()


def test_missing_idx_counted_by_scan_and_repaired(good_rec):
    prefix = good_rec[:-4]
    original = open(prefix + ".idx").read()
    os.remove(prefix + ".idx")
    before = sorted(os.listdir(os.path.dirname(good_rec)))
    s = I.verify_recordio(good_rec)
    assert s.records == 12 and not s.idx_used and s.idx is None and not s.idx_rebuilt
    assert "no index" in str(s)
    assert sorted(os.listdir(os.path.dirname(good_rec))) == before  # cache-free: nothing written
    s = I.verify_recordio(good_rec, repair=True)
    assert s.idx_rebuilt and s.idx_used and s.idx == prefix + ".idx"
    assert open(prefix + ".idx").read() == original  # same keys (= ids) and offsets as the writer's
    assert len(records(prefix)) == 12
    assert not [f for f in os.listdir(os.path.dirname(good_rec)) if f.startswith(".tmp")]


def test_bad_idx_entries(good_rec):
    prefix = good_rec[:-4]
    idx = prefix + ".idx"
    lines = open(idx).read().splitlines()
    size = os.path.getsize(good_rec)

    def with_idx(new_lines, pattern):
        open(idx, "w").write("\n".join(new_lines) + "\n")
        with pytest.raises(I.DataError) as e:
            I.verify_recordio(good_rec)
        msg = one_line(e.value)
        assert msg.startswith(idx + ": ") and "stale" in msg, msg
        assert pattern in msg, msg
        return msg

    k, o = lines[3].split("\t")
    with_idx(lines[:3] + ["%s\t%d" % (k, size + 4096)] + lines[4:],
             "entry 3 (key %s) points at byte %d, outside %s (%d bytes)" % (k, size + 4096, good_rec, size))
    with_idx(lines[:3] + ["%s\t%d" % (k, int(o) + 8)] + lines[4:], "not the start of a record")
    with_idx(lines[:-1], "lists 11 records but %s holds 12" % good_rec)
    with_idx(lines[:3] + [lines[2]] + lines[4:], "appears 2 times")
    with_idx(lines[:3] + ["garbage"] + lines[4:], "line 4 is not 'key<TAB>offset'")
    s = I.verify_recordio(good_rec, repair=True)
    assert s.idx_rebuilt and open(idx).read().splitlines() == lines


def test_sampled_decode_names_record_and_source(tmp_path, photos):
    payloads = [jpeg(photos[i % 2]) for i in range(8)]
    payloads[5] = payloads[5][:len(payloads[5]) // 2]
    rec = write_rec(str(tmp_path / "val"), payloads, ids=[100 + i for i in range(8)])
    off = offsets(str(tmp_path / "val.idx"))[5]
    with pytest.raises(I.DataError) as e:
        I.verify_recordio(rec, sample_decode=-1)
    msg = one_line(e.value)
    assert msg.startswith("%s: record 5 at byte %d (id 105, source cls 2/photo 105 é.jpg in val.lst) does not "
                          "decode: truncated JPEG" % (rec, off)), msg
    assert I.verify_recordio(rec, sample_decode=0).records == 8  # structure alone is fine


# --------------------------------------------------------------------------- labels
def test_label_summary_prefers_unchanged_prepare_info(good_rec, tmp_path):
    d = os.path.dirname(good_rec)
    s = I.label_summary(good_rec)
    assert tuple(s) == (4, 0, 3) and s.source == "scan"
    st = os.stat(good_rec)
    info = {"tool": "prepare_imagenet", "outputs": {"train": {
        "labels": {"min": 0, "max": 41, "num_classes": 42, "present": 4},
        "file": {"size": st.st_size, "mtime_ns": st.st_mtime_ns}}}}
    json.dump(info, open(os.path.join(d, "prepare_info.json"), "w"))
    s = I.label_summary(good_rec)
    assert tuple(s) == (42, 0, 41) and s.source == "prepare_info.json"
    os.utime(good_rec, ns=(st.st_atime_ns, st.st_mtime_ns + 10 ** 9))  # changed since: scan again
    s = I.label_summary(good_rec)
    assert tuple(s) == (4, 0, 3) and s.source == "scan"
    # the hint now names the tool that made the folder
    with open(good_rec, "r+b") as f:
        f.write(b"\0\0\0\0")
    with pytest.raises(I.DataError, match="re-run tools/prepare_imagenet.py with --force"):
        I.label_summary(good_rec)
    # .lst and image folders
    assert tuple(I.label_summary(good_rec[:-4] + ".lst")) == (4, 0, 3)
    for c in ("b", "a", "c_empty"):
        os.makedirs(str(tmp_path / "imgs" / c))
    assert tuple(I.label_summary(str(tmp_path / "imgs"))) == (3, 0, 2)
    assert I.check_labels(str(tmp_path / "imgs"), 3).source == "folders"
    with pytest.raises(I.DataError, match=r"labels run 0\.\.2 but --num-classes is 2"):
        I.check_labels(str(tmp_path / "imgs"), 2)


# --------------------------------------------------------------------------- MXNet errors
def test_mxnet_errors_become_one_line_data_errors(tmp_path, photos):
    payloads = [jpeg(photos[0])] * 4
    payloads[2] = b""  # an empty image: OpenCV's assertion inside the iterator
    rec = write_rec(str(tmp_path / "e"), payloads, lst=False)
    with pytest.raises(mx.base.MXNetError):  # the premise
        mx.io.ImageRecordIter(path_imgrec=rec, data_shape=(3, 32, 32), batch_size=4, preprocess_threads=1,
                              resize=32)
    with pytest.raises(I.DataError) as e:
        I.mxnet_call(rec, mx.io.ImageRecordIter, path_imgrec=rec, data_shape=(3, 32, 32), batch_size=4,
                     preprocess_threads=1, resize=32)
    msg = one_line(e.value)
    assert msg.startswith(rec + ": MXNet failed reading it (an image in it is empty"), msg
    assert "--sample -1" in msg and isinstance(e.value.mxnet_error, mx.base.MXNetError)
    with pytest.raises(I.DataError, match="verify_recordio|does not decode"):
        I.verify_recordio(rec, sample_decode=-1)
    missing = str(tmp_path / "nothing.rec")
    with pytest.raises(I.DataError, match="nothing.rec: MXNet failed reading it \\(the file does not exist"):
        with I.mxnet_errors(missing):
            mx.io.ImageRecordIter(path_imgrec=missing, data_shape=(3, 8, 8), batch_size=1)
    # a guarded iterator passes batches through
    good = write_rec(str(tmp_path / "g"), [jpeg(photos[1])] * 4, lst=False)
    it = I.GuardedIter(mx.io.ImageRecordIter(path_imgrec=good, data_shape=(3, 32, 32), batch_size=2,
                                             preprocess_threads=1, resize=32), good)
    assert it.batch_size == 2 and sum(b.data[0].shape[0] for b in it) == 4
    it.reset()
    assert it.next().data[0].shape == (2, 3, 32, 32)


# --------------------------------------------------------------------------- skipping datasets
@pytest.fixture
def folder(tmp_path, photos):
    root = tmp_path / "train"
    for c in ("cats", "dogs ü"):
        (root / c).mkdir(parents=True)
        for i in range(10):
            cv2.imwrite(str(root / c / ("%d.jpg" % i)), photos[i % 2])
    (root / "cats" / "zero.jpg").write_bytes(b"")
    b = jpeg(photos[0])
    (root / "dogs ü" / "cut.jpg").write_bytes(b[:len(b) // 2])
    return str(root)


def test_plain_image_folder_dataset_fails_without_naming_the_file(folder):
    ds = mx.gluon.data.vision.ImageFolderDataset(folder)
    zero = [i for i, (p, _) in enumerate(ds.items) if p.endswith("zero.jpg")][0]
    with pytest.raises(mx.base.MXNetError) as e:
        ds[zero]
    assert "zero.jpg" not in str(e.value)


@pytest.mark.parametrize("num_workers", [0, 2])
def test_safe_image_folder_dataset_skips_and_counts(folder, num_workers, caplog):
    ds = I.SafeImageFolderDataset(folder, max_bad_fraction=0.1)
    plain = mx.gluon.data.vision.ImageFolderDataset(folder)
    assert ds.items == plain.items and ds.synsets == plain.synsets and len(ds) == 22
    loader = mx.gluon.data.DataLoader(ds, batch_size=4, num_workers=num_workers)
    with caplog.at_level(logging.WARNING, logger="mxrepro.integrity"):
        for epoch in range(2):
            ds.set_epoch(epoch)
            n, labels = 0, []
            for x, y in loader:
                assert x.shape[1:] == (43, 64, 3)
                n += x.shape[0]
                labels += y.asnumpy().tolist()
            assert n == 22  # bad items replaced by the next loadable one: constant batch sizes
            st = ds.stats()
            assert st["epoch"] == epoch and st["skipped"] == 2
            assert sorted(os.path.basename(p) for p in st["bad_files"]) == ["cut.jpg", "zero.jpg"]
    if num_workers == 0:  # worker processes log to their own stderr
        warned = [r.getMessage() for r in caplog.records]
        assert len(warned) == 2  # once per file, not per epoch
        assert any("zero.jpg: empty file" in m for m in warned)
        assert any("cut.jpg: truncated JPEG" in m for m in warned)
    # a decoded image equals the plain dataset's
    good = [i for i, (p, _) in enumerate(plain.items) if p.endswith("3.jpg")][0]
    np.testing.assert_array_equal(ds[good][0].asnumpy(), plain[good][0].asnumpy())
    assert ds[good][1] == plain[good][1]


@pytest.mark.parametrize("num_workers", [0, 2])
def test_safe_dataset_raises_past_the_allowed_fraction(folder, num_workers):
    ds = I.SafeImageFolderDataset(folder)  # default 1%: 2 of 22 is too many
    loader = mx.gluon.data.DataLoader(ds, batch_size=4, num_workers=num_workers)
    with pytest.raises(I.DataError) as e:
        for _ in loader:
            pass
    msg = one_line(e.value)
    assert msg.startswith(folder + ": 1 of 22 images (4.5%) failed to load, more than the 1% allowed"), msg
    assert "zero.jpg" in msg or "cut.jpg" in msg


def test_safe_dataset_wraps_any_dataset():
    class Flaky(mx.gluon.data.Dataset):
        def __len__(self):
            return 200

        def __getitem__(self, i):
            if i == 7:
                raise ValueError("cannot decode")
            return i

    ds = I.SafeDataset(Flaky(), name="flaky")
    assert [ds[i] for i in (6, 7, 8)] == [6, 8, 8] and ds.stats()["bad_files"] == ["item 7 of flaky"]


def test_command_line(good_rec, capsys):
    assert I.main([good_rec, good_rec[:-4] + ".lst"]) == 0
    assert "12 records" in capsys.readouterr().out
    with open(good_rec, "r+b") as f:
        f.seek(4)
        f.write(b"\xff\xff\xff\xff")
    assert I.main([good_rec]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: %s: record 0 at byte 0 is corrupt (record flag 7)" % good_rec)
    assert err.count("\n") == 1


# --------------------------------------------------------------------------- full decode check
@pytest.fixture
def mixed_rec(tmp_path, photos):
    """300 records of two sizes (JPEG 64x43 and PNG 20x30); records 0, 130 and 299 cut in half."""
    small = cv2.resize(photos[1], (20, 30))
    payloads = [jpeg(photos[i % 2]) if i % 4 else png(small) for i in range(300)]
    for k in (0, 130, 299):
        payloads[k] = payloads[k][:len(payloads[k]) // 2]
    return write_rec(str(tmp_path / "mixed"), payloads, lst=False)


def test_full_check_in_parallel_matches_one_process(mixed_rec):
    offs = offsets(mixed_rec[:-4] + ".idx")
    one = I.check_records(mixed_rec, mode="full", workers=1, use_cache=False)
    three = I.check_records(mixed_rec, mode="full", workers=3, use_cache=False)  # 64-record chunks over 3 processes
    for c in (one, three):
        assert c.full and c.decoded == 300 and c.bad_count == 3
        assert [(k, pos) for k, pos, _ in c.bad] == [(0, offs[0]), (130, offs[130]), (299, offs[299])]
        assert c.bad[0][2].startswith("truncated PNG") and c.bad[1][2].startswith("truncated JPEG")
    np.testing.assert_array_equal(one.sizes, three.sizes)
    heights = [h for h, _ in three.sizes.tolist()]
    assert heights[1] == 43 and heights[4] == 30 and heights[0] == heights[130] == 0
    assert three.size_range() == ((30, 20), (43, 64))
    small = three.too_small(40)
    assert [k for k, _, _ in small] == [k for k in range(300) if k % 4 == 0 and k not in (0,)]
    assert small[0] == (4, 30, 20)
    assert three.larger_than(32)[0] == 300 - 75 - 2  # the JPEGs that decode (64 wide)
    msg = I.bad_record_message(mixed_rec, three.bad, three.bad_count, "do this")
    assert msg == "%s: record 0 at byte 0 does not decode: %s (3 records fail: 0, 130, 299); do this" % (
        mixed_rec, three.bad[0][2])


def test_sample_mode_decodes_16_spread_records(mixed_rec):
    c = I.check_records(mixed_rec, mode="sample")
    assert not c.full and c.decoded == 16 and c.numbers[0] == 0 and c.numbers[-1] == 299
    assert [k for k, _, _ in c.bad] == [0, 299]  # 130 is not among the sampled records
    assert not os.path.exists(mixed_rec + ".check.json")  # only full checks are stored


def test_full_check_is_cached_until_the_file_changes(tmp_path, photos, monkeypatch):
    rec = write_rec(str(tmp_path / "c"), [jpeg(photos[i % 2]) for i in range(40)], lst=False)
    calls = []
    real = I.decode_all
    monkeypatch.setattr(I, "decode_all", lambda *a, **k: calls.append(1) or real(*a, **k))
    first = I.check_records(rec)
    assert not first.cached and first.cache_path == rec + ".check.json" and len(calls) == 1
    again = I.check_records(rec)
    assert again.cached and len(calls) == 1 and again.summary.records == 40
    np.testing.assert_array_equal(again.sizes, first.sizes)
    st = os.stat(rec)
    os.utime(rec, ns=(st.st_atime_ns, st.st_mtime_ns + 10 ** 9))  # same bytes, new mtime: checked again
    assert not I.check_records(rec).cached and len(calls) == 2
    with open(rec[:-4] + ".idx", "a") as f:  # the index changed too
        f.write("")
    os.utime(rec[:-4] + ".idx", ns=(st.st_atime_ns, st.st_mtime_ns + 2 * 10 ** 9))
    assert not I.check_records(rec).cached and len(calls) == 3


def test_cache_falls_back_to_the_user_cache_folder(tmp_path, photos, monkeypatch):
    rec = write_rec(str(tmp_path / "ro"), [png(photos[0])] * 5, lst=False)
    os.mkdir(rec + ".check.json")  # the place beside the data cannot take the file (as a read-only folder)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    c = I.check_records(rec)
    assert c.cache_path.startswith(str(tmp_path / "cache" / "mxrepro" / "data-check")) and os.path.isfile(c.cache_path)
    assert I.check_records(rec).cached


def test_record_dataset_names_a_record_broken_after_its_check(tmp_path, photos):
    rec = write_rec(str(tmp_path / "d"), [png(photos[i % 2]) for i in range(6)], lst=False)
    offs = offsets(rec[:-4] + ".idx")
    ds = I.RecordDataset(rec)
    assert ds[3][0].shape == (43, 64, 3)
    b = bytearray(open(rec, "rb").read())
    b[offs[3] + 8 + 24 + 40:offs[4] - 20] = b"\x55" * (offs[4] - 20 - offs[3] - 72)  # MXNet decodes garbage
    open(rec, "wb").write(bytes(b))
    with pytest.raises(I.DataError) as e:
        ds[3]
    assert one_line(e.value).startswith("%s: record 3 at byte %d does not decode during training (corrupt PNG"
                                        % (rec, offs[3]))
    ds.exclude([offs[3]])
    assert len(ds) == 5 and [float(ds[i][1]) for i in range(5)] == [0.0, 1.0, 2.0, 1.0, 2.0]


def test_bench_decode_prints_records_per_second(capsys):
    assert I.main(["--bench-decode", "png32:40", "--workers", "2"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [ln.split(":")[0] for ln in out] == ["png32", "png32"] and "40 records" in out[0]
    assert "1 process:" in out[0] and "2 processes:" in out[1] and out[1].endswith("records/s")
