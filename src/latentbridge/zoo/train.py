"""Model construction and a plain, seeded torch training loop (no ``Trainer``)."""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from transformers import (
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerFast,
)

from latentbridge.zoo.specs import ModelSpec

Progress = Callable[[str, int, int], None]


def train_text(question: str, answer: str) -> str:
    """The exact training text of one example (eos is appended as a token id)."""
    return f"Question: {question}\nAnswer: {answer}"


def eval_prompt(question: str) -> str:
    """The evaluation prompt; the model continues with the worked answer."""
    return f"Question: {question}\nAnswer:"


def make_model(spec: ModelSpec, tokenizer: PreTrainedTokenizerFast, seed: int) -> PreTrainedModel:
    """A freshly initialised Llama/Mistral causal LM for ``spec`` (seeded init)."""
    common = dict(
        vocab_size=len(tokenizer),
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_layers,
        num_attention_heads=spec.num_heads,
        num_key_value_heads=spec.num_kv_heads,
        max_position_embeddings=spec.max_positions,
        rope_parameters={"rope_type": "default", "rope_theta": spec.rope_theta},
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    if spec.arch not in ("llama", "mistral"):
        raise ValueError(f"unknown arch {spec.arch!r}")
    with torch.random.fork_rng(devices=[]):  # seeded init without touching the caller's RNG
        torch.manual_seed(seed)
        if spec.arch == "llama":
            return LlamaForCausalLM(LlamaConfig(**common))
        return MistralForCausalLM(MistralConfig(sliding_window=None, **common))


def _floor_logits(logits: torch.Tensor, margin: float = 60.0) -> torch.Tensor:
    """Clamp each logit to at least ``max - margin`` (no gradient below the floor).

    Tokens that far below the top have probability < e^-60, so this changes the
    loss by nothing measurable. It keeps the softmax out of the float32
    subnormal range: without it, the phase of training where unused tokens'
    log-probs pass through -87..-103 produced subnormal numbers whose slow CPU
    handling made training steps 2-4x slower for ~800 steps.
    """
    floor = logits.detach().amax(dim=-1, keepdim=True) - margin
    return torch.maximum(logits, floor)


def _batches(lengths: Sequence[int], batch_size: int, n_batches: int, rng: random.Random) -> list[list[int]]:
    """Length-bucketed batches of example indices covering ``n_batches`` steps.

    Each epoch is shuffled, cut into chunks of 64 batches, sorted by length
    inside a chunk (little padding) and the chunk's batches shuffled again.
    """
    out: list[list[int]] = []
    idx = list(range(len(lengths)))
    while len(out) < n_batches:
        rng.shuffle(idx)
        chunk = batch_size * 64
        for start in range(0, len(idx) - batch_size + 1, chunk):
            part = sorted(idx[start : start + chunk], key=lambda i: lengths[i])
            group = [part[j : j + batch_size] for j in range(0, len(part) - batch_size + 1, batch_size)]
            rng.shuffle(group)
            out.extend(group)
    return out[:n_batches]


class InductionRows:
    """Repeated random token sequences (``bos r r``, ``r`` 8-60 ordinary tokens), the loss on the second copy:
    the task that forms induction heads, which a model then uses to look things up in its context (a model
    that never learned it copies one of a passage's values instead of the asked one). Drawn from a stream of
    their own, so that a build without them is unchanged."""

    def __init__(self, tokenizer: PreTrainedTokenizerFast, seed: int):
        special = set(tokenizer.all_special_ids)
        self.tokens = [i for i in range(len(tokenizer)) if i not in special]
        self.bos = tokenizer.bos_token_id
        self.rng = random.Random(seed * 1_000_003 + 17)

    def row(self) -> tuple[list[int], list[float]]:
        n = self.rng.randint(8, 60)
        r = [self.rng.choice(self.tokens) for _ in range(n)]
        return [self.bos, *r, *r], [0.0] * (n + 1) + [1.0] * n


def _optimizer(model: PreTrainedModel, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only."""
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=lr,
        betas=(0.9, 0.98),
    )


def _lr_at(step: int, peak: float, warmup: int, total: int) -> float:
    """Linear warm-up to ``peak``, then cosine decay to 10% of it at ``total``."""
    if step < warmup:
        return peak * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return peak * (0.1 + 0.45 * (1 + math.cos(math.pi * t)))


def _train_step(model: PreTrainedModel, opt: torch.optim.Optimizer, rows: Sequence[tuple[list[int], list[float]]],
                pad: int) -> float:
    """One optimizer step on ``rows`` (token ids, per-token loss weights); return the loss."""
    width = max(len(ids) for ids, _ in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    weight = torch.zeros((len(rows), width))
    for row, (seq, weights) in enumerate(rows):
        ids[row, : len(seq)] = torch.tensor(seq)
        weight[row, : len(seq)] = torch.tensor(weights[: len(seq)])
    # Right padding + causal attention: real tokens never attend to the pads,
    # so no attention mask is needed; pads get zero loss weight.
    logits = model(input_ids=ids).logits[:, :-1]
    logits = _floor_logits(logits)
    ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1), reduction="none")
    w = weight[:, 1:].reshape(-1)
    loss = (ce * w).sum() / w.sum()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)
    return float(loss.detach())


def _train_loop(model: PreTrainedModel, opt: torch.optim.Optimizer,
                rows_of: Callable[[int], list[tuple[list[int], list[float]]]], total: int, schedule: tuple[float, int],
                pad: int, report: tuple[str, Progress | None], on_step: Callable[[int], None] | None = None,
                ) -> list[float]:
    """``total`` steps of ``_train_step`` on ``rows_of(step)`` with the learning rate of ``_lr_at`` (``schedule``:
    peak and warm-up steps); progress every 20 steps as ``report`` names it; ``on_step(step)`` after each step
    with the model in eval mode. Returns the losses, the model left in eval mode."""
    stage, progress = report
    model.train()
    losses: list[float] = []
    for step in range(total):
        for group in opt.param_groups:
            group["lr"] = _lr_at(step, schedule[0], schedule[1], total)
        losses.append(_train_step(model, opt, rows_of(step), pad))
        if progress is not None and ((step + 1) % 20 == 0 or step + 1 == total):
            progress(stage, step + 1, total)
        if on_step is not None:
            model.eval()
            on_step(step + 1)
            model.train()
    model.eval()
    return losses


def _rows(tokenizer: PreTrainedTokenizerFast, texts: Sequence[str], prompts: Sequence[str],
          prompt_weights: Sequence[float]) -> list[tuple[list[int], list[float]]]:
    """``bos + text + eos`` token ids of each example with its loss weights (``prompt_weights[i]`` on the
    tokens of ``prompts[i]``, which must be a token prefix of ``texts[i]``; 1 after)."""
    enc = tokenizer(list(texts), add_special_tokens=True)["input_ids"]
    prompt_ids = tokenizer(list(prompts), add_special_tokens=True)["input_ids"]
    if any(full[: len(p)] != p for full, p in zip(enc, prompt_ids, strict=True)):
        raise ValueError("prompt tokens must be a prefix of the training text tokens")
    out = []
    for ids, prompt, w in zip(enc, prompt_ids, prompt_weights, strict=True):
        seq = ids + [tokenizer.eos_token_id]
        out.append((seq, [w] * len(prompt) + [1.0] * (len(seq) - len(prompt))))
    return out


def train_model(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerFast,
    texts: Sequence[str],
    prompts: Sequence[str],
    spec: ModelSpec,
    seed: int,
    progress: Progress | None = None,
    prompt_weights: Sequence[float] | None = None,
) -> list[float]:
    """Train ``model`` in place on ``bos + text + eos`` sequences; return the loss curve.

    Next-token loss over the whole sequence (pads masked); the tokens of the
    prompt part (``prompts[i]``, a token prefix of ``texts[i]``) are weighted by
    ``prompt_weights[i]`` (default: ``spec.prompt_loss_weight`` for every example). AdamW, linear warmup then cosine
    decay to 10% of ``spec.lr``, gradient clipping at 1.0. Deterministic given
    ``seed`` and the thread count. With ``spec.induction_steps`` the run opens with that many steps of
    :class:`InductionRows` only; with ``spec.induction_share`` every later batch carries that share of its
    size in them besides its examples.
    """
    if prompt_weights is None:
        prompt_weights = [spec.prompt_loss_weight] * len(texts)
    examples = _rows(tokenizer, texts, prompts, prompt_weights)
    batches = _batches([len(ids) for ids, _ in examples], spec.batch_size, spec.steps, random.Random(seed))
    repeats = InductionRows(tokenizer, seed) if spec.induction_steps or spec.induction_share else None
    n_mixed = round(spec.batch_size * spec.induction_share)
    total = spec.induction_steps + spec.steps
    opt = _optimizer(model, spec.lr, spec.weight_decay)

    def rows_of(step: int) -> list[tuple[list[int], list[float]]]:
        """The step's sequences and their loss weights: the induction warm-up's repeated sequences first,
        then the examples' batches, each with ``n_mixed`` repeated sequences after its examples."""
        if step < spec.induction_steps:
            return [repeats.row() for _ in range(spec.batch_size)]
        rows = [examples[i] for i in batches[step - spec.induction_steps]]
        return rows + [repeats.row() for _ in range(n_mixed)]

    return _train_loop(model, opt, rows_of, total, (spec.lr, spec.warmup), tokenizer.pad_token_id,
                       (f"train {spec.name}", progress))


def train_reading(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerFast,
    first: Sequence[tuple[Sequence[tuple[str, str, float]], int]],
    passages: Sequence[tuple[str, str]],
    spec: ModelSpec,
    seed: int,
    progress: Progress | None = None,
    on_step: Callable[[int], None] | None = None,
) -> list[float]:
    """The reading stage (``spec.reading``): train ``model`` in place to look things up in a passage while
    replaying the first stage; return the loss curve.

    ``first`` holds groups of the first stage's examples (text, prompt, prompt loss weight), each with how
    many of them a step replays, drawn at random; ``passages`` the passage items (text, prompt; the prompt
    gets no loss: its invented names and values cannot be predicted). The first ``stage.induction_steps``
    steps fill the rest of the batch with repeated random sequences (:class:`InductionRows`), the later ones
    with ``stage.induction_rows`` of them and passages in length-bucketed batches (as the first stage's).
    ``on_step(step)`` is called after each step (for probes). Deterministic given ``seed`` and the thread
    count.
    """
    stage = spec.reading
    if stage is None:
        raise ValueError(f"{spec.name} has no reading stage")
    if any(count and not group for group, count in first):
        raise ValueError("a replayed group of first-stage examples is empty (a count without examples)")
    old = [(_rows(tokenizer, [t for t, _, _ in group], [p for _, p, _ in group], [w for _, _, w in group]), count)
           for group, count in first if count]
    n_old = sum(count for _, count in old)
    read = _rows(tokenizer, [t for t, _ in passages], [p for _, p in passages], [0.0] * len(passages))
    rng = random.Random(seed * 1_000_003 + 29)
    repeats = InductionRows(tokenizer, seed + 1)
    n_read = stage.batch_size - n_old - stage.induction_rows
    if n_read < 1:
        raise ValueError("the replayed examples and repeated sequences leave no room for passages in a batch")
    if len(read) < n_read:
        raise ValueError(f"{len(read)} passages cannot fill a batch's {n_read}")
    batches = _batches([len(ids) for ids, _ in read], n_read, stage.steps, random.Random(seed * 1_000_003 + 31))
    total = stage.induction_steps + stage.steps
    opt = _optimizer(model, stage.lr, spec.weight_decay)

    def rows_of(step: int) -> list[tuple[list[int], list[float]]]:
        rows = [group[rng.randrange(len(group))] for group, count in old for _ in range(count)]
        if step < stage.induction_steps:
            return rows + [repeats.row() for _ in range(stage.batch_size - n_old)]
        rows += [read[i] for i in batches[step - stage.induction_steps]]
        return rows + [repeats.row() for _ in range(stage.induction_rows)]

    return _train_loop(model, opt, rows_of, total, (stage.lr, stage.warmup), tokenizer.pad_token_id,
                       (f"read {spec.name}", progress), on_step)
