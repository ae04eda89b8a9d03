"""Layers shared by the model families (below them in the import order: no family imports another's
helpers). Each builder takes the input width so parameter shapes are known at ``initialize()``."""
from mxnet.gluon import nn

__all__ = ["conv", "batchnorm", "DataNorm"]


def conv(channels, kernel, stride=1, pad=0, groups=1, in_channels=0, use_bias=False, **kw):
    """``nn.Conv2D`` without bias by default (every residual host here feeds a BatchNorm)."""
    return nn.Conv2D(channels, kernel, strides=stride, padding=pad, groups=groups, use_bias=use_bias,
                     in_channels=in_channels, **kw)


def batchnorm(channels, zero_gamma=False, **kw):
    """``nn.BatchNorm`` over ``channels``; ``zero_gamma`` starts gamma at 0 (the last BN of a residual
    branch in the "zero-gamma" recipes: AFF ``--last-gamma``, bL-Net's bn3)."""
    if zero_gamma:
        kw["gamma_initializer"] = "zeros"
    return nn.BatchNorm(in_channels=channels, **kw)


class DataNorm(nn.BatchNorm):
    """The CIFAR ResNet's input normalisation: a BatchNorm with no learned scale or shift
    (``scale=False, center=False`` in the reference, docs/reference/aff.md §2.4).

    MXNet 1.9.1 updates BatchNorm running statistics in the *backward* pass on the CPU (cuDNN does it
    in the forward). A BN with no trainable parameter after the data never runs backward, so on the
    CPU its running mean/var stay 0/1 and test-time inputs are not normalised like training inputs
    (test accuracy at chance). Here beta exists but is frozen at 0 (``lr_mult = wd_mult = 0``): the
    output is identical to ``center=False``, backward runs and the statistics update on every device.
    ``mxrepro.flops.count_params`` does not count frozen parameters as trainable."""

    def __init__(self, in_channels, **kwargs):
        super().__init__(scale=False, center=True, in_channels=in_channels, **kwargs)
        self.beta.lr_mult = 0.0
        self.beta.wd_mult = 0.0
