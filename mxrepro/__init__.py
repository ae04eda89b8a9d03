"""mxrepro: MXNet/Gluon reproduction of FBN (ICCV 2017), AFF (WACV 2021) and bL-Net (ICLR 2019).

Importing the package sets ``OMP_NUM_THREADS`` (MXNet otherwise uses half the cores) and loads
the compiled FB operator library, so ``mx.sym.FMConvolution1/3``, ``mx.nd.FMConvolution1/3`` and
``F.FMConvolution1/3`` exist afterwards. Import it before ``mxnet`` in every entry point.
"""
import os

if "OMP_NUM_THREADS" not in os.environ:
    os.environ["OMP_NUM_THREADS"] = str(os.cpu_count() or 1)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from . import ops  # noqa: E402  (loads the operator library)
from .models import get_model, get_symbol, list_models, model_info  # noqa: E402

__all__ = ["ops", "get_model", "get_symbol", "list_models", "model_info", "ROOT"]
