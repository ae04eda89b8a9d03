"""The FB operator library: build-if-stale, ``mx.library.load`` and the Python API.

(placeholder while the operator is being written; see operators/)
"""
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OPS_DIR = os.path.join(ROOT, "operators")
BUILD_DIR = os.path.join(OPS_DIR, "build")


def build(force=False, quiet=True):
    """Run ``make -C operators`` with this interpreter; return the library path."""
    cmd = ["make", "-C", OPS_DIR, "PYTHON=" + sys.executable, "cpu"]
    if force:
        cmd.insert(1, "-B")
    res = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if res.returncode != 0:
        raise RuntimeError("building the FB operator library failed (%s):\n%s" % (" ".join(cmd), res.stdout[-4000:]))
    if not quiet:
        print(res.stdout, end="")
    return os.path.join(BUILD_DIR, "libfbop.so")


if __name__ == "__main__":
    if "--build" in sys.argv:
        print(build(force="--force" in sys.argv, quiet=False))
