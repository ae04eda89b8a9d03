#!/usr/bin/env python
"""Parameter counts of the FBN networks and their baselines (docs/reference/fbn.md §4.5, paper table).

    python tools/param_count.py                 # CIFAR-10/100 table (F=20) and ImageNet FB sizes
    python tools/param_count.py --json          # machine-readable rows
    python tools/param_count.py --num-classes 100 --fmconv-factor 20 --cifar-only

Counts are taken from the symbols by shape inference (every argument except data/label: conv
and FC weights and biases, BN gamma/beta, FB weight/bias; BN running statistics excluded). The
paper prints 1.7/2.2 (ResNet-164), 1.7/2.4 (Inception-BN), 10.2/10.7 (ResNet-1001), which match
CIFAR-100 with F=20 (1.739/2.251, 1.683/2.355, 10.43/10.94).
"""
import argparse
import json
import os
import sys


import mxrepro  # noqa: E402,F401
import symbols  # noqa: F401  (registers the FBN networks)
from mxrepro.flops import count_params
from symbols import get_symbol

CIFAR_ROWS = (  # (label, baseline network, FBN network, kwargs, paper params_m base/FBN)
    ("ResNet-164", "resnet-small", "resnet-small-fmconv", dict(res_module_num=18), (1.7, 2.2)),
    ("ResNet-1001", "resnet-small", "resnet-small-fmconv", dict(res_module_num=111), (10.2, 10.7)),
    ("Inception-BN-small", "inception-bn-small", "inception-bn-small-fmconv", {}, (1.7, 2.4)),
)
IMAGENET_ROWS = (
    ("ResNet-34 (F=50, published run)", "resnet", "resnet-fmconv", dict(depth=34, fmconv_factor=50), None),
    ("ResNet-50 (F=50)", "resnet", "resnet-fmconv", dict(depth=50, fmconv_factor=50), None),
    ("ResNet-50 (F=20)", "resnet", "resnet-fmconv", dict(depth=50, fmconv_factor=20), None),
    ("Inception-BN (F=20)", "inception-bn", "inception-bn-fmconv", dict(fmconv_factor=20), None),
)


def count(network, input_size, **kw):
    """Parameter count of a registered FBN-family network."""
    return count_params(get_symbol(network, **kw), (1, 3, input_size, input_size))[0]


def rows(num_classes_list=(10, 100), fmconv_factor=20, imagenet=True):
    out = []
    for nc in num_classes_list:
        for label, base, fbn, kw, paper in CIFAR_ROWS:
            kw = dict(kw, num_classes=nc)
            b = count(base, 32, **kw)
            f = count(fbn, 32, fmconv_factor=fmconv_factor, **kw)
            out.append(dict(dataset="cifar%d" % nc, model=label, baseline=base, fbn=fbn, base_params=b,
                            fbn_params=f, fb_added=f - b, fmconv_factor=fmconv_factor,
                            paper_params_m=paper if nc == 100 and fmconv_factor == 20 else None))
    if imagenet:
        for label, base, fbn, kw, _ in IMAGENET_ROWS:
            kw = dict(kw, num_classes=1000)
            b = count(base, 224, **{k: v for k, v in kw.items() if k != "fmconv_factor"})
            f = count(fbn, 224, **kw)
            out.append(dict(dataset="imagenet", model=label, baseline=base, fbn=fbn, base_params=b, fbn_params=f,
                            fb_added=f - b, fmconv_factor=kw.get("fmconv_factor"), paper_params_m=None))
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--num-classes", type=int, action="append", help="CIFAR class counts (default 10 and 100)")
    ap.add_argument("--fmconv-factor", type=int, default=20, help="F of the CIFAR FB layers")
    ap.add_argument("--cifar-only", action="store_true", help="skip the ImageNet networks")
    ap.add_argument("--json", action="store_true", help="print JSON rows instead of a table")
    a = ap.parse_args(argv)
    table = rows(tuple(a.num_classes or (10, 100)), a.fmconv_factor, not a.cifar_only)
    if a.json:
        print(json.dumps(table, indent=1))
        return 0
    print("%-9s %-32s %12s %12s %10s  %s" % ("dataset", "model", "baseline M", "FBN M", "+FB M", "paper M (base/FBN)"))
    for r in table:
        paper = "%.1f / %.1f" % r["paper_params_m"] if r["paper_params_m"] else ""
        print("%-9s %-32s %12.3f %12.3f %10.3f  %s" % (r["dataset"], r["model"], r["base_params"] / 1e6,
                                                      r["fbn_params"] / 1e6, r["fb_added"] / 1e6, paper))
    return 0


if __name__ == "__main__":
    sys.exit(main())
