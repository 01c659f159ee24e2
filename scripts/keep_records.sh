#!/usr/bin/env bash
# Copy a sweep's small per-run records (config.json, result.json, metrics.jsonl of every finished
# Bayesian run; the JSON of every deterministic run; the sweep's config.json) from a run
# directory into a records directory, leaving checkpoints and unfinished runs behind. A copy
# read back by the same `dwp experiment classification` command re-runs nothing that finished.
#   bash scripts/keep_records.sh runs/curve records/curve-300
set -euo pipefail
src=${1:?usage: keep_records.sh SWEEP_DIR RECORDS_DIR}
dst=${2:?usage: keep_records.sh SWEEP_DIR RECORDS_DIR}
[ -f "$src/config.json" ] || { echo "keep_records: $src/config.json not found (not a sweep directory)" >&2; exit 2; }
mkdir -p "$dst/runs"
cp "$src/config.json" "$dst/config.json"
for run in "$src"/runs/*; do
    name=$(basename "$run")
    if [ -d "$run" ]; then
        [ -f "$run/result.json" ] || continue            # unfinished: left behind
        mkdir -p "$dst/runs/$name"
        for f in config.json result.json metrics.jsonl uncertainty.json; do
            [ -f "$run/$f" ] && cp "$run/$f" "$dst/runs/$name/$f.tmp" && mv "$dst/runs/$name/$f.tmp" "$dst/runs/$name/$f"
        done
    elif [[ "$name" == *.json ]]; then
        cp "$run" "$dst/runs/$name.tmp" && mv "$dst/runs/$name.tmp" "$dst/runs/$name"
    fi
done
echo "keep_records: $(find "$dst/runs" -name result.json | wc -l) Bayesian and $(find "$dst/runs" -maxdepth 1 -name '*.json' | wc -l) deterministic runs in $dst"
