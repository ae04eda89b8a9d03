#!/usr/bin/env python
"""Train CIFAR baselines and Factorized Bilinear Networks (FBN, ICCV 2017) with the Module API.

Accepts every command line of the original cifar/run.sh and README unchanged, e.g.

  python cifar/train_cifar.py --gpus 2,3 --data-dir data/cifar100 --lr 0.1 --wd 0.0001 --batch-size 128 \\
      --data-shape 32 --num-epoches 200 --network resnet-small-fmconv --num-classes 100 --lr-step 100,150 \\
      --model-prefix cifar100_res18_fmconv --res-module-num 18 --fmconv-slowstart 3 --fmconv-drop 0.5 \\
      --fmconv-factor 20

Empty --gpus trains on the CPU; a re-run of the same command resumes. See --help, docs/fbn.md and
mxrepro/recipes/fbn.py.
"""
import mxrepro  # noqa: F401  (OMP_NUM_THREADS before mxnet; the FB operators load with it)
import symbols  # noqa: F401  (registers the FBN --network names)
from mxrepro.cli import run_main
from mxrepro.recipes import fbn

if __name__ == "__main__":
    run_main(lambda argv: fbn.main("cifar", argv, prog="python cifar/train_cifar.py"))
