#!/usr/bin/env python
"""Train CIFAR baselines and Factorized Bilinear Networks (FBN, ICCV 2017) with the Module API.

Accepts every command line of the original cifar/run.sh and README unchanged, e.g.

  python cifar/train_cifar.py --gpus 2,3 --data-dir data/cifar100 --lr 0.1 --wd 0.0001 --batch-size 128 \\
      --data-shape 32 --num-epoches 200 --network resnet-small-fmconv --num-classes 100 --lr-step 100,150 \\
      --model-prefix cifar100_res18_fmconv --res-module-num 18 --fmconv-slowstart 3 --fmconv-drop 0.5 \\
      --fmconv-factor 20

Empty --gpus trains on the CPU. See --help, docs/fbn.md and mxrepro/fbn_train.py.
"""
import os
import sys


import mxrepro  # noqa: E402,F401  (sets OMP_NUM_THREADS and loads the FB operator before mxnet)
from mxrepro.fbn_train import main  # noqa: E402

if __name__ == "__main__":
    from mxrepro.engine.dist import fail_fast  # a crashed worker ends the job instead of hanging
    with fail_fast():
        sys.exit(main("cifar"))
