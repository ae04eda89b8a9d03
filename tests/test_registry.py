"""One contract for every registered network (``list_models()``): it builds, its registered paper
parameter count (where one is given) equals what it builds, it runs forward to ``(batch, classes)``,
every trainable parameter gets a gradient, and a Gluon model exports and re-imports with the same
output; FBN symbol networks infer the right output shape and count."""
import re

import mxnet as mx
import numpy as np
import pytest
from mxnet import autograd, gluon, nd

from mxrepro.flops import count_params
from mxrepro.models import get_model, get_symbol, list_models, model_info

GLUON = list_models(kind="gluon")
SYMBOL = list_models(kind="symbol")


def _small(name):
    """Builder kwargs that keep the forward cheap; the block lists and widths they change are checked at
    full size by the parameter counts (here and in the family tests)."""
    e = model_info(name)
    if e.family == "blnet":  # ResNeXt bottlenecks need planes * basewidth / 64 >= 4 for a non-zero group width
        return dict(stem_width=32, widths=(128, 256, 256, 256)) if "resnext" in name else \
            dict(stem_width=16, widths=(32, 64, 64, 64))
    if re.search(r"(101|152)(_v1b|_32x4d)?$", name):
        return dict(layers=[1, 1, 1, 1])
    if name.endswith(("resnext38_32x4d", "resnext47_32x4d")):
        return dict(blocks=1)
    return {}


def _decimals(x):
    s = repr(float(x))
    return len(s.split(".")[1]) if "." in s else 0


def test_the_registry_lists_every_family():
    fams = {model_info(n).family for n in list_models()}
    assert {"aff", "blnet", "resnet", "fbn"} <= fams
    assert len(GLUON) >= 40 and len(SYMBOL) >= 8


@pytest.mark.parametrize("name", GLUON)
def test_gluon_model_contract(name, tmp_path):
    e = model_info(name)
    want = e.cfg.get("paper", {}).get("params_m")
    if want is not None:
        tr, _ = count_params(get_model(name))
        assert round(tr / 1e6, _decimals(want)) == want, (name, tr)
    size = 16 if e.cfg.get("input_size", 224) <= 32 else 64
    mx.random.seed(0)
    net = get_model(name, classes=7, **_small(name))
    net.initialize(mx.init.Xavier(magnitude=2))
    # random biases keep every ReLU of the attention bottlenecks alive for two random images; small non-zero
    # gammas let the gradient through the zero-initialised last BN of the residual branches (bL-Net's bn3)
    for p in net.collect_params(".*bias").values():
        p.set_data(nd.random.uniform(0.05, 0.5, shape=p.shape))
    for p in net.collect_params(".*gamma").values():
        if not p.data().asnumpy().any():
            p.set_data(nd.random.uniform(0.05, 0.15, shape=p.shape))
    x = nd.random.uniform(-1, 1, shape=(2, 3, size, size))
    # BatchNorm in inference mode: the pass checks that every parameter is connected to the loss (batch
    # statistics of 2 random images make the global branches' BN see an almost zero variance)
    with autograd.record(train_mode=False):
        y = net(x)
        loss = (y * nd.arange(7).reshape((1, 7))).sum()
    loss.backward()
    assert y.shape == (2, 7) and np.isfinite(y.asnumpy()).all()
    missing = [n for n, p in net.collect_params().items()
               if p.grad_req != "null" and not np.abs(p.grad().asnumpy()).max() > 0]
    assert not missing, "parameters without gradient: %s" % missing[:5]
    net.hybridize()
    ref = net(x).asnumpy()
    prefix = str(tmp_path / "m")
    net.export(prefix)
    sb = gluon.SymbolBlock.imports(prefix + "-symbol.json", ["data"], prefix + "-0000.params")
    np.testing.assert_allclose(sb(x).asnumpy(), ref, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", SYMBOL)
def test_symbol_network_contract(name):
    e = model_info(name)
    size = e.cfg.get("input_size", 224)
    sym = get_symbol(name, num_classes=7, res_module_num=1, depth=18)
    _, out, _ = sym.infer_shape(data=(2, 3, size, size))
    assert out == [(2, 7)]
    args = set(sym.list_arguments())
    assert "data" in args and "softmax_label" in args
    for kw, millions in e.expected_counts():
        n = count_params(get_symbol(name, **kw), (1, 3, size, size))[0]
        assert round(n / 1e6, _decimals(millions)) == millions, (name, kw, n)
