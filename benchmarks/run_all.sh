#!/usr/bin/env bash
# Run every benchmark in sequence on an otherwise idle machine; each prints its figures and ends with a JSON line.
# Usage: bash benchmarks/run_all.sh [OUT_DIR]   (the last JSON line of each goes to OUT_DIR/<name>.json)
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${1:-benchmarks/results}
mkdir -p "$OUT"
BOUNDARIES=${GEOPAK_BOUNDARIES:-../shared/data/geoBoundaries-PAK-ADM1.geojson}
run() {
  local name=$1; shift
  echo "== $name: $*"
  local t0=$SECONDS
  "$PY" "$@" 2>&1 | tee "$OUT/$name.log" | tail -n 12
  tail -n 1 "$OUT/$name.log" > "$OUT/$name.json"
  echo "   ($((SECONDS - t0)) s)"
}
run synth benchmarks/bench_synth.py --n 2000 --size 224 --workers 2
run cells benchmarks/bench_cells.py --repeat 3
if [ -f "$BOUNDARIES" ]; then run boundaries benchmarks/bench_boundaries.py --boundaries "$BOUNDARIES"; else
  run boundaries benchmarks/bench_boundaries.py; fi
run losses benchmarks/bench_losses.py --threads 1
run cache benchmarks/bench_cache.py
run model_tiny benchmarks/bench_model.py --clip clip_vit_tiny --scene resnet_small --size 96 --train
run model_full benchmarks/bench_model.py --bf16
run predictor benchmarks/bench_predictor.py
