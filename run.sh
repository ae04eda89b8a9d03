#!/usr/bin/env bash
# One entry point for the project: set-up, tests, the demo and every published command.
#   ./run.sh setup     create .venv, install pinned requirements, build the FB operator library
#   ./run.sh test      setup if needed, then the test suite (what CI runs)
#   ./run.sh demo      setup, embedded dataset, baseline + FBN training, table and curves
#   ./run.sh help      list every subcommand with the paper number it should reach
#   ./run.sh NAME      one published command (mxrepro/recipes/*_table.py), e.g. fbn-c100-resnet164-fbn
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$ROOT"
VENV="${VENV:-$ROOT/.venv}"
PY="$VENV/bin/python"
PYTHON_BIN="${PYTHON:-python3.11}"
# MXNet uses only half the cores unless this is set before it is imported.
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-$(nproc 2>/dev/null || echo 2)}"

log() { printf '[run.sh] %s\n' "$*" >&2; }

have_root() { [ "$(id -u)" = 0 ] || command -v sudo >/dev/null 2>&1; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# System packages: oneDNN (fast sgemm for the FB operator; without it the operator falls back to
# the OpenBLAS inside the MXNet wheel) and graphviz (`dot`, for tools/viz.py images).
install_system_deps() {
  local missing=()
  [ -f /usr/include/dnnl.h ] || [ -f /usr/include/oneapi/dnnl/dnnl.h ] || missing+=(libdnnl-dev)
  command -v dot >/dev/null 2>&1 || missing+=(graphviz)
  [ ${#missing[@]} -eq 0 ] && return 0
  if command -v apt-get >/dev/null 2>&1 && have_root; then
    log "installing system packages: ${missing[*]}"
    as_root apt-get update -qq >/dev/null 2>&1 || true
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null \
      || log "WARNING: apt-get could not install ${missing[*]} (the FB operator then uses OpenBLAS; viz images need graphviz)"
  else
    log "WARNING: cannot install ${missing[*]} (no apt-get/root). The FB operator will use OpenBLAS; install graphviz for viz images."
  fi
}

cmd_setup() {
  if [ ! -x "$PY" ]; then
    command -v "$PYTHON_BIN" >/dev/null 2>&1 || { log "ERROR: $PYTHON_BIN not found (Python 3.11 is required; set PYTHON=...)"; exit 1; }
    log "creating $VENV with $PYTHON_BIN"
    "$PYTHON_BIN" -m venv "$VENV"
  fi
  local stamp="$VENV/.requirements.sha"
  local want; want="$(cat requirements.txt requirements-dev.txt pyproject.toml | sha1sum | cut -d' ' -f1)"
  if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    log "installing pinned requirements and the mxrepro package (editable)"
    "$PY" -m pip install -q --disable-pip-version-check -r requirements-dev.txt
    "$PY" -m pip install -q --disable-pip-version-check --no-deps -e "$ROOT"
    echo "$want" > "$stamp"
  fi
  # cuRAND headers for the CUDA build of operators/ (lib_api.h includes them under nvcc)
  if command -v nvcc >/dev/null 2>&1 && ! "$PY" -c "import nvidia.cu13" >/dev/null 2>&1 \
     && ! "$PY" -m pip show -q nvidia-curand >/dev/null 2>&1; then
    log "nvcc found: installing cuRAND headers (nvidia-curand) for the CUDA build"
    "$PY" -m pip install -q --disable-pip-version-check --no-deps nvidia-curand==10.4.0.35 \
      || log "WARNING: could not install nvidia-curand; 'make -C operators gpu' needs cuRAND headers"
  fi
  install_system_deps
  # builds operators/build/libfbop.so only when it is missing or older than its sources (and says so then)
  "$PY" -c "import mxrepro.ops"
}

cmd_test() {
  cmd_setup
  "$PY" -m pytest -q "$@"
}

cmd_demo() {
  cmd_setup
  "$PY" tools/demo.py "$@"
}

# The published commands are data (mxrepro/recipes/*_table.py); the runner resolves them. It imports no
# MXNet, so help works before set-up with any Python 3.
recipes() { PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" "${PY_ANY:-$PY}" -m mxrepro.recipes.runner "$@"; }

cmd_help() {
  cat <<EOF
usage: ./run.sh COMMAND [args]

  setup          create .venv, install pinned requirements and the package, build operators/ (idempotent)
  test [ARGS]    setup, then run the test suite (extra ARGS go to pytest)
  demo           train a baseline and an FBN network on the embedded digits dataset
  help           this list
EOF
  [ -x "$PY" ] || PY_ANY="$PYTHON_BIN"
  recipes help
}

dry_run_asked() { local a; for a in "$@"; do [ "$a" = --dry-run ] && return 0; done; return 1; }

# --dry-run of the built-in subcommands: say what would run, change nothing
dry_builtin() {
  case "$1" in
    setup) log "dry run: would create $VENV with $PYTHON_BIN if missing, install requirements-dev.txt and the package (editable) when they changed, and build operators/build/libfbop.so when older than its sources" ;;
    test)  log "dry run: would run setup, then $PY -m pytest -q ${*:2}" ;;
    demo)  log "dry run: would run setup, then $PY tools/demo.py ${*:2}" ;;
  esac
  log "dry run: nothing run, nothing written"
}

main() {
  local cmd="${1:-help}"; shift || true
  if dry_run_asked "$@"; then
    case "$cmd" in setup|test|demo) local rest=(); for a in "$@"; do [ "$a" = --dry-run ] || rest+=("$a"); done
      dry_builtin "$cmd" "${rest[@]}"; exit 0 ;; esac
  fi
  case "$cmd" in
    setup) cmd_setup
      "$PY" -c "import mxrepro.ops as o; print('FB operator library: %s (sgemm: %s)' % (o._loaded_path, o.gemm_backend()))" ;;
    test|demo|help) "cmd_$cmd" "$@" ;;
    -h|--help) cmd_help ;;
    *)
      [ -x "$PY" ] || PY_ANY="$PYTHON_BIN"
      if recipes names | grep -x -- "$cmd" >/dev/null; then
        cmd_setup
        PY_ANY="$PY" recipes run "$cmd" "$@"
      else
        recipes suggest "$cmd" || true; exit 2
      fi ;;
  esac
}
main "$@"
