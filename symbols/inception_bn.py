"""ImageNet Inception-BN (`inception-bn`, Ioffe & Szegedy 2015 as in MXNet's model zoo) and its FBN
variant (`inception-bn-fmconv`), docs/reference/fbn.md §4.4.

7x7/2 -> maxpool -> 1x1(64) -> 3x3(192) -> maxpool -> 3a, 3b, 3c(B) -> 4a-4e(B) -> 5a, 5b: 1024
channels at 7x7. In the FBN variant the four branch outputs of 5b use tanh (the reduce convs keep
ReLU) and feed FMConvolution1 `bilinear1` + 1x1 conv `fc`. The reference hard-codes F=20, p=0.5
for this network and ignores the command-line flags; here ``fmconv_factor``/``fmconv_drop`` are
honoured (their defaults, 20 and 0.5, are the values the published command passes).
"""
import mxnet as mx

from mxrepro.models.registry import register_model

from .common import BN_EPS, fb_op_kwargs, fbn_head, pooled_softmax

PAPER = {"inception-bn": dict(top1_err=27.5, top5_err=9.2)}
PAPER_FBN = {"inception-bn-fbn": dict(top1_err=26.4, top5_err=8.4, num_factor=20)}


def conv_factory(data, num_filter, kernel, stride=(1, 1), pad=(0, 0), name=None, suffix="", act_type="relu",
                 bn_mom=0.9):
    conv = mx.sym.Convolution(data=data, num_filter=num_filter, kernel=kernel, stride=stride, pad=pad,
                              name="conv_%s%s" % (name, suffix))
    bn = mx.sym.BatchNorm(data=conv, fix_gamma=False, eps=BN_EPS, momentum=bn_mom, name="bn_%s%s" % (name, suffix))
    return mx.sym.Activation(data=bn, act_type=act_type, name="%s_%s%s" % (act_type, name, suffix))


def inception_a(data, n1, n3r, n3, nd3r, nd3, pool, proj, name, act_type="relu", bn_mom=0.9):
    """Concat of 1x1, 3x3-reduce+3x3, double-3x3 and pool+proj branches (``act_type`` on the
    branch outputs)."""
    c1 = conv_factory(data, n1, (1, 1), name="%s_1x1" % name, act_type=act_type, bn_mom=bn_mom)
    c3r = conv_factory(data, n3r, (1, 1), name="%s_3x3" % name, suffix="_reduce", bn_mom=bn_mom)
    c3 = conv_factory(c3r, n3, (3, 3), pad=(1, 1), name="%s_3x3" % name, act_type=act_type, bn_mom=bn_mom)
    cd3r = conv_factory(data, nd3r, (1, 1), name="%s_double_3x3" % name, suffix="_reduce", bn_mom=bn_mom)
    cd3 = conv_factory(cd3r, nd3, (3, 3), pad=(1, 1), name="%s_double_3x3_0" % name, bn_mom=bn_mom)
    cd3 = conv_factory(cd3, nd3, (3, 3), pad=(1, 1), name="%s_double_3x3_1" % name, act_type=act_type,
                       bn_mom=bn_mom)
    pooling = mx.sym.Pooling(data=data, kernel=(3, 3), stride=(1, 1), pad=(1, 1), pool_type=pool,
                             name="%s_pool_%s_pool" % (pool, name))
    cproj = conv_factory(pooling, proj, (1, 1), name="%s_proj" % name, act_type=act_type, bn_mom=bn_mom)
    return mx.sym.Concat(c1, c3, cd3, cproj, name="ch_concat_%s_chconcat" % name)


def inception_b(data, n3r, n3, nd3r, nd3, name, bn_mom=0.9):
    """Stride-2 block: 3x3-reduce+3x3/2, double-3x3 (/2 on the second) and maxpool/2."""
    c3r = conv_factory(data, n3r, (1, 1), name="%s_3x3" % name, suffix="_reduce", bn_mom=bn_mom)
    c3 = conv_factory(c3r, n3, (3, 3), pad=(1, 1), stride=(2, 2), name="%s_3x3" % name, bn_mom=bn_mom)
    cd3r = conv_factory(data, nd3r, (1, 1), name="%s_double_3x3" % name, suffix="_reduce", bn_mom=bn_mom)
    cd3 = conv_factory(cd3r, nd3, (3, 3), pad=(1, 1), name="%s_double_3x3_0" % name, bn_mom=bn_mom)
    cd3 = conv_factory(cd3, nd3, (3, 3), pad=(1, 1), stride=(2, 2), name="%s_double_3x3_1" % name, bn_mom=bn_mom)
    pooling = mx.sym.Pooling(data=data, kernel=(3, 3), stride=(2, 2), pad=(1, 1), pool_type="max",
                             name="max_pool_%s_pool" % name)
    return mx.sym.Concat(c3, cd3, pooling, name="ch_concat_%s_chconcat" % name)


def inception_body(last_act, bn_mom):
    data = mx.sym.Variable("data")
    x = conv_factory(data, 64, (7, 7), stride=(2, 2), pad=(3, 3), name="1", bn_mom=bn_mom)
    x = mx.sym.Pooling(data=x, kernel=(3, 3), stride=(2, 2), name="pool_1", pool_type="max")
    x = conv_factory(x, 64, (1, 1), name="2_red", bn_mom=bn_mom)
    x = conv_factory(x, 192, (3, 3), pad=(1, 1), name="2", bn_mom=bn_mom)
    x = mx.sym.Pooling(data=x, kernel=(3, 3), stride=(2, 2), name="pool_2", pool_type="max")
    x = inception_a(x, 64, 64, 64, 64, 96, "avg", 32, "3a", bn_mom=bn_mom)
    x = inception_a(x, 64, 64, 96, 64, 96, "avg", 64, "3b", bn_mom=bn_mom)
    x = inception_b(x, 128, 160, 64, 96, "3c", bn_mom=bn_mom)
    x = inception_a(x, 224, 64, 96, 96, 128, "avg", 128, "4a", bn_mom=bn_mom)
    x = inception_a(x, 192, 96, 128, 96, 128, "avg", 128, "4b", bn_mom=bn_mom)
    x = inception_a(x, 160, 128, 160, 128, 160, "avg", 128, "4c", bn_mom=bn_mom)
    x = inception_a(x, 96, 128, 192, 160, 192, "avg", 128, "4d", bn_mom=bn_mom)
    x = inception_b(x, 128, 192, 192, 256, "4e", bn_mom=bn_mom)
    x = inception_a(x, 352, 192, 320, 160, 224, "avg", 128, "5a", bn_mom=bn_mom)
    return inception_a(x, 352, 192, 320, 192, 224, "max", 128, "5b", act_type=last_act, bn_mom=bn_mom)


@register_model(name="inception-bn", kind="symbol", family="fbn", input_size=224, num_classes=1000,
                datasets=("imagenet",), paper=PAPER)
def inception_bn(num_classes=1000, res_module_num=18, depth=50, fmconv_factor=20, fmconv_drop=0.5, bn_mom=0.9,
                 workspace=512, **kw):
    """Baseline: 5b (ReLU) -> global avg-pool -> `flatten` -> FC `fc1` -> softmax."""
    with mx.name.NameManager():
        x = inception_body("relu", bn_mom)
        return pooled_softmax(x, (7, 7), "flatten", fc_name="fc1", num_classes=num_classes)


@register_model(name="inception-bn-fmconv", kind="symbol", family="fbn", input_size=224, num_classes=1000,
                datasets=("imagenet",), paper=PAPER_FBN)
def inception_bn_fmconv(num_classes=1000, res_module_num=18, depth=50, fmconv_factor=20, fmconv_drop=0.5,
                        bn_mom=0.9, workspace=512, fb_op="FMConvolution1", **kw):
    """FBN: 5b (tanh branch outputs) -> FMConvolution1 `bilinear1` + 1x1 conv `fc` -> sum ->
    avg-pool -> `flatten1` -> softmax."""
    with mx.name.NameManager():
        x = inception_body("tanh", bn_mom)
        return fbn_head(x, num_classes, fmconv_factor, fmconv_drop, fb_op, fb_name="bilinear1",
                        linear_name="fc", flatten_name="flatten1", pool_kernel=(7, 7),
                        workspace=workspace, **fb_op_kwargs(kw))
