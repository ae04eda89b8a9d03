"""Every reader of weights checks them: a checkpoint of each family (FBN symbol network, AFF, bL-Net, one epoch
of the real training scripts on the embedded digits) with 2000 bytes zero-filled inside a tensor (same size,
its ``.json`` beside it) is refused by tools/evaluate.py, by the training scripts' ``--pretrained`` and by
tools/convert_weights.py, each with one line naming the file and the recorded vs actual size and CRC-32, and
accepted with ``--ignore-checksum`` (with a warning); missing, garbage and truncated files give one line each,
and never a traceback; an output convert_weights cannot write is refused before converting."""
import os
import shutil
import subprocess
import sys
import zlib

import mxnet as mx
import numpy as np
import pytest

from mxrepro.ckptfile import ChecksumError, check_writable, mx_error_line, verify_checkpoint_file
from mxrepro.engine import UsageError
from test_guarantees import FAMILIES
from tools import convert_weights
from tools import evaluate as evaluate_tool

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# registry name and builder keywords of each family's training run, for convert_weights
CONVERT = {"aff": ["--model", "aff_cifar_resnet", "--kw", "blocks=1", "--kw", "channel_times=1"],
           "blnet": ["--family", "blnet", "--model", "bl_resnet50", "--kw", "alpha=4", "--kw", "classes=10"],
           "fbn": ["--model", "aff_cifar_resnet"]}  # a Module checkpoint: refused before any mapping


def _extra(name):
    return ["--fmconv-slowstart", "0"] if name == "fbn" else []


@pytest.fixture(scope="module")
def trained(digits_small, tmp_path_factory):
    """{family: its -best.params} after one epoch of the family's training script."""
    out = {}
    for name, fam in sorted(FAMILIES.items()):
        run = tmp_path_factory.mktemp("run_" + name)
        assert fam.main(fam.args(digits_small, run, epochs=1, extra=_extra(name))) == 0
        out[name] = fam.checkpoints(run).path("best", ".params")
    return out


def _crc(path):
    return zlib.crc32(open(path, "rb").read()) & 0xFFFFFFFF


def corrupt_copy(params, folder):
    """A copy of ``params`` (with its .json and any -symbol.json) in ``folder`` whose largest tensor has 2000
    bytes zero-filled in its middle: same size, so only the CRC tells."""
    os.makedirs(folder, exist_ok=True)
    base = os.path.splitext(params)[0]
    for f in (params, base + ".json", base.rsplit("-", 1)[0] + "-symbol.json"):
        if os.path.exists(f):
            shutil.copyfile(f, os.path.join(folder, os.path.basename(f)))  # a copy: the run's files may be links
    dst = os.path.join(folder, os.path.basename(params))
    raw = bytearray(open(dst, "rb").read())
    big = max(mx.nd.load(dst).values(), key=lambda a: a.size).asnumpy().tobytes()
    start = raw.find(big[:256]) + len(big) // 2 - 1000
    assert start > 0 and len(big) > 4000
    raw[start:start + 2000] = bytes(2000)
    size, crc = os.path.getsize(dst), _crc(dst)
    open(dst, "r+b").write(bytes(raw))
    assert os.path.getsize(dst) == size and _crc(dst) != crc
    return dst


def _one_line(text):
    lines = [l for l in text.strip().splitlines() if l.strip()]
    return len(lines) == 1 and "Traceback" not in text


# ------------------------------------------------------------------------------------------------
# the helper itself
# ------------------------------------------------------------------------------------------------
def test_verify_checkpoint_file_and_messages(tmp_path):
    p = tmp_path / "r-best.params"
    mx.nd.save(str(p), {"w": mx.nd.ones((64, 64))})
    assert verify_checkpoint_file(str(p)) is None                       # no description: not checked
    (tmp_path / "r-best.json").write_text('{"files": {"params": {"name": "r-best.params", "size": %d, "crc32": %d}}}'
                                          % (os.path.getsize(p), _crc(str(p))))
    assert verify_checkpoint_file(str(p))["verified"] is True
    raw = bytearray(p.read_bytes())
    raw[100:140] = bytes(40)
    p.write_bytes(bytes(raw))
    with pytest.raises(ChecksumError, match=r"r-best.params does not match .*\(recorded %d bytes" % len(raw)):
        verify_checkpoint_file(str(p))
    warned = []
    assert verify_checkpoint_file(str(p), verify=False, warn=warned.append)["verified"] is False
    assert len(warned) == 1 and "loading it anyway (--ignore-checksum)" in warned[0]
    (tmp_path / "r-best.json").write_text("{not json")
    with pytest.raises(ChecksumError, match="cannot be read"):
        verify_checkpoint_file(str(p))
    # MXNet's multi-line error text -> its meaningful line
    with pytest.raises(mx.base.MXNetError) as e:
        mx.nd.load(str(tmp_path / "nope.params"))
    assert "Traceback" in str(e.value) and mx_error_line(e.value).endswith("No such file or directory")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    for bad in (str(blocker / "out.params"), str(tmp_path)):
        with pytest.raises(ValueError, match="cannot be written|is a folder"):
            check_writable(bad)
    check_writable(str(tmp_path / "new" / "out.params"))


# ------------------------------------------------------------------------------------------------
# a corrupted checkpoint of each family
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_corrupted_checkpoint_refused_by_every_reader(name, trained, digits_small, tmp_path, capsys):
    fam = FAMILIES[name]
    bad = corrupt_copy(trained[name], str(tmp_path / "bad"))
    test_rec = os.path.join(digits_small, "test.rec")
    what = r"%s does not match its description .*recorded \d+ bytes, CRC-32 [0-9a-f]{8}; actual" % os.path.basename(bad)
    # evaluate
    eval_argv = ["--weights", bad, "--data", test_rec, "--workers", "0", "--no-progress", "--limit", "16"]
    with pytest.raises(UsageError, match=what) as e:
        evaluate_tool.main(eval_argv)
    assert "\n" not in str(e.value) and "--ignore-checksum" in str(e.value)
    capsys.readouterr()
    assert evaluate_tool.main(eval_argv + ["--ignore-checksum"]) == 0
    err = capsys.readouterr().err
    assert "warning: " in err and "loading it anyway" in err
    # --pretrained of the training script
    out = tmp_path / "out"
    with pytest.raises(UsageError, match="--pretrained .*" + what) as e:
        fam.main(fam.args(digits_small, out, epochs=1, extra=_extra(name) + ["--pretrained", bad]))
    assert "\n" not in str(e.value) and not out.exists()
    capsys.readouterr()
    assert fam.main(fam.args(digits_small, out, epochs=1,
                             extra=_extra(name) + ["--pretrained", bad, "--ignore-checksum"])) == 0
    assert "loading it anyway" in capsys.readouterr().err
    # convert_weights
    conv_out = str(tmp_path / "converted.params")
    assert convert_weights.main([bad, conv_out] + CONVERT[name]) == 2
    err = capsys.readouterr().err
    assert _one_line(err) and err.startswith("error: ") and os.path.basename(bad) in err and "CRC-32" in err, err
    assert not os.path.exists(conv_out)
    if name != "fbn":  # a Gluon checkpoint converts once the check is overridden
        assert convert_weights.main([bad, conv_out, "--ignore-checksum"] + CONVERT[name]) == 0
        assert "loading it anyway" in capsys.readouterr().err and os.path.exists(conv_out)


def test_command_lines_exit_2_with_one_line(trained, digits_small, tmp_path):
    """The real scripts: status 2, one line on stderr, no traceback (a corrupted AFF checkpoint)."""
    bad = corrupt_copy(trained["aff"], str(tmp_path / "bad"))
    fam = FAMILIES["aff"]
    cmds = [[os.path.join(ROOT, "tools", "evaluate.py"), "--weights", bad, "--data",
             os.path.join(digits_small, "test.rec"), "--workers", "0"],
            [os.path.join(ROOT, "tools", "convert_weights.py"), bad, str(tmp_path / "c.params")] + CONVERT["aff"],
            [os.path.join(ROOT, fam.script)] + fam.args(digits_small, tmp_path / "out", extra=["--pretrained", bad])]
    for cmd in cmds:
        r = subprocess.run([sys.executable] + cmd, capture_output=True, text=True, cwd=ROOT, timeout=300,
                           env=dict(os.environ, PYTHONPATH=ROOT))
        assert r.returncode == 2 and _one_line(r.stderr) and "does not match its description" in r.stderr, \
            (cmd[0], r.returncode, r.stderr[-2000:])


# ------------------------------------------------------------------------------------------------
# missing, garbage and truncated files (no description beside them: the format check)
# ------------------------------------------------------------------------------------------------
def test_missing_garbage_and_truncated_files(trained, digits_small, tmp_path, capsys):
    garbage = tmp_path / "garbage.params"
    garbage.write_bytes(np.random.RandomState(0).bytes(3000))
    cut_aff, cut_fbn = tmp_path / "cut_aff.params", tmp_path / "cut_fbn.params"
    cut_aff.write_bytes(open(trained["aff"], "rb").read()[:100000])
    cut_fbn.write_bytes(open(trained["fbn"], "rb").read()[:100000])
    cases = {"/nonexistent/x.params": "not found", str(garbage): "garbage.params", str(cut_aff): "cut_aff.params"}
    test_rec = os.path.join(digits_small, "test.rec")
    for path, fragment in cases.items():
        with pytest.raises(UsageError) as e:
            evaluate_tool.main(["--model", "aff_cifar_resnet", "--weights", path, "--data", test_rec, "--workers", "0"])
        assert fragment in str(e.value) and "\n" not in str(e.value) and "Traceback" not in str(e.value)
        assert convert_weights.main([path, str(tmp_path / "c.params")] + CONVERT["aff"]) == 2
        err = capsys.readouterr().err
        assert _one_line(err) and fragment in err, err
    with pytest.raises(UsageError, match="cut_fbn.params: not an MXNet parameter file") as e:
        evaluate_tool.main(["--model", "resnet-small-fmconv", "--kw", "res_module_num=1", "--weights", str(cut_fbn),
                            "--data", test_rec, "--workers", "0"])
    # --pretrained: a missing file before anything is built; garbage and truncated where the weights are read
    for name, cut in (("aff", cut_aff), ("fbn", cut_fbn)):
        fam = FAMILIES[name]
        for path, fragment in (("/nonexistent/x.params", "--pretrained weights not found"),
                               (str(garbage), "garbage.params"), (str(cut), os.path.basename(str(cut)))):
            with pytest.raises(UsageError) as e:
                fam.main(fam.args(digits_small, tmp_path / ("o_" + name), epochs=1,
                                  extra=_extra(name) + ["--pretrained", path]))
            msg = str(e.value)
            assert fragment in msg and "\n" not in msg and "Traceback" not in msg, (name, path, msg)
    # an output convert_weights cannot write: refused before converting
    assert convert_weights.main([trained["aff"], str(garbage / "out.params")] + CONVERT["aff"]) == 2
    err = capsys.readouterr().err
    assert _one_line(err) and "cannot be written" in err, err
