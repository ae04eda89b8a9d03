"""The FB operator library (operators/): build-if-stale, ``mx.library.load`` and the Python API.

After ``import mxrepro`` the Factorized Bilinear layer of FBN (fbn.md sections 1-2) is available as

    mx.sym.FMConvolution3(data=in5b, num_filter=100, num_factor=20, kernel=(1,1), stride=(1,1),
                          pad=(0,0), p=0.5, name='bilinear1')
    mx.sym.FMConvolution1(...)            # same maths, bounded workspace (chunked)
    mx.nd.FMConvolution3(data=x, weight=w, bias=b, num_filter=..., ...)
    F.FMConvolution3(x, weight, bias, ...) inside a HybridBlock, or the FactorizedBilinear block

The compiled operators take a fourth input, the DropFactor mask: lib_api gives operators no
train/inference flag, so the wrappers below build the mask with MXNet's own ``Dropout`` on
``ones(F)`` (it knows the mode, follows ``mx.random.seed``, and is skipped in inference), wrapped in
``BlockGrad``. Extra attributes: ``dropfactor_mode`` ('inverted' default, 'reference' = the
released code's train 1/q and test q scaling, 'paper' = Fig. 1's train 1 and test q) and
``grad_mode`` ('exact' default, 'reference' = the original data gradient that lacks a factor x).
"""
import ctypes
import fcntl
import glob
import os
import subprocess
import sys
import time

import mxnet as mx
from mxnet.gluon import HybridBlock

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OPS_DIR = os.path.join(ROOT, "operators")
BUILD_DIR = os.path.join(OPS_DIR, "build")
CPU_LIB = os.path.join(BUILD_DIR, "libfbop.so")
GPU_LIB = os.path.join(BUILD_DIR, "libfbop_gpu.so")
OPS = ("FMConvolution1", "FMConvolution3")
DROPFACTOR_MODES = ("inverted", "reference", "paper")
GRAD_MODES = ("exact", "reference")

_generated = {}   # ('sym'|'nd', op) -> the function mx.library.load generated
_loaded_path = None


def _sources():
    pats = ("*.cc", "*.h", "Makefile")
    files = [f for p in pats for f in glob.glob(os.path.join(OPS_DIR, p))]
    return files + [os.path.join(os.path.dirname(mx.__file__), "src", "lib_api.cc")]


def _stale(lib):
    if not os.path.exists(lib):
        return True
    t = os.path.getmtime(lib)
    return any(os.path.getmtime(f) > t for f in _sources() if os.path.exists(f))


def build(force=False, quiet=True, target="cpu"):
    """Run ``make -C operators <target>`` with this interpreter (under a lock, so concurrent
    processes don't race); return the library path."""
    os.makedirs(BUILD_DIR, exist_ok=True)
    cmd = ["make", "-C", OPS_DIR, "PYTHON=" + sys.executable, target]
    if force:
        cmd.insert(1, "-B")
    with open(os.path.join(BUILD_DIR, ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        res = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if res.returncode != 0:
        raise RuntimeError("building the FB operator library failed (%s):\n%s\n"
                           "Run ./run.sh setup (it installs g++ prerequisites and the pinned MXNet)."
                           % (" ".join(cmd), res.stdout[-4000:]))
    if not quiet:
        print(res.stdout, end="")
    return GPU_LIB if target == "gpu" else CPU_LIB


def library_path():
    """The library to load: $MXREPRO_FBOP_LIB, else the CUDA build when this MXNet has CUDA and
    it exists, else the CPU build (built first if missing or older than its sources)."""
    env = os.environ.get("MXREPRO_FBOP_LIB")
    if env:
        return os.path.abspath(env)
    if mx.runtime.Features().is_enabled("CUDA") and os.path.exists(GPU_LIB) and not _stale(GPU_LIB):
        return GPU_LIB
    if _stale(CPU_LIB):
        if not os.access(OPS_DIR, os.W_OK):
            if not os.path.exists(CPU_LIB):
                raise RuntimeError("the FB operator library %s is missing and %s is read-only: run ./run.sh setup "
                                   "in a writable checkout" % (CPU_LIB, OPS_DIR))
            return CPU_LIB
        why = "missing" if not os.path.exists(CPU_LIB) else "older than its sources in operators/"
        sys.stderr.write("[mxrepro] building the FB operator library (%s is %s) ...\n" % (
            os.path.relpath(CPU_LIB, ROOT), why))
        sys.stderr.flush()
        tic = time.time()
        build()
        sys.stderr.write("[mxrepro] built %s in %.0f s\n" % (os.path.relpath(CPU_LIB, ROOT), time.time() - tic))
    return CPU_LIB


def load(path=None):
    """Load the operator library into MXNet and install the Python wrappers (idempotent)."""
    global _loaded_path
    path = os.path.abspath(path or library_path())
    if _loaded_path != path:
        mx.library.load(path, verbose=False)
        _loaded_path = path
    for op in OPS:
        for kind, mod in (("sym", mx.symbol), ("nd", mx.ndarray)):
            fn = getattr(mod, op)
            if not getattr(fn, "_mxrepro_wrapper", False):
                _generated[(kind, op)] = fn
        setattr(mx.symbol, op, _make_wrapper(op, symbolic=True))
        setattr(mx.ndarray, op, _make_wrapper(op, symbolic=False))
    return path


def compiled_op(op, symbolic=False):
    """The generated function of the compiled operator, whose inputs are (data, weight, [bias],
    mask) with every attribute a string: for tests that pass a DropFactor mask by hand."""
    return _generated[("sym" if symbolic else "nd", op)]


def _lib():
    return ctypes.CDLL(_loaded_path)


def gemm_backend():
    """'onednn' or 'openblas': the sgemm the loaded library calls."""
    f = _lib().fbop_gemm_backend
    f.restype = ctypes.c_char_p
    return f().decode()


def last_peak_bytes():
    """Scratch bytes used by the last CPU forward/backward call (for the benchmark)."""
    f = _lib().fbop_last_peak_bytes
    f.restype = ctypes.c_size_t
    return int(f())


def _tuple(v, n=2):
    if isinstance(v, int):
        return (v,) * n
    return tuple(int(x) for x in v)


def _attrs(num_filter, num_factor, kernel, stride, pad, dilate, no_bias, p, workspace,
           dropfactor_mode, grad_mode, op):
    if kernel is None:
        raise mx.base.MXNetError("%s: the attribute kernel is required, e.g. kernel=(1,1)" % op)
    if dropfactor_mode not in DROPFACTOR_MODES:
        raise mx.base.MXNetError("%s: dropfactor_mode must be one of %s, got %r" % (op, DROPFACTOR_MODES, dropfactor_mode))
    if grad_mode not in GRAD_MODES:
        raise mx.base.MXNetError("%s: grad_mode must be one of %s, got %r" % (op, GRAD_MODES, grad_mode))
    try:
        p = float(p)
    except (TypeError, ValueError):
        raise mx.base.MXNetError("%s: cannot parse attribute p=%r" % (op, p))
    if not 0.0 <= p < 1.0:
        raise mx.base.MXNetError("%s: p (the DropFactor drop rate) must be in [0, 1), got %s" % (op, p))
    return dict(num_filter=num_filter, num_factor=num_factor, kernel=kernel, stride=stride, pad=pad,
                dilate=dilate, no_bias=bool(no_bias), p=p, workspace=workspace,
                dropfactor_mode=dropfactor_mode, grad_mode=grad_mode)


def _make_wrapper(op, symbolic):
    gen = _generated[("sym" if symbolic else "nd", op)]

    def fm_convolution(data=None, weight=None, bias=None, num_filter=None, num_factor=1, kernel=None,
                       stride=(1, 1), pad=(0, 0), dilate=(1, 1), no_bias=False, p=0.5,
                       workspace=512, dropfactor_mode="inverted", grad_mode="exact", name=None,
                       attr=None, out=None, num_group=1, **kwargs):
        if kwargs:
            raise mx.base.MXNetError("%s: unknown argument(s) %s" % (op, ", ".join(sorted(kwargs))))
        if num_group != 1:
            raise mx.base.MXNetError("%s: num_group must be 1 (grouped FB layers are not implemented)" % op)
        if data is None:
            raise mx.base.MXNetError("%s: the input data is required" % op)
        a = _attrs(num_filter, num_factor, kernel, stride, pad, dilate, no_bias, p, workspace,
                   dropfactor_mode, grad_mode, op)
        try:
            nfac = int(num_factor)
        except (TypeError, ValueError):
            raise mx.base.MXNetError("%s: cannot parse attribute num_factor=%r" % (op, num_factor))
        if nfac < 1:
            raise mx.base.MXNetError("%s: num_factor must be >= 1, got %s" % (op, num_factor))
        if symbolic:
            name = mx.name.NameManager.current.get(name, op.lower())
            with mx.name.NameManager():  # `name` is final: no second prefix (Gluon name scopes)
                return _symbolic(gen, data, weight, bias, nfac, a, name, attr)
        if weight is None or (bias is None and not a["no_bias"]):
            raise mx.base.MXNetError("%s: mx.nd needs weight%s arrays" % (op, "" if a["no_bias"] else " and bias"))
        ones = mx.nd.ones((nfac,), ctx=data.context)
        mask = mx.nd.Dropout(ones, p=a["p"]) if a["p"] > 0 else ones
        inputs = [data, weight] + ([] if a["no_bias"] else [bias]) + [mask]
        return gen(*inputs, out=out, **{k: str(v) for k, v in a.items()})

    def _symbolic(gen, data, weight, bias, nfac, a, name, attr):
        if weight is None:
            weight = mx.sym.var(name + "_weight")
        if bias is None and not a["no_bias"]:
            bias = mx.sym.var(name + "_bias")
        ones = mx.sym.ones(shape=(nfac,), name=name + "_ones")
        mask = mx.sym.Dropout(ones, p=a["p"], name=name + "_dropfactor") if a["p"] > 0 else ones
        mask = mx.sym.BlockGrad(mask, name=name + "_mask")
        inputs = [data, weight] + ([] if a["no_bias"] else [bias]) + [mask]
        return gen(*inputs, name=name, attr=attr, **{k: str(v) for k, v in a.items()})

    fm_convolution.__name__ = op
    fm_convolution.__qualname__ = op
    fm_convolution.__doc__ = (
        "%s: the Factorized Bilinear layer of FBN (fbn.md sections 1-2)%s.\n\n"
        "y_j = sum_f m_f [(v_jf . x)^2 - sum_k v_jfk^2 x_k^2] + bias_j at every output position.\n"
        "Inputs data (B,C,H,W), weight (num_filter, num_factor, C, kh, kw), bias (num_filter).\n"
        "Attributes: num_filter, num_factor, kernel, stride, pad, dilate, no_bias, p (DropFactor\n"
        "drop rate), workspace (MB), dropfactor_mode ('inverted'|'reference'|'paper'),\n"
        "grad_mode ('exact'|'reference')." % (op, "; chunked within `workspace`" if op.endswith("1")
                                              else "; batched: keeps the forward's products for the backward"))
    fm_convolution._mxrepro_wrapper = True
    return fm_convolution


class FactorizedBilinear(HybridBlock):
    """Gluon block owning the FB weight (N, F, C, kh, kw) and bias (N); calls FMConvolution1/3.

    Initialisation as the original (fbn.md 1.5): Xavier gaussian, fan-in, magnitude 2 over the
    5-D weight (sigma = sqrt(2 / (F*C*kh*kw))), zero bias."""

    def __init__(self, channels, num_factor=20, kernel_size=1, strides=1, padding=0, dilation=1,
                 use_bias=True, in_channels=0, p=0.5, variant=3, dropfactor_mode="inverted",
                 grad_mode="exact", workspace=512, weight_initializer=None, bias_initializer="zeros",
                 **kwargs):
        super().__init__(**kwargs)
        if variant not in (1, 3):
            raise ValueError("variant must be 1 (FMConvolution1) or 3 (FMConvolution3)")
        ks = _tuple(kernel_size)
        self._op = "FMConvolution%d" % variant
        self._kwargs = _attrs(channels, num_factor, ks, _tuple(strides), _tuple(padding),
                              _tuple(dilation), not use_bias, p, workspace, dropfactor_mode,
                              grad_mode, self._op)
        if weight_initializer is None:
            weight_initializer = mx.init.Xavier(rnd_type="gaussian", factor_type="in", magnitude=2)
        with self.name_scope():
            self.weight = self.params.get("weight", shape=(channels, num_factor, in_channels) + ks,
                                          init=weight_initializer, allow_deferred_init=True)
            self.bias = self.params.get("bias", shape=(channels,), init=bias_initializer,
                                        allow_deferred_init=True) if use_bias else None

    def hybrid_forward(self, F, x, weight, bias=None):
        return getattr(F, self._op)(data=x, weight=weight, bias=bias, **self._kwargs)

    def __repr__(self):
        k = self._kwargs
        return "%s(%s, F=%d, kernel=%s, p=%s, %s)" % (type(self).__name__, k["num_filter"], k["num_factor"],
                                                     k["kernel"], k["p"], self._op)


load()
