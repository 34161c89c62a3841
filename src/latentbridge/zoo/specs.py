"""All knobs of the zoo in one place: task sizes and the two model specs.

The numbers were chosen so that building both models from scratch on 2 CPU
cores takes well under the ~12 minute budget, the two saved folders together
stay under ~8 MB in fp32, and greedy accuracy on the 200 arith test problems
lands around 0.75 (tiny-llama) and 0.5 (tiny-mistral). See ``build.py``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

# Task: the test split is fixed at 200 problems (the accuracy yardstick). The
# train split is large enough that neither model sees a problem more than
# about twice, so accuracy reflects learned arithmetic, not memorisation.
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
    seed_offset: int = 0  # added to the build seed, so the two inits differ

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict view (for ``zoo.json``)."""
        return asdict(self)


# tiny-llama: the stronger model. Digit-level tokens make carries learnable, 4
# layers x 128 wide (~0.9M params with tied embeddings) is about the most that
# trains at ~22k tokens/s on 2 cores; rope base 500000 as in Llama 3.
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
    steps=2400,
    batch_size=32,
    lr=3e-3,
    warmup=100,
    seed_offset=0,
)

# tiny-mistral: the weaker model. Narrower and shallower (96 x 3), fewer steps,
# and its tokenizer keeps multi-digit numbers as irregular pieces, which makes
# the arithmetic harder to learn; rope base 10000 as in Mistral 7B.
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
    steps=1600,
    batch_size=32,
    lr=3e-3,
    warmup=100,
    seed_offset=1,
)

PAIR: tuple[ModelSpec, ModelSpec] = (LLAMA, MISTRAL)
