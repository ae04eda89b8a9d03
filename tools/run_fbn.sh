# FBN (Factorized Bilinear Models, ICCV 2017): the published commands, one subcommand each.
# Sourced by run.sh, which provides ROOT, PY, log, register_cmd and cmd_setup. See docs/fbn.md.
#
# Each subcommand replays the original command line (cifar/run.sh, imagenet/run.sh, README) with
# only the machine-specific parts replaced:
#   DATA_DIR    folder with the .rec files (default data/cifar100, data/cifar10 or data/imagenet,
#               as written by tools/prepare_cifar.py / tools/prepare_imagenet.py)
#   GPUS        comma list, empty = CPU (default: the published number of GPUs if that many are
#               visible, else every visible GPU, else the CPU)
#   BATCH_SIZE  total batch size (default: the published one)
# Checkpoints go to model/<prefix>-NNNN.params (+ .states), logs to log/<prefix>.log; running the
# same subcommand again resumes from the newest checkpoint. Extra arguments are appended to the
# training command (argparse keeps the last value), e.g. --reference-compat, --dry-run, --seed 1
# (use GPUS, not --gpus, to pick devices).

fbn_visible_gpus() {
  command -v nvidia-smi >/dev/null 2>&1 || { echo 0; return; }
  nvidia-smi -L 2>/dev/null | grep -c '^GPU' || true
}

# fbn_gpus N: "0,...,N-1" when N GPUs are visible, else all visible ones, else "" (CPU).
fbn_gpus() {
  if [ -n "${GPUS+x}" ]; then echo "$GPUS"; return; fi
  local want="$1" have; have="$(fbn_visible_gpus)"
  [ "${have:-0}" -gt 0 ] 2>/dev/null || { echo ""; return; }
  [ "$have" -lt "$want" ] && want="$have"
  seq -s, 0 $((want - 1))
}

# fbn_run cifar|imagenet NGPUS DEFAULT_DATA_DIR ARGS...
fbn_run() {
  local kind="$1" ngpu="$2" ddir="$3"; shift 3
  local data="${DATA_DIR:-$ROOT/$ddir}" gpus script
  gpus="$(fbn_gpus "$ngpu")"
  if [ "$kind" = cifar ]; then script="$ROOT/cifar/train_cifar.py"; else script="$ROOT/imagenet/train_imagenet.py"; fi
  case " $* " in *" --dry-run "*) ;; *)
    if [ ! -d "$data" ]; then
      log "ERROR: no data at $data. Prepare it (python tools/prepare_cifar.py --dataset cifar100 --out data/cifar100,"
      log "       python tools/prepare_imagenet.py DATA_ROOT --out data/imagenet) or set DATA_DIR; --dry-run checks the command only"
      return 2
    fi ;;
  esac
  cmd_setup
  [ -z "$gpus" ] && log "no GPU visible: training on the CPU (set GPUS to choose devices)"
  log "$(basename "$script") --gpus '$gpus' --data-dir $data $*"
  "$PY" "$script" --gpus "$gpus" --data-dir "$data" --output-dir "$ROOT" "$@"
}

fbn_bs() { echo "${BATCH_SIZE:-$1}"; }

# ------------------------------------------------------------------- CIFAR (cifar/run.sh, README)
# $1 = 10|100; the CIFAR-100 lines are the published ones, CIFAR-10 uses the same recipe.
fbn_c_inception() {
  local c="$1"; shift
  fbn_run cifar 2 "data/cifar$c" --lr 0.2 --wd 0.0001 --batch-size "$(fbn_bs 128)" --data-shape 32 --num-epoches 400 \
    --network inception-bn-small --num-classes "$c" --lr-step 200,300 --model-prefix "cifar${c}_inception" "$@"
}
fbn_c_inception_fbn() {
  local c="$1"; shift
  fbn_run cifar 2 "data/cifar$c" --lr 0.2 --wd 0.0001 --batch-size "$(fbn_bs 128)" --data-shape 32 --num-epoches 400 \
    --network inception-bn-small-fmconv --num-classes "$c" --lr-step 200,300 --model-prefix "cifar${c}_inception_fmconv" \
    --fmconv-slowstart 3 --fmconv-drop 0.5 --fmconv-factor 20 "$@"
}
# $2 = res-module-num (18: ResNet-164, 111: ResNet-1001)
fbn_c_resnet() {
  local c="$1" n="$2"; shift 2
  fbn_run cifar 2 "data/cifar$c" --lr 0.1 --wd 0.0001 --batch-size "$(fbn_bs 128)" --data-shape 32 --num-epoches 200 \
    --network resnet-small --num-classes "$c" --lr-step 100,150 --model-prefix "cifar${c}_res${n}" --warmup \
    --res-module-num "$n" "$@"
}
fbn_c_resnet_fbn() {
  local c="$1" n="$2"; shift 2
  fbn_run cifar 2 "data/cifar$c" --lr 0.1 --wd 0.0001 --batch-size "$(fbn_bs 128)" --data-shape 32 --num-epoches 200 \
    --network resnet-small-fmconv --num-classes "$c" --lr-step 100,150 --model-prefix "cifar${c}_res${n}_fmconv" \
    --res-module-num "$n" --fmconv-slowstart 3 --fmconv-drop 0.5 --fmconv-factor 20 "$@"
}

register_cmd fbn-c100-inception "CIFAR-100 Inception-BN-small baseline, 400 ep (paper err 24.70%, 1.7M)"
cmd_fbn_c100_inception() { fbn_c_inception 100 "$@"; }
register_cmd fbn-c100-inception-fbn "CIFAR-100 Inception-BN-small-FBN, F=20, 400 ep (paper err 21.98%, 2.4M)"
cmd_fbn_c100_inception_fbn() { fbn_c_inception_fbn 100 "$@"; }
register_cmd fbn-c100-resnet164 "CIFAR-100 ResNet-164 baseline, --warmup + 200 ep (paper err 23.64%, 1.7M)"
cmd_fbn_c100_resnet164() { fbn_c_resnet 100 18 "$@"; }
register_cmd fbn-c100-resnet164-fbn "CIFAR-100 ResNet-164-FBN, F=20, 200 ep, steps 100,150 (paper err 22.50%, 2.2M)"
cmd_fbn_c100_resnet164_fbn() { fbn_c_resnet_fbn 100 18 "$@"; }
register_cmd fbn-c100-resnet164-fbn-100ep "CIFAR-100 ResNet-164-FBN, README's older 100 ep, steps 50,75 (paper err 22.50%)"
cmd_fbn_c100_resnet164_fbn_100ep() {
  fbn_run cifar 2 data/cifar100 --lr 0.1 --wd 0.0001 --batch-size "$(fbn_bs 128)" --data-shape 32 --num-epoches 100 \
    --network resnet-small-fmconv --num-classes 100 --lr-step 50,75 --model-prefix cifar100_res18_fmconv22-3 \
    --res-module-num 18 --fmconv-slowstart 3 --fmconv-drop 0.5 --fmconv-factor 20 "$@"
}
register_cmd fbn-c100-resnet1001 "CIFAR-100 ResNet-1001 baseline (n=111), ResNet-164 recipe (paper err 20.50%, 10.2M)"
cmd_fbn_c100_resnet1001() { fbn_c_resnet 100 111 "$@"; }
register_cmd fbn-c100-resnet1001-fbn "CIFAR-100 ResNet-1001-FBN (n=111), ResNet-164-FBN recipe (paper err 19.67%, 10.7M)"
cmd_fbn_c100_resnet1001_fbn() { fbn_c_resnet_fbn 100 111 "$@"; }

register_cmd fbn-c10-inception "CIFAR-10 Inception-BN-small baseline, CIFAR-100 recipe (paper err 5.82%)"
cmd_fbn_c10_inception() { fbn_c_inception 10 "$@"; }
register_cmd fbn-c10-inception-fbn "CIFAR-10 Inception-BN-small-FBN, CIFAR-100 recipe (paper err 5.58%)"
cmd_fbn_c10_inception_fbn() { fbn_c_inception_fbn 10 "$@"; }
register_cmd fbn-c10-resnet164 "CIFAR-10 ResNet-164 baseline, CIFAR-100 recipe (paper err 5.30%)"
cmd_fbn_c10_resnet164() { fbn_c_resnet 10 18 "$@"; }
register_cmd fbn-c10-resnet164-fbn "CIFAR-10 ResNet-164-FBN, CIFAR-100 recipe (paper err 5.00%)"
cmd_fbn_c10_resnet164_fbn() { fbn_c_resnet_fbn 10 18 "$@"; }
register_cmd fbn-c10-resnet1001 "CIFAR-10 ResNet-1001 baseline, ResNet-164 recipe (paper err 4.04%)"
cmd_fbn_c10_resnet1001() { fbn_c_resnet 10 111 "$@"; }
register_cmd fbn-c10-resnet1001-fbn "CIFAR-10 ResNet-1001-FBN, ResNet-164-FBN recipe (paper err 4.09%, worse than baseline)"
cmd_fbn_c10_resnet1001_fbn() { fbn_c_resnet_fbn 10 111 "$@"; }

# ----------------------------------------------------------------- ImageNet (imagenet/run.sh, README)
fbn_in_resnet34_fbn() {
  fbn_run imagenet 8 data/imagenet --model-prefix resnet34-fmconv --network resnet-fmconv \
    --batch-size "$(fbn_bs 256)" --aug-level 2 --num-epoches 120 --frequent 50 --lr 0.1 --wd 0.0001 \
    --lr-step 60,75,90 --fmconv-drop 0.5 --fmconv-slowstart 1 --depth 34 --fmconv-factor 50 "$@"
}
fbn_in_inception_fbn() {
  fbn_run imagenet 4 data/imagenet --model-prefix inception-bn-fmconv --network inception-bn-fmconv \
    --batch-size "$(fbn_bs 128)" --aug-level 2 --log-file "$ROOT/log/inception-bn-fmconv.log" --num-epoches 55 \
    --frequent 50 --lr 0.1 --wd 0.0001 --fmconv-slowstart 1 --fmconv-factor 20 --fmconv-drop 0.5 \
    --lr-step 60,75,90 "$@"
}
register_cmd fbn-imagenet-resnet34-fbn "ImageNet ResNet-34-FBN, F=50, 120 ep, steps 60,75,90 (paper top-1/5 err 26.3/8.4%)"
cmd_fbn_imagenet_resnet34_fbn() { fbn_in_resnet34_fbn "$@"; }
register_cmd fbn-imagenet-resnet34-fbn-aug1 "ResNet-34-FBN: the README's ~10 extra --aug-level 1 epochs (120 -> 130) after the main run"
cmd_fbn_imagenet_resnet34_fbn_aug1() {
  fbn_in_resnet34_fbn --aug-level 1 --num-epoches 130 --retrain --model-load-epoch 120 "$@"
}
register_cmd fbn-imagenet-inception-fbn "ImageNet Inception-BN-FBN, F=20, as published: 55 ep, LR never decays (paper err 26.4/8.4%)"
cmd_fbn_imagenet_inception_fbn() { fbn_in_inception_fbn "$@"; }
register_cmd fbn-imagenet-inception-fbn-aug1 "Inception-BN-FBN: 10 extra --aug-level 1 epochs (55 -> 65; the authors' hand schedule is undocumented)"
cmd_fbn_imagenet_inception_fbn_aug1() {
  fbn_in_inception_fbn --aug-level 1 --num-epoches 65 --retrain --model-load-epoch 55 "$@"
}
register_cmd fbn-imagenet-resnet34 "ImageNet ResNet-34 baseline, the FBN schedule without FB head (paper err 27.7/9.1%)"
cmd_fbn_imagenet_resnet34() {
  fbn_run imagenet 8 data/imagenet --model-prefix resnet34 --network resnet --batch-size "$(fbn_bs 256)" \
    --aug-level 2 --num-epoches 120 --frequent 50 --lr 0.1 --wd 0.0001 --lr-step 60,75,90 --depth 34 "$@"
}
register_cmd fbn-imagenet-resnet50-fbn "ImageNet ResNet-50-FBN, ResNet-34-FBN recipe with F=50 (F of the paper run undocumented; err 24.0/7.1%)"
cmd_fbn_imagenet_resnet50_fbn() { fbn_in_resnet34_fbn --model-prefix resnet50-fmconv --depth 50 "$@"; }

# --------------------------------------------------------------------------------------- tools
register_cmd fbn-params "parameter counts of every FBN network (CIFAR-100 F=20: 1.739->2.251M, 1.683->2.355M, 10.43->10.94M)"
cmd_fbn_params() { cmd_setup; "$PY" "$ROOT/tools/param_count.py" "$@"; }
register_cmd fbn-bench "CPU training images/s, ResNet-164 vs ResNet-164-FBN (target: FBN step <= 1.20x)"
cmd_fbn_bench() { cmd_setup; "$PY" "$ROOT/tools/bench_train.py" "$@"; }
