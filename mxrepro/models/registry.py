"""One registry for every network of the project (timm-style thin builders). A leaf module: model
modules import it and register their builders when they are imported; it imports none of them.

Gluon models (``kind='gluon'``: AFF, bL-Net, baselines; registered when :mod:`mxrepro.models` is
imported) and symbol-API networks (``kind='symbol'``: the FBN ``--network`` names; registered when
the top-level ``symbols`` package is imported) share one list, so ``--network`` and ``--model``
names, the model table, the visualiser and the tests all read it.

    @register_model(family='aff', paper=dict(params_m=..., top1_err=...), input_size=224)
    def aff_resnet50(**kwargs): ...

``get_model(name, **kw)`` returns a Gluon block or a Symbol; ``get_symbol(name, **kw)`` always
returns a Symbol (Gluon blocks are traced on a ``data`` variable).
"""
import os
import re
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional

__all__ = ["ModelEntry", "register_model", "model_info", "list_models", "get_model", "get_symbol",
           "register_head_attacher", "register_weights_loader"]


@dataclass
class ModelEntry:
    name: str
    fn: Callable
    kind: str  # 'gluon' | 'symbol'
    family: str
    cfg: Dict = field(default_factory=dict)  # default config: input_size, num_classes, paper numbers

    def build(self, **kwargs):
        return self.fn(**kwargs)

    def expected_counts(self):
        """[(builder kwargs, parameters in millions)] from ``cfg['expected_params_m']``, whose keys name
        a configuration as ``c<classes>[_n<res_module_num>][_f<fmconv_factor>]`` (the FBN symbols)."""
        out = []
        for key, millions in self.cfg.get("expected_params_m", {}).items():
            kw = {}
            for tag, arg in (("c", "num_classes"), ("n", "res_module_num"), ("f", "fmconv_factor")):
                m = re.search(r"(?:^|_)%s(\d+)" % tag, key)
                if m:
                    kw[arg] = int(m.group(1))
            out.append((kw, millions))
        return out


_REGISTRY: Dict[str, ModelEntry] = {}
_ALIASES: Dict[str, str] = {}
_HEAD_ATTACHER: List[Callable] = []  # set by mxrepro.models.heads (kept out of this leaf module)
_WEIGHTS_LOADER: List[Callable] = []  # set by mxrepro.weights


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


def register_head_attacher(fn: Callable):
    """``fn(net, head, **head_kwargs) -> net`` used by ``get_model(..., head=...)``."""
    _HEAD_ATTACHER[:] = [fn]


def register_weights_loader(fn: Callable):
    """``fn(net, path, model_name)`` used by ``get_model(..., pretrained=PATH)``."""
    _WEIGHTS_LOADER[:] = [fn]


def model_info(name: str) -> ModelEntry:
    key = _norm(name)
    key = _ALIASES.get(key, key)
    if key not in _REGISTRY:
        close = [n for n in _REGISTRY if key.split("_")[0].split("-")[0] in n][:8]
        raise KeyError("unknown model %r (%d registered; `python tools/model_table.py --list` lists them; FBN "
                       "symbol networks need `import symbols`)%s"
                       % (name, len(_REGISTRY), (", e.g. " + ", ".join(close)) if close else ""))
    return _REGISTRY[key]


def list_models(family: Optional[str] = None, kind: Optional[str] = None) -> List[str]:
    return sorted(n for n, e in _REGISTRY.items()
                  if (family is None or e.family == family) and (kind is None or e.kind == kind))


def get_model(name: str, *, head=None, head_kwargs=None, pretrained=None, **kwargs):
    """Build a registered network: a Gluon HybridBlock (kind 'gluon') or a Symbol (kind 'symbol').

    * ``head='fbn'`` (or 'linear', or a callable ``head(in_channels, classes)``) swaps the classifier of
      any Gluon backbone (mxrepro.models.heads.attach_head; ``head_kwargs`` go to the head);
      ``fusion=`` is passed to families that accept it, e.g.
      ``get_model('bl_resnet50', fusion='aff', head='fbn')``.
    * ``pretrained=PATH`` loads weights after building (and after the head): this project's
      ``.params``, or a released checkpoint that :mod:`mxrepro.weights` converts by name (bL-Net
      ``.pth``, AFF ``.params``); one of this project's checkpoints must match the size and CRC-32 in
      the ``.json`` beside it. No weights ship with the project, so ``pretrained=True`` is an error.
    """
    entry = model_info(name)
    if pretrained is True:
        raise ValueError("no pretrained weights ship with this project: pass pretrained=PATH to a checkpoint "
                         "(see docs/weights.md for the released bL-Net and AFF weights)")
    net = entry.build(**kwargs)
    if head is not None:
        if entry.kind != "gluon":
            raise ValueError("head= applies to Gluon models; %r is a symbol network (its -fmconv variant has the "
                             "FB head)" % name)
        if not _HEAD_ATTACHER:
            raise RuntimeError("head= needs mxrepro.models.heads: import mxrepro.models")
        net = _HEAD_ATTACHER[0](net, head, **(head_kwargs or {}))
    if pretrained:
        if entry.kind != "gluon":
            raise ValueError("pretrained= applies to Gluon models; symbol networks load an epoch checkpoint with "
                             "mx.model.load_checkpoint(prefix, epoch)")
        if not _WEIGHTS_LOADER:
            raise RuntimeError("pretrained= needs mxrepro.weights: import mxrepro.models")
        _WEIGHTS_LOADER[0](net, os.fspath(pretrained), entry.name)
    return net


def get_symbol(name: str, **kwargs):
    """A Symbol for any registered network (Gluon blocks are traced on a variable named ``data``)."""
    entry = model_info(name)
    out = entry.build(**kwargs)
    if entry.kind == "symbol":
        return out
    import mxnet as mx
    return out(mx.sym.var("data"))
