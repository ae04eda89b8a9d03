"""tools/demo.py's own pieces: the printed commands can be pasted back, the timing caveat of a loaded machine."""
import importlib.util
import os
import shlex
import sys

import pytest

from mxrepro.cli import python_cmd

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools"))  # demo.py imports parse_log as a script does
_spec = importlib.util.spec_from_file_location("demo", os.path.join(ROOT, "tools", "demo.py"))
demo = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(demo)


def test_dollar_lines_paste_back(capsys):
    cmd = [sys.executable, "-c", "import sys; sys.exit(0)", "--gpus", "", "--name", "a b", "--q", "it's"]
    demo.run(cmd)
    line = capsys.readouterr().out.strip()
    # the interpreter as the user would type it (python, .venv/bin/python or its path), the rest verbatim
    assert line.startswith("$ ") and shlex.split(line[2:]) == [python_cmd()] + cmd[1:]
    assert " '' " in line  # the empty --gpus value stays an argument
    bad = [sys.executable, "-c", "import sys; sys.exit(3)", ""]
    with pytest.raises(SystemExit) as e:
        demo.run(bad, "x.log")
    msg = str(e.value)
    assert "exit code 3" in msg and "see x.log" in msg
    assert shlex.split(msg.split("exit code 3: ", 1)[1].split("\n")[0]) == bad


def test_load_caveat():
    assert demo.load_caveat(6.2, 2) == "load average 6.2 on 2 cores: the img/s figures are not comparable"
    assert demo.load_caveat(1.5, 1) == "load average 1.5 on 1 core: the img/s figures are not comparable"
    assert demo.load_caveat(2.0, 2) is None and demo.load_caveat(None, 2) is None


def test_load_watch_keeps_the_peak(monkeypatch):
    readings = iter([1.0, 7.5, 3.0])
    monkeypatch.setattr(demo.os, "getloadavg", lambda: (next(readings), 0.0, 0.0))
    with demo.LoadWatch(every=3600) as w:  # sampled on entry and exit only
        assert w.peak == 1.0
    assert w.peak == 7.5
    assert demo.cores() >= 1
