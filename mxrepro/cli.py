"""What every command-line entry point shares: the ``main()`` wrapper (one-line errors and exit codes,
fail-fast in distributed workers), a help formatter that states each default once, and the
conversion of a paper's batch flag to the engine's global batch."""
import argparse
import os
import shlex
import sys

__all__ = ["run_main", "HelpFormatter", "expected_workers", "device_count", "pasteable", "parse_kw", "given",
           "python_cmd", "script_argv",
           "EXIT_CODES"]

# 0 done; 1 diverged (non-finite loss or parameters); 2 bad flag or data, an unwritable output or too
# little free space found before the first step (nothing written); 3 a write failed during the run (disk
# full, quota, read-only, I/O error: the last complete checkpoint is kept); 130 / 143 interrupted by
# SIGINT / SIGTERM (the last complete epoch is saved).
EXIT_CODES = {"ok": 0, "diverged": 1, "usage": 2, "disk": 3, "sigint": 130, "sigterm": 143}


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """``--help`` with each default shown once: ``(default: X)`` is added unless the help text already
    talks about its default, and never for flags whose default is None or False."""

    def _get_help_string(self, action):
        text = action.help or ""
        if "default" in text.lower() or action.default in (None, False, argparse.SUPPRESS, "") \
                or action.option_strings == [] and action.nargs in ("?", "*"):
            return text
        return text + " (default: %(default)s)"


def expected_workers(kv_store):
    """Workers of this job: the launcher's ``DMLC_NUM_WORKER`` under a dist kvstore, else 1."""
    if str(kv_store).startswith("dist"):
        return max(1, int(os.environ.get("DMLC_NUM_WORKER", "1")))
    return 1


def device_count(gpus):
    """Devices of a ``--gpus`` list ('' = one CPU)."""
    ids = [g for g in str(gpus or "").split(",") if g.strip() not in ("", "-1", "cpu")]
    return max(1, len(ids))


def pasteable(argv):
    """A command line that can be pasted back into a shell (empty values quoted)."""
    return shlex.join([str(a) for a in argv])


def python_cmd():
    """How to call this interpreter in a pasteable command: ``python`` when that is it on PATH (an activated
    venv), ``.venv/bin/python`` (relative) when it lives under the current folder, else its full path."""
    import shutil
    exe = os.path.abspath(sys.executable)
    on_path = shutil.which("python")
    if on_path and os.path.abspath(on_path) == exe:
        return "python"
    rel = os.path.relpath(exe)
    return rel if not rel.startswith("..") else exe


def script_argv(prog, argv):
    """``prog`` (e.g. ``"python cifar/train_cifar.py"``) + ``argv`` as a list, its ``python`` replaced by
    :func:`python_cmd` so that the printed command runs when pasted."""
    head = shlex.split(prog)
    if head and head[0] == "python":
        head[0] = python_cmd()
    return head + list(argv)


def given(argv, *flags):
    """Whether any of ``flags`` appears in ``argv`` (``--flag V`` or ``--flag=V``), i.e. was set explicitly."""
    return any(a in flags or a.split("=", 1)[0] in flags for a in argv or ())


def parse_kw(items, flag="--kw"):
    """``['alpha=4', 'deep_stem=True', 'widths=(64,128)']`` -> {'alpha': 4, 'deep_stem': True, 'widths': (64, 128)}:
    builder keywords of the tools' ``--kw KEY=VALUE`` (Python literals, ``true``/``false``, else strings).
    A malformed item is a ValueError naming the flag."""
    import ast
    out = {}
    for item in items or ():
        if "=" not in item:
            raise ValueError("%s expects KEY=VALUE, got %r" % (flag, item))
        k, v = (x.strip() for x in item.split("=", 1))
        try:
            out[k] = ast.literal_eval(v)
        except (ValueError, SyntaxError):
            out[k] = {"true": True, "false": False}.get(v.lower(), v)
    return out


def run_main(main, argv=None):
    """Run ``main(argv)`` and exit with its status. Bad flags and data (UsageError, DataError) print one
    ``error: ...`` line and exit 2; a diverged run exits 1; a failed write (disk full, read-only, I/O
    error) exits 3 with one line; Ctrl-C outside training exits 130. In a
    distributed worker a failure ends the process at once (:class:`mxrepro.engine.dist.fail_fast`)."""
    import errno
    from .engine.config import DiskFull, Diverged, UsageError
    from .engine.dist import fail_fast
    from .integrity import DataError
    with fail_fast():
        try:
            code = main(argv)
        except (UsageError, DataError) as e:
            sys.stdout.flush()
            print("error: %s" % e, file=sys.stderr)
            code = 2
        except Diverged as e:
            sys.stdout.flush()
            print("error: %s; the last good checkpoint is kept" % e, file=sys.stderr)
            code = 1
        except DiskFull as e:
            sys.stdout.flush()
            print("error: %s" % e, file=sys.stderr)
            code = 3
        except OSError as e:
            if e.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO):
                raise
            sys.stdout.flush()
            print("error: %s writing %s: free space or choose another output folder, then run the same command"
                  % (e.strerror, e.filename or "an output file"), file=sys.stderr)
            code = 3
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            code = 130
        sys.exit(code)
