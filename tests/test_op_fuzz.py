"""Fuzz test of FMConvolution1 / FMConvolution3: randomised bad and edge calls.

About 1,300 calls of both operators through every entry point (mx.nd and mx.sym wrappers, the
compiled operator with raw attribute strings, the Gluon block): malformed attribute strings and
Python values, out-of-range values, unknown and missing attributes, wrong shapes, dtypes and
input types, zero-size inputs, kernels larger than the padded input, huge FMConvolution3 buffers,
and valid edge cases whose results must match the NumPy reference (tests/fbref.py).

The calls run in worker processes (tests/op_fuzz_worker.py) in batches, two at a time: a crash
or a hang is counted (and the batch resumes after the call) instead of taking pytest down.
Asserted: no crash, no hang, every bad call raises MXNetError whose single operator message
(no stale messages of earlier calls) starts with the operator's name and names the attribute or
input at fault, and every valid call matches the reference. The counts are printed.
"""
import json
import math
import os
import re
import random
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import fbref

HERE = os.path.dirname(os.path.abspath(__file__))
WORKER = os.path.join(HERE, "op_fuzz_worker.py")
OPS = ("FMConvolution1", "FMConvolution3")
SEED = 1611  # arXiv 1611.05709
BATCHES = 4
BATCH_TIMEOUT_S = 150
TUPLE_ATTRS = ("kernel", "stride", "pad", "dilate")
ENV = "FBOP_MEMORY_LIMIT_MB"


# ------------------------------------------------------------------ case generation
class Gen:
    def __init__(self, seed):
        self.r = random.Random(seed)
        self.cases = []

    def add(self, **case):
        case["id"] = len(self.cases)
        case["seed"] = self.r.randrange(2 ** 31)
        case.setdefault("op", self.r.choice(OPS))
        self.cases.append(case)

    # -- valid geometry and its many spellings
    def geometry(self, max_k=3):
        r = self.r
        kh, kw = r.randint(1, max_k), r.randint(1, max_k)
        sh, sw = r.randint(1, 3), r.randint(1, 3)
        ph, pw = r.randint(0, 2), r.randint(0, 2)
        dh, dw = r.randint(1, 2), r.randint(1, 2)
        eh, ew = dh * (kh - 1) + 1, dw * (kw - 1) + 1
        H = r.randint(max(1, eh - 2 * ph), eh + 3)
        W = r.randint(max(1, ew - 2 * pw), ew + 3)
        return dict(B=r.randint(1, 3), C=r.randint(1, 4), H=H, W=W, N=r.randint(1, 3), F=r.randint(1, 3),
                    kernel=(kh, kw), stride=(sh, sw), pad=(ph, pw), dilate=(dh, dw))

    def spell_pair(self, v, raw=False):
        a, b = v
        forms = ["(%d, %d)" % v, "(%d,%d)" % v, "[%d,%d]" % v, " ( %d , %d ) " % v, "(%d, %d,)" % v]
        if a == b:
            forms += ["%d" % a, " %d" % a]
        if not raw:
            forms += [tuple(v), list(v)] + ([a] if a == b else [])
        return self.r.choice(forms)

    def spell_bool(self, v, raw=False):
        forms = ["True", "true", "1"] if v else ["False", "false", "0"]
        if not raw:
            forms += [bool(v), int(v)]
        return self.r.choice(forms)

    def spell_int(self, v, raw=False):
        forms = [str(v), " %d " % v, "+%d" % v]
        return self.r.choice(forms if raw else forms + [v, v, v])

    def attrs_for(self, g, raw=False, no_bias=None, p=None, mode=None):
        r = self.r
        a = dict(num_filter=self.spell_int(g["N"], raw), num_factor=self.spell_int(g["F"], raw),
                 kernel=self.spell_pair(g["kernel"], raw))
        for k in ("stride", "pad", "dilate"):
            if g[k] != ((0, 0) if k == "pad" else (1, 1)) or r.random() < 0.5:
                a[k] = self.spell_pair(g[k], raw)
        if no_bias is not None and (no_bias or r.random() < 0.5):
            a["no_bias"] = self.spell_bool(no_bias, raw)
        if p is not None:
            a["p"] = r.choice([str(p), repr(p)]) if raw else r.choice([p, str(p)])
        if mode is not None:
            a["dropfactor_mode"] = mode
        if r.random() < 0.2:
            a["workspace"] = self.spell_int(r.choice([0, 1, 512, 1048576]), raw)
        if r.random() < 0.1:
            a["memory_limit_mb"] = self.spell_int(r.choice([0, 4096, 1073741824]), raw)
        if r.random() < 0.1:
            a["num_group"] = self.spell_int(1, raw)
        if r.random() < 0.1:
            a["eps"] = r.choice(["1e-10", "0", "0.5"])
        if raw:
            a = {k: str(v) for k, v in a.items()}
        return a

    def ref(self, g, scale=1.0, compat=False):
        return dict(kernel=g["kernel"], stride=g["stride"], pad=g["pad"], dilate=g["dilate"], F=g["F"],
                    scale=scale, compat=compat)

    def inputs(self, g, no_bias=False, kinds=("nd",), dtype="float32", mask=False):
        r = self.r
        spec = lambda shape: dict(type=r.choice(kinds), shape=list(shape), dtype=dtype)  # noqa: E731
        ins = dict(data=spec((g["B"], g["C"], g["H"], g["W"])),
                   weight=dict(spec((g["N"], g["F"], g["C"]) + g["kernel"]), scale=0.7))
        if not no_bias:
            ins["bias"] = spec((g["N"],))
        if mask:
            ins["mask"] = dict(type="ones", shape=[g["F"]])
        return ins

    @staticmethod
    def out_shape(g):
        oh = fbref.out_size(g["H"], g["kernel"][0], g["stride"][0], g["pad"][0], g["dilate"][0])
        ow = fbref.out_size(g["W"], g["kernel"][1], g["stride"][1], g["pad"][1], g["dilate"][1])
        return [g["B"], g["N"], oh, ow]

    # -- valid calls
    def valid_nd(self, backward=False):
        r = self.r
        g = self.geometry()
        no_bias = r.random() < 0.3
        if backward:
            p, mode, scale = 0.0, "inverted", 1.0
            kinds = ("nd",)
        else:
            p = r.choice([0.0, 0.25, 0.5])
            mode = r.choice(["inverted", "reference", "paper"])
            scale = 1.0 if mode == "inverted" else 1.0 - p
            kinds = ("nd", "nd", "numpy", "list")
        a = self.attrs_for(g, no_bias=no_bias, p=p, mode=mode)
        if backward and r.random() < 0.3:
            a["grad_mode"] = "reference"
        self.add(path="nd", attrs=a, inputs=self.inputs(g, no_bias, kinds), expect="valid", backward=backward,
                 gy_scale=r.choice([1.0, -0.5]), ref=self.ref(g, scale, compat=a.get("grad_mode") == "reference"))

    def valid_raw(self):
        g = self.geometry()
        no_bias = self.r.random() < 0.4
        a = self.attrs_for(g, raw=True, no_bias=no_bias, p=self.r.choice([0.0, 0.5]))
        self.add(path="raw", attrs=a, inputs=self.inputs(g, no_bias, mask=True), expect="valid", ref=self.ref(g))

    def valid_sym(self):
        g = self.geometry(max_k=5)
        a = self.attrs_for(g, no_bias=self.r.random() < 0.3)
        self.add(path="sym", attrs=a, shape=[g["B"], g["C"], g["H"], g["W"]], out_shape=self.out_shape(g),
                 expect="valid")

    def valid_edge(self):
        """Extremes that must work: kernel exactly the padded input, stride beyond the input,
        one of everything, FMConvolution1 with no workspace (minimal chunks)."""
        r = self.r
        kind = r.choice(["exact", "stride", "ones", "ws0", "dilated"])
        g = self.geometry()
        if kind == "exact":
            g["H"] = max(1, g["dilate"][0] * (g["kernel"][0] - 1) + 1 - 2 * g["pad"][0])
            g["W"] = max(1, g["dilate"][1] * (g["kernel"][1] - 1) + 1 - 2 * g["pad"][1])
        elif kind == "stride":
            g["stride"] = (g["H"] + 2 * g["pad"][0] + 5, 100)
        elif kind == "ones":
            g.update(B=1, C=1, N=1, F=1)
        elif kind == "dilated":
            g.update(kernel=(2, 2), dilate=(4, 3), pad=(0, 0), H=5, W=4)
        a = self.attrs_for(g, no_bias=False, p=0.0)
        if kind == "ws0":
            a["workspace"] = 0
            g["B"] = 3
        self.add(path="nd", attrs=a, inputs=self.inputs(g), expect="valid", ref=self.ref(g))

    def valid_gluon(self):
        r = self.r
        g = self.geometry()
        attrs = dict(channels=g["N"], num_factor=g["F"], kernel_size=self.spell_pair(g["kernel"]),
                     strides=self.spell_pair(g["stride"]), padding=self.spell_pair(g["pad"]),
                     dilation=self.spell_pair(g["dilate"]), use_bias=r.random() < 0.7, p=0.5,
                     variant=int(r.choice(OPS)[-1]))
        ins = self.inputs(g, no_bias=not attrs["use_bias"])
        self.add(op="FMConvolution%d" % attrs["variant"], path="gluon", attrs=attrs, inputs=ins, expect="valid",
                 hybridize=r.random() < 0.5, ref=self.ref(g))

    # -- bad attributes
    BAD = {
        "num_filter": ["0", "-1", "1000001", "1.5", "", "abc", "1e3", "0x10", "True", " ", "99999999999999999999",
                       "(1, 1)", "3 4"],
        "num_factor": ["0", "-2", "100001", "2.0", "", "x", "1e2", "False", "[2]"],
        "kernel": ["(0, 1)", "(1, 0)", "(1,", "", "()", "(1,)", "(1, 1, 1)", "(a, b)", "(1.5, 1)", "1,1",
                   "(-1, 1)", "((1,1))", "(1 1)", "[1, 1)", "(2147483648, 1)", "0", "-1", "(1;1)", "None", "(,)"],
        "stride": ["(0, 1)", "(1, 0)", "(1,", "(1, 1, 1)", "0", "(1.0, 1.0)", "", "[1]", "(-2, 1)"],
        "pad": ["(-1, 0)", "(0, -1)", "(0,", "", "()", "(0,)", "-1", "(0.5, 0)", "(0, 0, 0)", "[0, 0"],
        "dilate": ["(0, 1)", "(1, 0)", "0", "(1,", "(1, 1, 1)", "()", "1.5", "(x, 1)"],
        "no_bias": ["maybe", "FALSE", "TRUE", "None", "", "2", "-1", "yes", "0.0", "Falsee", "t"],
        "p": ["1", "1.0", "-0.1", "nan", "inf", "-inf", "", "x", "0.5.5", "1e", "0x1p-1", "2", "1e5", ".", "0.5 0.5"],
        "workspace": ["-1", "1048577", "1.5", "", "x", "1e3"],
        "memory_limit_mb": ["-1", "1073741825", "x", "1.0", ""],
        "num_group": ["2", "0", "-1", "x", ""],
        "eps": ["-1", "nan", "x", "", "inf"],
        "dropfactor_mode": ["Inverted", "", "none", "invert", "paper2", "1"],
        "grad_mode": ["Exact", "", "ref", "approx", "0"],
    }
    BAD_PY = {
        "num_filter": [0, -3, 1.5, 1000001, "x", True, (1, 1)],
        "num_factor": [0, -1, 0.5, 100001, "two"],
        "kernel": [(0, 1), (1,), (1, 1, 1), (1.0, 1.0), [0, 0], 0, -1, "(1,", ()],
        "stride": [(0, 1), (1, 1, 1), 0, [1.5, 1], (1,)],
        "pad": [(-1, 0), -1, (0,), (0, 0, 0), "(0,"],
        "dilate": [(0, 1), 0, (1,), [1, 1, 1]],
        "no_bias": [2, 0.5, "no", "maybe", "FALSE", -1],
        "p": [1.0, -0.01, 1, 5, float("nan"), float("inf"), "half"],
        "workspace": [-1, 1048577, 2.5],
        "memory_limit_mb": [-1, 1.5, "lots"],
        "num_group": [2, 0],
        "eps": [-1.0, float("nan")],
        "dropfactor_mode": ["INVERTED", "", 0],
        "grad_mode": ["REFERENCE", "none"],
    }

    def junk(self):
        r = self.r
        alphabet = "0123456789(), []-+.eE xyz_;:'\"\\\t"
        return "".join(r.choice(alphabet) for _ in range(r.randint(0, 8)))

    def bad_attr(self, raw):
        r = self.r
        g = self.geometry()
        no_bias = r.random() < 0.3
        a = self.attrs_for(g, raw=raw, no_bias=no_bias, p=0.5)
        k = r.choice(sorted(self.BAD))
        pool = self.BAD[k] if raw else self.BAD_PY[k] + self.BAD[k][:3]
        v = r.choice(pool)
        a[k] = v
        culprit = "attribute %s=" % k
        if raw:
            ins = self.inputs(g, no_bias, mask=True)
            self.add(path="raw", attrs=a, inputs=ins, expect="error", culprits=[culprit])
        else:
            path = r.choice(["nd", "nd", "sym"])
            ins = self.inputs(g, no_bias) if path == "nd" else {}
            self.add(path=path, attrs=a, inputs=ins, shape=[g["B"], g["C"], g["H"], g["W"]], expect="error",
                     culprits=[culprit])

    def bad_attr_junk(self):
        """Random strings for the tuple and integer attributes: valid ones are checked as valid."""
        r = self.r
        g = self.geometry()
        a = self.attrs_for(g, raw=True, p=0.5)
        k = r.choice(TUPLE_ATTRS + ("num_filter", "num_factor"))
        v = self.junk()
        a[k] = v
        self.add(path="sym", attrs=a, shape=[g["B"], g["C"], g["H"], g["W"]], expect="error_or_valid",
                 culprits=["attribute %s=" % k], junk=[k, v])

    def unknown_or_missing(self):
        r = self.r
        g = self.geometry()
        a = self.attrs_for(g, raw=True, p=0.5)
        if r.random() < 0.6:
            k = r.choice(["bogus", "Kernel", "num_filters", "strides", "padding", "use_bias", "lr_mult", "num_factors",
                          "P", "workspace_mb", "memory_limit", "dropout"])
            a[k] = r.choice(["1", "(1, 1)", "x"])
            culprit = "unknown attribute %s=" % k
        else:
            k = r.choice(["num_filter", "kernel"])
            del a[k]
            culprit = "attribute %s is required" % k
        path = r.choice(["raw", "sym"])
        ins = self.inputs(g, mask=True) if path == "raw" else {}
        self.add(path=path, attrs=a, inputs=ins, shape=[g["B"], g["C"], g["H"], g["W"]], expect="error",
                 culprits=[culprit])

    # -- bad shapes, dtypes, inputs
    def bad_shape(self):
        r = self.r
        g = self.geometry()
        a = self.attrs_for(g, p=0.5)
        ins = self.inputs(g, kinds=("nd", "numpy"))
        kind = r.choice(["ndim", "weight", "weight", "bias", "zero", "zero", "kernel", "dilate", "dtype", "dtype"])
        culprits = []
        if kind == "ndim":
            nd = r.choice([1, 2, 3, 5])
            ins["data"]["shape"] = [r.randint(1, 3) for _ in range(nd)]
            culprits = ["input 'data'", "4-D"]
        elif kind == "weight":
            s = list(ins["weight"]["shape"])
            i = r.randrange(6)
            if i == 5:
                s = s[:4]
            else:
                s[i] += r.randint(1, 2)
            ins["weight"]["shape"] = s
            culprits = ["input 'weight'"]
        elif kind == "bias":
            ins["bias"]["shape"] = r.choice([[g["N"] + 1], [g["N"], 1], [1, g["N"]]])
            culprits = ["input 'bias'"]
        elif kind == "zero":
            name = r.choice(["data", "data", "weight", "bias"])
            s = list(ins[name]["shape"])
            s[r.randrange(len(s))] = 0
            ins[name]["shape"] = s
            culprits = ["input '%s'" % name, "zero-size"]
        elif kind in ("kernel", "dilate"):
            if kind == "kernel":
                k = (g["H"] + 2 * g["pad"][0] + r.randint(1, 3), r.randint(1, 2))
                g["kernel"], g["dilate"] = k, (1, 1)
            else:
                g["kernel"], g["dilate"] = (2, 2), (g["H"] + 2 * g["pad"][0], 1)
            a["kernel"], a["dilate"] = g["kernel"], g["dilate"]
            ins = self.inputs(g, kinds=("nd",))
            culprits = ["kernel=", "input 'data'", "does not fit"]
        elif kind == "dtype":
            name = r.choice(["data", "weight", "bias"])
            ins[name]["dtype"] = r.choice(["float64", "float16", "int32", "uint8"])
            ins[name]["type"] = "nd"
            culprits = ["input '%s'" % name, "only float32"]
        self.add(path="nd", attrs=a, inputs=ins, expect="error", culprits=culprits)

    def bad_input_type(self):
        r = self.r
        g = self.geometry()
        no_bias = r.random() < 0.3
        a = self.attrs_for(g, no_bias=no_bias, p=0.5)
        ins = self.inputs(g, no_bias, kinds=("nd", "numpy"))
        kind = r.choice(["object", "object", "ragged", "strings", "missing", "bias_extra", "sym_nd"])
        path = "nd"
        if kind in ("object", "ragged", "strings"):
            name = r.choice(["data", "weight"] + ([] if no_bias else ["bias"]))
            value = {"object": r.choice(["abc", {"a": 1}, 3.5, 7, True]),
                     "ragged": [[1.0, 2.0], [3.0]], "strings": [["a", "b"]]}[kind]
            ins[name] = dict(type="object", value=value)
            culprits = ["input '%s'" % name]
        elif kind == "missing":
            name = r.choice(["data", "weight"] + ([] if no_bias else ["bias"]))
            ins[name] = dict(type="object", value=None)
            culprits = ["input '%s'" % name, "required"]
        elif kind == "bias_extra":
            a["no_bias"] = self.spell_bool(True)
            ins["bias"] = dict(type="nd", shape=[g["N"]])
            culprits = ["input 'bias'", "no_bias"]
        else:
            path = "sym"
            ins = dict(data=dict(type="nd", shape=[g["B"], g["C"], g["H"], g["W"]]))
            culprits = ["input 'data'", "mx.sym.Symbol"]
        self.add(path=path, attrs=a, inputs=ins, shape=[g["B"], g["C"], g["H"], g["W"]], expect="error",
                 culprits=culprits)

    def bad_raw_mask(self):
        g = self.geometry()
        a = self.attrs_for(g, raw=True, p=0.5)
        ins = self.inputs(g, mask=True)
        ins["mask"]["shape"] = [g["F"] + self.r.randint(1, 3)]
        self.add(path="raw", attrs=a, inputs=ins, expect="error", culprits=["input 'mask'"])

    def np_shape_zero(self):
        g = self.geometry()
        shape = [g["B"], g["C"], g["H"], g["W"]]
        shape[self.r.randrange(4)] = 0
        self.add(path="sym", attrs=self.attrs_for(g), shape=shape, np_shape=True, expect="error",
                 culprits=["input 'data'", "every dimension must be in [1, 2147483647]"])

    # -- memory guard and size limits
    def huge(self):
        r = self.r
        kind = r.choice(["fm3", "fm3", "fm3_attr", "fm3_env", "env_bad", "fm1", "output", "weight"])
        if kind in ("fm3", "fm3_attr", "fm3_env"):
            # all of these need more than 4 GB at the default limit
            B, C, HW, N, F = r.choice([(128, 2048, 14, 1000, 50), (512, 2048, 7, 1000, 50), (256, 512, 16, 1000, 20),
                                       (128, 256, 32, 100, 200), (1024, 1024, 8, 200, 100)])
            attrs = dict(num_filter=N, num_factor=F, kernel=(1, 1))
            env = {}
            if kind != "fm3":
                B, C, HW = r.randint(4, 16), r.choice([64, 128]), 16
            S = B * HW * HW
            est_mb = (S * (4 * C + N * F + 2 * N) + 3 * N * C) * 4 / 2 ** 20  # documented estimate
            assert kind != "fm3" or est_mb > 4096
            limit = None
            if kind != "fm3":
                above = r.random() < 0.7
                limit = r.randint(1, int(est_mb) - 1) if above else r.randint(int(est_mb) + 1, 4096)
                if kind == "fm3_attr":
                    attrs["memory_limit_mb"] = limit
                else:
                    env = {ENV: str(limit)}
            if limit is not None and not above:
                self.add(op="FMConvolution3", path="sym", attrs=attrs, shape=[B, C, HW, HW], env=env,
                         out_shape=[B, N, HW, HW], expect="valid")
            else:
                self.add(op="FMConvolution3", path="sym", attrs=attrs, shape=[B, C, HW, HW], env=env, expect="error",
                         culprits=["input 'data'", "memory_limit_mb", ENV, "batched buffers", "FMConvolution1",
                                   "needs about %d MB" % math.ceil(est_mb)])
        elif kind == "env_bad":
            g = self.geometry()
            attrs = self.attrs_for(g)
            attrs.pop("memory_limit_mb", None)  # the attribute would win over the environment
            self.add(path="sym", attrs=attrs, shape=[g["B"], g["C"], g["H"], g["W"]],
                     env={ENV: r.choice(["lots", "-1", "1.5", "1e3"])}, expect="error",
                     culprits=["environment variable %s=" % ENV])
        elif kind == "fm1":
            self.add(op="FMConvolution1", path="sym", attrs=dict(num_filter=10, num_factor=2, kernel=(3, 3), pad=1),
                     shape=[1, 512, 512, 512], expect="error", culprits=["input 'data'", "memory_limit_mb"])
        elif kind == "output":
            self.add(path="sym", attrs=dict(num_filter=1000, num_factor=1, kernel=1, pad=r.choice([30000, 10 ** 6])),
                     shape=[2, 1, 1, 1], expect="error", culprits=["input 'data'", "output"])
        else:
            self.add(path="sym", attrs=dict(num_filter=100000, num_factor=1000, kernel=3), shape=[1, 64, 8, 8],
                     expect="error", culprits=["input 'weight'", "elements"])


def generate(seed=SEED):
    gen = Gen(seed)
    plan = [(gen.valid_nd, 260), (lambda: gen.valid_nd(backward=True), 60), (gen.valid_raw, 40),
            (gen.valid_sym, 60), (gen.valid_edge, 40), (gen.valid_gluon, 20),
            (lambda: gen.bad_attr(raw=True), 300), (lambda: gen.bad_attr(raw=False), 200), (gen.bad_attr_junk, 60),
            (gen.unknown_or_missing, 40), (gen.bad_shape, 160), (gen.bad_input_type, 60), (gen.bad_raw_mask, 10),
            (gen.np_shape_zero, 10), (gen.huge, 60)]
    for fn, n in plan:
        for _ in range(n):
            fn()
    order = list(range(len(gen.cases)))
    gen.r.shuffle(order)  # errors and valid calls interleaved in every worker
    cases = [gen.cases[i] for i in order]
    for i, c in enumerate(cases):
        c["id"] = i
    return cases


def junk_is_valid(k, v):
    """Independent reading of the documented grammar for the junk strings (bad_attr_junk)."""
    integer = r"\s*[+-]?\d+\s*"
    s = v.strip(" \t\n")
    if k in ("num_filter", "num_factor"):
        if not re.fullmatch(integer, s):
            return False
        n = int(s)
        return 1 <= n <= (1000000 if k == "num_filter" else 100000)
    m = re.fullmatch(r"(%s)" % integer, s) or re.fullmatch(r"\(\s*(%s),(%s),?\s*\)" % (integer, integer), s) \
        or re.fullmatch(r"\[\s*(%s),(%s),?\s*\]" % (integer, integer), s)
    if not m:
        return False
    vals = [int(x) for x in m.groups()]
    lo = 0 if k == "pad" else 1
    return all(lo <= x <= 2147483647 for x in vals)


# ------------------------------------------------------------------ running the batches
def run_batch(cases):
    """Run cases in worker processes; returns ({id: result}, crashes, hangs)."""
    results, crashes, hangs = {}, [], []
    todo = list(cases)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.pop(ENV, None)
    while todo:
        proc = subprocess.Popen([sys.executable, WORKER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=env, start_new_session=True)
        try:
            out, err = proc.communicate(json.dumps(todo), timeout=BATCH_TIMEOUT_S)
            timed_out = False
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            out, err = proc.communicate()
            timed_out = True
        began = None
        for line in out.splitlines():
            if line.startswith("BEGIN "):
                began = int(line.split()[1])
            elif line.startswith("RESULT "):
                res = json.loads(line[7:])
                results[res["id"]] = res
                began = None
        done = {c["id"] for c in todo if c["id"] in results}
        if began is not None:  # died or hung inside this call
            (hangs if timed_out else crashes).append((began, (err or "")[-1500:]))
            done.add(began)
        elif proc.returncode != 0 or len(done) < len(todo):
            if not done:  # the worker did not even start: report, do not loop
                crashes.append((None, (err or "")[-3000:]))
                break
        todo = [c for c in todo if c["id"] not in done]
    return results, crashes, hangs


def judge(case, res):
    """None if the outcome is right, else a description."""
    op = case["op"]
    expect = case["expect"]
    if res["status"] == "exception":
        return "non-MXNetError exception: " + res["text"]
    if res["status"] == "error":
        msgs = res["msgs"]
        if len(msgs) != 1:
            return "%d operator messages (stale or none): %s" % (len(msgs), res["text"])
        msg = msgs[0]
        if not msg.startswith(op + ": "):
            return "message does not start with the operator name: " + msg
    if expect == "error_or_valid":  # junk strings: decided by an independent reading of the grammar
        k, v = case["junk"]
        if junk_is_valid(k, v):
            # the attribute must be accepted; the call may still fail for another named reason
            if res["status"] == "error" and ("attribute %s=" % k) in res["msgs"][0]:
                return "valid value %r of %s refused: %s" % (v, k, res["msgs"][0])
            return None
        expect = "error"
    if expect == "error":
        if res["status"] != "error":
            return "no error raised (got %s)" % res
        missing = [c for c in case["culprits"] if c not in res["msgs"][0]]
        if missing:
            return "message does not name %s: %s" % (missing, res["msgs"][0])
        return None
    if res["status"] != "ok":
        return "valid call failed: %s" % res["text"]
    if not res["ok"]:
        return "wrong result: %s" % res
    return None


def test_fuzz_bad_and_edge_calls():
    t0 = time.time()
    cases = generate()
    assert len(cases) >= 1000
    batches = [cases[i::BATCHES] for i in range(BATCHES)]
    with ThreadPoolExecutor(2) as pool:
        outs = list(pool.map(run_batch, batches))
    results, crashes, hangs = {}, [], []
    for r, c, h in outs:
        results.update(r)
        crashes += c
        hangs += h
    failures = []
    counts = dict(errors=0, valid_ref=0, valid_grad=0, valid_shape=0)
    per_path = {}
    for case in cases:
        res = results.get(case["id"])
        if res is None:
            continue
        bad = judge(case, res)
        if bad:
            failures.append("case %d (%s %s %s): %s" % (case["id"], case["op"], case["path"],
                                                       json.dumps(case.get("attrs"), default=str)[:300], bad))
        if res["status"] == "error":
            counts["errors"] += 1
        elif "relerr" in res:
            counts["valid_ref"] += 1
            counts["valid_grad"] += int(case.get("backward", False))
        else:
            counts["valid_shape"] += 1
        per_path[case["path"]] = per_path.get(case["path"], 0) + 1
    print("\nFB fuzz: %d calls (%s; %d batches, 2 at a time): %d raised an error, %d valid calls compared with the "
          "NumPy reference (%d with gradients), %d valid shape inferences; %d crashes, %d hangs, %d wrong outcomes; "
          "%.1f s"
          % (len(cases), ", ".join("%s %d" % kv for kv in sorted(per_path.items())), BATCHES, counts["errors"],
             counts["valid_ref"], counts["valid_grad"], counts["valid_shape"], len(crashes), len(hangs),
             len(failures), time.time() - t0))
    assert not crashes, "crashes: %s" % crashes[:3]
    assert not hangs, "hangs: %s" % hangs[:3]
    assert len(results) == len(cases)
    assert not failures, "%d wrong outcomes, e.g.\n%s" % (len(failures), "\n".join(failures[:15]))
    assert counts["errors"] >= 800 and counts["valid_ref"] >= 350 and counts["valid_grad"] >= 50
