"""What plugins see: at build time (:class:`BuildContext`) and in each training step (:class:`StepContext`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from latentbridge.api.injection import TargetText
from latentbridge.api.segments import TargetInputs
from latentbridge.api.task import Example


@dataclass
class BuildContext:
    """Facts about the run that a plugin may need when it is built."""

    d_src: int
    d_tgt: int
    k: int
    teacher: str = "answer"
    labels: Sequence[str] = ()
    target_tokenizer: Any = None
    source_tokenizer: Any = None
    extra: dict[str, Any] = field(default_factory=dict)


class StepContext:
    """One training step, as the objectives see it.

    Cheap facts are attributes; expensive shared quantities (the target's logits on the bridged input,
    the teacher's logits on the literal text, ...) are computed on first use by a provider the runner
    registered, then cached, so two objectives that need the same forward pass share one.
    """

    def __init__(
        self,
        *,
        step: int,
        soft: torch.Tensor,
        inputs: TargetInputs,
        texts: Sequence[TargetText] = (),
        examples: Sequence[Example] = (),
        providers: dict[str, Callable[[StepContext], Any]] | None = None,
        **attributes: Any,
    ):
        self.step = step
        self.soft = soft
        self.inputs = inputs
        self.texts = list(texts)
        self.examples = list(examples)
        self._providers = dict(providers or {})
        self._cache: dict[str, Any] = {}
        for name, value in attributes.items():
            setattr(self, name, value)

    def get(self, name: str) -> Any:
        """The shared quantity ``name``, computed once per step."""
        if name not in self._cache:
            if name not in self._providers:
                known = ", ".join(sorted(self._providers)) or "none"
                raise KeyError(f"step context has no provider for '{name}' (known: {known})")
            self._cache[name] = self._providers[name](self)
        return self._cache[name]

    @property
    def logits(self) -> torch.Tensor:
        """The target's logits on the bridged input, last ``W`` positions: ``b W vocab``."""
        return self.get("logits")

    @property
    def logit_labels(self) -> torch.Tensor:
        """The labels aligned with :attr:`logits`: the last ``W`` positions of ``inputs.labels``."""
        return self.inputs.labels[:, -self.logits.shape[1] :]
