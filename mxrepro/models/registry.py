"""One registry for every network of the project (timm-style thin builders).

Gluon models (``kind='gluon'``: AFF, bL-Net, baselines) and symbol-API networks (``kind='symbol'``:
the FBN ``--network`` names in ``symbols/``) register here, so ``--network`` and ``--model`` names,
the model table, the visualiser and the tests all read one list.

    @register_model(family='aff', paper=dict(params_m=30.354), input_size=224)
    def aff_resnet50(**kwargs): ...

``get_model(name, **kw)`` returns a Gluon block or a Symbol; ``get_symbol(name, **kw)`` always
returns a Symbol (Gluon blocks are traced on a ``data`` variable).
"""
import importlib
import importlib.util
import os
import sys
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional

# Modules that define models; each registers its builders on import. Missing ones are skipped so
# the registry works while families are being added; a module that exists but fails raises.
FAMILY_MODULES = (
    "mxrepro.models.resnet",
    "mxrepro.models.aff",
    "mxrepro.models.blnet",
    "mxrepro.models.heads",
    "symbols",
)


@dataclass
class ModelEntry:
    name: str
    fn: Callable
    kind: str  # 'gluon' | 'symbol'
    family: str
    cfg: Dict = field(default_factory=dict)  # default config: input_size, num_classes, paper numbers

    def build(self, **kwargs):
        return self.fn(**kwargs)


_REGISTRY: Dict[str, ModelEntry] = {}
_ALIASES: Dict[str, str] = {}
_loaded = False


def _norm(name: str) -> str:
    return name.strip().lower()


def register_model(fn: Optional[Callable] = None, *, name: Optional[str] = None, kind: str = "gluon",
                   family: str = "misc", aliases=(), **cfg):
    """Decorator registering a builder. ``cfg`` is the model's default config (see ModelEntry)."""
    if kind not in ("gluon", "symbol"):
        raise ValueError("kind must be 'gluon' or 'symbol'")

    def deco(f):
        key = _norm(name or f.__name__)
        if key in _REGISTRY and _REGISTRY[key].fn is not f:
            raise ValueError("model %r registered twice" % key)
        _REGISTRY[key] = ModelEntry(key, f, kind, family, dict(cfg))
        for a in aliases:
            _ALIASES[_norm(a)] = key
        return f

    return deco(fn) if fn is not None else deco


def _load_families():
    global _loaded
    if _loaded:
        return
    _loaded = True
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    if root not in sys.path:
        sys.path.insert(0, root)
    for mod in FAMILY_MODULES:
        if importlib.util.find_spec(mod) is not None:
            importlib.import_module(mod)


def model_info(name: str) -> ModelEntry:
    _load_families()
    key = _norm(name)
    key = _ALIASES.get(key, key)
    if key not in _REGISTRY:
        close = [n for n in _REGISTRY if key.split("_")[0] in n][:8]
        raise KeyError("unknown model %r; known models: %s (see `python tools/model_table.py` or "
                       "list_models())%s" % (name, len(_REGISTRY), (", e.g. " + ", ".join(close)) if close else ""))
    return _REGISTRY[key]


def list_models(family: Optional[str] = None, kind: Optional[str] = None) -> List[str]:
    _load_families()
    return sorted(n for n, e in _REGISTRY.items()
                  if (family is None or e.family == family) and (kind is None or e.kind == kind))


def get_model(name: str, **kwargs):
    """Build a registered network: a Gluon HybridBlock (kind 'gluon') or a Symbol (kind 'symbol').

    Any head combines with any Gluon backbone: ``head='fbn'`` (or 'linear', or a callable) swaps
    the classifier through mxrepro.models.heads.attach_head (``head_kwargs`` go to the head);
    ``fusion=`` is passed to families that accept it, e.g.
    ``get_model('bl_resnet50', fusion='aff', head='fbn')``."""
    head = kwargs.pop("head", None)
    head_kwargs = kwargs.pop("head_kwargs", None)
    net = model_info(name).build(**kwargs)
    if head is None:
        return net
    if model_info(name).kind != "gluon":
        raise ValueError("head= applies to Gluon models; %r is a symbol network (its -fmconv variant has the FB head)" % name)
    from .heads import attach_head
    return attach_head(net, head, **(head_kwargs or {}))


def get_symbol(name: str, **kwargs):
    """A Symbol for any registered network (Gluon blocks are traced on a variable named ``data``)."""
    entry = model_info(name)
    out = entry.build(**kwargs)
    if entry.kind == "symbol":
        return out
    import mxnet as mx
    return out(mx.sym.var("data"))
