#!/usr/bin/env bash
# The IMDB RLHF pipeline in three stages (docs/tutorials/imdb-pipeline.md):
#   1. a GPT-2 trained from scratch on the reviews        (alg=bc,           RUN 1-lm)
#   2. a sentiment classifier on that GPT-2's trunk         (alg=reward_model, RUN 2-classifier)
#   3. PPO on the GPT-2, rewarded by the classifier, once for each target label
#      (positive, and negative as the control)             (alg=ppo,          RUN 3-ppo-positive, 3-ppo-negative)
# Each stage reads the previous one's RUN/final/ (the last checkpoint's HF directories).
#
# usage: examples/imdb-pipeline/run.sh [--tiny | --cpu | --gpu] [--out DIR] [--tril BIN]
#                                      [--data CSV] [--device DEVICE] [-- OVERRIDE...]
#   --tiny    CI size: the 32-wide 1-layer GPT-2 trained on 600 reviews (under 3 minutes on 2 CPU cores)
#   --cpu     (default) the 32-wide 1-layer GPT-2 on all 2,499 reviews (about 8 minutes on 2 CPU cores)
#   --gpu     a 512-wide 6-layer GPT-2, longer runs, device=cuda (a binary built with --features cuda)
#   --out     where the run directories go (default: examples/imdb-pipeline/runs, where the cfgs'
#             model paths point, so a stage can also be rerun by hand without overrides)
#   --tril    the tril binary (default: `tril` on PATH, else target/release or target/debug)
#   --data    the reviews CSV (default: the shared Kaggle CSV, ../shared/data/imdb_reviews_2499.csv)
#   --device  overrides the size's device (cpu, cuda, cuda:1, wgpu, ...)
#   OVERRIDE  key=value overrides given to every stage (e.g. precision=bf16)
# The two PPO runs (stage 3) run side by side; their output goes to OUT/3-ppo-<label>.log.
# A stage whose RUN/final exists is not run again (remove its directory to redo it).
set -euo pipefail

# The whole script is one function, called on the last line: bash then reads it all before
# running, so editing this file while a pipeline runs cannot change what it does.
main() {
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
size=cpu out="$here/runs" tril="" data="" device=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --tiny) size=tiny ;;
    --cpu) size=cpu ;;
    --gpu) size=gpu ;;
    --out) out="$2"; shift ;;
    --tril) tril="$2"; shift ;;
    --data) data="$2"; shift ;;
    --device) device="$2"; shift ;;
    --) shift; break ;;
    -h|--help) sed -n '2,22p' "${BASH_SOURCE[0]}"; exit 0 ;;
    *) echo "run.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
extra=("$@")

if [[ -z "$tril" ]]; then
  if command -v tril >/dev/null 2>&1; then tril=tril
  elif [[ -x "$repo/target/release/tril" ]]; then tril="$repo/target/release/tril"
  elif [[ -x "$repo/target/debug/tril" ]]; then tril="$repo/target/debug/tril"
  else echo "run.sh: no tril binary; build one with \`cargo build --release -p tril\` or pass --tril" >&2; exit 2
  fi
fi

# Sizes. Every value below is a config override; the cfgs in cfgs/ hold the rest.
case "$size" in
  tiny)
    model=tiny dev=cpu
    lm=(task.args.max_rows=600 alg.args.batch_size=8 alg.args.eval_every=0 alg.optimizer.args.lr=5e-3
        sampling.max_prompt_len=16 sampling.max_gen_len=16)
    cls=(alg.args.epochs=2 alg.args.max_length=96 alg.args.eval_every=0)
    rl=(alg.args.eval_every=8) ;;
  cpu)
    model=tiny dev=cpu
    lm=()
    cls=()
    rl=() ;;
  gpu)
    model=gpu dev=cuda
    lm=(alg.args.n_epochs=3 alg.args.batch_size=32 sampling.max_prompt_len=64 sampling.max_gen_len=64)
    cls=(alg.args.epochs=3 alg.args.max_length=256 alg.args.max_prompt_length=128)
    rl=(alg.args.n_iters=60 alg.args.eval_every=10 sampling.batch_size_per_process=64 alg.args.trajectories_per_update=128
        sampling.max_prompt_len=64 sampling.max_gen_len=32) ;;
esac
dev="${device:-$dev}"
data_args=()
if [[ -n "$data" ]]; then
  data="$(cd "$(dirname "$data")" && pwd)/$(basename "$data")"
  data_args=(task.args.train_file="$data")
fi
mkdir -p "$out"
out="$(cd "$out" && pwd)"
cfgs=(--config-dir "$here/cfgs")
common=(device="$dev")

stage() {
  local name="$1"; shift
  if [[ -e "$out/$name/final" ]]; then
    echo "== $name: done already ($out/$name/final); remove $out/$name to redo it"
    return
  fi
  rm -rf "$out/$name"
  echo "== $name: $tril run ${*}"
  "$tril" run "${cfgs[@]}" "$@" run_dir="$out/$name"
}

lm_dir="$out/1-lm/final/policy"
cls_dir="$out/2-classifier/final/reward_model"

stage 1-lm task=lm alg=bc alg.args.model_name="$here/models/$model" "${data_args[@]}" "${common[@]}" \
  "${lm[@]}" "${extra[@]}"
cls_data=()
[[ -n "$data" ]] && cls_data=(task.args.datasets.0.path="$data")
stage 2-classifier task=sentiment alg=reward_model alg.args.model_name="$lm_dir" "${cls_data[@]}" "${common[@]}" \
  "${cls[@]}" "${extra[@]}"
pids=()
for label in positive negative; do
  ix=1; [[ "$label" == negative ]] && ix=0
  echo "== 3-ppo-$label: log in $out/3-ppo-$label.log"
  stage "3-ppo-$label" task=rlhf alg=ppo alg.policy.args.model_name="$lm_dir" alg.tokenizer.model_name="$lm_dir" \
    reward_fn.args.model_name="$cls_dir" reward_fn.args.label_ix=$ix "${data_args[@]}" "${common[@]}" \
    "${rl[@]}" "${extra[@]}" >"$out/3-ppo-$label.log" 2>&1 &
  pids+=($!)
done
failed=0
for i in 0 1; do
  if ! wait "${pids[$i]}"; then
    label=positive; [[ $i == 1 ]] && label=negative
    echo "run.sh: 3-ppo-$label failed; its last lines:" >&2
    tail -n 5 "$out/3-ppo-$label.log" >&2
    failed=1
  fi
done
[[ $failed == 0 ]] || exit 1

# The first and last evaluation of each stage (the full curves: RUN/plots/).
metric() { # FILE KEY first|last
  local line
  if [[ "$3" == first ]]; then line="$(head -n1 "$1")"; else line="$(tail -n1 "$1")"; fi
  grep -o "\"$2\":[-0-9.eE+]*" <<<"$line" | head -n1 | cut -d: -f2
}
echo
echo "== summary ($out)"
printf '%-34s %12s %12s\n' "stage: held-out metric" first last
f="$out/1-lm/val_split_metrics.jsonl"
printf '%-34s %12.4f %12.4f\n' "1-lm: val reference NLL" "$(metric "$f" supervised/reference_nll first)" "$(metric "$f" supervised/reference_nll last)"
f="$out/2-classifier/val_split_metrics.jsonl"
printf '%-34s %12.4f %12.4f\n' "2-classifier: val accuracy" "$(metric "$f" accuracy first)" "$(metric "$f" accuracy last)"
for label in positive negative; do
  f="$out/3-ppo-$label/val_split_metrics.jsonl"
  printf '%-34s %12.4f %12.4f\n' "3-ppo-$label: val P($label)" "$(metric "$f" semantic/learned_automodel_metric first)" "$(metric "$f" semantic/learned_automodel_metric last)"
  printf '%-34s %12.4f %12.4f\n' "3-ppo-$label: val KL (nats/seq)" "$(metric "$f" over_optimization/kl first)" "$(metric "$f" over_optimization/kl last)"
done
}

main "$@"
