"""Package structure: an installed package (no ``sys.path`` edits), an import graph without cycles, a
leaf model registry, a launcher that does not load MXNet, and the FB operators after ``import mxrepro``."""
import ast
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ("mxrepro", "symbols")
CODE_DIRS = ("mxrepro", "symbols", "cifar", "imagenet", "tools")


def _modules():
    """{dotted module name: path} of every module of the project's packages."""
    out = {}
    for pkg in PACKAGES:
        for d, _, files in os.walk(os.path.join(ROOT, pkg)):
            for f in files:
                if f.endswith(".py"):
                    rel = os.path.relpath(os.path.join(d, f), ROOT)[:-3].split(os.sep)
                    if rel[-1] == "__init__":
                        rel = rel[:-1]
                    out[".".join(rel)] = os.path.join(d, f)
    return out


def import_graph():
    """Edges module -> project module for every import statement (module level or inside functions:
    a lazy import is a dependency too)."""
    mods = _modules()
    graph = {m: set() for m in mods}
    for mod, path in mods.items():
        is_pkg = path.endswith("__init__.py")
        base = mod.split(".") if is_pkg else mod.split(".")[:-1]
        for node in ast.walk(ast.parse(open(path).read(), path)):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    anchor = base[:len(base) - node.level + 1]
                    src = ".".join(anchor + ([node.module] if node.module else []))
                else:
                    src = node.module
                targets = [src + "." + a.name if (src + "." + a.name) in mods else src for a in node.names]
            for t in targets:
                while t and t not in mods:   # `import a.b.c` depends on the deepest project module named
                    t = t.rpartition(".")[0]
                if t and t != mod:
                    graph[mod].add(t)
    return graph


def find_cycle(graph):
    state, stack = {}, []

    def visit(n):
        state[n] = 1
        stack.append(n)
        for m in sorted(graph[n]):
            if state.get(m) == 1:
                return stack[stack.index(m):] + [m]
            if m not in state:
                c = visit(m)
                if c:
                    return c
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(graph):
        if n not in state:
            c = visit(n)
            if c:
                return c
    return None


def test_import_graph_has_no_cycle():
    graph = import_graph()
    assert "mxrepro.models.registry" in graph and graph["mxrepro.models.aff"], "graph not built"
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def test_cycle_finder_finds_a_planted_cycle():
    g = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}
    assert find_cycle(g) == ["a", "b", "c", "a"]


def test_registry_is_a_leaf_and_mxrepro_does_not_import_symbols():
    graph = import_graph()
    assert graph["mxrepro.models.registry"] <= {"mxrepro.weights"}, graph["mxrepro.models.registry"]
    for mod, deps in graph.items():
        if mod.startswith("mxrepro"):
            assert not any(d == "symbols" or d.startswith("symbols.") for d in deps), (mod, deps)
    # the families sit above the shared layers, fusions and heads, never the other way round
    families = {"mxrepro.models.resnet", "mxrepro.models.aff", "mxrepro.models.blnet"}
    for low in ("mxrepro.models.layers", "mxrepro.models.fusions", "mxrepro.models.heads"):
        assert not (graph[low] & families), (low, graph[low])


def test_no_sys_path_edits_in_the_code():
    hits = []
    for d in CODE_DIRS:
        for root, _, files in os.walk(os.path.join(ROOT, d)):
            for f in files:
                if f.endswith((".py", ".sh")):
                    p = os.path.join(root, f)
                    for i, line in enumerate(open(p), 1):
                        if "sys.path" in line:
                            hits.append("%s:%d" % (os.path.relpath(p, ROOT), i))
    assert not hits, hits


def _run(code, **env):
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/",
                          env=dict(os.environ, **env), timeout=300)


def test_installed_package_launcher_without_mxnet_and_ops_after_import():
    # from an unrelated folder: the package is installed (editable), not found through the cwd
    r = _run("import sys, mxrepro.launcher, mxrepro.engine.dist; print('mxnet' in sys.modules)")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "False"
    r = _run("import mxrepro, mxnet as mx; print(mx.sym.FMConvolution1.__name__, mx.nd.FMConvolution3.__name__, "
             "hasattr(mx.symbol, 'FMConvolution3'))")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["FMConvolution1", "FMConvolution3", "True"]
    # mxnet first, mxrepro second: the operators are registered at once
    r = _run("import mxnet as mx, mxrepro; print(mx.sym.FMConvolution3.__name__)")
    assert r.returncode == 0 and r.stdout.strip() == "FMConvolution3", r.stderr
    # a current library is not rebuilt (setup built it): nothing is compiled at import
    assert "building the FB operator library" not in r.stderr


def test_stale_library_is_rebuilt_once_with_a_message(tmp_path):
    """A library older than its sources is rebuilt at import with a message (here: a copy of
    operators/ in a scratch checkout, so the real build is untouched)."""
    import shutil
    dst = tmp_path / "checkout"
    for d in ("mxrepro", "operators"):
        shutil.copytree(os.path.join(ROOT, d), dst / d, ignore=shutil.ignore_patterns("__pycache__", ".lock"))
    lib = dst / "operators" / "build" / "libfbop.so"
    assert lib.exists()
    os.utime(dst / "operators" / "fbop.h")  # newer than the library
    code = "import sys; sys.path.insert(0, %r); import mxrepro, mxnet as mx; print(mxrepro.ops._loaded_path)" % str(dst)
    r = _run(code)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "[mxrepro] building the FB operator library" in r.stderr
    assert r.stdout.strip() == str(lib)
    r = _run(code)
    assert r.returncode == 0 and "building" not in r.stderr, r.stderr[-2000:]
