"""Attentional Feature Fusion (Dai et al., WACV 2021): the AFF/iAFF ResNet/ResNeXt networks (docs/reference/aff.md §2)
and the reference scripts' ``--model``/``--askc-type`` names. The fusion blocks themselves (MS-CAM,
AFF, iAFF, the ablations) are in :mod:`mxrepro.models.fusions`; the hosts in :mod:`mxrepro.models.resnet`.
"""
import re

from .fusions import canonical_fusion
from .registry import list_models, register_model
from .resnet import CIFARPreActResNet, cifar_resnext, imagenet_resnet, imagenet_resnext

__all__ = ["imagenet_cli_model", "cifar_cli_model"]


# ------------------------------------------------------------------------------------------------
# Networks (docs/reference/aff.md §2). ImageNet: fusion in stages >= 3, r=16, paper-era v1b layout. CIFAR: all stages;
# r=4 in the pre-activation ResNet, r=16 in the ResNeXt.
# ------------------------------------------------------------------------------------------------
def _imagenet(kind, depth, default_fusion, **kwargs):
    kwargs.setdefault("fusion", default_fusion)
    kwargs.setdefault("fusion_r", 16)
    kwargs.setdefault("start_layer", 3)
    if kind == "resnet":
        return imagenet_resnet(depth, **kwargs)
    return imagenet_resnext(depth, **kwargs)


def _cifar_resnet(default_fusion, blocks=5, channel_times=4, **kwargs):
    kwargs.setdefault("fusion", default_fusion)
    kwargs.setdefault("fusion_r", 4)
    kwargs.setdefault("start_layer", 1)
    return CIFARPreActResNet(blocks=blocks, channel_times=channel_times, **kwargs)


def _cifar_resnext(default_fusion, depth, **kwargs):
    kwargs.setdefault("fusion", default_fusion)
    kwargs.setdefault("fusion_r", 16)
    kwargs.setdefault("start_layer", 1)
    return cifar_resnext(depth, **kwargs)


_SRC = "docs/reference/aff.md §2.6-2.7, §6 Table 5"
_IMNET = dict(family="aff", input_size=224, num_classes=1000)
_CIFAR = dict(family="aff", input_size=32, num_classes=100)

# params_m: trainable parameters of the architecture as coded (docs/reference/aff.md §2.6, checked by the tests);
# paper_params_m: what the paper/README prints (ResNeXt rows count BN statistics too);
# gmacs: multiply-adds at 224 (conv + fc, docs/reference/aff.md §2.7; the paper's "GFLOPs" are these).


@register_model(paper=dict(params_m=30.354, paper_params_m=30.3, gmacs=4.326, paper_gflops=4.3, top1_err=20.9,
                           source=_SRC), **_IMNET)
def aff_resnet50(**kwargs):
    """AFF-ResNet-50 (paper-era v1b, AFF r=16 in stages 3-4). Paper: 20.9% top-1 err, 30.3M."""
    return _imagenet("resnet", 50, "aff", **kwargs)


@register_model(paper=dict(params_m=35.151, paper_params_m=35.1, gmacs=4.562, top1_err=20.4, source=_SRC), **_IMNET)
def iaff_resnet50(**kwargs):
    """iAFF-ResNet-50. Paper: 20.4% top-1 err, 35.1M."""
    return _imagenet("resnet", 50, "iaff", **kwargs)


@register_model(paper=dict(source="depth variant of " + _SRC), **_IMNET)
def aff_resnet101(**kwargs):
    """AFF-ResNet-101 ([3, 4, 23, 3])."""
    return _imagenet("resnet", 101, "aff", **kwargs)


@register_model(paper=dict(source="depth variant of " + _SRC), **_IMNET)
def iaff_resnet101(**kwargs):
    """iAFF-ResNet-101."""
    return _imagenet("resnet", 101, "iaff", **kwargs)


@register_model(paper=dict(source="depth variant; standard [3, 8, 36, 3] (HEAD used [3, 4, 36, 3])"), **_IMNET)
def aff_resnet152(**kwargs):
    """AFF-ResNet-152 ([3, 8, 36, 3]; pass ``layers=[3, 4, 36, 3]`` for the reference HEAD's list)."""
    return _imagenet("resnet", 152, "aff", **kwargs)


@register_model(paper=dict(source="depth variant; standard [3, 8, 36, 3]"), **_IMNET)
def iaff_resnet152(**kwargs):
    """iAFF-ResNet-152."""
    return _imagenet("resnet", 152, "iaff", **kwargs)


@register_model(paper=dict(params_m=29.826, params_with_bn_stats_m=29.946, paper_params_m=29.9, gmacs=4.468,
                           top1_err=20.8, source=_SRC), **_IMNET)
def aff_resnext50_32x4d(**kwargs):
    """AFF-ResNeXt-50-32x4d. Paper: 20.8% top-1 err, 29.9M (counts BN statistics)."""
    return _imagenet("resnext", 50, "aff", **kwargs)


@register_model(paper=dict(params_m=34.623, params_with_bn_stats_m=34.795, paper_params_m=34.7, gmacs=4.703,
                           top1_err=20.2, source=_SRC), **_IMNET)
def iaff_resnext50_32x4d(**kwargs):
    """iAFF-ResNeXt-50-32x4d. Paper: 20.2% top-1 err, 34.7M (counts BN statistics)."""
    return _imagenet("resnext", 50, "iaff", **kwargs)


@register_model(paper=dict(source="depth variant of " + _SRC), **_IMNET)
def aff_resnext101_32x4d(**kwargs):
    """AFF-ResNeXt-101-32x4d."""
    return _imagenet("resnext", 101, "aff", **kwargs)


@register_model(paper=dict(source="depth variant of " + _SRC), **_IMNET)
def iaff_resnext101_32x4d(**kwargs):
    """iAFF-ResNeXt-101-32x4d."""
    return _imagenet("resnext", 101, "iaff", **kwargs)


@register_model(paper=dict(params_m=7.897, params_with_bn_stats_m=7.917, paper_params_m=5.0, acc_coarse20=89.3,
                           acc_fine100_reference=83.57,
                           note="paper-v1 '5.0M' cannot come from blocks=5, ct=4 (docs/aff.md); 89.3 is on "
                                "the 20 coarse classes", source="docs/reference/aff.md §2.6, §4, §6"), **_CIFAR)
def aff_cifar_resnet(blocks=5, channel_times=4, **kwargs):
    """CIFAR AFF-ResNet-(6*blocks+2), default AFF-ResNet-32 (blocks 5, channel-times 4, r=4)."""
    return _cifar_resnet("aff", blocks, channel_times, **kwargs)


@register_model(paper=dict(params_m=8.344, source="docs/reference/aff.md §2.6"), **_CIFAR)
def iaff_cifar_resnet(blocks=5, channel_times=4, **kwargs):
    """CIFAR iAFF-ResNet-(6*blocks+2), default iAFF-ResNet-32."""
    return _cifar_resnet("iaff", blocks, channel_times, **kwargs)


@register_model(paper=dict(params_m=5.934, params_with_bn_stats_m=5.983, source="docs/reference/aff.md §2.6"), **_CIFAR)
def aff_cifar_resnext29_32x4d(**kwargs):
    """CIFAR AFF-ResNeXt-29-32x4d (r=16)."""
    return _cifar_resnext("aff", 29, **kwargs)


@register_model(paper=dict(params_m=7.770, params_with_bn_stats_m=7.833, paper_params_m=7.8, acc_coarse20=90.3,
                           source="docs/reference/aff.md §2.6, §6"), **_CIFAR)
def aff_cifar_resnext38_32x4d(**kwargs):
    """CIFAR AFF-ResNeXt-38-32x4d (r=16). Paper (20 coarse classes): 90.3%, 7.8M."""
    return _cifar_resnext("aff", 38, **kwargs)


@register_model(paper=dict(params_m=9.606, params_with_bn_stats_m=9.683, paper_params_m=9.7,
                           acc_fine100_reference=85.38, source="docs/reference/aff.md §2.6, §4"), **_CIFAR)
def aff_cifar_resnext47_32x4d(**kwargs):
    """CIFAR AFF-ResNeXt-47-32x4d (r=16)."""
    return _cifar_resnext("aff", 47, **kwargs)


@register_model(paper=dict(source="docs/reference/aff.md §2.5"), **_CIFAR)
def iaff_cifar_resnext29_32x4d(**kwargs):
    """CIFAR iAFF-ResNeXt-29-32x4d."""
    return _cifar_resnext("iaff", 29, **kwargs)


@register_model(paper=dict(params_m=9.192, source="docs/reference/aff.md §2.6"), **_CIFAR)
def iaff_cifar_resnext38_32x4d(**kwargs):
    """CIFAR iAFF-ResNeXt-38-32x4d."""
    return _cifar_resnext("iaff", 38, **kwargs)


@register_model(paper=dict(source="docs/reference/aff.md §2.5"), **_CIFAR)
def iaff_cifar_resnext47_32x4d(**kwargs):
    """CIFAR iAFF-ResNeXt-47-32x4d."""
    return _cifar_resnext("iaff", 47, **kwargs)


# ------------------------------------------------------------------------------------------------
# The reference scripts' --model / --askc-type combinations -> registry name + kwargs
# ------------------------------------------------------------------------------------------------
def _named(prefix_by_fusion, fusion):
    canon = canonical_fusion(fusion)
    if canon in prefix_by_fusion:
        return prefix_by_fusion[canon], {}
    return prefix_by_fusion["aff"], {"fusion": canon}


def imagenet_cli_model(model="resnet", askc_type="ASKCFuse", num_layer=50):
    """(registry name, kwargs) for ``train_aff_imagenet.py --model M --askc-type T --num-layer D``.

    ``M``: ``resnet`` (paper-era default), ``resnext``, the OLD names ``resnet50_v1b`` /
    ``resnext50_32x4d_askc`` (depth from the name), or any registered model name (then ``T`` is
    passed as its ``fusion`` unless it is the default)."""
    m = model.strip().lower()
    depth = num_layer
    hit = re.match(r"^(resnet|resnext)(\d+)(?:_v1b|_32x4d)?(?:_askc|_aff|_iaff)?$", m)
    if hit:
        m, depth = hit.group(1), int(hit.group(2))
    if m in ("resnet", "resnext"):
        if depth not in (50, 101, 152):
            raise ValueError("--num-layer must be 50, 101 or 152, got %r" % depth)
        if m == "resnet":
            table = {"aff": "aff_resnet%d" % depth, "iaff": "iaff_resnet%d" % depth, "add": "resnet%d_v1b" % depth}
        else:
            if depth == 152:
                raise ValueError("ResNeXt-152 is not defined here; use --num-layer 50 or 101")
            table = {"aff": "aff_resnext%d_32x4d" % depth, "iaff": "iaff_resnext%d_32x4d" % depth,
                     "add": "resnext%d_32x4d" % depth}
        return _named(table, askc_type)
    if m in list_models():
        return m, {}
    raise ValueError("--model %r: use resnet, resnext, resnext50_32x4d_askc or a registered model name" % model)


def cifar_cli_model(model="resnet", askc_type="ASKCFuse", blocks=None, channel_times=4):
    """(registry name, kwargs) for ``train_aff_cifar.py --model M --askc-type T --blocks B
    --channel-times C``. ``M``: ``resnet`` (pre-activation ResNet-(6B+2)), ``resnext`` (ResNeXt-(9B+2)),
    the OLD ``resnext29_32x4d`` / ``resnext38_32x4d`` / ``resnext47_32x4d`` (blocks from the depth), or
    any registered model name."""
    m = model.strip().lower()
    if m == "resnet":
        name, kw = _named({"aff": "aff_cifar_resnet", "iaff": "iaff_cifar_resnet", "add": "cifar_resnet"}, askc_type)
        kw.update(blocks=5 if blocks is None else blocks, channel_times=channel_times)
        return name, kw
    hit = re.match(r"^(?:se_)?resnext(\d+)_32x4d$", m)
    if hit or m == "resnext":
        if m.startswith("se_"):
            raise ValueError("--model %s: the SE variant is not part of the AFF paper and is not implemented" % model)
        depth = int(hit.group(1)) if hit else 9 * (4 if blocks is None else blocks) + 2
        if (depth - 2) % 9:
            raise ValueError("CIFAR ResNeXt depth must be 9*blocks+2, got %d" % depth)
        if channel_times != 4:
            raise ValueError("--model resnext supports --channel-times 4 (32x4d) only, got %r" % channel_times)
        if depth in (29, 38, 47):
            return _named({"aff": "aff_cifar_resnext%d_32x4d" % depth, "iaff": "iaff_cifar_resnext%d_32x4d" % depth,
                           "add": "cifar_resnext%d_32x4d" % depth}, askc_type)
        name, kw = _named({"aff": "aff_cifar_resnext29_32x4d", "iaff": "iaff_cifar_resnext29_32x4d",
                           "add": "cifar_resnext29_32x4d"}, askc_type)
        kw["blocks"] = (depth - 2) // 9
        return name, kw
    if m in list_models():
        return m, {}
    raise ValueError("--model %r: use resnet, resnext, resnext29_32x4d / resnext38_32x4d / resnext47_32x4d or a "
                     "registered model name" % model)
