#!/usr/bin/env bash
# The communication goals on the built-in tiny pair (benchmarks/results/communicate.md): the shipped
# recipes in which the target gains from the source, 5 seeds each (facts_mc 3). Each sweep is resumable: rerun this
# script after an interruption and finished runs are skipped, unfinished ones resumed. Afterwards
# `python benchmarks/outcome_tables.py` packs the runs into benchmarks/results/runs/ and writes the table.
# About 4 minutes per facts_relay run on one core of the 2-core machine.
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=1
# facts the source knows and the target cannot: the latent relay of the source's own answer
latentbridge sweep facts_relay --seeds 5 --out runs/sweeps/communicate_facts
# the same channel on facts as 4-way multiple choice (acc: the choices' log-likelihoods), 3 seeds
latentbridge sweep facts_mc --seeds 3 --out runs/sweeps/communicate_facts_mc
