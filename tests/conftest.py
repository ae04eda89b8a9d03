"""Shared test set-up: the package is imported first so OMP_NUM_THREADS is set before mxnet."""
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import mxrepro  # noqa: E402,F401  (sets threads, loads the FB operator library)
