"""Model library: ``get_model(name, **kw)`` / ``list_models()`` over the Gluon families of the three
papers. Import order is the dependency order: the leaf registry, shared layers and fusions, heads,
then the families (resnet hosts and baselines, AFF networks, bL-Net), which register themselves.
The FBN symbol networks register when the top-level ``symbols`` package is imported."""
from .registry import ModelEntry, get_model, get_symbol, list_models, model_info, register_model
from . import layers, fusions, heads, resnet, aff, blnet  # noqa: F401,E401  (registration)
from .. import weights  # noqa: F401,E402  (get_model(..., pretrained=PATH) loads through it)

__all__ = ["get_model", "get_symbol", "list_models", "model_info", "register_model", "ModelEntry"]
