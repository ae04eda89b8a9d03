"""FBN's published commands as data (one row per table row of the paper), read by mxrepro.recipes.runner.

Source of the command lines: lyttonhao/Factorized-Bilinear-Network @ 511009f, ``cifar/run.sh``,
``imagenet/run.sh`` and the README (docs/reference/fbn.md §5.2, §5.4); numbers: the paper's tables as
the README copies them (§7). The original gives no CIFAR-10 or ResNet-1001 command: those rows reuse
the CIFAR-100 command with ``--num-classes 10`` / ``--res-module-num 111`` (noted per row).
Pure data: importing it loads nothing else.
"""

PAPER = dict(key="fbn", title="FBN (Li, Wang, Liu, Hou; ICCV 2017)",
             source="lyttonhao/Factorized-Bilinear-Network @ 511009f (cifar/run.sh, imagenet/run.sh, README)")

_C = "--gpus 2,3 --data-dir /mnt/hdd/lytton/mx_data/cifar-100 "
CIFAR = {  # name suffix -> (paper row, original command after --gpus/--data-dir, params (M, paper), C-100 err, C-10 err)
    "inception": ("Inception-BN", "--lr 0.2 --wd 0.0001 --batch-size 128 --data-shape 32 --num-epoches 400 "
                  "--network inception-bn-small --num-classes 100 --lr-step 200,300 --model-prefix cifar100_inception",
                  1.7, 24.70, 5.82),
    "inception-fbn": ("Inception-BN-FBN", "--lr 0.2 --wd 0.0001 --batch-size 128 --data-shape 32 --num-epoches 400 "
                      "--network inception-bn-small-fmconv --num-classes 100 --lr-step 200,300 "
                      "--model-prefix cifar100_inception_fmconv --fmconv-slowstart 3  --fmconv-drop 0.5 "
                      "--fmconv-factor 20 ", 2.4, 21.98, 5.58),
    "resnet164": ("ResNet-164", "--lr 0.1 --wd 0.0001 --batch-size 128 --data-shape 32 --num-epoches 200 "
                  "--network resnet-small --num-classes 100 --lr-step 100,150 --model-prefix cifar100_res18 --warmup "
                  "--res-module-num 18", 1.7, 23.64, 5.30),
    "resnet164-fbn": ("ResNet-164-FBN", "--lr 0.1 --wd 0.0001 --batch-size 128 --data-shape 32 --num-epoches 200 "
                      "--network resnet-small-fmconv --num-classes 100 --lr-step 100,150 "
                      "--model-prefix cifar100_res18_fmconv  --res-module-num 18  --fmconv-slowstart 3 "
                      "--fmconv-drop 0.5 --fmconv-factor 20", 2.2, 22.50, 5.00),
    "resnet1001": ("ResNet-1001", None, 10.2, 20.50, 4.04),
    "resnet1001-fbn": ("ResNet-1001-FBN", None, 10.7, 19.67, 4.09),
}
# the original has no ResNet-1001 line: the ResNet-164 commands with n = 111 (9n + 2 = 1001)
_DERIVED = {"resnet1001": "resnet164", "resnet1001-fbn": "resnet164-fbn"}
# idle 2-core CPU estimates (docs/reproduce.md "How the time estimates were made")
COST = {"inception": "~88 h", "inception-fbn": "~97 h", "resnet164": "~40 h (measured rate)",
        "resnet164-fbn": "~44 h (measured rate)", "resnet1001": "~10 days", "resnet1001-fbn": "~10.5 days"}


def _cifar_rows():
    rows = []
    for classes in (100, 10):
        for key, (row, cmd, params, e100, e10) in CIFAR.items():
            notes = []
            if cmd is None:
                cmd = CIFAR[_DERIVED[key]][1].replace("--res-module-num 18", "--res-module-num 111").replace(
                    "cifar100_res18", "cifar100_res111")
                notes.append("no original command: the ResNet-164 line with --res-module-num 111")
            if classes == 10:
                cmd = cmd.replace("--num-classes 100", "--num-classes 10").replace("cifar100_", "cifar10_")
                notes.append("no original CIFAR-10 command: the CIFAR-100 line with --num-classes 10")
            rows.append(dict(
                name="fbn-c%d-%s" % (classes, key), script="cifar/train_cifar.py", row=row,
                dataset="CIFAR-%d" % classes, data_dir="data/cifar%d" % classes,
                metric="test error (%)", number=e100 if classes == 100 else e10, digits=2, params_m=params,
                command=_C + cmd, devices=2, notes=notes, cost=COST[key]))
    # README L72: the older 100-epoch schedule of ResNet-164-FBN
    rows.append(dict(name="fbn-c100-resnet164-fbn-100ep", script="cifar/train_cifar.py", row="ResNet-164-FBN",
                     dataset="CIFAR-100", data_dir="data/cifar100", metric="test error (%)", number=22.50, digits=2,
                     params_m=2.2,
                     command=_C + "--lr 0.1 --wd 0.0001 --batch-size 128 --data-shape 32 --num-epoches 100 "
                     "--network resnet-small-fmconv --num-classes 100 --lr-step 50,75 "
                     "--model-prefix cifar100_res18_fmconv22-3  --res-module-num 18  --fmconv-slowstart 3 "
                     "--fmconv-drop 0.5 --fmconv-factor 20", devices=2,
                     notes=["the README's older schedule (100 epochs, steps 50,75)"], cost="~22 h"))
    # the B-CNN baseline (symbol_inception-bn-small-bilinear.py): no published command or number
    rows.append(dict(name="fbn-c100-bcnn", script="cifar/train_cifar.py", row="B-CNN baseline (bilinear pooling)",
                     dataset="CIFAR-100", data_dir="data/cifar100", metric="test error (%)", number=None,
                     params_m=12.939,
                     command="--gpus 2,3 --data-dir data/cifar100 --lr 0.1 --wd 0.0001 --batch-size 128 --data-shape 32 "
                     "--num-epoches 50 --network inception-bn-small-bilinear --num-classes 100 --lr-step 30,40 "
                     "--model-prefix cifar100_bcnn --freeze "
                     "--pretrained runs/fbn/fbn-c100-inception/model/cifar100_inception-best.params", devices=2,
                     notes=["no original command or number: fine-tunes the bilinear-pooling head (cifar_*; --freeze) "
                            "on the Inception-BN-small baseline of fbn-c100-inception"], cost="~10 h"))
    return rows


_I = "--gpus 0,1,2,3,4,5,6,7  --model-prefix resnet34-fmconv --network resnet-fmconv --batch-size 256 --aug-level 2  " \
     "--num-epoches 120 --frequent 50  --lr 0.1 --wd 0.0001   --lr-step 60,75,90  --fmconv-drop 0.5  " \
     "--fmconv-slowstart 1 --depth 34 --fmconv-factor 50"
_INC = "--gpus 4,5,6,7  --model-prefix inception-bn-fmconv --network inception-bn-fmconv --batch-size 128 --aug-level 2 " \
       "--log-file log/inception-bn-fmconv.log --num-epoches 55 --frequent 50  --lr 0.1 --wd 0.0001  " \
       "--fmconv-slowstart 1 --fmconv-factor 20 --fmconv-drop 0.5 --lr-step 60,75,90"
IMAGENET = [
    dict(name="fbn-imagenet-resnet34-fbn", row="ResNet-34-FBN (F=50)", number=(26.3, 8.4), command=_I, devices=8,
         cost="~620 CPU-days"),
    dict(name="fbn-imagenet-resnet34-fbn-aug1", row="ResNet-34-FBN: extra --aug-level 1 epochs", number=(26.3, 8.4),
         command=_I + " --aug-level 1 --num-epoches 130 --retrain --model-load-epoch 120", devices=8,
         notes=["README L83: about 10 more epochs at --aug-level 1 after the main run (120 -> 130)"],
         cost="~50 CPU-days"),
    dict(name="fbn-imagenet-inception-fbn", row="Inception-BN-FBN (F=20)", number=(26.4, 8.4), command=_INC, devices=4,
         notes=["as published: 55 epochs, so the LR never decays (docs/reference/fbn.md §5.4)"],
         cost="~175 CPU-days"),
    dict(name="fbn-imagenet-inception-fbn-aug1", row="Inception-BN-FBN: extra --aug-level 1 epochs",
         number=(26.4, 8.4), command=_INC + " --aug-level 1 --num-epoches 65 --retrain --model-load-epoch 55",
         devices=4, notes=["10 more --aug-level 1 epochs (55 -> 65); the authors' hand schedule is undocumented"],
         cost="~30 CPU-days"),
    dict(name="fbn-imagenet-resnet34", row="ResNet-34", number=(27.7, 9.1),
         command="--gpus 0,1,2,3,4,5,6,7 --model-prefix resnet34 --network resnet --batch-size 256 --aug-level 2 "
                 "--num-epoches 120 --frequent 50 --lr 0.1 --wd 0.0001 --lr-step 60,75,90 --depth 34", devices=8,
         notes=["no original command: the ResNet-34-FBN schedule without the FB head"], cost="~460 CPU-days"),
    dict(name="fbn-imagenet-resnet50-fbn", row="ResNet-50-FBN", number=(24.0, 7.1),
         command=_I.replace("--model-prefix resnet34-fmconv", "--model-prefix resnet50-fmconv").replace(
             "--depth 34", "--depth 50"), devices=8,
         notes=["no original command: the ResNet-34-FBN line at depth 50 with F=50 (the paper's F is undocumented)"],
         cost="~1,160 CPU-days"),
]
for _r in IMAGENET:
    _r.update(script="imagenet/train_imagenet.py", dataset="ImageNet", data_dir="data/imagenet",
              metric="top-1 / top-5 error (%)", digits=1)
    _r.setdefault("notes", [])

TOOLS = [
    dict(name="fbn-params", script="tools/param_count.py", args="",
         row="parameter counts of every FBN network (the paper's params column)"),
    dict(name="fbn-bench", script="tools/bench_train.py", args="",
         row="CPU training images/s, ResNet-164 vs ResNet-164-FBN (target: FBN step <= 1.20x)"),
]

ROWS = _cifar_rows() + IMAGENET
