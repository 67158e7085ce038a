#!/usr/bin/env bash
# Run an experiment stage by stage with `geodl stage` (what a batch system does, on one machine).
# Usage: pipelines/local.sh CONFIG [RUN_DIR] [--set key=value ...]
# Each stage is skipped when its cache key is unchanged, exactly as with `geodl run`.
set -euo pipefail
config=${1:?usage: pipelines/local.sh CONFIG [RUN_DIR] [--set key=value ...]}
shift
out=()
if [[ $# -gt 0 && $1 != --* ]]; then out=(--out "$1"); shift; fi
geodl=${GEODL:-geodl}
for stage in $("$geodl" stages "$config" "$@"); do
  echo "== stage $stage"
  "$geodl" stage "$stage" "$config" "${out[@]}" "$@"
done
