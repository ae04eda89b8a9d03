#!/usr/bin/env python
"""Top-1 / top-5 error of a checkpoint on a validation set, with each paper's evaluation protocol.

    # official bL-Net weights (PyTorch .pth read without PyTorch) on ImageNet val, torchvision protocol
    python tools/evaluate.py --model bl_resnet50 --weights ImageNet-bLResNet-50-a2-b4.pth.tar \\
        --data DATA/val --gpus 0 --json bl_resnet50.json --csv results.csv
    # open-aff weights (gluon-cv protocol; a paper-era or HEAD layout is read off the file)
    python tools/evaluate.py --model aff_resnet50 --weights AFF-ResNet-50-best.params --data DATA/val.rec --gpus 0
    # an FBN run of imagenet/train_imagenet.py (Module API: model/<prefix>-symbol.json + -NNNN.params)
    python tools/evaluate.py --model resnet-fmconv --weights model/resnet34-fmconv-0120.params \\
        --data DATA/val_256_q90.rec --gpus 0,1 --kw depth=34 --kw fmconv_factor=50
    # a checkpoint of this project's training engine: model, keywords, classes come from its .json
    python tools/evaluate.py --weights runs/aff/RUN/RUN-best.params --data data/cifar100/test.rec

Protocols (--protocol, default from the model's family; docs/weights.md, "Evaluating checkpoints"):
  blnet      short side int(S/0.875+0.5) bilinear (PIL by default, --backend opencv), centre crop S at
             round((H-S)/2), /255, ImageNet mean/std (torchvision: the official bL-Net evaluation)
  aff        short side ceil(S/0.875) bilinear (OpenCV), centre crop S at floor((H-S)/2), gluon-cv mean/std
             (.rec: ImageRecordIter as gluon-cv --use-rec; folder: its DataLoader transforms)
  aff-cifar  no resize, ToTensor, CIFAR mean/std (open-aff train_cifar.py; the 32x32 Gluon models)
  fbn        short side 256 (a no-op on the original's val_256_q90.rec; none for 32x32 networks), centre
             crop S, mean subtraction only (the FBN scripts' ImageRecordIter)

--data: a .rec (its .idx beside it; checked with mxrepro.integrity first) or an image folder
ROOT/<class>/<image> (class i = the i-th sorted folder). Output: a progress bar (stderr), a one-line
result, and with --json / --csv one row (columns: mxrepro.evaluate.ROW_FIELDS). Bad input (missing
file, corrupt data, weights that do not fit the model, a classes mismatch, a checkpoint of this project
that fails the size/CRC-32 recorded in the .json beside it) exits with status 2 and a one-line error.
"""
import argparse

import mxrepro  # noqa: F401  (sets OMP_NUM_THREADS before mxnet is imported)
from mxrepro.ckptfile import OVERRIDE_FLAG
from mxrepro.cli import HelpFormatter, parse_kw, run_main
from mxrepro.evaluate import BACKENDS, PROTOCOLS


def build_parser():
    doc = __doc__.split("\n\n")
    p = argparse.ArgumentParser(description=doc[0], epilog="\n\n".join(doc[1:]),
                                formatter_class=type("F", (HelpFormatter, argparse.RawDescriptionHelpFormatter), {}))
    p.add_argument("--model", default=None, help="registry name, e.g. bl_resnet50, aff_resnet50, resnet-small-fmconv "
                                                 "(default: from the training engine's .json beside --weights)")
    p.add_argument("--weights", required=True, metavar="FILE",
                   help="this project's .params, an official bL-Net .pth/.pth.tar, an open-aff .params, or an FBN "
                        "Module checkpoint <prefix>-NNNN.params (with <prefix>-symbol.json)")
    p.add_argument("--data", required=True, metavar="VAL", help="validation .rec (with .idx) or image folder")
    p.add_argument("--protocol", choices=PROTOCOLS, default=None, help="evaluation protocol (default: from the "
                                                                        "model's family)")
    p.add_argument("--batch-size", type=int, default=50, help="images per forward pass")
    p.add_argument("--workers", type=int, default=4, help="decoding workers (DataLoader processes; ImageRecordIter "
                                                          "threads)")
    p.add_argument("--gpus", default="", help="GPU ids such as 0,1 (default: the CPU)")
    p.add_argument("--num-classes", type=int, default=None,
                   help="outputs of the head (default: the checkpoint's .json, else the data's class count; a "
                        "checkpoint with another head size is detected and used)")
    p.add_argument("--input-size", type=int, default=None, help="crop size S (default: the checkpoint's .json, else "
                                                                "the model's, 224 or 32)")
    p.add_argument("--resize", type=int, default=None,
                   help="short side before the crop, 0 = none (default: the protocol's, see above)")
    p.add_argument("--backend", choices=BACKENDS, default=None,
                   help="decode + resize library of --protocol blnet (default pil, the official pipeline's)")
    p.add_argument("--kw", action="append", default=[], metavar="KEY=VALUE",
                   help="a builder keyword, repeatable (e.g. --kw alpha=4, --kw res_module_num=18); values are Python "
                        "literals; added to (and overriding) the checkpoint .json's, none by default")
    p.add_argument("--rebuild", action="store_true",
                   help="FBN: build the symbol by name (with --kw) even when <prefix>-symbol.json exists")
    p.add_argument("--limit", type=int, default=None, metavar="N", help="only the first N images (file order)")
    p.add_argument("--json", default=None, metavar="OUT.json", help="write the result row as a JSON object")
    p.add_argument("--csv", default=None, metavar="OUT.csv", help="append the result row (header on a new file)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument(OVERRIDE_FLAG, action="store_true",
                   help="evaluate a checkpoint of this project even when it does not match the size and CRC-32 "
                        "recorded in the .json beside it (with a warning); released weights have no such record")
    return p


def main(argv=None):
    import symbols  # noqa: F401  (registers the FBN symbol networks: --model resnet-small-fmconv ...)
    from mxrepro.evaluate import append_csv, check_csv, evaluate, write_json
    args = build_parser().parse_args(argv)
    try:
        kw = parse_kw(args.kw)
    except ValueError as e:
        from mxrepro.engine.config import UsageError
        raise UsageError(str(e))
    check_csv(args.csv)  # before a long run, not after it
    row = evaluate(model=args.model, weights=args.weights, data=args.data, protocol=args.protocol,
                   batch_size=args.batch_size, workers=args.workers, gpus=args.gpus, num_classes=args.num_classes,
                   input_size=args.input_size, resize=args.resize, backend=args.backend, kwargs=kw,
                   rebuild=args.rebuild, limit=args.limit, progress=not args.no_progress,
                   verify_crc=not args.ignore_checksum)
    if args.json:
        write_json(row, args.json)
    if args.csv:
        append_csv(row, args.csv)
    return 0


if __name__ == "__main__":
    run_main(main)
