#!/usr/bin/env python
"""Train AFF / iAFF (or plain) CIFAR ResNet / ResNeXt: open-aff's ``train_cifar.py`` command lines on the
shared engine (docs/aff.md; docs/reference/aff.md §3.2).

    python cifar/train_aff_cifar.py --model resnet --dataset cifar100 --blocks 5 --channel-times 4 \\
        --gpus 0 --start-layer 1 --num-epochs 400 --mode hybrid -j 2 --batch-size 128 --wd 0.0001 \\
        --lr 0.2 --lr-decay 0.1 --lr-decay-epoch 300,350

Data: ``--data-dir`` (default data/<dataset>) in the CIFAR layout of tools/prepare_cifar.py /
tools/prepare_digits.py (``train.rec``/``test.rec`` or ``images/{train,test}/<class>/``). The
reference's bugs are fixed by default; ``--orig-*`` and ``--coarse-labels`` restore them (see --help
and mxrepro/recipes/aff.py).
"""
import mxrepro  # noqa: F401  (OMP_NUM_THREADS before mxnet)
from mxrepro.cli import run_main
from mxrepro.recipes import aff

if __name__ == "__main__":
    run_main(aff.main_cifar)
