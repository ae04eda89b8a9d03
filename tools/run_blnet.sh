# bL-Net (Big-Little Net, ICLR 2019): the published ImageNet commands. Sourced by run.sh, which
# provides ROOT, PY, log and register_cmd. See docs/blnet.md.
#
# Recipe (official IBM code, reference/blnet.md §3): 110 epochs, Nesterov SGD momentum 0.9,
# lr 0.1 for batch 256 (scaled linearly with BATCH_SIZE), cosine to 0 stepped per epoch, wd 1e-4 on
# all parameters, RandomResizedCrop 224 + ColorJitter 0.4 + flip; eval resize 256 / centre crop 224.
#
# Environment: DATA_DIR (default data/imagenet: train/ and val/ class folders, or train.rec/val.rec
# from `python tools/prepare_imagenet.py DATA_ROOT --out DIR --formats gluon`), GPUS (comma list,
# empty = CPU), BATCH_SIZE (total, default 256), EPOCHS (default 110), WORKERS (default 8).
# Extra arguments go to imagenet/train_blnet.py (e.g. --resume, --kv-store dist_sync).

blnet_train() {
  local name="$1"; shift
  local data="${DATA_DIR:-$ROOT/data/imagenet}"
  if [ ! -d "$data" ]; then
    log "ERROR: ImageNet not found at $data. Set DATA_DIR to a folder with train/ and val/ class folders"
    log "       (or train.rec/val.rec made by: python tools/prepare_imagenet.py DATA_ROOT --out DIR --formats gluon)"
    return 2
  fi
  cmd_setup
  # defaults first, so arguments given on the command line win (argparse keeps the last value)
  "$PY" "$ROOT/imagenet/train_blnet.py" "$data" \
    --epochs "${EPOCHS:-110}" --batch-size "${BATCH_SIZE:-256}" --workers "${WORKERS:-8}" \
    --gpus "${GPUS-}" --save-dir "$ROOT/runs/blnet/$name" "$@"
}

register_cmd blnet-r50-a2b2 "bL-ResNet-50 alpha=2 beta=2, ImageNet 110 ep (paper top-1 err 22.72%; 26.97M, 2.91 GMACs)"
cmd_blnet_r50_a2b2() { blnet_train bl_resnet50_a2b2 -a bl_resnet50 --alpha 2 --beta 2 "$@"; }

register_cmd blnet-r50-a2b4 "bL-ResNet-50 alpha=2 beta=4, ImageNet 110 ep (paper top-1 err 22.69%, official retrain 22.41%; 26.69M, 2.86 GMACs)"
cmd_blnet_r50_a2b4() { blnet_train bl_resnet50_a2b4 -a bl_resnet50 --alpha 2 --beta 4 "$@"; }

register_cmd blnet-r50-a4b2 "bL-ResNet-50 alpha=4 beta=2, ImageNet 110 ep (paper top-1 err 23.20%; 26.31M, 2.49 GMACs)"
cmd_blnet_r50_a4b2() { blnet_train bl_resnet50_a4b2 -a bl_resnet50 --alpha 4 --beta 2 "$@"; }

register_cmd blnet-r50-a4b4 "bL-ResNet-50 alpha=4 beta=4, ImageNet 110 ep (paper top-1 err 23.15%; 26.24M, 2.48 GMACs)"
cmd_blnet_r50_a4b4() { blnet_train bl_resnet50_a4b4 -a bl_resnet50 --alpha 4 --beta 4 "$@"; }

register_cmd blnet-resnet50 "ResNet-50 baseline of the bL-Net table, same 110-ep recipe (paper top-1 err 23.66%; 25.56M, 4.09 GMACs)"
cmd_blnet_resnet50() { blnet_train resnet50_baseline -a resnet50_v1b "$@"; }

register_cmd blnet-viz "bL-ResNet-50 a2b4 architecture image + per-stage table (2.86 GMACs, 26,694,568 params)"
cmd_blnet_viz() { cmd_setup; "$PY" "$ROOT/tools/viz.py" --model bl_resnet50 "$@"; }

register_cmd blnet-bench "CPU images/s ResNet-50 vs bL-ResNet-50 a2b4 at 224 (multiply-add ratio 2.86/4.09 = 0.70)"
cmd_blnet_bench() { cmd_setup; "$PY" "$ROOT/tools/bench_blnet.py" "$@"; }
