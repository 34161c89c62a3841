"""Translator ``c2c``: Cache-to-Cache fusion (after Fu et al., arXiv 2510.03215), written from its description.

The target (receiver) reads its prompt and keeps its own key/value cache; for each receiver layer, a fuser
takes the concatenation of the source's (sharer's) and the receiver's keys at each prompt position (and
separately the values), maps it to ``hidden`` features, and has two branches: a projection back to the
receiver's ``kv_heads x head_dim``, and a per-head weight through a sigmoid. A learned scalar gate per
layer decides whether the layer is fused: in training a Gumbel-sigmoid whose temperature anneals from
``temperature`` to ``final_temperature`` over training, at evaluation a hard 0/1 gate. The fused cache is
the receiver's own plus ``gate x weight x projection``: the receiver's cache is kept. Receiver layer ``t``
reads sharer layer ``t + (L_sharer - L_receiver)`` (the terminal mapping; receiver layers below that
offset are not fused). Different tokenizers are aligned one to one: each receiver token reads the
sharer token that holds its last character (see :func:`latentbridge.bridge.kv.align`). Both models stay
frozen; the answer positions are not fused; decoding continues on the fused cache.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from einops import rearrange
from torch import nn

from latentbridge import Translator, TranslatorConfig, hookimpl, option
from latentbridge.api.messages import KVFusion


@dataclass
class C2CConfig(TranslatorConfig):
    hidden: int = option(128, gt=0, help="width of each layer's fuser")
    gate_init: float = option(1.0, help="initial logit of every layer's gate (sigmoid(1) = 0.73: fused)")
    temperature: float = option(1.0, gt=0, help="Gumbel-sigmoid temperature of the gates at the start of training")
    final_temperature: float = option(0.05, gt=0, help="the temperature at the end of training")
    source_layers: int | None = option(None, gt=0, help="sharer layers (default: read from the source)")
    source_kv_heads: int | None = option(None, gt=0, help="sharer key/value heads (default: read from the source)")
    source_head_dim: int | None = option(None, gt=0, help="sharer head width (default: read from the source)")
    target_layers: int | None = option(None, gt=0, help="receiver layers (default: read from the target)")
    target_kv_heads: int | None = option(None, gt=0, help="receiver key/value heads (default: read from the target)")
    target_head_dim: int | None = option(None, gt=0, help="receiver head width (default: read from the target)")


class Fuser(nn.Module):
    """One receiver layer, keys or values: ``concat(sharer, receiver) -> hidden -> (projection, head weight)``."""

    def __init__(self, d_source: int, heads: int, head_dim: int, hidden: int):
        super().__init__()
        self.heads = heads
        self.body = nn.Sequential(nn.Linear(d_source + heads * head_dim, hidden), nn.GELU())
        self.project = nn.Linear(hidden, heads * head_dim)
        self.weight = nn.Linear(hidden, heads)
        nn.init.zeros_(self.project.weight)  # starts as the receiver's own cache
        nn.init.zeros_(self.project.bias)

    def forward(self, receiver: torch.Tensor, sharer: torch.Tensor) -> torch.Tensor:
        """``receiver b H t e`` and the aligned ``sharer b Hs t es`` -> the delta ``b H t e``."""
        x = torch.cat([rearrange(sharer, "b h t e -> b t (h e)"), rearrange(receiver, "b h t e -> b t (h e)")], -1)
        y = self.body(x.float())
        projection = rearrange(self.project(y), "b t (h e) -> b h t e", h=self.heads)
        weight = torch.sigmoid(self.weight(y)).transpose(1, 2)[..., None]  # b H t 1
        return (weight * projection).to(receiver.dtype)


class C2C(Translator):
    """Fuses the sharer's key/value cache into the receiver's own, layer by layer, with learned gates."""

    name = "c2c"
    Config = C2CConfig
    emits = "kv_fusion"
    reads_cache = True
    fuses_target_prompt = True

    def __init__(self, config: C2CConfig):
        super().__init__(config)
        c = config
        if None in (c.source_layers, c.source_kv_heads, c.source_head_dim, c.target_layers, c.target_kv_heads,
                    c.target_head_dim):
            raise ValueError("c2c: the layer counts, heads and head widths of both models must be filled in")
        offset = c.source_layers - c.target_layers
        self.layer_map = [t + offset if t + offset >= 0 else None for t in range(c.target_layers)]
        d_source = c.source_kv_heads * c.source_head_dim
        mapped = [str(t) for t, s in enumerate(self.layer_map) if s is not None]  # only fused layers get a fuser
        self.key_fusers = nn.ModuleDict({t: Fuser(d_source, c.target_kv_heads, c.target_head_dim, c.hidden)
                                         for t in mapped})
        self.value_fusers = nn.ModuleDict({t: Fuser(d_source, c.target_kv_heads, c.target_head_dim, c.hidden)
                                           for t in mapped})
        self.gate_logits = nn.Parameter(torch.full((c.target_layers,), float(c.gate_init)))
        self.register_buffer("progress", torch.zeros(()), persistent=False)
        self._noise: torch.Tensor | None = None

    def set_progress(self, step: int, total: int) -> None:
        self.progress.fill_(step / max(total, 1))

    def temperature(self) -> float:
        c, p = self.config, float(self.progress)
        return c.temperature * (c.final_temperature / c.temperature) ** p  # geometric annealing

    def gates(self) -> torch.Tensor:
        """Per receiver layer: a Gumbel-sigmoid sample in training, the hard 0/1 gate at evaluation."""
        if not self.training:
            return (self.gate_logits > 0).float()
        u = self._noise if self._noise is not None else torch.full_like(self.gate_logits, 0.5)
        logistic = torch.log(u) - torch.log1p(-u)
        return torch.sigmoid((self.gate_logits + logistic) / self.temperature())

    def message(self, states, seeds=None) -> KVFusion:
        if states.kv is None:
            raise ValueError("c2c reads the source's key/value cache; the bridge did not provide it")
        self._noise = None
        if self.training and seeds is not None:  # the gate noise of this step, from the step's seeds
            gen = torch.Generator().manual_seed(int(seeds[0]) % (2**63))
            self._noise = torch.rand(self.gate_logits.shape, generator=gen).clamp(1e-6, 1 - 1e-6).to(self.gate_logits)
        gates = self.gates()

        def fuse(layer: int, k: torch.Tensor, v: torch.Tensor, sk: torch.Tensor, sv: torch.Tensor):
            g = gates[layer].to(k.dtype)
            return k + g * self.key_fusers[str(layer)](k, sk), v + g * self.value_fusers[str(layer)](v, sv)

        return KVFusion([k for k, _ in states.kv], [v for _, v in states.kv], states.mask, states.offsets,
                        states.text, fuse, self.layer_map, extra={"gates": gates.detach()})

    def describe(self) -> dict:
        return {**super().describe(), "layer_map": self.layer_map, "gates": (self.gate_logits > 0).tolist()}


@hookimpl
def register_translators(register):
    register(C2C)
