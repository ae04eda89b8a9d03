"""Residual host networks and their plain baselines (the hosts of AFF/iAFF, docs/reference/aff.md §2).

* ``ResNetV1b``: the paper-era ImageNet ResNet/ResNeXt (gluon-cv "v1b" = torchvision v1.5: 7x7 stem,
  stride on the 3x3, strided 1x1 + BN projection shortcut). ``deep_stem``/``stem_width``/``avg_down``
  give the newer ResNet-D-style variant used by the open-aff HEAD code (docs/reference/aff.md §2.2-2.3).
* ``CIFARPreActResNet``: pre-activation ResNet for 32x32 input with a data-normalising BN and
  ``channel_times`` x [16, 16, 32, 64] widths (docs/reference/aff.md §2.4; depth 6*blocks+2).
* ``CIFARResNeXt``: 3-stage ResNeXt-(9*blocks+2)-32x4d for 32x32 input (docs/reference/aff.md §2.5).

Every residual block calls ``fuse(branch, shortcut)`` where a fusion is configured and the plain sum
otherwise, so the AFF models in :mod:`mxrepro.models.aff` are these classes with ``fusion=...``.
``fusion`` is ``None`` (sum), a name understood by :func:`mxrepro.models.fusions.get_fusion` (``'aff'``,
``'ASKCFuse'``, ``'iaff'``, ...) or a callable ``fusion(channels) -> HybridBlock``. Stage ``s``
(1-based) uses it when ``s >= start_layer`` (docs/reference/aff.md §2.1).

All layers are built with their input widths, so parameter shapes are known right after
``initialize()`` without a forward pass.
"""
import math

from mxnet.gluon import nn
from mxnet.gluon.block import HybridBlock

from .fused import PlainBatchNorm
from .fusions import make_fusion
from .layers import DataNorm, batchnorm as _bn, conv as _conv
from .registry import register_model

__all__ = ["ResNetV1b", "BottleneckV1b", "CIFARPreActResNet", "PreActBlock", "CIFARResNeXt", "IMAGENET_LAYERS"]

# Blocks per stage. 152 is the standard [3, 8, 36, 3]; the open-aff HEAD used [3, 4, 36, 3] (docs/reference/aff.md
# §2.2, a bug) -- pass ``layers=`` explicitly to reproduce it.
IMAGENET_LAYERS = {18: [2, 2, 2, 2], 34: [3, 4, 6, 3], 50: [3, 4, 6, 3], 101: [3, 4, 23, 3],
                   152: [3, 8, 36, 3]}


class _Fused(HybridBlock):
    """Mixin-free helper: ``out = fuse(branch, shortcut)`` or ``branch + shortcut``."""

    def _fuse(self, F, branch, shortcut):
        if self.fuse is None:
            return branch + shortcut
        return self.fuse(branch, shortcut)


# ------------------------------------------------------------------------------------------------
# ImageNet
# ------------------------------------------------------------------------------------------------
class BottleneckV1b(_Fused):
    """Bottleneck of ResNet-v1b / ResNeXt (docs/reference/aff.md §2.2-2.3; NEW block.py ``AFFBottleneck``,
    ``AFFResNeXtBlock``).

    1x1 (in->w) BN ReLU -> 3x3 (w->w, ``stride``, ``groups=cardinality``) BN ReLU -> 1x1 (w->4*planes)
    BN[gamma=0 if ``last_gamma``]; shortcut = identity, or [AvgPool(stride) if ``avg_down``] -> 1x1
    conv (stride unless avg_down) -> BN; ``out = ReLU(fuse(branch, shortcut))``.
    ``w = cardinality * floor(planes * bottleneck_width / 64)`` (= planes for ResNet).
    """
    expansion = 4

    def __init__(self, in_channels, planes, stride=1, downsample=False, cardinality=1, bottleneck_width=64,
                 last_gamma=False, avg_down=False, fuse=None, **kwargs):
        super().__init__(**kwargs)
        width = cardinality * int(math.floor(planes * bottleneck_width / 64.0))
        out = planes * self.expansion
        with self.name_scope():
            self.body = nn.HybridSequential(prefix="")
            self.body.add(_conv(width, 1, in_channels=in_channels), _bn(width), nn.Activation("relu"),
                          _conv(width, 3, stride, 1, groups=cardinality, in_channels=width), _bn(width),
                          nn.Activation("relu"),
                          _conv(out, 1, in_channels=width), _bn(out, zero_gamma=last_gamma))
            if downsample:
                self.downsample = nn.HybridSequential(prefix="down_")
                if avg_down and stride != 1:
                    self.downsample.add(nn.AvgPool2D(stride, stride, ceil_mode=True, count_include_pad=False))
                    self.downsample.add(_conv(out, 1, 1, in_channels=in_channels))
                else:
                    self.downsample.add(_conv(out, 1, stride, in_channels=in_channels))
                self.downsample.add(_bn(out))
            else:
                self.downsample = None
            self.fuse = fuse

    def hybrid_forward(self, F, x):
        shortcut = self.downsample(x) if self.downsample is not None else x
        return F.Activation(self._fuse(F, self.body(x), shortcut), act_type="relu")


def _bottleneck_stage(features, s, n, in_ch, planes, fusion, fusion_r, **block_kw):
    """Append stage ``s`` (``stage<s>_``: ``n`` bottlenecks ``block<i>_``, the first with the projection
    shortcut and stride 2 from stage 2 on) to ``features``; returns its output width."""
    stage = nn.HybridSequential(prefix="stage%d_" % s)
    out = planes * BottleneckV1b.expansion
    with stage.name_scope():
        for i in range(n):
            stage.add(BottleneckV1b(in_ch, planes, stride=(2 if s > 1 and i == 0 else 1), downsample=(i == 0),
                                    fuse=make_fusion(fusion, out, fusion_r), prefix="block%d_" % (i + 1), **block_kw))
            in_ch = out
    features.add(stage)
    return out


def _stem_features_spec(self):
    """(feature-map function, channels, classes, classifier children) for heads.attach_head."""
    return ((lambda F, x: self.features(self.stem(x))), int(self.output._in_units), int(self.output._units),
            ("pool", "flat", "output"))


class ResNetV1b(HybridBlock):
    """ImageNet ResNet-v1b / ResNeXt host (docs/reference/aff.md §2.2-2.3, §7.4).

    Parameters
    ----------
    layers : list of 4 ints, blocks per stage.
    classes : output classes.
    cardinality, bottleneck_width : 1, 64 for ResNet; 32, 4 for ResNeXt-32x4d.
    last_gamma : zero-initialise the last BN gamma of every bottleneck (gluon-cv meaning).
    deep_stem, stem_width, avg_down : the newer ResNet-D-style stem/shortcut (open-aff HEAD).
    fusion, fusion_r, start_layer : fusion in stages ``>= start_layer`` with reduction ``fusion_r``.
    """

    def __init__(self, layers, classes=1000, cardinality=1, bottleneck_width=64, last_gamma=False,
                 deep_stem=False, stem_width=32, avg_down=False, fusion=None, fusion_r=16, start_layer=1,
                 **kwargs):
        super().__init__(**kwargs)
        if len(layers) != 4:
            raise ValueError("layers must list 4 stages, got %r" % (layers,))
        self.fusion_name = fusion if isinstance(fusion, str) else None
        stem_out = 2 * stem_width if deep_stem else 64
        with self.name_scope():
            self.stem = nn.HybridSequential(prefix="stem_")
            if deep_stem:
                self.stem.add(_conv(stem_width, 3, 2, 1, in_channels=3), _bn(stem_width), nn.Activation("relu"),
                              _conv(stem_width, 3, 1, 1, in_channels=stem_width), _bn(stem_width),
                              nn.Activation("relu"), _conv(stem_out, 3, 1, 1, in_channels=stem_width))
            else:
                self.stem.add(_conv(64, 7, 2, 3, in_channels=3))
            self.stem.add(_bn(stem_out), nn.Activation("relu"), nn.MaxPool2D(3, 2, 1))
            self.features = nn.HybridSequential(prefix="")
            in_ch = stem_out
            for s, (n, planes) in enumerate(zip(layers, (64, 128, 256, 512)), start=1):
                in_ch = _bottleneck_stage(self.features, s, n, in_ch, planes, fusion if s >= start_layer else None,
                                          fusion_r, cardinality=cardinality, bottleneck_width=bottleneck_width,
                                          last_gamma=last_gamma, avg_down=avg_down)
            self.pool = nn.GlobalAvgPool2D()
            self.flat = nn.Flatten()
            self.output = nn.Dense(classes, in_units=in_ch)

    feature_spec = _stem_features_spec

    def hybrid_forward(self, F, x):
        return self.output(self.flat(self.pool(self.features(self.stem(x)))))


# ------------------------------------------------------------------------------------------------
# CIFAR
# ------------------------------------------------------------------------------------------------
class PreActBlock(_Fused):
    """Pre-activation basic block of the CIFAR AFF-ResNet (docs/reference/aff.md §2.4; NEW ``AFFResBlockV2``).

    branch = BN ReLU 3x3 (stride) BN ReLU 3x3 (no biases); shortcut (only when the width changes) =
    1x1 conv with stride, no BN (paper-era) or AvgPool + 1x1 (``avg_down``, HEAD), applied to the
    raw input; ``out = fuse(branch, shortcut)`` with no ReLU after it. ``plain_input``: the input
    comes from a fused operator (plain memory layout), so the first BN is a
    :class:`~mxrepro.models.fused.PlainBatchNorm` (same parameters and values).
    """

    def __init__(self, in_channels, channels, stride=1, avg_down=False, fuse=None, plain_input=False, **kwargs):
        super().__init__(**kwargs)
        with self.name_scope():
            self.body = nn.HybridSequential(prefix="")
            self.body.add(PlainBatchNorm(in_channels=in_channels) if plain_input else _bn(in_channels),
                          nn.Activation("relu"),
                          _conv(channels, 3, stride, 1, in_channels=in_channels), _bn(channels),
                          nn.Activation("relu"), _conv(channels, 3, 1, 1, in_channels=channels))
            if in_channels != channels or stride != 1:
                self.downsample = nn.HybridSequential(prefix="down_")
                if avg_down and stride != 1:
                    self.downsample.add(nn.AvgPool2D(stride, stride, ceil_mode=True, count_include_pad=False),
                                        _conv(channels, 1, 1, in_channels=in_channels))
                else:
                    self.downsample.add(_conv(channels, 1, stride, in_channels=in_channels))
            else:
                self.downsample = None
            self.fuse = fuse

    def hybrid_forward(self, F, x):
        shortcut = self.downsample(x) if self.downsample is not None else x
        return self._fuse(F, self.body(x), shortcut)


class CIFARPreActResNet(HybridBlock):
    """CIFAR pre-activation ResNet-(6*blocks+2), widths ``channel_times`` x [16, 16, 32, 64]
    (docs/reference/aff.md §2.4; NEW ``CIFARAFFResNet``, OLD ``ResNet110V2ASKC``).

    stem: BN(scale=False, center=False) (:class:`DataNorm`) -> 3x3 conv (or the 3-conv ``deep_stem``); 3 stages with
    strides 1/2/2; head: BN ReLU GAP flatten Dense. Fusion reduction ``fusion_r`` (4 in the paper).
    """

    def __init__(self, blocks=5, channel_times=4, classes=100, fusion=None, fusion_r=4, start_layer=1,
                 deep_stem=False, avg_down=False, **kwargs):
        super().__init__(**kwargs)
        channels = [channel_times * c for c in (16, 16, 32, 64)]
        self.fusion_name = fusion if isinstance(fusion, str) else None
        with self.name_scope():
            self.stem = nn.HybridSequential(prefix="stem_")
            self.stem.add(DataNorm(3))
            if deep_stem:
                half = channels[0] // 2
                self.stem.add(_conv(half, 3, 1, 1, in_channels=3), _bn(half), nn.Activation("relu"),
                              _conv(half, 3, 1, 1, in_channels=half), _bn(half), nn.Activation("relu"),
                              _conv(channels[0], 3, 1, 1, in_channels=half))
            else:
                self.stem.add(_conv(channels[0], 3, 1, 1, in_channels=3))
            self.features = nn.HybridSequential(prefix="")
            in_ch = channels[0]
            plain = False  # the previous block's output comes from a fused operator (mxrepro.models.fused)
            for s, ch in enumerate(channels[1:], start=1):
                stage = nn.HybridSequential(prefix="stage%d_" % s)
                with stage.name_scope():
                    for i in range(blocks):
                        fuse = make_fusion(fusion, ch, fusion_r) if s >= start_layer else None
                        stage.add(PreActBlock(in_ch, ch, stride=(2 if s > 1 and i == 0 else 1), avg_down=avg_down,
                                              fuse=fuse, plain_input=plain, prefix="block%d_" % (i + 1)))
                        plain = bool(getattr(fuse, "_fused", False))
                        in_ch = ch
                self.features.add(stage)
            self.head = nn.HybridSequential(prefix="head_")
            self.head.add(PlainBatchNorm(in_channels=in_ch) if plain else _bn(in_ch), nn.Activation("relu"),
                          nn.GlobalAvgPool2D(), nn.Flatten())
            self.output = nn.Dense(classes, in_units=in_ch)

    def feature_spec(self):
        """(feature-map function, channels, classes, classifier children) for heads.attach_head: the
        BN-ReLU-pool ``head`` goes too (an FB head brings its own BN)."""
        return ((lambda F, x: self.features(self.stem(x))), int(self.output._in_units), int(self.output._units),
                ("head", "output"))

    def hybrid_forward(self, F, x):
        return self.output(self.head(self.features(self.stem(x))))


class CIFARResNeXt(HybridBlock):
    """CIFAR ResNeXt-(9*blocks+2)-{cardinality}x{bottleneck_width}d (docs/reference/aff.md §2.5; NEW
    ``CIFARAFFResNeXt``, OLD ``CIFARResNextASKC``).

    stem: 3x3 conv 64 BN ReLU; 3 stages of bottlenecks with planes 64/128/256 (outputs 256/512/1024),
    strides 1/2/2, projection shortcut on every stage's first block; head: GAP -> Dense.
    Fusion reduction ``fusion_r`` (16 in the paper).
    """

    def __init__(self, blocks=4, cardinality=32, bottleneck_width=4, classes=100, last_gamma=False,
                 fusion=None, fusion_r=16, start_layer=1, avg_down=False, **kwargs):
        super().__init__(**kwargs)
        self.fusion_name = fusion if isinstance(fusion, str) else None
        with self.name_scope():
            self.stem = nn.HybridSequential(prefix="stem_")
            self.stem.add(_conv(64, 3, 1, 1, in_channels=3), _bn(64), nn.Activation("relu"))
            self.features = nn.HybridSequential(prefix="")
            in_ch = 64
            for s, planes in enumerate((64, 128, 256), start=1):
                in_ch = _bottleneck_stage(self.features, s, blocks, in_ch, planes, fusion if s >= start_layer else None,
                                          fusion_r, cardinality=cardinality, bottleneck_width=bottleneck_width,
                                          last_gamma=last_gamma, avg_down=avg_down)
            self.pool = nn.GlobalAvgPool2D()
            self.output = nn.Dense(classes, in_units=in_ch)

    feature_spec = _stem_features_spec

    def hybrid_forward(self, F, x):
        return self.output(self.pool(self.features(self.stem(x))))


# ------------------------------------------------------------------------------------------------
# Builders (plain baselines; the AFF ones live in aff.py)
# ------------------------------------------------------------------------------------------------
def imagenet_resnet(depth, **kwargs):
    """ResNet-v1b of ``depth`` (any host kwargs, e.g. ``fusion='aff'``)."""
    if depth not in IMAGENET_LAYERS or depth < 50:
        raise ValueError("depth must be 50, 101 or 152 (bottleneck ResNets), got %r" % depth)
    layers = kwargs.pop("layers", IMAGENET_LAYERS[depth])
    return ResNetV1b(layers, **kwargs)


def imagenet_resnext(depth, cardinality=32, bottleneck_width=4, **kwargs):
    """ResNeXt-{depth}-{cardinality}x{bottleneck_width}d with the v1b layout."""
    if depth not in (50, 101, 152):
        raise ValueError("depth must be 50, 101 or 152, got %r" % depth)
    layers = kwargs.pop("layers", IMAGENET_LAYERS[depth])
    return ResNetV1b(layers, cardinality=cardinality, bottleneck_width=bottleneck_width, **kwargs)


_IMNET = dict(input_size=224, num_classes=1000)
_CIFAR = dict(input_size=32, num_classes=100)


@register_model(family="resnet", paper=dict(params_m=25.557, gmacs=4.09, source="docs/reference/aff.md §2.6-2.7"), **_IMNET)
def resnet50_v1b(**kwargs):
    """ResNet-50 v1b (7x7 stem, stride on the 3x3): the AFF ImageNet baseline."""
    return imagenet_resnet(50, **kwargs)


@register_model(family="resnet", paper=dict(top1_err=23.2, params_m_quoted=42.5, source="AFF Table 5"), **_IMNET)
def resnet101_v1b(**kwargs):
    """ResNet-101 v1b."""
    return imagenet_resnet(101, **kwargs)


@register_model(family="resnet", **_IMNET)
def resnet152_v1b(**kwargs):
    """ResNet-152 v1b ([3, 8, 36, 3])."""
    return imagenet_resnet(152, **kwargs)


@register_model(family="resnet", paper=dict(params_m=25.029, gmacs=4.23, source="docs/reference/aff.md §2.6-2.7"), **_IMNET)
def resnext50_32x4d(**kwargs):
    """ResNeXt-50 32x4d (v1b layout): the AFF-ResNeXt baseline."""
    return imagenet_resnext(50, **kwargs)


@register_model(family="resnet", **_IMNET)
def resnext101_32x4d(**kwargs):
    """ResNeXt-101 32x4d (v1b layout)."""
    return imagenet_resnext(101, **kwargs)


@register_model(family="resnet", paper=dict(params_m=7.450, source="docs/reference/aff.md §2.6 (ct 4, 100 classes)"), **_CIFAR)
def cifar_resnet(blocks=5, channel_times=4, **kwargs):
    """CIFAR pre-activation ResNet-(6*blocks+2), default ResNet-32 with channel_times 4 (AFF host)."""
    return CIFARPreActResNet(blocks=blocks, channel_times=channel_times, **kwargs)


def cifar_resnext(depth, cardinality=32, bottleneck_width=4, **kwargs):
    """CIFAR ResNeXt of ``depth`` = 9*blocks+2 (29, 38, 47, ...); ``blocks=`` overrides the depth."""
    if (depth - 2) % 9:
        raise ValueError("CIFAR ResNeXt depth must be 9*blocks+2 (29, 38, 47), got %r" % depth)
    blocks = kwargs.pop("blocks", (depth - 2) // 9)
    return CIFARResNeXt(blocks=blocks, cardinality=cardinality, bottleneck_width=bottleneck_width, **kwargs)


@register_model(family="resnet", **_CIFAR)
def cifar_resnext29_32x4d(**kwargs):
    """CIFAR ResNeXt-29 32x4d baseline."""
    return cifar_resnext(29, **kwargs)


@register_model(family="resnet", **_CIFAR)
def cifar_resnext38_32x4d(**kwargs):
    """CIFAR ResNeXt-38 32x4d baseline."""
    return cifar_resnext(38, **kwargs)


@register_model(family="resnet", **_CIFAR)
def cifar_resnext47_32x4d(**kwargs):
    """CIFAR ResNeXt-47 32x4d baseline."""
    return cifar_resnext(47, **kwargs)
