#!/usr/bin/env python
"""Train ImageNet ResNet / Inception-BN baselines and FBNs (ICCV 2017) with the Module API.

Accepts every command line of the original imagenet/run.sh and README unchanged (including the
stray --log-file), e.g.

  python imagenet/train_imagenet.py --gpus 0,1,2,3,4,5,6,7 --model-prefix resnet34-fmconv \\
      --network resnet-fmconv --batch-size 256 --aug-level 2 --num-epoches 120 --frequent 50 --lr 0.1 \\
      --wd 0.0001 --lr-step 60,75,90 --fmconv-drop 0.5 --fmconv-slowstart 1 --depth 34 --fmconv-factor 50

Data: train_256_q90.rec (--aug-level 1) or train_480_q90.rec (2, 3) and val_256_q90.rec in
--data-dir. See --help, docs/fbn.md and mxrepro/fbn_train.py.
"""
import os
import sys


import mxrepro  # noqa: E402,F401  (sets OMP_NUM_THREADS and loads the FB operator before mxnet)
from mxrepro.fbn_train import main  # noqa: E402

if __name__ == "__main__":
    from mxrepro.engine.dist import fail_fast  # a crashed worker ends the job instead of hanging
    with fail_fast():
        sys.exit(main("imagenet"))
