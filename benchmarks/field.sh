#!/usr/bin/env bash
# The field's table on the tiny models (issue 24; benchmarks/results/field_table.md): tiny-llama ->
# tiny-llama-b (one architecture, the target without the source's facts), on facts and arith. Every system in
# one run per channel: the training-free channels ac and kvcomm (train.steps: 0 in their recipes) and the
# trained latent relays, one seed each; then the latencies, then the kept runs and the table. Resumable:
# finished runs are skipped. Needs a clean committed tree (the kept runs' provenance is checked).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=runs/field
export OMP_NUM_THREADS=1
SYSTEMS="eval.systems=[source,target,bridged,shuffled,'null',relay,covgauss,randomrot,skyline,two_stage]"
field_run() {  # field_run NAME RECIPE OVERRIDE...: one run into $OUT/NAME (finished: skipped; interrupted: resumed)
  local name=$1 recipe=$2 dir="$OUT/$1"; shift 2
  [ -f "$dir/summary.json" ] && return
  latentbridge run "$recipe" "$@" "$SYSTEMS" "run_dir=$dir" $([ -d "$dir/checkpoints" ] && echo --resume) \
    $([ -d "$dir" ] && [ ! -d "$dir/checkpoints" ] && echo --force) > "$OUT/$name.log" 2>&1
}
mkdir -p "$OUT"
field_run ac_facts ac
field_run ac_arith ac task=arith
field_run kvcomm_facts kvcomm
field_run kvcomm_arith kvcomm task=arith
field_run facts_relay_b facts_relay models.target=tiny-llama-b
field_run arith_relay_b arith_relay models.target=tiny-llama-b
python benchmarks/latency.py --recipes ac kvcomm --variant facts_relay facts_relay models.target=tiny-llama-b \
  --weights "facts_relay=$OUT/facts_relay_b/best" --systems target relay two_stage skyline --against two_stage \
  --name field_latency_facts --queries 96 --batch 16
python benchmarks/latency.py --recipes ac kvcomm --variant arith_relay arith_relay models.target=tiny-llama-b \
  --weights "arith_relay=$OUT/arith_relay_b/best" --systems target relay two_stage skyline --against two_stage \
  --name field_latency_arith --queries 96 --batch 16 task=arith
python benchmarks/field_table.py pack "$OUT"/ac_facts "$OUT"/ac_arith "$OUT"/kvcomm_facts "$OUT"/kvcomm_arith "$OUT"/facts_relay_b "$OUT"/arith_relay_b
python benchmarks/field_table.py
