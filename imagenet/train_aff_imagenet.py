#!/usr/bin/env python
"""Train AFF / iAFF (or plain) ResNet / ResNeXt on ImageNet: open-aff's ``train_imagenet.py`` command lines
(gluon-cv flags) on the shared engine (docs/aff.md; docs/reference/aff.md §3.1).

    python imagenet/train_aff_imagenet.py --askc-type ASKCFuse --mixup --mode hybrid --lr 0.075 \\
        --lr-mode cosine --num-epochs 180 --batch-size 128 --num-gpus 2 -j 48 --warmup-epochs 5 \\
        --dtype float16 --use-rec --last-gamma --no-wd --label-smoothing \\
        --save-dir params_resnet50_v1b_best_AFF --logging-file resnet50_v1b_best_AFF.log

Architecture: the paper-era v1b layout (7x7 stem, strided 1x1 shortcut), fusion r=16 in stages
>= --start-layer (3). ``--deep-stem --avg-down`` give the reference HEAD's ResNet-D-style variant.
Data: ``--use-rec`` reads ``--rec-train/--rec-val`` (default DATA_DIR/{train,val}.rec + .idx) with
ImageRecordIter; otherwise ``--data-dir`` holds ``train/<class>/`` and ``val/<class>/`` folders.
"""
import mxrepro  # noqa: F401  (OMP_NUM_THREADS before mxnet)
from mxrepro.cli import run_main
from mxrepro.recipes import aff

if __name__ == "__main__":
    run_main(aff.main_imagenet)
