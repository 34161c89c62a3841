#!/usr/bin/env bash
# The measured outcomes of the recipes on the built-in tiny pair (2 CPU cores, about three hours).
# Each sweep is resumable: rerun this script after an interruption and finished runs are skipped.
# Afterwards `python benchmarks/outcome_tables.py` writes the tables in benchmarks/results/.
set -euo pipefail
cd "$(dirname "$0")/.."
# the seed's table: phase 1 with all fixes vs the KL-only ablation
latentbridge sweep phase1_full ablB_kl_only --seeds 3 --out runs/sweeps/seed_table
# every translator, answer teacher with soft_plus_text
latentbridge sweep answer_softplus --grid 'translator=linear,mlp,resampler,{name: identity, projection: linear}' \
  --seeds 3 --out runs/sweeps/translators_softplus
latentbridge sweep answer_softplus 'translator={name: dit, k: 8}' teacher=answer objectives.dit_flow.weight=0.1 \
  --seeds 3 --out runs/sweeps/translators_softplus_dit
# soft-only communication: the seed's collapsed run and the contrastive fix (also the DiT soft-only row)
latentbridge sweep prompt_softonly_phase2_swap contrastive_softonly --seeds 3 --out runs/sweeps/softonly
# every other translator, prompt teacher with soft_only
latentbridge sweep prompt_softonly_phase2_swap '~objectives.dit_flow' \
  --grid 'translator=linear,mlp,resampler,{name: identity, projection: linear}' --seeds 3 --out runs/sweeps/translators_softonly
