"""All knobs of the zoo in one place: task sizes and the two model specs.

The numbers were chosen so that building both models from scratch on 2 CPU
cores takes about 10 minutes (budget ~15), the two saved folders together
stay under ~8 MB in fp32 (about 4.8 MB), greedy accuracy on the 200 arith
test problems lands around 0.9 (tiny-llama) and 0.5 (tiny-mistral), and on the
200 facts test questions at 1.0 (tiny-llama learned every task entity) and near
chance (tiny-mistral learned the answer format from other entities only).

Measured while tuning (seed 0, 2 threads; accuracy climbs steeply late in
training as the learning rate decays, so small changes move it by ~0.1):

* tiny-llama, arith only, full-sequence loss: 2400 steps -> 0.55, 3200 steps ->
  0.69-0.80 (two slightly different loss implementations), 4000 steps -> 0.81.
* tiny-llama, loss on answer tokens only: 2400 steps -> 0.35 (worse: predicting
  the question's digits helps it learn digit handling), so the full loss is kept.
* tiny-llama with the facts (each of the 1,000 task questions 12 times, 23% of
  the sequences drawn), 5000 steps: arith 0.92, facts 1.00.
* tiny-mistral, arith only, full loss: 2400 steps -> 0.48, 2600 -> 0.52;
  answer-only loss 1800-2100 steps -> 0.46. With the 600 public facts questions 8
  times each, 2800 steps: arith 0.48, facts (task entities) 0.06, public facts 0.64.

Training runs at ~95 ms/step (llama) and ~37 ms/step (mistral) on 2 cores.

Then the pair learns to read a passage (``reading``, a :class:`ReadingStage`): in-context lookup over
invented facts (the ``passages`` task) is what a context-split channel needs the target to do over a
translated context, and what the skyline measures. Exploration (seed 0; ``benchmarks/passages_probe.py``
and the README's "Reading a passage"): passages mixed into the first stage never got past copying one of
the passage's values (0.24-0.37 with 4 facts) and crowded out arith; an induction warm-up (repeated random
sequences) first is what teaches lookup. Continuing the trained models at lr 1e-3 (1 thread, probes on 100
items; ``benchmarks/reading_probe.py``, records in ``benchmarks/results/reading_probe/``): tiny-mistral,
replaying 8 first-stage examples a step, arith 0.48 -> 0.245 after the warm-up, back to 0.485 at the end,
passages 0.49 / 0.68 / 0.73 / 0.70 at steps 2250 / 3000 / 3750 / 4500; tiny-llama, replaying ~7 arith and
~1 facts a step, forgot its facts (1.00 -> 0.28 by step 2250), so it replays 4 facts questions a step
(facts 0.95 after the warm-up).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

# Task: the test split is fixed at 200 problems (the accuracy yardstick). The
# train split (40k problems, disjoint from test) is seen ~3 times by tiny-llama
# and ~2 times by tiny-mistral.
N_TEST = 200
N_TRAIN = 40_000
TORCH_THREADS = 2  # the budget is stated for 2 cores; also fixes float reductions


@dataclass(frozen=True)
class ReadingStage:
    """A second training stage that teaches a built model to read a passage (in-context lookup), keeping what
    the first stage taught by replaying it: a fresh AdamW at ``lr`` (linear warm-up, cosine to 10%), first
    ``induction_steps`` steps of repeated random sequences (which form induction heads) beside replayed
    first-stage examples (``replay`` arith problems and ``replay_facts`` facts questions, of those it was
    taught), then ``steps`` steps of public ``passages`` items, each batch with as many replayed examples and
    ``induction_rows`` repeated sequences besides."""

    steps: int
    induction_steps: int
    lr: float
    passages: int  # how many public passages items (1-16 facts each) it reads
    batch_size: int = 32  # rows per step, all kinds together
    replay: int = 8  # arith problems of the first stage per step
    replay_facts: int = 0  # facts questions of the first stage per step (of those it was taught)
    induction_rows: int = 8  # repeated sequences per step after the warm-up
    warmup: int = 100

    def __post_init__(self) -> None:
        if self.replay + self.replay_facts + self.induction_rows >= self.batch_size:
            raise ValueError("replay, replay_facts and induction_rows must leave room for passages in a batch")


@dataclass(frozen=True)
class ModelSpec:
    """Architecture, tokenizer and training settings of one tiny model."""

    name: str  # output folder name
    arch: str  # "llama" or "mistral"
    tokenizer: str  # "llama" (byte BPE, split digits) or "mistral" (Metaspace BPE)
    vocab_size: int  # tokenizer training target; the model uses the real size
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    rope_theta: float
    steps: int  # optimizer steps (fixed, not time-based, for determinism)
    batch_size: int
    lr: float  # peak AdamW learning rate (linear warmup, cosine to 10%)
    warmup: int
    weight_decay: float = 0.01
    prompt_loss_weight: float = 1.0  # loss weight of the ``Question: ...\nAnswer:`` tokens
    seed_offset: int = 0  # added to the build seed, so the two inits differ
    facts: str = "none"  # which facts it learns: "task" (every task entity), "public" (the format only), "none"
    facts_repeat: int = 1  # how many times each facts example appears in its training data
    tokenizer_of: str | None = None  # share this (earlier built) model's tokenizer instead of training one
    passages: int = 0  # how many ``public`` passages items (1-16 facts each) it learns in-context lookup from
    passages_prompt_weight: float = 0.0  # loss weight of a passage's prompt (its invented names: noise)
    max_positions: int = 256  # max_position_embeddings of its config
    induction_steps: int = 0  # steps of repeated random sequences (loss on the repeat) before the rest
    induction_share: float = 0.0  # then, repeated sequences added to every batch: this share of its size
    reading: ReadingStage | None = None  # a second stage that teaches it to read a passage

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict view (for ``zoo.json``)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelSpec:
        """The inverse of :meth:`to_dict`."""
        reading = data.get("reading")
        return cls(**{**data, "reading": ReadingStage(**reading) if reading else None})


# tiny-llama: the stronger model, and the one that knows the facts. Digit-level
# tokens make carries learnable; 4 layers x 128 wide (0.85M params, tied
# embeddings) trains in ~8 minutes on 2 cores (5000 steps x 32 sequences ~ 3.1
# epochs of arith + facts); rope base 500000 as in Llama 3.
LLAMA = ModelSpec(
    name="tiny-llama",
    arch="llama",
    tokenizer="llama",
    vocab_size=512,
    hidden_size=128,
    intermediate_size=384,
    num_layers=4,
    num_heads=4,
    num_kv_heads=2,
    rope_theta=500_000.0,
    steps=5000,
    batch_size=32,
    lr=3e-3,
    warmup=100,
    seed_offset=0,
    facts="task",
    facts_repeat=12,
    # then it learns to read a passage (in-context lookup), replaying arith and every facts question it learned
    reading=ReadingStage(steps=3000, induction_steps=1500, lr=1e-3, passages=24_000, replay=6, replay_facts=4,
                         induction_rows=6),
)

# tiny-mistral: the weaker model (0.34M params), which never sees a task entity.
# Narrower and shallower (96 x 3), fewer steps (~1.8 minutes), and its tokenizer keeps multi-digit numbers as
# irregular pieces (``▁42`` vs ``▁7`` ``8``), which makes multi-digit sums hard
# to learn; rope base 10000 as in Mistral 7B.
MISTRAL = ModelSpec(
    name="tiny-mistral",
    arch="mistral",
    tokenizer="mistral",
    vocab_size=400,
    hidden_size=96,
    intermediate_size=256,
    num_layers=3,
    num_heads=4,
    num_kv_heads=2,
    rope_theta=10_000.0,
    steps=2800,
    batch_size=32,
    lr=3e-3,
    warmup=100,
    seed_offset=1,
    facts="public",
    facts_repeat=8,
    reading=ReadingStage(steps=3000, induction_steps=1500, lr=1e-3, passages=24_000, replay=7, replay_facts=1,
                         induction_rows=8),
)

# tiny-llama-b: tiny-llama's architecture, width and tokenizer (the very files), trained from another seed
# on arith only. (tiny-llama -> tiny-llama-b) is a same-geometry pair for the training-free channels (ac,
# kvcomm) in which the target lacks the source's facts.
LLAMA_B = replace(LLAMA, name="tiny-llama-b", steps=4000, seed_offset=2, facts="none", facts_repeat=1,
                  tokenizer_of="tiny-llama", reading=None)

PAIR: tuple[ModelSpec, ModelSpec] = (LLAMA, MISTRAL)
ZOO: tuple[ModelSpec, ...] = (LLAMA, MISTRAL, LLAMA_B)  # what `zoo build` builds, in order (tokenizers first)
