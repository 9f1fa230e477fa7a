#!/usr/bin/env bash
# bench/gpu.sh - run `tril bench` on the GPU machine (one H200, CUDA, PyTorch, transformers,
# no Rust toolchain). Untested until a session with a GPU runs it.
#
# 1. Here (the machine with cargo), build the CUDA binary and compress it (must stay under
#    64 MiB, the device tool's carry limit):
#      mkdir -p bench/out
#      CARGO_TARGET_DIR=target/gpu-release cargo build --release -p tril --features cuda \
#        && xz -T2 -9 -c target/gpu-release/release/tril > bench/out/tril-cuda.xz
#      ls -l bench/out/tril-cuda.xz        # < 64 MiB
# 2. Device call (bench/out is git-ignored, so carry it explicitly):
#      run(command="bash bench/gpu.sh", carry=["bench/out"], timeout_s=540)
#    Everything lands in $OUT: gpu.log, bench_{f32,bf16}.{txt,jsonl}, coldwarm.txt, summary.txt.
#
# Budget: the whole script aims at < ~8 minutes (BUDGET seconds, default 470); every step gets
# its own timeout, capped by what is left, and a step that does not fit is skipped and logged.
# Env knobs: BUDGET, REPEATS (timed repeats of the tables, default 3), CACHE (kernel caches,
# default $OUT/cache), KEEP_CACHE=1 (keep the cache in $OUT; by default it is deleted at the
# end so that $OUT stays small).

set -uo pipefail

cd "$(dirname "$0")/.." || exit 1
OUT=${OUT:-$PWD/bench/out/gpu}
mkdir -p "$OUT"
LOG=$OUT/gpu.log
BUDGET=${BUDGET:-470}
REPEATS=${REPEATS:-3}
START=$SECONDS
SKIPPED=()

log() { echo "[gpu.sh +$((SECONDS - START))s] $*" | tee -a "$LOG" >&2; }
left() { echo $((BUDGET - (SECONDS - START))); }
# budget_for WANT: the timeout for a step that wants WANT seconds, or nothing if < 30 s are left.
budget_for() {
  local want=$1 rest
  rest=$(($(left) - 10))
  if ((rest < 30)); then return 1; fi
  if ((want < rest)); then echo "$want"; else echo "$rest"; fi
}

log "start: repo $PWD, OUT=$OUT, budget ${BUDGET}s"

# --- (1) the tril binary ------------------------------------------------------------------
XZ=bench/out/tril-cuda.xz
BIN_DIR=$(mktemp -d)
TRIL=$BIN_DIR/tril
if [[ ! -f $XZ ]]; then
  log "ERROR: $XZ missing (build it first, see the header of this script); nothing to run"
  exit 1
fi
if ! xz -d -c "$XZ" > "$TRIL"; then
  log "ERROR: could not decompress $XZ"
  exit 1
fi
chmod +x "$TRIL"
log "tril binary: $TRIL ($(du -h "$TRIL" | cut -f1))"

# --- (2) environment: CUDA libraries, one directory for every kernel cache ------------------
# Never add the CUDA stubs folder: its libcuda.so stub would shadow the real driver.
export LD_LIBRARY_PATH=/usr/local/nvidia/lib64:/usr/local/cuda/targets/x86_64-linux/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
CACHE=${CACHE:-$OUT/cache}
mkdir -p "$CACHE"
export CUDA_CACHE_PATH=$CACHE/nv          # the driver's PTX -> SASS JIT cache
export CUDA_CACHE_MAXSIZE=4294967296
export XDG_CACHE_HOME=$CACHE/xdg          # cubecl keeps its autotune cache under the user cache dir
log "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
log "CACHE=$CACHE"
log "gpu: $(nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader 2>&1 | head -1)"
log "python: $(python3 -c 'import torch, transformers; print("torch", torch.__version__, "cuda", torch.version.cuda, "transformers", transformers.__version__)' 2>&1 | tail -1)"
if ! "$TRIL" --help > /dev/null 2>> "$LOG"; then
  log "ERROR: $TRIL --help fails (missing shared library?); ldd follows"
  ldd "$TRIL" >> "$LOG" 2>&1
fi

# --- (3) the full tables, f32 then bf16 ------------------------------------------------------
bench_table() { # bench_table PRECISION WANT_SECONDS
  local prec=$1 t rc
  if ! t=$(budget_for "$2"); then
    log "SKIP bench $prec: only $(left)s left"
    SKIPPED+=("bench_$prec")
    return
  fi
  log "bench $prec (timeout ${t}s)"
  timeout --kill-after=10 "$t" "$TRIL" bench --device cuda --precision "$prec" --size full \
    --repeats "$REPEATS" --python python3 --json "$OUT/bench_$prec.jsonl" 2> "$OUT/bench_$prec.stderr" | tee "$OUT/bench_$prec.txt"
  rc=${PIPESTATUS[0]}
  if ((rc == 124 || rc == 137)); then
    log "bench $prec: TIMED OUT after ${t}s (partial results in $OUT/bench_$prec.*)"
    SKIPPED+=("bench_${prec}(timed out)")
  else
    log "bench $prec: exit $rc"
  fi
}
bench_table f32 200
bench_table bf16 170

# --- (4) first step cold vs warm ----------------------------------------------------------
# The same one-repeat `train` row twice against a fresh, empty cache directory: the first run
# compiles/autotunes every kernel, the second finds them in CUDA_CACHE_PATH / XDG_CACHE_HOME.
# `--no-torch` skips the PyTorch side, so the wall time is tril alone: process start, CUDA init,
# kernel compilation/autotuning, warm-up and the one timed step (its seconds: train_*.txt).
COLD=$CACHE/coldwarm
rm -rf "$COLD"
mkdir -p "$COLD"
timed_train() { # timed_train LABEL -> one line "LABEL wall_s rc" in coldwarm.txt
  local label=$1 t rc wall t0
  if ! t=$(budget_for 75); then
    log "SKIP train $label: only $(left)s left"
    SKIPPED+=("train_$label")
    return
  fi
  log "train $label (timeout ${t}s)"
  t0=$(date +%s.%N)
  if [[ -x /usr/bin/time ]]; then
    CUDA_CACHE_PATH=$COLD/nv XDG_CACHE_HOME=$COLD/xdg \
      /usr/bin/time -f %e -o "$OUT/time_$label.txt" \
      timeout --kill-after=10 "$t" "$TRIL" bench --rows train --device cuda --size full --repeats 1 --no-torch \
      > "$OUT/train_$label.txt" 2> "$OUT/train_$label.stderr"
    rc=$?
    wall=$(tail -1 "$OUT/time_$label.txt" 2> /dev/null)
  else
    CUDA_CACHE_PATH=$COLD/nv XDG_CACHE_HOME=$COLD/xdg \
      timeout --kill-after=10 "$t" "$TRIL" bench --rows train --device cuda --size full --repeats 1 --no-torch \
      > "$OUT/train_$label.txt" 2> "$OUT/train_$label.stderr"
    rc=$?
    wall=$(python3 -c "print(round($(date +%s.%N) - $t0, 2))" 2> /dev/null || echo "?")
  fi
  echo "$label wall_s=$wall rc=$rc" | tee -a "$OUT/coldwarm.txt"
  log "train $label: ${wall}s (exit $rc)"
}
timed_train cold
timed_train warm
log "cold/warm cache size: $(du -sh "$COLD" 2> /dev/null | cut -f1)"

# --- (5) summary ---------------------------------------------------------------------------
{
  echo "== f32 =="
  cat "$OUT/bench_f32.txt" 2> /dev/null
  echo "== bf16 =="
  cat "$OUT/bench_bf16.txt" 2> /dev/null
  echo "== first train step, cold vs warm cache (wall s of 'tril bench --rows train --repeats 1 --no-torch') =="
  cat "$OUT/coldwarm.txt" 2> /dev/null
  echo "== skipped: ${SKIPPED[*]:-none}"
  echo "== total $((SECONDS - START))s"
} > "$OUT/summary.txt"
cat "$OUT/summary.txt" >&2
log "kernel caches: $(du -sh "$CACHE" 2> /dev/null | cut -f1)"
if [[ ${KEEP_CACHE:-0} != 1 && $CACHE == "$OUT"/* ]]; then
  rm -rf "$CACHE"
  log "removed $CACHE (KEEP_CACHE=1 keeps it)"
fi
rm -rf "$BIN_DIR"
log "done; skipped: ${SKIPPED[*]:-none}"
