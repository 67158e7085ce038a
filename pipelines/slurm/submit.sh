#!/usr/bin/env bash
# Submit every stage of an experiment as a chain of SLURM jobs (afterok dependencies).
# Stages matching a pattern of GPU_STAGES (default: "train train_*") go to gpu.sbatch, except
# those matching CPU_STAGES (default: "train_oi": the OI search is CPU work); the others go to
# cpu.sbatch.
# Usage: pipelines/slurm/submit.sh CONFIG RUN_DIR [--set key=value ...]
# Dry run (print the sbatch commands): SBATCH="echo sbatch" pipelines/slurm/submit.sh ...
set -euo pipefail
set -f  # GPU_STAGES holds glob patterns: never expand them against files
here=$(cd "$(dirname "$0")" && pwd)
config=${1:?usage: submit.sh CONFIG RUN_DIR [--set ...]}
run_dir=${2:?usage: submit.sh CONFIG RUN_DIR [--set ...]}
shift 2
sbatch_cmd=${SBATCH:-sbatch}
gpu_stages=${GPU_STAGES:-train train_*}
cpu_stages=${CPU_STAGES:-train_oi}
dep=()
last=""
for stage in $(geodl stages "$config" "$@"); do
  script=$here/cpu.sbatch
  for pattern in $gpu_stages; do
    # shellcheck disable=SC2053  # the pattern is meant to glob
    [[ $stage == $pattern ]] && script=$here/gpu.sbatch
  done
  for pattern in $cpu_stages; do
    # shellcheck disable=SC2053
    [[ $stage == $pattern ]] && script=$here/cpu.sbatch
  done
  out=$($sbatch_cmd --parsable "${dep[@]}" --job-name="geodl-$stage" "$script" \
        "$stage" "$config" "$run_dir" "$@")
  echo "$stage: $out"
  last=${out%%[; ]*}  # "123" or "123;cluster"
  dep=(--dependency="afterok:$last")
done
