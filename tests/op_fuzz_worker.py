"""Worker process of tests/test_op_fuzz.py: runs FB operator calls described in JSON.

stdin: a JSON list of cases (see tests/test_op_fuzz.py). For every case the worker prints
``BEGIN <id>`` before the call and ``RESULT <json>`` after it (flushed), so the parent can tell
which call a crash or a hang happened in. A case never raises out of here: the outcome (value
checked against tests/fbref.py, or the error text) is reported and judged by the parent.
"""
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
for p in (ROOT, os.path.join(ROOT, "tests")):
    if p not in sys.path:
        sys.path.insert(0, p)

import mxrepro  # noqa: E402,F401  (loads the FB operator library)
import mxnet as mx  # noqa: E402
import numpy as np  # noqa: E402
from mxnet import autograd  # noqa: E402

import fbref  # noqa: E402
from fbmsg import op_messages  # noqa: E402
from mxrepro import ops  # noqa: E402

DTYPES = {"float32": np.float32, "float64": np.float64, "float16": np.float16, "int32": np.int32,
          "uint8": np.uint8, "int64": np.int64}


def relerr(got, want, magnitude=0.0):
    """Max error relative to the larger of the reference's largest entry and ``magnitude``, the
    size of the terms summed into it (outputs with K = 1, or patches with a single non-zero
    entry, cancel exactly: a - d = 0, which float32 only reaches to its rounding)."""
    got = np.asarray(got, np.float64)
    return float(np.abs(got - want).max() / max(np.abs(want).max(), magnitude, 1e-30))


def magnitudes(x, w, gy, scale, geo):
    """Sizes of the summed terms: forward sum_f s (v.x)^2 + sum_k s v^2 x^2 + |b|-free, and the
    same bound for the data and weight gradients (absolute values throughout)."""
    x, w = np.abs(x), np.abs(w)
    N, F = w.shape[:2]
    s = np.asarray(scale, np.float64)
    X = fbref.im2col(x, **geo)
    V = w.reshape(N, F, -1)
    T = np.einsum("bhwk,nfk->bhwnf", X, V)
    fwd = np.einsum("bhwnf,f->bhwn", T ** 2, s) + np.einsum("bhwk,nfk,f->bhwn", X ** 2, V ** 2, s)
    if gy is None:
        return fwd.max(), 0.0, 0.0
    G = np.abs(gy).transpose(0, 2, 3, 1)
    c = np.einsum("nfk,f->nk", V ** 2, s)
    gX = 2 * np.einsum("bhwn,f,bhwnf,nfk->bhwk", G, s, T, V) + 2 * np.einsum("bhwn,nk->bhwk", G, c) * (1 + X)
    gx = fbref.col2im(gX, x.shape, **geo)
    gV = 2 * np.einsum("bhwn,f,bhwnf,bhwk->nfk", G, s, T, X) + 2 * np.einsum("bhwn,f,nfk,bhwk->nfk", G, s, V, X ** 2)
    return fwd.max(), gx.max(), gV.max()


def make_input(spec, rng):
    """(the object passed to the operator, its float64 values or None)."""
    kind = spec["type"]
    if kind == "object":
        return spec.get("value"), None
    shape = tuple(spec["shape"])
    vals = rng.uniform(-1, 1, shape) * spec.get("scale", 1.0)
    dt = DTYPES[spec.get("dtype", "float32")]
    if np.issubdtype(dt, np.integer):
        vals = np.rint(vals * 3)
    arr = vals.astype(dt)
    exact = arr.astype(np.float32).astype(np.float64)   # what the operator sees
    if kind == "nd":
        return mx.nd.array(arr, dtype=dt), exact
    if kind == "numpy":
        return arr, exact
    if kind == "list":
        return arr.tolist(), exact
    if kind == "ones":
        return mx.nd.ones(shape), np.ones(shape)
    raise ValueError(kind)


def reference(case, vals, y, grads):
    """Max relative error of the outputs (and gradients) against the NumPy reference."""
    ref = case["ref"]
    geo = {k: tuple(ref[k]) for k in ("kernel", "stride", "pad", "dilate")}
    scale = [ref["scale"]] * ref["F"]
    x, w, b = vals["data"], vals["weight"], vals.get("bias")
    gy = None if grads is None else case["gy_scale"] * np.ones(y.shape)
    mag_y, mag_gx, mag_gw = magnitudes(x, w, gy, scale, geo)
    err = relerr(y, fbref.forward(x, w, b, scale=scale, **geo), mag_y)
    if grads is not None:
        gx, gw, gb = fbref.backward(x, w, gy, scale=scale, compat=ref.get("compat", False), **geo)
        err = max(err, relerr(grads[0], gx, mag_gx), relerr(grads[1], gw, mag_gw))
        if b is not None:
            err = max(err, relerr(grads[2], gb))
    return err


def run(case):
    rng = np.random.RandomState(case["seed"])
    op, path, attrs = case["op"], case["path"], case["attrs"]
    env = case.get("env", {})
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        objs, vals = {}, {}
        for name, spec in case.get("inputs", {}).items():
            objs[name], vals[name] = make_input(spec, rng)
        if path == "nd":
            kw = dict(attrs)
            kw.update({k: v for k, v in objs.items() if k in ("data", "weight", "bias")})
            backward = case.get("backward", False)
            if backward:
                for k in ("data", "weight", "bias"):
                    if isinstance(objs.get(k), mx.nd.NDArray):
                        objs[k].attach_grad()
                with autograd.record():
                    y = getattr(mx.nd, op)(**kw)
                y.backward(mx.nd.ones_like(y) * case["gy_scale"])
                grads = [objs[k].grad.asnumpy() for k in ("data", "weight", "bias") if k in objs]
            else:
                y = getattr(mx.nd, op)(**kw)
                grads = None
            y = y.asnumpy()
        elif path == "raw":
            order = [k for k in ("data", "weight", "bias", "mask") if k in objs]
            y = ops.compiled_op(op)(*[objs[k] for k in order], **attrs).asnumpy()
            grads = None
        elif path == "sym":
            with mx.util.np_shape(case.get("np_shape", False)):
                data = objs["data"] if "data" in objs else mx.sym.var("data")
                sym = getattr(mx.sym, op)(data=data, name="fb", **attrs)
                shapes = sym.infer_shape(data=tuple(case["shape"]))
            return {"status": "ok", "out_shape": list(shapes[1][0]),
                    "ok": list(shapes[1][0]) == case.get("out_shape")}
        elif path == "gluon":
            blk = ops.FactorizedBilinear(**attrs)
            blk.initialize()
            if case.get("hybridize"):
                blk.hybridize()
            blk(objs["data"]).wait_to_read()  # deferred init
            blk.weight.set_data(mx.nd.array(vals["weight"]))
            if "bias" in vals and blk.bias is not None:
                blk.bias.set_data(mx.nd.array(vals["bias"]))
            y = blk(objs["data"]).asnumpy()
            grads = None
        else:
            raise ValueError(path)
        err = reference(case, vals, y, grads)
        return {"status": "ok", "relerr": err, "ok": err < 1e-4}
    except mx.base.MXNetError as e:
        return {"status": "error", "msgs": op_messages(e), "text": str(e)[-600:]}
    except Exception as e:  # any other exception type is a finding too
        return {"status": "exception", "text": "%s: %s" % (type(e).__name__, str(e)[-600:])}
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def main():
    cases = json.load(sys.stdin)
    for case in cases:
        print("BEGIN %d" % case["id"], flush=True)
        res = run(case)
        res["id"] = case["id"]
        print("RESULT " + json.dumps(res), flush=True)


if __name__ == "__main__":
    main()
