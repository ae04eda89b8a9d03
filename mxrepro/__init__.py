"""mxrepro: MXNet/Gluon reproduction of FBN (ICCV 2017), AFF (WACV 2021) and bL-Net (ICLR 2019).

Importing the package sets ``OMP_NUM_THREADS`` (MXNet otherwise uses half the cores), silences MXNet's
per-bind subgraph line (``MXNET_SUBGRAPH_VERBOSE=0`` unless set) and makes
sure the compiled FB operators are registered whenever MXNet is in use: at once if ``mxnet`` is
already imported, otherwise right after ``import mxnet`` completes. So after ``import mxrepro``
(put it before ``import mxnet`` in every entry point) ``mx.sym.FMConvolution1/3``,
``mx.nd.FMConvolution1/3`` and ``F.FMConvolution1/3`` exist, while modules that never touch MXNet
(``mxrepro.launcher``, the distributed launcher) import without loading it. In a process started by
the launcher (``MXREPRO_LAUNCHER_PID`` set) it also starts the watchdog that ends the process with the
launcher (:func:`mxrepro.lifeline.watch_launcher`).

``get_model``, ``get_symbol``, ``list_models`` and ``model_info`` are the model registry's
(:mod:`mxrepro.models`), imported on first use.
"""
import importlib
import importlib.abc
import importlib.util
import os
import sys

if "OMP_NUM_THREADS" not in os.environ:
    os.environ["OMP_NUM_THREADS"] = str(os.cpu_count() or 1)
# MXNet prints "Subgraph backend MKLDNN is activated." at every bind otherwise (a calm console)
os.environ.setdefault("MXNET_SUBGRAPH_VERBOSE", "0")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

__all__ = ["ops", "get_model", "get_symbol", "list_models", "model_info", "ROOT"]
_REGISTRY_API = ("get_model", "get_symbol", "list_models", "model_info")


def _load_ops():
    importlib.import_module(__name__ + ".ops")


class _AfterMXNet(importlib.abc.MetaPathFinder):
    """Finds ``mxnet`` like the rest of ``sys.meta_path`` would, then loads the FB operators once
    the module has executed (a post-import hook, removed after its single use)."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname != "mxnet":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(fullname)
        if spec is None or spec.loader is None:
            return spec
        run = spec.loader.exec_module

        def exec_module(module):
            run(module)
            _load_ops()
        spec.loader.exec_module = exec_module
        return spec


if os.environ.get("MXREPRO_LAUNCHER_PID"):  # a process of tools/launch.py's job: end with the launcher
    from .lifeline import watch_launcher
    watch_launcher()

if "mxnet" in sys.modules:
    _load_ops()
elif not any(isinstance(f, _AfterMXNet) for f in sys.meta_path):
    sys.meta_path.insert(0, _AfterMXNet())


def __getattr__(name):
    if name in _REGISTRY_API:
        from . import models
        return getattr(models, name)
    if name == "ops":
        import mxnet  # noqa: F401  (the hook loads mxrepro.ops)
        return sys.modules[__name__ + ".ops"]
    raise AttributeError("module %r has no attribute %r" % (__name__, name))
