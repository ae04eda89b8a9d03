"""The FB operator library (operators/): build-if-stale, ``mx.library.load`` and the Python API.

After ``import mxrepro`` the Factorized Bilinear layer of FBN (docs/reference/fbn.md §1-2) is available as

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


# ------------------------------------------------------------------ Python API
# Every attribute is handed to the compiled operator as str(value), exactly as MXNet's generated
# functions do, and the wrappers read the few values they need themselves (no_bias, num_factor,
# p, kernel) with the operator's own parser (fbop_parse_attrs), so the grammar, the ranges and the
# messages are the same whichever way a call comes in (docs/operators.md, "Input checking").
import numpy as np  # noqa: E402

_ATTR_DEFAULTS = (("num_factor", 1), ("stride", (1, 1)), ("pad", (0, 0)), ("dilate", (1, 1)),
                  ("no_bias", False), ("p", 0.5), ("workspace", 512), ("dropfactor_mode", "inverted"),
                  ("grad_mode", "exact"))
_parsers = {}  # library path -> ctypes function fbop_parse_attrs


def _tuple(v, n=2):
    if isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_)):
        return (int(v),) * n
    return tuple(v)


def _error(op, msg):
    return mx.base.MXNetError("%s: %s" % (op, msg))


def _attr_strings(attrs):
    """{name: str(value)} for every attribute given (None = not given: the operator's default)."""
    return {k: str(v) for k, v in attrs.items() if v is not None}


def parse_attrs(op, attrs):
    """Validate the attributes of ``op`` ('FMConvolution1'|'FMConvolution3') with the compiled
    operator's parser; ``attrs`` maps names to values (str() is applied, None means not given).
    Returns {'no_bias', 'num_filter', 'num_factor', 'kernel', 'p'}; raises MXNetError with the
    operator's own message otherwise."""
    path = _loaded_path
    fn = _parsers.get(path)
    if fn is None:
        try:
            fn = ctypes.CDLL(path).fbop_parse_attrs
        except AttributeError:
            raise RuntimeError("the FB operator library %s has no fbop_parse_attrs; rebuild it "
                               "(make -C operators)" % path)
        fn.restype = ctypes.c_int
        fn.argtypes = [ctypes.c_char_p, ctypes.c_int, ctypes.POINTER(ctypes.c_char_p),
                       ctypes.POINTER(ctypes.c_char_p), ctypes.POINTER(ctypes.c_int),
                       ctypes.POINTER(ctypes.c_float), ctypes.c_char_p, ctypes.c_int]
        _parsers[path] = fn
    strs = _attr_strings(attrs)
    n = len(strs)
    keys = (ctypes.c_char_p * max(n, 1))(*[k.encode("utf-8", "surrogateescape") for k in strs])
    vals = (ctypes.c_char_p * max(n, 1))(*[v.encode("utf-8", "surrogateescape") for v in strs.values()])
    ints = (ctypes.c_int * 5)()
    pval = ctypes.c_float()
    err = ctypes.create_string_buffer(2048)
    if not fn(op.encode(), n, keys, vals, ints, ctypes.byref(pval), err, len(err)):
        raise mx.base.MXNetError(err.value.decode("utf-8", "replace"))
    return dict(no_bias=bool(ints[0]), num_factor=ints[1], num_filter=ints[2], kernel=(ints[3], ints[4]),
                p=float(pval.value))


def _typename(v):
    t = type(v)
    return t.__name__ if t.__module__ == "builtins" else "%s.%s" % (t.__module__, t.__name__)


def _nd_input(op, name, v, ctx):
    """An NDArray input as is; a numpy array or (nested) list of numbers as a float32 NDArray on
    ``ctx``; anything else is refused naming the operator and the input."""
    if isinstance(v, mx.nd.NDArray):
        arr = v
    elif isinstance(v, (np.ndarray, list, tuple)):
        try:
            a = np.asarray(v, dtype=np.float32)
        except (TypeError, ValueError) as e:
            raise _error(op, "input '%s' (a %s) cannot be converted to a float32 array: %s"
                         % (name, _typename(v), e))
        arr = mx.nd.array(a, ctx=ctx, dtype=np.float32)
    else:
        raise _error(op, "input '%s' must be an mx.nd.NDArray, a numpy array or a (nested) list of "
                         "numbers, got %s" % (name, _typename(v)))
    if 0 in arr.shape:
        raise _error(op, "input '%s' has shape %s: every dimension must be >= 1 (zero-size inputs "
                         "are not supported)" % (name, tuple(arr.shape)))
    return arr


# _accumulating: lib_api does not tell an operator whether MXNet asked it to write or to add
# (grad_req='add'), so the compiled operator always writes. The wrappers therefore never let it
# write a gradient MXNet may want accumulated: every input that is a graph variable (mx.sym, a
# hybridized block's parameters) or an NDArray with an attached gradient (autograd) goes through
# MXNet's own `identity` (_copy), whose backward honours write/add/null. Intermediate results are
# only ever written, so they are passed directly.


def _is_variable(s):
    return s.get_children() is None and s.list_outputs() == s.list_arguments()


def _make_wrapper(op, symbolic):
    gen = _generated[("sym" if symbolic else "nd", op)]

    def fm_convolution(data=None, weight=None, bias=None, num_filter=None, num_factor=1, kernel=None,
                       stride=(1, 1), pad=(0, 0), dilate=(1, 1), no_bias=False, p=0.5,
                       workspace=512, dropfactor_mode="inverted", grad_mode="exact", name=None,
                       attr=None, out=None, **kwargs):
        attrs = dict(num_filter=num_filter, num_factor=num_factor, kernel=kernel, stride=stride, pad=pad,
                     dilate=dilate, no_bias=no_bias, p=p, workspace=workspace,
                     dropfactor_mode=dropfactor_mode, grad_mode=grad_mode, **kwargs)
        a = parse_attrs(op, attrs)   # raises with the operator's message
        strs = _attr_strings(attrs)
        if data is None:
            raise _error(op, "input 'data' is required")
        if bias is not None and a["no_bias"]:
            raise _error(op, "input 'bias' was given but no_bias=%s" % strs["no_bias"])
        if symbolic:
            name = mx.name.NameManager.current.get(name, op.lower())
            with mx.name.NameManager():  # `name` is final: no second prefix (Gluon name scopes)
                return _symbolic(data, weight, bias, a, strs, name, attr)
        if weight is None:
            raise _error(op, "input 'weight' is required in mx.nd calls (mx.sym creates it as a variable)")
        if bias is None and not a["no_bias"]:
            raise _error(op, "input 'bias' is required unless no_bias=True")
        given = [("data", data), ("weight", weight)] + ([] if a["no_bias"] else [("bias", bias)])
        ctx = next((v.context for _, v in given if isinstance(v, mx.nd.NDArray)), mx.current_context())
        arrays = [_nd_input(op, k, v, ctx) for k, v in given]
        if mx.autograd.is_recording():
            # gradient accumulation (grad_req='add'): see _accumulating
            arrays = [mx.nd.identity(v) if v.grad is not None else v for v in arrays]
        ones = mx.nd.ones((a["num_factor"],), ctx=arrays[0].context)
        mask = mx.nd.Dropout(ones, p=a["p"]) if a["p"] > 0 else ones
        return gen(*(arrays + [mask]), out=out, **strs)

    def _symbolic(data, weight, bias, a, strs, name, attr):
        if weight is None:
            weight = mx.sym.var(name + "_weight")
        if bias is None and not a["no_bias"]:
            bias = mx.sym.var(name + "_bias")
        given = [("data", data), ("weight", weight)] + ([] if a["no_bias"] else [("bias", bias)])
        inputs = []
        for k, v in given:
            if not isinstance(v, mx.sym.Symbol):
                raise _error(op, "input '%s' must be an mx.sym.Symbol in mx.sym calls, got %s"
                             % (k, _typename(v)))
            if len(v.list_outputs()) != 1:
                raise _error(op, "input '%s' must be a single output, got a group of %d"
                             % (k, len(v.list_outputs())))
            # gradient accumulation (grad_req='add'): see _accumulating
            inputs.append(mx.sym.identity(v, name="%s_%s_copy" % (name, k)) if _is_variable(v) else v)
        ones = mx.sym.ones(shape=(a["num_factor"],), name=name + "_ones")
        mask = mx.sym.Dropout(ones, p=a["p"], name=name + "_dropfactor") if a["p"] > 0 else ones
        mask = mx.sym.BlockGrad(mask, name=name + "_mask")
        return gen(*(inputs + [mask]), name=name, attr=attr, **strs)

    fm_convolution.__name__ = op
    fm_convolution.__qualname__ = op
    fm_convolution.__doc__ = (
        "%s: the Factorized Bilinear layer of FBN (docs/reference/fbn.md §1-2)%s.\n\n"
        "y_j = sum_f m_f [(v_jf . x)^2 - sum_k v_jfk^2 x_k^2] + bias_j at every output position.\n"
        "Inputs data (B,C,H,W), weight (num_filter, num_factor, C, kh, kw), bias (num_filter);\n"
        "mx.nd also takes numpy arrays or lists (converted to float32 on the other inputs' context).\n"
        "Attributes: num_filter, num_factor, kernel, stride, pad, dilate, no_bias, p (DropFactor\n"
        "drop rate), workspace (MB), dropfactor_mode ('inverted'|'reference'|'paper'),\n"
        "grad_mode ('exact'|'reference'), memory_limit_mb (0 = none; default\n"
        "$FBOP_MEMORY_LIMIT_MB, else 4096). Grammar and ranges: docs/operators.md." % (
            op, "; chunked within `workspace`" if op.endswith("1")
            else "; batched: keeps the forward's products for the backward"))
    fm_convolution._mxrepro_wrapper = True
    return fm_convolution


class FactorizedBilinear(HybridBlock):
    """Gluon block owning the FB weight (N, F, C, kh, kw) and bias (N); calls FMConvolution1/3.

    Initialisation as the original (docs/reference/fbn.md §1.5): Xavier gaussian, fan-in, magnitude 2 over the
    5-D weight (sigma = sqrt(2 / (F*C*kh*kw))), zero bias."""

    def __init__(self, channels, num_factor=20, kernel_size=1, strides=1, padding=0, dilation=1,
                 use_bias=True, in_channels=0, p=0.5, variant=3, dropfactor_mode="inverted",
                 grad_mode="exact", workspace=512, weight_initializer=None, bias_initializer="zeros",
                 **kwargs):
        super().__init__(**kwargs)
        if variant not in (1, 3):
            raise ValueError("variant must be 1 (FMConvolution1) or 3 (FMConvolution3)")
        self._op = "FMConvolution%d" % variant
        self._kwargs = dict(num_filter=channels, num_factor=num_factor, kernel=kernel_size, stride=strides,
                            pad=padding, dilate=dilation, no_bias=not use_bias, p=p, workspace=workspace,
                            dropfactor_mode=dropfactor_mode, grad_mode=grad_mode)
        self._parsed = parse_attrs(self._op, self._kwargs)  # the operator's own checks, now
        if isinstance(in_channels, (bool, np.bool_)) or not isinstance(in_channels, (int, np.integer)) \
                or not 0 <= in_channels <= 2147483647:
            raise mx.base.MXNetError("%s: in_channels=%r is invalid: must be an integer >= 0 (0: inferred "
                                     "from the first input)" % (type(self).__name__, in_channels))
        if weight_initializer is None:
            weight_initializer = mx.init.Xavier(rnd_type="gaussian", factor_type="in", magnitude=2)
        a = self._parsed
        with self.name_scope():
            self.weight = self.params.get("weight", shape=(a["num_filter"], a["num_factor"], int(in_channels))
                                          + a["kernel"], init=weight_initializer, allow_deferred_init=True)
            self.bias = self.params.get("bias", shape=(a["num_filter"],), init=bias_initializer,
                                        allow_deferred_init=True) if use_bias else None

    def hybrid_forward(self, F, x, weight, bias=None):
        return getattr(F, self._op)(data=x, weight=weight, bias=bias, **self._kwargs)

    def __repr__(self):
        a = self._parsed
        return "%s(%s, F=%d, kernel=%s, p=%s, %s)" % (type(self).__name__, a["num_filter"], a["num_factor"],
                                                     a["kernel"], self._kwargs["p"], self._op)


load()
