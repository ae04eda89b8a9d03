"""Shared test set-up: the package is imported first so OMP_NUM_THREADS is set before mxnet, and the
FBN symbol networks are registered (``symbols``) for the registry-wide tests."""
import mxrepro  # noqa: F401  (threads; the FB operators load with mxnet)
import symbols  # noqa: F401  (registers the FBN --network names)
import importlib.util  # noqa: E402
import os  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_script(relpath):
    """Import a training script (``cifar/train_aff_cifar.py``...) as a module, by its path."""
    path = os.path.join(ROOT, relpath)
    name = os.path.splitext(os.path.basename(path))[0]
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod
