"""The fused operators AFFGate, AddMean, UpsampleAdd, PlainBatchNorm (operators/fuse_*.cc, fuse.h)
against NumPy and MXNet's own operators (forward and every gradient, each layout / mode), finite
differences, their error messages, and the models that use them: fused and unfused graphs give the
same outputs and gradients (AFF / iAFF / ablation fusions, AFF and bL-Net networks at odd sizes),
with unchanged parameter names, export round trips and the float32-only fallback."""
import mxnet as mx
import numpy as np
import pytest
from mxnet import autograd, gluon, nd

from mxrepro.models import blnet, fused, get_model
from mxrepro.models import fusions as A


def relerr(a, b):
    return np.abs(a - b).max() / max(np.abs(b).max(), 1e-12)


def sigmoid(v):
    return 1.0 / (1.0 + np.exp(-v))


def _run(op, inputs, ograds, **attrs):
    """Forward and backward of mx.nd.<op>; returns (outputs, input gradients) as NumPy."""
    arrs = [nd.array(a) for a in inputs]
    for a in arrs:
        a.attach_grad()
    with autograd.record():
        out = getattr(nd, op)(*arrs, **attrs)
    outs = out if isinstance(out, (list, tuple)) else [out]
    autograd.backward(list(outs), [nd.array(g) for g in ograds])
    return [o.asnumpy() for o in outs], [a.grad.asnumpy() for a in arrs]


# ------------------------------------------------------------------------------------------------
# AFFGate
# ------------------------------------------------------------------------------------------------
def np_gate(x, y, a, b, scale, go, gm=None):
    """Reference in float64: out, mean, and the gradients for (x, y, a, b)."""
    w = sigmoid(a + b)
    out = scale * (x * w + y * (1 - w))
    mean = out.mean(axis=(2, 3), keepdims=True)
    hw = x.shape[2] * x.shape[3]
    g = go + (0 if gm is None else gm / hw)
    dl = scale * g * (x - y) * w * (1 - w)

    def fold(d, like):
        return d if like.shape == d.shape else d.sum(axis=(2, 3), keepdims=True)
    return out, mean, [scale * g * w, scale * g * (1 - w), fold(dl, a), fold(dl, b)]


LAYOUTS = [("full", "chan"), ("chan", "full"), ("full", "full"), ("chan", "chan")]


@pytest.mark.parametrize("la,lb", LAYOUTS, ids=lambda v: v)
@pytest.mark.parametrize("scale", [1.0, 2.0])
@pytest.mark.parametrize("spatial_mean", [False, True])
def test_affgate_matches_numpy(la, lb, scale, spatial_mean):
    rng = np.random.RandomState(hash((la, lb, scale, spatial_mean)) % 2 ** 31)
    shape = (3, 5, 7, 6)
    chan = shape[:2] + (1, 1)
    x, y = rng.normal(size=shape), rng.normal(size=shape)
    a = rng.normal(0, 2, shape if la == "full" else chan)
    b = rng.normal(0, 2, shape if lb == "full" else chan)
    go = rng.normal(size=shape)
    gm = rng.normal(size=chan) if spatial_mean else None
    outs, grads = _run("AFFGate", [x, y, a, b], [go] + ([gm] if spatial_mean else []), scale=scale,
                       spatial_mean=spatial_mean)
    ref, mean, rgrads = np_gate(x, y, a, b, scale, go, gm)
    assert len(outs) == (2 if spatial_mean else 1)
    assert outs[0].shape == shape and relerr(outs[0], ref) < 1e-6
    if spatial_mean:
        assert outs[1].shape == chan and relerr(outs[1], mean) < 1e-6
    for name, g, r in zip("xyab", grads, rgrads):
        assert g.shape == r.shape, name
        assert relerr(g, r) < 1e-5, name


def test_affgate_extreme_logits_saturate():
    """Logits far outside the sigmoid's range give exactly y (w=0) or x (w=1) and no NaN."""
    x, y = np.full((1, 2, 2, 2), 3.0), np.full((1, 2, 2, 2), -1.0)
    a = np.array([-200.0, 200.0]).reshape(1, 2, 1, 1) * np.ones((1, 2, 2, 2))
    b = np.zeros((1, 2, 1, 1))
    outs, grads = _run("AFFGate", [x, y, a, b], [np.ones((1, 2, 2, 2))])
    np.testing.assert_allclose(outs[0][0, 0], -1.0, atol=1e-6)
    np.testing.assert_allclose(outs[0][0, 1], 3.0, atol=1e-6)
    assert all(np.isfinite(g).all() for g in grads)


def test_affgate_numeric_gradient():
    rng = np.random.RandomState(4)
    shape = (2, 3, 4, 3)
    syms = [mx.sym.var(n) for n in "xyab"]
    gate = mx.sym.AFFGate(*syms, scale=2.0, spatial_mean=True)
    loss = mx.sym.broadcast_add(gate[0], gate[1] * 3.0)  # both outputs reach the gradient
    loc = {"x": rng.normal(size=shape), "y": rng.normal(size=shape), "a": rng.normal(size=shape),
           "b": rng.normal(size=shape[:2] + (1, 1))}
    mx.test_utils.check_numeric_gradient(loss, {k: v.astype(np.float32) for k, v in loc.items()},
                                         numeric_eps=1e-2, rtol=2e-2, atol=2e-3)


# ------------------------------------------------------------------------------------------------
# AddMean
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(2, 3, 5, 7), (1, 4, 1, 1), (3, 2, 17, 19)])
def test_addmean_matches_numpy(shape):
    rng = np.random.RandomState(sum(shape))
    x, y, gz = rng.normal(size=shape), rng.normal(size=shape), rng.normal(size=shape)
    gm = rng.normal(size=shape[:2] + (1, 1))
    (z, m), (dx, dy) = _run("AddMean", [x, y], [gz, gm])
    assert relerr(z, x + y) < 1e-6
    assert m.shape == shape[:2] + (1, 1) and relerr(m, (x + y).mean(axis=(2, 3), keepdims=True)) < 1e-6
    want = gz + gm / (shape[2] * shape[3])
    assert relerr(dx, want) < 1e-6 and relerr(dy, want) < 1e-6


def test_addmean_numeric_gradient():
    rng = np.random.RandomState(5)
    shape = (2, 3, 3, 4)
    z = mx.sym.AddMean(mx.sym.var("x"), mx.sym.var("y"))
    loss = mx.sym.broadcast_add(z[0] * z[0], z[1] * 5.0)
    loc = {"x": rng.normal(size=shape).astype(np.float32), "y": rng.normal(size=shape).astype(np.float32)}
    mx.test_utils.check_numeric_gradient(loss, loc, numeric_eps=1e-2, rtol=2e-2, atol=2e-3)


# ------------------------------------------------------------------------------------------------
# UpsampleAdd
# ------------------------------------------------------------------------------------------------
def np_upadd(big, little, s, relu, go):
    H, W = little.shape[2:]
    up = big.repeat(s, axis=2).repeat(s, axis=3)[:, :, :H, :W]
    u = little + up
    out = np.maximum(u, 0) if relu else u
    g = go * (u > 0) if relu else go
    full = np.zeros(little.shape[:2] + (big.shape[2] * s, big.shape[3] * s))
    full[:, :, :H, :W] = g
    dbig = full.reshape(big.shape[:2] + (big.shape[2], s, big.shape[3], s)).sum(axis=(3, 5))
    return out, dbig, g


@pytest.mark.parametrize("big_hw,little_hw,s", [
    ((4, 5), (8, 10), 2),      # exactly twice (the 224 merge)
    ((4, 5), (7, 9), 2),       # odd Little sizes: cropped
    ((3, 3), (3, 3), 1),
    ((3, 4), (7, 12), 3),
    ((5, 6), (3, 4), 2),       # much smaller Little: Big rows/columns without gradient
])
@pytest.mark.parametrize("relu", [False, True])
def test_upsampleadd_matches_numpy(big_hw, little_hw, s, relu):
    rng = np.random.RandomState(hash((big_hw, little_hw, s, relu)) % 2 ** 31)
    big = rng.normal(size=(2, 3) + big_hw)
    little = rng.normal(size=(2, 3) + little_hw)
    go = rng.normal(size=little.shape)
    (out,), (dbig, dlittle) = _run("UpsampleAdd", [big, little], [go], scale=s, relu=relu)
    ref, rdbig, rdl = np_upadd(big, little, s, relu, go)
    assert out.shape == little.shape and relerr(out, ref) < 1e-6
    assert dbig.shape == big.shape and relerr(dbig, rdbig) < 1e-6
    assert relerr(dlittle, rdl) < 1e-6


def test_upsampleadd_equals_mxnet_upsampling_crop_add_relu():
    """The exact formulation it replaces in bL-Net's TransitionLayer, forward and backward."""
    rng = np.random.RandomState(6)
    for H in (8, 7):
        big, little = rng.normal(size=(2, 4, 4, 4)), rng.normal(size=(2, 4, H, H))
        go = rng.normal(size=little.shape)
        (out,), grads = _run("UpsampleAdd", [big, little], [go], scale=2, relu=True)
        b, l = nd.array(big), nd.array(little)
        b.attach_grad()
        l.attach_grad()
        with autograd.record():
            up = nd.slice_like(nd.UpSampling(b, scale=2, sample_type="nearest", num_args=1), l, axes=(2, 3))
            ref = nd.Activation(up + l, act_type="relu")
        ref.backward(nd.array(go))
        np.testing.assert_array_equal(out, ref.asnumpy())
        np.testing.assert_allclose(grads[0], b.grad.asnumpy(), rtol=1e-6, atol=1e-6)
        np.testing.assert_array_equal(grads[1], l.grad.asnumpy())


def test_upsampleadd_numeric_gradient():
    rng = np.random.RandomState(7)
    sym = mx.sym.UpsampleAdd(mx.sym.var("big"), mx.sym.var("little"), scale=2)
    loss = sym * sym
    loc = {"big": rng.normal(size=(2, 2, 3, 3)).astype(np.float32),
           "little": rng.normal(size=(2, 2, 5, 6)).astype(np.float32)}
    mx.test_utils.check_numeric_gradient(loss, loc, numeric_eps=1e-2, rtol=2e-2, atol=2e-3)


# ------------------------------------------------------------------------------------------------
# PlainBatchNorm == MXNet's BatchNorm (outputs, gradients, moving statistics)
# ------------------------------------------------------------------------------------------------
def _bn_run(cls, x, gy, train, hybridize, **kw):
    bn = cls(in_channels=x.shape[1], prefix="bn_", **kw)
    bn.initialize()
    C = x.shape[1]
    rng = np.random.RandomState(C)
    bn.gamma.set_data(nd.array(rng.uniform(-1.5, 1.5, C)))
    bn.beta.set_data(nd.array(rng.normal(0, 0.5, C)))
    bn.running_mean.set_data(nd.array(rng.normal(0, 0.5, C)))
    bn.running_var.set_data(nd.array(rng.uniform(0.5, 2.0, C)))
    if hybridize:
        bn.hybridize()
    X = nd.array(x)
    X.attach_grad()
    with autograd.record(train_mode=train):
        y = bn(X)
    y.backward(nd.array(gy))
    grad = [p.grad().asnumpy() if p.grad_req != "null" else np.zeros(C) for p in (bn.gamma, bn.beta)]
    return [y.asnumpy(), X.grad.asnumpy()] + grad + [bn.running_mean.data().asnumpy(),
                                                    bn.running_var.data().asnumpy()]


@pytest.mark.parametrize("train", [True, False])
@pytest.mark.parametrize("hybridize", [False, True])
@pytest.mark.parametrize("kw", [{}, {"momentum": 0.7, "epsilon": 1e-3}, {"scale": False}, {"use_global_stats": True}],
                         ids=["default", "momentum-eps", "fix_gamma", "global_stats"])
def test_plain_batchnorm_equals_mxnet_batchnorm(train, hybridize, kw):
    rng = np.random.RandomState(11)
    x = rng.normal(1.0, 2.0, (4, 5, 6, 7))
    gy = rng.normal(size=x.shape)
    got = _bn_run(fused.PlainBatchNorm, x, gy, train, hybridize, **kw)
    want = _bn_run(gluon.nn.BatchNorm, x, gy, train, hybridize, **kw)
    for name, g, w in zip(["out", "dx", "dgamma", "dbeta", "moving_mean", "moving_var"], got, want):
        np.testing.assert_allclose(g, w, rtol=2e-5, atol=2e-5 * max(np.abs(w).max(), 1.0), err_msg=name)
    if train and not kw.get("use_global_stats"):  # the moving statistics moved (after forward + backward)
        assert not np.allclose(got[4], _bn_run(fused.PlainBatchNorm, x, gy, False, False, **kw)[4])


def test_plain_batchnorm_matches_numpy_in_training():
    rng = np.random.RandomState(12)
    x = rng.normal(-0.5, 3.0, (3, 4, 5, 5))
    gy = rng.normal(size=x.shape)
    out, dx, dg, db, mm, mv = _bn_run(fused.PlainBatchNorm, x, gy, True, True)
    m, v = x.mean(axis=(0, 2, 3)), x.var(axis=(0, 2, 3))
    rs = np.random.RandomState(4)  # _bn_run's parameters
    g, beta, m0, v0 = rs.uniform(-1.5, 1.5, 4), rs.normal(0, 0.5, 4), rs.normal(0, 0.5, 4), rs.uniform(0.5, 2.0, 4)
    c = lambda a: a[None, :, None, None]  # noqa: E731
    xh = (x - c(m)) / np.sqrt(c(v) + 1e-5)
    assert relerr(out, xh * c(g) + c(beta)) < 1e-5
    assert relerr(mm, 0.9 * m0 + 0.1 * m) < 1e-5 and relerr(mv, 0.9 * v0 + 0.1 * v) < 1e-5  # biased variance
    assert relerr(db, gy.sum(axis=(0, 2, 3))) < 1e-5 and relerr(dg, (gy * xh).sum(axis=(0, 2, 3))) < 1e-5
    M = x.size / 4
    want = c(g / np.sqrt(v + 1e-5)) * (gy - c(gy.sum(axis=(0, 2, 3))) / M - xh * c((gy * xh).sum(axis=(0, 2, 3))) / M)
    assert relerr(dx, want) < 1e-5


def test_plain_batchnorm_numeric_gradient():
    """Central differences of sum(out * w) for data, gamma and beta in training mode (mode input 0).

    Not mx.test_utils.check_numeric_gradient: it binds without the auxiliary states' shapes, and
    MXNet 1.9.1's shape-inference wrapper for library operators sizes its buffer with -1 for every
    unknown input shape and then overruns it (heap corruption; docs/operators.md)."""
    rng = np.random.RandomState(13)
    shape = (3, 2, 3, 4)
    vals = {"data": rng.normal(size=shape), "gamma": rng.uniform(0.5, 1.5, 2), "beta": rng.normal(size=2)}
    w = nd.array(rng.normal(size=shape))

    def loss(v):
        out = nd.PlainBatchNorm(nd.array(v["data"]), nd.array(v["gamma"]), nd.array(v["beta"]), nd.zeros(2),
                                nd.ones(2), nd.zeros(1))[0]
        return float((out * w).sum().asscalar())

    arrs = {k: nd.array(v) for k, v in vals.items()}
    for a in arrs.values():
        a.attach_grad()
    with autograd.record():
        out = nd.PlainBatchNorm(arrs["data"], arrs["gamma"], arrs["beta"], nd.zeros(2), nd.ones(2), nd.zeros(1))[0]
        total = (out * w).sum()
    total.backward()
    eps = 1e-2
    for k, v in vals.items():
        num = np.zeros_like(v)
        for i in np.ndindex(*v.shape):
            up, dn = {kk: vv.copy() for kk, vv in vals.items()}, {kk: vv.copy() for kk, vv in vals.items()}
            up[k][i] += eps
            dn[k][i] -= eps
            num[i] = (loss(up) - loss(dn)) / (2 * eps)
        np.testing.assert_allclose(arrs[k].grad.asnumpy(), num, rtol=3e-2, atol=3e-2, err_msg=k)


def test_cifar_host_reads_fused_outputs_with_plain_batchnorm():
    """The BN after each fused fusion (next block's first BN, the head's BN) is a PlainBatchNorm; the
    first block's (after the stem conv) and every BN of the plain ResNet stay MXNet's."""
    net = get_model("aff_cifar_resnet", blocks=2, channel_times=1, classes=5)
    firsts = [blk.body[0] for st in net.features for blk in st]
    assert [type(b).__name__ for b in firsts] == ["BatchNorm"] + ["PlainBatchNorm"] * 5
    assert type(net.head[0]).__name__ == "PlainBatchNorm"
    with fused.fused_ops(False):
        ref = get_model("aff_cifar_resnet", blocks=2, channel_times=1, classes=5)
    assert all(type(blk.body[0]).__name__ == "BatchNorm" for st in ref.features for blk in st)
    base = get_model("cifar_resnet", blocks=2, channel_times=1, classes=5)
    assert not any(isinstance(b, fused.PlainBatchNorm) for b in base.collect_params().values())
    assert all(type(blk.body[0]).__name__ == "BatchNorm" for st in base.features for blk in st)


# ------------------------------------------------------------------------------------------------
# Errors name the operator and the problem
# ------------------------------------------------------------------------------------------------
S = (2, 3, 4, 5)
C = (2, 3, 1, 1)


@pytest.mark.parametrize("op,shapes,kwargs,message", [
    ("AFFGate", [S, (2, 3, 4, 4), S, C], {}, "AFFGate: x (2, 3, 4, 5) and y (2, 3, 4, 4) must have the same shape"),
    ("AFFGate", [S, S, S, (2, 3, 2, 1)], {}, "AFFGate: logit 'b' has shape (2, 3, 2, 1)"),
    ("AFFGate", [S, S, (2, 3, 4), C], {}, "AFFGate: input 'a' must be 4-D"),
    ("AFFGate", [S, S, S, C], {"scale": "two"}, "AFFGate: cannot parse attribute scale='two'"),
    ("AFFGate", [S, S, S, C], {"scale": "inf"}, "AFFGate: cannot parse attribute scale='inf'"),
    ("AFFGate", [S, S, S, C], {"spatial_mean": "maybe"}, "AFFGate: cannot parse attribute spatial_mean"),
    ("AFFGate", [S, S, S, C], {"alpha": 1}, "AFFGate: unknown attribute 'alpha'"),
    ("AddMean", [S, (2, 3, 5, 4)], {}, "AddMean: x (2, 3, 4, 5) and y (2, 3, 5, 4) must have the same shape"),
    ("AddMean", [S, S], {"scale": 2}, "AddMean: unknown attribute 'scale'"),
    ("AddMean", [(2, 3), (2, 3)], {}, "AddMean: input 'x' must be 4-D"),
    ("UpsampleAdd", [(2, 3, 1, 3), S], {}, "UpsampleAdd: big (2, 3, 1, 3) upsampled x2 is 2x6, smaller than little"),
    ("UpsampleAdd", [(2, 4, 2, 3), S], {}, "UpsampleAdd: big (2, 4, 2, 3) and little (2, 3, 4, 5) must have the same"),
    ("UpsampleAdd", [(2, 3, 2, 3), S], {"scale": 0}, "UpsampleAdd: scale (the integer upsampling factor) must be"),
    ("UpsampleAdd", [(2, 3, 2, 3), S], {"scale": 1.5}, "UpsampleAdd: cannot parse attribute scale='1.5'"),
    ("UpsampleAdd", [(2, 3, 2, 3), S], {"relu": "yes"}, "UpsampleAdd: cannot parse attribute relu"),
    ("PlainBatchNorm", [S, (3,), (3,), (4,), (3,), (1,)], {},
     "PlainBatchNorm: input 'moving_mean' has shape (4,) but data (2, 3, 4, 5) has 3 channels"),
    ("PlainBatchNorm", [S, (3,), (3,), (3,), (3,), (2,)], {}, "PlainBatchNorm: input 'mode' must have shape (1,)"),
    ("PlainBatchNorm", [(2, 3), (3,), (3,), (3,), (3,), (1,)], {}, "PlainBatchNorm: input 'data' must be 4-D"),
    ("PlainBatchNorm", [S, (3,), (3,), (3,), (3,), (1,)], {"eps": 0}, "PlainBatchNorm: eps must be > 0"),
    ("PlainBatchNorm", [S, (3,), (3,), (3,), (3,), (1,)], {"momentum": 1.5}, "PlainBatchNorm: momentum must be in"),
    ("PlainBatchNorm", [S, (3,), (3,), (3,), (3,), (1,)], {"axis": 1}, "PlainBatchNorm: unknown attribute 'axis'"),
])
def test_errors_name_operator_and_problem(op, shapes, kwargs, message):
    arrs = [nd.ones(s) for s in shapes]
    with pytest.raises(mx.base.MXNetError) as err:
        getattr(nd, op)(*arrs, **kwargs)[0].wait_to_read()
    assert message in str(err.value)


@pytest.mark.parametrize("op,n", [("AFFGate", 4), ("AddMean", 2), ("UpsampleAdd", 2), ("PlainBatchNorm", 6)])
def test_float64_refused(op, n):
    arrs = [nd.ones(S, dtype="float64") for _ in range(n)]
    if op == "AFFGate":
        arrs[3] = nd.ones(C, dtype="float64")
    if op == "PlainBatchNorm":
        arrs[1:] = [nd.ones((3,), dtype="float64")] * 4 + [nd.ones((1,), dtype="float64")]
    with pytest.raises(mx.base.MXNetError) as err:
        getattr(nd, op)(*arrs)[0].wait_to_read()
    first = {"AFFGate": "x", "AddMean": "x", "UpsampleAdd": "big", "PlainBatchNorm": "data"}[op]
    assert "%s: input '%s'" % (op, first) in str(err.value)
    assert "only float32 is supported" in str(err.value)


def test_symbolic_shape_inference():
    x, y = mx.sym.var("x"), mx.sym.var("y")
    z = mx.sym.AddMean(x, y)
    _, outs, _ = z.infer_shape(x=(2, 3, 4, 5), y=(2, 3, 4, 5))
    assert outs == [(2, 3, 4, 5), (2, 3, 1, 1)]
    g = mx.sym.AFFGate(x, y, z[0], z[1], spatial_mean=True)
    _, outs, _ = g.infer_shape(x=(2, 3, 4, 5), y=(2, 3, 4, 5))
    assert outs == [(2, 3, 4, 5), (2, 3, 1, 1)]
    u = mx.sym.UpsampleAdd(mx.sym.var("big"), x, relu=True)
    _, outs, _ = u.infer_shape(big=(2, 3, 2, 3), x=(2, 3, 4, 5))
    assert outs == [(2, 3, 4, 5)]


# ------------------------------------------------------------------------------------------------
# The models: fused and unfused graphs agree; names and checkpoints unchanged
# ------------------------------------------------------------------------------------------------
def _pair(build):
    """(fused, unfused) copies of build() with identical random parameters (seeded: the same network
    whatever ran before)."""
    mx.random.seed(0)
    with fused.fused_ops(True):
        a = build()
    with fused.fused_ops(False):
        b = build()
    a.initialize(mx.init.Xavier())
    b.initialize(mx.init.Xavier())
    rng = np.random.RandomState(0)
    # the same parameter names (relative to each network's own prefix): checkpoints load either way
    pa = {k[len(a.prefix):]: p for k, p in a.collect_params().items()}
    pb = {k[len(b.prefix):]: p for k, p in b.collect_params().items()}
    assert sorted(pa) == sorted(pb)
    for k, p in pa.items():  # Xavier weights, random BatchNorm parameters and statistics, same in both
        if k.endswith(("running_var", "gamma")):
            p.set_data(nd.array(rng.uniform(0.5, 1.5, p.shape)))
        elif k.endswith(("running_mean", "beta", "bias")):
            p.set_data(nd.array(rng.normal(0, 0.3, p.shape)))
        pb[k].set_data(p.data())
    return a, b


def _fwd_bwd(net, inputs, train, hybridize):
    if hybridize:
        net.hybridize(static_alloc=True, static_shape=True)
    arrs = [nd.array(v) for v in inputs]
    for v in arrs:
        v.attach_grad()
    with autograd.record(train_mode=train):
        out = net(*arrs)
    out.backward(nd.array(np.random.RandomState(9).normal(size=out.shape)))
    params = {k[len(net.prefix):]: p for k, p in net.collect_params().items()}
    grads = {k: p.grad().asnumpy() for k, p in params.items() if p.grad_req != "null"}
    stats = {k: p.data().asnumpy() for k, p in params.items() if "running" in k}
    return out.asnumpy(), [v.grad.asnumpy() for v in arrs], grads, stats


def _assert_same(ra, rb, tol=2e-5):
    out_a, in_a, g_a, s_a = ra
    out_b, in_b, g_b, s_b = rb
    np.testing.assert_allclose(out_a, out_b, rtol=tol, atol=tol * np.abs(out_b).max())
    for u, v in zip(in_a, in_b):
        np.testing.assert_allclose(u, v, rtol=tol, atol=tol * np.abs(v).max())
    # every parameter gradient, judged against the largest one (the conv biases that feed a BatchNorm
    # have exactly zero gradient, so theirs is pure rounding in both graphs)
    scale = max(np.abs(v).max() for v in g_b.values())
    for k in g_b:
        np.testing.assert_allclose(g_a[k], g_b[k], rtol=1e-3, atol=tol * scale, err_msg=k)
    for k in s_b:
        np.testing.assert_allclose(s_a[k], s_b[k], rtol=tol, atol=tol, err_msg=k)


FUSION_NAMES = ["aff", "iaff", "global_global", "local_local", "aff_pw"]


@pytest.mark.parametrize("name", FUSION_NAMES)
@pytest.mark.parametrize("train", [True, False])
@pytest.mark.parametrize("hybridize", [False, True])
def test_fusion_fused_equals_unfused(name, train, hybridize):
    a, b = _pair(lambda: A.get_fusion(name, 8, r=2, prefix="f_"))
    assert a._fused and not b._fused
    rng = np.random.RandomState(3)
    x, y = rng.normal(size=(3, 8, 5, 7)), rng.normal(size=(3, 8, 5, 7))
    _assert_same(_fwd_bwd(a, [x, y], train, hybridize), _fwd_bwd(b, [x, y], train, hybridize))


def _ops_in(net, *shapes):
    net.hybridize()
    net(*[nd.zeros(s) for s in shapes])
    sym = net._cached_graph[1]
    return {n["op"] for n in __import__("json").loads(sym.tojson())["nodes"]}


def test_fused_graph_uses_the_fused_operators_and_the_switch_removes_them():
    a, b = _pair(lambda: A.get_fusion("iaff", 8, r=2, prefix="f_"))
    ops_a, ops_b = _ops_in(a, (1, 8, 3, 3), (1, 8, 3, 3)), _ops_in(b, (1, 8, 3, 3), (1, 8, 3, 3))
    assert {"AFFGate", "AddMean"} <= ops_a and "broadcast_add" not in ops_a and "mean" not in ops_a
    assert not {"AFFGate", "AddMean"} & ops_b and "broadcast_add" in ops_b


def test_cast_to_float16_falls_back_to_mxnet_operators():
    f = A.get_fusion("aff", 8, r=2)
    assert f._fused
    f.initialize()
    f.cast("float16")
    assert not f._fused
    f.cast("float32")  # stays on the unfused graph (still exact)
    x = nd.ones((1, 8, 2, 2))
    assert f(x, x).shape == (1, 8, 2, 2)


@pytest.mark.parametrize("model,kw,size", [
    ("aff_cifar_resnet", dict(blocks=1, channel_times=1, classes=5), 16),
    ("iaff_cifar_resnet", dict(blocks=1, channel_times=1, classes=5), 15),
])
def test_aff_networks_fused_equal_unfused(model, kw, size):
    a, b = _pair(lambda: get_model(model, **kw))
    x = np.random.RandomState(1).uniform(-1, 1, (8, 3, size, size))
    # Training-mode BatchNorm over a small batch (the global branch normalises 8 values per channel)
    # amplifies float32 rounding: fused and unfused gradients differ by up to ~2e-5 of their largest
    # value over seeds here (with batch 2-4, up to 4e-4, and each graph is that far off a float64
    # run), so 1e-4 separates rounding from a wrong formula (which costs O(1)).
    _assert_same(_fwd_bwd(a, [x], True, True), _fwd_bwd(b, [x], True, True), tol=1e-4)


def _tiny_bl():
    return blnet.BLResNet((2, 2, 2, 1), num_classes=3, stem_width=8, widths=(16, 32, 64, 64))


@pytest.mark.parametrize("size", [64, 57, 37])
def test_blnet_fused_merge_equals_unfused_at_even_and_odd_sizes(size):
    a, b = _pair(_tiny_bl)
    assert a.layer1.transition._fused and not b.layer1.transition._fused
    x = np.random.RandomState(2).uniform(-1, 1, (2, 3, size, size))
    _assert_same(_fwd_bwd(a, [x], True, True), _fwd_bwd(b, [x], True, True))
    # inference: outputs (MXNet's own backward through inference-mode BatchNorm is not finite here,
    # fused or not, so only the forward is compared)
    xa = nd.array(x)
    np.testing.assert_allclose(a(xa).asnumpy(), b(xa).asnumpy(), rtol=1e-5, atol=1e-5)


def test_blnet_merge_fusion_hook_keeps_the_unfused_merge():
    net = blnet.BLResNet((2, 2, 2, 1), num_classes=3, stem_width=8, widths=(16, 32, 64, 64), merge_fusion="aff")
    net.initialize()
    ops_ = _ops_in(net, (1, 3, 32, 32))
    assert "UpsampleAdd" not in ops_ and "UpSampling" in ops_


def test_fused_models_export_and_import(tmp_path):
    a, _ = _pair(lambda: get_model("iaff_cifar_resnet", blocks=1, channel_times=1, classes=5))
    x = nd.array(np.random.RandomState(3).uniform(-1, 1, (2, 3, 12, 12)))
    a.hybridize()
    ref = a(x).asnumpy()
    a.export(str(tmp_path / "net"))
    sb = gluon.SymbolBlock.imports(str(tmp_path / "net-symbol.json"), ["data"], str(tmp_path / "net-0000.params"))
    np.testing.assert_allclose(sb(x).asnumpy(), ref, rtol=1e-5, atol=1e-6)
    # the unfused network loads the fused one's parameters by name
    with fused.fused_ops(False):
        b = get_model("iaff_cifar_resnet", blocks=1, channel_times=1, classes=5)
    a.save_parameters(str(tmp_path / "p.params"))
    b.load_parameters(str(tmp_path / "p.params"))
    np.testing.assert_allclose(b(x).asnumpy(), ref, rtol=1e-5, atol=1e-5)
