"""What plugins see: at build time (:class:`BuildContext`) and in each training step (:class:`StepContext`).

The step context has two parts. Its *fields* are cheap facts of the step (the soft tokens, what the
target reads, the examples, ...), typed and documented below. Its *shared quantities* are expensive
results (the target's logits on the bridged input, the teacher's logits on the literal text, the
embeddings of this question, ...) computed on first use and cached for the step, so two objectives
that need the same forward pass share one. An objective declares the quantities it reads in
``needs``; :meth:`StepContext.get` gives it those and no others. The built-in quantities are listed by
``latentbridge list-plugins --kind quantity``; a plugin adds its own with the
``register_step_quantities`` hook (see :class:`StepQuantity`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

import torch

from latentbridge.api.injection import InjectionMode, TargetText
from latentbridge.api.segments import TargetInputs
from latentbridge.api.task import Example, Prompt
from latentbridge.errors import PluginError


class FrozenModelView(Protocol):
    """What a plugin may use of a frozen model (source or target); never trained, no gradients."""

    name: str
    model: Any  # the transformers model (``PreTrainedModel``), eval mode, requires_grad False
    tokenizer: Any  # its (fast) tokenizer
    pad_id: int  # the id used for padding (always masked out)

    @property
    def hidden_size(self) -> int: ...

    @property
    def device(self) -> torch.device: ...

    @property
    def dtype(self) -> torch.dtype: ...

    def eos_ids(self) -> set[int]:
        """The token ids that end a generation."""
        ...

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        """``b L`` token ids -> ``b L d``: what the model's input-embedding module returns (with any scaling
        the model applies, such as Gemma's ``sqrt(hidden)``)."""
        ...


@dataclass
class BuildContext:
    """Facts about the run that a plugin may need when it is built (an objective's ``__init__``).

    Everything an objective may precompute from is here; nothing else of the run is passed in.
    """

    d_src: int  # the source's hidden size (the width the translator reads)
    d_tgt: int  # the target's embedding width (the width of a soft token)
    k: int  # soft tokens per example (the translator's ``k``)
    teacher: str = "answer"  # the recipe's ``teacher``: 'answer' or 'prompt'
    labels: Sequence[str] = ()  # the task's categorical labels (sorted), possibly empty
    batch_size: int = 1  # the global batch (``train.batch_size``); each process sees batch_size / world_size
    world_size: int = 1  # the number of training processes
    source_tokenizer: Any = None  # the source's tokenizer
    target_tokenizer: Any = None  # the target's tokenizer
    target_embed: Callable[[torch.Tensor], torch.Tensor] | None = None  # target ids ``b L`` -> ``b L d_tgt``
    target_embedding_matrix: torch.Tensor | None = None  # the target's input-embedding weight, ``V d_tgt``, frozen
    target_rms: float | None = None  # the median RMS of a real target token embedding (the soft-token scale)
    translator: Any = None  # the recipe's translator (a built :class:`~latentbridge.api.translator.Translator`)


QuantityFn = Callable[["StepContext"], Any]


@dataclass(frozen=True)
class StepQuantity:
    """A shared quantity of the step: ``compute(step)`` runs at most once per step.

    ``compute`` may read the step's fields and other quantities (``step.get(other)``). ``help`` is one
    line (shape in einops notation first), shown by ``latentbridge list-plugins --kind quantity``.
    """

    name: str
    compute: QuantityFn
    help: str


@dataclass(eq=False)
class StepContext:
    """One training step (one micro-batch on this process), as the objectives see it.

    Fields are set by the runner; shared quantities come from :meth:`get`.
    """

    step: int  # the training step, 1-based
    soft: torch.Tensor | None  # ``b k d_tgt``: the soft tokens, with gradient to the translator (None: another message)
    inputs: TargetInputs  # what the target reads: the bridged input followed by the supervised answer
    message: Any = None  # the translator's message (latentbridge.api.messages): SoftTokens, KVPrefix, KVFusion, ...
    texts: Sequence[TargetText] = ()  # each row's target-side text (prefix, prompt, question span, cue, answer)
    examples: Sequence[Example] = ()  # the rows' examples (question, gold answer, label)
    prompts: Sequence[Prompt] = ()  # the rows' prompts (few-shot header, question, cue, answer)
    source_hidden: tuple[torch.Tensor, torch.Tensor] | None = None  # what the translator read: ``b t d_src``, ``b t``
    seeds: torch.Tensor | None = None  # ``b`` int64 per-row seeds (translators that sample; the DiT's flow loss)
    modes: Sequence[InjectionMode] | None = None  # per-row injection modes under a curriculum (None: the recipe's)
    teacher: str = "answer"  # the recipe's ``teacher``
    target: FrozenModelView | None = None  # the frozen target
    source: FrozenModelView | None = None  # the frozen source
    translator: Any = None  # the translator being trained
    # relayout(other_soft, with_answer=True, answers=None): the same rows with other ``b k d_tgt`` soft tokens;
    # without the answer (generation), or with other answers: per row (context ids read, ids supervised)
    relayout: Callable[..., TargetInputs] | None = None
    generator: torch.Generator | None = None  # the run's seeded generator for training-time draws
    bridge: Any = None  # the whole bridge (source, target, encoders); for advanced use
    quantities: dict[str, QuantityFn] = field(default_factory=dict)  # name -> compute, from the registry
    allowed: frozenset[str] | None = None  # set while an objective runs: its ``needs``

    _cache: dict[str, Any] = field(default_factory=dict, init=False, repr=False)
    _computing: int = field(default=0, init=False, repr=False)

    def get(self, name: str) -> Any:
        """The shared quantity ``name``, computed once per step.

        While an objective runs, only the quantities it declared in ``needs`` are available to it (what
        they depend on is computed as needed): a term cannot silently read more than it says."""
        if self.allowed is not None and self._computing == 0 and name not in self.allowed:
            raise PluginError(
                f"'{name}' is not in this objective's needs ({', '.join(sorted(self.allowed)) or 'none'}); "
                "declare it in the objective's `needs`"
            )
        if name not in self._cache:
            if name not in self.quantities:
                known = ", ".join(sorted(self.quantities)) or "none"
                raise KeyError(f"step context has no quantity '{name}' (known: {known})")
            self._computing += 1
            try:
                self._cache[name] = self.quantities[name](self)
            finally:
                self._computing -= 1
        return self._cache[name]

    @property
    def logits(self) -> torch.Tensor:
        """The target's logits on the bridged input, last ``W`` positions: ``b W vocab`` (quantity ``logits``)."""
        return self.get("logits")

    @property
    def logit_labels(self) -> torch.Tensor:
        """The labels aligned with :attr:`logits`: the last ``W`` positions of ``inputs.labels``."""
        return self.inputs.labels[:, -self.logits.shape[1] :]

    FIELDS: ClassVar[tuple[str, ...]] = (
        "step", "soft", "inputs", "message", "texts", "examples", "prompts", "source_hidden", "seeds", "modes", "teacher",
        "target", "source", "translator", "relayout", "generator", "bridge",
    )
