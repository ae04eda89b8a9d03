"""ImageNet pre-activation ResNet (`resnet`, depth via ``depth``) and its FBN variant
(`resnet-fmconv`), docs/reference/fbn.md §4.3 (tornadomeet-style ResNet-v2, He et al. 2016 "Identity
Mappings").

`bn_data` (fix_gamma) on the input; stem 7x7/2 -> BN -> ReLU -> maxpool 3x3/2; four stages with
basic blocks (depth < 50, filters 64/128/256/512) or bottlenecks (depth >= 50, 256..2048, width
1/4); every conv without bias, BN eps 2e-5 and momentum ``bn_mom``; stride on the (first) 3x3;
projection shortcut from the activated input. FBN head: `bn1` -> tanh `tanh1` ->
FMConvolution1 `bilinear1` + 1x1 conv `fc` -> sum -> avg-pool -> `flatten1` -> softmax.
Baseline head: `bn1` -> ReLU `relu1` -> avg-pool `pool1` -> FC `fc1` -> softmax.
"""
import mxnet as mx

from mxrepro.models.registry import register_model

from .common import fb_op_kwargs, fbn_head, pooled_softmax

UNITS = {18: [2, 2, 2, 2], 34: [3, 4, 6, 3], 50: [3, 4, 6, 3], 101: [3, 4, 23, 3],
         152: [3, 8, 36, 3], 200: [3, 24, 36, 3], 269: [3, 30, 48, 8]}
EPS = 2e-5
PAPER = {"resnet-34": dict(top1_err=27.7, top5_err=9.1), "resnet-50": dict(top1_err=24.7, top5_err=7.4)}
PAPER_FBN = {"resnet-34-fbn": dict(top1_err=26.3, top5_err=8.4, num_factor=50),
             "resnet-50-fbn": dict(top1_err=24.0, top5_err=7.1)}


def residual_unit(data, num_filter, stride, dim_match, name, bottle_neck, bn_mom, workspace, memonger):
    """One pre-activation unit (bottleneck or basic) named ``name``_{bn1,conv1,...,sc}."""
    def bn_relu(x, i):
        bn = mx.sym.BatchNorm(data=x, fix_gamma=False, eps=EPS, momentum=bn_mom, name="%s_bn%d" % (name, i))
        return mx.sym.Activation(data=bn, act_type="relu", name="%s_relu%d" % (name, i))

    def conv(x, nf, kernel, s, i, pad):
        return mx.sym.Convolution(data=x, num_filter=nf, kernel=kernel, stride=s, pad=pad, no_bias=True,
                                  workspace=workspace, name="%s_conv%d" % (name, i))

    act1 = bn_relu(data, 1)
    if bottle_neck:
        mid = int(num_filter * 0.25)
        c = conv(act1, mid, (1, 1), (1, 1), 1, (0, 0))
        c = conv(bn_relu(c, 2), mid, (3, 3), stride, 2, (1, 1))
        out = conv(bn_relu(c, 3), num_filter, (1, 1), (1, 1), 3, (0, 0))
    else:
        c = conv(act1, num_filter, (3, 3), stride, 1, (1, 1))
        out = conv(bn_relu(c, 2), num_filter, (3, 3), (1, 1), 2, (1, 1))
    if dim_match:
        shortcut = data
    else:
        shortcut = mx.sym.Convolution(data=act1, num_filter=num_filter, kernel=(1, 1), stride=stride,
                                      no_bias=True, workspace=workspace, name=name + "_sc")
    if memonger:
        shortcut._set_attr(mirror_stage="True")
    return out + shortcut


def resnet_body(depth, bn_mom, workspace, memonger=False):
    """data -> ... -> `bn1` (the final BN, not activated)."""
    depth = int(depth)
    if depth not in UNITS:
        raise ValueError("ResNet depth must be one of %s, got %d" % (sorted(UNITS), depth))
    units = UNITS[depth]
    bottle_neck = depth >= 50
    filters = [64, 256, 512, 1024, 2048] if bottle_neck else [64, 64, 128, 256, 512]
    data = mx.sym.Variable("data")
    data = mx.sym.BatchNorm(data=data, fix_gamma=True, eps=EPS, momentum=bn_mom, name="bn_data")
    body = mx.sym.Convolution(data=data, num_filter=filters[0], kernel=(7, 7), stride=(2, 2), pad=(3, 3),
                              no_bias=True, workspace=workspace, name="conv0")
    body = mx.sym.BatchNorm(data=body, fix_gamma=False, eps=EPS, momentum=bn_mom, name="bn0")
    body = mx.sym.Activation(data=body, act_type="relu", name="relu0")
    body = mx.sym.Pooling(data=body, kernel=(3, 3), stride=(2, 2), pad=(1, 1), pool_type="max")
    for i, n in enumerate(units):
        s = (1, 1) if i == 0 else (2, 2)
        for j in range(n):
            body = residual_unit(body, filters[i + 1], s if j == 0 else (1, 1), j > 0,
                                 "stage%d_unit%d" % (i + 1, j + 1), bottle_neck, bn_mom, workspace, memonger)
    return mx.sym.BatchNorm(data=body, fix_gamma=False, eps=EPS, momentum=bn_mom, name="bn1")


@register_model(name="resnet", kind="symbol", family="fbn", input_size=224, num_classes=1000,
                datasets=("imagenet",), depths=tuple(sorted(UNITS)), paper=PAPER)
def resnet(num_classes=1000, res_module_num=18, depth=50, fmconv_factor=20, fmconv_drop=0.5, bn_mom=0.9,
           workspace=512, memonger=False, **kw):
    """Baseline ImageNet ResNet-v2 (tornadomeet): `bn1` -> ReLU -> global avg-pool -> FC `fc1`."""
    with mx.name.NameManager():
        bn1 = resnet_body(depth, bn_mom, workspace, memonger)
        relu1 = mx.sym.Activation(data=bn1, act_type="relu", name="relu1")
        return pooled_softmax(relu1, (7, 7), None, fc_name="fc1", num_classes=num_classes, pool_name="pool1")


@register_model(name="resnet-fmconv", kind="symbol", family="fbn", input_size=224, num_classes=1000,
                datasets=("imagenet",), depths=tuple(sorted(UNITS)), paper=PAPER_FBN)
def resnet_fmconv(num_classes=1000, res_module_num=18, depth=50, fmconv_factor=20, fmconv_drop=0.5, bn_mom=0.9,
                  workspace=512, memonger=False, fb_op="FMConvolution1", **kw):
    """ImageNet ResNet-v2-FBN: `bn1` -> tanh `tanh1` -> FMConvolution1 `bilinear1` + 1x1 conv `fc`
    -> sum -> avg-pool -> `flatten1` -> softmax. (The published ResNet-34 run uses F=50.)"""
    with mx.name.NameManager():
        bn1 = resnet_body(depth, bn_mom, workspace, memonger)
        tanh1 = mx.sym.Activation(data=bn1, act_type="tanh", name="tanh1")
        return fbn_head(tanh1, num_classes, fmconv_factor, fmconv_drop, fb_op, fb_name="bilinear1",
                        linear_name="fc", flatten_name="flatten1", pool_kernel=(7, 7),
                        workspace=workspace, **fb_op_kwargs(kw))
