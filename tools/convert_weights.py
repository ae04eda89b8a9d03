#!/usr/bin/env python
"""Convert a released checkpoint into a .params file for this project's Gluon networks (docs/weights.md).

    # official bL-Net (IBM/BigLittleNet, PyTorch; read without PyTorch). --model defaults to the
    # checkpoint's 'arch' entry or its file name
    python tools/convert_weights.py ImageNet-bLResNet-50-a2-b4.pth.tar bl_resnet50.params
    python tools/convert_weights.py --family blnet --model bl_seresnext101_32x4d SRC.pth.tar OUT.params
    # official AFF (YimianDai/open-aff, Gluon .params; paper-era or HEAD layout, detected)
    python tools/convert_weights.py --family aff --model aff_resnet50 SRC.params OUT.params
    python tools/convert_weights.py --model aff_cifar_resnet --kw blocks=5 --kw channel_times=4 SRC.params OUT.params

Then ``net = get_model(NAME, **KW); net.load_parameters(OUT)`` (the summary prints NAME and KW).
Bad input (unreadable file, forbidden pickle global, names or shapes that do not correspond, an output
that cannot be written, a checkpoint of this project that fails the CRC recorded beside it) exits with
status 2 and a one-line message (``-v`` prints every offending name).
"""
import argparse
import json
import os
import sys

import mxrepro  # noqa: F401  (sets OMP_NUM_THREADS before mxnet is imported)
from mxrepro.ckptfile import OVERRIDE_FLAG, mx_error_line
from mxrepro.cli import parse_kw
from mxrepro.weights import CheckpointError, WeightMapError, convert_checkpoint


def build_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("src", metavar="SRC", help="official checkpoint: bL-Net .pth/.pth.tar or open-aff .params")
    p.add_argument("out", metavar="OUT.params", help="output file (save_parameters format)")
    p.add_argument("--family", choices=("blnet", "aff"), default=None,
                   help="source family (default: from --model, else from the file: PyTorch -> blnet, .params -> aff)")
    p.add_argument("--model", default=None, help="registry name, e.g. bl_resnet50, aff_resnet50 (bL-Net: default "
                                                 "from the checkpoint's arch entry or file name)")
    p.add_argument("--kw", action="append", default=[], metavar="KEY=VALUE",
                   help="a get_model keyword, repeatable (e.g. --kw num_classes=10 --kw widths=64,128,256,512); "
                        "values are Python literals")
    p.add_argument("--layout", choices=("auto", "paper", "head"), default="auto",
                   help="open-aff layout: paper-era (7x7 stem, strided shortcuts) or HEAD (deep stem, avg-down); "
                        "default auto")
    p.add_argument("--state-dict-key", default=None, help="entry of a PyTorch checkpoint holding the state dict "
                                                          "(default: the dict itself, 'state_dict' or 'model')")
    p.add_argument("--no-verify", action="store_true", help="skip loading the output back into a fresh network")
    p.add_argument(OVERRIDE_FLAG, action="store_true",
                   help="convert a checkpoint of this project even when it does not match the size and CRC-32 recorded "
                        "in the .json beside it (with a warning); released weights have no such record")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("-v", "--verbose", action="store_true", help="on a mismatch, list every name")
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        kw = parse_kw(args.kw)
        rep = convert_checkpoint(args.src, args.out, model_name=args.model, family=args.family, model_kwargs=kw,
                                 layout=None if args.layout == "auto" else args.layout,
                                 state_dict_key=args.state_dict_key, verify=not args.no_verify,
                                 verify_crc=not args.ignore_checksum)
    except WeightMapError as e:
        print("error: " + (str(e) if args.verbose else e.summary()), file=sys.stderr)
        return 2
    except (CheckpointError, OSError, KeyError, ValueError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
        print("error: " + " ".join(str(msg).split()), file=sys.stderr)
        return 2
    except RuntimeError as e:  # MXNetError: its message without the C++ stack trace
        print("error: %s: %s" % (args.src, mx_error_line(e)), file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(rep, indent=1, sort_keys=True, default=str))
        return 0
    kw_txt = ", ".join("%s=%r" % kv for kv in sorted(rep["model_kwargs"].items()))
    src_txt = rep["format"] + (", %s layout" % rep["layout"] if rep.get("layout") else "")
    if rep.get("ignored"):
        src_txt += ", %d num_batches_tracked ignored" % rep["ignored"]
    print("source:     %s (%s, %d tensors)" % (rep["source"], src_txt, rep["tensors"]))
    print("model:      get_model(%r%s)" % (rep["model"], (", " + kw_txt) if kw_txt else ""))
    print("mapped:     %d tensors -> %d parameters (%s values)" % (rep["tensors"], rep["mapped"],
                                                                   format(rep["parameters"], ",")))
    print("output:     %s%s" % (rep["output"], "  (loaded back: OK)" if rep.get("verified") else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
