"""CIFAR B-CNN baseline `inception-bn-small-bilinear`: Inception-BN-small with bilinear pooling
(Lin et al., "Bilinear CNN Models for Fine-grained Visual Recognition", ICCV 2015), the bilinear-pooling
baseline that the FBN paper's released code ships next to its FBN networks (repository
lyttonhao/Factorized-Bilinear-Network, ``cifar/symbol_inception-bn-small-bilinear.py``).

    body (Inception-BN-small, in5b with ReLU: C = 336 channels on an H x W map; 8 x 8 at 32 px)
    -> Reshape `cifar_reshape` (B, C, H*W) ; SwapAxis `cifar_swap` (B, H*W, C)
    -> batch_dot `cifar_batchdot`: z = sum_s x_s x_s^T (B, C, C), summed over positions, not averaged
    -> Reshape (B, C*C) = 112,896 values per image
    -> signed square root  sign(z) * sqrt(|z + 1e-5|)   (the 1e-5 is added inside |.|, as the original)
    -> L2Normalization `cifar_l2` (per image over all C*C values: y / sqrt(sum y^2 + 1e-10))
    -> FullyConnected `cifar_fc8` (num_classes) -> SoftmaxOutput `softmax`

Every head layer name starts with ``cifar_``: ``--freeze`` (lr_mult 0 for each parameter whose name
lacks ``cifar``) then trains only ``cifar_fc8_weight`` / ``cifar_fc8_bias``. The body layers keep
the auto-generated names of the other Inception-small symbols (``convolution0`` ...), so a
checkpoint of ``inception-bn-small`` initialises this body by name.

The first reshape is written as (0, 0, -1) instead of the original's hard-coded (-1, 336, 64); the
two agree at the published 32 x 32 input and this one also works at other input sizes.

Parameters, closed form (C = 336, N = num_classes): with ``P_body`` the Inception-BN-small body,
each ConvFactory(c_in -> c_out, k x k) contributing k^2 c_in c_out + c_out (conv weight, bias) +
2 c_out (BN gamma, beta),

    P = P_body + C^2 N + N,    P_body = 1,649,456  ->  N = 100: 12,939,156;  N = 10: 2,778,426.

The bilinear pooling itself has no parameters; the FC on the 112,896-dim vector dominates.
"""
import mxnet as mx

from mxrepro.models.registry import register_model

from .inception_bn_small import inception_small_body

FEATURE_CHANNELS = 336
SIGN_SQRT_EPS = 1e-5
PAPER = {"inception-bn-small-bilinear": dict(
    note="B-CNN baseline of the original repository; the FBN paper's CIFAR table prints no number for it",
    source="lyttonhao/Factorized-Bilinear-Network cifar/symbol_inception-bn-small-bilinear.py")}


def bilinear_pool_head(feat, num_classes, channels=FEATURE_CHANNELS):
    """``feat`` (B, channels, H, W) -> sum_s x_s x_s^T -> signed sqrt -> L2 -> FC `cifar_fc8` ->
    SoftmaxOutput (layer names as the original)."""
    x = mx.sym.Reshape(data=feat, shape=(0, 0, -1), name="cifar_reshape")          # (B, C, HW)
    xt = mx.sym.SwapAxis(data=x, dim1=1, dim2=2, name="cifar_swap")                # (B, HW, C)
    z = mx.sym.batch_dot(x, xt, name="cifar_batchdot")                             # (B, C, C)
    z = mx.sym.Reshape(data=z, shape=(0, -1))                                      # (B, C*C)
    ssqrt = mx.sym.sign(z) * mx.sym.sqrt(mx.sym.abs(z + SIGN_SQRT_EPS))
    l2 = mx.sym.L2Normalization(data=ssqrt, name="cifar_l2")
    fc = mx.sym.FullyConnected(data=l2, num_hidden=num_classes, name="cifar_fc8")
    return mx.sym.SoftmaxOutput(data=fc, name="softmax")


@register_model(name="inception-bn-small-bilinear", kind="symbol", family="fbn", input_size=32,
                num_classes=100, datasets=("cifar10", "cifar100"), paper=PAPER,
                feature_channels=FEATURE_CHANNELS)
def inception_bn_small_bilinear(num_classes=100, res_module_num=18, depth=50, fmconv_factor=20, fmconv_drop=0.5,
                                bn_mom=0.9, workspace=512, **kw):
    """B-CNN baseline: in5b (ReLU) -> bilinear pooling (sum over positions) -> signed sqrt -> L2 ->
    FC `cifar_fc8` -> softmax. The FB arguments are accepted (common builder signature) and unused."""
    with mx.name.NameManager():
        x = inception_small_body("relu", bn_mom)
        return bilinear_pool_head(x, num_classes)
