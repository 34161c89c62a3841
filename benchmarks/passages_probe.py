"""Can tiny-llama's architecture learn to read a passage? An induction warm-up, then passages (issue 25's blocker).

    OMP_NUM_THREADS=1 python benchmarks/passages_probe.py '{"steps": 3000}' > benchmarks/results/passages_probe.jsonl

A fresh model of tiny-llama's architecture (``zoo.specs.LLAMA``, seed 0) and its shipped tokenizer learns first,
for ``warm`` steps, to continue repeated random token sequences (``r r``, loss on the second copy: the
induction task that forms induction heads), then the zoo's ``public`` passages (loss on the answer only),
a share ``mix`` of each batch still repeated sequences. Every ``every`` steps after the warm-up: the zoo
builder's own passages evaluation (``zoo.build.passages_accuracy``: test items of 4 facts, greedy, with
the context and with the question only). One JSON line per evaluation on stdout. Settings: a JSON object
(keys below, with their defaults). One thread: the figures depend on the thread count.
"""

from __future__ import annotations

import json
import random
import sys
import time

import torch
import torch.nn.functional as F
from transformers import PreTrainedTokenizerFast

from latentbridge.bridge.models import builtin_models
from latentbridge.zoo import passages
from latentbridge.zoo.build import passages_accuracy
from latentbridge.zoo.specs import LLAMA
from latentbridge.zoo.train import eval_prompt, make_model, train_text


def main() -> None:
    torch.set_num_threads(1)
    cfg = json.loads(sys.argv[1]) if len(sys.argv) > 1 else {}
    tok = PreTrainedTokenizerFast.from_pretrained(builtin_models()["tiny-llama"])
    model = make_model(LLAMA, tok, cfg.get("seed", 0))
    rng = random.Random(0)
    special = set(tok.all_special_ids)
    normal = [i for i in range(len(tok)) if i not in special]
    public = passages.generate_split("public", 0, n=cfg.get("n_public", 24000), n_facts=None)
    seqs, weights = [], []
    for e in public:
        full = tok(train_text(e["question"], e["answer"]))["input_ids"] + [tok.eos_token_id]
        n = len(tok(eval_prompt(e["question"]))["input_ids"])
        seqs.append(full)
        weights.append([0.0] * n + [1.0] * (len(full) - n))
    print("public items", len(seqs), "mean tokens", sum(map(len, seqs)) / len(seqs), flush=True)

    def repeat_item() -> tuple[list[int], list[float]]:
        n = rng.randint(8, 60)
        r = [rng.choice(normal) for _ in range(n)]
        return [tok.bos_token_id, *r, *r], [0.0] * (n + 1) + [1.0] * n

    lr, warm, mix, size = cfg.get("lr", 1e-3), cfg.get("warm", 1500), cfg.get("mix", 0.25), cfg.get("batch", 16)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.98), weight_decay=0.01)
    start = time.time()
    model.train()
    for step in range(cfg.get("steps", 4000)):
        batch = []
        for _ in range(size):
            if step < warm or rng.random() < mix:
                batch.append(repeat_item())
            else:
                i = rng.randrange(len(seqs))
                batch.append((seqs[i], weights[i]))
        width = max(len(s) for s, _ in batch)
        ids = torch.full((size, width), tok.pad_token_id)
        weight = torch.zeros(size, width)
        for row, (s, w) in enumerate(batch):
            ids[row, : len(s)] = torch.tensor(s)
            weight[row, : len(s)] = torch.tensor(w)
        logits = model(input_ids=ids).logits[:, :-1]
        ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1), reduction="none")
        w = weight[:, 1:].reshape(-1)
        loss = (ce * w).sum() / w.sum()
        for group in opt.param_groups:
            group["lr"] = lr * min(1, (step + 1) / 100)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad()
        if (step + 1) % cfg.get("every", 500) == 0:
            model.eval()
            with torch.no_grad():
                acc = passages_accuracy(model, tok, 0, n=cfg.get("n_eval", 100)) if step + 1 > warm else {}
            model.train()
            print(json.dumps({"step": step + 1, "loss": round(loss.item(), 3), "with": acc.get("with_context"),
                              "alone": acc.get("question_only"), "s": round(time.time() - start)}), flush=True)


if __name__ == "__main__":
    main()
