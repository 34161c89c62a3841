"""Exploration behind the zoo's reading stage: continue a shipped first-stage model with
:func:`latentbridge.zoo.build.read_stage` and probe it at checkpoints (induction on repeated random sequences,
100 passages test items of 4 facts with and without the context, 200 arith test problems, 100 facts test
questions, 100 of the facts it was taught), one thread.

    OMP_NUM_THREADS=1 python benchmarks/reading_probe.py '{"model": "tiny-mistral", "stage": {"steps": 3000,
        "induction_steps": 1500, "lr": 1e-3, "passages": 24000, "replay": 7, "replay_facts": 1,
        "induction_rows": 8}, "init": "FOLDER"}'

``init``: the first-stage model to continue (a folder; the shipped models already hold a reading stage, so
rebuild the first stage alone for a faithful rerun). The records kept in ``results/reading_probe/`` (one JSON
line per checkpoint) were made on 2026-12-07 from the first-stage models shipped before the reading stage:
``mistral_a`` and ``llama_a`` with an earlier draft of the stage that replayed 8 first-stage examples drawn
from arith and facts together and read the passages in a shuffled order without length buckets;
``llama_b`` (replay 5 arith + 5 facts, 6 repeated sequences; stopped after step 1,500) with this code.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time

import torch
from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

from latentbridge.zoo import facts as facts_task
from latentbridge.zoo.arith import generate_splits
from latentbridge.zoo.build import passages_accuracy, read_stage, taught_facts
from latentbridge.zoo.evaluate import evaluate_accuracy
from latentbridge.zoo.specs import LLAMA, MISTRAL, N_TEST, N_TRAIN, ReadingStage
from latentbridge.zoo.train import InductionRows


def main(cfg: dict) -> None:
    torch.set_flush_denormal(True)
    torch.set_num_threads(1)
    base = {"tiny-llama": LLAMA, "tiny-mistral": MISTRAL}[cfg["model"]]
    stage = ReadingStage(**cfg["stage"])
    spec = dataclasses.replace(base, reading=stage)
    tok = PreTrainedTokenizerFast.from_pretrained(cfg["init"])
    model = AutoModelForCausalLM.from_pretrained(cfg["init"], dtype=torch.float32)
    train, test = generate_splits(0, N_TRAIN, N_TEST)
    facts = facts_task.generate_splits(0)
    taught = taught_facts(spec, facts)
    every = cfg.get("every", 750)
    probe = InductionRows(tok, 999)
    probe_rows = [probe.row() for _ in range(32)]
    start = time.time()

    def induction() -> float:  # next-token accuracy on the repeated half of random sequences
        right = total = 0
        with torch.no_grad():
            for ids, weights in probe_rows:
                predicted = model(input_ids=torch.tensor([ids])).logits[0, :-1].argmax(-1)
                for i, w in enumerate(weights[1:]):
                    if w:
                        right += int(predicted[i] == ids[i + 1])
                        total += 1
        return right / total

    def on_step(step: int) -> None:
        if step % every and step not in (stage.induction_steps, stage.induction_steps + stage.steps):
            return
        out = {"step": step, "s": round(time.time() - start), "induction": round(induction(), 3)}
        if step >= stage.induction_steps:
            out["passages"] = passages_accuracy(model, tok, 0, n=100)
        out["arith"] = evaluate_accuracy(model, tok, test)
        out["facts"] = evaluate_accuracy(model, tok, facts["test"][:100])
        out["taught"] = evaluate_accuracy(model, tok, taught[:100])
        print(json.dumps(out), flush=True)

    read_stage(model, tok, spec, train, taught, 0, on_step=on_step)


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
