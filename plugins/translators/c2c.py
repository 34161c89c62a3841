"""Translator ``c2c``: Cache-to-Cache fusion (Fu et al., arXiv 2510.03215), after the authors' code
(thu-nics/C2C at 69eb705: ``rosetta/model/projector.py`` ``C2CProjector``, ``rosetta/train/model_utils.py``,
``script/train/SFT_train.py``), written anew.

The target (receiver) reads its prompt and keeps its own key/value cache. Each receiver layer has a fuser,
one branch for the keys and one for the values. A branch reads, per prompt position, the sharer's entry
(its heads flattened) concatenated *before* the receiver's, and computes (``fuser: reference``, the
default)::

    h = FFN(W_in x + b_in)                              # hidden width, one residual block
    P = W_out FFN^(blocks - 2)(h) + b_out               # -> kv_heads x head_dim
    w = sigmoid(W_s FFN_s(h) + b_s)                     # one weight per head and token
    K_fused = K_receiver + g_K * w_K * P_K              # (values alike, with their own weights)

where ``FFN(x) = x + Dropout(W2 GELU(W1 RMSNorm(x)))`` (RMSNorm eps 1e-6, no biases; the weight branch's
inner width is ``hidden``, the others' ``intermediate``). Each receiver layer has a key gate and a value
gate, logits starting at ``gate_init`` (0.0). In training ``g = sigmoid((logit + G) / tau)`` with Gumbel noise
``G`` drawn per batch row, head and token from the step's seeds; ``tau`` falls geometrically from
``temperature`` (1.0) to ``final_temperature`` (0.001) over ``anneal_steps`` (default: the run's steps),
then stays. At evaluation ``g = 1`` where the logit is > 0, else 0 (a fresh fuser is the target alone).
Receiver layer ``t`` reads sharer layer ``clamp(t + L_sharer - L_receiver, 0, L_sharer - 1)``
(``layer_map: last_aligned``: every receiver layer is fused); ``terminal`` leaves the layers below the
offset unfused.

Tokens are aligned as the authors align them (``alignment: retokenize``, see
:mod:`latentbridge.bridge.retokenize`): the sharer reads the receiver's prompt tokens, each re-encoded with
its own tokenizer (its ``first`` or ``longest`` piece), at the receiver's positions, and position ``i`` is
fused with position ``i``: every prompt token but the last, the receiver's special and template tokens (those
without text: BOS, a chat template's markup) included, as the authors' unaligned path fuses them
(``special_tokens: own`` leaves those their own cache).

Options that differ from the reference, each named in the README: ``special_tokens: own``; ``fuser: light``
(one linear + GELU body, a linear projection and a linear weight, projection starting at zero);
``layer_map: terminal``;
``alignment: last_character`` (the sharer reads its own tokenization at its own positions; each receiver
token reads the sharer token holding its last character, special tokens included, see
:func:`latentbridge.bridge.kv.align`).

With chat templates (``chat_alignment``): ``sections`` aligns as the authors' ``align_chat_messages`` (their
``is_do_alignment``: each model reads its own template, the message tokens re-encoded, template sections
padded to the longer in positions, the cache fused up to the end of the user's message and the rest read with it;
:func:`latentbridge.bridge.retokenize.align_sections`),
``reencode`` re-encodes every receiver token, template included (for one vocabulary, the receiver's own ids, as
their sharer reads them with alignment off), ``auto`` picks ``reencode`` where the tokenizers share their
vocabulary and ``sections`` otherwise. An earlier chat turn's content is a message section;
``include_response`` is not offered with ``sections`` yet.

``include_response: true`` fuses the response as the authors' ``include_response`` does
(:class:`latentbridge.bridge.response.ResponseFusion`): every token from the prompt's last on, in training and at
each decoding step, writes a fused entry, from the receiver's unfused twin and the sharer's cache continued
with the token re-encoded. The authors' sharer reads the receiver's token ids there as they are (their pairs
share a vocabulary); this one reads them re-encoded, as it reads the prompt.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Literal

import torch
from einops import rearrange
from torch import nn

from latentbridge import KVGeometryConfig, Translator, hookimpl, option
from latentbridge.api.messages import KVFusion

KINDS = ("key", "value")


@dataclass
class C2CConfig(KVGeometryConfig):
    fuser: Literal["reference", "light"] = option("reference", help="the authors' fuser (input linear, residual "
                                                  "RMSNorm/GELU blocks, projection and weight branches) or a light one")
    hidden: int = option(1024, gt=0, help="width of each fuser (the reference's hidden_dim)")
    intermediate: int = option(1024, gt=0, help="inner width of the reference fuser's blocks (intermediate_dim)")
    blocks: int = option(3, ge=3, help="residual blocks of the reference fuser's projection path (num_layers)")
    dropout: float = option(0.1, ge=0, lt=1, help="dropout after each reference block")
    alignment: Literal["retokenize", "last_character"] = option(
        "retokenize", help="the source reads the target's tokens, each re-encoded with its own tokenizer, at the "
        "target's positions (the authors'), or its own tokens, each target token reading the one holding its last "
        "character")
    alignment_strategy: Literal["first", "longest"] = option(
        "first", help="with retokenize: which of a re-encoded token's pieces the source reads")
    chat_alignment: Literal["auto", "sections", "reencode"] = option(
        "auto", help="with retokenize and chat templates: sections (the authors' align_chat_messages, their "
        "is_do_alignment: each model reads its own template, the message tokens re-encoded, template sections "
        "padded to the longer in positions, only message tokens fused), reencode (every receiver token re-encoded, "
        "template tokens included: for one vocabulary, the receiver's own ids, as the authors' sharer reads them "
        "without alignment), or auto: reencode where the two tokenizers share their vocabulary, else sections")
    special_tokens: Literal["fused", "own"] = option(
        "fused", help="the receiver's tokens without text in the prompt (BOS, a chat template's markup, a cue after "
        "it) are fused like every prompt token but the last, as the authors' code does without alignment (fused), "
        "or keep the receiver's own cache (own, latentbridge's former behaviour); chat_alignment: sections keeps "
        "the template's own either way, as theirs does")
    layer_map: Literal["last_aligned", "terminal"] = option(
        "last_aligned", help="receiver layer t reads sharer layer t + L_s - L_r, clamped to 0 (last_aligned) or "
        "left unfused below 0 (terminal)")
    gate_init: float = option(0.0, help="initial logit of every key and value gate (0: closed at evaluation)")
    temperature: float = option(1.0, gt=0, help="Gumbel-sigmoid temperature of the gates at the start of training")
    final_temperature: float = option(0.001, gt=0, help="the temperature once annealed")
    anneal_steps: int | None = option(None, gt=0, help="steps over which the temperature falls (default: the run's)")
    include_response: bool = option(False, help="fuse every token from the prompt's last on too, at each decoding "
                                    "step (the authors' include_response; needs alignment: retokenize)")
    dtype: Literal["auto", "float32", "bfloat16"] = option(
        "auto", help="the fusers' parameters and arithmetic: auto = bfloat16 beside a bfloat16 target (the authors "
        "keep the fuser in bf16 with no float32 copy), else float32; float32 whatever the models' (float16 is not "
        "offered: AdamW's epsilon vanishes in it)")

    def check(self) -> list[tuple[str, str]]:
        if self.include_response and self.alignment != "retokenize":
            return [("include_response", "needs alignment: retokenize (the source reads each response token "
                     "re-encoded, at the target's positions)")]
        return []


def layer_map(source_layers: int, target_layers: int, kind: str) -> list[int | None]:
    """The sharer layer each receiver layer reads (None: not fused)."""
    offset = source_layers - target_layers
    if kind == "last_aligned":
        return [min(max(t + offset, 0), source_layers - 1) for t in range(target_layers)]
    return [t + offset if t + offset >= 0 else None for t in range(target_layers)]


class Block(nn.Module):
    """``x + Dropout(W2 GELU(W1 RMSNorm(x)))`` (the reference's ``StandardFFNLayer``)."""

    def __init__(self, width: int, inner: int, dropout: float):
        super().__init__()
        self.norm = nn.RMSNorm(width, eps=1e-6)
        self.w1 = nn.Linear(width, inner, bias=False)
        self.w2 = nn.Linear(inner, width, bias=False)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.drop(self.w2(nn.functional.gelu(self.w1(self.norm(x)))))


class Stack(nn.Module):
    """Blocks in sequence (the reference's ``RegularMLP``)."""

    def __init__(self, n: int, width: int, inner: int, dropout: float):
        super().__init__()
        self.blocks = nn.ModuleList(Block(width, inner, dropout) for _ in range(n))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return x


class LayerFuser(nn.Module):
    """One receiver layer: a key branch, a value branch and their gates. ``branch`` gives the projection
    (``b H t e``) and the per-head weight (``b H t 1``) from the receiver's and the aligned sharer's entries."""

    def __init__(self, c: C2CConfig):
        super().__init__()
        self.heads = c.target_kv_heads
        d_in = c.source_kv_heads * c.source_head_dim + c.target_kv_heads * c.target_head_dim
        d_out = c.target_kv_heads * c.target_head_dim
        for kind in KINDS:
            if c.fuser == "reference":
                parts = {"in": nn.Linear(d_in, c.hidden), "mlp1": Stack(1, c.hidden, c.intermediate, c.dropout),
                         "scalar_mlp2": Stack(1, c.hidden, c.hidden, c.dropout),
                         "scalar_head": nn.Linear(c.hidden, c.target_kv_heads),
                         "proj_mlp2": Stack(c.blocks - 2, c.hidden, c.intermediate, c.dropout),
                         "proj_out": nn.Linear(c.hidden, d_out)}
            else:
                parts = {"body": nn.Sequential(nn.Linear(d_in, c.hidden), nn.GELU()),
                         "project": nn.Linear(c.hidden, d_out), "weight": nn.Linear(c.hidden, c.target_kv_heads)}
                nn.init.zeros_(parts["project"].weight)  # starts as the receiver's own cache
                nn.init.zeros_(parts["project"].bias)
            for name, module in parts.items():
                self.add_module(f"{kind}_{name}", module)
            self.register_parameter(f"{kind}_gate_logit", nn.Parameter(torch.tensor(float(c.gate_init))))
        self.reference = c.fuser == "reference"

    def part(self, kind: str, name: str) -> nn.Module:
        return getattr(self, f"{kind}_{name}")

    def gate_logit(self, kind: str) -> torch.Tensor:
        return getattr(self, f"{kind}_gate_logit")

    def branch(self, kind: str, receiver: torch.Tensor, sharer: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        dtype = self.part(kind, "scalar_head" if self.reference else "weight").weight.dtype
        x = torch.cat([rearrange(sharer, "b h t e -> b t (h e)"), rearrange(receiver, "b h t e -> b t (h e)")], -1)
        x = x.to(dtype)
        if self.reference:
            h = self.part(kind, "mlp1")(self.part(kind, "in")(x))
            projection = self.part(kind, "proj_out")(self.part(kind, "proj_mlp2")(h))
            logit = self.part(kind, "scalar_head")(self.part(kind, "scalar_mlp2")(h))
        else:
            h = self.part(kind, "body")(x)
            projection, logit = self.part(kind, "project")(h), self.part(kind, "weight")(h)
        projection = rearrange(projection, "b t (h e) -> b h t e", h=self.heads)
        return projection, torch.sigmoid(logit).transpose(1, 2)[..., None]


def gumbel(shape: torch.Size, generator: torch.Generator) -> torch.Tensor:
    """One Gumbel(0, 1) draw per element (the reference's ``-log(-log(u + 1e-20) + 1e-20)``)."""
    u = torch.rand(shape, generator=generator)
    return -torch.log(-torch.log(u + 1e-20) + 1e-20)


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
        self.layer_map = layer_map(c.source_layers, c.target_layers, c.layer_map)
        # read by the bridge: the source reads the target's tokens, re-encoded with this strategy
        self.retokenize = c.alignment_strategy if c.alignment == "retokenize" else None
        self.chat_alignment = c.chat_alignment  # read by the bridge where the prompts go through chat templates
        self.fusers = nn.ModuleDict({str(t): LayerFuser(c) for t, s in enumerate(self.layer_map) if s is not None})
        if c.dtype not in ("auto", "float32"):  # auto is the target's dtype, filled in when the bridge is built
            self.fusers.to(getattr(torch, c.dtype))
        self._step, self._total = 0, 1

    def set_progress(self, step: int, total: int) -> None:
        self._step, self._total = step, max(total, 1)

    def load_state_dict(self, state_dict: Any, strict: bool = True, assign: bool = False) -> Any:
        """Weights saved in float32 (a run from before ``dtype: auto``, or with ``dtype: float32``) keep their
        precision: the fusers go back to float32 rather than rounding them to 16 bits."""
        saved = {t.dtype for k, t in state_dict.items() if k.startswith("fusers.") and t.is_floating_point()}
        mine = {p.dtype for p in self.fusers.parameters()}
        if saved == {torch.float32} and mine - {torch.float32}:
            logging.getLogger("latentbridge").warning(
                "c2c: these fusers were saved in float32; they stay float32 (not the models' 16-bit dtype)")
            self.fusers.to(torch.float32)
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    def temperature(self) -> float:
        """``temperature x (final / temperature) ^ min(step / anneal_steps, 1)``."""
        c = self.config
        done = min(self._step / (c.anneal_steps or self._total), 1.0)
        return c.temperature * (c.final_temperature / c.temperature) ** done

    def gate(self, layer: int, kind: str, shape: torch.Size, generator: torch.Generator | None) -> torch.Tensor:
        """The gate of ``layer``'s ``kind`` branch: in training a Gumbel-sigmoid draw per element of ``shape``
        (``b H t 1``; no noise without a generator), at evaluation 1 where its logit is > 0, else 0."""
        logit = self.fusers[str(layer)].gate_logit(kind)
        if not self.training:
            return (logit > 0).to(logit.dtype)
        noise = gumbel(shape, generator).to(logit) if generator is not None else torch.zeros((), dtype=logit.dtype)
        return torch.sigmoid((logit + noise) / self.temperature())

    def message(self, states, seeds=None) -> KVFusion:
        if states.kv is None:
            raise ValueError("c2c reads the source's key/value cache; the bridge did not provide it")
        generator = None
        if self.training and seeds is not None:  # the gate noise of this step, from the step's seeds
            generator = torch.Generator().manual_seed(int(seeds[0]) % (2**63))

        def fuse(layer: int, k: torch.Tensor, v: torch.Tensor, sk: torch.Tensor, sv: torch.Tensor):
            fuser, out = self.fusers[str(layer)], []
            for kind, own, shared in (("key", k, sk), ("value", v, sv)):
                projection, weight = fuser.branch(kind, own, shared)
                gate = self.gate(layer, kind, weight.shape, generator)
                out.append(own + (gate * weight * projection).to(own.dtype))
            return out[0], out[1]

        return KVFusion([k for k, _ in states.kv], [v for _, v in states.kv], states.mask, states.offsets,
                        states.text, fuse, self.layer_map,
                        fuse_special=self.config.special_tokens == "fused",
                        one_to_one=self.config.alignment == "retokenize",
                        response=self.retokenize if self.config.include_response else None,
                        sections=getattr(states, "sections", None))

    def describe(self) -> dict:
        open_ = {t: [kind for kind in KINDS if float(self.fusers[t].gate_logit(kind).detach()) > 0] for t in self.fusers}
        return {**super().describe(), "layer_map": self.layer_map, "open_gates": open_,
                "parameters_per_layer": sum(p.numel() for p in next(iter(self.fusers.values())).parameters())
                if self.fusers else 0}


@hookimpl
def register_translators(register):
    register(C2C)
