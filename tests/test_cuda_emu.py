"""The CUDA kernels (operators/fbop_gpu.cu) checked against the CPU implementation without a GPU:
the harness is compiled with g++ against operators/cuda_emu.h, which emulates the CUDA execution
model on the CPU (`make -C operators emu`). On a real GPU run operators/build/fbop_harness."""
import os
import re
import subprocess
import sys
import tempfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_gpu_kernels_match_cpu_under_emulator():
    with tempfile.TemporaryDirectory() as build:
        res = subprocess.run(["make", "-C", os.path.join(ROOT, "operators"), "emu", "BUILD=" + build,
                              "PYTHON=" + sys.executable], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if res.returncode != 0:
            pytest.fail("emulated harness build failed:\n" + res.stdout[-3000:])
        run = subprocess.run([os.path.join(build, "fbop_harness_emu"), "--cases", "8", "--no-bench", "--seed", "3"],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=600)
    out = run.stdout
    m = re.search(r"^(\d+) passed, (\d+) failed$", out, re.M)
    assert m, out[-2000:]
    assert run.returncode == 0 and int(m.group(2)) == 0, out[-3000:]
    assert int(m.group(1)) >= 15
    assert "FAIL" not in out
