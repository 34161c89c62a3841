#!/usr/bin/env bash
# The communication goals on the built-in tiny pair (benchmarks/results/communicate.md): the shipped
# recipes in which the target gains from the source, 5 seeds each (facts_mc and the comparisons 3). Each sweep is resumable: rerun this
# script after an interruption and finished runs are skipped, unfinished ones resumed. Afterwards
# `python benchmarks/outcome_tables.py` packs the runs into benchmarks/results/runs/ and writes the table.
# About 4 minutes per facts_relay run, 5 per arith_relay run, on one core of the 2-core machine.
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=1
# facts the source knows and the target cannot: the latent relay of the source's own answer
latentbridge sweep facts_relay --seeds 5 --out runs/sweeps/communicate_facts
# the same channel on facts as 4-way multiple choice (acc: the choices' log-likelihoods), 3 seeds
latentbridge sweep facts_mc --seeds 3 --out runs/sweeps/communicate_facts_mc
# arith: the source's own solution relayed in latent form, the target reading only the message (goals 2, 3)
latentbridge sweep arith_relay --seeds 5 --out runs/sweeps/communicate_softonly
# the same message read beside the question (goal 2), 4000 steps: about 13 minutes a run
latentbridge sweep arith_relay_plus --seeds 5 --out runs/sweeps/communicate_arith
# the comparisons: another message kind over the same source states, and the source's prompt states only
latentbridge sweep arith_relay 'translator={name: kv_prefix, k: 8}' --seeds 3 --out runs/sweeps/communicate_arith_kv
latentbridge sweep arith_relay 'source={view: prompt}' --seeds 3 --out runs/sweeps/communicate_arith_prompt
latentbridge sweep facts_relay 'source={view: prompt}' --seeds 3 --out runs/sweeps/communicate_facts_prompt
