"""Key/value messages on every family: what the target reads is exact, however the batch is padded.

For ``kv_prefix`` (after the special prefix, then the prompt or the cue only), ``c2c`` and ``kv_translate``
(under a context split; rotary families only), each family of ``tests/families.py`` as target and as
source, in float32 and bfloat16:

* every row of a left-padded batch gives the logits it gets alone;
* the training layout (prompt + answer in one pass) equals the generation layout (prompt, then the answer
  fed one token at a time through the cache);
* ``c2c`` with a zero fuser equals the target alone; a ``kv_prefix`` message holding the target's own cache of
  some text equals the target reading that text.

The sliding-window families (Mistral with a 16-token window, Gemma-2, Gemma-3) read 2-shot prompts (and
kv_translate's contexts), longer than the window. Before :mod:`latentbridge.bridge.windows`, 166 of these
cases failed: the window counted the padding between a cache and the text as tokens, and ``c2c``'s
prefill kept only the window's last slots.
"""

from __future__ import annotations

import json

import pytest
import torch

from latentbridge.bridge.build import Experiment
from latentbridge.bridge.models import cache_of, with_cache
from latentbridge.config.overrides import apply_overrides
from latentbridge.config.recipe import validate_recipe

from .families import FAMILIES, NAMES, WINDOW
from .test_families import BASE, source_of, target_of

_KV_PREFIX = ["translator.name=kv_prefix", "translator.k=3", "translator.d_model=32", "translator.depth=1"]
KINDS = {
    "kv_prefix": [*_KV_PREFIX, "injection=soft_plus_text"],  # the prompt's text after the message
    "kv_prefix_soft_only": [*_KV_PREFIX, "injection=soft_only"],  # the message, then the cue only
    "c2c": ["translator.name=c2c", "translator.hidden=16", "translator.intermediate=16", "injection=fused_prompt",
            "task.shots=2"],
    # c2c fusing the response too (the authors' include_response): every answer token's entry is fused
    "c2c_response": ["translator.name=c2c", "translator.hidden=16", "translator.intermediate=16",
                     "injection=fused_prompt", "task.shots=2", "translator.include_response=true"],
    # c2c through both models' chat templates, aligned by the authors' sections (families with templates only)
    "c2c_chat": ["translator.name=c2c", "translator.hidden=16", "translator.intermediate=16", "injection=fused_prompt",
                 "task.shots=2", "task.chat_template=true"],
    # the same without a cue: the prompt ends with the template's assistant opening (lm-eval's chat requests)
    "c2c_chat_nocue": ["translator.name=c2c", "translator.hidden=16", "translator.intermediate=16",
                       "injection=fused_prompt", "task.shots=2", "task.chat_template=true", "task.cue=''"],
    # a context split: the source reads three facts and the question, the target the question only
    "kv_translate": ["task=passages", "task.n_facts=3", "translator=kv_translate", "translator.hidden=16",
                     "injection=soft_plus_text"],
}
KINDS["kv_prefix"].append("task.shots=2")
KINDS["kv_prefix_soft_only"].append("task.shots=2")
_EXPERIMENTS: dict[tuple, Experiment] = {}


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LATENTBRIDGE_CACHE_DIR", str(tmp_path / "cache"))


def build(families, source: str, target: str, kind: str, dtype: str) -> Experiment:
    key = (source, target, kind, dtype)
    if key not in _EXPERIMENTS:
        data = json.loads(json.dumps(BASE))
        data["models"] = {"source": str(families.folders[source]), "target": str(families.folders[target]),
                          "device": "cpu", "dtype": dtype}
        exp = Experiment.build(validate_recipe(apply_overrides(data, KINDS[kind])))
        torch.manual_seed(0)
        with torch.no_grad():  # a message that changes what the target reads (c2c: gates open)
            for p in exp.translator.parameters():
                p.add_(torch.randn_like(p) * 0.05)
            for fuser in getattr(exp.translator, "fusers", {}).values():
                fuser.key_gate_logit.fill_(1.0)
                fuser.value_gate_logit.fill_(1.0)
        exp.translator.eval()
        _EXPERIMENTS[key] = exp
    return _EXPERIMENTS[key]


def _pair(name: str, role: str) -> tuple[str, str]:
    return (source_of(name), name) if role == "target" else (name, target_of(name))


CASES = [(name, role, kind, dtype) for name in NAMES for role in ("target", "source") for kind in KINDS
         for dtype in ("float32", "bfloat16")
         # kv_translate moves keys between rotary positions: both models rotary (validate refuses the others)
         if (kind != "kv_translate" or all(FAMILIES[m][0].rotary for m in _pair(name, role)))
         and (not kind.startswith("c2c_chat") or all(FAMILIES[m][0].chat for m in _pair(name, role)))]
TOL = {"float32": 1e-4, "bfloat16": 3e-2}


def experiment_for(families, name, role, kind, dtype) -> Experiment:
    return build(families, *_pair(name, role), kind, dtype)


def prompts_of(exp, n=4):
    return [exp.task.prompt(e) for e in exp.task.examples("test")[:n]]


def real(t, mask, r):
    """Row ``r`` of ``t`` (``b q ...``) at its real positions (``mask`` covers a cache, then the ``q`` input)."""
    return t[r][mask[r].bool()[-t.shape[1]:]]


def teacher_forced(model, inputs, tokens: torch.Tensor) -> torch.Tensor:
    """The generation layout: ``inputs`` read once with a cache, then ``tokens`` (``b n``) fed one at a time as
    :func:`~latentbridge.bridge.generation.greedy_generate` feeds what it chose; the logits after the prompt
    and after each token (``b n+1 vocab``)."""
    with inputs.patched(model):
        out = model(**inputs.model_kwargs(), use_cache=True)
        past, logits = cache_of(out), [out.logits[:, -1]]
        mask, pos = inputs.attention_mask, inputs.first_new_position()
        for i in range(tokens.shape[1]):
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], 1)
            if inputs.step is not None:  # as greedy_generate does
                inputs.step(past, tokens[:, i : i + 1], mask, pos)
            out = model(input_ids=tokens[:, i : i + 1], attention_mask=mask, position_ids=pos,
                        **with_cache(model, past), use_cache=True)
            past, pos = cache_of(out), pos + 1
            logits.append(out.logits[:, -1])
    return torch.stack(logits, 1)


@pytest.mark.parametrize(("name", "role", "kind", "dtype"), CASES)
def test_each_row_of_a_padded_batch_reads_what_it_reads_alone(families, name, role, kind, dtype):
    exp = experiment_for(families, name, role, kind, dtype)
    bridge, target = exp.bridge, exp.bridge.target
    prompts = prompts_of(exp)
    with torch.no_grad():
        message = bridge.message(prompts)
    # what the window must span: the target's prompts, or (kv_translate) the context the message holds
    sizes = message.ntokens() if kind == "kv_translate" else \
        [len(bridge.target_encoder.prompt_ids(p)) for p in prompts]
    assert len(set(sizes)) > 1 and min(sizes) > WINDOW
    with torch.no_grad():
        batch = bridge.bridged_inputs(message, prompts, with_answer=True)
        logits = batch.forward(target.model).logits.float()
        for r in range(len(prompts)):
            one = bridge.bridged_inputs(bridge.message(prompts[r : r + 1]), prompts[r : r + 1], with_answer=True)
            alone = one.forward(target.model).logits.float()[0]
            tol = TOL[dtype]
            torch.testing.assert_close(real(logits, batch.attention_mask, r), alone[-int(real(logits, batch.attention_mask, r).shape[0]):],
                                       atol=tol, rtol=tol)


@pytest.mark.parametrize(("name", "role", "kind", "dtype"), CASES)
def test_the_training_layout_equals_the_generation_layout(families, name, role, kind, dtype):
    """Every answer token's logits: the prompt and the answer in one pass (training) equal the prompt read
    once and the answer fed token by token through the cache (generation), row by row of a padded batch."""
    exp = experiment_for(families, name, role, kind, dtype)
    bridge, target = exp.bridge, exp.bridge.target
    prompts = prompts_of(exp)
    with torch.no_grad():
        message = bridge.message(prompts)
        train = bridge.bridged_inputs(message, prompts, with_answer=True)
        train_logits = train.forward(target.model).logits.float()
        answers = [bridge.target_encoder.target_text(p).answer for p in prompts]
        n = min(len(a) for a in answers)
        assert n >= 3
        for r, answer in enumerate(answers):  # one row at a time: the generation layout feeds equal lengths
            one = bridge.bridged_inputs(bridge.message(prompts[r : r + 1]), prompts[r : r + 1], with_answer=False)
            fed = teacher_forced(target.model, one, torch.tensor([answer[:n]]))[0].float()
            supervised = (train.labels[r] != -100).nonzero().flatten()
            # the logits that predict each answer token: at the position before it
            trained = train_logits[r, supervised[: n + 1] - 1]
            torch.testing.assert_close(trained, fed[: len(trained)], atol=TOL[dtype], rtol=TOL[dtype])
        # the batch, padded, through the generation layout: its first step equals each row's training logits
        batch = bridge.bridged_inputs(message, prompts, with_answer=False)
        first = teacher_forced(target.model, batch, torch.tensor([a[:1] for a in answers]))
        for r in range(len(prompts)):
            supervised = (train.labels[r] != -100).nonzero().flatten()
            torch.testing.assert_close(first[r].float(), train_logits[r, supervised[:2] - 1], atol=TOL[dtype],
                                       rtol=TOL[dtype])


def padded_row(bridge, prompt, answer: list[int]) -> tuple[list[int], list[int], list[int]]:
    """The receiver's row as the authors pad it (tests/c2c_sections_reference.py; the sharer reading its own
    template), then the answer at the positions after it: ids (pads as the target's pad id), attention mask,
    positions. Pads that end the prompt are left out (their positions stay empty): the authors' row predicts the
    first answer token from its last slot, a pad there; here it is predicted from the last real token."""
    from .c2c_sections_reference import PAD, align_chat

    t, s = bridge.target_encoder, bridge.source_encoder
    padded, _, _ = align_chat(t.prompt_ids(prompt), t.message_flags(prompt), s.prompt_ids(prompt),
                              s.message_flags(prompt), lambda ids: ids)
    kept = len(padded)
    while padded[kept - 1] == PAD:
        kept -= 1
    row = padded[:kept] + answer
    positions = [*range(kept), *range(len(padded), len(padded) + len(answer))]
    return [bridge.target.pad_id if i == PAD else i for i in row], [int(i != PAD) for i in row], positions


def _answer_logits(inputs, logits: torch.Tensor, r: int) -> torch.Tensor:
    """Row ``r``'s logits that predict its answer tokens (at the position before each)."""
    supervised = (inputs.labels[r] != -100).nonzero().flatten()
    return logits[r, supervised - 1]


@pytest.mark.parametrize(("name", "role", "kind", "dtype"),
                         [c for c in CASES if c[2] in ("c2c", "c2c_response", "c2c_chat", "c2c_chat_nocue")])
def test_a_zero_fuser_reads_as_the_target_alone(families, name, role, kind, dtype):
    """c2c whose fusers add nothing: every row of a padded batch gets the logits of the target reading its
    own prompt and answer, as plain text (under chat templates, at the positions of the authors' padded
    sequence: tests/c2c_sections_reference.py)."""
    exp = experiment_for(families, name, role, kind, dtype)
    bridge, target = exp.bridge, exp.bridge.target
    prompts = prompts_of(exp)
    saved = {k: v.clone() for k, v in exp.translator.state_dict().items()}
    try:
        with torch.no_grad():
            for fuser in exp.translator.fusers.values():  # gates open, projections zero
                for part in ("key", "value"):
                    fuser.part(part, "proj_out").weight.zero_()
                    fuser.part(part, "proj_out").bias.zero_()
            inputs = bridge.bridged_inputs(bridge.message(prompts), prompts, with_answer=True)
            logits = inputs.forward(target.model).logits.float()
            for r, p in enumerate(prompts):
                text = bridge.target_encoder.target_text(p)
                ids = [*text.prefix, *text.prompt, *text.answer]
                if kind.startswith("c2c_chat"):  # the authors' padded row itself: its pads masked out, positions 0 .. n-1
                    ids, mask, positions = padded_row(bridge, p, list(text.answer))
                    alone = target.model(input_ids=torch.tensor([ids]), attention_mask=torch.tensor([mask]),
                                         position_ids=torch.tensor([positions])).logits[0].float()
                else:
                    alone = target.model(input_ids=torch.tensor([ids])).logits[0].float()
                n = len(text.answer)
                torch.testing.assert_close(_answer_logits(inputs, logits, r), alone[len(ids) - n - 1 : -1],
                                           atol=TOL[dtype], rtol=TOL[dtype])
    finally:
        exp.translator.load_state_dict(saved)


@pytest.mark.parametrize(("name", "role", "kind", "dtype"),
                         [c for c in CASES if c[2] in ("kv_prefix", "kv_prefix_soft_only")])
def test_a_prefix_of_the_targets_own_cache_reads_as_that_text(families, name, role, kind, dtype):
    """A kv prefix holding the target's own keys and values of a few tokens (computed after its special
    prefix) gives every row of a padded batch the logits of the target reading those tokens as text."""
    from latentbridge.api.messages import KVPrefix

    exp = experiment_for(families, name, role, kind, dtype)
    bridge, target = exp.bridge, exp.bridge.target
    prompts = prompts_of(exp)
    texts = [bridge.target_encoder.target_text(p) for p in prompts]
    prefix = list(texts[0].prefix)
    words = target.tokenizer(" seven apples and", add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        out = target.model(input_ids=torch.tensor([prefix + words]), use_cache=True)
        own = [(layer.keys[..., len(prefix):, :], layer.values[..., len(prefix):, :]) for layer in cache_of(out).layers]
        b = len(prompts)
        message = KVPrefix(keys=[k.expand(b, -1, -1, -1) for k, _ in own],
                           values=[v.expand(b, -1, -1, -1) for _, v in own])
        inputs = bridge.bridged_inputs(message, prompts, with_answer=True)
        logits = inputs.forward(target.model).logits.float()
        after = (lambda t: list(t.cue)) if kind == "kv_prefix_soft_only" else (lambda t: list(t.prompt))
        for r, text in enumerate(texts):
            ids = [*prefix, *words, *after(text), *text.answer]
            alone = target.model(input_ids=torch.tensor([ids])).logits[0].float()
            n = len(text.answer)
            torch.testing.assert_close(_answer_logits(inputs, logits, r), alone[len(ids) - n - 1 : -1],
                                       atol=TOL[dtype], rtol=TOL[dtype])
