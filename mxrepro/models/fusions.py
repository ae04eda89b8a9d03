"""Feature fusions for residual blocks: MS-CAM, AFF, iAFF and the ablations of Attentional Feature
Fusion (Dai et al., WACV 2021), shared by every residual family (``fuse(branch, shortcut)``).

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

:func:`make_fusion` is the one resolver the model families call: ``None`` or any spelling of the
plain sum gives ``None`` (the block adds inline), a name gives :func:`get_fusion`, a callable
``fusion(channels)`` is called.
"""
import re

from mxnet.gluon import nn
from mxnet.gluon.block import HybridBlock

from . import fused
from .fused import FusedMixin

__all__ = ["ContextBranch", "MSCAMWeights", "MSCAM", "DirectAdd", "AFF", "IAFF", "GlobalGlobal", "LocalLocal",
           "MSGAU", "MSSENet", "MSSA", "Concatenation", "get_fusion", "list_fusions", "canonical_fusion",
           "make_fusion", "FUSIONS"]


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
        self.all_local = all(k == "local" for k in self.kinds)
        with self.name_scope():
            self.branches = nn.HybridSequential(prefix="")
            for i, k in enumerate(self.kinds):
                if k not in ("local", "global"):
                    raise ValueError("branch kind must be 'local' or 'global', got %r" % k)
                self.branches.add(ContextBranch(channels, r, global_pool=(k == "global"), bottleneck=bottleneck,
                                                prefix="%s%d_" % (k, i)))

    def logits(self, F, z, pooled=None):
        """The branch outputs (before their sum and the sigmoid). ``pooled``, when given, is the
        spatial mean of ``z`` already computed (the fused ``AddMean``/``AFFGate`` outputs): the
        global branches then skip their own pooling."""
        return [b.body(pooled) if pooled is not None and b.global_pool else b(z) for b in self.branches]

    def hybrid_forward(self, F, z):
        out = None
        for y in self.logits(F, z):
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


class _SelectFuse(FusedMixin, HybridBlock):
    """``scale * (x*w + residual*(1-w))`` with ``w = M(x + residual)`` (soft selection)."""
    branches = ("local", "global")
    scale = 2.0

    def __init__(self, channels, r=4, bottleneck=True, scale=None, **kwargs):
        super().__init__(**kwargs)
        if scale is not None:
            self.scale = float(scale)
        with self.name_scope():
            self.att = MSCAMWeights(channels, r, self.branches, bottleneck=bottleneck, prefix="att_")
        self._init_fused()
        self._fused = self._fused and len(self.att.kinds) == 2

    def hybrid_forward(self, F, x, residual):
        if self._fused:
            return fused.select(F, self.att, x, residual, self.scale)
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


class IAFF(FusedMixin, HybridBlock):
    """iterative AFF, reference ``ResGlobLocaforGlobLocaChaFuse`` (aff.md §1.3, paper Eq. 5).

    ``xi = x*M1(x+y) + y*(1-M1)``; ``out = x*M2(xi) + y*(1-M2(xi))``; two independent MS-CAMs, no factor 2."""

    def __init__(self, channels, r=4, bottleneck=True, **kwargs):
        super().__init__(**kwargs)
        with self.name_scope():
            self.att1 = MSCAMWeights(channels, r, bottleneck=bottleneck, prefix="att1_")
            self.att2 = MSCAMWeights(channels, r, bottleneck=bottleneck, prefix="att2_")
        self._init_fused()

    def hybrid_forward(self, F, x, residual):
        if self._fused:
            return fused.iterative_select(F, self.att1, self.att2, x, residual)
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


def make_fusion(fusion, channels, r=4):
    """The block replacing a residual add, called as ``fuse(branch, shortcut)``, or ``None`` for the
    plain sum (``None``, ``''`` or any alias of ``'add'``). ``fusion`` is a name understood by
    :func:`get_fusion` or a callable ``fusion(channels) -> HybridBlock``."""
    if fusion is None:
        return None
    if isinstance(fusion, str):
        if not fusion.strip() or canonical_fusion(fusion) == "add":
            return None
        return get_fusion(fusion, channels, r)
    if callable(fusion):
        return fusion(channels)
    raise TypeError("fusion must be None, a fusion name or a callable fusion(channels) -> HybridBlock, got %r"
                    % (fusion,))
