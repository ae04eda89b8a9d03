"""Model library: ``get_model(name, **kw)`` / ``list_models()`` over all three papers' families."""
from .registry import get_model, get_symbol, list_models, model_info, register_model, ModelEntry

__all__ = ["get_model", "get_symbol", "list_models", "model_info", "register_model", "ModelEntry"]
