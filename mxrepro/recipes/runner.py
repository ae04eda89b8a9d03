"""The published commands of the three papers (the tables in ``fbn_table``, ``aff_table``, ``blnet_table``)
as ``./run.sh`` subcommands, the ``./run.sh help`` list and the command tables of docs/reproduce.md.

    python -m mxrepro.recipes.runner help                 # every subcommand with the paper's number
    python -m mxrepro.recipes.runner show NAME            # the resolved command, without running it
    python -m mxrepro.recipes.runner run NAME [ARGS...]   # what ./run.sh NAME [ARGS...] does
    python -m mxrepro.recipes.runner docs [--check]       # regenerate (or check) docs/reproduce.md's tables

Overrides, applied here and nowhere else, and printed with the command:

* ``DATA_DIR``: the data folder (default: the row's ``data/...``);
* ``GPUS``: comma list, empty = CPU (default: the published number of GPUs when that many are visible,
  else every visible GPU, else the CPU; on the CPU float16 becomes float32 and data workers are capped at
  the core count);
* ``BATCH_SIZE``: the GLOBAL batch (samples per optimizer step over all devices), converted to the script's
  own flag (FBN and bL-Net: total over the devices; AFF: per device); without it the published global
  batch is kept whatever the device count; the LR rule is the recipe's own (FBN and AFF keep the published
  --lr; bL-Net scales it linearly with the global batch, printed by it);
* ``EPOCHS``: the number of epochs; ``WORKERS``: data-loading workers / decoding threads.

Each run writes only under ``runs/<paper>/<name>/``; a re-run of the same subcommand resumes there. Extra
arguments are appended (the scripts' argparse keeps the last value), e.g. ``--dry-run``, ``--reference-compat``.
This module imports no MXNet, so ``./run.sh help`` works before set-up.
"""
import os
import re
import shlex
import shutil
import subprocess
import sys

from . import aff_table, blnet_table, fbn_table

__all__ = ["RECIPES", "TABLES", "resolve", "help_lines", "docs_tables", "main"]

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TABLES = (fbn_table, aff_table, blnet_table)
ENV_VARS = ("DATA_DIR", "GPUS", "BATCH_SIZE", "EPOCHS", "WORKERS", "WEIGHTS")

# How each training script spells the overridable settings (one place).
SCRIPTS = {
    "cifar/train_cifar.py": dict(devices="--gpus", data="--data-dir", batch="--batch-size", batch_meaning="total",
                                 epochs="--num-epoches", workers="--data-nthreads", out="--output-dir", lr_rule="fixed"),
    "imagenet/train_imagenet.py": dict(devices="--gpus", data="--data-dir", batch="--batch-size", batch_meaning="total",
                                       epochs="--num-epoches", workers="--data-nthreads", out="--output-dir",
                                       lr_rule="fixed"),
    "cifar/train_aff_cifar.py": dict(devices="--gpus", data="--data-dir", batch="--batch-size",
                                     batch_meaning="per-device", epochs="--num-epochs", workers="-j", out="--save-dir",
                                     lr_rule="fixed"),
    "imagenet/train_aff_imagenet.py": dict(devices="--gpus", data="--data-dir", batch="--batch-size",
                                           batch_meaning="per-device", epochs="--num-epochs", workers="-j",
                                           out="--save-dir", lr_rule="fixed"),
    "imagenet/train_blnet.py": dict(devices="--gpus", data=None, batch="--batch-size", batch_meaning="total",
                                    epochs="--epochs", workers="-j", out="--save-dir", lr_rule="linear"),
}


class Recipe(dict):
    """A row of a table (``name, script, row, number, command, devices, ...``) plus its paper's key."""

    def number_text(self):
        """The published number(s) at the printed precision ('-' when the paper prints none)."""
        n = self.get("number")
        if n is None:
            return "-"
        return " / ".join("%.*f" % (self["digits"], x) for x in (n if isinstance(n, tuple) else (n,)))

    @property
    def is_tool(self):
        return self.get("kind") in ("tool", "eval")

    def summary(self):
        if self.get("kind") == "eval":
            ref = self.get("official", self.get("number"))
            return "evaluate: %s; WEIGHTS=FILE, DATA_DIR=ImageNet (expected top-1 error %.*f%%)" % (
                self["row"], self["digits"], ref)
        if self.is_tool:
            return self["row"]
        parts = []
        if self.get("number") is not None:
            parts.append("paper %s %s" % (self.number_text(), self["metric"]))
        if self.get("official") is not None:
            parts.append("official retrain %.*f" % (self["digits"], self["official"]))
        if self.get("params_m"):
            parts.append("%gM" % self["params_m"])
        return "%s, %s%s" % (self["row"], self["dataset"], " (%s)" % "; ".join(parts) if parts else "")


def _load():
    out = {}
    for t in TABLES:
        for r in t.ROWS:
            out[r["name"]] = Recipe(dict({"digits": t.PAPER.get("digits", 2)}, **r), paper=t.PAPER["key"], kind="train")
        for r in getattr(t, "TOOLS", []):
            out[r["name"]] = Recipe(r, paper=t.PAPER["key"], kind="tool")
        for r in getattr(t, "EVALS", []):
            out[r["name"]] = Recipe(dict({"digits": t.PAPER.get("digits", 2), "script": "tools/evaluate.py"}, **r),
                                    paper=t.PAPER["key"], kind="eval")
    return out


RECIPES = _load()


# ------------------------------------------------------------------------------------------------
# Resolution
# ------------------------------------------------------------------------------------------------
def visible_gpus():
    if not shutil.which("nvidia-smi"):
        return 0
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return 0
    return sum(1 for line in out.splitlines() if line.startswith("GPU"))


def _set(argv, flag, value):
    """Replace every occurrence of ``flag VALUE`` / ``flag=VALUE`` in ``argv`` by ``flag value``, or append it."""
    out, i, done = [], 0, False
    while i < len(argv):
        a = argv[i]
        if a == flag:
            i += 2
        elif a.startswith(flag + "="):
            i += 1
        else:
            out.append(a)
            i += 1
            continue
        if not done:
            out += [flag, value]
            done = True
    if not done:
        out += [flag, value]
    return out


def _get(argv, flag, default=None):
    for i, a in enumerate(argv):
        if a == flag and i + 1 < len(argv):
            default = argv[i + 1]
        elif a.startswith(flag + "="):
            default = a.split("=", 1)[1]
    return default


_ENV_MEANING = {"BATCH_SIZE": ("the global batch", 128), "EPOCHS": ("the number of epochs", 10),
                "WORKERS": ("data-loading workers", 4)}


def _env_int(env, var, minimum=1):
    """``env[var]`` as an int >= ``minimum``, else a one-line error (SystemExit, exit status 2)."""
    text = env[var].strip()
    if not re.fullmatch(r"\d+", text) or int(text) < minimum:
        raise SystemExit("error: %s=%s: expected a whole number >= %d (%s), e.g. %s=%d"
                         % (var, shlex.quote(env[var]), minimum, _ENV_MEANING[var][0], var, _ENV_MEANING[var][1]))
    return text


def resolve(name, env=None, extra=(), gpus_visible=None, cpus=None):
    """(argv of the script, lines describing the overrides) of recipe ``name`` (see the module doc)."""
    env = dict(os.environ if env is None else env)
    r = RECIPES[name]
    for var in ("BATCH_SIZE", "EPOCHS", "WORKERS"):
        if var in env and not r.is_tool:
            env[var] = _env_int(env, var, minimum=0 if var == "WORKERS" else 1)
    if r.get("kind") == "eval":
        return _resolve_eval(r, env, extra)
    if r.is_tool:
        return [sys.executable, r["script"]] + shlex.split(r.get("args", "")) + list(extra), []
    spec = SCRIPTS[r["script"]]
    argv = shlex.split(r["command"])
    lines = []
    # data
    data = env.get("DATA_DIR") or r["data_dir"]
    if spec["data"]:
        argv = _set(argv, spec["data"], data)
    else:
        argv = [data if a == "DATA_DIR" else a for a in argv]
    lines.append("DATA_DIR=%s%s" % (data, "" if env.get("DATA_DIR") else " (the recipe's default)"))
    # devices
    want = int(r.get("devices", 1))
    if "GPUS" in env:
        gpus, why = env["GPUS"], "GPUS"
    else:
        have = visible_gpus() if gpus_visible is None else gpus_visible
        n = min(want, have)
        gpus = ",".join(str(i) for i in range(n))
        why = ("the published %d GPU(s)" % want if n == want else "%d of the published %d GPU(s) visible" % (n, want)) \
            if n else "no GPU visible: the CPU"
    argv = [a for i, a in enumerate(argv) if a != "--num-gpus" and (i == 0 or argv[i - 1] != "--num-gpus")]
    argv = _set(argv, spec["devices"], gpus)
    lines.append("GPUS=%s (%s)" % (shlex.quote(gpus), why))
    ndev = max(1, len([g for g in gpus.split(",") if g.strip()]))
    if not gpus.strip():
        cpus = cpus or os.cpu_count() or 1
        if _get(argv, "--dtype") == "float16":
            argv = _set(argv, "--dtype", "float32")
            lines.append("--dtype float16 -> float32 on the CPU")
        w = _get(argv, spec["workers"])
        if w is not None and w.isdigit() and int(w) > cpus and "WORKERS" not in env:
            argv = _set(argv, spec["workers"], str(cpus))
            lines.append("%s %s -> %d (the cores of this machine)" % (spec["workers"], w, cpus))
    # batch: BATCH_SIZE is the global batch
    # batch: BATCH_SIZE is the global batch; without it the published global batch is kept on any device count
    published = _get(argv, spec["batch"])
    if "BATCH_SIZE" in env or (published is not None and spec["batch_meaning"] == "per-device"):
        if "BATCH_SIZE" in env:
            total, why = int(env["BATCH_SIZE"]), "BATCH_SIZE=%s" % env["BATCH_SIZE"]
        else:
            total, why = int(published) * want, "the published %s x %d device(s)" % (published, want)
        if spec["batch_meaning"] == "per-device":
            if total % ndev:
                raise SystemExit("error: the global batch %d does not split over the %d device(s); set BATCH_SIZE"
                                 % (total, ndev))
            value = total // ndev
        else:
            value = total
        argv = _set(argv, spec["batch"], str(value))
        rule = ("the script scales the LR: lr = --lr x %d / 256" % total if spec["lr_rule"] == "linear"
                else "--lr stays the published one (the recipe does not scale it with the batch)")
        lines.append("global batch %d (%s) -> %s %d (%s); %s" % (total, why, spec["batch"], value,
                                                                  spec["batch_meaning"], rule))
    elif published is not None:
        lines.append("global batch %s (%s %s, %s)" % (published, spec["batch"], published, spec["batch_meaning"]))
    if "EPOCHS" in env:
        argv = _set(argv, spec["epochs"], env["EPOCHS"])
        lines.append("EPOCHS=%s -> %s %s" % (env["EPOCHS"], spec["epochs"], env["EPOCHS"]))
    if "WORKERS" in env:
        argv = _set(argv, spec["workers"], env["WORKERS"])
        lines.append("WORKERS=%s -> %s %s" % (env["WORKERS"], spec["workers"], env["WORKERS"]))
    out = os.path.join("runs", r["paper"], name)
    argv = _set(argv, spec["out"], out)
    lines.append("output: %s/ (a re-run resumes there)" % out)
    return [sys.executable, r["script"]] + argv + list(extra), lines


def _resolve_eval(r, env, extra):
    """tools/evaluate.py on WEIGHTS and DATA_DIR's validation set, the result row under runs/eval/."""
    if not env.get("WEIGHTS"):
        raise SystemExit("error: %s needs WEIGHTS=path to the checkpoint (where to get the released ones: "
                         "docs/weights.md)" % r["name"])
    data = env.get("DATA_DIR") or "data/imagenet"
    val = os.path.join(data, "val")
    if not os.path.isdir(val):
        val = os.path.join(data, "val.rec")
    argv = ["--model", r["model"], "--weights", env["WEIGHTS"], "--data", val, "--gpus", env.get("GPUS", ""),
            "--json", os.path.join("runs", "eval", r["name"] + ".json"), "--csv", os.path.join("runs", "eval",
                                                                                              "results.csv")]
    if env.get("WORKERS"):
        argv += ["--workers", env["WORKERS"]]
    lines = ["WEIGHTS=%s" % env["WEIGHTS"], "validation data %s" % val, "result row: runs/eval/%s.json and "
             "runs/eval/results.csv" % r["name"]]
    return [sys.executable, r["script"]] + argv + list(extra), lines


def printable(argv):
    """The command as a user types it, quoted so that it pastes back (the interpreter as :func:`python_cmd`)."""
    from ..cli import python_cmd
    return shlex.join([python_cmd()] + list(argv[1:]))


# ------------------------------------------------------------------------------------------------
# Help and docs
# ------------------------------------------------------------------------------------------------
def help_lines():
    lines = []
    for t in TABLES:
        lines.append("")
        lines.append("%s  [%s]" % (t.PAPER["title"], t.PAPER["source"]))
        for name, r in RECIPES.items():
            if r["paper"] == t.PAPER["key"]:
                lines.append("  %-32s %s" % (name, r.summary()))
    lines.append("")
    lines.append("Environment (applied by every training subcommand, printed with the command):")
    lines.append("  DATA_DIR    data folder (default: the recipe's data/...)")
    lines.append("  GPUS        comma list, empty = CPU (default: the published GPUs when visible, else all, else CPU)")
    lines.append("  BATCH_SIZE  global batch (all devices); FBN/AFF keep the published --lr, bL-Net scales it linearly")
    lines.append("  EPOCHS      number of epochs")
    lines.append("  WORKERS     data-loading workers / decoding threads")
    lines.append("  WEIGHTS     the checkpoint of an *-eval-* subcommand (released ones: docs/weights.md)")
    lines.append("Arguments after NAME go to the script. --dry-run works for every subcommand: the resolved plan (no "
                 "data needed) or, for tools and setup/test/demo, what would run; nothing written. Outputs: "
                 "runs/<paper>/<name>/; the same command again resumes. A mistyped NAME lists the nearest ones.")
    return lines


def docs_tables():
    """{paper key: markdown} of the command tables in docs/reproduce.md."""
    out = {}
    for t in TABLES:
        key = t.PAPER["key"]
        rows = [r for r in RECIPES.values() if r["paper"] == key and not r.is_tool]
        md = ["| command | paper row | dataset | paper number | published run | idle 2-core CPU estimate |",
              "|---|---|---|---|---|---|"]
        for r in rows:
            num = r.number_text() + (" (%s)" % r["metric"] if r.get("number") is not None else "")
            if r.get("official") is not None:
                num += "; official retrain %.*f" % (r["digits"], r["official"])
            argv = shlex.split(r["command"])
            spec = SCRIPTS[r["script"]]
            batch = _get(argv, spec["batch"]) or "default"
            epochs = _get(argv, spec["epochs"]) or "default"
            md.append("| `./run.sh %s` | %s | %s | %s | %s epochs, %d GPU(s), %s %s %s | %s |" % (
                r["name"], r["row"], r["dataset"], num, epochs, r["devices"], spec["batch"], batch,
                spec["batch_meaning"], r.get("cost", "-")))
        md.append("")
        md.append("Original command lines (`%s`), with the notes of each row:" % t.PAPER["source"])
        md.append("")
        for r in rows:
            orig = r.get("original") or "python %s %s" % (os.path.basename(r["script"]), " ".join(shlex.split(r["command"])))
            md.append("* `%s`: `%s`%s" % (r["name"], orig, "".join(" " + n.rstrip(".") + "." for n in r["notes"])))
        out[key] = "\n".join(md) + "\n"
    return out


DOC = os.path.join(ROOT, "docs", "reproduce.md")
_BEGIN, _END = "<!-- recipes:%s (generated by python -m mxrepro.recipes.runner docs) -->", "<!-- /recipes:%s -->"


def render_docs(text):
    """``text`` with every generated table block replaced by the current tables."""
    for key, md in docs_tables().items():
        b, e = _BEGIN % key, _END % key
        pat = re.compile(re.escape(b) + r".*?" + re.escape(e), re.S)
        if not pat.search(text):
            raise SystemExit("error: %s has no block %s ... %s" % (DOC, b, e))
        text = pat.sub(lambda m: b + "\n" + md + e, text)
    return text


BUILTIN = ("setup", "test", "demo", "help")


def suggestion(name):
    """One line for a mistyped subcommand: the nearest names and how to list them all."""
    import difflib
    near = difflib.get_close_matches(name, list(BUILTIN) + list(RECIPES), n=3, cutoff=0.5)
    if not near:  # e.g. 'c10-resnet164': a name that contains it
        near = [n for n in RECIPES if name and name in n][:3]
    return "error: unknown command %r; %s`./run.sh help` lists them all" % (
        name, "did you mean %s? " % " or ".join(near) if near else "")


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    cmd = argv.pop(0) if argv else "help"
    if cmd == "help":
        print("\n".join(help_lines()))
        return 0
    if cmd == "names":
        print("\n".join(RECIPES))
        return 0
    if cmd == "docs":
        text = open(DOC).read()
        new = render_docs(text)
        if "--check" in argv:
            if new != text:
                print("error: docs/reproduce.md is stale: run python -m mxrepro.recipes.runner docs", file=sys.stderr)
                return 1
            return 0
        if new != text:
            open(DOC, "w").write(new)
        return 0
    if cmd == "suggest":
        print(suggestion(argv[0] if argv else ""), file=sys.stderr)
        return 2
    if cmd in ("show", "run"):
        if not argv or argv[0] not in RECIPES:
            print(suggestion(argv[0] if argv else ""), file=sys.stderr)
            return 2
        name = argv.pop(0)
        r = RECIPES[name]
        # tools and evaluations have no --dry-run of their own: the runner shows what would run
        dry = "--dry-run" in argv and (r.is_tool)
        env = dict(os.environ)
        if dry:
            argv = [a for a in argv if a != "--dry-run"]
            if r.get("kind") == "eval" and not env.get("WEIGHTS"):
                env["WEIGHTS"] = "WEIGHTS"
                print("[run.sh] %s: WEIGHTS is not set; the real run needs WEIGHTS=FILE" % name, file=sys.stderr)
        try:
            command, lines = resolve(name, env=env, extra=argv)
        except SystemExit as e:
            print(e, file=sys.stderr)
            return 2
        for line in lines:
            print("[run.sh] %s: %s" % (name, line), file=sys.stderr)
        print("[run.sh] $ %s" % printable(command), file=sys.stderr)
        if dry:
            print("[run.sh] dry run: the command above is what would run; nothing run, nothing written",
                  file=sys.stderr)
            return 0
        if cmd == "show":
            return 0
        sys.stderr.flush()
        os.chdir(ROOT)
        os.execv(command[0], command)
    print("error: unknown command %r (help, names, show NAME, run NAME [ARGS], suggest NAME, docs [--check])" % cmd,
          file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
