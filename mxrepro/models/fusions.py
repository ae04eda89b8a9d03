"""Feature fusions for residual blocks: MS-CAM, AFF, iAFF and the ablations of Attentional Feature
Fusion (Dai et al., WACV 2021), shared by every residual family (``fuse(branch, shortcut)``).

Every fusion is a ``HybridBlock`` called as ``fuse(x, residual)`` where, as in the reference code,
``x`` is the residual-branch output and ``residual`` the shortcut (docs/reference/aff.md §1). Names:

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
GAU               gau, GAUFuse                                 sigmoid(BN(PW(GAP(x)))) y + x
SKSelection       sk, SKFuse, SKNet                            2 x a + 2 y b, (a, b) = softmax pair
HalfAFF           half_aff, HalfASKCFuse, Half-AFF             AFF, w = sig(BN(PW([l', g'])))
ConcatAFF         concat_aff, ConcatASKCFuse, Concat-AFF       AFF, w = sig(BN(PW([relu L, relu G])))
RecursiveAFF      recursive_aff, RASKCFuse, Recursive AFF      w = sig(L w2 + G (1-w2)), w2 = M2(L+G)
DepthAFF          depth_aff, DepthASKCFuse                     AFF with a depthwise local branch
Depth4AFF         depth4_aff, Depth4ASKCFuse                   AFF with four depthwise local branches
================  ===========================================  =====================================

``M(z) = sigmoid(L(z) + G(z))`` is the MS-CAM map: L = PWConv(C->C/r) BN ReLU PWConv(C/r->C) BN at full
resolution, G = the same after global average pooling (docs/reference/aff.md §1.1). Attention convs have biases
(the Gluon default). The paper-era MS-GAU / MS-SENet / MS-SA / ResGlobLocaCha use a single
PWConv(C->C)+BN per branch ("pw" branches, the r=2 parameter budget of Table 4); pass
``bottleneck=True`` to ``get_fusion`` for the C/r bottleneck instead.

The last seven rows are the paper-era code's other fusions: GAU and the SKNet-style selection (the
comparisons of Fig. 7), Half-/Concat-/Recursive AFF (supplement Table 6) and the depthwise-local AFF
variants. In HalfAFF l', g' are the first halves of the MS-CAM branches, PWConv(C->C/r) BN ReLU; in
SKSelection the 2C logits of GAP(x+y) -> C/r bottleneck are read as a (2, C) pair and softmaxed over
the pair; L, G are the MS-CAM branches of x+y. Each class docstring gives its parameter count.

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
           "MSGAU", "MSSENet", "MSSA", "Concatenation", "GAU", "SKSelection", "HalfAFF", "ConcatAFF",
           "RecursiveAFF", "DepthAFF", "Depth4AFF", "get_fusion", "list_fusions", "canonical_fusion",
           "make_fusion", "FUSIONS"]


# ------------------------------------------------------------------------------------------------
# MS-CAM pieces
# ------------------------------------------------------------------------------------------------
class ContextBranch(HybridBlock):
    """One MS-CAM branch (docs/reference/aff.md §1.1): [GAP] -> PWConv(C->C/r, bias) BN ReLU PWConv(C/r->C, bias) BN,
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
    """AFF, reference ``ASKCFuse`` (docs/reference/aff.md §1.2): ``2*x*M(x+y) + 2*y*(1-M(x+y))``.

    The factor 2 is the reference code's (issue #13; the paper's Eq. 4 has none); ``scale=1`` gives
    the paper equation. Default r=4; the bottleneck hosts pass r=16."""


class GlobalGlobal(_SelectFuse):
    """Table 3 "Global + Global" (reference ``ResGlobGlobChaFuse``): AFF with two global branches."""
    branches = ("global", "global")


class LocalLocal(_SelectFuse):
    """Table 3 "Local + Local" (reference ``ResLocaLocaChaFuse``): AFF with two local branches."""
    branches = ("local", "local")


class IAFF(FusedMixin, HybridBlock):
    """iterative AFF, reference ``ResGlobLocaforGlobLocaChaFuse`` (docs/reference/aff.md §1.3, paper Eq. 5).

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


# ------------------------------------------------------------------------------------------------
# Further fusions of the paper-era reference code (open-aff OLD model/fusion.py): GAU and SKNet-style
# selection (the Fig. 7 comparisons), the supplement's Table 6 local/global variants (Half-AFF,
# Concat-AFF, Recursive AFF) and the depthwise-local AFF variants. c' = C // r below.
# ------------------------------------------------------------------------------------------------
def _pw(channels, in_channels, groups=1):
    """1x1 convolution with bias (the Gluon default of every attention conv in the reference)."""
    return nn.Conv2D(channels, 1, groups=groups, in_channels=in_channels)


def _inter(channels, r):
    inter = int(channels // r)
    if inter < 1:
        raise ValueError("channels // r must be >= 1 (channels=%d, r=%r)" % (channels, r))
    return inter


class GAU(HybridBlock):
    """GAU (Global Attention Upsample, Li et al. 2018; reference ``GAUFuse``), a Fig. 7 comparison:
    ``w = sigmoid(BN(PWConv_{C->C}(GAP(x))))``, ``out = w * y + x`` (the weights come from the branch
    x alone and modulate the shortcut y). Parameters: C^2 + 3C (``r`` is not used)."""

    def __init__(self, channels, r=None, **kwargs):
        super().__init__(**kwargs)
        with self.name_scope():
            self.att = ContextBranch(channels, global_pool=True, bottleneck=False, prefix="att_")

    def hybrid_forward(self, F, x, residual):
        w = F.Activation(self.att(x), act_type="sigmoid")
        return _mul(F, residual, w) + x


class SKSelection(HybridBlock):
    """SKNet-style soft selection (Li et al., CVPR 2019; reference ``SKFuse``), a Fig. 7 comparison.

    ``GAP(x + y) -> PWConv(C->c') BN ReLU PWConv(c'->2C) BN`` gives 2C logits per image, read as
    (2, C): row 0 for x, row 1 for y. A softmax over the two rows gives ``a`` and ``b = 1 - a`` per
    channel; ``out = 2*x*a + 2*y*b`` (the factor 2 as in AFF; ``scale=1`` drops it).
    Parameters: 3 C c' + 3 c' + 6C. The reference fixes c' = C // 4; here c' = C // r (r = 4 in the
    CIFAR hosts gives the reference)."""

    def __init__(self, channels, r=4, scale=2.0, **kwargs):
        super().__init__(**kwargs)
        self.scale = float(scale)
        inter = _inter(channels, r)
        with self.name_scope():
            self.att = nn.HybridSequential(prefix="att_")
            with self.att.name_scope():
                self.att.add(_pw(inter, channels), nn.BatchNorm(in_channels=inter), nn.Activation("relu"),
                             _pw(2 * channels, inter), nn.BatchNorm(in_channels=2 * channels))

    def hybrid_forward(self, F, x, residual):
        logits = self.att(F.mean(x + residual, axis=(2, 3), keepdims=True))    # (B, 2C, 1, 1)
        a = F.softmax(F.reshape(logits, (0, 2, -1, 1, 1)), axis=1)              # (B, 2, C, 1, 1)
        a_x, a_y = F.split(a, num_outputs=2, axis=1, squeeze_axis=True)         # (B, C, 1, 1) each
        out = _mul(F, x, a_x) + _mul(F, residual, a_y)
        return out * self.scale if self.scale != 1.0 else out


def _branch(channels, inter, full, prefix):
    """A Half-/Concat-AFF branch: PWConv(C->c') BN ReLU [-> PWConv(c'->C) BN ReLU if full]; the global
    one runs on the pooled map (a ``mean``, which trains faster than ``Pooling``, docs/aff.md §7)."""
    seq = nn.HybridSequential(prefix=prefix)
    with seq.name_scope():
        seq.add(_pw(inter, channels), nn.BatchNorm(in_channels=inter), nn.Activation("relu"))
        if full:
            seq.add(_pw(channels, inter), nn.BatchNorm(in_channels=channels), nn.Activation("relu"))
    return seq


class _ConcatContextFuse(HybridBlock):
    """Supplement Table 6 variants that *concatenate* the local and the (broadcast) global context
    instead of adding them: ``w = sigmoid(BN(PWConv(concat(l, g))))``, ``out = 2*x*w + 2*y*(1-w)``.

    The PWConv over the concatenation is computed as the sum of one PWConv over each half,
    ``W [l; g] + b = W_l l + W_g g + b`` (``post_local`` with the bias, ``post_global`` without): the
    same function with the same parameters (``W = [W_l, W_g]``), and ``W_g g`` runs on the 1x1 pooled
    map. It also avoids a crash of MXNet 1.9.1's oneDNN backward (SIGFPE) on a concat of two
    4- or 8-channel maps feeding a 1x1 convolution, which the CIFAR widths hit (C=16, r=4)."""
    full = False

    def __init__(self, channels, r=4, scale=2.0, **kwargs):
        super().__init__(**kwargs)
        self.scale = float(scale)
        inter = _inter(channels, r)
        width = channels if self.full else inter
        with self.name_scope():
            self.local_att = _branch(channels, inter, self.full, "local_")
            self.global_att = _branch(channels, inter, self.full, "global_")
            self.post_local = nn.Conv2D(channels, 1, in_channels=width, prefix="post_local_")
            self.post_global = nn.Conv2D(channels, 1, in_channels=width, use_bias=False, prefix="post_global_")
            self.post_bn = nn.BatchNorm(in_channels=channels, prefix="post_bn_")

    def hybrid_forward(self, F, x, residual):
        xa = x + residual
        # concat(l, broadcast g) -> PWConv, as W_l l + W_g g (the reference writes g as (l + g) - l)
        g = self.global_att(F.mean(xa, axis=(2, 3), keepdims=True))
        s = F.broadcast_add(self.post_local(self.local_att(xa)), self.post_global(g))
        w = F.Activation(self.post_bn(s), act_type="sigmoid")
        out = _select(F, x, residual, w)
        return out * self.scale if self.scale != 1.0 else out


class HalfAFF(_ConcatContextFuse):
    """Half-AFF (supplement Table 6; reference ``HalfASKCFuse``): each branch is only the first half
    of an MS-CAM branch, ``l = ReLU(BN(PWConv_{C->c'}(z)))`` and ``g`` the same after GAP;
    ``w = sigmoid(BN(PWConv_{2c'->C}(concat(l, g))))`` on z = x + y; ``out = 2*x*w + 2*y*(1-w)``.
    Parameters: 4 C c' + 6 c' + 3C."""
    full = False


class ConcatAFF(_ConcatContextFuse):
    """Concat-AFF (supplement Table 6; reference ``ConcatASKCFuse``): full MS-CAM branches, each
    ending in ReLU (PWConv(C->c') BN ReLU PWConv(c'->C) BN ReLU, the global one after GAP), then
    ``w = sigmoid(BN(PWConv_{2C->C}(concat(l, g))))``; ``out = 2*x*w + 2*y*(1-w)``.
    Parameters: 2 C^2 + 4 C c' + 6 c' + 9C."""
    full = True


class RecursiveAFF(HybridBlock):
    """Recursive AFF (supplement Table 6; reference ``RASKCFuse``): a second MS-CAM decides how to
    mix the first one's local and global contexts.

    ``z = x + y``; ``l = L1(z)``, ``g = G1(z)`` (MS-CAM branches, no sigmoid); ``w2 = M2(l + g)``
    (a second MS-CAM); ``w = sigmoid(l*w2 + g*(1-w2))``; ``out = x*w + y*(1-w)`` (no factor 2).
    Parameters: 8 C c' + 12 c' + 12C (as iAFF). The reference fixes c' = C // 4; here c' = C // r."""

    def __init__(self, channels, r=4, **kwargs):
        super().__init__(**kwargs)
        with self.name_scope():
            self.local1 = ContextBranch(channels, r, global_pool=False, prefix="local1_")
            self.global1 = ContextBranch(channels, r, global_pool=True, prefix="global1_")
            self.att2 = MSCAMWeights(channels, r, prefix="att2_")

    def hybrid_forward(self, F, x, residual):
        xa = x + residual
        xl, xg = self.local1(xa), self.global1(xa)
        w2 = self.att2(F.broadcast_add(xl, xg))
        w = F.Activation(F.broadcast_add(xg, F.broadcast_sub(xl, xg) * w2), act_type="sigmoid")
        return _select(F, x, residual, w)


class DepthAFF(HybridBlock):
    """AFF whose local branch is made of depthwise 1x1 convolutions (reference ``DepthASKCFuse``;
    ``Depth4ASKCFuse`` sums four such branches, :class:`Depth4AFF`).

    Local branch: DWConv1x1 BN ReLU DWConv1x1 BN (groups = C: a per-channel scale + bias, so no
    cross-channel mixing at full resolution); global branch: the MS-CAM one (GAP PWConv(C->c') BN
    ReLU PWConv(c'->C) BN). ``w = sigmoid(sum of the local branches + global)``,
    ``out = 2*x*w + 2*y*(1-w)``. Parameters: 8C per local branch + 2 C c' + 3 c' + 3C."""
    n_local = 1

    def __init__(self, channels, r=4, scale=2.0, **kwargs):
        super().__init__(**kwargs)
        self.scale = float(scale)
        with self.name_scope():
            self.local_att = nn.HybridSequential(prefix="")
            for i in range(self.n_local):
                seq = nn.HybridSequential(prefix="local%d_" % i)
                with seq.name_scope():
                    seq.add(_pw(channels, channels, groups=channels), nn.BatchNorm(in_channels=channels),
                            nn.Activation("relu"), _pw(channels, channels, groups=channels),
                            nn.BatchNorm(in_channels=channels))
                self.local_att.add(seq)
            self.global_att = ContextBranch(channels, r, global_pool=True, prefix="global_")

    def hybrid_forward(self, F, x, residual):
        xa = x + residual
        s = self.global_att(xa)
        for branch in self.local_att:
            s = F.broadcast_add(branch(xa), s)
        out = _select(F, x, residual, F.Activation(s, act_type="sigmoid"))
        return out * self.scale if self.scale != 1.0 else out


class Depth4AFF(DepthAFF):
    """:class:`DepthAFF` with four depthwise local branches (reference ``Depth4ASKCFuse``).
    Parameters: 35C + 2 C c' + 3 c'."""
    n_local = 4


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
    "gau": (GAU, ("GAUFuse",)),
    "sk": (SKSelection, ("SKFuse", "SKNet")),
    "half_aff": (HalfAFF, ("HalfASKCFuse", "Half-AFF")),
    "concat_aff": (ConcatAFF, ("ConcatASKCFuse", "Concat-AFF")),
    "recursive_aff": (RecursiveAFF, ("RASKCFuse", "Recursive AFF", "Recursive-AFF")),
    "depth_aff": (DepthAFF, ("DepthASKCFuse", "Depth-AFF")),
    "depth4_aff": (Depth4AFF, ("Depth4ASKCFuse", "Depth4-AFF")),
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
