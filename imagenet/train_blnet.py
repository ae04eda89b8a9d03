#!/usr/bin/env python
"""Train bL-ResNet / bL-ResNeXt / bL-SEResNeXt (Big-Little Net, ICLR 2019) or the ResNet-50 baseline on
ImageNet with the official IBM recipe, on the shared engine (docs/blnet.md; mxrepro/recipes/blnet.py).

    python imagenet/train_blnet.py DATA_DIR --epochs 4 --lr 0.1 --alpha 2 --beta 4 --workers 4 -a bl_resnet50
    python imagenet/train_blnet.py DATA_DIR -a bl_resnet50 --gpus 0,1,2,3 --batch-size 256   # the paper run

A re-run of the same command resumes from the latest checkpoint (``--resume fresh`` starts over).
"""
import mxrepro  # noqa: F401  (OMP_NUM_THREADS before mxnet)
from mxrepro.cli import run_main
from mxrepro.recipes import blnet

if __name__ == "__main__":
    run_main(blnet.main)
