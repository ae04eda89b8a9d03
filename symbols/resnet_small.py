"""CIFAR pre-activation bottleneck ResNet (`resnet-small`) and its FBN variant
(`resnet-small-fmconv`), docs/reference/fbn.md §4.1.

Depth 9n+2 with n = ``res_module_num``: n=18 is ResNet-164, n=111 ResNet-1001. Stages of 64/128/256
output channels (bottleneck width 1/4), 32 -> 16 -> 8; the stride sits on the first 1x1 conv and
the projection shortcut is taken from the activated input. All convolutions have a bias, as the
reference. Layers are created in the reference's order inside a fresh NameManager, so the
auto-generated names (`convolution0`, `batchnorm0`, ...) match the released checkpoints.
"""
import mxnet as mx

from mxrepro.models.registry import register_model

from .common import BN_EPS, fb_op_kwargs, fbn_head, pooled_softmax

# Paper numbers (docs/reference/fbn.md §7: test error %, params as printed) and the exact parameter
# counts of these symbols (docs/reference/fbn.md §4.5: CIFAR-100, F=20).
PAPER = {
    "resnet-164": dict(params_m=1.7, cifar10_err=5.30, cifar100_err=23.64),
    "resnet-1001": dict(params_m=10.2, cifar10_err=4.04, cifar100_err=20.50),
}
PAPER_FBN = {
    "resnet-164-fbn": dict(params_m=2.2, cifar10_err=5.00, cifar100_err=22.50),
    "resnet-1001-fbn": dict(params_m=10.7, cifar10_err=4.09, cifar100_err=19.67),
}
EXPECTED_PARAMS_M = {"c100_n18": 1.739, "c100_n111": 10.43, "c10_n18": 1.716}
EXPECTED_PARAMS_M_FBN = {"c100_n18_f20": 2.251, "c100_n111_f20": 10.94, "c10_n18_f20": 1.767}


def _bn_relu(data, bn_mom):
    bn = mx.sym.BatchNorm(data=data, eps=BN_EPS, fix_gamma=False, momentum=bn_mom)
    return mx.sym.Activation(data=bn, act_type="relu")


def res_module(data, num_f, stride, first, bn_mom):
    """Pre-activation bottleneck: BN-ReLU -> 1x1(num_f/4, stride) -> BN-ReLU -> 3x3 -> BN-ReLU ->
    1x1(num_f); shortcut = identity or, in the first module of a stage, a 1x1(num_f, stride)
    convolution of the activated input."""
    act = _bn_relu(data, bn_mom)
    conv1 = mx.sym.Convolution(data=act, kernel=(1, 1), stride=(stride, stride), pad=(0, 0),
                               num_filter=num_f // 4)
    shortcut = data
    if first:
        shortcut = mx.sym.Convolution(data=act, kernel=(1, 1), stride=(stride, stride), pad=(0, 0),
                                      num_filter=num_f)
    conv2 = mx.sym.Convolution(data=_bn_relu(conv1, bn_mom), kernel=(3, 3), pad=(1, 1),
                               num_filter=num_f // 4)
    conv3 = mx.sym.Convolution(data=_bn_relu(conv2, bn_mom), kernel=(1, 1), pad=(0, 0), num_filter=num_f)
    return conv3 + shortcut


def resnet_small_body(res_module_num, bn_mom):
    """data -> stem 3x3(16) -> 3 stages x n modules -> final BN (not activated)."""
    n = int(res_module_num)
    if n < 1:
        raise ValueError("res_module_num must be >= 1 (18 gives ResNet-164, 111 ResNet-1001), got %d" % n)
    base = 16
    data = mx.sym.Variable("data")
    body = mx.sym.Convolution(data=data, kernel=(3, 3), pad=(1, 1), num_filter=base)
    for stage in range(3):
        num_f = base * 2 ** (2 + stage)
        for i in range(n):
            body = res_module(body, num_f, 2 if (stage > 0 and i == 0) else 1, i == 0, bn_mom)
    return mx.sym.BatchNorm(data=body, eps=BN_EPS, fix_gamma=False, momentum=bn_mom)


@register_model(name="resnet-small", kind="symbol", family="fbn", input_size=32, num_classes=100,
                datasets=("cifar10", "cifar100"), paper=PAPER, expected_params_m=EXPECTED_PARAMS_M)
def resnet_small(num_classes=100, res_module_num=18, depth=50, fmconv_factor=20, fmconv_drop=0.5,
                 bn_mom=0.9, workspace=512, **kw):
    """Baseline CIFAR ResNet-(9n+2): final BN -> ReLU -> global avg-pool -> FC `fc1` -> softmax."""
    with mx.name.NameManager():
        bn = resnet_small_body(res_module_num, bn_mom)
        relu = mx.sym.Activation(data=bn, act_type="relu")
        return pooled_softmax(relu, (8, 8), "flatten", fc_name="fc1", num_classes=num_classes)


@register_model(name="resnet-small-fmconv", kind="symbol", family="fbn", input_size=32, num_classes=100,
                datasets=("cifar10", "cifar100"), paper=PAPER_FBN, expected_params_m=EXPECTED_PARAMS_M_FBN)
def resnet_small_fmconv(num_classes=100, res_module_num=18, depth=50, fmconv_factor=20, fmconv_drop=0.5,
                        bn_mom=0.9, workspace=512, fb_op="FMConvolution3", **kw):
    """ResNet-(9n+2)-FBN: final BN -> tanh -> FMConvolution3 `bilinear` + unnamed 1x1 conv -> sum
    -> global avg-pool -> `flatten1` -> softmax (docs/reference/fbn.md §4.1)."""
    with mx.name.NameManager():
        bn = resnet_small_body(res_module_num, bn_mom)
        act = mx.sym.Activation(data=bn, act_type="tanh")
        return fbn_head(act, num_classes, fmconv_factor, fmconv_drop, fb_op, fb_name="bilinear",
                        linear_name=None, flatten_name="flatten1", pool_kernel=(8, 8), fb_first=True,
                        **fb_op_kwargs(kw))
