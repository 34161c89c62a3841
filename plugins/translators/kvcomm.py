"""Translator ``kvcomm``: KVComm (Shi et al., ICLR 2026, arXiv 2510.03346), training-free selective KV sharing.

The source (sender) reads its prompt; its own keys and values, at its own positions, are placed in front
of the target's (receiver's) cache at a subset of the layers, and the target's text follows them
(positions continue after the source's). At the other layers the source's positions are left empty
(masked out; :mod:`latentbridge.bridge.hide`). Source and target must share the architecture (layers,
key/value heads, head width): ``validate`` refuses another pair.

The layers are chosen once, on ``calibration_items`` train items, by the paper's criterion. With every
layer sharing, each layer's attention from the target's query tokens onto the source's tokens is
averaged over heads and queries (``Ŝ_l``); it is min-max normalised and mixed with a Gaussian prior over
depth, ``P_l = exp(-(l - μ)² / (2σ²))`` with ``μ = (L - 1) / 2`` (also min-max normalised):
``S_l = α Ŝ_l + (1 - α) P_l``; the ``ceil(layer_share · L)`` layers of highest score share. ``layers``
names them by hand instead. The choice is saved with the run (a buffer), so evaluating a run folder reads
it back.

Differences from the authors' code, each documented: the code skips the source's first token in ``Ŝ``
and, at the layers that do not share, keeps that first token (an attention sink) where the paper leaves
them empty; here the paper's formula and empty layers. Calibration reads train items, never the
evaluated ones (the code's calibration sample is the first evaluation item).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from latentbridge import KVGeometryConfig, KVShare, Translator, hookimpl, option
from latentbridge.api.messages import SourceStates
from latentbridge.nn.keys import capture_attention


@dataclass
class KVCommConfig(KVGeometryConfig):
    k: int = option(1, gt=0, help="unused (the message is the source's whole cache)")
    layer_share: float = option(0.3, gt=0, le=1, help="share of the target's layers that read the source's cache "
                                "(the paper's 0.3, 0.5, 0.7)")
    calibration_items: int = option(1, gt=0, help="train items the layers are chosen on (the paper: one is enough)")
    alpha: float = option(1.0, ge=0, le=1, help="weight of the attention score against the depth prior")
    sigma: float = option(10.0, gt=0, help="width of the Gaussian prior over depth, in layers")
    layers: list[int] | None = option(None, help="the sharing layers by hand (no calibration)")


class KVComm(Translator):
    """KVComm: the source's own key/value cache shared at the layers its attention scores choose."""

    name = "kvcomm"
    Config = KVCommConfig
    emits = "kv_share"
    reads_cache = True

    def __init__(self, config: KVCommConfig):
        super().__init__(config)
        if config.target_layers is None:
            raise ValueError("kvcomm: target_layers must be filled in (the target's layer count)")
        chosen = torch.zeros(config.target_layers, dtype=torch.bool)
        if config.layers is not None:
            chosen[list(config.layers)] = True
        self.register_buffer("chosen", chosen)

    @classmethod
    def check_models(cls, source: Any, target: Any, config: KVCommConfig) -> list[Any]:
        """Refused before any weight loads: a pair of other architectures, layers the target lacks."""
        problems: list[Any] = []
        shape = ("num_layers", "num_kv_heads", "head_dim")
        if any(getattr(source, f) != getattr(target, f) for f in shape):
            have = ", ".join(f"{f} {getattr(source, f)} vs {getattr(target, f)}" for f in shape)
            problems.append(f"kvcomm shares the source's cache with a target of the same architecture; "
                            f"{source.name} and {target.name} differ ({have})")
        bad = [layer for layer in config.layers or () if not 0 <= layer < target.num_layers]
        if bad:
            problems.append(("layers", f"{bad} out of range for {target.name} (0..{target.num_layers - 1})"))
        return problems

    @property
    def shared(self) -> list[int]:
        return [int(i) for i in torch.nonzero(self.chosen).flatten().tolist()]

    def message(self, states: SourceStates, seeds: torch.Tensor | None = None) -> KVShare:
        if states.kv is None:
            raise ValueError("kvcomm reads the source's cache: the bridge gave none")
        return KVShare([k for k, _ in states.kv], [v for _, v in states.kv], states.mask, self.shared)

    @torch.no_grad()
    def fit(self, bridge: Any, task: Any, log: Callable[[str], None]) -> None:
        """Choose the sharing layers on the calibration items (unless ``layers`` names them)."""
        if self.config.layers is not None:
            return
        items = task.examples("train")[: self.config.calibration_items]
        if not items:
            raise ValueError("kvcomm: the task has no train item to calibrate the layers on")
        log(f"kvcomm: choosing {math.ceil(self.config.layer_share * len(self.chosen))} of {len(self.chosen)} layers "
            f"on {len(items)} train item(s)")
        scores = torch.stack([attention_to_source(bridge, task.prompt(e), e) for e in items]).mean(0)
        self.chosen.copy_(choose_layers(scores, self.config.layer_share, self.config.alpha, self.config.sigma))


def attention_to_source(bridge: Any, prompt: Any, example: Any) -> torch.Tensor:
    """Per target layer, the attention its query tokens give the source's tokens when every layer shares
    them: summed over the source's positions, averaged over heads and queries (``L``)."""
    states = bridge.source_states([prompt], [example])
    every = KVShare([k for k, _ in states.kv], [v for _, v in states.kv], states.mask, list(range(len(states.kv))))
    inputs = bridge.bridged_inputs(every, [prompt], with_answer=False)
    target = bridge.target.model
    captured = capture_attention(target, inputs, len(states.kv))
    n_source = states.mask.shape[1]
    out = []
    for c in captured:
        key = c.key.repeat_interleave(c.groups, dim=1)  # b H kv e
        logits = (c.query.float() @ key.float().transpose(-1, -2)) * c.scaling  # b H q kv
        q_len, kv_len = logits.shape[-2:]
        allowed = torch.arange(kv_len)[None, :] <= torch.arange(q_len)[:, None] + (kv_len - q_len)
        allowed = allowed & inputs.attention_mask.bool()[:, None, None, :].cpu()
        probs = torch.softmax(logits.masked_fill(~allowed.to(logits.device), float("-inf")), -1)
        out.append(probs[..., :n_source].sum(-1).mean())
    return torch.stack(out).cpu()


def choose_layers(scores: torch.Tensor, share: float, alpha: float, sigma: float) -> torch.Tensor:
    """The ``ceil(share · L)`` layers of highest ``α minmax(scores) + (1 - α) minmax(prior)``, as a mask."""
    n = len(scores)
    depth = torch.arange(n, dtype=torch.float64)
    prior = torch.exp(-((depth - (n - 1) / 2) ** 2) / (2 * sigma**2))
    total = alpha * _minmax(scores.double()) + (1 - alpha) * _minmax(prior)
    keep = torch.topk(total, math.ceil(share * n)).indices
    chosen = torch.zeros(n, dtype=torch.bool)
    chosen[keep] = True
    return chosen


def _minmax(x: torch.Tensor) -> torch.Tensor:
    span = x.max() - x.min()
    return (x - x.min()) / span if span > 0 else torch.zeros_like(x)


@hookimpl
def register_translators(register):
    register(KVComm)
