"""The typed sections of a recipe: models, train, eval, checkpoint, cache, curriculum."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from latentbridge.api.options import option
from latentbridge.config.schema import show_value

DEVICE_MAP_STRATEGIES = ("auto", "balanced", "balanced_low_0", "sequential")


@dataclass
class ModelsConfig:
    source: str = option(help="source model: a built-in name (tiny-llama, tiny-mistral) or a local folder")
    target: str = option(help="target model: a built-in name or a local Hugging Face folder")
    source_layer: int = option(-1, help="which hidden_states entry of the source to translate (0: embeddings, -1: last)")
    source_layers: list[int] | None = option(
        None, help="several hidden_states entries for a translator that reads them (reads_layers: kv_prefix mixes "
        "them with learned weights); null: the one source_layer")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = option(
        "auto", help="dtype of the frozen models; 'auto': the checkpoint's own (an 8B bf16 folder loads in bf16)")
    autocast: bool = option(True, help="on CUDA with a 16-bit dtype, run steps under torch.autocast (fp32 master weights)")
    device: str = option("auto", help="'auto' (cuda if available, else cpu), 'cpu', 'cuda', 'cuda:1', ...")
    source_device: str | None = option(None, help="the source's device (default: models.device)")
    target_device: str | None = option(None, help="the target's and the translator's device (default: models.device)")
    device_map: dict[str, Any] | None = option(
        None, help="accelerate placement over several devices for a model that does not fit one: {source: ..., "
        "target: ...}, each 'auto', 'balanced', 'balanced_low_0', 'sequential' or an explicit {module: device} map")
    trust_remote_code: bool = option(False, help="allow model folders to run their own code (off unless set)")

    def check(self) -> list[tuple[str, str]]:
        problems = []
        for key, value in (self.device_map or {}).items():
            if key not in ("source", "target"):
                problems.append((f"device_map.{key}", "unknown model; use source or target"))
            elif not (value in DEVICE_MAP_STRATEGIES or isinstance(value, dict)):
                problems.append((f"device_map.{key}", f"expected one of {', '.join(DEVICE_MAP_STRATEGIES)} or a "
                                 "mapping of module names to devices"))
        return problems


@dataclass
class TrainConfig:
    steps: int = option(300, ge=0, help="optimizer steps (0: evaluate the untrained translator only)")
    batch_size: int = option(8, gt=0, help="examples per micro-batch")
    grad_accum: int = option(1, gt=0, help="micro-batches per optimizer step")
    lr: float = option(1e-3, gt=0, help="peak learning rate (AdamW)")
    weight_decay: float = option(0.0, ge=0, help="AdamW weight decay")
    betas: list[float] = option(default_factory=lambda: [0.9, 0.999], help="AdamW betas")
    warmup_steps: int = option(0, ge=0, help="linear warm-up steps")
    schedule: Literal["cosine", "linear", "constant"] = option("cosine", help="decay after warm-up")
    min_lr_ratio: float = option(0.0, ge=0, le=1, help="final learning rate as a fraction of lr")
    max_grad_norm: float | None = option(1.0, gt=0, help="gradient clipping norm (null: off)")
    log_every: int = option(10, gt=0, help="write a metrics.jsonl line every N steps")
    max_train_examples: int | None = option(None, gt=0, help="use only the first N train examples")
    max_nonfinite: int = option(5, gt=0, help="stop after this many non-finite losses in a row (each is skipped)")

    def check(self) -> list[tuple[str, str]]:
        problems = []
        if self.warmup_steps > self.steps > 0:
            problems.append(("warmup_steps", f"must be <= train.steps ({self.steps}), got {self.warmup_steps}"))
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            problems.append(("betas", f"expected two numbers in [0, 1), got {show_value(self.betas)}"))
        return problems


def _default_systems() -> list[str]:
    from latentbridge.config.systems import (
        default_systems,  # config.systems reads the registry, which reads this
    )

    return default_systems()


@dataclass
class EvalConfig:
    every: int = option(100, gt=0, help="evaluate on the dev split every N steps (and at the last step)")
    n: int = option(200, gt=0, help="test items evaluated at the end (final weights and the dev-chosen best)")
    dev_n: int = option(200, gt=0, help="dev items, carved from train (never trained on): periodic evaluations, "
                        "best/ and early stopping select on them, never on test")
    batch_size: int = option(32, gt=0, help="items per generation batch")
    max_new_tokens: int = option(96, gt=0, help="generation limit per answer")
    systems: list[str] = option(
        default_factory=lambda: _default_systems(),
        help="evaluation systems (`latentbridge list-plugins --kind system`); the default: every built-in "
        "marked default (source, target, bridged, the controls, relay); baselines are computed once and cached"
    )
    system_config: dict[str, dict] = option(
        default_factory=dict, help="settings of the systems, by name (`latentbridge describe two_stage --kind system`): "
        "{two_stage: {max_new_tokens: 32}}")
    stop: list[str] = option(default_factory=lambda: ["\n\n"], help="stop strings for generation")
    patience: int | None = option(None, gt=0, help="stop after N dev evaluations without a better bridged accuracy")

    def check(self) -> list[tuple[str, str]]:
        if "bridged" not in self.systems:
            return [("systems", "must include 'bridged' (the system being trained)")]
        return []


@dataclass
class CheckpointConfig:
    every: int = option(100, gt=0, help="write a checkpoint every N steps (also at each evaluation and at the end)")
    keep: int = option(2, gt=0, help="how many of the newest checkpoints to keep")


@dataclass
class SourceConfig:
    view: Literal["prompt", "generation"] = option(
        "prompt", help="what the translator reads: 'prompt', the source's states over the prompt; 'generation', "
        "over the prompt and the source's own greedy solution (decoded as eval decodes: the text relay's solution)")
    through_answer: bool = option(False, help="with view 'generation': read the solution's '####' line too "
                                  "(off: cut where the text relay cuts it, before the final answer)")


@dataclass
class CacheConfig:
    source: bool = option(False, help="cache the source's hidden states on disk and reuse them (epochs, runs)")
    dir: str | None = option(None, help="cache folder (default: $LATENTBRIDGE_CACHE_DIR or ~/.cache/latentbridge)")


@dataclass
class CurriculumConfig:
    """From ``soft_plus_text`` to the recipe's injection: the share of training examples that still read
    the literal question falls linearly from 1 (up to ``fade_start``) to 0 (from ``fade_end`` on)."""

    fade_start: int = option(ge=0, help="until this step every training example reads the question text")
    fade_end: int = option(gt=0, help="from this step no training example does")
    text_injection: str = option("soft_plus_text", help="injection mode of the examples that read the question")

    def check(self) -> list[tuple[str, str]]:
        if self.fade_end <= self.fade_start:
            return [("fade_end", f"must be > fade_start ({self.fade_start}), got {self.fade_end}")]
        return []

    def text_fraction(self, step: int) -> float:
        if step <= self.fade_start:
            return 1.0
        if step >= self.fade_end:
            return 0.0
        return 1.0 - (step - self.fade_start) / (self.fade_end - self.fade_start)
