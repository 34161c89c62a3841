#!/usr/bin/env bash
# The measured outcomes of the recipes on the built-in tiny pair: every published table's runs.
# Two sweeps run at a time, one thread each (2 CPU cores; more threads than cores run many times
# slower). Each sweep is resumable: rerun this script after an interruption and finished runs are
# skipped, unfinished ones resumed. Afterwards `python benchmarks/outcome_tables.py` packs the runs
# into benchmarks/results/runs/ and writes every table from them.
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=1
sweep() { latentbridge sweep "$@"; }
(
  # the seed's table: phase 1 with all fixes vs the KL-only ablation
  sweep phase1_full ablB_kl_only --seeds 3 --out runs/sweeps/seed_table
  # every translator, answer teacher with soft_plus_text
  sweep answer_softplus --grid 'translator=linear,mlp,resampler,{name: identity, projection: linear}' \
    --seeds 3 --out runs/sweeps/translators_softplus
  sweep answer_softplus 'translator={name: dit, k: 8}' teacher=answer objectives.dit_flow.weight=0.1 \
    --seeds 3 --out runs/sweeps/translators_softplus_dit
  # the message kinds (results/messages.md): soft tokens, kv prefix, C2C fusion, the latent relay
  sweep answer_softplus --seeds 3 --out runs/sweeps/messages_soft
  sweep kv_prefix c2c_fusion --seeds 3 --out runs/sweeps/messages_kv
  sweep latent_relay --seeds 3 --out runs/sweeps/messages_relay
) &
(
  # soft-only communication: the seed's collapsed run and the contrastive fix (also the DiT soft-only row)
  sweep prompt_softonly_phase2_swap contrastive_softonly --seeds 3 --out runs/sweeps/softonly
  # every other translator, prompt teacher with soft_only
  sweep prompt_softonly_phase2_swap '~objectives.dit_flow' \
    --grid 'translator=linear,mlp,resampler,{name: identity, projection: linear}' --seeds 3 --out runs/sweeps/translators_softonly
  # format_penalty on the soft-only setting, against the softonly sweep's runs of the same seeds
  sweep format_scaled --seeds 3 --out runs/sweeps/format_penalty
) &
wait
