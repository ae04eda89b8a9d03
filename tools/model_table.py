#!/usr/bin/env python
"""Model table: parameters and multiply-adds of every registered model against the papers' numbers.

For each registered model of the FBN, AFF, bL-Net families (and the plain ResNet/ResNeXt baselines
of the AFF and bL-Net tables) this builds the network, infers every shape symbolically (no forward
pass) and counts

* parameters: trainable (conv/dense weights and biases, BN gamma/beta) and "+stats" (BN running
  mean/var and frozen parameters too: the AFF ResNeXt rows and gluon-cv's ``summary`` count these),
* multiply-adds at the paper's input size (32 for CIFAR, 224 for ImageNet) with
  :mod:`mxrepro.flops` (a walk over the MXNet graph, the project's one counter),

and compares them with the numbers the papers print (each model's registry ``cfg['paper']``, or the
tables in this file, each citing its section of ``docs/reference/{fbn,aff,blnet}.md``).

A printed number "matches" when the computed one rounds to it at the printed precision; papers
sometimes truncate instead (AFF Table 5 prints AFF-ResNet-50 as 30.3M), which is reported as "matches
(truncated)". Known, explained differences carry a note; any other difference makes the tool exit 1.

    python tools/model_table.py                      # all families -> docs/model_table.md
    python tools/model_table.py --family blnet --check-only
    python tools/model_table.py --models aff_resnet50 resnet-small-fmconv:n18 --out /tmp/t.md
"""
import argparse
import inspect
import math
import os
import sys
import time


import mxrepro  # noqa: F401  (threads before mxnet)
import symbols  # noqa: F401  (registers the FBN networks)

from mxrepro import flops
from mxrepro.models.registry import list_models, model_info  # noqa: E402

FAMILIES = ("fbn", "aff", "blnet", "resnet")


# ------------------------------------------------------------------------------------------------
# Rows. A row = (label, registry name, builder kwargs, input size, checks). A check compares one
# computed quantity with one printed number: dict(what='params'|'params_stats'|'gmacs'|'ref_gmacs',
# value=printed, digits=printed decimals, source=..., note=explanation if a known difference).
# ------------------------------------------------------------------------------------------------
_FBN = "docs/reference/fbn.md §4.5/§7 (paper Table, CIFAR-100, F=20)"
# FBN symbol networks: the paper's rows are configurations of one --network name. The exact counts of
# the original symbols come from the registry (expected_params_m, registered_counts); these are the paper's.
FBN_ROWS = [
    ("ResNet-164 (n=18)", "resnet-small", dict(res_module_num=18, num_classes=100), 32,
     [dict(what="params", value=1.7, digits=1, source=_FBN)]),
    ("ResNet-164-FBN (n=18, F=20)", "resnet-small-fmconv", dict(res_module_num=18, num_classes=100), 32,
     [dict(what="params", value=2.2, digits=1, source=_FBN)]),
    ("ResNet-1001 (n=111)", "resnet-small", dict(res_module_num=111, num_classes=100), 32,
     [dict(what="params", value=10.2, digits=1, source=_FBN,
           note="10.2M is He et al.'s count without conv biases; the original symbol (biases on every conv) "
                "has 10.43M (docs/reference/fbn.md §4.5)")]),
    ("ResNet-1001-FBN (n=111, F=20)", "resnet-small-fmconv", dict(res_module_num=111, num_classes=100), 32,
     [dict(what="params", value=10.7, digits=1, source=_FBN,
           note="baseline's 10.2M (no conv biases) + the FB head's 0.51M; as coded 10.94M (docs/reference/fbn.md §4.5)")]),
    ("Inception-BN-small", "inception-bn-small", dict(num_classes=100), 32,
     [dict(what="params", value=1.7, digits=1, source=_FBN)]),
    ("Inception-BN-small-FBN (F=20)", "inception-bn-small-fmconv", dict(num_classes=100), 32,
     [dict(what="params", value=2.4, digits=1, source=_FBN)]),
    ("Inception-BN-small B-CNN (bilinear pooling)", "inception-bn-small-bilinear", dict(num_classes=100), 32, []),
    ("ResNet-164 CIFAR-10", "resnet-small", dict(res_module_num=18, num_classes=10), 32, []),
    ("ResNet-164-FBN CIFAR-10 (F=20)", "resnet-small-fmconv", dict(res_module_num=18, num_classes=10), 32, []),
    ("ImageNet ResNet-34", "resnet", dict(depth=34), 224, []),
    ("ImageNet ResNet-34-FBN (F=50)", "resnet-fmconv", dict(depth=34, fmconv_factor=50), 224,
     [dict(what="fb_params", value=25.6, digits=1, source="docs/reference/fbn.md §4.5 (FB term 1000*50*512, derived)")]),
    ("ImageNet ResNet-50", "resnet", dict(depth=50), 224, []),
    ("ImageNet ResNet-50-FBN (F=50)", "resnet-fmconv", dict(depth=50, fmconv_factor=50), 224,
     [dict(what="fb_params", value=102.4, digits=1, source="docs/reference/fbn.md §4.5 (FB term 1000*50*2048, derived; "
                                                            "the paper's F is undocumented)")]),
    ("ImageNet Inception-BN", "inception-bn", dict(), 224, []),
    ("ImageNet Inception-BN-FBN (F=20)", "inception-bn-fmconv", dict(), 224,
     [dict(what="fb_params", value=20.5, digits=1, source="docs/reference/fbn.md §4.5 (FB term 1000*20*1024, derived)")]),
]

# AFF: the reference's further fusions (--askc-type, docs/aff.md §1.1) in the CIFAR AFF-ResNet-32 host
# (blocks 5, channel-times 4, r=4); the papers print no number for them.
AFF_FUSION_ROWS = [("AFF-ResNet-32 with %s (--askc-type %s)" % (label, askc), "aff_cifar_resnet",
                    dict(fusion=askc, classes=100), 32, [])
                   for label, askc in (("GAU", "GAUFuse"), ("SK selection", "SKFuse"), ("Half-AFF", "HalfASKCFuse"),
                                       ("Concat-AFF", "ConcatASKCFuse"), ("Recursive AFF", "RASKCFuse"),
                                       ("depthwise AFF", "DepthASKCFuse"), ("depthwise-4 AFF", "Depth4ASKCFuse"))]

# Printed numbers not (or not only) in the registry cfg, and explanations of known differences.
EXTRA_CHECKS = {
    "aff_cifar_resnet": [],  # 5.0M handled through paper_params_m + KNOWN_NOTES
    "bl_resnet50": [dict(what="gmacs", value=2.85, digits=2, source="docs/reference/blnet.md §2.2 ([OFF] README GFLOPs)")],
    "bl_resnet50_a2_b4": [dict(what="gmacs", value=2.85, digits=2, source="docs/reference/blnet.md §2.2 ([OFF] README GFLOPs)")],
    "bl_resnet101": [dict(what="gmacs", value=3.89, digits=2, source="docs/reference/blnet.md §2.2 ([OFF] README GFLOPs)")],
    "bl_resnext50_32x4d": [dict(what="gmacs", value=3.03, digits=2, source="docs/reference/blnet.md §2.2 ([OFF] README GFLOPs)")],
    "bl_resnext101_32x4d": [
        dict(what="gmacs", value=4.08, digits=2, source="docs/reference/blnet.md §2.2 ([OFF] README GFLOPs)"),
        dict(what="params", value=43.4, digits=1, source="docs/reference/blnet.md §2.2b ([OCT] table)",
             note="[OCT] lists 43.4M; the released code (alpha=2, beta=4) has 41.5M -- unresolved paper/code "
                  "difference (docs/reference/blnet.md §2.2b)")],
    "bl_resnext101_64x4d": [dict(what="gmacs", value=7.97, digits=2, source="docs/reference/blnet.md §2.2 ([OFF] README GFLOPs)",
                                 note="README slip: 7.97 is the alpha=2, beta=2 cost (7.96) and the ResNeXt-101 "
                                      "32x4d baseline's; alpha=2, beta=4 as released is 7.14 (docs/reference/blnet.md §2.2a)")],
    "bl_seresnext50_32x4d": [dict(what="gmacs", value=3.03, digits=2, source="docs/reference/blnet.md §2.2 ([OFF] README GFLOPs)")],
    "bl_seresnext101_32x4d": [dict(what="gmacs", value=4.08, digits=2,
                                   source="docs/reference/blnet.md §2.2 ([OFF] README GFLOPs)")],
    "bl_resnet50_a4_b4": [dict(what="params", value=26.2, digits=1, source="docs/reference/blnet.md §2.1 ([OCT])"),
                          dict(what="gmacs", value=2.5, digits=1, source="docs/reference/blnet.md §2.1 ([OCT])")],
    "resnet50_v1b": [dict(what="ref_gmacs", value=4.091, digits=3, source="docs/reference/aff.md §2.7"),
                     dict(what="gmacs", value=4.1, digits=1, source="docs/reference/aff.md §2.7 (supplement: ResNet-50 4.1 GFLOPs)")],
    "resnext50_32x4d": [dict(what="ref_gmacs", value=4.233, digits=3, source="docs/reference/aff.md §2.7")],
    "resnet101_v1b": [dict(what="params", value=42.5, digits=1, source="docs/reference/aff.md §6 Table 5 (quoted from other papers)",
                           note="Table 5 copies 42.5M from the compared papers; a v1b ResNet-101 with a 1000-way "
                                "head has 44.5M (torchvision's count too)")],
    "iaff_cifar_resnext38_32x4d": [dict(what="params_stats", value=9.285, digits=3, source="docs/reference/aff.md §2.6")],
}

KNOWN_NOTES = {
    ("aff_cifar_resnet", "paper_params_m"):
        "paper-v1 / old README '5.0M' cannot come from blocks=5, channel-times=4 (7.897M as coded; the later "
        "README says 7.9M); treated as a paper error (docs/reference/aff.md §2.6)",
}

# registry cfg['paper'] key -> (quantity, digits or None = from the printed string)
PAPER_KEYS = {
    "params_m": "params", "paper_params_m": "params", "params_with_bn_stats_m": "params_stats",
    "gmacs": "gmacs", "paper_gflops": "gmacs", "params_m_quoted": None,
}
# ResNeXt rows of AFF Table 5 count BN statistics (docs/reference/aff.md §2.6)
STATS_PAPER_PARAMS = {"aff_resnext50_32x4d", "iaff_resnext50_32x4d", "aff_cifar_resnext38_32x4d",
                      "aff_cifar_resnext47_32x4d"}


def _digits(v):
    s = repr(float(v))
    return len(s.split(".")[1].rstrip("0")) if "." in s else 0


def registry_checks(name):
    """Checks from the registry cfg['paper'] of a Gluon model, plus EXTRA_CHECKS."""
    cfg = model_info(name).cfg
    paper = cfg.get("paper") or {}
    src = paper.get("source", "registry cfg")
    checks = []
    for key, what in PAPER_KEYS.items():
        if key not in paper or what is None:
            continue
        if key == "paper_params_m" and name in STATS_PAPER_PARAMS:
            what = "params_stats"
        c = dict(what=what, value=float(paper[key]), digits=max(_digits(paper[key]), 1),
                 source="%s [%s]" % (src, key))
        if (name, key) in KNOWN_NOTES:
            c["note"] = KNOWN_NOTES[(name, key)]
        # the AFF paper's "GFLOPs" = MACs in utils/flops.py's convention (docs/reference/aff.md §2.7)
        if what == "gmacs" and model_info(name).family == "aff" and key == "gmacs":
            c["what"] = "ref_gmacs"
        checks.append(c)
    checks += [dict(c) for c in EXTRA_CHECKS.get(name, [])]
    return checks


def registered_counts(name, kwargs):
    """Checks from the symbol's registered exact counts (``expected_params_m``, docs/reference/fbn.md
    §4.5) whose configuration is this row's (builder defaults fill what the row leaves out)."""
    entry = model_info(name)
    defaults = {k: p.default for k, p in inspect.signature(entry.fn).parameters.items()}
    return [dict(what="params", value=m, digits=_digits(m), source="registry expected_params_m (docs/reference/fbn.md §4.5)")
            for kw, m in entry.expected_counts() if all(kwargs.get(k, defaults.get(k)) == v for k, v in kw.items())]


def all_rows(families=FAMILIES, models=None):
    """Every (label, name, kwargs, size, checks) row of ``families`` (or of ``models``)."""
    rows = []
    for fam in families:
        if fam == "fbn":
            rows += [(lab, n, dict(kw), size, list(ch) + registered_counts(n, kw)) for lab, n, kw, size, ch in FBN_ROWS]
            continue
        for n in list_models(family=fam, kind="gluon"):
            cfg = model_info(n).cfg
            rows.append((n, n, {}, int(cfg.get("input_size", 224)), registry_checks(n)))
        if fam == "aff":
            rows += [(lab, n, dict(kw), size, list(ch)) for lab, n, kw, size, ch in AFF_FUSION_ROWS]
    if models:
        wanted, out = list(models), []
        for w in wanted:
            hit = [r for r in rows if r[1] == w or r[0] == w]
            if not hit:
                try:
                    e = model_info(w)
                except KeyError as err:
                    raise SystemExit(str(err))
                hit = [r for r in all_rows((e.family,)) if r[1] == e.name]
            out += hit
        rows = out
    return rows


# ------------------------------------------------------------------------------------------------
# Counting
# ------------------------------------------------------------------------------------------------
def _fb_params(records):
    """Parameters of the FB operator nodes: their weight and bias inputs, directly or through the
    ``_copy`` (identity) the operator's wrappers put on graph variables for grad_req='add'."""
    total = 0
    for r in records:
        if r["op"].startswith("FMConvolution"):
            total += r["params"] + sum(records[i]["params"] for i in r["inputs"] if records[i]["op"] == "_copy")
    return total


def count_row(name, kwargs, size):
    """dict(params, params_stats, fb_params, gmacs, ref_gmacs, seconds) for one row, no forward pass."""
    import mxnet as mx
    t0 = time.time()
    entry = model_info(name)
    net = entry.build(**kwargs)
    sym = net if entry.kind == "symbol" else net(mx.sym.var("data"))
    tr, allp = flops.count_params(net, (1, 3, size, size))
    fb = _fb_params(flops.graph_records(sym, (1, 3, size, size)))
    rep = flops.count_macs(sym, (1, 3, size, size))
    return dict(params=tr / 1e6, params_stats=allp / 1e6, fb_params=fb / 1e6, gmacs=rep["macs"] / 1e9,
                ref_gmacs=rep["ref_macs"] / 1e9, seconds=time.time() - t0)


def judge(computed, check):
    """'matches' / 'matches (truncated)' / 'differs by +x' for one check (value in M or G)."""
    d = int(check["digits"])
    got, printed = computed[check["what"]], float(check["value"])
    unit = 10.0 ** -d
    if abs(round(got, d) - printed) < unit / 2:
        return True, "matches"
    if abs(math.floor(got * 10 ** d + 1e-9) / 10 ** d - printed) < unit / 2:
        return True, "matches (truncated)"
    return False, "differs by %+.*f" % (d + 1, got - printed)


UNITS = {"params": "M", "params_stats": "M +stats", "fb_params": "M FB op", "gmacs": "G MACs",
         "ref_gmacs": "G (utils/flops.py)"}


def build_table(rows, progress=True):
    """Count every row and judge its checks. Returns (results, unexplained_failures)."""
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover
        tqdm = None
    it = tqdm(rows, desc="models", unit="model", file=sys.stderr) if (progress and tqdm) else rows
    results, failures = [], []
    for label, name, kw, size, checks in it:
        if progress and tqdm:
            it.set_postfix_str(label[:30])
        c = count_row(name, kw, size)
        verdicts = []
        for ch in checks:
            ok, text = judge(c, ch)
            if not ok and ch.get("note"):
                text += " (known: %s)" % ch["note"]
            elif not ok:
                failures.append("%s: %s %.4g%s printed by %s, computed %.4f -> %s" % (
                    label, ch["what"], ch["value"], UNITS[ch["what"]], ch["source"], c[ch["what"]], text))
            verdicts.append((ch, ok or bool(ch.get("note")), text))
        results.append(dict(label=label, name=name, kwargs=kw, size=size, counts=c, verdicts=verdicts))
    return results, failures


def to_markdown(results, failures):
    lines = ["# Model table: parameters and multiply-adds against the papers",
             "",
             "Generated by `python tools/model_table.py` (do not edit by hand). Counts come from the MXNet graph "
             "(`mxrepro/flops.py`; shapes inferred symbolically, no forward pass): *params* = trainable "
             "(conv/dense weights and biases, BN gamma/beta), *+stats* adds BN running mean/var and frozen "
             "parameters; *GMACs* = conv/dense/FB-operator multiply-adds at the paper's input size "
             "(bias additions excluded); *ref G* = the AFF reference's `utils/flops.py` convention "
             "(conv bias additions, Dense as 2*in*out), which is what the AFF paper prints as GFLOPs "
             "(docs/reference/aff.md §2.7). FB operator: (F + 1)·C·kh·kw multiply-adds per class and output position (docs/reference/fbn.md §1.2).",
             "",
             "A printed number *matches* when the computed one rounds to it at the printed precision, or "
             "*matches (truncated)* when the paper truncated instead of rounding. *known:* marks an explained "
             "difference; anything else fails the tool.",
             "",
             "| model | registry name (kwargs) | input | params (M) | +stats (M) | GMACs | ref G | paper / reference numbers |",
             "|---|---|---|---|---|---|---|---|"]
    for r in results:
        c = r["counts"]
        kw = ", ".join("%s=%s" % kv for kv in sorted(r["kwargs"].items()))
        checks = "<br>".join("%s %s%s (%s): %s" % ("✓" if text.startswith("matches") else ("note" if ok else "✗"),
                                                   ch["value"], UNITS[ch["what"]],
                                                   ch["source"], text)
                             for ch, ok, text in r["verdicts"]) or "— (no printed size)"
        lines.append("| %s | `%s`%s | %d | %.3f | %.3f | %.3f | %.3f | %s |" % (
            r["label"], r["name"], (" (%s)" % kw) if kw else "", r["size"], c["params"], c["params_stats"],
            c["gmacs"], c["ref_gmacs"], checks))
    lines += ["", "Unexplained mismatches: %s" % ("none" if not failures else len(failures))]
    lines += ["- " + f for f in failures]
    return "\n".join(lines) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("--family", action="append", choices=FAMILIES,
                    help="only these families (repeatable; default: all of %s)" % ", ".join(FAMILIES))
    ap.add_argument("--models", nargs="+", metavar="NAME",
                    help="only these rows: registry names (every row of that name) or row labels")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                                  "docs", "model_table.md"),
                    help="markdown file to write (default: docs/model_table.md)")
    ap.add_argument("--check-only", action="store_true", help="compare and report, write no file")
    ap.add_argument("--quiet", action="store_true", help="no progress bar")
    args = ap.parse_args(argv)
    fams = tuple(args.family) if args.family else FAMILIES
    rows = all_rows(fams, args.models)
    if not rows:
        raise SystemExit("no model selected (families %s, models %s)" % (fams, args.models))
    results, failures = build_table(rows, progress=not args.quiet)
    for r in results:
        c = r["counts"]
        print("%-34s %7.3fM %7.3fM %7.3f GMACs  %s" % (r["label"][:34], c["params"], c["params_stats"], c["gmacs"],
                                                     "; ".join(t for _, _, t in r["verdicts"]) or "-"))
    if not args.check_only:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            f.write(to_markdown(results, failures))
        print("wrote %s" % args.out)
    if failures:
        print("\n%d unexplained mismatch(es):" % len(failures), file=sys.stderr)
        for f in failures:
            print("  " + f, file=sys.stderr)
        print("Fix the model, or add an explained note to EXTRA_CHECKS/KNOWN_NOTES in tools/model_table.py "
              "citing the reference section.", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
