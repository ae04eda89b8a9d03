"""The published commands as data: every recipe resolves and its script's --dry-run runs without data and
writes nothing; the overrides (DATA_DIR, GPUS, BATCH_SIZE, EPOCHS, WORKERS) are applied in one place; the
generated tables of docs/reproduce.md are current; README, docs and ./run.sh help agree; the repository
cites nothing outside itself."""
import os
import re
import shlex
import subprocess
import sys

import pytest

from mxrepro.cli import python_cmd
from mxrepro.recipes import aff, blnet, fbn, runner

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAINS = {"cifar/train_cifar.py": lambda a: fbn.main("cifar", a), "imagenet/train_imagenet.py": lambda a: fbn.main(
    "imagenet", a), "cifar/train_aff_cifar.py": aff.main_cifar, "imagenet/train_aff_imagenet.py": aff.main_imagenet,
         "imagenet/train_blnet.py": blnet.main}
TRAIN = [n for n, r in runner.RECIPES.items() if not r.is_tool]


def test_every_paper_row_is_a_recipe():
    assert len(TRAIN) >= 30 and {r["paper"] for r in runner.RECIPES.values()} == {"fbn", "aff", "blnet"}
    for name in TRAIN:
        r = runner.RECIPES[name]
        assert r["script"] in MAINS and r["row"] and r["dataset"] and r["devices"] >= 1, name
        assert os.path.exists(os.path.join(ROOT, r["script"]))


@pytest.mark.parametrize("name", TRAIN)
def test_recipe_dry_run_without_data_writes_nothing(name, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    argv, lines = runner.resolve(name, env={"GPUS": ""}, extra=["--dry-run"])
    assert argv[1] == runner.RECIPES[name]["script"] and argv[-1] == "--dry-run"
    assert MAINS[argv[1]](argv[2:]) == 0
    out = capsys.readouterr().out
    assert "dry run: nothing written" in out and "global batch" in out and "LR:" in out
    assert os.listdir(tmp_path) == [], os.listdir(tmp_path)
    # the printed command pastes back (quoted empty --gpus; the interpreter that runs it, not a bare python)
    cmd = out.split("command: ", 1)[1].splitlines()[0]
    assert shlex.split(cmd)[:2] == [python_cmd(), argv[1]] and "--gpus ''" in cmd
    assert os.access(shlex.split(cmd)[0], os.X_OK) or python_cmd() == "python"


def test_overrides_are_applied_in_one_place_and_printed():
    env = dict(DATA_DIR="/data/in", BATCH_SIZE="512", EPOCHS="3", WORKERS="5")
    argv, lines = runner.resolve("aff-imagenet-resnet50", env=env, gpus_visible=4)
    a = argv[2:]
    assert runner._get(a, "--gpus") == "0,1" and "--num-gpus" not in a            # the published 2 GPUs
    assert runner._get(a, "--batch-size") == "256"                               # 512 global over 2 devices
    assert runner._get(a, "--num-epochs") == "3" and runner._get(a, "-j") == "5" and runner._get(a, "--data-dir") == \
        "/data/in"
    assert runner._get(a, "--save-dir") == "runs/aff/aff-imagenet-resnet50"
    assert any("BATCH_SIZE=512" in l and "--lr stays the published one" in l for l in lines)
    # bL-Net: total batch; its script scales the LR (the rule is printed)
    argv, lines = runner.resolve("blnet-r50-a2b4", env=dict(GPUS="", BATCH_SIZE="64"))
    assert argv[2] == "data/imagenet" and runner._get(argv, "--batch-size") == "64"
    assert any("lr = --lr x 64 / 256" in l for l in lines)
    # on the CPU: float16 -> float32, data workers capped at the cores, the published global batch kept
    argv, lines = runner.resolve("aff-imagenet-resnet50", env={}, gpus_visible=0, cpus=2)
    assert runner._get(argv, "--dtype") == "float32" and runner._get(argv, "-j") == "2"
    assert runner._get(argv, "--gpus") == "" and runner._get(argv, "--batch-size") == "256"
    with pytest.raises(SystemExit, match="does not split"):
        runner.resolve("aff-imagenet-resnet50", env=dict(GPUS="0,1,2", BATCH_SIZE="256"))
    # FBN: the published --data-dir of the original command is replaced, its other flags kept
    argv, _ = runner.resolve("fbn-c100-resnet164-fbn", env=dict(GPUS=""))
    assert "/mnt/hdd/lytton/mx_data/cifar-100" not in argv and runner._get(argv, "--data-dir") == "data/cifar100"
    assert runner._get(argv, "--fmconv-slowstart") == "3" and runner._get(argv, "--output-dir") == \
        "runs/fbn/fbn-c100-resnet164-fbn"


def test_generated_docs_are_current_and_the_check_can_fail(tmp_path):
    text = open(runner.DOC).read()
    assert runner.render_docs(text) == text, "docs/reproduce.md is stale: python -m mxrepro.recipes.runner docs"
    broken = text.replace("./run.sh fbn-c100-resnet164-fbn`", "./run.sh fbn-c100-resnet164-fbnX`", 1)
    assert runner.render_docs(broken) == text != broken
    for name in TRAIN:
        assert "`./run.sh %s`" % name in text, name


def _help():
    r = subprocess.run(["bash", os.path.join(ROOT, "run.sh"), "help"], capture_output=True, text=True, timeout=120,
                       cwd=ROOT)
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_readme_docs_and_run_sh_help_agree():
    h = _help()
    listed = set(re.findall(r"^  ([a-z0-9][a-z0-9-]+) ", h, re.M))
    assert set(runner.RECIPES) <= listed and {"setup", "test", "demo", "help"} <= listed
    for var in runner.ENV_VARS:
        assert var in h, var
    docs = [os.path.join(ROOT, "README.md")] + [os.path.join(ROOT, "docs", f) for f in os.listdir(os.path.join(ROOT, "docs"))
                                                 if f.endswith(".md")]
    for path in docs:
        for name in re.findall(r"\./run\.sh ([a-z][a-z0-9-]*[a-z0-9])(?![\w*-])", open(path).read()):
            assert name in listed, "%s mentions ./run.sh %s, which run.sh does not have" % (os.path.basename(path), name)
    readme = open(os.path.join(ROOT, "README.md")).read()
    for var in runner.ENV_VARS:
        assert var in readme, "README does not mention %s" % var


def _tracked():
    out = subprocess.run(["git", "ls-files"], capture_output=True, text=True, cwd=ROOT)
    if out.returncode != 0:
        pytest.skip("not a git checkout")
    return [f for f in out.stdout.splitlines() if os.path.isfile(os.path.join(ROOT, f))]


def test_the_repository_cites_nothing_outside_itself():
    # (the patterns are split so that this file does not match itself)
    bad = re.compile(r"/wor" r"k/|/roo" r"t/|/hom" r"e/[a-z]|shared/" r"reference|\(iss" r"ue [A-Z]\)|\biss" r"ue [A-L]\b(?! ?#)|"
                     r"\biss" r"ue [A-L]'s")
    hits = []
    for f in _tracked():
        if f.endswith((".png", ".params", ".rec", ".idx", ".so")):
            continue
        try:
            text = open(os.path.join(ROOT, f), encoding="utf-8").read()
        except UnicodeDecodeError:
            continue
        for i, line in enumerate(text.splitlines(), 1):
            if bad.search(line):
                hits.append("%s:%d: %s" % (f, i, line.strip()[:100]))
    assert not hits, "\n".join(hits[:20])


def test_cited_reference_sections_exist():
    cited = {}
    for f in _tracked():
        if f.endswith((".py", ".sh", ".cc", ".cu", ".h", ".md")):
            for doc, sec in re.findall(r"docs/reference/([a-z]+)\.md §([0-9]+(?:\.[0-9]+)?)", open(os.path.join(ROOT, f)).read()):
                cited.setdefault(doc, set()).add(sec)
    assert cited.get("fbn") and cited.get("aff")
    for doc, secs in cited.items():
        text = open(os.path.join(ROOT, "docs", "reference", doc + ".md")).read()
        have = set(re.findall(r"^#+ ([0-9]+(?:\.[0-9]+)?)[. ]", text, re.M))
        # a section may number its items instead ("Item N is cited as §0.N": a list item "N." in section 0)
        for head, body in re.findall(r"^## ([0-9]+)\. .*?\n(.*?)(?=^## |\Z)", text, re.M | re.S):
            if "is cited as §%s." % head in body:
                have |= {"%s.%s" % (head, n) for n in re.findall(r"^([0-9]+)\. ", body, re.M)}
        missing = sorted(s for s in secs if s not in have)
        assert not missing, "docs/reference/%s.md has no section %s" % (doc, missing)


@pytest.mark.parametrize("make", [lambda: fbn.build_parser("cifar"), lambda: fbn.build_parser("imagenet"),
                                  aff.cifar_parser, aff.imagenet_parser, blnet.build_parser],
                         ids=["fbn-cifar", "fbn-imagenet", "aff-cifar", "aff-imagenet", "blnet"])
def test_help_states_each_default_once(make):
    p = make()
    fmt = p._get_formatter()
    for a in p._actions:
        if a.help:
            text = fmt._expand_help(a) if hasattr(fmt, "_expand_help") else a.help
            assert text.lower().count("default") <= 1, (a.option_strings, text)


def test_eval_subcommands_need_weights_and_name_the_protocol_data():
    evals = [n for n, r in runner.RECIPES.items() if r.get("kind") == "eval"]
    assert {"blnet-eval-r50", "blnet-eval-serx101", "aff-eval-r50"} <= set(evals)
    with pytest.raises(SystemExit, match="WEIGHTS"):
        runner.resolve("blnet-eval-r50", env={})
    argv, lines = runner.resolve("blnet-eval-r50", env=dict(WEIGHTS="w.pth", DATA_DIR="/nowhere", GPUS=""))
    assert argv[1] == "tools/evaluate.py" and runner._get(argv, "--model") == "bl_resnet50"
    assert runner._get(argv, "--weights") == "w.pth" and runner._get(argv, "--data") == "/nowhere/val.rec"
    assert runner._get(argv, "--json") == "runs/eval/blnet-eval-r50.json"
    assert "22.41" in runner.RECIPES["blnet-eval-r50"].summary()


def test_readme_layout_matches_the_tree():
    readme = open(os.path.join(ROOT, "README.md")).read()
    block = readme.split("## Layout", 1)[1].split("```", 2)[1]
    named = set(re.findall(r"([A-Za-z_][A-Za-z0-9_]*\.py|[a-z_]+/)", block))
    pkg = os.path.join(ROOT, "mxrepro")
    modules = {f for f in os.listdir(pkg) if f.endswith(".py") and f != "__init__.py"}
    subpackages = {d + "/" for d in os.listdir(pkg) if os.path.isfile(os.path.join(pkg, d, "__init__.py"))}
    missing = sorted((modules | subpackages) - named)
    assert not missing, "README's layout omits %s" % missing
    for sub in subpackages:
        for f in os.listdir(os.path.join(pkg, sub)):
            if f.endswith(".py") and f != "__init__.py" and not f.endswith("_table.py"):
                assert f in named, "README's layout omits mxrepro/%s%s" % (sub, f)
    for top in ("operators/", "symbols/", "cifar/", "imagenet/", "tools/", "tests/", "docs/"):
        assert top in named and os.path.isdir(os.path.join(ROOT, top)), top
    docs = {f for f in os.listdir(os.path.join(ROOT, "docs")) if f.endswith(".md")}
    assert not docs - set(re.findall(r"[a-z_]+\.md", block)), "README's layout omits docs %s" % sorted(
        docs - set(re.findall(r"[a-z_]+\.md", block)))
