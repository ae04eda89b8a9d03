"""Full, read-only and failing disks, through the same command lines as test_guarantees.py (FAMILIES):

* an unwritable output folder, log file or plot folder (AFF) is refused before the first step: one line
  naming the flag and the path, exit status 2, nothing written;
* a disk already full at the start is refused by the free-space check (one line with the numbers, exit 2);
* a disk that fills up during the run stops it with one line (exit status 3), no traceback and no
  ``Logging error``, and the last complete checkpoint loads; the same command resumes once there is space;
* tools/prepare_digits.py on a read-only folder, a full disk and with ``--size 0``: one line, nothing left.

The real-disk cases mount a small tmpfs (root only); where mounting is not permitted they are skipped
with the reason and the injected variants (OSError ENOSPC raised in-process) still run.
"""
import errno
import os
import re
import subprocess
from pathlib import Path

import mxnet as mx
import pytest

from mxrepro.cli import EXIT_CODES, run_main
from mxrepro.engine import disk
from mxrepro.engine.checkpoint import Checkpointer
from test_guarantees import FAMILIES, ROOT

LOG_FLAG = {"fbn": "--log-file", "aff": "--logging-file"}   # bL-Net's log always lives in --save-dir
SHORT = {"aff": ["--max-batches", "2"]}                          # FBN has no such flag; bL-Net's argv has it
# a full bL-ResNet-50 run costs about a minute: kept out of the default suite (FBN and AFF cover the code)
SLOW = [pytest.param(n, marks=pytest.mark.slow) if n == "blnet" else n for n in sorted(FAMILIES)]


def _mount(path, opts):
    """Mount a tmpfs on ``path``; the reason when that is not permitted, else None."""
    os.makedirs(path, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(path)], capture_output=True, text=True)
    return (r.stderr.strip() or "not permitted") if r.returncode else None


@pytest.fixture
def tmpfs(tmp_path):
    """mount(size, ro=False) -> a fresh tmpfs folder, unmounted at the end."""
    mounted = []

    def mount(size="3m", ro=False):
        d = tmp_path / ("fs%d" % len(mounted))
        why = _mount(d, "size=%s,mode=0755%s" % (size, ",ro" if ro else ""))
        if why:
            pytest.skip("cannot mount a tmpfs here (%s); the injected-ENOSPC tests cover this case" % why)
        mounted.append(d)
        return d
    yield mount
    for d in mounted:
        subprocess.run(["umount", "-l", str(d)], capture_output=True)


@pytest.fixture
def readonly(tmp_path):
    """A folder nobody may write to: a read-only tmpfs for root (a folder under /proc where mounting is
    not permitted), a mode 0555 folder for anyone else."""
    if os.geteuid() == 0:
        d = tmp_path / "ro"
        if _mount(d, "size=1m,ro"):
            yield Path("/proc/mxrepro-readonly-test")
        else:
            yield d
            subprocess.run(["umount", "-l", str(d)], capture_output=True)
        return
    d = tmp_path / "ro"
    d.mkdir()
    d.chmod(0o555)
    yield d
    d.chmod(0o755)


def _fill(folder):
    """Fill the file system of ``folder`` to the last byte."""
    with open(os.path.join(str(folder), "filler"), "wb") as f:
        block = b"\0" * (1 << 16)
        try:
            while True:
                f.write(block)
                f.flush()
        except OSError as e:
            assert e.errno == errno.ENOSPC
    for n in (4096, 512, 1):
        try:
            with open(os.path.join(str(folder), "filler-%d" % n), "wb") as f:
                while True:
                    f.write(b"\0" * n)
                    f.flush()
        except OSError:
            pass


def _empty(folder):
    return not os.path.exists(str(folder)) or os.listdir(str(folder)) == []


def _main(fam, argv, capsys):
    """run_main in this process: (exit status, stdout, stderr)."""
    with pytest.raises(SystemExit) as e:
        run_main(fam.main, argv)
    out, err = capsys.readouterr()
    return e.value.code, out, err


def _one_line(err):
    lines = [l for l in err.strip().splitlines() if l.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in err and "Logging error" not in err, err[-3000:]
    return lines[0]


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_unwritable_outputs_are_refused_before_the_first_step(name, digits_small, tmp_path, readonly, capsys):
    fam = FAMILIES[name]
    out = tmp_path / "out"
    cases = [(fam.out_flag, [], str(readonly / "run"), readonly / "run")]
    if name in LOG_FLAG:
        cases.append((LOG_FLAG[name], [LOG_FLAG[name], str(readonly / "train.log")], str(readonly / "train.log"), out))
    if name == "aff":
        cases.append(("--save-plot-dir", ["--save-plot-dir", str(readonly / "plots")], str(readonly / "plots"), out))
    for flag, extra, path, where in cases:
        argv = fam.args(digits_small, where, epochs=2, extra=extra)
        code, _, err = _main(fam, argv, capsys)
        line = _one_line(err)
        assert code == EXIT_CODES["usage"] and flag in line and path in line and "not writable" in line, (flag, err)
        assert not out.exists() and _empty(readonly), (flag, "something was written")


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_full_disk_at_the_start_is_refused_by_the_free_space_check(name, digits_small, tmp_path, tmpfs, capsys):
    fam = FAMILIES[name]
    fs = tmpfs("3m")
    _fill(fs)
    code, _, err = _main(fam, fam.args(digits_small, fs / "run", epochs=2), capsys)
    line = _one_line(err)
    assert code == EXIT_CODES["usage"], err
    assert re.search(r"not enough free space on %s for %s .*needs [\d.]+ MB \(\d+ checkpoints of [\d.]+ MB.*\), "
                     r"0\.\d MB free" % (re.escape(str(fs)), fam.out_flag), line), line
    assert sorted(os.listdir(str(fs)))[0].startswith("filler") and "run" not in os.listdir(str(fs))


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_injected_full_disk_at_the_start(name, digits_small, tmp_path, monkeypatch, capsys):
    fam = FAMILIES[name]
    monkeypatch.setattr(disk, "free_bytes", lambda path: 100 << 10)
    code, _, err = _main(fam, fam.args(digits_small, tmp_path / "run", epochs=2), capsys)
    assert code == 2 and "0.1 MB free" in _one_line(err) and not (tmp_path / "run").exists(), err


def _until_epoch1(cmd, fs):
    """Run ``cmd``; once epoch 1 is logged (its checkpoints are complete), shrink the tmpfs ``fs`` to what
    it holds, as when another program fills the disk. (exit status, stdout, stderr)."""
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                         env=dict(os.environ, PYTHONUNBUFFERED="1"))
    out = []
    for line in p.stdout:
        out.append(line)
        if "[Epoch 1/" in line:
            for _ in range(50):   # the run keeps writing: retry while it grows past the size just read
                st = os.statvfs(str(fs))
                kb = (st.f_blocks - st.f_bfree) * st.f_frsize // 1024
                shrink = ["mount", "-o", "remount,size=%dk" % max(kb, 4), str(fs)]
                if subprocess.run(shrink, capture_output=True).returncode == 0:
                    break
            else:
                pytest.fail("could not shrink the tmpfs")
            break
    rest, err = p.communicate(timeout=600)
    return p.returncode, "".join(out) + rest, err


@pytest.mark.parametrize("name", SLOW)
def test_disk_full_during_a_run_keeps_the_last_checkpoint(name, digits_small, tmp_path, tmpfs):
    fam = FAMILIES[name]
    fs = tmpfs("1g")   # tmpfs takes memory only for what is written
    run = fs / "run"
    cmd = fam.cmd(digits_small, run, epochs=2, extra=SHORT.get(name, []))
    code, out, err = _until_epoch1(cmd, fs)
    line = _one_line(err)
    assert code == EXIT_CODES["disk"], out[-2000:] + err[-2000:]
    ck = fam.checkpoints(run)
    assert re.search(r"^error: disk full while writing \S+ at epoch [12]: free space on %s and run the same command "
                     r"to resume; the last complete checkpoint is %s \(epoch 1\)$"
                     % (re.escape(str(fs)), re.escape(ck.path("latest", ".params"))), line), line
    assert err.count("note: cannot write the log file") <= 1, err
    meta = ck.read("latest")
    assert meta["epoch"] == 1 and mx.nd.load(meta["params_path"])
    assert not [f for f in os.listdir(ck.dir) if f.startswith(".tmp")]
    subprocess.run(["mount", "-o", "remount,size=1g", str(fs)], check=True)   # space again: the same command resumes
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert r.returncode == 0 and "1 epoch(s) done" in r.stdout, r.stdout[-2000:] + r.stderr[-2000:]


@pytest.mark.parametrize("name", SLOW)
def test_injected_full_disk_during_a_run(name, digits_small, tmp_path, monkeypatch, capsys):
    fam = FAMILIES[name]
    save = Checkpointer.save

    def full_at_epoch_2(self, tag, meta, *a, **kw):
        if meta["epoch"] == 2:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return save(self, tag, meta, *a, **kw)
    monkeypatch.setattr(Checkpointer, "save", full_at_epoch_2)
    code, _, err = _main(fam, fam.args(digits_small, tmp_path / "run", epochs=2, extra=SHORT.get(name, [])), capsys)
    line = _one_line(err)
    ck = fam.checkpoints(tmp_path / "run")
    assert code == 3 and "disk full while writing %s at epoch 2" % ck.path("latest", ".params") in line, err
    assert line.endswith("the last complete checkpoint is %s (epoch 1)" % ck.path("latest", ".params")), line
    assert mx.nd.load(ck.read("latest")["params_path"])


def test_log_file_fails_quietly(tmp_path, capsys):
    """A log file that cannot be written any more: one note on stderr, no traceback per line."""
    import logging
    from mxrepro.engine.loop import setup_logging
    setup_logging(str(tmp_path / "x.log"))
    h = [h for h in logging.getLogger().handlers if getattr(h, "baseFilename", "") == str(tmp_path / "x.log")][0]

    class Full:
        def write(self, s):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        flush = close = lambda self: None
    h.stream = Full()
    for i in range(5):
        logging.getLogger("mxrepro").info("line %d", i)
    err = capsys.readouterr().err
    assert err.count("note: cannot write the log file") == 1 and "Traceback" not in err and "Logging error" not in err
    setup_logging(None)


# -- tools/prepare_digits.py -------------------------------------------------------------------------
@pytest.fixture
def prepare_digits():
    from conftest import load_script
    return load_script("tools/prepare_digits.py")


def test_prepare_digits_refuses_bad_flags_and_unwritable_folders(prepare_digits, tmp_path, readonly, capsys):
    for argv, fragment in ((["--size", "0"], "--size 0 must be"), (["--threads", "0"], "--threads 0 must be"),
                           (["--test-ratio", "1"], "--test-ratio")):
        assert prepare_digits.main(["--out", str(tmp_path / "d")] + argv) == 2
        assert fragment in _one_line(capsys.readouterr().err) and not (tmp_path / "d").exists()
    assert prepare_digits.main(["--out", str(readonly / "d")]) == 2
    line = _one_line(capsys.readouterr().err)
    assert "--out %s is not writable" % (readonly / "d") in line and _empty(readonly), line


def test_prepare_digits_on_a_full_disk(prepare_digits, tmpfs, capsys):
    fs = tmpfs("3m")
    assert prepare_digits.main(["--out", str(fs / "d")]) == 2
    line = _one_line(capsys.readouterr().err)
    assert re.search(r"not enough free space on %s for --out .*needs about [\d.]+ MB, [\d.]+ MB free"
                     % re.escape(str(fs)), line) and os.listdir(str(fs)) == [], line


def test_prepare_digits_removes_a_failed_run(prepare_digits, tmp_path, monkeypatch, capsys):
    """ENOSPC while packing (after every PNG was written): one line, exit 3, nothing left; then a clean re-run."""
    from mxrepro import datasets as D
    out = tmp_path / "d"
    real = D.run_im2rec

    def full(*a, **kw):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(D, "run_im2rec", full)
    assert prepare_digits.main(["--out", str(out)]) == 3
    line = _one_line(capsys.readouterr().err)
    assert line.startswith("error: disk full while writing %s" % out) and "what this run wrote was removed" in line
    assert not out.exists()
    # an existing folder keeps what was there before; the partial images/ tree and new files go
    out.mkdir()
    (out / "keep.txt").write_text("x")
    assert prepare_digits.main(["--out", str(out)]) == 3
    assert sorted(os.listdir(str(out))) == ["keep.txt"], os.listdir(str(out))
    capsys.readouterr()


def test_a_failed_metrics_record_leaves_no_half_line(tmpfs):
    fs = tmpfs("8k")
    path = str(fs / "m.jsonl")
    disk.append_line(path, "x" * 4000 + "\n")
    with pytest.raises(disk.WriteFailed) as e:
        disk.append_line(path, "y" * 20000 + "\n")
    assert e.value.errno == errno.ENOSPC and e.value.path == path
    assert os.path.getsize(path) == 4001


def test_checkpoint_size_rule():
    from mxrepro.engine import OptimizerSpec
    head = 64 << 10
    assert disk.checkpoint_bytes(1000, OptimizerSpec("sgd", momentum=0.9)) == 1000 * 4 * 2 + head
    assert disk.checkpoint_bytes(1000, OptimizerSpec("sgd", momentum=0.0)) == 1000 * 4 + head
    assert disk.checkpoint_bytes(1000, OptimizerSpec("adam")) == 1000 * 4 * 3 + head
    assert disk.checkpoint_bytes(1000, OptimizerSpec("nag", multi_precision=True)) == 1000 * 4 * 3 + head


def test_a_dry_run_notes_too_little_space(digits_small, tmp_path, monkeypatch, capsys):
    fam = FAMILIES["aff"]
    monkeypatch.setattr(disk, "free_bytes", lambda path: 100 << 10)
    assert fam.main(fam.args(digits_small, tmp_path / "run", epochs=2, extra=["--dry-run"])) == 0
    out = capsys.readouterr().out
    assert "note: not enough free space on" in out and "dry run: nothing written" in out, out


def test_a_params_file_cut_short_by_a_full_disk_is_an_error(tmpfs):
    """MXNet's writer loses the buffered tail of a file on a full disk without an error: read back there."""
    fs = tmpfs("1m")
    path = str(fs / "a.params")
    mx.nd.save(path, {"a": mx.nd.ones(((1 << 20) // 4,))})   # 73 bytes too many for the file system
    with pytest.raises(OSError) as e:
        disk.verify_saved(path)
    assert e.value.errno == errno.ENOSPC
    os.remove(path)
    mx.nd.save(path, {"a": mx.nd.ones((1000,))})
    disk.verify_saved(path)


def test_prepare_imagenet_and_cifar_flags(tmp_path, readonly, capsys):
    from tools import prepare_cifar, prepare_imagenet
    out = tmp_path / "o"
    for argv, fragment in (([str(tmp_path), "--out", str(out), "--threads", "0"], "--threads 0 must be at least 1"),
                           ([str(tmp_path), "--out", str(out), "--gluon-quality", "0"], "--gluon-quality 0 must be"),
                           ([str(tmp_path), "--out", str(out), "--gluon-resize", "-1"], "--gluon-resize -1 must be")):
        assert prepare_imagenet.main(argv) == 2
        assert fragment in _one_line(capsys.readouterr().err) and not out.exists()
    assert prepare_cifar.main(["--dataset", "cifar10", "--out", str(readonly / "c")]) == 2
    assert "--out %s is not writable" % (readonly / "c") in _one_line(capsys.readouterr().err)
    assert _empty(readonly)
