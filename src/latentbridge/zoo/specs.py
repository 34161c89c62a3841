"""All knobs of the zoo in one place: task sizes and the two model specs.

The numbers were chosen so that building both models from scratch on 2 CPU
cores takes about 8-9 minutes (budget ~12), the two saved folders together
stay under ~8 MB in fp32 (about 4.8 MB), and greedy accuracy on the 200 arith
test problems lands around 0.8 (tiny-llama) and 0.5 (tiny-mistral).

Measured while tuning (seed 0, 2 threads; accuracy climbs steeply late in
training as the learning rate decays, so small changes move it by ~0.1):

* tiny-llama, full-sequence loss: 2400 steps -> 0.55, 3200 steps -> 0.69-0.80
  (two slightly different loss implementations), 4000 steps -> 0.81.
* tiny-llama, loss on answer tokens only: 2400 steps -> 0.35 (worse: predicting
  the question's digits helps it learn digit handling), so the full loss is kept.
* tiny-mistral, full loss: 2400 steps -> 0.48, 2600 -> 0.52; answer-only loss
  1800-2100 steps -> 0.46.

Training runs at ~95 ms/step (llama) and ~37 ms/step (mistral) on 2 cores.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

# Task: the test split is fixed at 200 problems (the accuracy yardstick). The
# train split (40k problems, disjoint from test) is seen ~3 times by tiny-llama
# and ~2 times by tiny-mistral.
N_TEST = 200
N_TRAIN = 40_000
TORCH_THREADS = 2  # the budget is stated for 2 cores; also fixes float reductions


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

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict view (for ``zoo.json``)."""
        return asdict(self)


# tiny-llama: the stronger model. Digit-level tokens make carries learnable; 4
# layers x 128 wide (0.85M params, tied embeddings) is about the most that
# trains in ~6.5 minutes on 2 cores (4000 steps x 32 sequences ~ 3.2 epochs of
# the train split); rope base 500000 as in Llama 3.
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
    steps=4000,
    batch_size=32,
    lr=3e-3,
    warmup=100,
    seed_offset=0,
)

# tiny-mistral: the weaker model (0.34M params). Narrower and shallower (96 x 3),
# fewer steps (~1.6 minutes), and its tokenizer keeps multi-digit numbers as
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
    steps=2600,
    batch_size=32,
    lr=3e-3,
    warmup=100,
    seed_offset=1,
)

PAIR: tuple[ModelSpec, ModelSpec] = (LLAMA, MISTRAL)
