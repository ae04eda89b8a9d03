"""Build check of the CUDA half of the FB operator library (lib_api with nvcc).

Runs only where ``nvcc`` is on PATH (no GPU needed): ``make -C operators gpu`` into a temporary
BUILD directory must produce ``libfbop_gpu.so`` and ``fbop_harness`` whose kernels carry SASS for
the Volta/Ampere/Hopper targets (sm_70, or sm_75 where nvcc >= 13 cannot target Volta; sm_80;
sm_90) plus compute_90 PTX, read from the ELF ``.nv_fatbin`` section and, when available, with
``cuobjdump --list-elf``. The nvcc-built library must also load into the CPU-only MXNet wheel and
compute the FB closed form there (docs/reference/fbn.md §1.2), and the harness must run (on a GPU: a few cases;
without one: its no-device message). The GPU-vs-CPU checks themselves are docs/cuda.md.
"""
import os
import re
import shutil
import struct
import subprocess
import sys
import time

import pytest

NVCC = shutil.which("nvcc")
pytestmark = pytest.mark.skipif(NVCC is None, reason="nvcc not on PATH: CUDA build not checked")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OPS = os.path.join(ROOT, "operators")
FATBIN_MAGIC = 0xBA55ED50


def elf_section(path, wanted):
    """Bytes of the ELF64 section named ``wanted`` (empty if absent)."""
    with open(path, "rb") as fh:
        d = fh.read()
    assert d[:4] == b"\x7fELF" and d[4] == 2, f"{path} is not an ELF64 file"
    shoff, = struct.unpack_from("<Q", d, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", d, 0x3A)

    def header(i):  # name, type, flags, addr, offset, size, ...
        return struct.unpack_from("<IIQQQQ", d, shoff + i * shentsize)

    strtab = header(shstrndx)[4]
    for i in range(shnum):
        h = header(i)
        name = d[strtab + h[0]:d.index(b"\0", strtab + h[0])].decode()
        if name == wanted:
            return d[h[4]:h[4] + h[5]]
    return b""


def fatbin_targets(path):
    """{'sm_XX' for each embedded cubin} | {'compute_XX' for each PTX} from .nv_fatbin.

    Layout (as cuobjdump reads it): fatbins of {u32 magic, u16 version, u16 header size,
    u64 payload size}, each a list of entries {u16 kind (1 PTX, 2 ELF), u16, u32 header size,
    u64 payload size, ..., u32 arch at byte 28}.
    """
    blob, out, off = elf_section(path, ".nv_fatbin"), set(), 0
    while off + 16 <= len(blob):
        magic, _, hsz, size = struct.unpack_from("<IHHQ", blob, off)
        if magic != FATBIN_MAGIC:
            off += 8
            continue
        e, end = off + hsz, off + hsz + size
        while e < end:
            kind, _, ehs, psz = struct.unpack_from("<HHIQ", blob, e)
            arch, = struct.unpack_from("<I", blob, e + 28)
            out.add(("sm_%d" if kind == 2 else "compute_%d") % arch)
            e += ehs + psz
        off = end
    return out


def expected_sass():
    codes = subprocess.run([NVCC, "--list-gpu-code"], capture_output=True, text=True).stdout.split()
    oldest = "sm_70" if "sm_70" in codes or not codes else "sm_75"
    return {oldest, "sm_80", "sm_90"}


@pytest.fixture(scope="module")
def gpu_build(tmp_path_factory):
    build = tmp_path_factory.mktemp("cuda") / "build"
    t0 = time.time()
    r = subprocess.run(["make", "-j2", "-C", OPS, "gpu", f"BUILD={build}", f"PYTHON={sys.executable}"],
                       capture_output=True, text=True, timeout=1500)
    assert r.returncode == 0, (
        f"`make -C operators gpu` failed (exit {r.returncode}); if cuRAND headers are missing, "
        f"pip install nvidia-curand into {sys.executable}'s environment.\n"
        f"{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    print(f"CUDA build took {time.time() - t0:.0f} s")
    return build


def test_gpu_artifacts_carry_expected_targets(gpu_build):
    want = expected_sass()
    for name in ("libfbop_gpu.so", "fbop_harness"):
        path = gpu_build / name
        assert path.is_file() and path.stat().st_size > 0, f"{path} was not built"
        found = fatbin_targets(str(path))
        assert want <= found, f"{name}: SASS {sorted(want - found)} missing (found {sorted(found)})"
        assert "compute_90" in found, f"{name}: no compute_90 PTX (found {sorted(found)})"
        cuobjdump = shutil.which("cuobjdump")
        if cuobjdump:
            listing = subprocess.run([cuobjdump, "--list-elf", str(path)], capture_output=True,
                                     text=True, timeout=120).stdout
            elf = set(re.findall(r"\.(sm_\d+)\.cubin", listing))
            assert want <= elf, f"cuobjdump --list-elf {name}: {listing}"


def test_gpu_library_runs_on_cpu_wheel(gpu_build):
    """One .so serves CPU and GPU machines: the nvcc build computes the FB closed form on the CPU."""
    script = r"""
import sys, numpy as np, mxnet as mx
mx.library.load(sys.argv[1], verbose=False)
rng = np.random.RandomState(0)
B, C, H, W, N, F = 2, 5, 3, 4, 3, 2
x = rng.randn(B, C, H, W).astype('f'); v = rng.randn(N, F, C, 1, 1).astype('f')
b = rng.randn(N).astype('f')
y = mx.nd.FMConvolution1(mx.nd.array(x), mx.nd.array(v), mx.nd.array(b), mx.nd.ones(F),
                         num_filter=N, num_factor=F, kernel=(1, 1), p=0.5).asnumpy()
X, V = x.transpose(0, 2, 3, 1), v.reshape(N, F, C)
ref = (np.einsum('bhwc,nfc->bnhwf', X, V) ** 2).sum(-1) \
    - np.einsum('bhwc,nfc->bnhw', X ** 2, V ** 2) + b[None, :, None, None]
print('relerr', np.abs(y - ref).max() / np.abs(ref).max())
# the attribute parsing and the memory guard are the shared code: same answers as the g++ build
y2 = mx.nd.FMConvolution1(mx.nd.array(x), mx.nd.array(v), mx.nd.array(b), mx.nd.ones(F), num_filter=N,
                          num_factor=F, kernel="(1, 1)", p="0.5", no_bias="False").asnumpy()
print('no_bias=False keeps the bias', np.array_equal(y, y2))
for op, kw in (("FMConvolution1", dict(kernel="(1,")), ("FMConvolution3", dict(kernel="1", memory_limit_mb="0")),
               ("FMConvolution3", dict(kernel="1", memory_limit_mb="1"))):
    try:
        getattr(mx.nd, op)(mx.nd.ones((64, 16, 16, 16)), mx.nd.ones((20, 10, 16, 1, 1)), mx.nd.ones(20),
                           mx.nd.ones(10), num_filter=20, num_factor=10, p=0.5, **kw).asnumpy()
        print('accepted', op, kw)
    except mx.base.MXNetError as e:
        print('refused', op, kw, str(e).split('Extension Traceback:')[1].strip().splitlines())
"""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    r = subprocess.run([sys.executable, "-c", script, str(gpu_build / "libfbop_gpu.so")],
                       capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    err = float(re.search(r"relerr (\S+)", r.stdout).group(1))
    assert err < 1e-5, r.stdout
    assert "no_bias=False keeps the bias True" in r.stdout
    lines = r.stdout.splitlines()
    assert any(ln.startswith("refused FMConvolution1") and "attribute kernel='(1,' is invalid" in ln
               and ln.count("fbop_lib.cc[") == 1 for ln in lines), r.stdout
    assert any(ln.startswith("accepted FMConvolution3") for ln in lines), r.stdout
    assert any(ln.startswith("refused FMConvolution3") and "of batched buffers" in ln and "above the limit of 1 MB" in ln
               for ln in lines), r.stdout


def test_harness_runs(gpu_build):
    r = subprocess.run([str(gpu_build / "fbop_harness"), "--cases", "3", "--no-bench"],
                       capture_output=True, text=True, timeout=600)
    out = r.stdout + r.stderr
    if "no CUDA device" in out:  # CPU-only machine: the harness must say so and fail
        assert r.returncode == 2, out
    else:
        assert r.returncode == 0 and re.search(r"^\d+ passed, 0 failed$", r.stdout, re.M), out
