"""Every flag checked before the first step, and a calm console, through the real scripts on the digits.

* each bad flag value: a UsageError of one line naming the flag (exit status 2 from the script), nothing
  written; a harmless oddity of a published command (a decay step past the last epoch): one warning line;
* a batch larger than a worker's share of the data: one line with the numbers, in --dry-run too, and a
  dry run reports the same batches per epoch as the real run;
* a short run's console: short plan lines, no config JSON (that is in the log file and config.json), no
  ImageRecordIter thread lines, batch lines with an ETA;
* ./run.sh: a mistyped subcommand names the nearest ones; --dry-run works for every subcommand it lists.
"""
import json
import os
import re
import subprocess
import sys

import pytest

from mxrepro.engine import UsageError
from mxrepro.recipes import aff, blnet, fbn, runner

from conftest import write_digits
from test_guarantees import FAMILIES, ROOT

AFF_IMAGENET = ["--data-dir", "{data}", "--use-rec", "--input-size", "32", "--gpus", "", "--num-classes", "10",
                "--warmup-epochs", "0", "-j", "1", "--model", "resnet", "--num-layer", "50"]


def _args(family, data, out, extra, epochs=2):
    if family == "aff-imagenet":
        return [a.format(data=data) for a in AFF_IMAGENET] + ["--save-dir", str(out), "--num-epochs", str(epochs)] + \
            list(extra)
    return FAMILIES[family].args(data, out, epochs=epochs, extra=extra)


MAINS = {"fbn": FAMILIES["fbn"].main, "aff": FAMILIES["aff"].main, "blnet": FAMILIES["blnet"].main,
         "aff-imagenet": aff.main_imagenet}


@pytest.fixture(scope="session")
def digits_20(tmp_path_factory):
    """20 training and 20 test digits (CIFAR layout)."""
    return write_digits(str(tmp_path_factory.mktemp("digits20")), {"train": range(20), "test": range(20, 40)})


# (family, extra argv, fragment of the message, use the 20-image set)
ERRORS = [
    ("aff", ["--batch-size", "5000"], "--batch-size: a batch of 5000 images per worker is larger than a worker's "
                                      "share of the training data (256 images / 1 worker = 256)", False),
    ("fbn", ["--batch-size", "32"], "(20 images / 1 worker = 20)", True),
    ("fbn", ["--batch-size", "5000"], "--batch-size: a batch of 5000", False),
    ("blnet", ["--batch-size", "5000", "--max-batches", "0"], "--batch-size: a batch of 5000", False),
    ("aff-imagenet", ["--batch-size", "5000"], "--batch-size: a batch of 5000", False),
    ("aff", ["--optimizer", "bogus"], "--optimizer bogus is not an MXNet optimizer", False),
    ("aff", ["--max-batches", "-1"], "--max-batches must be >= 0", False),
    ("blnet", ["--max-batches", "-1"], "--max-batches must be >= 0", False),
    ("fbn", ["--kv-store", "dist_sync"], "--kv-store dist_sync needs the distributed launcher", False),
    ("fbn", ["--kv-store", "bogus"], "--kv-store bogus is not a kvstore type", False),
    ("aff", ["--kv-store", "bogus"], "--kv-store bogus is not a kvstore type", False),
    ("aff", ["--kv-store", "nccl"], "--kv-store nccl needs GPUs", False),
    ("aff", ["--start-layer", "9"], "--start-layer 9 must be 1-4", False),
    ("aff-imagenet", ["--start-layer", "9"], "--start-layer 9 must be 1-5", False),
    ("aff", ["--lr-decay-period", "-2"], "--lr-decay-period must be >= 0", False),
    ("aff", ["--use-rec", "--use-images"], "--use-rec and --use-images", False),
    ("aff", ["--no-resume", "--resume-epoch", "3"], "--no-resume starts from scratch but --resume-epoch", False),
    ("aff", ["--log-interval", "0"], "--log-interval must be at least 1", False),
    ("blnet", ["--log-interval", "0"], "--log-interval must be at least 1", False),
    ("fbn", ["--frequent", "0"], "--frequent", False),
    ("aff", ["--lr-decay", "0"], "--lr-decay must be in (0, 1]", False),
    ("aff", ["--lr-decay-epoch", "0,3"], "--lr-decay-epoch 0: decay epochs must be positive", False),
    ("aff", ["--lr-mode", "cosine", "--target-lr", "1"], "--target-lr (1) must be in [0, --lr 0.05)", False),
    ("aff", ["--mixup", "--mixup-alpha", "0"], "--mixup-alpha must be > 0", False),
    ("aff", ["--mixup-off-epoch", "1"], "--mixup-off-epoch 1 has no effect without --mixup", False),
    ("aff", ["--channel-times", "0"], "--channel-times 0", False),
    ("aff", ["--resume-states", "x.states"], "--resume-states x.states needs --resume-params", False),
    ("aff", ["-j", "-1"], "-j/--num-data-workers -1", False),
    ("aff", ["--seed", "-1"], "--seed must be >= 0", False),
    ("aff-imagenet", ["--crop-ratio", "1.5"], "--crop-ratio 1.5", False),
    ("blnet", ["--crop-ratio", "0"], "--crop-ratio 0", False),
    ("blnet", ["--input-size", "16"], "--input-size 16", False),
    ("blnet", ["--color-jitter", "-1"], "--color-jitter -1", False),
    ("blnet", ["--optimizer", "bogus"], "--optimizer bogus", False),
    ("fbn", ["--data-nthreads", "0"], "--data-nthreads 0", False),
    ("fbn", ["--bn-mom", "1"], "--bn-mom 1", False),
    ("fbn", ["--retrain", "--pretrained", "x.params"], "--retrain continues a checkpoint and --pretrained", False),
    ("blnet", ["--pretrained", "x.params", "--resume", "2"], "--pretrained starts fresh from weights but --resume 2",
     False),
    ("fbn", ["--pad-fill", "300"], "--pad-fill 300 must be a pixel value in 0..255", False),
    ("aff", ["--pretrained", "x.params", "--resume-epoch", "2"], "--pretrained starts fresh from weights but "
                                                                 "--resume-epoch", False),
]


@pytest.mark.parametrize("family,extra,fragment,small", ERRORS,
                         ids=["%s%s" % (f, "".join(e)) for f, e, _, _ in ERRORS])
def test_bad_flag_is_one_line_naming_it_and_writes_nothing(family, extra, fragment, small, digits_small, digits_20,
                                                           tmp_path, monkeypatch):
    monkeypatch.delenv("DMLC_ROLE", raising=False)
    out = tmp_path / "out"
    with pytest.raises(UsageError) as e:
        MAINS[family](_args(family, digits_20 if small else digits_small, out, extra))
    msg = str(e.value)
    assert fragment in msg and "\n" not in msg, msg
    assert not out.exists(), "something was written"


def test_the_script_exits_2_with_one_line(digits_small, tmp_path):
    """--kv-store dist_sync without the launcher: a clear line, but exit status 1 before (the other cases raise
    UsageError above, which run_main turns into exit status 2, test_guarantees)."""
    for family, extra in (("fbn", ["--kv-store", "dist_sync"]),):
        cmd = [sys.executable, os.path.join(ROOT, FAMILIES[family].script)] + \
            _args(family, digits_small, tmp_path / "out", extra)
        env = {k: v for k, v in os.environ.items() if k != "DMLC_ROLE"}
        r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
        assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and extra[0] in r.stderr, r.stderr
        assert not (tmp_path / "out").exists()


def test_the_batch_check_also_holds_in_a_dry_run(digits_20, tmp_path, capsys):
    with pytest.raises(UsageError, match=r"\(20 images / 1 worker = 20\)"):
        fbn.main("cifar", _args("fbn", digits_20, tmp_path / "out", ["--batch-size", "32", "--dry-run"]))


@pytest.mark.parametrize("family,extra,warning", [
    ("fbn", ["--lr-step", "5,10"], "warning: --lr-step 5,10: epoch(s) 5,10 not before the last epoch (--num-epoches 2)"),
    ("aff", ["--lr-decay-epoch", "5,10"], "warning: --lr-decay-epoch 5,10: epoch(s) 5,10 not before the last epoch"),
    ("aff", ["--lr-decay-period", "2"], "warning: --lr-decay-period 2 is not before the last epoch"),
    ("fbn", ["--lr-step", "", "--model-load-epoch", "3"], "warning: --model-load-epoch has no effect without --retrain"),
    ("aff", ["--lr-decay-epoch", "1", "--mixup", "--mixup-off-epoch", "2"], "warning: --mixup-off-epoch 2 covers every epoch"),
    ("fbn", ["--lr-step", "", "--num-examples", "5000"], "warning: --num-examples 5000 is more than the 256 records"),
])
def test_harmless_oddities_are_one_warning_line(family, extra, warning, digits_small, tmp_path, capsys):
    assert MAINS[family](_args(family, digits_small, tmp_path / "out", extra + ["--dry-run"])) == 0
    out = capsys.readouterr().out
    assert out.count("warning:") == 1 and warning in out, out


def test_a_published_command_cut_short_warns_once(monkeypatch, tmp_path, capsys):
    monkeypatch.chdir(tmp_path)
    argv, _ = runner.resolve("fbn-c10-resnet164", env={"GPUS": "", "EPOCHS": "1"}, extra=["--dry-run"])
    assert fbn.main("cifar", argv[2:]) == 0
    out = capsys.readouterr().out
    assert out.count("warning:") == 1 and "--lr-step 100,150" in out and os.listdir(tmp_path) == []


def test_cosine_over_one_update_trains(digits_small, tmp_path, capsys):
    """--lr-mode cosine with exactly one update divided by zero (gluon-cv's curve over niters - 1)."""
    args = _args("aff", digits_small, tmp_path / "out", ["--lr-mode", "cosine", "--max-batches", "1"], epochs=1)
    assert aff.main_cifar(args + ["--dry-run"]) == 0
    assert "LR: cosine 0.05" in capsys.readouterr().out
    assert aff.main_cifar(args) == 0
    recs = [json.loads(l) for l in open(tmp_path / "out" / "digits-aff_cifar_resnet-8-c1-s1-metrics.jsonl")]
    assert [r["lr"] for r in recs if r["kind"] == "batch"] == [0.05]


@pytest.mark.parametrize("family,extra", [("aff", ["--batch-size", "24"]), ("blnet", ["--batch-size", "24"]),
                                          ("aff-imagenet", ["--batch-size", "24"])])
def test_dry_run_counts_the_batches_of_the_real_loader(family, extra, digits_small, tmp_path, capsys):
    extra = extra + (["--max-batches", "0"] if family == "blnet" else [])
    assert MAINS[family](_args(family, digits_small, tmp_path / "o", extra + ["--dry-run"])) == 0
    planned = int(re.search(r"epochs: \d+, (\d+) updates per epoch", capsys.readouterr().out).group(1))
    make = {"aff": aff.cifar_config, "blnet": blnet.config_from_args, "aff-imagenet": aff.imagenet_config}[family]
    parser = {"aff": aff.cifar_parser, "blnet": blnet.build_parser, "aff-imagenet": aff.imagenet_parser}[family]
    argv = _args(family, digits_small, tmp_path / "o", extra)
    cfg, data, _ = make(parser().parse_args(argv), argv)
    train, _ = data.loaders(24)
    assert planned == train.num_batches == 256 // 24


def test_console_is_calm_and_the_log_has_everything(digits_small, tmp_path, capsys):
    """A short FBN digits run (ImageRecordIter): the console has the plan lines and batch lines with an ETA,
    not the config JSON or MXNet's thread lines; the log and config.json have the config; the dry run's
    batches per epoch are the real run's (256 images, batch 24, the last batch padded: 11)."""
    argv = FAMILIES["fbn"].args(digits_small, tmp_path / "o", epochs=1)
    i = argv.index("--frequent")
    argv = argv[:i] + argv[i + 2:]                     # the default interval
    argv[argv.index("--batch-size") + 1] = "24"
    argv += ["--fmconv-slowstart", "0", "--lr-step", ""]
    cmd = [sys.executable, os.path.join(ROOT, "cifar/train_cifar.py")] + argv
    assert fbn.main("cifar", argv + ["--dry-run"]) == 0
    assert "epochs: 1, 11 updates per epoch" in capsys.readouterr().out
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    console = r.stdout + r.stderr
    assert "config: {" not in console and "ImageRecordIOParser2" not in console, console[-3000:]
    assert "11 iterations per epoch" in console
    assert re.search(r"Epoch\[1\] Batch\[\d+/11\] .* lr=\S+ eta epoch \d+:\d\d run \d+:\d\d", console), console[-3000:]
    assert max(len(l) for l in console.splitlines()) < 1000  # the config line alone was 2.4 KB
    log = open(tmp_path / "o" / "log" / "g.log").read()
    assert "config: {" in log
    conf = json.load(open(tmp_path / "o" / "config.json"))
    assert conf["prefix"] == "g" and conf["global_batch"] == 24
    recs = [json.loads(l) for l in open(tmp_path / "o" / "log" / "g-metrics.jsonl")]
    assert all("eta_run_s" in x for x in recs if x["kind"] == "batch") and any(x["kind"] == "batch" for x in recs)


# ------------------------------------------------------------------------------------------------ run.sh
def _run_sh(*args, env=None):
    venv = os.path.dirname(os.path.dirname(sys.executable))
    return subprocess.run(["bash", os.path.join(ROOT, "run.sh")] + list(args), capture_output=True, text=True,
                          cwd=ROOT, timeout=120, env=dict(os.environ, VENV=venv, **(env or {})))


def test_run_sh_typo_names_the_nearest_subcommands():
    r = _run_sh("fbn-c10-resnt164")
    assert r.returncode == 2 and r.stdout == "", r.stdout
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "fbn-c10-resnet164" in lines[0] and "./run.sh help" in lines[0], r.stderr
    r = _run_sh("setpu")
    assert r.returncode == 2 and "did you mean setup" in r.stderr


def test_run_sh_bad_environment_is_one_line(monkeypatch, capsys):
    for var, value in (("BATCH_SIZE", "abc"), ("EPOCHS", "0"), ("WORKERS", "-1")):
        monkeypatch.setenv(var, value)
        assert runner.main(["show", "fbn-c10-resnet164"]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and err.startswith("error: %s=" % var), err
        monkeypatch.delenv(var)


@pytest.mark.parametrize("name", [n for n, r in runner.RECIPES.items() if r.is_tool])
def test_dry_run_of_every_tool_subcommand(name, monkeypatch, capsys):
    monkeypatch.delenv("WEIGHTS", raising=False)
    assert runner.main(["run", name, "--dry-run"]) == 0
    err = capsys.readouterr().err
    assert "[run.sh] $ " in err and "nothing run, nothing written" in err


@pytest.mark.parametrize("sub", ["setup", "test", "demo"])
def test_dry_run_of_the_builtin_subcommands(sub):
    r = _run_sh(sub, "--dry-run")
    assert r.returncode == 0 and "dry run: nothing run, nothing written" in r.stderr, r.stderr
