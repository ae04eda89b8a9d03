"""AFF's published commands as data, read by mxrepro.recipes.runner.

Source of the command lines: YimianDai/open-aff ``cmd_scripts.txt`` (docs/reference/aff.md §3); numbers:
the paper's Table 5 (ImageNet) and the CIFAR table of arXiv v1 / the old README, whose accuracies are on
the 20 CIFAR-100 superclasses (docs/reference/aff.md §6). Pure data.
"""

PAPER = dict(key="aff", title="AFF (Dai et al.; WACV 2021)", source="YimianDai/open-aff (cmd_scripts.txt)", digits=1)

_IMAGENET = "imagenet/train_aff_imagenet.py"
_CIFAR = "cifar/train_aff_cifar.py"

ROWS = [
    dict(name="aff-imagenet-resnet50", script=_IMAGENET, row="AFF-ResNet-50", dataset="ImageNet",
         data_dir="data/imagenet", metric="top-1 error (%)", number=20.9, params_m=30.3, devices=2,
         command="--askc-type ASKCFuse --mixup --mode hybrid --lr 0.075 --lr-mode cosine --num-epochs 180 "
                 "--batch-size 128 --num-gpus 2 -j 48 --warmup-epochs 5 --dtype float16 --use-rec --last-gamma --no-wd "
                 "--label-smoothing --save-dir params_resnet50_v1b_best_AFF --logging-file resnet50_v1b_best_AFF.log",
         notes=[], cost="~800 - 1,200 CPU-days"),
    dict(name="aff-imagenet-iaff-resnet50", script=_IMAGENET, row="iAFF-ResNet-50", dataset="ImageNet",
         data_dir="data/imagenet", metric="top-1 error (%)", number=20.4, params_m=35.1, devices=2,
         command="--askc-type ResGlobLocaforGlobLocaCha --mixup --mode hybrid --lr 0.075 --lr-mode cosine "
                 "--num-epochs 180 --batch-size 128 --num-gpus 2 -j 48 --warmup-epochs 5 --dtype float16 --use-rec "
                 "--last-gamma --no-wd --label-smoothing --save-dir params_resnet50_v1b_best_iAFF "
                 "--logging-file resnet50_v1b_best_iAFF.log", notes=[], cost="~850 - 1,600 CPU-days"),
    dict(name="aff-imagenet-resnext50", script=_IMAGENET, row="AFF-ResNeXt-50-32x4d", dataset="ImageNet",
         data_dir="data/imagenet", metric="top-1 error (%)", number=20.8, params_m=29.9, devices=2,
         command="--askc-type ASKCFuse --model resnext50_32x4d_askc --mode hybrid --lr 0.075 --lr-mode cosine "
                 "--num-epochs 240 --batch-size 128 --num-gpus 2 -j 48 --use-rec --dtype float16 --warmup-epochs 5 "
                 "--last-gamma --no-wd --label-smoothing --mixup --save-dir params_resnext50_32x4d_askc_best "
                 "--logging-file resnext50_32x4d_askc_best.log", notes=[], cost="~1,100 - 1,600 CPU-days"),
    dict(name="aff-imagenet-iaff-resnext50", script=_IMAGENET, row="iAFF-ResNeXt-50-32x4d", dataset="ImageNet",
         data_dir="data/imagenet", metric="top-1 error (%)", number=20.2, params_m=34.7, devices=4,
         command="--model resnext --askc-type ResGlobLocaforGlobLocaCha --label-smoothing --mixup --auto_aug "
                 "--last-gamma --no-wd --use-rec --save-dir params_iaff_resnext50_aff --logging-file "
                 "iaff_resnext50_aff.log --save-frequency 1",
         notes=["the HEAD recipe: 240 epochs (--num-epochs from the script's HEAD default), 4 GPUs x 128; --auto_aug is "
                "ignored with --use-rec, as in the reference"], cost="~1,150 - 2,150 CPU-days"),
    dict(name="aff-cifar100-resnet32", script=_CIFAR, row="AFF-ResNet-32 (ct 4)", dataset="CIFAR-100",
         data_dir="data/cifar100", metric="accuracy (%)", number=89.3, params_m=5.0, devices=1,
         command="--model resnet --dataset cifar100 --blocks 5 --channel-times 4 --gpus 0 --start-layer 1 "
                 "--num-epochs 400 --mode hybrid -j 2 --batch-size 128 --wd 0.0001 --lr 0.2 --lr-decay 0.1 "
                 "--lr-decay-epoch 300,350",
         notes=["89.3% is on the 20 coarse classes: add --coarse-labels --orig-always-mixup for the paper's protocol "
                "(the fine-label reference log reaches 83.57%)", "the printed 5.0M cannot come from blocks 5, "
                "channel-times 4 (7.897M as coded; docs/model_table.md)"], cost="~11.5 days (measured rate)"),
    dict(name="aff-cifar100-resnext38", script=_CIFAR, row="AFF-ResNeXt-38-32x4d", dataset="CIFAR-100",
         data_dir="data/cifar100", metric="accuracy (%)", number=90.3, params_m=7.8, devices=3,
         command="--model resnext38_32x4d --dataset cifar100 --gpus 0,1,2 --num-epochs 640 --mode hybrid -j 28 "
                 "--batch-size 128 --wd 0.0001 --lr 0.2 --lr-decay 0.1 --lr-decay-epoch 300,450",
         notes=["90.3% is on the 20 coarse classes: add --coarse-labels --orig-always-mixup --last-gamma"],
         cost="~18 days or more (grouped convolutions)"),
]

TOOLS = [
    dict(name="aff-bench", script="tools/bench_aff.py", args="",
         row="CPU images/s at 32x32: ResNet-32 vs AFF-ResNet-32 vs iAFF-ResNet-32 next to their multiply-adds"),
]

# Evaluation of an AFF checkpoint (open-aff's released .params or a run of this project): WEIGHTS=the file,
# DATA_DIR=the ImageNet folder (val.rec or val/ class folders).
EVALS = [dict(name="aff-eval-%s" % key, model=model, row="%s checkpoint" % label, number=err, digits=1)
         for key, model, label, err in (("r50", "aff_resnet50", "AFF-ResNet-50", 20.9),
                                        ("iaff-r50", "iaff_resnet50", "iAFF-ResNet-50", 20.4),
                                        ("rx50", "aff_resnext50_32x4d", "AFF-ResNeXt-50-32x4d", 20.8),
                                        ("iaff-rx50", "iaff_resnext50_32x4d", "iAFF-ResNeXt-50-32x4d", 20.2))]

