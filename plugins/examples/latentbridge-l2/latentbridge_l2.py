"""An example third-party latentbridge plugin: objective ``l2`` (an L2 penalty on the soft tokens), a
message kind of its own (``soft_echo``) with the translator that emits it and the injection mode that places
it, a key/value message kind of its own (``kv_echo``, laid out as a cache prefix, so the built-in
``soft_only`` and ``soft_plus_text`` place it) with its translator, and an evaluation system of its own
(``answer_relay``). It imports only ``latentbridge``,
``latentbridge.api`` and a built-in translator."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from latentbridge.plugins.translators.linear import LinearTranslator

from latentbridge import (
    InjectionMode,
    KVGeometryConfig,
    KVPrefix,
    Message,
    Objective,
    ObjectiveConfig,
    Soft,
    StepContext,
    System,
    Text,
    Translator,
    hookimpl,
    option,
)
from latentbridge.api.injection import answer_segment


@dataclass
class L2Config(ObjectiveConfig):
    norm: float | None = option(
        None, gt=0, help="if set, pull each soft token's L2 norm toward this value instead of toward 0"
    )


class L2(Objective):
    """Mean squared L2 norm of the soft tokens (or squared distance of each norm to `norm`)."""

    name = "l2"
    Config = L2Config

    def compute(self, step: StepContext) -> torch.Tensor:
        norms = step.soft.float().norm(dim=-1)  # b k
        if self.config.norm is None:
            return norms.pow(2).mean()
        return (norms - self.config.norm).pow(2).mean()


@hookimpl
def register_objectives(register):
    register(L2)


# -- a message kind of its own: soft tokens read twice, before and after the prompt -----------------
# (shows that a third-party package adds a message kind, a translator that emits it and an injection
# mode that places it, without touching latentbridge's core)


@dataclass
class SoftEcho(Message):
    """``tokens``: ``b k d_tgt``, placed at every ``Soft()`` of the row (twice with ``soft_around``)."""

    tokens: torch.Tensor
    kind = "soft_echo"

    def rows(self):
        return self.tokens.shape[0]

    def ntokens(self):
        return [self.tokens.shape[1]] * self.rows()

    def nbytes(self):  # what crosses the wire is the k tokens once; the target reads them twice
        return [self.tokens[0].numel() * self.tokens.element_size()] * self.rows()

    def vectors(self):  # what the statistics-keeping controls (covgauss, randomrot) redraw or rotate
        return [self.tokens]

    def with_vectors(self, groups):
        return SoftEcho(groups[0].to(self.tokens.dtype))

    def target_inputs(self, bridge, rows, texts, prompts):  # laid out as soft tokens are (bridge.layout)
        return bridge.layout.assemble(rows, self.tokens)


class EchoLinear(LinearTranslator):
    """The built-in linear translator, its soft tokens sent as a ``soft_echo`` message."""

    name = "echo_linear"
    emits = "soft_echo"

    def message(self, states, seeds=None):
        return SoftEcho(self(states.hidden, states.mask, seeds=seeds))


class SoftAround(InjectionMode):
    """[bos][soft][prompt][soft]: the message before the prompt and again right before the answer."""

    name = "soft_around"
    accepts = ("soft_echo",)

    def segments(self, text):
        return [Text(text.prefix), Soft(), Text(text.prompt), Soft(), *answer_segment(text)]


# -- a key/value message kind of its own: k virtual tokens' keys and values, read as a cache prefix ---------


@dataclass
class KVEcho(Message):
    """``keys[l]``, ``values[l]``: ``b kv_heads k head_dim`` per target layer (after its rotary embedding),
    laid out as the built-in kv prefix is (``bridge.layout.kv_prefix``), so the target reads them as a
    cache right after its special prefix; its bytes are those of every layer's keys and values."""

    keys: list
    values: list
    kind = "kv_echo"
    layout = "cache_prefix"  # the family of segments it needs: every injection mode that accepts it places it

    def rows(self):
        return self.keys[0].shape[0]

    def ntokens(self):
        return [self.keys[0].shape[2]] * self.rows()

    def nbytes(self):
        per_row = sum(k[0].numel() * k.element_size() + v[0].numel() * v.element_size()
                      for k, v in zip(self.keys, self.values, strict=True))
        return [per_row] * self.rows()

    def vectors(self):
        return [t.transpose(1, 2).flatten(2) for pair in zip(self.keys, self.values, strict=True) for t in pair]

    def with_vectors(self, groups):
        flat = [t for pair in zip(self.keys, self.values, strict=True) for t in pair]
        shaped = [g.reshape(t.shape[0], t.shape[2], t.shape[1], t.shape[3]).transpose(1, 2).to(t.dtype)
                  for g, t in zip(groups, flat, strict=True)]
        return KVEcho(shaped[0::2], shaped[1::2])

    def target_inputs(self, bridge, rows, texts, prompts):
        return bridge.layout.kv_prefix(KVPrefix(self.keys, self.values), rows)


@dataclass
class EchoKVConfig(KVGeometryConfig):
    pass


class EchoKV(Translator):
    """The source's states averaged, then one linear map per target layer to k virtual keys and values."""

    name = "echo_kv"
    Config = EchoKVConfig
    emits = "kv_echo"

    def __init__(self, config):
        super().__init__(config)
        c = config
        self.heads, self.head_dim = c.target_kv_heads, c.target_head_dim
        self.out = torch.nn.Linear(c.d_src, c.target_layers * 2 * c.k * c.target_kv_heads * c.target_head_dim)

    def message(self, states, seeds=None):
        c = self.config
        h, mask = states.hidden.to(self.out.weight.dtype), states.mask.to(self.out.weight.dtype)
        pooled = (h * mask[..., None]).sum(1) / mask.sum(1, keepdim=True).clamp(min=1)
        kv = self.out(pooled).view(h.shape[0], c.target_layers, 2, self.heads, c.k, self.head_dim)
        return KVEcho([kv[:, i, 0] for i in range(c.target_layers)], [kv[:, i, 1] for i in range(c.target_layers)])


@hookimpl
def register_translators(register):
    register(EchoLinear)
    register(EchoKV)


@hookimpl
def register_injection_modes(register):
    register(SoftAround)


# -- an evaluation system of its own: the source's final answer line alone, relayed as text -------------


class AnswerRelay(System):
    """The source's final '####' line alone, handed to the target as text after the cue."""

    name = "answer_relay"
    role = "baseline"  # reads nothing trained: generated once and cached

    def _lines(self, ev):
        return [f" #### {out.split('####')[-1].strip()}\n" if "####" in out else " " for out in ev.baseline("source")]

    def generate(self, ev):
        enc = ev.bridge.target_encoder
        rows = [enc.continued_ids(p, line) for p, line in zip(ev.prompts, self._lines(ev), strict=True)]
        return ev.generate_text(ev.bridge.target, rows, "answer_relay")

    def message_sizes(self, ev, outputs):
        return [(len(t.encode()), len(ev.bridge.target_encoder.ids(t))) for t in self._lines(ev)]


@hookimpl
def register_systems(register):
    register(AnswerRelay)
