"""FMConvolution1 / FMConvolution3 against the independent NumPy reference (tests/fbref.py),
finite differences, every API surface, DropFactor statistics, gradient accumulation, the
memory guard and every error path."""
import os

import mxnet as mx
import numpy as np
import pytest
from mxnet import autograd, gluon

import fbref
from fbmsg import op_message
from mxrepro import ops

OPS = ["FMConvolution1", "FMConvolution3"]
GEOMS = [
    dict(kernel=(1, 1)),
    dict(kernel=(3, 3), pad=(1, 1)),
    dict(kernel=(3, 2), stride=(2, 1), pad=(1, 0)),
    dict(kernel=(2, 2), dilate=(2, 1), pad=(1, 1)),
]


def full_geo(g):
    return dict(kernel=g["kernel"], stride=g.get("stride", (1, 1)), pad=g.get("pad", (0, 0)),
                dilate=g.get("dilate", (1, 1)))


def rand_problem(rng, B=3, C=4, H=6, W=5, N=3, F=2, kernel=(1, 1)):
    x = rng.uniform(-1, 1, (B, C, H, W))
    w = rng.normal(0, 0.5, (N, F, C) + tuple(kernel))
    b = rng.normal(0, 1, (N,))
    return x, w, b


def gen_op(op):
    """The compiled operator itself (explicit mask input), for fixed-mask tests."""
    return ops.compiled_op(op)


def relerr(a, b):
    return np.abs(a - b).max() / max(np.abs(b).max(), 1e-12)


# ------------------------------------------------------------------ forward / backward maths
@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("geo", GEOMS, ids=lambda g: "k%dx%d-s%s-p%s-d%s" % (g["kernel"] + (
    g.get("stride", (1, 1))[0], g.get("pad", (0, 0))[0], g.get("dilate", (1, 1))[0])))
@pytest.mark.parametrize("no_bias", [False, True])
def test_forward_backward_match_numpy(op, geo, no_bias):
    rng = np.random.RandomState(hash((op, str(geo), no_bias)) % 2 ** 31)
    g = full_geo(geo)
    x, w, b = rand_problem(rng, kernel=g["kernel"])
    ref = fbref.forward(x, w, None if no_bias else b, **g)
    ref_pair = fbref.forward_pairwise(x, w, None if no_bias else b, **g)
    assert np.allclose(ref, ref_pair)  # the two reference forms agree
    X, Wt, Bt = (mx.nd.array(a) for a in (x, w, b))
    for a in (X, Wt, Bt):
        a.attach_grad()
    with autograd.record():
        y = getattr(mx.nd, op)(data=X, weight=Wt, bias=None if no_bias else Bt, num_filter=3,
                               num_factor=2, no_bias=no_bias, p=0.0, **g)
    assert y.shape == ref.shape
    assert relerr(y.asnumpy(), ref) < 1e-5
    gy = rng.normal(0, 1, y.shape)
    y.backward(mx.nd.array(gy))
    gx, gw, gb = fbref.backward(x, w, gy, **g)
    assert relerr(X.grad.asnumpy(), gx) < 1e-5
    assert relerr(Wt.grad.asnumpy(), gw) < 1e-5
    if not no_bias:
        assert relerr(Bt.grad.asnumpy(), gb) < 1e-5


def test_no_half_factor_and_diagonal_removed():
    """y = 2 * sum_{k<l} <w_k,w_l> x_k x_l: with one factor v=(1,1) and x=(a,b), y = 2ab."""
    x = mx.nd.array([[[[3.0]], [[5.0]]]])        # (1, 2, 1, 1)
    w = mx.nd.ones((1, 1, 2, 1, 1))
    for op in OPS:
        y = getattr(mx.nd, op)(data=x, weight=w, num_filter=1, num_factor=1, kernel=(1, 1), no_bias=True, p=0)
        assert y.asscalar() == pytest.approx(30.0)


@pytest.mark.parametrize("op", OPS)
def test_numeric_gradient(op):
    rng = np.random.RandomState(3)
    x, w, b = rand_problem(rng, B=2, C=3, H=4, W=4, N=2, F=2, kernel=(3, 3))
    sym = getattr(mx.sym, op)(data=mx.sym.var("data"), num_filter=2, num_factor=2, kernel=(3, 3),
                              stride=(1, 2), pad=(1, 1), p=0.0, name="fb")
    loc = {"data": x.astype(np.float32), "fb_weight": w.astype(np.float32), "fb_bias": b.astype(np.float32)}
    mx.test_utils.check_numeric_gradient(sym, loc, numeric_eps=1e-2, rtol=2e-2, atol=2e-2,
                                         grad_nodes=["data", "fb_weight", "fb_bias"])


@pytest.mark.parametrize("op", OPS)
def test_reference_grad_mode_is_the_documented_original(op):
    """grad_mode='reference' reproduces docs/reference/fbn.md §1.4: gx differs from the exact gradient by
    2 sum_j c_j g_j (x - 1); weight and bias gradients are unchanged."""
    rng = np.random.RandomState(5)
    x, w, b = rand_problem(rng, N=2, F=3)
    gy = rng.normal(0, 1, (3, 2, 6, 5))
    grads = {}
    for mode in ("exact", "reference"):
        X, Wt, Bt = (mx.nd.array(a) for a in (x, w, b))
        for a in (X, Wt, Bt):
            a.attach_grad()
        with autograd.record():
            y = getattr(mx.nd, op)(data=X, weight=Wt, bias=Bt, num_filter=2, num_factor=3, kernel=(1, 1), p=0, grad_mode=mode)
        y.backward(mx.nd.array(gy))
        grads[mode] = [a.grad.asnumpy() for a in (X, Wt, Bt)]
    gx_ref = fbref.backward(x, w, gy, compat=True)[0]
    assert relerr(grads["reference"][0], gx_ref) < 1e-5
    c = (w.reshape(2, 3, 4) ** 2).sum(1)                     # (N, K)
    diff = 2 * np.einsum("bnhw,nk->bkhw", gy, c) * (x - 1)
    assert relerr(grads["reference"][0] - grads["exact"][0], diff) < 1e-4
    assert np.allclose(grads["reference"][1], grads["exact"][1])
    assert np.allclose(grads["reference"][2], grads["exact"][2])


def test_fmconv1_chunking_matches_fmconv3():
    """A tiny workspace forces FMConvolution1 to chunk over images and over output blocks."""
    rng = np.random.RandomState(7)
    x, w, b = rand_problem(rng, B=5, C=8, H=5, W=5, N=7, F=3)
    res = {}
    for op, ws in (("FMConvolution3", 512), ("FMConvolution1", 1)):
        X, Wt, Bt = (mx.nd.array(a) for a in (x, w, b))
        for a in (X, Wt, Bt):
            a.attach_grad()
        with autograd.record():
            y = getattr(mx.nd, op)(data=X, weight=Wt, bias=Bt, num_filter=7, num_factor=3, kernel=(1, 1), p=0, workspace=ws)
        y.backward(mx.nd.ones_like(y))
        res[op] = [y.asnumpy()] + [a.grad.asnumpy() for a in (X, Wt, Bt)]
    for a, b_ in zip(res["FMConvolution1"], res["FMConvolution3"]):
        assert relerr(a, b_) < 1e-5
    # a bigger problem with a 1 MB budget: the scratch peak stays inside it
    x = mx.nd.random.uniform(-1, 1, (16, 64, 8, 8))
    w = mx.nd.random.normal(0, 0.1, (50, 10, 64, 1, 1))
    mx.nd.FMConvolution1(data=x, weight=w, no_bias=True, num_filter=50, num_factor=10, kernel=(1, 1), p=0, workspace=1).wait_to_read()
    assert 0 < ops.last_peak_bytes() <= 1 << 20
    mx.nd.FMConvolution3(data=x, weight=w, no_bias=True, num_filter=50, num_factor=10, kernel=(1, 1), p=0, workspace=1).wait_to_read()
    assert ops.last_peak_bytes() > 1 << 20   # the batched variant ignores the budget (documented)


@pytest.mark.parametrize("op", OPS)
def test_several_live_states_keep_their_own_scratch(op):
    """Scratch memory is pooled across operator states (fbop_cpu.cc): three calls of different
    sizes recorded before any backward (FMConvolution3 keeps X and T in its scratch until then),
    then more calls between the backward passes, must each still get their own exact gradients."""
    rng = np.random.RandomState(11)
    probs = [rand_problem(rng, B=B, C=C, H=5, W=4, N=3, F=2) for B, C in ((2, 4), (4, 6), (3, 4))]
    arrays, ys = [], []
    with autograd.record():
        for x, w, b in probs:
            X, Wt, Bt = (mx.nd.array(a) for a in (x, w, b))
            for a in (X, Wt, Bt):
                a.attach_grad()
            arrays.append((X, Wt, Bt))
            ys.append(getattr(mx.nd, op)(data=X, weight=Wt, bias=Bt, num_filter=3, num_factor=2,
                                         kernel=(1, 1), p=0))
    for i in (2, 0, 1):                           # backward in another order, with calls between
        x, w, b = probs[i]
        gy = rng.normal(0, 1, ys[i].shape)
        getattr(mx.nd, op)(data=mx.nd.array(rng.uniform(-1, 1, (6, 5, 7, 7))),
                           weight=mx.nd.array(rng.normal(0, 1, (4, 3, 5, 1, 1))), no_bias=True,
                           num_filter=4, num_factor=3, kernel=(1, 1), p=0).wait_to_read()
        ys[i].backward(mx.nd.array(gy))
        assert relerr(ys[i].asnumpy(), fbref.forward(x, w, b)) < 1e-5
        for got, want in zip(arrays[i], fbref.backward(x, w, gy)):
            assert relerr(got.grad.asnumpy(), want) < 1e-5


# ------------------------------------------------------------------ API surfaces
def _seed_problem():
    rng = np.random.RandomState(11)
    return rand_problem(rng, B=2, C=6, H=4, W=4, N=5, F=3)


@pytest.mark.parametrize("op", OPS)
def test_same_results_ndarray_symbol_gluon(op):
    x, w, b = _seed_problem()
    kw = dict(num_filter=5, num_factor=3, kernel=(1, 1), p=0.5)
    ref = fbref.forward(x, w, b)
    # NDArray (inference: no dropping, 'inverted' scaling -> the full term)
    y_nd = getattr(mx.nd, op)(data=mx.nd.array(x), weight=mx.nd.array(w), bias=mx.nd.array(b), **kw).asnumpy()
    # Symbol, simple_bind, with the README's call form
    sym = getattr(mx.sym, op)(data=mx.sym.var("data"), stride=(1, 1), pad=(0, 0), name="bilinear1", **kw)
    assert sym.list_arguments() == ["data", "bilinear1_weight", "bilinear1_bias"]
    ex = sym.simple_bind(mx.cpu(), data=x.shape)
    ex.arg_dict["data"][:] = x
    ex.arg_dict["bilinear1_weight"][:] = w
    ex.arg_dict["bilinear1_bias"][:] = b
    y_sym = ex.forward(is_train=False)[0].asnumpy()
    # hybridized Gluon block
    blk = ops.FactorizedBilinear(5, num_factor=3, p=0.5, variant=int(op[-1]))
    blk.initialize()
    blk.hybridize()
    blk(mx.nd.array(x))  # deferred init infers C
    blk.weight.set_data(mx.nd.array(w))
    blk.bias.set_data(mx.nd.array(b))
    y_gl = blk(mx.nd.array(x)).asnumpy()
    for y in (y_nd, y_sym, y_gl):
        assert relerr(y, ref) < 1e-5


def _net(op, classes=3, F=4):
    data = mx.sym.var("data")
    h = mx.sym.tanh(mx.sym.Convolution(data, num_filter=6, kernel=(1, 1), name="conv"))
    fb = getattr(mx.sym, op)(data=h, num_filter=classes, num_factor=F, kernel=(1, 1), p=0.25, name="bilinear1")
    lin = mx.sym.Convolution(h, num_filter=classes, kernel=(1, 1), name="fc")
    out = mx.sym.Flatten(mx.sym.Pooling(fb + lin, global_pool=True, kernel=(1, 1), pool_type="avg"))
    return mx.sym.SoftmaxOutput(out, name="softmax")


@pytest.mark.parametrize("op", OPS)
def test_module_fit_learns_a_quadratic_problem(op):
    """Classes defined by the sign of x0*x1 (not linearly separable): Module.fit with partial
    shape/type inference (weight variables declare nothing) learns it with the FB head."""
    mx.random.seed(0)
    rng = np.random.RandomState(0)
    x = rng.uniform(-1, 1, (512, 2, 2, 2)).astype(np.float32)
    xx = x[:, :, 0, 0]
    x[:] = xx[:, :, None, None]
    y = (xx[:, 0] * xx[:, 1] > 0).astype(np.float32)
    it = mx.io.NDArrayIter(x, y, batch_size=32, shuffle=True)
    data = mx.sym.var("data")
    fb = getattr(mx.sym, op)(data=data, num_filter=2, num_factor=2, kernel=(1, 1), p=0.0, name="bilinear1")
    lin = mx.sym.Convolution(data, num_filter=2, kernel=(1, 1), name="fc")
    out = mx.sym.SoftmaxOutput(mx.sym.Flatten(mx.sym.Pooling(fb + lin, global_pool=True, kernel=(1, 1), pool_type="avg")), name="softmax")
    mod = mx.mod.Module(out, context=mx.cpu())
    mod.fit(it, num_epoch=15, optimizer="sgd", optimizer_params={"learning_rate": 0.5, "momentum": 0.9},
            initializer=mx.init.Xavier(rnd_type="gaussian", factor_type="in", magnitude=2))
    acc = mod.score(mx.io.NDArrayIter(x, y, batch_size=32), "acc")[0][1]
    assert acc > 0.9


@pytest.mark.parametrize("op", OPS)
def test_export_and_symbolblock_import(tmp_path, op):
    class Net(gluon.HybridBlock):
        def __init__(self):
            super().__init__()
            with self.name_scope():
                self.conv = gluon.nn.Conv2D(6, 1)
                self.fb = ops.FactorizedBilinear(4, num_factor=3, p=0.5, variant=int(op[-1]))

        def hybrid_forward(self, F, x):
            return F.mean(self.fb(F.tanh(self.conv(x))), axis=(2, 3))

    net = Net()
    net.initialize(mx.init.Xavier())
    net.hybridize()
    x = mx.nd.random.uniform(shape=(2, 3, 5, 5))
    y = net(x)
    prefix = str(tmp_path / "fbnet")
    net.export(prefix, epoch=0)
    js = open(prefix + "-symbol.json").read()
    assert '"op": "%s"' % op in js and '"op": "Dropout"' in js
    back = gluon.SymbolBlock.imports(prefix + "-symbol.json", ["data"], prefix + "-0000.params")
    assert relerr(back(x).asnumpy(), y.asnumpy()) < 1e-6


def test_xavier_init_matches_original():
    """sigma = sqrt(2/(F*C)) for the 5-D weight (docs/reference/fbn.md §1.5), zero bias."""
    sym = mx.sym.FMConvolution3(data=mx.sym.var("data"), num_filter=100, num_factor=20, kernel=(1, 1), p=0.5, name="bilinear1")
    mod = mx.mod.Module(mx.sym.MakeLoss(mx.sym.sum(sym)), label_names=None)
    mod.bind(data_shapes=[("data", (2, 256, 2, 2))])
    mod.init_params(mx.init.Xavier(rnd_type="gaussian", factor_type="in", magnitude=2))
    args = mod.get_params()[0]
    wstd = args["bilinear1_weight"].asnumpy().std()
    assert wstd == pytest.approx(np.sqrt(2.0 / (20 * 256)), rel=0.05)
    assert not args["bilinear1_bias"].asnumpy().any()


# ------------------------------------------------------------------ DropFactor
def _decoder(F=8):
    """N=2 outputs, each with factors v_f = 2^(f-1) e0 + e1 (f=1..F), and x = (1,1) at every
    position: path f then contributes exactly 2^f (times its scale), so the output decodes the mask."""
    w = np.zeros((2, F, 2, 1, 1), np.float32)
    for f in range(F):
        w[:, f, 0] = 2.0 ** (f - 1)
        w[:, f, 1] = 1.0
    return mx.nd.array(w)


def _decode(y, q):
    v = np.rint(np.asarray(y, np.float64) * q).astype(np.int64)
    return v


@pytest.mark.parametrize("op", OPS)
def test_dropfactor_mask_shared_and_frequency(op):
    F, p = 8, 0.3
    w = _decoder(F)
    x = mx.nd.ones((4, 2, 3, 3))
    full = sum(2 ** f for f in range(F))
    drops = np.zeros(F)
    calls = 300
    for _ in range(calls):
        with autograd.train_mode():
            y = getattr(mx.nd, op)(data=x, weight=w, no_bias=True, num_filter=2, num_factor=F, kernel=(1, 1), p=p).asnumpy()
        codes = _decode(y, 1 - p)
        assert (codes == codes.flat[0]).all()   # one mask for batch, positions and outputs
        kept = [(codes.flat[0] >> f) & 1 for f in range(F)]
        assert codes.flat[0] == sum(k << f for f, k in enumerate(kept))
        drops += 1 - np.array(kept)
    rate = drops / calls
    assert abs(rate.mean() - p) < 0.05 and (np.abs(rate - p) < 0.12).all()
    # inference: nothing dropped, 'inverted' scaling -> exactly the full term
    y = getattr(mx.nd, op)(data=x, weight=w, no_bias=True, num_filter=2, num_factor=F, kernel=(1, 1), p=p).asnumpy()
    assert np.allclose(y, full)
    assert full > 0


@pytest.mark.parametrize("mode,train_scale,test_scale", [
    ("inverted", 1 / 0.6, 1.0), ("reference", 1 / 0.6, 0.6), ("paper", 1.0, 0.6)])
def test_dropfactor_scaling_modes(mode, train_scale, test_scale):
    """docs/reference/fbn.md §2: a kept path's scale in training and every path's scale in inference."""
    F, p = 6, 0.4
    w = _decoder(F)
    x = mx.nd.ones((1, 2, 1, 1))
    full = sum(2 ** f for f in range(F))
    y = mx.nd.FMConvolution3(data=x, weight=w, no_bias=True, num_filter=2, num_factor=F, kernel=(1, 1), p=p, dropfactor_mode=mode)
    assert y.asnumpy().flat[0] == pytest.approx(full * test_scale, rel=1e-5)
    # training with a known mask through the compiled op (Dropout's {0, 1/q} output)
    mask = mx.nd.array([1 / 0.6, 0, 1 / 0.6, 0, 0, 1 / 0.6])
    y = gen_op("FMConvolution3")(x, w, mask, num_filter="2", num_factor=str(F), kernel="(1,1)", no_bias="True", p=str(p), dropfactor_mode=mode)
    kept = 2 ** 0 + 2 ** 2 + 2 ** 5
    assert y.asnumpy().flat[0] == pytest.approx(kept * train_scale, rel=1e-5)


def test_dropfactor_training_expectation_equals_inference():
    """Default ('inverted') scaling: the mean training output over many masks equals inference."""
    F, p = 8, 0.5
    w = _decoder(F)
    x = mx.nd.ones((1, 2, 1, 1))
    with autograd.train_mode():
        ys = [mx.nd.FMConvolution1(data=x, weight=w, no_bias=True, num_filter=2, num_factor=F, kernel=(1, 1), p=p).asnumpy().flat[0] for _ in range(400)]
    y_inf = mx.nd.FMConvolution1(data=x, weight=w, no_bias=True, num_filter=2, num_factor=F, kernel=(1, 1), p=p).asnumpy().flat[0]
    assert np.mean(ys) == pytest.approx(y_inf, rel=0.06)


def test_dropfactor_seeded_and_gradient_uses_the_same_mask():
    F, p = 8, 0.5
    w = _decoder(F)
    x = mx.nd.ones((2, 2, 2, 2))

    def run():
        out = []
        for _ in range(5):
            with autograd.train_mode():
                out.append(mx.nd.FMConvolution3(data=x, weight=w, no_bias=True, num_filter=2, num_factor=F, kernel=(1, 1), p=p).asnumpy().flat[0])
        return out

    mx.random.seed(42)
    a = run()
    mx.random.seed(42)
    b = run()
    mx.random.seed(7)
    c = run()
    assert a == b and a != c
    # dropped factors get zero weight gradient in the same call
    wt = w.copy()
    wt.attach_grad()
    with autograd.record():
        y = mx.nd.FMConvolution3(data=x, weight=wt, no_bias=True, num_filter=2, num_factor=F, kernel=(1, 1), p=p)
    y.backward()
    code = _decode(y.asnumpy().flat[0], 1 - p)
    g = wt.grad.asnumpy()
    for f in range(F):
        kept = (code >> f) & 1
        assert (np.abs(g[:, f]).sum() > 0) == bool(kept)


def test_symbol_mode_follows_is_train():
    F, p = 8, 0.5
    sym = mx.sym.FMConvolution3(data=mx.sym.var("data"), num_filter=2, num_factor=F, kernel=(1, 1), no_bias=True, p=p, name="fb")
    # a training executor (gradients requested). Note: an executor bound with grad_req='null'
    # everywhere is an inference executor; MXNet's MKLDNN subgraph pass then removes Dropout.
    ex = sym.simple_bind(mx.cpu(), data=(1, 2, 1, 1), grad_req="write")
    ex.arg_dict["data"][:] = 1
    ex.arg_dict["fb_weight"][:] = _decoder(F)
    full = sum(2 ** f for f in range(F))
    assert ex.forward(is_train=False)[0].asnumpy().flat[0] == pytest.approx(full)
    vals = {float(ex.forward(is_train=True)[0].asnumpy().flat[0]) for _ in range(20)}
    assert len(vals) > 3 and all(v != full for v in vals)


# ------------------------------------------------------------------ errors
def _nd_call(op="FMConvolution3", shape=(2, 4, 3, 3), wshape=(3, 2, 4, 1, 1), dtype="float32", **kw):
    args = dict(num_filter=3, num_factor=2, kernel=(1, 1), p=0.5)
    args.update(kw)
    x = mx.nd.ones(shape, dtype=dtype)
    w = mx.nd.ones(wshape, dtype=dtype)
    b = mx.nd.ones((3,), dtype=dtype)
    return getattr(mx.nd, op)(data=x, weight=w, bias=b, **args).asnumpy()


def _raises(fn, op):
    """The operator's single message of the MXNetError fn() raises; it must start with the op."""
    with pytest.raises(mx.base.MXNetError) as e:
        fn()
    msg = op_message(e.value)
    assert msg.startswith(op + ": "), msg
    return msg


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("case,kwargs,message", [
    ("ndim", dict(shape=(2, 4, 3)), "input 'data' must be 4-D (batch, channel, height, width), got 3-D shape (2, 4, 3)"),
    ("channels", dict(wshape=(3, 2, 5, 1, 1)), "input 'weight' has shape (3, 2, 5, 1, 1) but input 'data' of "
                                               "shape (2, 4, 3, 3) with num_filter=3, num_factor=2 and kernel=(1, 1) needs (3, 2, 4, 1, 1)"),
    ("num_factor0", dict(num_factor=0), "attribute num_factor='0' is invalid: must be an integer in [1, 100000]"),
    ("num_filter0", dict(num_filter=0), "attribute num_filter='0' is invalid: must be an integer in [1, 1000000]"),
    ("p1", dict(p=1.0), "attribute p='1.0' is invalid: must be a number in [0, 1)"),
    ("pneg", dict(p=-0.1), "attribute p='-0.1' is invalid: must be a number in [0, 1)"),
    ("dtype", dict(dtype="float64"), "input 'data' has dtype float64; only float32 is supported"),
    ("kernel", dict(kernel="a"), "attribute kernel='a' is invalid: expected two integers"),
    ("pstr", dict(p="x"), "attribute p='x' is invalid"),
    ("mode", dict(dropfactor_mode="bogus"), "attribute dropfactor_mode='bogus' is invalid: must be one of 'inverted', 'reference', 'paper'"),
    ("gmode", dict(grad_mode="bogus"), "attribute grad_mode='bogus' is invalid: must be one of 'exact', 'reference'"),
    ("unknown", dict(bogus=1), "unknown attribute bogus='1' (known: num_filter,"),
    ("toolarge", dict(kernel=(5, 5)), "kernel=(5, 5) with dilate=(1, 1) spans 5x5 and does not fit input 'data' of "
                                      "shape (2, 4, 3, 3) padded by pad=(0, 0) to 3x3"),
])
def test_errors_name_operator_and_problem(op, case, kwargs, message):
    assert message in _raises(lambda: _nd_call(op, **kwargs), op)


def test_symbol_errors_at_inference():
    x = mx.sym.var("data")
    s = mx.sym.FMConvolution1(data=x, num_filter=3, num_factor=2, kernel=(1, 1), name="fb")
    with pytest.raises(mx.base.MXNetError, match="input 'data' must be 4-D"):
        s.infer_shape(data=(2, 3))
    with pytest.raises(mx.base.MXNetError, match="input 'weight' has shape"):
        s.infer_shape(data=(2, 4, 3, 3), fb_weight=(3, 2, 5, 1, 1))
    with pytest.raises(mx.base.MXNetError, match="input 'bias' has shape"):
        s.infer_shape(data=(2, 4, 3, 3), fb_bias=(4,))
    with pytest.raises(mx.base.MXNetError, match="input 'data' has dtype float16; only float32"):
        s.infer_type(data="float16")
    # the compiled op itself rejects bad attributes with its own name
    with pytest.raises(mx.base.MXNetError, match="FMConvolution3: unknown attribute bogus='1'"):
        gen_op("FMConvolution3")(mx.nd.ones((1, 2, 1, 1)), mx.nd.ones((1, 1, 2, 1, 1)), mx.nd.ones((1,)),
                                 num_filter="1", num_factor="1", kernel="(1,1)", no_bias="True", bogus="1")
    with pytest.raises(mx.base.MXNetError, match="FMConvolution1: attribute num_filter is required"):
        gen_op("FMConvolution1")(mx.nd.ones((1, 2, 1, 1)), mx.nd.ones((1, 1, 2, 1, 1)), mx.nd.ones((1,)),
                                 num_factor="1", kernel="(1,1)", no_bias="True")
    with pytest.raises(mx.base.MXNetError, match="FMConvolution3: input 'mask' has shape"):
        gen_op("FMConvolution3")(mx.nd.ones((1, 2, 1, 1)), mx.nd.ones((1, 2, 2, 1, 1)), mx.nd.ones((3,)),
                                 num_filter="1", num_factor="2", kernel="(1,1)", no_bias="True")


# ------------------------------------------------------------------ attribute grammar
def _x_w_b(rng, kernel=(1, 1)):
    x, w, b = rand_problem(rng, B=2, C=3, H=5, W=5, N=2, F=2, kernel=kernel)
    return x, w, b


@pytest.mark.parametrize("op", OPS)
def test_no_bias_is_parsed_as_mxnet_parses_booleans(op):
    """no_bias='False' (a string, as MXNet hands every attribute over) keeps the bias."""
    rng = np.random.RandomState(1)
    x, w, b = _x_w_b(rng)
    X, Wt, Bt = (mx.nd.array(a) for a in (x, w, b))
    with_bias, without = fbref.forward(x, w, b), fbref.forward(x, w, None)
    for v in ("False", "false", "0", False, 0, " False "):
        y = getattr(mx.nd, op)(data=X, weight=Wt, bias=Bt, num_filter=2, num_factor=2, kernel=(1, 1), p=0, no_bias=v)
        assert relerr(y.asnumpy(), with_bias) < 1e-5, v
        y = gen_op(op)(X, Wt, Bt, mx.nd.ones((2,)), num_filter="2", num_factor="2", kernel="(1,1)", p="0", no_bias=str(v))
        assert relerr(y.asnumpy(), with_bias) < 1e-5, v
    for v in ("True", "true", "1", True, 1):
        y = getattr(mx.nd, op)(data=X, weight=Wt, num_filter=2, num_factor=2, kernel=(1, 1), p=0, no_bias=v)
        assert relerr(y.asnumpy(), without) < 1e-5, v
    sym = getattr(mx.sym, op)(data=mx.sym.var("data"), num_filter=2, num_factor=2, kernel=(1, 1), no_bias="False", name="fb")
    assert "fb_bias" in sym.list_arguments()
    sym = getattr(mx.sym, op)(data=mx.sym.var("data"), num_filter=2, num_factor=2, kernel=(1, 1), no_bias="true", name="fb")
    assert "fb_bias" not in sym.list_arguments()
    for v in ("maybe", "FALSE", "None", "", "2", "no", 2, 0.0):
        msg = _raises(lambda: getattr(mx.nd, op)(data=X, weight=Wt, bias=Bt, num_filter=2, num_factor=2,
                                                 kernel=(1, 1), no_bias=v), op)
        assert msg == "%s: attribute no_bias='%s' is invalid: must be one of True, False, true, false, 1, 0" % (op, v)
    # a bias next to no_bias=True would be dropped: refused
    assert "input 'bias' was given but no_bias=True" in _raises(
        lambda: getattr(mx.nd, op)(data=X, weight=Wt, bias=Bt, num_filter=2, num_factor=2, kernel=(1, 1), no_bias=True), op)


@pytest.mark.parametrize("op", OPS)
def test_tuple_attributes_are_parsed_strictly(op):
    rng = np.random.RandomState(2)
    x, w, b = _x_w_b(rng, kernel=(2, 2))
    X, Wt, Bt = (mx.nd.array(a) for a in (x, w, b))
    ref = fbref.forward(x, w, b, kernel=(2, 2), stride=(1, 1), pad=(1, 1), dilate=(1, 1))

    def call(**kw):
        args = dict(num_filter=2, num_factor=2, kernel=(2, 2), pad=(1, 1), p=0)
        args.update(kw)
        return getattr(mx.nd, op)(data=X, weight=Wt, bias=Bt, **args)

    for pad in ("(1, 1)", "(1,1)", "[1,1]", " ( 1 , 1 ) ", "(1, 1,)", "1", 1, (1, 1), [1, 1], np.int64(1)):
        assert relerr(call(pad=pad).asnumpy(), ref) < 1e-5, pad
        y = gen_op(op)(X, Wt, Bt, mx.nd.ones((2,)), num_filter="2", num_factor="2", kernel="(2, 2)", p="0", pad=str(pad))
        assert relerr(y.asnumpy(), ref) < 1e-5, pad
    syntax = "expected two integers (give '(h, w)' or one integer for both)"
    for bad, why in [("(1,", syntax), ("", syntax), ("1,1", syntax), ("(1.5, 1)", syntax), ((1.0, 1.0), syntax),
                     ("(a, 1)", syntax), ("((1, 1))", syntax), ("(1;1)", syntax), ("(1, 1]", syntax),
                     ("()", "expected 2 entries, got 0"), ("(1,)", "expected 2 entries, got 1"), ((1,), "expected 2 entries, got 1"),
                     ("(1, 1, 1)", "expected 2 entries, got 3"), ((-1, 1), "every entry must be an integer >= 0"),
                     ("(1, 99999999999)", "every entry must be an integer >= 0 and <= 2147483647")]:
        msg = _raises(lambda: call(pad=bad), op)
        assert msg.startswith("%s: attribute pad='%s' is invalid: %s" % (op, bad, why)), msg
    for attr in ("kernel", "stride", "dilate"):
        for bad in ("(0, 1)", "0", (1, -2)):
            msg = _raises(lambda: call(**{attr: bad}), op)
            assert msg == "%s: attribute %s='%s' is invalid: every entry must be an integer >= 1" % (op, attr, bad), msg


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("attr,value,why", [
    ("num_filter", 1000001, "must be an integer in [1, 1000000]"),
    ("num_filter", "3.0", "must be an integer in [1, 1000000]"),
    ("num_filter", True, "must be an integer in [1, 1000000]"),
    ("num_factor", 100001, "must be an integer in [1, 100000]"),
    ("num_factor", -2, "must be an integer in [1, 100000]"),
    ("p", "nan", "must be a number in [0, 1) (the DropFactor drop rate)"),
    ("p", "inf", "must be a number in [0, 1) (the DropFactor drop rate)"),
    ("p", "0.5x", "must be a number in [0, 1) (the DropFactor drop rate)"),
    ("workspace", -1, "must be an integer in [0, 1048576] (MB)"),
    ("workspace", 1048577, "must be an integer in [0, 1048576] (MB)"),
    ("memory_limit_mb", -1, "must be an integer in [0, 1073741824] (MB; 0 = no limit)"),
    ("num_group", 2, "must be 1 (grouped FB layers are not implemented)"),
    ("eps", -1e-3, "must be a finite number >= 0 (unused, as in the original)"),
    ("dropfactor_mode", "Inverted", "must be one of 'inverted', 'reference', 'paper'"),
    ("grad_mode", "", "must be one of 'exact', 'reference'"),
])
def test_value_ranges(op, attr, value, why):
    msg = _raises(lambda: _nd_call(op, **{attr: value}), op)
    assert msg == "%s: attribute %s='%s' is invalid: %s" % (op, attr, value, why)
    # the compiled operator says the same when MXNet hands it the string
    raw = dict(num_filter="3", num_factor="2", kernel="(1,1)", p="0.5")
    raw[attr] = str(value)
    msg2 = _raises(lambda: gen_op(op)(mx.nd.ones((2, 4, 3, 3)), mx.nd.ones((3, 2, 4, 1, 1)), mx.nd.ones((3,)),
                                      mx.nd.ones((2,)), **raw).asnumpy(), op)
    assert msg2 == msg


@pytest.mark.parametrize("op", OPS)
def test_edge_values_accepted(op):
    """Boundary values are accepted and compute the right thing (inference: path scale 1 in the
    default 'inverted' mode, 1-p in 'reference'/'paper')."""
    rng = np.random.RandomState(4)
    x, w, b = _x_w_b(rng)
    X, Wt, Bt = (mx.nd.array(a) for a in (x, w, b))
    for kw, scale in [(dict(p=0), 1), (dict(p="0.0"), 1), (dict(p=0.999999), 1), (dict(p="5e-1"), 1),
                      (dict(p=0.25, dropfactor_mode=" paper "), 0.75), (dict(p=0.25, dropfactor_mode="reference"), 0.75),
                      (dict(workspace=0), 1), (dict(workspace=1048576), 1), (dict(num_group=1), 1), (dict(eps=0), 1),
                      (dict(eps="1e-10"), 1), (dict(memory_limit_mb=0), 1), (dict(memory_limit_mb=1073741824), 1),
                      (dict(dilate=(3, 3), stride="2"), 1), (dict(pad="0"), 1), (dict(num_factor="+2"), 1)]:
        y = getattr(mx.nd, op)(data=X, weight=Wt, bias=Bt, **dict(dict(num_filter=2, num_factor=2, kernel=(1, 1)), **kw))
        g = dict(stride=(2, 2)) if "stride" in kw else {}
        assert relerr(y.asnumpy(), fbref.forward(x, w, b, scale=[scale] * 2, **g)) < 1e-5, kw


def test_error_text_is_per_call():
    """lib_api keeps every message of the process; each FB error shows only its own."""
    cases = [dict(kernel=(5, 5)), dict(shape=(2, 4, 3)), dict(wshape=(3, 2, 5, 1, 1)), dict(kernel=(7, 7))]
    seen = []
    for _ in range(2):
        for kw in cases:
            msg = _raises(lambda: _nd_call("FMConvolution3", **kw), "FMConvolution3")
            seen.append(msg)
    assert len(set(seen)) == len(cases) and seen[:len(cases)] == seen[len(cases):]
    assert "7x7" in seen[-1] and "5x5" not in seen[-1]


# ------------------------------------------------------------------ shapes
@pytest.mark.parametrize("op", OPS)
def test_zero_size_inputs_and_oversized_kernels_are_named(op):
    w, b = mx.nd.ones((3, 2, 4, 1, 1)), mx.nd.ones((3,))
    kw = dict(num_filter=3, num_factor=2, kernel=(1, 1))
    for name, shape in (("data", (0, 4, 3, 3)), ("data", (2, 4, 0, 3)), ("weight", (3, 2, 0, 1, 1)), ("bias", (0,))):
        arrs = dict(data=np.ones((2, 4, 3, 3)), weight=w, bias=b)
        arrs[name] = np.ones(shape, np.float32)
        msg = _raises(lambda: getattr(mx.nd, op)(**arrs, **kw), op)
        assert msg == "%s: input '%s' has shape %s: every dimension must be >= 1 (zero-size inputs are not supported)" % (
            op, name, shape)
    s = getattr(mx.sym, op)(data=mx.sym.var("data"), num_filter=3, num_factor=2, kernel=(4, 4), name="fb")
    with mx.util.np_shape(True):  # there a 0 reaches the operator as a real size
        msg = _raises(lambda: s.infer_shape(data=(2, 0, 3, 3)), op)
    assert "input 'data' has shape (2, 0, 3, 3): every dimension must be in [1, 2147483647]" in msg
    msg = _raises(lambda: s.infer_shape(data=(1, 2, 3, 3)), op)
    assert msg == ("%s: kernel=(4, 4) with dilate=(1, 1) spans 4x4 and does not fit input 'data' of shape (1, 2, 3, 3) "
                   "padded by pad=(0, 0) to 3x3" % op)
    # exactly the padded size fits (one output position); dilation counts
    s = getattr(mx.sym, op)(data=mx.sym.var("data"), num_filter=3, num_factor=2, kernel=(5, 5), pad=(1, 1), name="fb")
    assert s.infer_shape(data=(1, 2, 3, 3))[1] == [(1, 3, 1, 1)]
    s = getattr(mx.sym, op)(data=mx.sym.var("data"), num_filter=3, num_factor=2, kernel=(2, 2), dilate=(3, 1), name="fb")
    assert "spans 4x2 and does not fit" in _raises(lambda: s.infer_shape(data=(1, 2, 3, 3)), op)
    # partial inference stays possible: unknown batch (0 in MXNet's legacy shape mode)
    args, outs, _ = s.infer_shape_partial(data=(0, 2, 5, 5))
    assert args[1] == (3, 2, 2, 2, 2) and args[2] == (3,)
    # every size stays within int: padded input, output and weight elements
    s = getattr(mx.sym, op)(data=mx.sym.var("data"), num_filter=10, num_factor=5, kernel=1, pad=(1100000000, 0), name="fb")
    assert _raises(lambda: s.infer_shape(data=(1, 2, 1, 1)), op) == (
        "%s: pad=(1100000000, 0) makes input 'data' of shape (1, 2, 1, 1) 2200000001x1 once padded, above 2147483647" % op)
    s = getattr(mx.sym, op)(data=mx.sym.var("data"), num_filter=1000, num_factor=1, kernel=1, pad=30000, name="fb")
    assert "the output for input 'data' of shape (2, 1, 1, 1) would be (2, 1000, 60001, 60001), more than 2147483647" \
        in _raises(lambda: s.infer_shape(data=(2, 1, 1, 1)), op)
    s = getattr(mx.sym, op)(data=mx.sym.var("data"), num_filter=100000, num_factor=1000, kernel=3, name="fb")
    assert "input 'weight' would have shape (100000, 1000, 64, 3, 3) for input 'data' of shape (1, 64, 8, 8)" \
        in _raises(lambda: s.infer_shape(data=(1, 64, 8, 8)), op)


def test_gluon_block_checks_its_arguments():
    with pytest.raises(mx.base.MXNetError, match=r"^FMConvolution3: attribute num_filter='0' is invalid"):
        ops.FactorizedBilinear(0)
    with pytest.raises(mx.base.MXNetError, match=r"^FMConvolution1: attribute kernel='\(1,\)' is invalid"):
        ops.FactorizedBilinear(4, kernel_size=(1,), variant=1)
    with pytest.raises(mx.base.MXNetError, match=r"^FactorizedBilinear: in_channels=-1 is invalid: must be an integer >= 0"):
        ops.FactorizedBilinear(4, in_channels=-1)
    blk = ops.FactorizedBilinear(4, num_factor="3", kernel_size="[3, 3]", padding=1, in_channels=2)
    assert blk.weight.shape == (4, 3, 2, 3, 3) and "kernel=(3, 3)" in repr(blk)


# ------------------------------------------------------------------ grad_req='add'
def _stock_and_fb_blocks(variant, hybridize):
    conv = gluon.nn.Conv2D(3, kernel_size=1, in_channels=4)
    fb = ops.FactorizedBilinear(3, num_factor=2, in_channels=4, p=0.0, variant=variant)
    for blk in (conv, fb):
        blk.initialize(mx.init.Normal(0.5))
        if hybridize:
            blk.hybridize()
    return conv, fb


@pytest.mark.parametrize("variant", [1, 3])
@pytest.mark.parametrize("hybridize", [False, True])
def test_grad_req_add_accumulates_in_gluon(variant, hybridize):
    """Two backward passes with grad_req='add' give twice one pass, as stock Conv2D does."""
    rng = np.random.RandomState(8)
    xv = rng.uniform(-1, 1, (2, 4, 3, 3))
    ratios = {}
    for blk in _stock_and_fb_blocks(variant, hybridize):
        blk.collect_params().setattr("grad_req", "add")
        x = mx.nd.array(xv)
        x.attach_grad(grad_req="add")
        grads = []
        for _ in range(2):
            with autograd.record():
                y = blk(x)
            y.backward(mx.nd.ones_like(y))
            grads.append([x.grad.asnumpy().copy()] + [p.grad().asnumpy().copy() for p in blk.collect_params().values()])
        ratios[type(blk).__name__] = [np.abs(b).sum() / np.abs(a).sum() for a, b in zip(*grads)]
        if isinstance(blk, ops.FactorizedBilinear):  # the first pass is the exact gradient
            gx, gw, gb = fbref.backward(xv, blk.weight.data().asnumpy(), np.ones((2, 3, 3, 3)))
            for got, want in zip(grads[0], (gx, gw, gb)):
                assert relerr(got, want) < 1e-5
    assert np.allclose(ratios["Conv2D"], 2.0)
    assert np.allclose(ratios["FactorizedBilinear"], ratios["Conv2D"])


@pytest.mark.parametrize("op", OPS)
def test_grad_req_add_accumulates_with_simple_bind(op):
    rng = np.random.RandomState(9)
    vals = dict(data=rng.uniform(-1, 1, (2, 4, 3, 3)), fb_weight=rng.normal(0, 0.5, (3, 2, 4, 1, 1)),
                fb_bias=rng.normal(0, 1, (3,)))
    data = mx.sym.var("data")
    syms = {"fb": getattr(mx.sym, op)(data=data, num_filter=3, num_factor=2, kernel=(1, 1), p=0, name="fb"),
            "conv": mx.sym.Convolution(data=data, num_filter=3, kernel=(1, 1), name="fb")}
    gy = mx.nd.array(rng.normal(0, 1, (2, 3, 3, 3)))
    res = {}
    for key, sym in syms.items():
        for req in ("add", {"data": "add", "fb_weight": "write", "fb_bias": "null"}):
            ex = sym.simple_bind(mx.cpu(), data=(2, 4, 3, 3), grad_req=req)
            for k, a in ex.arg_dict.items():
                a[:] = vals[k].reshape(a.shape) if k != "fb_weight" or key == "fb" else vals[k][:, 0]
            for g in ex.grad_dict.values():
                if g is not None:
                    g[:] = 0
            out = []
            for _ in range(2):
                ex.forward(is_train=True)
                ex.backward(gy)
                out.append({k: g.asnumpy().copy() for k, g in ex.grad_dict.items() if g is not None})
            res[key, str(req)] = {k: np.abs(out[1][k]).sum() / np.abs(out[0][k]).sum() for k in out[0]}
    for req in ("add", str({"data": "add", "fb_weight": "write", "fb_bias": "null"})):
        assert res["fb", req] == pytest.approx(res["conv", req])
    assert res["fb", "add"] == pytest.approx({"data": 2.0, "fb_weight": 2.0, "fb_bias": 2.0})
    assert res["fb", str({"data": "add", "fb_weight": "write", "fb_bias": "null"})] == pytest.approx(
        {"data": 2.0, "fb_weight": 1.0})


@pytest.mark.parametrize("op", OPS)
def test_grad_req_add_accumulates_with_autograd(op):
    rng = np.random.RandomState(10)
    x, w, b = rand_problem(rng, B=2, C=3, H=3, W=3, N=2, F=2)
    arrs = [mx.nd.array(a) for a in (x, w, b)]
    for a in arrs:
        a.attach_grad(grad_req="add")
    for _ in range(3):
        with autograd.record():
            y = getattr(mx.nd, op)(*arrs, num_filter=2, num_factor=2, kernel=(1, 1), p=0)
        y.backward(mx.nd.ones_like(y))
    for got, want in zip(arrs, fbref.backward(x, w, np.ones((2, 2, 3, 3)))):
        assert relerr(got.grad.asnumpy(), 3 * want) < 1e-5


# ------------------------------------------------------------------ memory guard
def _fm3_mb(B, C, H, W, N, F):
    """The documented estimate of FMConvolution3's batched buffers for a 1x1 kernel, in MB."""
    S, K = B * H * W, C
    return (S * (4 * K + N * F + 2 * N) + 3 * N * K) * 4 / 2 ** 20


def test_memory_guard_default_limit_is_4_gb():
    sym = mx.sym.FMConvolution3(data=mx.sym.var("data"), num_filter=1000, num_factor=50, kernel=(1, 1), name="fb")
    # B images of 2048 x 14 x 14 (a ResNet-50-sized head at 14x14)
    B = max(b for b in range(1, 200) if _fm3_mb(b, 2048, 14, 14, 1000, 50) <= 4096)
    assert 50 < B < 150
    assert sym.infer_shape(data=(B, 2048, 14, 14))[1] == [(B, 1000, 14, 14)]
    msg = _raises(lambda: sym.infer_shape(data=(B + 1, 2048, 14, 14)), "FMConvolution3")
    assert msg == ("FMConvolution3: input 'data' of shape (%d, 2048, 14, 14) with num_filter=1000, num_factor=50 and "
                   "kernel=(1, 1) needs about %d MB of batched buffers (the whole batch at once), above the limit of "
                   "4096 MB (attribute memory_limit_mb, environment variable FBOP_MEMORY_LIMIT_MB; 0 = no limit). Use "
                   "FMConvolution1, which works in chunks within `workspace`, or a smaller batch"
                   % (B + 1, np.ceil(_fm3_mb(B + 1, 2048, 14, 14, 1000, 50))))
    mb = _fm3_mb(512, 2048, 14, 14, 1000, 50)  # about 23 GB
    assert 22000 < mb < 24000
    assert "needs about %d MB" % np.ceil(mb) in _raises(lambda: sym.infer_shape(data=(512, 2048, 14, 14)), "FMConvolution3")
    # FMConvolution1 takes the same call in chunks within its workspace
    sym1 = mx.sym.FMConvolution1(data=mx.sym.var("data"), num_filter=1000, num_factor=50, kernel=(1, 1), name="fb")
    assert sym1.infer_shape(data=(512, 2048, 14, 14))[1] == [(512, 1000, 14, 14)]


def test_memory_guard_attribute_and_environment(monkeypatch):
    x, w = mx.nd.ones((4, 16, 16, 16)), mx.nd.ones((20, 10, 16, 1, 1)) * 0.1
    assert 1 < _fm3_mb(4, 16, 16, 16, 20, 10) < 2

    def call(op="FMConvolution3", **kw):
        return getattr(mx.nd, op)(data=x, weight=w, no_bias=True, num_filter=20, num_factor=10, kernel=(1, 1), **kw).asnumpy()

    ref = call()
    msg = _raises(lambda: call(memory_limit_mb=1), "FMConvolution3")
    assert "needs about 2 MB of batched buffers" in msg and "above the limit of 1 MB" in msg
    assert np.array_equal(call(memory_limit_mb=2), ref) and np.array_equal(call(memory_limit_mb=0), ref)
    monkeypatch.setenv("FBOP_MEMORY_LIMIT_MB", "1")
    assert "above the limit of 1 MB" in _raises(call, "FMConvolution3")
    assert np.array_equal(call(memory_limit_mb=2), ref)               # the attribute wins
    assert np.allclose(call("FMConvolution1"), ref, rtol=1e-5)        # chunks within the limit instead
    assert 0 < ops.last_peak_bytes() <= 1 << 20
    monkeypatch.setenv("FBOP_MEMORY_LIMIT_MB", "0")
    assert np.array_equal(call(), ref)
    monkeypatch.setenv("FBOP_MEMORY_LIMIT_MB", "lots")
    assert _raises(call, "FMConvolution3") == (
        "FMConvolution3: environment variable FBOP_MEMORY_LIMIT_MB='lots' is invalid: must be an integer in "
        "[0, 1073741824] (MB; 0 = no limit)")
    monkeypatch.delenv("FBOP_MEMORY_LIMIT_MB")
    # FMConvolution1 is refused only when one image and one output exceed the limit
    big = mx.sym.FMConvolution1(data=mx.sym.var("data"), num_filter=10, num_factor=2, kernel=(3, 3), pad=(1, 1),
                                memory_limit_mb=100, name="fb")
    assert big.infer_shape(data=(8, 64, 64, 64))[1] == [(8, 10, 64, 64)]
    msg = _raises(lambda: big.infer_shape(data=(1, 256, 256, 256)), "FMConvolution1")
    assert "of scratch for one image and one output, above the limit of 100 MB" in msg
    assert "Use a smaller input or kernel" in msg


# ------------------------------------------------------------------ input conversion
@pytest.mark.parametrize("op", OPS)
def test_numpy_and_list_inputs_are_converted(op):
    rng = np.random.RandomState(12)
    x, w, b = rand_problem(rng, B=2, C=3, H=3, W=2, N=2, F=2)
    ref = fbref.forward(x, w, b)
    kw = dict(num_filter=2, num_factor=2, kernel=(1, 1), p=0)
    for args in ((x, w, b), (x.tolist(), mx.nd.array(w), list(b)), (mx.nd.array(x), w.astype(np.float32), tuple(b))):
        y = getattr(mx.nd, op)(*args, **kw)
        assert isinstance(y, mx.nd.NDArray) and y.dtype == np.float32 and y.context == mx.cpu()
        assert relerr(y.asnumpy(), ref) < 1e-5
    for name, bad, what in [("data", "x", "got str"), ("weight", {"a": 1}, "got dict"), ("bias", 3.0, "got float"),
                            ("data", mx.sym.var("d"), "got mxnet.symbol.symbol.Symbol"),
                            ("data", [[1, 2], [3]], "(a list) cannot be converted to a float32 array"),
                            ("weight", np.array(["a"]), "(a numpy.ndarray) cannot be converted to a float32 array")]:
        arrs = dict(data=x, weight=w, bias=b)
        arrs[name] = bad
        msg = _raises(lambda: getattr(mx.nd, op)(**arrs, **kw), op)
        assert msg.startswith("%s: input '%s' " % (op, name)) and what in msg, msg
    sym = getattr(mx.sym, op)
    msg = _raises(lambda: sym(data=mx.nd.array(x), **kw), op)
    assert msg == "%s: input 'data' must be an mx.sym.Symbol in mx.sym calls, got mxnet.ndarray.ndarray.NDArray" % op
    msg = _raises(lambda: sym(data=mx.sym.var("d"), weight=w, **kw), op)
    assert msg.startswith("%s: input 'weight' must be an mx.sym.Symbol" % op)


def test_library_reports_backend_and_rebuilds_when_stale(tmp_path):
    assert ops.gemm_backend() in ("onednn", "openblas")
    assert os.path.isabs(ops.library_path())
    assert not ops._stale(ops.CPU_LIB)
