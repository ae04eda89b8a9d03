"""Pieces shared by the FBN symbol definitions (docs/reference/fbn.md §4, §4.1-4.4).

The FBN head (docs/reference/fbn.md §4, "common FBN head pattern"):

    features -> [BN ->] tanh -> { FB op (1x1, N=classes, F factors, DropFactor p)
                                 + plain 1x1 Convolution(N, with bias) } -> sum
             -> global average pool -> Flatten -> SoftmaxOutput

The FB term is evaluated at every spatial position before pooling, exactly like the original.
Global pooling uses ``global_pool=True`` (kernel kept as in the reference): identical output at
the published input sizes (8x8 CIFAR, 7x7 ImageNet maps) and it also works at other sizes.
"""
import mxnet as mx

# BN epsilon of the CIFAR and Inception symbols (docs/reference/fbn.md §4.1); the ImageNet ResNet uses 2e-5.
BN_EPS = 1e-10 + 1e-5
FB_OPS = ("FMConvolution1", "FMConvolution3")


def fb_op_kwargs(kw):
    """The optional FB-operator attributes accepted by every builder's ``**kw``:
    ``dropfactor_mode`` and ``grad_mode`` of the FB operator (None keeps the operator's default)."""
    out = {}
    for key in ("dropfactor_mode", "grad_mode"):
        if kw.get(key) is not None:
            out[key] = kw[key]
    return out


def fbn_head(feat, num_classes, fmconv_factor, fmconv_drop, fb_op, fb_name, linear_name,
             flatten_name, pool_kernel, fb_first=False, workspace=None, **op_kw):
    """FB operator + plain 1x1 convolution on the same (tanh-activated) ``feat``, summed, then
    :func:`pooled_softmax`. Returns the SoftmaxOutput symbol.

    ``fb_name`` is the FB layer name (`bilinear` / `bilinear1`: parameters `<name>_weight`
    (N, F, C, 1, 1) and `<name>_bias` (N,)); ``linear_name`` the 1x1 conv name (None = the
    auto-generated name, as in the CIFAR ResNet reference); ``fb_first`` the order of the sum
    (`bilinear + conv` in the CIFAR ResNet, `conv + bilinear` elsewhere)."""
    if fb_op not in FB_OPS:
        raise ValueError("fb_op must be one of %s, got %r" % (FB_OPS, fb_op))
    fb_kw = dict(op_kw)
    if workspace is not None and fb_op == "FMConvolution1":
        fb_kw["workspace"] = workspace
    bilinear = getattr(mx.sym, fb_op)(data=feat, num_filter=num_classes, num_factor=int(fmconv_factor),
                                      kernel=(1, 1), stride=(1, 1), pad=(0, 0), p=float(fmconv_drop),
                                      name=fb_name, **fb_kw)
    conv = mx.sym.Convolution(data=feat, num_filter=num_classes, kernel=(1, 1), stride=(1, 1),
                              pad=(0, 0), name=linear_name)
    summed = bilinear + conv if fb_first else conv + bilinear
    return pooled_softmax(summed, pool_kernel, flatten_name)


def pooled_softmax(data, pool_kernel, flatten_name, fc_name=None, num_classes=None,
                   pool_name="global_pool"):
    """avg-pool over the whole map (`global_pool`) -> Flatten [-> FullyConnected ``fc_name``]
    -> SoftmaxOutput('softmax')."""
    pool = mx.sym.Pooling(data=data, pool_type="avg", kernel=pool_kernel, stride=(1, 1),
                          global_pool=True, name=pool_name)
    out = mx.sym.Flatten(data=pool, name=flatten_name)
    if fc_name is not None:
        out = mx.sym.FullyConnected(data=out, num_hidden=num_classes, name=fc_name)
    return mx.sym.SoftmaxOutput(data=out, name="softmax")
