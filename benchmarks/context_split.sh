#!/usr/bin/env bash
# The context split on the built-in tiny pair (issue 25; benchmarks/results/context_split.md): the source
# reads a passage and a question, the target the question only. Three prompt-view channels (no source
# generation: kv_translate, 5 seeds at 1500 steps, 5 at 3000, 5 on 20,000 train items and 5 more with the skyline objective; a kv prefix of k=8 positions and 8 soft tokens, 3 seeds), each with every control
# and the baselines (skyline, two_stage, relay) in each run's test evaluation of its dev-chosen weights; the
# bytes curve (kv prefix at k = 1, 2, 4, 16; k = 8 is the seeds' runs); the facts curve (each
# kv_translate seed's dev-chosen weights on test items of 1-16 facts); the latencies. Resumable: rerun it after an interruption
# and finished runs are skipped. Needs a clean committed tree (the kept runs' provenance is checked).
set -euo pipefail
cd "$(dirname "$0")/.."
JOBS=${JOBS:-2}  # cells at once, one thread each (the project's machine has 2 cores)
OUT=runs/sweeps/context_split
export OMP_NUM_THREADS=1
latentbridge sweep passages_kv --seeds 5 --jobs "$JOBS" --threads 1 --out "$OUT"
# the same channel trained twice as long (dev accuracy still rose at the end of 1500 steps); the table's best
# channel is the one with the higher dev accuracy
latentbridge sweep passages_kv_long --seeds 5 --jobs "$JOBS" --threads 1 --out "$OUT"
# the same channel on five times the train items (chosen on dev over passages_kv and the skyline objective)
latentbridge sweep passages_kv_20k --seeds 5 --jobs "$JOBS" --threads 1 --out "$OUT"
# and with the skyline objective beside the answer's cross-entropy (one seed of passages_kv_20k never took off)
latentbridge sweep passages_kv_sky --seeds 5 --jobs "$JOBS" --threads 1 --out "$OUT"
latentbridge sweep passages_prefix passages_soft --seeds 3 --jobs "$JOBS" --threads 1 --out "$OUT/compared"
k_run() {  # one seed of the kv prefix at k message positions (finished: skipped; interrupted: resumed)
  local dir="$OUT/passages_prefix-k$1"
  [ -f "$dir/summary.json" ] && return
  latentbridge run passages_prefix "translator.k=$1" "run_dir=$dir" $([ -d "$dir/checkpoints" ] && echo --resume) \
    $([ -d "$dir" ] && [ ! -d "$dir/checkpoints" ] && echo --force) > "$OUT/passages_prefix-k$1.log" 2>&1
}
k_pair() {  # two k-runs at once; the script stops if either fails
  k_run "$1" & local a=$!
  k_run "$2" & local b=$!
  wait "$a"; wait "$b"
}
k_pair 1 2
k_pair 4 16
python benchmarks/context_split.py facts "$OUT"/passages_kv-seed* "$OUT"/passages_kv_long-seed* \
  "$OUT"/passages_kv_20k-seed* "$OUT"/passages_kv_sky-seed*  # the goal channels
python benchmarks/latency.py --recipes passages_kv passages_kv_long passages_kv_20k passages_kv_sky passages_prefix \
  passages_soft \
  --weights "passages_kv=$OUT/passages_kv-seed0/best" "passages_kv_long=$OUT/passages_kv_long-seed0/best" \
            "passages_kv_20k=$OUT/passages_kv_20k-seed0/best" "passages_kv_sky=$OUT/passages_kv_sky-seed0/best" \
            "passages_prefix=$OUT/compared/passages_prefix-seed0/best" \
            "passages_soft=$OUT/compared/passages_soft-seed0/best" \
  --queries 96 --repeats 5 --systems target skyline relay two_stage --against two_stage --name context_split_latency
# keep the runs' small files under results/runs/context_split/, then write the table from them
python benchmarks/context_split.py pack "$OUT"/passages_kv-seed* "$OUT"/passages_kv_long-seed* "$OUT"/passages_kv_20k-seed* \
  "$OUT"/passages_kv_sky-seed* "$OUT"/compared/passages_*-seed* \
  "$OUT"/passages_prefix-k*[0-9]
python benchmarks/context_split.py
