"""Classifier heads for any Gluon backbone, and backbone x fusion x head combinations.

``FBHead`` is the FBN classifier (docs/reference/fbn.md §4, "common FBN head pattern") as a Gluon block around the FB
operator (:class:`mxrepro.ops.FactorizedBilinear`)::

    feature map -> BN -> tanh -> { FB (1x1, N=classes, F factors, DropFactor p) + 1x1 conv (N, bias) }
                -> sum -> global average pool -> flatten               (logits; the loss adds softmax)

The FB term is applied at every position before pooling, as in the original symbols.

``attach_head(net, 'fbn')`` replaces the classifier of a registered Gluon backbone (bL-Net, the AFF
ImageNet/CIFAR ResNets and ResNeXts, their plain baselines, or any gluon-cv style block with a
``features`` feature-map extractor and an ``output`` Dense) by a head. The registry's
``get_model(name, head=..., fusion=..., **kw)`` does build + attach in one call (this module plugs
``attach_head`` into it), passing ``fusion=`` to the families that take it::

    from mxrepro.models import get_model
    net = get_model('bl_resnet50', fusion='aff', head='fbn')   # bL-ResNet-50, AFF in every block, FB head

The old classifier is detached (not in ``collect_params()``), so every parameter of the result is used.
"""
import mxnet as mx
from mxnet.gluon import nn
from mxnet.gluon.block import HybridBlock

from .registry import register_head_attacher

__all__ = ["FBHead", "LinearHead", "WithHead", "attach_head", "HEADS", "feature_extractor", "dense_io"]


class FBHead(HybridBlock):
    """FBN head (docs/reference/fbn.md §4): ``[BN ->] tanh -> FB(classes, F, p) + Conv1x1(classes) -> GAP -> flatten``.

    ``variant`` 3 (FMConvolution3, batched; memory grows with classes x factors x positions) or 1
    (FMConvolution1, per-class loop, the original's ImageNet choice, docs/reference/fbn.md §1.3); None picks 3 for
    <= 100 classes and 1 above. ``bn=False`` drops the BN when the backbone already ends in one."""

    def __init__(self, in_channels, classes, num_factor=20, p=0.5, bn=True, variant=None,
                 dropfactor_mode="inverted", grad_mode="exact", **kwargs):
        super().__init__(**kwargs)
        from mxrepro.ops import FactorizedBilinear
        if variant is None:
            variant = 3 if classes <= 100 else 1
        with self.name_scope():
            self.bn = nn.BatchNorm(in_channels=in_channels) if bn else None
            self.fb = FactorizedBilinear(classes, num_factor=num_factor, in_channels=in_channels, p=p,
                                         variant=variant, dropfactor_mode=dropfactor_mode, grad_mode=grad_mode,
                                         prefix="fb_")
            self.linear = nn.Conv2D(classes, 1, in_channels=in_channels, prefix="linear_")

    def hybrid_forward(self, F, x):
        if self.bn is not None:
            x = self.bn(x)
        x = F.Activation(x, act_type="tanh")
        y = self.fb(x) + self.linear(x)
        return F.flatten(F.Pooling(y, kernel=(1, 1), global_pool=True, pool_type="avg"))


class LinearHead(HybridBlock):
    """Plain classifier: global average pool -> flatten -> Dense (the backbones' own head)."""

    def __init__(self, in_channels, classes, **kwargs):
        super().__init__(**kwargs)
        with self.name_scope():
            self.fc = nn.Dense(classes, in_units=in_channels)

    def hybrid_forward(self, F, x):
        return self.fc(F.flatten(F.Pooling(x, kernel=(1, 1), global_pool=True, pool_type="avg")))


HEADS = {"fbn": FBHead, "fb": FBHead, "linear": LinearHead, "fc": LinearHead}


# ------------------------------------------------------------------------------------------------
# Backbone feature maps: (feature function, channels, classes, names of the classifier children)
# ------------------------------------------------------------------------------------------------
def dense_io(dense):
    """(in_units, units) of a Dense layer."""
    return int(dense._in_units), int(dense._units)


def feature_extractor(net):
    """``(fn(F, x) -> last feature map, channels, classes, classifier child names)`` for a backbone.

    Backbones of this project say it themselves (``feature_spec()``: BLResNet, ResNetV1b,
    CIFARResNeXt, CIFARPreActResNet, whose BN-ReLU-pool ``head`` goes so the FB head's BN takes the
    final BN's place); otherwise any block with ``features`` returning a 4-D map and an ``output``
    Dense (gluon-cv style)."""
    if hasattr(net, "feature_spec"):
        return net.feature_spec()
    if hasattr(net, "features") and isinstance(getattr(net, "output", None), nn.Dense):
        ch, cl = dense_io(net.output)
        if ch <= 0:
            raise ValueError("%s.output has no in_units; build the backbone with known widths" % type(net).__name__)
        return (lambda F, x: net.features(x)), ch, cl, ("output",)
    raise TypeError("no feature extractor for %s: expected a bL-Net / AFF / ResNet host of mxrepro.models or a "
                    "block with `features` (feature map) and `output` (Dense)" % type(net).__name__)


class WithHead(HybridBlock):
    """``head(features(x))``: a backbone whose classifier children are detached, plus a new head."""

    def __init__(self, backbone, head, feature_fn, **kwargs):
        super().__init__(**kwargs)
        self._feature_fn = feature_fn
        with self.name_scope():
            self.backbone = backbone
            self.head = head

    def hybrid_forward(self, F, x):
        return self.head(self._feature_fn(F, x))


def attach_head(net, head="fbn", classes=None, **head_kwargs):
    """Replace the classifier of Gluon backbone ``net`` by ``head`` (a name in ``HEADS`` or a callable
    ``head(in_channels, classes) -> HybridBlock``). ``classes`` defaults to the backbone's. Returns a
    :class:`WithHead`; the backbone's old classifier blocks are removed from its children."""
    fn, ch, cl, drop = feature_extractor(net)
    classes = cl if classes is None else int(classes)
    if isinstance(head, str):
        key = head.strip().lower()
        if key not in HEADS:
            raise ValueError("unknown head %r; choose one of %s or pass a callable" % (head, ", ".join(HEADS)))
        cls = HEADS[key]
        block = cls(ch, classes, prefix=net.prefix + ("fbhead_" if cls is FBHead else "linhead_"), **head_kwargs)
    elif callable(head):
        block = head(ch, classes, **head_kwargs)
    else:
        raise TypeError("head must be a name or a callable, got %r" % (head,))
    for name in drop:  # detach the unused classifier (its parameters would never get a gradient)
        net._children.pop(name, None)
    return WithHead(net, block, fn, prefix=net.prefix)


register_head_attacher(attach_head)
