#!/usr/bin/env bash
# wml-ncct 1.19.0 and 1.19.1 on a lent GPU machine (training/preregistered/2026-12-04-wml-gpu-scratch.md): fill the
# training cache with 1.12.0's data recipe, then train both candidates from random weights at once, each drawing its
# crops in 7 worker processes (training.crop_stream), for the minutes left before DEADLINE (epoch seconds).
#   bash training/gpu_scratch.sh DEST DEADLINE      # models land in DEST/wml-ncct/<version>, logs in DEST
# N_TRAIN, N_ATLAS, WORKERS, GEN_WORKERS, DEVICE and PYTHON override the defaults (a dry run on a CPU machine).
set -euo pipefail
dest=$1 deadline=$2
py=${PYTHON:-python3} n_train=${N_TRAIN:-80} n_atlas=${N_ATLAS:-120} workers=${WORKERS:-7} device=${DEVICE:-cuda}
export SVDMARK_TRAIN_ATROPHY_NCCT=0.75 SVDMARK_TRAIN_WML_SPREAD=0.5 OMP_NUM_THREADS=1 PYTHONUNBUFFERED=1
mkdir -p "$dest"
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true; nproc; } > "$dest/machine.txt" 2>&1
$py -m training.data ncct train "$n_train" "${GEN_WORKERS:-16}"
$py -m training.data ncct train_atlas "$n_atlas" "${GEN_WORKERS:-16}"
left=$(( deadline - $(date +%s) - 120 ))  # loading the stacks and the export
minutes=$($py -c "print(round(max(1.0, $left / 60), 2))")
echo "training for $minutes minutes"
run() {  # version channels
  $py -m training.train_wml --n-train "$n_train" --n-train-atlas "$n_atlas" --atlas-share 0.43 --cached-only \
    --levels 3 --crop 128 --batch 32 --lr 1e-3 --randomise 0.8 --min-lesion-contrast 4 --tta lr --steps 100000 \
    --minutes "$minutes" --threads 1 --device "$device" --workers "$workers" --checkpoint-every 0 --channels "$2" \
    --out "training/runs/gpu/wml-ncct/$1" > "$dest/train-$1.log" 2>&1
  cp -r "training/runs/gpu/wml-ncct/$1" "$dest/"
}
run 1.19.0 16 & a=$!
run 1.19.1 24 & b=$!
wait $a; wait $b
