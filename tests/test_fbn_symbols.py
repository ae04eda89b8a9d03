"""FBN networks (docs/reference/fbn.md §4, §4.5, §7): registry, parameter counts against the
published numbers and independent closed forms, graph structure of the FBN head, layer names,
shapes and a forward/backward pass of every network."""
import json
import os
import sys

import numpy as np
import pytest

import mxrepro  # noqa: F401  (conftest already imported it; explicit for clarity)
import mxnet as mx

from mxrepro.models import list_models, model_info
from mxrepro.flops import count_params as _count
from symbols import NETWORKS_CIFAR, NETWORKS_IMAGENET, get_symbol


def count_params(sym, shape):
    return _count(sym, shape)[0]

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_registry_lists_every_network():
    fbn = set(list_models(family="fbn"))
    assert set(NETWORKS_CIFAR + NETWORKS_IMAGENET) <= fbn
    for name in NETWORKS_CIFAR + NETWORKS_IMAGENET:
        e = model_info(name)
        assert e.kind == "symbol" and e.family == "fbn"
        assert e.cfg["input_size"] == (32 if name in NETWORKS_CIFAR else 224)
        assert e.cfg["paper"], name


# ---------------------------------------------------------------- closed-form parameter counts
def _bn(c):
    return 2 * c


def _conv(cin, cout, k=1, bias=True):
    return cin * cout * k * k + (cout if bias else 0)


def closed_form_resnet_small(n, classes, factor=None):
    """Independent count of the CIFAR pre-activation bottleneck ResNet (docs/reference/fbn.md §4.1)."""
    total = _conv(3, 16, 3)
    cin = 16
    for stage in range(3):
        out = 64 * 2 ** stage
        mid = out // 4
        for i in range(n):
            c_in = cin if i == 0 else out
            total += _bn(c_in) + _conv(c_in, mid) + _bn(mid) + _conv(mid, mid, 3) + _bn(mid) + _conv(mid, out)
            if i == 0:
                total += _conv(c_in, out)
        cin = out
    total += _bn(256)
    head = 256 * classes + classes  # fc1 (baseline) or the linear 1x1 conv (FBN)
    if factor:
        head += classes * factor * 256 + classes
    return total + head


def closed_form_inception_small(classes, factor=None, head="fc"):
    """Independent count of Inception-BN-small (docs/reference/fbn.md §4.2). ``head='bilinear'``: the B-CNN baseline,
    whose FC reads the C*C bilinear vector (C = 336) instead of the C pooled channels."""
    def cf(cin, cout, k):
        return _conv(cin, cout, k) + _bn(cout)
    total, c = cf(3, 96, 3), 96
    seq = [("s", 32, 32), ("s", 32, 48), ("d", 80), ("s", 112, 48), ("s", 96, 64), ("s", 80, 80),
           ("s", 48, 96), ("d", 96), ("s", 176, 160), ("s", 176, 160)]
    for blk in seq:
        if blk[0] == "s":
            total += cf(c, blk[1], 1) + cf(c, blk[2], 3)
            c = blk[1] + blk[2]
        else:
            total += cf(c, blk[1], 3)
            c = c + blk[1]
    assert c == 336
    head = (c * c if head == "bilinear" else c) * classes + classes
    if factor:
        head += classes * factor * c + classes
    return total + head


@pytest.mark.parametrize("n,classes", [(18, 100), (18, 10), (111, 100), (2, 7)])
def test_resnet_small_counts_closed_form(n, classes):
    base = count_params(get_symbol("resnet-small", num_classes=classes, res_module_num=n), (1, 3, 32, 32))
    fbn = count_params(get_symbol("resnet-small-fmconv", num_classes=classes, res_module_num=n, fmconv_factor=20),
                       (1, 3, 32, 32))
    assert base == closed_form_resnet_small(n, classes)
    assert fbn == closed_form_resnet_small(n, classes, factor=20)


@pytest.mark.parametrize("classes", [100, 10])
def test_inception_small_counts_closed_form(classes):
    base = count_params(get_symbol("inception-bn-small", num_classes=classes), (1, 3, 32, 32))
    fbn = count_params(get_symbol("inception-bn-small-fmconv", num_classes=classes), (1, 3, 32, 32))
    assert base == closed_form_inception_small(classes)
    assert fbn == closed_form_inception_small(classes, factor=20)


# Published / reference values (docs/reference/fbn.md §4.5; the paper prints 1.7/2.2, 1.7/2.4, 10.2/10.7).
@pytest.mark.parametrize("net,kw,expected_m,tol_m", [
    ("resnet-small", dict(res_module_num=18), 1.739, 5e-4),
    ("resnet-small-fmconv", dict(res_module_num=18), 2.251, 5e-4),
    ("inception-bn-small", {}, 1.683, 5e-4),
    ("inception-bn-small-fmconv", {}, 2.355, 5e-4),
    ("resnet-small", dict(res_module_num=111), 10.43, 5e-3),
    ("resnet-small-fmconv", dict(res_module_num=111), 10.94, 5e-3),
])
def test_cifar100_counts_match_reference(net, kw, expected_m, tol_m):
    n = count_params(get_symbol(net, num_classes=100, fmconv_factor=20, **kw), (1, 3, 32, 32))
    assert abs(n / 1e6 - expected_m) < tol_m, n
    paper = {"resnet-small": {18: 1.7, 111: 10.2}, "resnet-small-fmconv": {18: 2.2, 111: 10.7},
             "inception-bn-small": {18: 1.7}, "inception-bn-small-fmconv": {18: 2.4}}[net][kw.get("res_module_num", 18)]
    assert abs(n / 1e6 - paper) < 0.25  # the paper's rounded column (ResNet-1001 differs by biases)


# torchvision ResNet-v1 counts: same convs/FC, slightly different BN placement (< 0.5%).
@pytest.mark.parametrize("depth,tv", [(18, 11689512), (34, 21797672), (50, 25557032), (101, 44549160),
                                      (152, 60192808)])
def test_imagenet_resnet_counts(depth, tv):
    base = count_params(get_symbol("resnet", depth=depth), (1, 3, 224, 224))
    assert abs(base - tv) / tv < 0.005, base
    f = 50 if depth == 34 else 20
    fbn = count_params(get_symbol("resnet-fmconv", depth=depth, fmconv_factor=f), (1, 3, 224, 224))
    c = 512 if depth < 50 else 2048
    assert fbn - base == 1000 * f * c + 1000  # FB weight (N,F,C,1,1) + bias; fc1 -> 1x1 conv `fc`


def test_imagenet_inception_counts_and_200():
    base = count_params(get_symbol("inception-bn"), (1, 3, 224, 224))
    fbn = count_params(get_symbol("inception-bn-fmconv"), (1, 3, 224, 224))
    assert fbn - base == 1000 * 20 * 1024 + 1000
    assert 10.5e6 < base < 12e6  # BN-Inception ~11.3M with a 1000-way FC
    assert count_params(get_symbol("resnet-fmconv", depth=200), (1, 3, 224, 224)) > count_params(
        get_symbol("resnet-fmconv", depth=152), (1, 3, 224, 224))
    with pytest.raises(ValueError, match="depth"):
        get_symbol("resnet", depth=42)


# ------------------------------------------------------------------------- graph / layer names
HEADS = {  # network, kwargs, FB name, linear conv name (None: auto), input size, final map
    "resnet-small-fmconv": (dict(res_module_num=2), "bilinear", None, 32, 8),
    "inception-bn-small-fmconv": ({}, "bilinear1", "conv_fc", 32, 8),
    "resnet-fmconv": (dict(depth=34, fmconv_factor=50), "bilinear1", "fc", 224, 7),
    "inception-bn-fmconv": ({}, "bilinear1", "fc", 224, 7),
}


@pytest.mark.parametrize("net", sorted(HEADS))
def test_fbn_head_structure(net):
    kw, fb_name, lin_name, size, fmap = HEADS[net]
    sym = get_symbol(net, num_classes=100, **kw)
    g = json.loads(sym.tojson())
    nodes = g["nodes"]
    byname = {nd["name"]: i for i, nd in enumerate(nodes)}
    fb = nodes[byname[fb_name]]
    assert fb["op"] == ("FMConvolution1" if net.startswith(("resnet-fmconv", "inception-bn-fmconv")) else "FMConvolution3")
    assert fb["attrs"]["num_filter"] == "100" and fb["attrs"]["kernel"] in ("(1, 1)", "(1,1)")
    src = fb["inputs"][0][0]
    convs = [nd for nd in nodes if nd["op"] == "Convolution" and nd["inputs"][0][0] == src]
    assert len(convs) == 1 and convs[0]["attrs"]["num_filter"] == "100"
    if lin_name:
        assert convs[0]["name"] == lin_name
    # the shared input is tanh (directly, or the concat of tanh branches in Inception)
    s = nodes[src]
    acts = [nodes[i[0]] for i in s["inputs"]] if s["op"] == "Concat" else [s]
    assert all(a["op"] == "Activation" and a["attrs"]["act_type"] == "tanh" for a in acts)
    # sum -> avg pool -> flatten -> softmax
    add = [nd for nd in nodes if nd["op"] == "elemwise_add"]
    fb_id, conv_id = byname[fb_name], nodes.index(convs[0])
    assert any({i[0] for i in nd["inputs"]} == {fb_id, conv_id} for nd in add)
    pool = nodes[byname["global_pool"]]
    assert pool["attrs"]["pool_type"] == "avg"
    assert nodes[pool["inputs"][0][0]]["op"] == "elemwise_add"
    assert sym.list_outputs() == ["softmax_output"]
    # the FB map is evaluated per position before pooling (fmap x fmap)
    internals = sym.get_internals()
    _, out_shapes, _ = internals[fb_name + "_output"].infer_shape(data=(1, 3, size, size))
    assert out_shapes[0] == (1, 100, fmap, fmap)
    args = sym.list_arguments()
    assert fb_name + "_weight" in args and fb_name + "_bias" in args
    arg_shapes, _, _ = sym.infer_shape(data=(1, 3, size, size))
    shp = dict(zip(args, arg_shapes))
    assert shp[fb_name + "_weight"][:2] == (100, kw.get("fmconv_factor", 20))
    assert shp[fb_name + "_weight"][3:] == (1, 1) and shp[fb_name + "_bias"] == (100,)


def test_baselines_use_relu_and_fc1():
    for net, size in (("resnet-small", 32), ("inception-bn-small", 32), ("resnet", 224), ("inception-bn", 224)):
        sym = get_symbol(net, num_classes=10, res_module_num=1, depth=18)
        g = json.loads(sym.tojson())
        ops = {nd["op"] for nd in g["nodes"]}
        assert "FMConvolution1" not in ops and "FMConvolution3" not in ops
        assert not any(nd["op"] == "Activation" and nd["attrs"]["act_type"] == "tanh" for nd in g["nodes"])
        assert "fc1_weight" in sym.list_arguments()


def test_names_are_deterministic_and_reference_like():
    a = get_symbol("resnet-small-fmconv", num_classes=100, res_module_num=2)
    mx.sym.Convolution(mx.sym.var("x"), num_filter=2, kernel=(1, 1))  # bump the global name counter
    b = get_symbol("resnet-small-fmconv", num_classes=100, res_module_num=2)
    assert a.tojson() == b.tojson()
    args = a.list_arguments()
    assert args[:3] == ["data", "convolution0_weight", "convolution0_bias"]
    r = get_symbol("resnet-fmconv", depth=18)
    for name in ("bn_data_gamma", "conv0_weight", "stage1_unit1_conv1_weight", "stage4_unit2_bn2_beta",
                 "stage2_unit1_sc_weight", "bn1_gamma", "fc_weight", "fc_bias", "bilinear1_weight"):
        assert name in r.list_arguments(), name
    assert "tanh1_output" in r.get_internals().list_outputs()
    assert "flatten1_output" in r.get_internals().list_outputs()


def test_fb_op_attributes_pass_through():
    sym = get_symbol("resnet-small-fmconv", res_module_num=1, fmconv_factor=7, fmconv_drop=0.3,
                     dropfactor_mode="reference", grad_mode="reference")
    fb = [nd for nd in json.loads(sym.tojson())["nodes"] if nd["name"] == "bilinear"][0]["attrs"]
    assert fb["num_factor"] == "7" and float(fb["p"]) == 0.3
    assert fb["dropfactor_mode"] == "reference" and fb["grad_mode"] == "reference"


# ----------------------------------------------------------------------- forward / backward
FWD = [("resnet-small", dict(res_module_num=1), 32), ("resnet-small-fmconv", dict(res_module_num=1), 32),
       ("inception-bn-small", {}, 32), ("inception-bn-small-fmconv", {}, 32),
       ("inception-bn-small-bilinear", {}, 32),
       ("resnet", dict(depth=18), 64), ("resnet-fmconv", dict(depth=18), 64),
       ("resnet-fmconv", dict(depth=50, fmconv_factor=4), 64),
       ("inception-bn", {}, 64), ("inception-bn-fmconv", dict(fmconv_factor=4), 64)]


@pytest.mark.parametrize("net,kw,size", FWD, ids=["%s-%s" % (n, "-".join(map(str, k.values()))) for n, k, _ in FWD])
def test_forward_backward(net, kw, size):
    classes = 5
    sym = get_symbol(net, num_classes=classes, **kw)
    mod = mx.mod.Module(sym, context=mx.cpu())
    mod.bind(data_shapes=[("data", (2, 3, size, size))], label_shapes=[("softmax_label", (2,))])
    mx.random.seed(0)
    mod.init_params(mx.init.Xavier(rnd_type="gaussian", factor_type="in", magnitude=2))
    rng = np.random.RandomState(0)
    batch = mx.io.DataBatch([mx.nd.array(rng.randn(2, 3, size, size) * 50)], [mx.nd.array([1, 3])])
    mod.forward_backward(batch)
    out = mod.get_outputs()[0].asnumpy()
    assert out.shape == (2, classes)
    np.testing.assert_allclose(out.sum(1), 1.0, rtol=1e-5)
    grads = dict(zip(mod._exec_group.param_names, mod._exec_group.grad_arrays))
    for name, g in grads.items():
        assert np.isfinite(g[0].asnumpy()).all(), name
    first = [n for n in mod._exec_group.param_names if n.endswith("_weight")][0]
    assert np.abs(grads[first][0].asnumpy()).sum() > 0  # gradient reaches the stem
    for name in grads:
        if name.startswith("bilinear") and name.endswith("_weight"):
            assert np.abs(grads[name][0].asnumpy()).sum() > 0


def test_param_count_tool():
    from tools import param_count
    rows = param_count.rows(num_classes_list=(100,), fmconv_factor=20, imagenet=False)
    got = {r["model"]: (round(r["base_params"] / 1e6, 3), round(r["fbn_params"] / 1e6, 3)) for r in rows}
    assert got["ResNet-164"] == (1.739, 2.251)
    assert got["Inception-BN-small"] == (1.683, 2.355)
    assert abs(got["ResNet-1001"][0] - 10.43) < 0.005 and abs(got["ResNet-1001"][1] - 10.94) < 0.005
    for r in rows:
        assert r["fb_added"] == 100 * 20 * (336 if "Inception" in r["model"] else 256) + 100



# ----------------------------------------------------------------------- B-CNN baseline
BCNN = "inception-bn-small-bilinear"


def np_bilinear_head(feat, w, b):
    """NumPy B-CNN head (Lin et al. 2015, as in the original symbol): z = sum over positions of the
    outer products x_s x_s^T, signed square root sign(z) sqrt(|z + 1e-5|), L2 normalisation over the
    C*C vector (eps 1e-10), FC. Returns (z, normalised vector, logits)."""
    bsz, c = feat.shape[:2]
    x = feat.reshape(bsz, c, -1).astype(np.float64)
    z = np.einsum("bcs,bds->bcd", x, x)           # summed, not averaged, over the H*W positions
    v = z.reshape(bsz, c * c)
    v = np.sign(v) * np.sqrt(np.abs(v + 1e-5))
    v = v / np.sqrt((v ** 2).sum(axis=1, keepdims=True) + 1e-10)
    return z, v, v @ w.T.astype(np.float64) + b


@pytest.mark.parametrize("classes", [100, 10, 3])
def test_bcnn_counts_closed_form(classes):
    n = count_params(get_symbol(BCNN, num_classes=classes), (1, 3, 32, 32))
    assert n == closed_form_inception_small(classes, head="bilinear")
    # the numbers stated in the symbol's docstring and docs/fbn.md
    assert n == {100: 12939156, 10: 2778426}.get(classes, n)
    # same body as the baseline: only the FC input differs (C^2 instead of C inputs)
    base = count_params(get_symbol("inception-bn-small", num_classes=classes), (1, 3, 32, 32))
    assert n - base == (336 * 336 - 336) * classes


def test_bcnn_registry_names_and_freeze():
    e = model_info(BCNN)
    assert BCNN in NETWORKS_CIFAR and e.kind == "symbol" and e.family == "fbn"
    sym = get_symbol(BCNN, num_classes=100)
    params = [a for a in sym.list_arguments() if a != "data" and not a.endswith("_label")]
    # --freeze: lr_mult 0 for every parameter whose name lacks 'cifar' -> only the FC trains
    assert [a for a in params if "cifar" in a] == ["cifar_fc8_weight", "cifar_fc8_bias"]
    assert len(params) > 2
    # the body is the baseline's, with the baseline's parameter names (checkpoints load by name)
    base = get_symbol("inception-bn-small", num_classes=100).list_arguments()
    assert [a for a in params if "cifar" not in a] == [a for a in base if a not in ("data", "softmax_label")
                                                       and not a.startswith("fc1_")]
    internals = sym.get_internals().list_outputs()
    for name in ("cifar_reshape_output", "cifar_swap_output", "cifar_batchdot_output", "cifar_l2_output",
                 "cifar_fc8_output"):
        assert name in internals, name
    _, out, _ = sym.get_internals()["cifar_l2_output"].infer_shape(data=(2, 3, 32, 32))
    assert out[0] == (2, 336 * 336)
    _, out, _ = sym.get_internals()["cifar_batchdot_output"].infer_shape(data=(2, 3, 32, 32))
    assert out[0] == (2, 336, 336)
    g = json.loads(sym.tojson())
    assert not any(nd["op"].startswith("FMConvolution") for nd in g["nodes"])
    feat = [nd for nd in g["nodes"] if nd["name"] == "cifar_reshape"][0]["inputs"][0][0]
    assert g["nodes"][feat]["op"] == "Concat"  # in5b, whose two branches end in ReLU
    acts = [g["nodes"][i[0]] for i in g["nodes"][feat]["inputs"]]
    assert all(a["op"] == "Activation" and a["attrs"]["act_type"] == "relu" for a in acts)


def test_bcnn_head_matches_numpy_with_signed_values():
    """The head alone on a signed input (the ReLU body only gives z >= 0), so the sign path counts."""
    from symbols.inception_bn_small_bilinear import bilinear_pool_head
    rng = np.random.RandomState(0)
    bsz, c, h, w, classes = 3, 5, 3, 4, 7
    head = bilinear_pool_head(mx.sym.var("data"), classes, channels=c)
    internals = head.get_internals()
    out = mx.sym.Group([internals["cifar_batchdot_output"], internals["cifar_l2_output"],
                        internals["cifar_fc8_output"], head])
    feat = rng.normal(size=(bsz, c, h, w))
    fw, fb = rng.normal(size=(classes, c * c)), rng.normal(size=(classes,))
    ex = out.bind(mx.cpu(), {"data": mx.nd.array(feat), "cifar_fc8_weight": mx.nd.array(fw),
                             "cifar_fc8_bias": mx.nd.array(fb), "softmax_label": mx.nd.zeros((bsz,))})
    z, l2, logits, prob = [o.asnumpy() for o in ex.forward(is_train=False)]
    rz, rl2, rlogits = np_bilinear_head(feat, fw, fb)
    assert (rz < 0).any()
    np.testing.assert_allclose(z, rz, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(l2, rl2, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(logits, rlogits, rtol=1e-4, atol=1e-5)
    e = np.exp(rlogits - rlogits.max(1, keepdims=True))
    np.testing.assert_allclose(prob, e / e.sum(1, keepdims=True), rtol=1e-4, atol=1e-6)


def test_bcnn_network_forward_matches_numpy():
    """Whole network at 16 px (a 4 x 4 in5b map): the head computed in NumPy from the network's own
    in5b features and FC weights equals the network's outputs."""
    rng = np.random.RandomState(1)
    classes, bsz = 6, 2
    sym = get_symbol(BCNN, num_classes=classes)
    internals = sym.get_internals()
    g = json.loads(sym.tojson())
    feat_name = g["nodes"][[nd for nd in g["nodes"] if nd["name"] == "cifar_reshape"][0]["inputs"][0][0]]["name"]
    out = mx.sym.Group([internals[feat_name + "_output"], internals["cifar_batchdot_output"],
                        internals["cifar_fc8_output"], sym])
    arg_shapes, _, aux_shapes = sym.infer_shape(data=(bsz, 3, 16, 16))
    args = {}
    for name, shape in zip(sym.list_arguments(), arg_shapes):
        if name == "data":
            v = rng.uniform(-1, 1, shape)
        elif name.endswith("_label"):
            v = np.zeros(shape)
        elif name.endswith("_gamma"):
            v = rng.uniform(0.5, 1.5, shape)
        elif name.endswith("_weight"):
            v = rng.normal(0, np.sqrt(2.0 / np.prod(shape[1:])), shape)
        else:
            v = rng.normal(0, 0.1, shape)
        args[name] = mx.nd.array(v)
    aux = {n: mx.nd.array(rng.uniform(0.5, 2.0, s) if n.endswith("var") else rng.normal(0, 0.1, s))
           for n, s in zip(sym.list_auxiliary_states(), aux_shapes)}
    ex = out.bind(mx.cpu(), args, aux_states=aux)
    feat, z, logits, prob = [o.asnumpy() for o in ex.forward(is_train=False)]
    assert feat.shape == (bsz, 336, 4, 4) and (feat >= 0).all() and (feat > 0).any()
    rz, _, rlogits = np_bilinear_head(feat, args["cifar_fc8_weight"].asnumpy(), args["cifar_fc8_bias"].asnumpy())
    np.testing.assert_allclose(z, rz, rtol=1e-4, atol=1e-4 * np.abs(rz).max())
    np.testing.assert_allclose(logits, rlogits, rtol=1e-4, atol=1e-5)
    e = np.exp(rlogits - rlogits.max(1, keepdims=True))
    np.testing.assert_allclose(prob, e / e.sum(1, keepdims=True), rtol=1e-4, atol=1e-6)
