"""The Translator interface: source states in, a message for the target out (soft tokens by default)."""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
from torch import nn

from latentbridge.api.messages import Message, SoftTokens, SourceStates
from latentbridge.api.options import option
from latentbridge.api.shapes import check_shape
from latentbridge.errors import LatentBridgeError


@dataclass
class TranslatorConfig:
    """Fields every translator has. ``d_src`` and ``d_tgt`` are filled in from the models when left out.
    A translator that sends soft tokens inherits :class:`SoftTokenConfig` (their scale); one that reads or
    writes caches inherits :class:`KVGeometryConfig`."""

    k: int = option(8, gt=0, help="number of soft tokens produced per example")
    d_src: int | None = option(None, gt=0, help="source hidden size (default: read from the source model)")
    d_tgt: int | None = option(None, gt=0, help="target embedding size (default: read from the target model)")

    def check(self) -> list[tuple[str, str]]:
        return []


# the fields that left the base config for SoftTokenConfig (a recipe naming them for another translator is
# accepted with a warning, so run folders written before still read; see Registry.parse_config)
SOFT_TOKEN_FIELDS = ("scale", "target_rms")


@dataclass
class SoftTokenConfig(TranslatorConfig):
    """A soft-token translator's config: how :meth:`Translator.rescale` sizes each soft token. ``target_rms``
    is filled in from the target when left out."""

    scale: Literal["target_rms", "none"] = option(
        "target_rms",
        help="'target_rms': rescale every soft token to RMS target_rms (a typical real token's size); 'none'",
    )
    target_rms: float | None = option(
        None, gt=0, help="median RMS of the target's token embeddings (default: measured on the target model)"
    )


@dataclass
class KVGeometryConfig(TranslatorConfig):
    """The key/value geometry of both models, for a translator that reads or writes caches: inherit it and
    the core fills every field left unset from each model's own cache (a translator that names these fields
    by hand gets them too, for now, with a warning). Set one to check it against the model."""

    source_layers: int | None = option(None, gt=0, help="source layers (default: read from the source)")
    source_kv_heads: int | None = option(None, gt=0, help="source key/value heads (default: read from the source)")
    source_head_dim: int | None = option(None, gt=0, help="source head width (default: read from the source)")
    target_layers: int | None = option(None, gt=0, help="target layers (default: read from the target)")
    target_kv_heads: int | None = option(None, gt=0, help="target key/value heads (default: read from the target)")
    target_head_dim: int | None = option(None, gt=0, help="target head width (default: read from the target)")
    kv_rms: list[float] | None = option(None, help="per target layer: RMS of its keys, then of its values "
                                        "(default: measured on the target)")


class Translator(nn.Module):
    """Maps source hidden states to ``k`` soft tokens: ``(h: b t d_src, mask: b t) -> soft: b k d_tgt``.

    Subclasses set ``name`` and ``Config`` and implement :meth:`translate`; :meth:`forward` checks the
    shape contract on the way in and out. ``mask`` is 1 (True) on real source tokens and 0 on padding;
    a translator must give the same output whatever the padding (left or right, any amount).
    ``seeds`` (``b``, int64) is set by translators that sample (the DiT) so that the same input always
    gives the same soft tokens; the others ignore it.

    A translator whose message is not soft tokens sets ``emits`` (``"kv_prefix"``, ``"kv_fusion"`` or a
    plugin's kind, see :mod:`latentbridge.api.messages`) and overrides :meth:`message` instead of
    :meth:`translate`; ``reads_cache = True`` asks the bridge for the source's key/value cache and
    token offsets (:class:`~latentbridge.api.messages.SourceStates`); ``reads_layers = True`` lets a
    recipe give it several source layers (``models.source_layers``: ``states.layers``, the config field
    ``n_source_layers`` filled with how many). :meth:`set_progress` is called
    before every training step (for schedules inside the translator, such as C2C's gate temperature).
    """

    name: ClassVar[str]
    Config: ClassVar[type[TranslatorConfig]] = SoftTokenConfig
    emits: ClassVar[str] = "soft_tokens"
    reads_cache: ClassVar[bool] = False
    reads_layers: ClassVar[bool] = False  # True: it reads states.layers (models.source_layers) as well
    # True: its message changes the target's own positions of the prompt (c2c's fusion), so it needs the target
    # to read what the source read; a context split (task.target_reads: question) refuses it
    fuses_target_prompt: ClassVar[bool] = False
    # True: it translates the source's context (SourceStates.context), so it needs a context split
    needs_context: ClassVar[bool] = False
    # True (with reads_cache): its message reads the source's cache at the context's tokens only
    # (SourceStates.context), so the source reads each row up to the context's last token and stops there
    # (nothing after it changes them; not where bridge.context.cut_is_exact says otherwise)
    reads_context_only: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        config = cls.__dict__.get("Config")
        if (cls.emits == "soft_tokens" and isinstance(config, type) and dataclasses.is_dataclass(config)
                and issubclass(config, TranslatorConfig) and not issubclass(config, SoftTokenConfig)):
            # a soft-token translator written before SoftTokenConfig existed: its config keeps scale and
            # target_rms (so it behaves as it did), with a warning to its author
            warnings.warn(f"translator '{getattr(cls, 'name', cls.__name__)}': {config.__name__} extends "
                          "TranslatorConfig, which no longer has the soft-token fields scale and target_rms; extend "
                          "latentbridge.SoftTokenConfig instead (they are added for you until 0.2)",
                          DeprecationWarning, stacklevel=2)
            if config is TranslatorConfig:  # no options of its own
                cls.Config = SoftTokenConfig
                return
            try:
                merged = dataclasses.make_dataclass(config.__name__, [], bases=(config, SoftTokenConfig),
                                                    frozen=config.__dataclass_params__.frozen)
            except TypeError:  # a frozen config cannot take the (unfrozen) fields: it sends its tokens unscaled
                warnings.warn(f"translator '{getattr(cls, 'name', cls.__name__)}': {config.__name__} could not "
                              "take scale and target_rms; its soft tokens are not rescaled", DeprecationWarning,
                              stacklevel=2)
                return
            merged.__module__, merged.__qualname__, merged.__doc__ = config.__module__, config.__qualname__, config.__doc__
            cls.Config = merged

    def __init__(self, config: TranslatorConfig):
        super().__init__()
        if config.d_src is None or config.d_tgt is None:
            raise LatentBridgeError(f"translator '{self.name}': d_src and d_tgt must be set before building it")
        if isinstance(config, SoftTokenConfig) and config.scale == "target_rms" and config.target_rms is None:
            raise LatentBridgeError(f"translator '{self.name}': scale 'target_rms' needs target_rms to be set")
        self.config = config

    @property
    def k(self) -> int:
        return self.config.k

    def forward(self, h: torch.Tensor, mask: torch.Tensor, *, seeds: torch.Tensor | None = None) -> torch.Tensor:
        dims = check_shape(h, "b t d_src", d_src=self.config.d_src, what=f"translator '{self.name}' input h")
        check_shape(mask, "b t", **dims, what=f"translator '{self.name}' input mask")
        soft = self.rescale(self.translate(h, mask.bool(), seeds=seeds))
        check_shape(
            soft, "b k d_tgt", b=dims["b"], k=self.config.k, d_tgt=self.config.d_tgt,
            what=f"translator '{self.name}' output",
        )
        return soft

    def rescale(self, soft: torch.Tensor) -> torch.Tensor:
        """The soft-token scaling rule: with ``scale: target_rms``, each soft token ``s`` becomes
        ``s * target_rms / rms(s)`` (``rms(s) = sqrt(mean(s**2) + 1e-12)``), so it has the RMS of a
        typical real token embedding of the target (the median over its vocabulary) whatever the
        translator's raw output scale; its direction is what the translator learns."""
        if not isinstance(self.config, SoftTokenConfig) or self.config.scale == "none":
            return soft
        rms = soft.float().pow(2).mean(-1, keepdim=True).add(1e-12).sqrt()
        return (soft.float() * (self.config.target_rms / rms)).to(soft.dtype)

    def translate(self, h: torch.Tensor, mask: torch.Tensor, *, seeds: torch.Tensor | None) -> torch.Tensor:
        """``h: b t d_src``, ``mask: b t`` (bool) -> ``b k d_tgt``."""
        raise NotImplementedError(f"translator '{self.name}' implements neither translate nor message")

    def message(self, states: SourceStates, seeds: torch.Tensor | None = None) -> Message:
        """The message for a batch: by default the soft tokens of :meth:`forward` on ``states.hidden``."""
        return SoftTokens(self(states.hidden, states.mask, seeds=seeds))

    def fit(self, bridge: Any, task: Any, log: Callable[[str], None]) -> None:
        """Fit what a training-free translator computes from the models before it is used (``ac``'s least
        squares map): called once when a run builds a new translator, with the bridge and the task, of
        which it reads the ``train`` split only (never dev or test). What it fits is saved with the
        weights (as buffers), so an evaluation of a run folder reads it back instead of fitting again."""

    def set_progress(self, step: int, total: int) -> None:
        """Training is at ``step`` of ``total`` (called before every step; nothing by default)."""

    def param_groups(self) -> list[dict[str, Any]]:
        """The optimizer's parameter groups for this translator: ``{"params": [...]}`` each, with ``"lr"``
        (an absolute learning rate instead of ``train.lr``; the schedule scales it alike) or
        ``"weight_decay"`` of its own where a group needs them. Every trainable parameter in exactly one
        group; by default one group of them all."""
        return [{"params": [p for p in self.parameters() if p.requires_grad]}]

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "config": dataclasses.asdict(self.config)}
