"""CIFAR Inception-BN-small (`inception-bn-small`) and its FBN variant
(`inception-bn-small-fmconv`), docs/reference/fbn.md §4.2.

ConvFactory = conv (with bias) -> BN -> activation. Simple(a, b) = concat[1x1(a), 3x3(b)];
Down(b) = concat[3x3/2(b), maxpool 3x3/2 pad 1]. Stem 3x3(96), then Simple(32,32),
Simple(32,48), Down(80), Simple(112,48), Simple(96,64), Simple(80,80), Simple(48,96), Down(96),
Simple(176,160), Simple(176,160): 336 channels at 8x8. In the FBN variant the last Simple block
uses tanh in both branches and feeds the FB head (`bilinear1` + 1x1 conv `conv_fc`).
"""
import mxnet as mx

from mxrepro.models.registry import register_model

from .common import BN_EPS, fb_op_kwargs, fbn_head, pooled_softmax

PAPER = {"inception-bn": dict(params_m=1.7, cifar10_err=5.82, cifar100_err=24.70)}
PAPER_FBN = {"inception-bn-fbn": dict(params_m=2.4, cifar10_err=5.58, cifar100_err=21.98)}
EXPECTED_PARAMS_M = {"c100": 1.683}
EXPECTED_PARAMS_M_FBN = {"c100_f20": 2.355}


def conv_factory(data, num_filter, kernel, stride=(1, 1), pad=(0, 0), act_type="relu", bn_mom=0.9):
    conv = mx.sym.Convolution(data=data, num_filter=num_filter, kernel=kernel, stride=stride, pad=pad)
    bn = mx.sym.BatchNorm(data=conv, eps=BN_EPS, fix_gamma=False, momentum=bn_mom)
    return mx.sym.Activation(data=bn, act_type=act_type)


def downsample_factory(data, ch_3x3, bn_mom):
    conv = conv_factory(data, ch_3x3, (3, 3), stride=(2, 2), pad=(1, 1), bn_mom=bn_mom)
    pool = mx.sym.Pooling(data=data, kernel=(3, 3), stride=(2, 2), pad=(1, 1), pool_type="max")
    return mx.sym.Concat(conv, pool)


def simple_factory(data, ch_1x1, ch_3x3, act_type="relu", bn_mom=0.9):
    c1 = conv_factory(data, ch_1x1, (1, 1), act_type=act_type, bn_mom=bn_mom)
    c3 = conv_factory(data, ch_3x3, (3, 3), pad=(1, 1), act_type=act_type, bn_mom=bn_mom)
    return mx.sym.Concat(c1, c3)


def inception_small_body(last_act, bn_mom):
    """data -> ... -> in5b (336 channels at 8x8); ``last_act`` is the activation of in5b."""
    data = mx.sym.Variable("data")
    x = conv_factory(data, 96, (3, 3), pad=(1, 1), bn_mom=bn_mom)
    for a, b in ((32, 32), (32, 48)):
        x = simple_factory(x, a, b, bn_mom=bn_mom)
    x = downsample_factory(x, 80, bn_mom)
    for a, b in ((112, 48), (96, 64), (80, 80), (48, 96)):
        x = simple_factory(x, a, b, bn_mom=bn_mom)
    x = downsample_factory(x, 96, bn_mom)
    x = simple_factory(x, 176, 160, bn_mom=bn_mom)
    return simple_factory(x, 176, 160, act_type=last_act, bn_mom=bn_mom)


@register_model(name="inception-bn-small", kind="symbol", family="fbn", input_size=32, num_classes=100,
                datasets=("cifar10", "cifar100"), paper=PAPER, expected_params_m=EXPECTED_PARAMS_M)
def inception_bn_small(num_classes=100, res_module_num=18, depth=50, fmconv_factor=20, fmconv_drop=0.5,
                       bn_mom=0.9, workspace=512, **kw):
    """Baseline: in5b (ReLU) -> global avg-pool -> FC `fc1` -> softmax."""
    with mx.name.NameManager():
        x = inception_small_body("relu", bn_mom)
        return pooled_softmax(x, (8, 8), "flatten", fc_name="fc1", num_classes=num_classes)


@register_model(name="inception-bn-small-fmconv", kind="symbol", family="fbn", input_size=32,
                num_classes=100, datasets=("cifar10", "cifar100"), paper=PAPER_FBN,
                expected_params_m=EXPECTED_PARAMS_M_FBN)
def inception_bn_small_fmconv(num_classes=100, res_module_num=18, depth=50, fmconv_factor=20,
                              fmconv_drop=0.5, bn_mom=0.9, workspace=512, fb_op="FMConvolution3", **kw):
    """FBN: in5b (tanh) -> FMConvolution3 `bilinear1` + 1x1 conv `conv_fc` -> sum -> avg-pool ->
    `flatten` -> softmax (docs/reference/fbn.md §4.2)."""
    with mx.name.NameManager():
        x = inception_small_body("tanh", bn_mom)
        return fbn_head(x, num_classes, fmconv_factor, fmconv_drop, fb_op, fb_name="bilinear1",
                        linear_name="conv_fc", flatten_name="flatten", pool_kernel=(8, 8),
                        **fb_op_kwargs(kw))
