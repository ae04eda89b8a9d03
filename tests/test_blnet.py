"""bL-Net (docs/reference/blnet.md): parameter counts, block lists, a NumPy reference forward, shapes for any input
size, init, fusion hook, hybridize/export round trip and a short real-data training run."""
import math
import os
import tempfile

import numpy as np
import pytest
from conftest import np_batchnorm

import mxrepro  # noqa: F401  (threads before mxnet)
import mxnet as mx
from mxnet import autograd, gluon

from mxrepro.models import get_model, list_models, model_info
from mxrepro.models import blnet


def n_params(net):
    """Trainable parameter count (PyTorch convention: BN running statistics excluded)."""
    return sum(int(np.prod(p.shape)) for p in net.collect_params().values() if p.grad_req != "null")


# --------------------------------------------------------------------------------------------------
# Parameter counts (docs/reference/blnet.md §1.8 item 6, §2.1, §2.2; 1000 classes)
# --------------------------------------------------------------------------------------------------
EXACT = [
    ("bl_resnet50", dict(alpha=2, beta=4), 26694568),
    ("bl_resnet50", dict(alpha=2, beta=2), 26974632),
    ("bl_resnet50", dict(alpha=4, beta=2), 26306856),
    ("bl_resnet50", dict(alpha=4, beta=4), 26236456),
    ("bl_resnet50_a2_b2", {}, 26974632),
    ("bl_resnet50_a4_b4", {}, 26236456),
]
MILLIONS = [  # [CALC] figures in docs/reference/blnet.md, given to 0.01 M
    ("bl_resnet101", dict(alpha=2, beta=4), 41.85),
    ("bl_resnet101", dict(alpha=2, beta=2), 43.39),
    ("bl_resnet101", dict(alpha=4, beta=4), 40.97),
    ("bl_resnet152", dict(alpha=2, beta=4), 57.36),
    ("bl_resnet152", dict(alpha=4, beta=2), 56.42),
    ("bl_resnext50_32x4d", {}, 26.19),
    ("bl_resnext101_32x4d", {}, 41.51),
    ("bl_resnext101_64x4d", {}, 77.36),
    ("bl_seresnext50_32x4d", {}, 28.77),
    ("bl_seresnext101_32x4d", {}, 45.88),
]


@pytest.mark.parametrize("name,kw,want", EXACT)
def test_param_count_exact(name, kw, want):
    assert n_params(get_model(name, **kw)) == want


@pytest.mark.parametrize("name,kw,want", MILLIONS)
def test_param_count_millions(name, kw, want):
    assert round(n_params(get_model(name, **kw)) / 1e6, 2) == want


def test_resnet50_baseline_param_count():
    """The baseline of the paper's table: ResNet-50 (gluoncv resnet50_v1b) = 25,557,032."""
    net = get_model("resnet50_v1b")
    net.initialize()
    net(mx.nd.zeros((1, 3, 32, 32)))  # resolves deferred shapes
    assert n_params(net) == 25557032


# --------------------------------------------------------------------------------------------------
# Block lists (docs/reference/blnet.md §1.5)
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("depth,beta,big,little", [
    (50, 2, [2, 3, 5], [1, 1, 2]), (50, 4, [2, 3, 5], [1, 1, 1]),
    (101, 2, [3, 7, 17], [1, 3, 8]), (101, 4, [3, 7, 17], [1, 1, 3]),
    (152, 2, [4, 11, 29], [1, 5, 14]), (152, 4, [4, 11, 29], [1, 2, 6]),
])
def test_block_lists(depth, beta, big, little):
    net = get_model("bl_resnet%d" % depth, beta=beta)
    mods = [net.layer1, net.layer2, net.layer3]
    assert [len(m.big.body) for m in mods] == big
    assert [len(m.little.body) for m in mods] == little
    assert len(net.layer4) == 3
    # fusion strides 2, 2, 1 (§1.3): stride-2 fusion has a parameter-free AvgPool shortcut
    fusions = [m.transition.fusion for m in mods]
    assert [f.conv2._kwargs["stride"] for f in fusions] == [(2, 2), (2, 2), (1, 1)]
    assert [f.downsample is None for f in fusions] == [False, False, True]
    assert all(len(f.downsample) == 1 and isinstance(f.downsample[0], gluon.nn.AvgPool2D) for f in fusions[:2])


# --------------------------------------------------------------------------------------------------
# Independent NumPy reference forward (inference mode), written from docs/reference/blnet.md §1 only
# --------------------------------------------------------------------------------------------------
def _np(p):
    return p.data().asnumpy().astype(np.float64)


def np_conv(x, w, stride=1, pad=0, groups=1, b=None):
    c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    xp = np.pad(x, ((0, 0), (pad, pad), (pad, pad)))
    ho, wo = (h + 2 * pad - kh) // stride + 1, (wd + 2 * pad - kw) // stride + 1
    out = np.zeros((o, ho, wo))
    og = o // groups
    for i in range(kh):
        for j in range(kw):
            patch = xp[:, i:i + stride * (ho - 1) + 1:stride, j:j + stride * (wo - 1) + 1:stride]
            for g in range(groups):
                out[g * og:(g + 1) * og] += np.einsum("oc,chw->ohw", w[g * og:(g + 1) * og, :, i, j],
                                                      patch[g * cg:(g + 1) * cg])
    return out if b is None else out + b[:, None, None]


def np_bn(x, bn):
    """Inference BatchNorm ``bn`` on one CHW image (conftest.np_batchnorm, eps 1e-5)."""
    g, b, m, v = (_np(bn.params.get(k)) for k in ("gamma", "beta", "running_mean", "running_var"))
    return np_batchnorm(x[None], g, b, m, v, 1e-5)[0]


def relu(x):
    return np.maximum(x, 0)


def np_avgpool_3s2p1(x):
    """AvgPool2d(3, 2, 1), count_include_pad=True (PyTorch default)."""
    c, h, w = x.shape
    xp = np.pad(x, ((0, 0), (1, 1), (1, 1)))
    ho, wo = (h - 1) // 2 + 1, (w - 1) // 2 + 1
    return np.array([[[xp[k, 2 * i:2 * i + 3, 2 * j:2 * j + 3].sum() / 9.0 for j in range(wo)]
                      for i in range(ho)] for k in range(c)])


def np_nearest_to(x, h, w):
    """PyTorch F.interpolate(x, size=(h, w)) default mode 'nearest': src = floor(dst * in / out)."""
    ih = (np.arange(h) * x.shape[1] // h)
    iw = (np.arange(w) * x.shape[2] // w)
    return x[:, ih][:, :, iw]


def np_bottleneck(x, blk, stride, last_relu, groups, se):
    out = relu(np_bn(np_conv(x, _np(blk.conv1.weight)), blk.bn1))
    out = relu(np_bn(np_conv(out, _np(blk.conv2.weight), stride, 1, groups), blk.bn2))
    out = np_bn(np_conv(out, _np(blk.conv3.weight)), blk.bn3)
    if se:
        s = out.mean(axis=(1, 2))[:, None, None]
        s = relu(np_conv(s, _np(blk.se.fc1.weight), b=_np(blk.se.fc1.bias)))
        s = np_conv(s, _np(blk.se.fc2.weight), b=_np(blk.se.fc2.bias))
        out = out / (1 + np.exp(-s))
    sc = x
    if stride != 1:
        sc = np_avgpool_3s2p1(sc)
    if x.shape[0] != out.shape[0]:
        convs = [b for b in blk.downsample if isinstance(b, gluon.nn.Conv2D)]
        bns = [b for b in blk.downsample if isinstance(b, gluon.nn.BatchNorm)]
        assert len(convs) == 1 and len(bns) == 1 and convs[0]._kwargs["stride"] == (1, 1)
        sc = np_bn(np_conv(sc, _np(convs[0].weight)), bns[0])
    out = out + sc
    return relu(out) if last_relu else out


def np_blnet(x, net, layers, alpha, beta, card, se):
    x = relu(np_bn(np_conv(x, _np(net.conv1[0].weight), 2, 3), net.conv1[1]))
    st = net.stem
    big = np_bn(np_conv(x, _np(st.big_conv.weight), 2, 1), st.big_bn)
    lit = relu(np_bn(np_conv(x, _np(st.little_conv1.weight), 1, 1), st.little_bn1))
    lit = relu(np_bn(np_conv(lit, _np(st.little_conv2.weight), 2, 1), st.little_bn2))
    lit = np_bn(np_conv(lit, _np(st.little_e.weight)), st.little_e_bn)
    x = relu(np_bn(np_conv(relu(big + lit), _np(st.bl_init.weight)), st.bl_bn))
    lcard = card // alpha if card > 1 else 1
    for k, mod, s in zip(layers[:3], (net.layer1, net.layer2, net.layer3), (2, 2, 1)):
        big = x
        for i in range(k - 1):  # Big: first stride 2, last without ReLU (a single block keeps it, §1.1)
            big = np_bottleneck(big, mod.big.body[i], 2 if i == 0 else 1, i != k - 2 or k - 1 == 1, card, se)
        lit = x
        for i in range(max(1, k // beta - 1)):  # Little: full resolution, every block ends in ReLU
            lit = np_bottleneck(lit, mod.little.body[i], 1, True, lcard, se)
        tr = mod.transition
        lit = np_bn(np_conv(lit, _np(tr.little_e.weight)), tr.little_e_bn)
        x = relu(np_nearest_to(big, lit.shape[1], lit.shape[2]) + lit)
        x = np_bottleneck(x, tr.fusion, s, True, card, se)
    for i in range(layers[3]):
        x = np_bottleneck(x, net.layer4[i], 2 if i == 0 else 1, True, card, se)
    return _np(net.fc.weight) @ x.mean(axis=(1, 2)) + _np(net.fc.bias)


def _randomize(net, seed=0):
    """Kaiming conv weights, then random BN statistics and non-zero gammas so every path matters."""
    rng = np.random.RandomState(seed)
    net.initialize(mx.init.Xavier())
    for name, p in net.collect_params().items():
        shape = p.shape
        if name.endswith(("gamma", "running_var")):
            p.set_data(mx.nd.array(rng.uniform(0.5, 1.5, shape)))
        elif name.endswith(("beta", "running_mean", "bias")):
            p.set_data(mx.nd.array(rng.uniform(-0.2, 0.2, shape)))


@pytest.mark.parametrize("cfg", [
    dict(layers=(2, 3, 6, 2), alpha=2, beta=2, card=1, bw=64, se=False, size=37),
    dict(layers=(3, 2, 4, 1), alpha=4, beta=4, card=1, bw=64, se=False, size=32),
    dict(layers=(2, 2, 4, 1), alpha=2, beta=2, card=4, bw=16, se=True, size=29),
], ids=["resnet_a2b2_37px", "resnet_a4b4_32px", "seresnext_29px"])
def test_matches_numpy_reference(cfg):
    net = blnet.BLResNet(cfg["layers"], alpha=cfg["alpha"], beta=cfg["beta"], cardinality=cfg["card"],
                         basewidth=cfg["bw"], se=cfg["se"], num_classes=5, stem_width=16,
                         widths=(32, 64, 128, 128))
    _randomize(net)
    x = np.random.RandomState(1).uniform(-1, 1, (1, 3, cfg["size"], cfg["size"]))
    got = net(mx.nd.array(x)).asnumpy()[0]
    want = np_blnet(x[0], net, cfg["layers"], cfg["alpha"], cfg["beta"], cfg["card"], cfg["se"])
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-3 * np.abs(want).max())
    net.hybridize()
    np.testing.assert_allclose(net(mx.nd.array(x)).asnumpy()[0], want, rtol=1e-3, atol=1e-3 * np.abs(want).max())


# --------------------------------------------------------------------------------------------------
# Per-stage output shapes (§1.4) for 224 and an odd size
# --------------------------------------------------------------------------------------------------
def _stage_shapes(net, size):
    x = mx.nd.zeros((1, 3, size, size))
    shapes = {}
    for name in ("conv1", "stem", "layer1", "layer2", "layer3", "layer4"):
        x = getattr(net, name)(x)
        shapes[name] = x.shape[1:]
    shapes["fc"] = net.fc(net.pool(x).flatten()).shape[1:]
    return shapes


@pytest.fixture(scope="module")
def bl50():
    net = get_model("bl_resnet50")
    net.initialize()
    return net


def _conv_out(n, k, s, p):
    return (n + 2 * p - k) // s + 1


@pytest.mark.parametrize("size", [224, 225])
def test_stage_shapes(bl50, size):
    c1 = _conv_out(size, 7, 2, 3)
    s = _conv_out(c1, 3, 2, 1)
    l1 = _conv_out(s, 3, 2, 1)
    l2 = _conv_out(l1, 3, 2, 1)
    l4 = _conv_out(l2, 3, 2, 1)
    want = {"conv1": (64, c1, c1), "stem": (64, s, s), "layer1": (256, l1, l1), "layer2": (512, l2, l2),
            "layer3": (1024, l2, l2), "layer4": (2048, l4, l4), "fc": (1000,)}
    if size == 224:
        assert (c1, s, l1, l2, l4) == (112, 56, 28, 14, 7)  # the table of §1.4
    assert _stage_shapes(bl50, size) == want


def test_merge_crops_odd_big_output():
    """Nearest x2 + crop equals PyTorch's nearest-to-size for odd Little sizes (§1.8 item 3)."""
    tr = blnet.TransitionLayer(4, 8, 1, prefix="t_")
    tr.initialize()
    for L in (5, 7, 15, 57):
        big = mx.nd.random.uniform(shape=(1, 8, (L + 1) // 2, (L + 1) // 2))
        up = mx.nd.slice_like(mx.nd.UpSampling(big, scale=2, sample_type="nearest", num_args=1),
                              mx.nd.zeros((1, 8, L, L)), axes=(2, 3))
        np.testing.assert_array_equal(up.asnumpy()[0], np_nearest_to(big.asnumpy()[0], L, L))
        assert tr(big, mx.nd.zeros((1, 4, L, L))).shape == (1, 8, L, L)


# --------------------------------------------------------------------------------------------------
# Initialisation and "no conv bias" (§1.7, §1.8 item 1)
# --------------------------------------------------------------------------------------------------
def test_init_zero_gamma_and_no_bias(bl50):
    params = bl50.collect_params()
    bottlenecks = []

    def walk(b):
        if isinstance(b, blnet.ResBlock):
            bottlenecks.append(b)
        for c in b._children.values():
            walk(c)
    walk(bl50)
    assert len(bottlenecks) == 2 + 1 + 1 + 3 + 1 + 1 + 5 + 1 + 1 + 3  # Big, Little, fusion of 3 modules + 3
    zero = {b.bn3.gamma.name for b in bottlenecks}
    for name, p in params.items():
        if name.endswith("gamma"):
            assert (p.data().asnumpy() == 0).all() == (name in zero), name
    convs = []

    def walk_conv(b):
        if isinstance(b, gluon.nn.Conv2D):
            convs.append(b)
        for c in b._children.values():
            walk_conv(c)
    walk_conv(bl50)
    assert convs and all(c.bias is None for c in convs)
    # Kaiming fan-out: std = sqrt(2 / (out * k * k)) on the largest 3x3 conv
    w = bl50.layer4[0].conv2.weight.data().asnumpy()
    assert abs(w.std() / math.sqrt(2.0 / (w.shape[0] * 9)) - 1) < 0.02


# --------------------------------------------------------------------------------------------------
# Fusion hook
# --------------------------------------------------------------------------------------------------
class _ScaledAdd(gluon.HybridBlock):
    def __init__(self, scale, **kw):
        super().__init__(**kw)
        self.scale = scale

    def hybrid_forward(self, F, x, residual):
        return self.scale * x + residual


def _tiny(**kw):
    return blnet.BLResNet((2, 2, 2, 1), num_classes=3, stem_width=8, widths=(16, 32, 64, 64), **kw)


def test_fusion_hook():
    x = mx.nd.random.uniform(shape=(1, 3, 33, 33))
    ref = _tiny()
    _randomize(ref)
    with tempfile.TemporaryDirectory() as d:
        f = os.path.join(d, "p.params")
        ref.save_parameters(f)
        same = _tiny(fusion=lambda c: _ScaledAdd(1.0), merge_fusion=lambda c: _ScaledAdd(1.0))
        same.load_parameters(f)
        other = _tiny(fusion=lambda c: _ScaledAdd(2.0), fusion_stages=(4,))
        other.load_parameters(f)
    np.testing.assert_allclose(same(x).asnumpy(), ref(x).asnumpy(), rtol=1e-5, atol=1e-6)
    assert np.abs(other(x).asnumpy() - ref(x).asnumpy()).max() > 1e-4
    assert isinstance(same.layer1.big.body[0].fuse, _ScaledAdd)
    assert other.layer1.big.body[0].fuse is None and isinstance(other.layer4[0].fuse, _ScaledAdd)


# --------------------------------------------------------------------------------------------------
# forward / backward / hybridize / export + SymbolBlock.imports
# --------------------------------------------------------------------------------------------------
def test_forward_backward_hybridize_export(bl50, tmp_path):
    x = mx.nd.random.uniform(shape=(2, 3, 64, 64))
    imperative = bl50(x).asnumpy()
    net = get_model("bl_resnet50")
    net.initialize()
    f = str(tmp_path / "w.params")
    bl50.save_parameters(f)
    net.load_parameters(f)
    net.hybridize(static_alloc=True, static_shape=True)
    hybrid = net(x).asnumpy()
    np.testing.assert_allclose(hybrid, imperative, rtol=1e-4, atol=1e-5)
    with autograd.record():
        loss = gluon.loss.SoftmaxCrossEntropyLoss()(net(x), mx.nd.array([1, 2])).mean()
    loss.backward()
    assert np.isfinite(loss.asscalar())
    g = net.fc.weight.grad().asnumpy()
    assert np.abs(g).sum() > 0
    # zero-gamma: the bottleneck's bn3 gamma gets a gradient although its output starts at zero
    assert np.abs(net.layer3.big.body[0].bn3.gamma.grad().asnumpy()).sum() > 0
    # MXNet 1.9.1 quirk: with static_alloc the BN running statistics updated by a training-mode
    # forward only show up in param.data() after the next forward, so run one before exporting.
    after = net(x).asnumpy()
    prefix = str(tmp_path / "bl")
    net.export(prefix, epoch=0)
    sb = gluon.SymbolBlock.imports(prefix + "-symbol.json", ["data"], prefix + "-0000.params")
    np.testing.assert_allclose(sb(x).asnumpy(), after, rtol=1e-4, atol=1e-5)
    assert np.abs(after - hybrid).max() > 1e-4  # the training-mode forward did update BN statistics
    # the exported graph works at another size (no hard-coded 56/28/14)
    assert sb(mx.nd.zeros((1, 3, 65, 65))).shape == (1, 1000)


# --------------------------------------------------------------------------------------------------
# Short real-data training run (scikit-learn's handwritten digits, 10 classes, chance = 10%)
# --------------------------------------------------------------------------------------------------
def test_trains_on_digits_far_above_chance():
    datasets = pytest.importorskip("sklearn.datasets", reason="scikit-learn provides the embedded digits")
    d = datasets.load_digits()
    x = np.repeat(np.repeat(d.images.astype(np.float32) / 8.0 - 1.0, 2, 1), 2, 2)  # 16x16, [-1, 1]
    x = np.repeat(x[:, None], 3, 1)
    y = d.target.astype(np.float32)
    rng = np.random.RandomState(0)
    idx = rng.permutation(len(x))
    tr, te = idx[:1437], idx[1437:]
    mx.random.seed(0)
    net = blnet.BLResNet((2, 2, 2, 1), num_classes=10, stem_width=16, widths=(32, 64, 64, 64))
    net.initialize()
    net.hybridize(static_alloc=True)
    epochs, bs = 3, 32
    sched = mx.lr_scheduler.CosineScheduler(epochs * (len(tr) // bs), base_lr=0.1, final_lr=0)
    trainer = gluon.Trainer(net.collect_params(), "nag",
                            dict(learning_rate=0.1, momentum=0.9, wd=1e-4, lr_scheduler=sched))
    loss_fn = gluon.loss.SoftmaxCrossEntropyLoss()
    losses = []
    for _ in range(epochs):
        order = rng.permutation(tr)
        for i in range(len(tr) // bs):
            b = order[i * bs:(i + 1) * bs]
            with autograd.record():
                loss = loss_fn(net(mx.nd.array(x[b])), mx.nd.array(y[b]))
            loss.backward()
            trainer.step(bs)
            losses.append(loss.mean().asscalar())
    acc = (net(mx.nd.array(x[te])).argmax(axis=1).asnumpy() == y[te]).mean()
    assert np.mean(losses[-10:]) < 0.5 * np.mean(losses[:10])
    assert acc > 0.7, acc  # chance is 0.1; 3 epochs reach ~0.93
