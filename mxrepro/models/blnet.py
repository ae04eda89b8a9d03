"""Big-Little Net (Chen et al., ICLR 2019, arXiv 1807.03848) in Gluon.

bL-ResNet-50/101/152, bL-ResNeXt-50/101 (32x4d, 64x4d) and bL-SEResNeXt-50/101, built exactly like the
official IBM/BigLittleNet code (docs/reference/blnet.md §1; where the paper and the code disagree the code is
followed):

* ``ResBlock``        bottleneck, stride on the 3x3, optional final ReLU, AvgPool shortcuts (§1.1)
* ``BLStem``          bL stem replacing the max-pool (§1.2)
* ``ResBlockB``       Big branch: K-1 bottlenecks, first stride 2, last without ReLU (§1.3)
* ``ResBlockL``       Little branch: max(1, K//beta-1) bottlenecks at full resolution, width out/alpha
* ``TransitionLayer`` merge (nearest x2 upsampling cropped to the Little size + 1x1 conv/BN on the
                      Little side, ReLU) followed by the fusion bottleneck (stride 2 in stages 1-2, 1 in 3)
* ``BLModule``        Big + Little + TransitionLayer; ``BLResNet`` is the whole network (stage 4 plain).

No convolution has a bias (except the SE convs), Kaiming fan-out init, zero gamma on every bottleneck's
last BN (§1.7). Works for any input size: the upsampled Big output is cropped with ``slice_like``.

Residual-add hook: every bottleneck computes ``out = fuse(branch, shortcut)``; the default is the plain
sum. Pass ``fusion=`` to plug in another fusion (e.g. the AFF modules), see
:func:`mxrepro.models.fusions.make_fusion`.
"""
import mxnet as mx
from mxnet.gluon import nn
from mxnet.gluon.block import HybridBlock

from . import layers
from .fused import FusedMixin, plain
from .fusions import make_fusion
from .registry import register_model

__all__ = ["ResBlock", "BLStem", "ResBlockB", "ResBlockL", "TransitionLayer", "BLModule", "BLResNet",
           "SEModule", "BLOCK_LISTS", "little_blocks"]

# Official "balanced" block lists (docs/reference/blnet.md §1.5); NOT torchvision's [3,4,23,3] / [3,8,36,3].
BLOCK_LISTS = {50: (3, 4, 6, 3), 101: (4, 8, 18, 3), 152: (5, 12, 30, 3)}

# Kaiming normal, mode fan_out, ReLU gain: std = sqrt(2 / (out_ch * kh * kw)) (docs/reference/blnet.md §1.7).
_KAIMING_OUT = mx.init.MSRAPrelu(factor_type="out", slope=0.0)


def little_blocks(k, beta):
    """Number of Little-branch bottlenecks of a bL-module whose plain stage has ``k`` blocks (§1.3)."""
    return max(1, k // beta - 1)


def _conv(channels, kernel, stride=1, pad=0, groups=1, in_channels=0, use_bias=False, **kw):
    return layers.conv(channels, kernel, stride, pad, groups, in_channels, use_bias, weight_initializer=_KAIMING_OUT,
                       **kw)


def _bn(channels, zero_gamma=False):
    # PyTorch defaults (eps 1e-5, momentum 0.1) == Gluon epsilon=1e-5, momentum=0.9.
    return layers.batchnorm(channels, zero_gamma, epsilon=1e-5, momentum=0.9)


class SEModule(HybridBlock):
    """Squeeze-and-excitation of bL-SEResNeXt (§1.6): GAP -> 1x1 (bias) -> ReLU -> 1x1 (bias) -> sigmoid -> scale.
    The conv biases start at 0 as in the official blseresnext.py."""

    def __init__(self, channels, reduction=16, **kwargs):
        super().__init__(**kwargs)
        mid = channels // reduction
        with self.name_scope():
            self.fc1 = _conv(mid, 1, in_channels=channels, use_bias=True, bias_initializer="zeros")
            self.fc2 = _conv(channels, 1, in_channels=mid, use_bias=True, bias_initializer="zeros")

    def hybrid_forward(self, F, x):
        w = F.contrib.AdaptiveAvgPooling2D(x, output_size=1)
        w = F.Activation(self.fc2(F.Activation(self.fc1(w), act_type="relu")), act_type="sigmoid")
        return F.broadcast_mul(x, w)


class ResBlock(HybridBlock):
    """Bottleneck ("ResBlock", official ``Bottleneck``, docs/reference/blnet.md §1.1).

    1x1 (in->w) BN ReLU -> 3x3 (w->w, stride, groups) BN ReLU -> 1x1 (w->out) BN(gamma=0) [-> SE]
    -> fuse with the shortcut -> ReLU only if ``last_relu``. ``out_channels`` is the OUTPUT width;
    the inner width is ``floor(out*basewidth/64)//4 * cardinality`` (= out//4 for ResNet).
    Shortcut: AvgPool(3, 2, 1) if stride != 1, then 1x1 conv + BN if in != out; identity otherwise.
    """

    def __init__(self, in_channels, out_channels, stride=1, last_relu=True, cardinality=1, basewidth=64,
                 se=False, fusion=None, fusion_r=4, **kwargs):
        super().__init__(**kwargs)
        width = (out_channels * basewidth // 64) // 4 * cardinality
        if width <= 0:
            raise ValueError("bottleneck %d->%d has zero inner width (basewidth %d, cardinality %d)"
                             % (in_channels, out_channels, basewidth, cardinality))
        self.last_relu = last_relu
        with self.name_scope():
            self.conv1 = _conv(width, 1, in_channels=in_channels)
            self.bn1 = _bn(width)
            self.conv2 = _conv(width, 3, stride, 1, groups=cardinality, in_channels=width)
            self.bn2 = _bn(width)
            self.conv3 = _conv(out_channels, 1, in_channels=width)
            self.bn3 = _bn(out_channels, zero_gamma=True)
            self.se = SEModule(out_channels, prefix="se_") if se else None
            if stride != 1 or in_channels != out_channels:
                self.downsample = nn.HybridSequential(prefix="down_")
                with self.downsample.name_scope():
                    if stride != 1:
                        self.downsample.add(nn.AvgPool2D(3, stride, 1, count_include_pad=True))
                    if in_channels != out_channels:
                        self.downsample.add(_conv(out_channels, 1, in_channels=in_channels), _bn(out_channels))
            else:
                self.downsample = None
            self.fuse = make_fusion(fusion, out_channels, fusion_r)

    def hybrid_forward(self, F, x):
        shortcut = self.downsample(x) if self.downsample is not None else x
        out = F.Activation(self.bn1(self.conv1(x)), act_type="relu")
        out = F.Activation(self.bn2(self.conv2(out)), act_type="relu")
        out = self.bn3(self.conv3(out))
        if self.se is not None:
            out = self.se(out)
        out = self.fuse(out, shortcut) if self.fuse is not None else out + shortcut
        return F.Activation(out, act_type="relu") if self.last_relu else out


def _run(in_channels, out_channels, blocks, stride, drop_last_relu, prefix, **block_kw):
    """A run of ``blocks`` bottlenecks (official ``_make_layer``): only the first changes stride/width.
    ``drop_last_relu``: the last block has no final ReLU (only when the run has >= 2 blocks, as in [OFF])."""
    seq = nn.HybridSequential(prefix=prefix)
    with seq.name_scope():
        for i in range(blocks):
            last_relu = not (drop_last_relu and blocks >= 2 and i == blocks - 1)
            seq.add(ResBlock(in_channels if i == 0 else out_channels, out_channels, stride if i == 0 else 1,
                             last_relu=last_relu, prefix="b%d_" % i, **block_kw))
    return seq


class BLStem(HybridBlock):
    """bL stem that replaces the max-pool (docs/reference/blnet.md §1.2), input = conv1 output (C=stem_width, H/2).

    Big: 3x3/2 conv + BN (no ReLU). Little: 3x3/1 -> C/alpha, BN, ReLU; 3x3/2, BN, ReLU; 1x1 -> C, BN.
    Out: ReLU(big + little) -> ``bl_init`` 1x1 conv + BN + ReLU.
    """

    def __init__(self, channels=64, alpha=2, **kwargs):
        super().__init__(**kwargs)
        lc = channels // alpha
        with self.name_scope():
            self.big_conv = _conv(channels, 3, 2, 1, in_channels=channels)
            self.big_bn = _bn(channels)
            self.little_conv1 = _conv(lc, 3, 1, 1, in_channels=channels)
            self.little_bn1 = _bn(lc)
            self.little_conv2 = _conv(lc, 3, 2, 1, in_channels=lc)
            self.little_bn2 = _bn(lc)
            self.little_e = _conv(channels, 1, in_channels=lc)
            self.little_e_bn = _bn(channels)
            self.bl_init = _conv(channels, 1, in_channels=channels)
            self.bl_bn = _bn(channels)

    def hybrid_forward(self, F, x):
        big = self.big_bn(self.big_conv(x))
        little = F.Activation(self.little_bn1(self.little_conv1(x)), act_type="relu")
        little = F.Activation(self.little_bn2(self.little_conv2(little)), act_type="relu")
        little = self.little_e_bn(self.little_e(little))
        out = F.Activation(big + little, act_type="relu")
        return F.Activation(self.bl_bn(self.bl_init(out)), act_type="relu")


class ResBlockB(HybridBlock):
    """Big branch ("ResBlockB", §1.3): ``blocks`` bottlenecks in->out, the first with stride 2 on its 3x3
    and an AvgPool(+1x1+BN) shortcut, so it runs at half the input resolution; the last block returns
    the pre-ReLU sum (the single ReLU comes after the merge)."""

    def __init__(self, in_channels, out_channels, blocks, cardinality=1, basewidth=64, se=False, fusion=None,
                 fusion_r=4, **kwargs):
        super().__init__(**kwargs)
        if blocks < 1:
            raise ValueError("the Big branch needs >= 1 block (the plain stage must have K >= 2)")
        with self.name_scope():
            self.body = _run(in_channels, out_channels, blocks, 2, True, "body_", cardinality=cardinality,
                             basewidth=basewidth, se=se, fusion=fusion, fusion_r=fusion_r)

    def hybrid_forward(self, F, x):
        return self.body(x)


class ResBlockL(HybridBlock):
    """Little branch ("ResBlockL", §1.3): ``blocks`` bottlenecks at full resolution, output width
    out/alpha; ResNeXt variants use ``basewidth*alpha`` and ``cardinality//alpha`` here (§1.6). Every
    block, the last included, ends in a ReLU."""

    def __init__(self, in_channels, out_channels, blocks, cardinality=1, basewidth=64, se=False, fusion=None,
                 fusion_r=4, **kwargs):
        super().__init__(**kwargs)
        with self.name_scope():
            self.body = _run(in_channels, out_channels, blocks, 1, False, "body_", cardinality=cardinality,
                             basewidth=basewidth, se=se, fusion=fusion, fusion_r=fusion_r)

    def hybrid_forward(self, F, x):
        return self.body(x)


class TransitionLayer(FusedMixin, HybridBlock):
    """Merge + fusion ("TransitionLayer", §1.3, §1.8 items 3-5).

    ``big`` is upsampled x2 (nearest, as [OFF]'s ``F.interpolate`` default) and cropped to the Little
    size; the Little side goes through ``little_e`` (1x1 conv + BN, no ReLU); ``ReLU(big + little)``;
    then one fusion bottleneck out->out with ``stride`` (AvgPool shortcut when 2, identity when 1).
    ``merge_fusion`` optionally replaces the big+little sum (default plain add, as [OFF]).

    With the plain add, upsampling, crop, add and ReLU are one ``UpsampleAdd`` pass (the same values
    at every input size, odd ones included; mxrepro.models.fused)."""

    def __init__(self, little_channels, out_channels, stride, cardinality=1, basewidth=64, se=False,
                 fusion=None, fusion_r=4, merge_fusion=None, **kwargs):
        super().__init__(**kwargs)
        with self.name_scope():
            self.little_e = _conv(out_channels, 1, in_channels=little_channels)
            self.little_e_bn = _bn(out_channels)
            self.merge = make_fusion(merge_fusion, out_channels, fusion_r)
            self.fusion = ResBlock(out_channels, out_channels, stride, cardinality=cardinality,
                                   basewidth=basewidth, se=se, fusion=fusion, fusion_r=fusion_r, prefix="fusion_")
        self._init_fused()

    def hybrid_forward(self, F, big, little):
        little = self.little_e_bn(self.little_e(little))
        if self.merge is None and self._fused:
            return self.fusion(F.UpsampleAdd(plain(F, big), plain(F, little), scale=2, relu=True))
        big = F.slice_like(F.UpSampling(big, scale=2, sample_type="nearest", num_args=1), little, axes=(2, 3))
        out = self.merge(big, little) if self.merge is not None else big + little
        return self.fusion(F.Activation(out, act_type="relu"))


class BLModule(HybridBlock):
    """bL-module for stages 1-3 (official ``bLModule``, §1.3): Big (K-1 blocks at half resolution),
    Little (max(1, K//beta-1) blocks at width out/alpha), TransitionLayer (merge + fusion, ``stride``)."""

    def __init__(self, in_channels, out_channels, k, alpha, beta, stride, cardinality=1, basewidth=64,
                 se=False, fusion=None, fusion_r=4, merge_fusion=None, **kwargs):
        super().__init__(**kwargs)
        if out_channels % alpha or (cardinality > 1 and cardinality % alpha):
            raise ValueError("alpha=%d must divide the stage width %d and the cardinality %d"
                             % (alpha, out_channels, cardinality))
        lc = out_channels // alpha
        lcard = max(1, cardinality // alpha) if cardinality > 1 else 1
        lbw = basewidth * alpha if cardinality > 1 else basewidth
        kw = dict(se=se, fusion=fusion, fusion_r=fusion_r)
        with self.name_scope():
            self.big = ResBlockB(in_channels, out_channels, k - 1, cardinality, basewidth, prefix="big_", **kw)
            self.little = ResBlockL(in_channels, lc, little_blocks(k, beta), lcard, lbw, prefix="little_", **kw)
            self.transition = TransitionLayer(lc, out_channels, stride, cardinality, basewidth,
                                              merge_fusion=merge_fusion, prefix="trans_", **kw)

    def hybrid_forward(self, F, x):
        return self.transition(self.big(x), self.little(x))


class BLResNet(HybridBlock):
    """bL-ResNet / bL-ResNeXt / bL-SEResNeXt (official ``bLResNet``/``bLResNeXt``/``bLSEResNeXt``).

    conv1 (7x7/2 + BN + ReLU) -> ``stem`` (BLStem) -> ``layer1..3`` (BLModule, fusion strides 2, 2, 1)
    -> ``layer4`` (plain run, first block stride 2) -> global average pool -> ``fc``.

    Parameters: ``layers`` blocks per plain stage (K), ``alpha`` Little width ratio, ``beta`` Little depth
    ratio, ``num_classes`` (alias ``classes``), ``cardinality``/``basewidth`` (ResNeXt; 1/64 = ResNet),
    ``se`` (SE on every bottleneck),
    ``stem_width`` and ``widths`` (stage output widths; shrink them for tiny test networks),
    ``fusion``/``fusion_r``/``fusion_stages`` (residual-add hook, see ``make_fusion``; stage numbers 1-4),
    ``merge_fusion`` (hook for the Big+Little sum of stages 1-3).
    """

    def __init__(self, layers=(3, 4, 6, 3), alpha=2, beta=4, cardinality=1, basewidth=64, se=False,
                 num_classes=1000, stem_width=64, widths=(256, 512, 1024, 2048), fusion=None, fusion_r=4,
                 fusion_stages=(1, 2, 3, 4), merge_fusion=None, classes=None, **kwargs):
        super().__init__(**kwargs)
        if classes is not None:  # gluon-cv / mxrepro.models.resnet spelling
            num_classes = classes
        layers = tuple(int(v) for v in layers)
        if len(layers) != 4 or min(layers[:3]) < 2 or layers[3] < 1:
            raise ValueError("layers must be 4 block counts with K >= 2 in stages 1-3, got %r" % (layers,))
        if alpha < 1 or beta < 1:
            raise ValueError("alpha and beta must be >= 1 (got %r, %r)" % (alpha, beta))
        self.alpha, self.beta, self.layers = alpha, beta, layers

        def fz(stage):
            return fusion if stage in fusion_stages else None

        common = dict(cardinality=cardinality, basewidth=basewidth, se=se, fusion_r=fusion_r)
        with self.name_scope():
            self.conv1 = nn.HybridSequential(prefix="conv1_")
            with self.conv1.name_scope():
                self.conv1.add(_conv(stem_width, 7, 2, 3, in_channels=3), _bn(stem_width), nn.Activation("relu"))
            self.stem = BLStem(stem_width, alpha, prefix="stem_")
            ins = (stem_width,) + tuple(widths[:3])
            self.layer1 = BLModule(ins[0], widths[0], layers[0], alpha, beta, 2, fusion=fz(1),
                                   merge_fusion=merge_fusion, prefix="layer1_", **common)
            self.layer2 = BLModule(ins[1], widths[1], layers[1], alpha, beta, 2, fusion=fz(2),
                                   merge_fusion=merge_fusion, prefix="layer2_", **common)
            self.layer3 = BLModule(ins[2], widths[2], layers[2], alpha, beta, 1, fusion=fz(3),
                                   merge_fusion=merge_fusion, prefix="layer3_", **common)
            self.layer4 = _run(widths[2], widths[3], layers[3], 2, False, "layer4_", fusion=fz(4), **common)
            self.pool = nn.GlobalAvgPool2D(prefix="pool_")
            # PyTorch nn.Linear default: U(+-1/sqrt(fan_in)) for weight and bias (§1.7).
            bound = 1.0 / widths[3] ** 0.5
            self.fc = nn.Dense(num_classes, in_units=widths[3], weight_initializer=mx.init.Uniform(bound),
                               bias_initializer=mx.init.Uniform(bound), prefix="fc_")

    def feature_spec(self):
        """(feature-map function, channels, classes, classifier children) for heads.attach_head."""
        return (lambda F, x: self.features(F, x)), int(self.fc._in_units), int(self.fc._units), ("pool", "fc")

    def features(self, F, x):
        x = self.stem(self.conv1(x))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def hybrid_forward(self, F, x):
        return self.fc(F.flatten(self.pool(self.features(F, x))))


def _bl(depth, alpha, beta, **kwargs):
    if depth not in BLOCK_LISTS:
        raise ValueError("depth must be one of %s" % sorted(BLOCK_LISTS))
    return BLResNet(BLOCK_LISTS[depth], alpha=alpha, beta=beta, **kwargs)


# Paper numbers (docs/reference/blnet.md §2): top1_err = paper (as quoted by [REPRO]); top1_err_official = [OFF] README
# PyTorch retrain; params_m / gmacs = [CALC] for a 1000-class head, 224x224.
_SRC = "docs/reference/blnet.md §2"


@register_model(family="blnet", input_size=224, paper=dict(top1_err=22.69, top1_err_official=22.41, params_m=26.69,
                                                           gmacs=2.86, alpha=2, beta=4, source=_SRC))
def bl_resnet50(alpha=2, beta=4, **kwargs):
    """bL-ResNet-50 (default alpha=2, beta=4; the paper's sweep uses alpha, beta in {2, 4})."""
    return _bl(50, alpha, beta, **kwargs)


@register_model(family="blnet", input_size=224, paper=dict(top1_err=22.72, params_m=26.97, gmacs=2.91, alpha=2,
                                                           beta=2, source=_SRC))
def bl_resnet50_a2_b2(**kwargs):
    """bL-ResNet-50 alpha=2 beta=2 (paper table row)."""
    return _bl(50, 2, 2, **kwargs)


@register_model(family="blnet", input_size=224, paper=dict(top1_err=22.69, top1_err_official=22.41, params_m=26.69,
                                                           gmacs=2.86, alpha=2, beta=4, source=_SRC))
def bl_resnet50_a2_b4(**kwargs):
    """bL-ResNet-50 alpha=2 beta=4 (paper table row; the released configuration)."""
    return _bl(50, 2, 4, **kwargs)


@register_model(family="blnet", input_size=224, paper=dict(top1_err=23.20, params_m=26.31, gmacs=2.49, alpha=4,
                                                           beta=2, source=_SRC))
def bl_resnet50_a4_b2(**kwargs):
    """bL-ResNet-50 alpha=4 beta=2 (paper table row)."""
    return _bl(50, 4, 2, **kwargs)


@register_model(family="blnet", input_size=224, paper=dict(top1_err=23.15, params_m=26.24, gmacs=2.48, alpha=4,
                                                           beta=4, source=_SRC + "; [OCT] 76.9% top-1"))
def bl_resnet50_a4_b4(**kwargs):
    """bL-ResNet-50 alpha=4 beta=4 (paper table row)."""
    return _bl(50, 4, 4, **kwargs)


@register_model(family="blnet", input_size=224, paper=dict(top1_err_official=21.34, params_m=41.85, gmacs=3.89,
                                                           alpha=2, beta=4, source=_SRC))
def bl_resnet101(alpha=2, beta=4, **kwargs):
    """bL-ResNet-101, balanced block list [4, 8, 18, 3]."""
    return _bl(101, alpha, beta, **kwargs)


@register_model(family="blnet", input_size=224, paper=dict(params_m=57.36, gmacs=5.04, alpha=2, beta=4,
                                                           source=_SRC))
def bl_resnet152(alpha=2, beta=4, **kwargs):
    """bL-ResNet-152, balanced block list [5, 12, 30, 3]."""
    return _bl(152, alpha, beta, **kwargs)


@register_model(family="blnet", input_size=224, paper=dict(top1_err_official=21.62, params_m=26.19, gmacs=3.03,
                                                           alpha=2, beta=4, source=_SRC + "; [OCT] 78.4% top-1"))
def bl_resnext50_32x4d(alpha=2, beta=4, **kwargs):
    """bL-ResNeXt-50 (32x4d)."""
    return _bl(50, alpha, beta, cardinality=32, basewidth=4, **kwargs)


@register_model(family="blnet", input_size=224, paper=dict(alpha=2, beta=4, source="not in the official README"))
def bl_resnext50_64x4d(alpha=2, beta=4, **kwargs):
    """bL-ResNeXt-50 (64x4d); no published result."""
    return _bl(50, alpha, beta, cardinality=64, basewidth=4, **kwargs)


@register_model(family="blnet", input_size=224, paper=dict(top1_err_official=20.87, params_m=41.51, gmacs=4.08,
                                                           alpha=2, beta=4, source=_SRC))
def bl_resnext101_32x4d(alpha=2, beta=4, **kwargs):
    """bL-ResNeXt-101 (32x4d), balanced block list."""
    return _bl(101, alpha, beta, cardinality=32, basewidth=4, **kwargs)


@register_model(family="blnet", input_size=224, paper=dict(top1_err_official=20.34, params_m=77.36, gmacs=7.14,
                                                           alpha=2, beta=4,
                                                           source=_SRC + " (README says 7.97 GFLOPs, see §2.2a)"))
def bl_resnext101_64x4d(alpha=2, beta=4, **kwargs):
    """bL-ResNeXt-101 (64x4d), balanced block list."""
    return _bl(101, alpha, beta, cardinality=64, basewidth=4, **kwargs)


@register_model(family="blnet", input_size=224, paper=dict(top1_err_official=21.44, params_m=28.77, gmacs=3.03,
                                                           alpha=2, beta=4, source=_SRC))
def bl_seresnext50_32x4d(alpha=2, beta=4, **kwargs):
    """bL-SEResNeXt-50 (32x4d), SE (r=16) on every bottleneck."""
    return _bl(50, alpha, beta, cardinality=32, basewidth=4, se=True, **kwargs)


@register_model(family="blnet", input_size=224, paper=dict(top1_err_official=21.04, params_m=45.88, gmacs=4.08,
                                                           alpha=2, beta=4, source=_SRC))
def bl_seresnext101_32x4d(alpha=2, beta=4, **kwargs):
    """bL-SEResNeXt-101 (32x4d), SE (r=16) on every bottleneck."""
    return _bl(101, alpha, beta, cardinality=32, basewidth=4, se=True, **kwargs)
