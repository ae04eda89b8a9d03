# AFF (Attentional Feature Fusion, WACV 2021): the published command lines, one subcommand each.
# Sourced by run.sh, which provides ROOT, PY, log, register_cmd and cmd_setup. See docs/aff.md.
#
# Each subcommand replays the reference's command line (open-aff cmd_scripts.txt, aff.md §3) with
# only the machine-specific parts replaced:
#   DATA_DIR    ImageNet: train.rec/.idx + val.rec/.idx (tools/prepare_imagenet.py --formats gluon);
#               CIFAR: the tools/prepare_cifar.py folder (default data/imagenet, data/cifar100)
#   GPUS        comma list, empty = CPU (default: the published number of GPUs when that many are
#               visible, else every visible GPU, else the CPU; float16 falls back to float32 on a CPU)
#   BATCH_SIZE  total batch size (default: the published one; the scripts take it per device)
# Checkpoints and logs go to runs/aff/<name>/; running the same subcommand again resumes from the
# newest checkpoint (--auto-resume). Extra arguments are appended (argparse keeps the last value),
# e.g. --coarse-labels --orig-always-mixup for the paper's 20-class CIFAR protocol, --max-batches 2
# for a smoke run, --kv-store dist_sync under tools/launch.py.

aff_visible_gpus() {
  command -v nvidia-smi >/dev/null 2>&1 || { echo 0; return; }
  nvidia-smi -L 2>/dev/null | grep -c '^GPU' || true
}

# aff_gpus N: "0,...,N-1" when N GPUs are visible, else all visible ones, else "" (CPU).
aff_gpus() {
  if [ -n "${GPUS+x}" ]; then echo "$GPUS"; return; fi
  local want="$1" have; have="$(aff_visible_gpus)"
  [ "${have:-0}" -gt 0 ] 2>/dev/null || { echo ""; return; }
  [ "$have" -lt "$want" ] && want="$have"
  seq -s, 0 $((want - 1))
}

# aff_per_device TOTAL GPULIST: the per-device batch of the gluon-cv scripts
aff_per_device() {
  local total="$1" gpus="$2" n=1
  [ -n "$gpus" ] && n=$(echo "$gpus" | tr ',' '\n' | grep -c .)
  if [ $((total % n)) -ne 0 ]; then log "ERROR: BATCH_SIZE=$total is not divisible by the $n devices"; return 2; fi
  echo $((total / n))
}

# aff_run imagenet|cifar NAME NGPUS PER_DEVICE_BATCH ARGS...
aff_run() {
  local kind="$1" name="$2" ngpu="$3" pbs="$4"; shift 4
  local gpus bs script data out="$ROOT/runs/aff/$name"
  gpus="$(aff_gpus "$ngpu")"
  bs="$(aff_per_device "${BATCH_SIZE:-$((pbs * ngpu))}" "$gpus")" || return 2
  if [ "$kind" = imagenet ]; then
    script="$ROOT/imagenet/train_aff_imagenet.py"; data="${DATA_DIR:-$ROOT/data/imagenet}"
  else
    script="$ROOT/cifar/train_aff_cifar.py"; data="${DATA_DIR:-$ROOT/data/cifar100}"
  fi
  case " $* " in *" --summary "*) ;; *)
    if [ ! -d "$data" ]; then
      log "ERROR: no data at $data. Prepare it (python tools/prepare_cifar.py --dataset cifar100 --out data/cifar100,"
      log "       python tools/prepare_imagenet.py DATA_ROOT --out data/imagenet --formats gluon) or set DATA_DIR;"
      log "       append --summary to check the model only"
      return 2
    fi ;;
  esac
  cmd_setup
  local args=("$@")
  if [ -z "$gpus" ]; then
    log "no GPU visible: training on the CPU (set GPUS to choose devices)"
    local ncpu; ncpu="$(nproc 2>/dev/null || echo 2)"
    for i in "${!args[@]}"; do
      [ "${args[$i]}" = float16 ] && args[$i]=float32 && log "float16 -> float32 on the CPU"
      if [ "${args[$i]}" = -j ] && [ "${args[$((i + 1))]:-0}" -gt "$ncpu" ] 2>/dev/null; then
        args[$((i + 1))]="$ncpu"; log "-j capped to $ncpu data workers on the CPU"
      fi
    done
  fi
  mkdir -p "$out"
  if [ "$kind" = imagenet ]; then
    log "$(basename "$script") ${args[*]} --gpus '$gpus' --batch-size $bs --data-dir $data"
    "$PY" "$script" "${args[@]}" --gpus "$gpus" --batch-size "$bs" --data-dir "$data" --save-dir "$out" \
      --logging-file "$out/train.log" --auto-resume
  else
    log "$(basename "$script") ${args[*]} --gpus '$gpus' --batch-size $bs --data-dir $data"
    "$PY" "$script" "${args[@]}" --gpus "$gpus" --batch-size "$bs" --data-dir "$data" --save-dir "$out" \
      --logging-dir "$out" --auto-resume
  fi
}

# ---------------------------------------------------------------------- ImageNet (cmd_scripts.txt)
register_cmd aff-imagenet-resnet50 "AFF-ResNet-50, ImageNet 180 ep, 2 GPUs x 128 (paper top-1 err 20.9%; 30.3M, 4.3 GFLOPs)"
cmd_aff_imagenet_resnet50() {
  aff_run imagenet aff_resnet50 2 128 --askc-type ASKCFuse --mixup --mode hybrid --lr 0.075 --lr-mode cosine \
    --num-epochs 180 -j 48 --warmup-epochs 5 --dtype float16 --use-rec --last-gamma --no-wd --label-smoothing "$@"
}

register_cmd aff-imagenet-iaff-resnet50 "iAFF-ResNet-50, ImageNet 180 ep, 2 GPUs x 128 (paper top-1 err 20.4%; 35.1M)"
cmd_aff_imagenet_iaff_resnet50() {
  aff_run imagenet iaff_resnet50 2 128 --askc-type ResGlobLocaforGlobLocaCha --mixup --mode hybrid --lr 0.075 \
    --lr-mode cosine --num-epochs 180 -j 48 --warmup-epochs 5 --dtype float16 --use-rec --last-gamma --no-wd \
    --label-smoothing "$@"
}

register_cmd aff-imagenet-resnext50 "AFF-ResNeXt-50-32x4d, ImageNet 240 ep, 2 GPUs x 128 (paper top-1 err 20.8%; 29.9M)"
cmd_aff_imagenet_resnext50() {
  aff_run imagenet aff_resnext50_32x4d 2 128 --askc-type ASKCFuse --model resnext50_32x4d_askc --mode hybrid \
    --lr 0.075 --lr-mode cosine --num-epochs 240 -j 48 --use-rec --dtype float16 --warmup-epochs 5 --last-gamma \
    --no-wd --label-smoothing --mixup "$@"
}

register_cmd aff-imagenet-iaff-resnext50 "iAFF-ResNeXt-50-32x4d, ImageNet (HEAD recipe 240 ep, 4 GPUs x 128; paper top-1 err 20.2%; 34.7M)"
cmd_aff_imagenet_iaff_resnext50() {
  aff_run imagenet iaff_resnext50_32x4d 4 128 --model resnext --askc-type ResGlobLocaforGlobLocaCha --label-smoothing \
    --mixup --mixup-off-epoch 5 --last-gamma --no-wd --use-rec --num-epochs 240 --dtype float16 --save-frequency 1 "$@"
}

# ------------------------------------------------------------------------------ CIFAR-100 (paper v1)
register_cmd aff-cifar100-resnet32 "AFF-ResNet-32 (blocks 5, ct 4), CIFAR-100 400 ep (paper 89.3% = 20 coarse classes: add --coarse-labels --orig-always-mixup; fine-label reference 83.57%; 7.9M)"
cmd_aff_cifar100_resnet32() {
  aff_run cifar aff_resnet32_cifar100 1 128 --model resnet --dataset cifar100 --blocks 5 --channel-times 4 \
    --start-layer 1 --num-epochs 400 --mode hybrid -j 2 --wd 0.0001 --lr 0.2 --lr-decay 0.1 --lr-decay-epoch 300,350 "$@"
}

register_cmd aff-cifar100-resnext38 "AFF-ResNeXt-38-32x4d, CIFAR-100 640 ep, 3 GPUs x 128 (paper 90.3% = 20 coarse classes: add --coarse-labels --orig-always-mixup --last-gamma; 7.8M)"
cmd_aff_cifar100_resnext38() {
  aff_run cifar aff_resnext38_cifar100 3 128 --model resnext38_32x4d --dataset cifar100 --num-epochs 640 \
    --mode hybrid -j 28 --wd 0.0001 --lr 0.2 --lr-decay 0.1 --lr-decay-epoch 300,450 "$@"
}

register_cmd aff-bench "CPU images/s at 32x32: ResNet-32 vs AFF-ResNet-32 vs iAFF-ResNet-32 (paper FLOP overhead of AFF: +4.9% on ResNet-50)"
cmd_aff_bench() { cmd_setup; "$PY" "$ROOT/tools/bench_aff.py" "$@"; }
