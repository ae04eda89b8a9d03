#!/usr/bin/env python
"""Train ImageNet ResNet / Inception-BN baselines and FBNs (ICCV 2017) with the Module API.

Accepts every command line of the original imagenet/run.sh and README unchanged (including the
stray --log-file), e.g.

  python imagenet/train_imagenet.py --gpus 0,1,2,3,4,5,6,7 --model-prefix resnet34-fmconv \\
      --network resnet-fmconv --batch-size 256 --aug-level 2 --num-epoches 120 --frequent 50 --lr 0.1 \\
      --wd 0.0001 --lr-step 60,75,90 --fmconv-drop 0.5 --fmconv-slowstart 1 --depth 34 --fmconv-factor 50

Data: train_256_q90.rec (--aug-level 1) or train_480_q90.rec (2, 3) and val_256_q90.rec in
--data-dir. See --help, docs/fbn.md and mxrepro/recipes/fbn.py.
"""
import mxrepro  # noqa: F401  (OMP_NUM_THREADS before mxnet; the FB operators load with it)
import symbols  # noqa: F401  (registers the FBN --network names)
from mxrepro.cli import run_main
from mxrepro.recipes import fbn

if __name__ == "__main__":
    run_main(lambda argv: fbn.main("imagenet", argv, prog="python imagenet/train_imagenet.py"))
