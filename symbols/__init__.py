"""FBN symbol definitions (Module API), one module per network family (docs/reference/fbn.md §4).

Importing the package registers every `--network` name in the project registry
(``mxrepro.models.registry``, ``kind='symbol', family='fbn'``):

  CIFAR:    resnet-small, resnet-small-fmconv, inception-bn-small, inception-bn-small-fmconv,
            inception-bn-small-bilinear (the B-CNN baseline, head layers named cifar_* for --freeze)
  ImageNet: resnet, resnet-fmconv (depth 18/34/50/101/152/200/269), inception-bn, inception-bn-fmconv

Every builder has the signature ``(num_classes, res_module_num=18, depth=50, fmconv_factor=20,
fmconv_drop=0.5, bn_mom=0.9, workspace=512, **kw) -> Symbol``; ``**kw`` may carry the FB operator
attributes ``dropfactor_mode``/``grad_mode`` and ``fb_op`` ('FMConvolution1'|'FMConvolution3').
"""
import mxrepro  # noqa: F401  (threads + the FB operator library, before any symbol is built)

from . import inception_bn, inception_bn_small, inception_bn_small_bilinear, resnet, resnet_small  # noqa: F401

NETWORKS_CIFAR = ("resnet-small", "resnet-small-fmconv", "inception-bn-small", "inception-bn-small-fmconv",
                  "inception-bn-small-bilinear")
NETWORKS_IMAGENET = ("resnet", "resnet-fmconv", "inception-bn", "inception-bn-fmconv")


def get_symbol(network, **kwargs):
    """The Symbol of a registered FBN `--network` name (see the module docstring)."""
    from mxrepro.models.registry import model_info
    entry = model_info(network)
    if entry.family != "fbn" or entry.kind != "symbol":
        raise ValueError("%r is not an FBN symbol network; choose one of %s"
                         % (network, ", ".join(NETWORKS_CIFAR + NETWORKS_IMAGENET)))
    return entry.build(**kwargs)
