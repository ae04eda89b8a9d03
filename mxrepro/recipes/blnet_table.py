"""bL-Net's published rows as data, read by mxrepro.recipes.runner.

The recipe is the official IBM/BigLittleNet ``imagenet-train.py`` (docs/reference/blnet.md §3; its command
line is ``python imagenet-train.py --data DIR --backbone_net blresnet -d 50 --alpha 2 --beta 4`` with 110
epochs, batch 256, lr 0.1); this project's script takes the same settings as ``imagenet/train_blnet.py
DATA_DIR -a ARCH --alpha A --beta B`` (its defaults are the official recipe). Numbers: the paper's
bL-ResNet-50 sweep (as quoted by the reproducibility-challenge repository) and the official README's
PyTorch retrains (docs/reference/blnet.md §2). Pure data.
"""

PAPER = dict(key="blnet", title="bL-Net (Chen et al.; ICLR 2019)",
             source="IBM/BigLittleNet @ dff4654 (imagenet-train.py, README)", digits=2)

_S = "imagenet/train_blnet.py"


def _row(name, row, args, number, official, params_m, gmacs, cost, notes=()):
    return dict(name=name, script=_S, row=row, dataset="ImageNet", data_dir="data/imagenet",
                metric="top-1 error (%)", number=number, official=official, params_m=params_m, gmacs=gmacs,
                command="DATA_DIR " + args + " --epochs 110 --batch-size 256 --lr 0.1", devices=2,
                original="python imagenet-train.py --data DATA_DIR " + _ORIG.get(name, ""),
                notes=list(notes), cost=cost)


_ORIG = {"blnet-r50-a2b2": "--backbone_net blresnet -d 50 --alpha 2 --beta 2",
         "blnet-r50-a2b4": "--backbone_net blresnet -d 50 --alpha 2 --beta 4",
         "blnet-r50-a4b2": "--backbone_net blresnet -d 50 --alpha 4 --beta 2",
         "blnet-r50-a4b4": "--backbone_net blresnet -d 50 --alpha 4 --beta 4",
         "blnet-r101": "--backbone_net blresnet -d 101 --alpha 2 --beta 4",
         "blnet-rx50": "--backbone_net blresnext -d 50 --basewidth 4 --cardinality 32 --alpha 2 --beta 4",
         "blnet-rx101": "--backbone_net blresnext -d 101 --basewidth 4 --cardinality 32 --alpha 2 --beta 4",
         "blnet-serx50": "--backbone_net blseresnext -d 50 --basewidth 4 --cardinality 32 --alpha 2 --beta 4",
         "blnet-serx101": "--backbone_net blseresnext -d 101 --basewidth 4 --cardinality 32 --alpha 2 --beta 4"}

ROWS = [
    _row("blnet-resnet50", "ResNet-50 baseline", "-a resnet50_v1b", 23.66, None, 25.56, 4.09,
         "~465 CPU-days (measured rate)", ["the baseline row of the paper's table, trained with the same recipe"]),
    _row("blnet-r50-a2b2", "bL-ResNet-50 (alpha 2, beta 2)", "-a bl_resnet50 --alpha 2 --beta 2", 22.72, None, 26.97,
         2.91, "~390 CPU-days"),
    _row("blnet-r50-a2b4", "bL-ResNet-50 (alpha 2, beta 4)", "-a bl_resnet50 --alpha 2 --beta 4", 22.69, 22.41, 26.69,
         2.86, "~380 CPU-days (measured rate)"),
    _row("blnet-r50-a4b2", "bL-ResNet-50 (alpha 4, beta 2)", "-a bl_resnet50 --alpha 4 --beta 2", 23.20, None, 26.31,
         2.49, "~330 CPU-days"),
    _row("blnet-r50-a4b4", "bL-ResNet-50 (alpha 4, beta 4)", "-a bl_resnet50 --alpha 4 --beta 4", 23.15, None, 26.24,
         2.48, "~330 CPU-days"),
    _row("blnet-r101", "bL-ResNet-101 (alpha 2, beta 4)", "-a bl_resnet101", None, 21.34, 41.85, 3.89,
         "~520 CPU-days (by multiply-adds)"),
    _row("blnet-rx50", "bL-ResNeXt-50-32x4d (alpha 2, beta 4)", "-a bl_resnext50_32x4d", None, 21.62, 26.19, 3.03,
         "~400 CPU-days or more (grouped convolutions)"),
    _row("blnet-rx101", "bL-ResNeXt-101-32x4d (alpha 2, beta 4)", "-a bl_resnext101_32x4d", None, 20.87, 41.51, 4.08,
         "~540 CPU-days or more"),
    _row("blnet-serx50", "bL-SEResNeXt-50-32x4d (alpha 2, beta 4)", "-a bl_seresnext50_32x4d", None, 21.44, 28.77,
         3.03, "~400 CPU-days or more", ["the official 'strong' augmentation (RandomRotation(10)) is on for "
                                        "bL-SEResNeXt (--strong-aug auto)"]),
    _row("blnet-serx101", "bL-SEResNeXt-101-32x4d (alpha 2, beta 4)", "-a bl_seresnext101_32x4d", None, 21.04, 45.88,
         4.08, "~540 CPU-days or more", ["--strong-aug auto (RandomRotation(10))"]),
]

TOOLS = [
    dict(name="blnet-viz", script="tools/viz.py", args="--model bl_resnet50",
         row="bL-ResNet-50 a2b4 architecture images and per-stage table (shapes, parameters, multiply-adds)"),
    dict(name="blnet-bench", script="tools/bench_blnet.py", args="",
         row="CPU images/s ResNet-50 vs bL-ResNet-50 a2b4 at 224 next to their multiply-add ratio"),
]

# Evaluation of the released alpha=2 beta=4 PyTorch checkpoints (IBM/BigLittleNet README, models/_model_urls.py):
# WEIGHTS=the downloaded .pth.tar, DATA_DIR=the ImageNet folder (val/ class folders or val.rec).
EVALS = [dict(name="blnet-eval-%s" % key, model=model, row="released %s (alpha 2, beta 4)" % label, official=err)
         for key, model, label, err in (
             ("r50", "bl_resnet50", "bL-ResNet-50", 22.41), ("r101", "bl_resnet101", "bL-ResNet-101", 21.34),
             ("rx50", "bl_resnext50_32x4d", "bL-ResNeXt-50-32x4d", 21.62),
             ("rx101", "bl_resnext101_32x4d", "bL-ResNeXt-101-32x4d", 20.87),
             ("serx50", "bl_seresnext50_32x4d", "bL-SEResNeXt-50-32x4d", 21.44),
             ("serx101", "bl_seresnext101_32x4d", "bL-SEResNeXt-101-32x4d", 21.04))]

