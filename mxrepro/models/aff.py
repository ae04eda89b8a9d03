"""Attentional Feature Fusion (Dai et al., WACV 2021): MS-CAM, AFF, iAFF, the paper's ablation fusions
and the AFF/iAFF ResNet/ResNeXt networks (spec: /work/shared/reference/aff.md §1-2).

Every fusion is a ``HybridBlock`` called as ``fuse(x, residual)`` where, as in the reference code,
``x`` is the residual-branch output and ``residual`` the shortcut (aff.md §1). Names:

================  ===========================================  =====================================
readable class    get_fusion names (case/punctuation-blind)    maths (x = branch, y = shortcut)
================  ===========================================  =====================================
DirectAdd         add, DirectAdd                               x + y
AFF               aff, ASKCFuse                                2 x M(x+y) + 2 y (1 - M(x+y))
IAFF              iaff, ResGlobLocaforGlobLocaCha              xi = x M1(x+y) + y (1-M1); x M2(xi) + y (1-M2)
AFF (pw branches) aff_pw, ResGlobLocaCha                       AFF with one PWConv+BN per branch
GlobalGlobal      global_global, Global+Global, ResGlobGlobCha AFF with two global branches
LocalLocal        local_local, Local+Local, ResLocaLocaCha     AFF with two local branches
MSGAU             ms_gau, MS-GAU, AYforXplusY                  M(x) y + x            (modulation)
MSSENet           ms_senet, MS-SENet, XplusAYforY              y + M(x) x            (refinement)
MSSA              ms_sa, MS-SA, AXYforXplusY                   M(x+y) y + x          (modulation)
Concatenation     concat, Concatenation, Concat                PWConv(BN([x, y]))
================  ===========================================  =====================================

``M(z) = sigmoid(L(z) + G(z))`` is the MS-CAM map: L = PWConv(C->C/r) BN ReLU PWConv(C/r->C) BN at full
resolution, G = the same after global average pooling (aff.md §1.1). Attention convs have biases
(the Gluon default). The paper-era MS-GAU / MS-SENet / MS-SA / ResGlobLocaCha use a single
PWConv(C->C)+BN per branch ("pw" branches, the r=2 parameter budget of Table 4); pass
``bottleneck=True`` to ``get_fusion`` for the C/r bottleneck instead.
"""
import re

from mxnet.gluon import nn
from mxnet.gluon.block import HybridBlock

from .registry import register_model
from .resnet import CIFARPreActResNet, CIFARResNeXt, cifar_resnext, imagenet_resnet, imagenet_resnext

__all__ = ["ContextBranch", "MSCAMWeights", "MSCAM", "DirectAdd", "AFF", "IAFF", "GlobalGlobal", "LocalLocal",
           "MSGAU", "MSSENet", "MSSA", "Concatenation", "get_fusion", "list_fusions", "FUSIONS"]


# ------------------------------------------------------------------------------------------------
# MS-CAM pieces
# ------------------------------------------------------------------------------------------------
class ContextBranch(HybridBlock):
    """One MS-CAM branch (aff.md §1.1): [GAP] -> PWConv(C->C/r, bias) BN ReLU PWConv(C/r->C, bias) BN,
    or [GAP] -> PWConv(C->C, bias) BN when ``bottleneck=False`` (the paper-era "pw" branch, §1.5)."""

    def __init__(self, channels, r=4, global_pool=False, bottleneck=True, **kwargs):
        super().__init__(**kwargs)
        self.global_pool = global_pool
        inter = int(channels // r)
        if bottleneck and inter < 1:
            raise ValueError("channels // r must be >= 1 (channels=%d, r=%r)" % (channels, r))
        with self.name_scope():
            self.body = nn.HybridSequential(prefix="")
            if bottleneck:
                self.body.add(nn.Conv2D(inter, 1, in_channels=channels), nn.BatchNorm(in_channels=inter),
                              nn.Activation("relu"), nn.Conv2D(channels, 1, in_channels=inter),
                              nn.BatchNorm(in_channels=channels))
            else:
                self.body.add(nn.Conv2D(channels, 1, in_channels=channels), nn.BatchNorm(in_channels=channels))

    def hybrid_forward(self, F, z):
        if self.global_pool:
            z = F.mean(z, axis=(2, 3), keepdims=True)
        return self.body(z)


class MSCAMWeights(HybridBlock):
    """The attention map ``sigmoid(sum of branches)`` broadcast over H x W (paper Eq. 1-3).

    ``branches`` lists ``'local'``/``'global'`` kinds: ('local', 'global') is MS-CAM; ('global',
    'global') and ('local', 'local') are the Table 3 ablations."""

    def __init__(self, channels, r=4, branches=("local", "global"), bottleneck=True, **kwargs):
        super().__init__(**kwargs)
        self.kinds = tuple(branches)
        self.all_global = all(k == "global" for k in self.kinds)
        with self.name_scope():
            self.branches = nn.HybridSequential(prefix="")
            for i, k in enumerate(self.kinds):
                if k not in ("local", "global"):
                    raise ValueError("branch kind must be 'local' or 'global', got %r" % k)
                self.branches.add(ContextBranch(channels, r, global_pool=(k == "global"), bottleneck=bottleneck,
                                                prefix="%s%d_" % (k, i)))

    def hybrid_forward(self, F, z):
        out = None
        for b in self.branches:
            y = b(z)
            out = y if out is None else F.broadcast_add(out, y)
        return F.Activation(out, act_type="sigmoid")


def _mul(F, a, w):
    return F.broadcast_mul(a, w)


def _select(F, x, residual, w):
    """``x*w + residual*(1-w)`` computed as ``residual + w*(x - residual)``: the same value with two
    fewer full-resolution passes (these element-wise ops are memory-bound on a CPU)."""
    return residual + _mul(F, x - residual, w)


class MSCAM(HybridBlock):
    """Standalone MS-CAM, ``out = z * M(z)`` (paper Eq. 3; the PyTorch port's ``MS_CAM``)."""

    def __init__(self, channels, r=4, **kwargs):
        super().__init__(**kwargs)
        with self.name_scope():
            self.att = MSCAMWeights(channels, r)

    def hybrid_forward(self, F, z):
        return z * self.att(z)


# ------------------------------------------------------------------------------------------------
# Fusions: fuse(x = residual branch, residual = shortcut)
# ------------------------------------------------------------------------------------------------
class DirectAdd(HybridBlock):
    """``x + residual`` (reference ``DirectAddFuse``, paper "Add")."""

    def __init__(self, channels=None, r=None, **kwargs):
        super().__init__(**kwargs)

    def hybrid_forward(self, F, x, residual):
        return x + residual


class _SelectFuse(HybridBlock):
    """``scale * (x*w + residual*(1-w))`` with ``w = M(x + residual)`` (soft selection)."""
    branches = ("local", "global")
    scale = 2.0

    def __init__(self, channels, r=4, bottleneck=True, scale=None, **kwargs):
        super().__init__(**kwargs)
        if scale is not None:
            self.scale = float(scale)
        with self.name_scope():
            self.att = MSCAMWeights(channels, r, self.branches, bottleneck=bottleneck, prefix="att_")

    def hybrid_forward(self, F, x, residual):
        out = _select(F, x, residual, self.att(x + residual))
        return out * self.scale if self.scale != 1.0 else out


class AFF(_SelectFuse):
    """AFF, reference ``ASKCFuse`` (aff.md §1.2): ``2*x*M(x+y) + 2*y*(1-M(x+y))``.

    The factor 2 is the reference code's (issue #13; the paper's Eq. 4 has none); ``scale=1`` gives
    the paper equation. Default r=4; the bottleneck hosts pass r=16."""


class GlobalGlobal(_SelectFuse):
    """Table 3 "Global + Global" (reference ``ResGlobGlobChaFuse``): AFF with two global branches."""
    branches = ("global", "global")


class LocalLocal(_SelectFuse):
    """Table 3 "Local + Local" (reference ``ResLocaLocaChaFuse``): AFF with two local branches."""
    branches = ("local", "local")


class IAFF(HybridBlock):
    """iterative AFF, reference ``ResGlobLocaforGlobLocaChaFuse`` (aff.md §1.3, paper Eq. 5).

    ``xi = x*M1(x+y) + y*(1-M1)``; ``out = x*M2(xi) + y*(1-M2(xi))``; two independent MS-CAMs, no factor 2."""

    def __init__(self, channels, r=4, bottleneck=True, **kwargs):
        super().__init__(**kwargs)
        with self.name_scope():
            self.att1 = MSCAMWeights(channels, r, bottleneck=bottleneck, prefix="att1_")
            self.att2 = MSCAMWeights(channels, r, bottleneck=bottleneck, prefix="att2_")

    def hybrid_forward(self, F, x, residual):
        d = x - residual
        xi = residual + _mul(F, d, self.att1(x + residual))
        return residual + _mul(F, d, self.att2(xi))


class _Modulate(HybridBlock):
    """Partial-context fusions of Table 4 with ``w = M(context)``."""

    def __init__(self, channels, r=4, bottleneck=False, **kwargs):
        super().__init__(**kwargs)
        with self.name_scope():
            self.att = MSCAMWeights(channels, r, bottleneck=bottleneck, prefix="att_")


class MSGAU(_Modulate):
    """Table 4 MS-GAU (reference ``AYforXplusYAddFuse``): ``M(x)*y + x`` (modulation G(Y)X + Y)."""

    def hybrid_forward(self, F, x, residual):
        return _mul(F, residual, self.att(x)) + x


class MSSENet(_Modulate):
    """Table 4 MS-SENet (reference ``XplusAYforYAddFuse``): ``y + M(x)*x`` (refinement X + G(Y)Y)."""

    def hybrid_forward(self, F, x, residual):
        return residual + _mul(F, x, self.att(x))


class MSSA(_Modulate):
    """Table 4 MS-SA (reference ``AXYforXplusYAddFuse``): ``M(x+y)*y + x`` (modulation G(X,Y)X + Y)."""

    def hybrid_forward(self, F, x, residual):
        return _mul(F, residual, self.att(x + residual)) + x


class Concatenation(HybridBlock):
    """Table 4 "Concatenation" (reference ``ConcatFuse``): ``PWConv(2C->C, bias)(BN(concat(x, y)))``."""

    def __init__(self, channels, r=None, **kwargs):
        super().__init__(**kwargs)
        with self.name_scope():
            self.bn = nn.BatchNorm(in_channels=2 * channels)
            self.conv = nn.Conv2D(channels, 1, in_channels=2 * channels)

    def hybrid_forward(self, F, x, residual):
        return self.conv(self.bn(F.concat(x, residual, dim=1)))


def _aff_pw(channels, r=4, **kw):
    kw.setdefault("bottleneck", False)
    return AFF(channels, r, **kw)


def _modulate(cls):
    def build(channels, r=4, **kw):
        kw.setdefault("bottleneck", False)
        return cls(channels, r, **kw)
    build.__doc__ = cls.__doc__
    return build


# canonical name -> (builder(channels, r, **kw), aliases). Aliases include the reference's
# --askc-type strings; lookup ignores case and punctuation ("MS-GAU" == "ms_gau" == "msgau").
FUSIONS = {
    "add": (DirectAdd, ("DirectAdd", "direct_add", "sum", "none")),
    "aff": (AFF, ("ASKCFuse", "askc")),
    "iaff": (IAFF, ("ResGlobLocaforGlobLocaCha", "ResGlobLocaforGlobLocaChaFuse")),
    "aff_pw": (_aff_pw, ("ResGlobLocaCha",)),
    "global_global": (GlobalGlobal, ("Global+Global", "ResGlobGlobCha")),
    "local_local": (LocalLocal, ("Local+Local", "ResLocaLocaCha", "ResLocalLocaCha")),
    "ms_gau": (_modulate(MSGAU), ("MS-GAU", "AYforXplusY")),
    "ms_senet": (_modulate(MSSENet), ("MS-SENet", "MS-SE", "XplusAYforY")),
    "ms_sa": (_modulate(MSSA), ("MS-SA", "AXYforXplusY")),
    "concat": (Concatenation, ("Concatenation", "Concat")),
}


def _key(name):
    return re.sub(r"[^a-z0-9]", "", str(name).lower())


_LOOKUP = {}
for _canon, (_fn, _aliases) in FUSIONS.items():
    for _a in (_canon,) + tuple(_aliases):
        _LOOKUP[_key(_a)] = _canon


def canonical_fusion(name):
    """Canonical fusion name for any accepted spelling (``'ASKCFuse'`` -> ``'aff'``)."""
    k = _key(name)
    if k not in _LOOKUP:
        raise ValueError("unknown fusion / --askc-type %r; choose one of: %s" % (
            name, ", ".join("%s (%s)" % (c, "/".join(a)) for c, (_, a) in FUSIONS.items())))
    return _LOOKUP[k]


def list_fusions():
    """Canonical fusion names."""
    return list(FUSIONS)


def get_fusion(name, channels, r=4, **kwargs):
    """Build fusion ``name`` for ``channels`` with reduction ``r``; usable by any family
    (``fuse(branch, shortcut)``). Extra kwargs reach the class (e.g. ``bottleneck=True``, ``scale=1``)."""
    return FUSIONS[canonical_fusion(name)][0](channels, r, **kwargs)


# ------------------------------------------------------------------------------------------------
# Networks (aff.md §2). ImageNet: fusion in stages >= 3, r=16, paper-era v1b layout. CIFAR: all stages;
# r=4 in the pre-activation ResNet, r=16 in the ResNeXt.
# ------------------------------------------------------------------------------------------------
def _imagenet(kind, depth, default_fusion, **kwargs):
    kwargs.setdefault("fusion", default_fusion)
    kwargs.setdefault("fusion_r", 16)
    kwargs.setdefault("start_layer", 3)
    if kind == "resnet":
        return imagenet_resnet(depth, **kwargs)
    return imagenet_resnext(depth, **kwargs)


def _cifar_resnet(default_fusion, blocks=5, channel_times=4, pretrained=False, **kwargs):
    if pretrained:
        raise ValueError("no pretrained weights ship with this project")
    kwargs.setdefault("fusion", default_fusion)
    kwargs.setdefault("fusion_r", 4)
    kwargs.setdefault("start_layer", 1)
    return CIFARPreActResNet(blocks=blocks, channel_times=channel_times, **kwargs)


def _cifar_resnext(default_fusion, depth, **kwargs):
    kwargs.setdefault("fusion", default_fusion)
    kwargs.setdefault("fusion_r", 16)
    kwargs.setdefault("start_layer", 1)
    return cifar_resnext(depth, **kwargs)


_SRC = "aff.md §2.6-2.7, §6 Table 5"
_IMNET = dict(family="aff", input_size=224, num_classes=1000)
_CIFAR = dict(family="aff", input_size=32, num_classes=100)

# params_m: trainable parameters of the architecture as coded (aff.md §2.6, checked by the tests);
# paper_params_m: what the paper/README prints (ResNeXt rows count BN statistics too);
# gmacs: multiply-adds at 224 (conv + fc, aff.md §2.7; the paper's "GFLOPs" are these).


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
                                "the 20 coarse classes", source="aff.md §2.6, §4, §6"), **_CIFAR)
def aff_cifar_resnet(blocks=5, channel_times=4, **kwargs):
    """CIFAR AFF-ResNet-(6*blocks+2), default AFF-ResNet-32 (blocks 5, channel-times 4, r=4)."""
    return _cifar_resnet("aff", blocks, channel_times, **kwargs)


@register_model(paper=dict(params_m=8.344, source="aff.md §2.6"), **_CIFAR)
def iaff_cifar_resnet(blocks=5, channel_times=4, **kwargs):
    """CIFAR iAFF-ResNet-(6*blocks+2), default iAFF-ResNet-32."""
    return _cifar_resnet("iaff", blocks, channel_times, **kwargs)


@register_model(paper=dict(params_m=5.934, params_with_bn_stats_m=5.983, source="aff.md §2.6"), **_CIFAR)
def aff_cifar_resnext29_32x4d(**kwargs):
    """CIFAR AFF-ResNeXt-29-32x4d (r=16)."""
    return _cifar_resnext("aff", 29, **kwargs)


@register_model(paper=dict(params_m=7.770, params_with_bn_stats_m=7.833, paper_params_m=7.8, acc_coarse20=90.3,
                           source="aff.md §2.6, §6"), **_CIFAR)
def aff_cifar_resnext38_32x4d(**kwargs):
    """CIFAR AFF-ResNeXt-38-32x4d (r=16). Paper (20 coarse classes): 90.3%, 7.8M."""
    return _cifar_resnext("aff", 38, **kwargs)


@register_model(paper=dict(params_m=9.606, params_with_bn_stats_m=9.683, paper_params_m=9.7,
                           acc_fine100_reference=85.38, source="aff.md §2.6, §4"), **_CIFAR)
def aff_cifar_resnext47_32x4d(**kwargs):
    """CIFAR AFF-ResNeXt-47-32x4d (r=16)."""
    return _cifar_resnext("aff", 47, **kwargs)


@register_model(paper=dict(source="aff.md §2.5"), **_CIFAR)
def iaff_cifar_resnext29_32x4d(**kwargs):
    """CIFAR iAFF-ResNeXt-29-32x4d."""
    return _cifar_resnext("iaff", 29, **kwargs)


@register_model(paper=dict(params_m=9.192, source="aff.md §2.6"), **_CIFAR)
def iaff_cifar_resnext38_32x4d(**kwargs):
    """CIFAR iAFF-ResNeXt-38-32x4d."""
    return _cifar_resnext("iaff", 38, **kwargs)


@register_model(paper=dict(source="aff.md §2.5"), **_CIFAR)
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
    from .registry import list_models
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
    from .registry import list_models
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
