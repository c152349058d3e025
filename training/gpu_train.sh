#!/usr/bin/env bash
# Train wml-ncct candidates on a lent GPU machine: fill the training cache (1.12.0's heads, 80 analytic + 120 atlas,
# under the caller's $SVDMARK_TRAIN_* draws), then train every candidate at once, each drawing its crops in its share
# of 14 worker processes (training.crop_stream), for the minutes left before DEADLINE (epoch seconds).
#   bash training/gpu_train.sh DEST DEADLINE "VERSION ARGS..." ["VERSION ARGS..."]
# Each candidate gets 1.12.0's data options (below) plus its own ARGS; models land in DEST/<version>, logs in DEST.
# N_TRAIN, N_ATLAS, WORKERS, GEN_WORKERS, DEVICE and PYTHON override the defaults (a dry run on a CPU machine).
#   1.19.0/1.19.1 (2026-12-04-wml-gpu-scratch.md), with SVDMARK_TRAIN_ATROPHY_NCCT=0.75 SVDMARK_TRAIN_WML_SPREAD=0.5:
#   bash training/gpu_train.sh $OUT $((T0+555)) "1.19.0 --lr 1e-3 --channels 16" "1.19.1 --lr 1e-3 --channels 24"
set -euo pipefail
if [ $# -lt 3 ]; then
  echo "usage: $0 DEST DEADLINE \"VERSION ARGS...\" [\"VERSION ARGS...\" ...]" >&2
  exit 2
fi
dest=$1 deadline=$2
shift 2
py=${PYTHON:-python3} n_train=${N_TRAIN:-80} n_atlas=${N_ATLAS:-120} device=${DEVICE:-cuda}
workers=${WORKERS:-$(( 14 / $# ))}
export OMP_NUM_THREADS=1 PYTHONUNBUFFERED=1
mkdir -p "$dest"
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true; env | grep ^SVDMARK_TRAIN_ || true; } \
  > "$dest/machine.txt" 2>&1
$py -m training.data ncct train "$n_train" "${GEN_WORKERS:-16}"
$py -m training.data ncct train_atlas "$n_atlas" "${GEN_WORKERS:-16}"
left=$(( deadline - $(date +%s) - 120 ))  # loading the stacks and the export
minutes=$($py -c "print(round(max(1.0, $left / 60), 2))")
echo "training for $minutes minutes"
run() {  # version args...
  local v=$1
  shift
  $py -m training.train_wml --n-train "$n_train" --n-train-atlas "$n_atlas" --atlas-share 0.43 --cached-only \
    --levels 3 --crop 128 --batch 32 --randomise 0.8 --min-lesion-contrast 4 --tta lr --steps 100000 \
    --minutes "$minutes" --threads 1 --device "$device" --workers "$workers" --checkpoint-every 0 "$@" \
    --out "training/runs/gpu/wml-ncct/$v" > "$dest/train-$v.log" 2>&1
  cp -r "training/runs/gpu/wml-ncct/$v" "$dest/"
}
pids=()
for spec in "$@"; do
  # shellcheck disable=SC2086  # the spec's words are the version and its options
  run $spec & pids+=($!)
done
for p in "${pids[@]}"; do wait "$p"; done
