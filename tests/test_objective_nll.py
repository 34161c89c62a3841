from __future__ import annotations

import math

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from latentbridge import BuildContext, StepContext, TargetText
from latentbridge.bridge.layout import inject
from latentbridge.registry.host import Registry

REGISTRY = Registry.load(autoload=False)


def setup(random_pair):
    target = AutoModelForCausalLM.from_pretrained(random_pair["mistral"]).eval().requires_grad_(False)
    tok = AutoTokenizer.from_pretrained(random_pair["mistral"])
    torch.manual_seed(0)
    translator = REGISTRY.get("translator", "linear").cls(
        REGISTRY.config_for("translator", "linear", {"k": 3, "d_src": 32, "d_tgt": target.config.hidden_size, "target_rms": 0.02})
    )
    injection = REGISTRY.get("injection", "soft_plus_text").cls(REGISTRY.config_for("injection", "soft_plus_text"))
    nll = REGISTRY.get("objective", "nll").cls(REGISTRY.config_for("objective", "nll"), BuildContext(32, 24, 3))
    return target, tok, translator, injection, nll


def text(tok, prompt, answer):
    ids = tok(prompt, add_special_tokens=False)["input_ids"]
    return TargetText([tok.bos_token_id], ids, (0, len(ids)), ids[-2:],
                      tok(answer, add_special_tokens=False)["input_ids"] + [tok.eos_token_id])


def step_loss(target, translator, injection, nll, h, mask, texts, pad_id):
    soft = translator(h, mask)
    inputs = inject(injection, soft, texts, target.get_input_embeddings(), pad_id)
    ctx = StepContext(step=0, soft=soft, inputs=inputs,
                      quantities={"logits": lambda c: target(**c.inputs.model_kwargs()).logits})
    return nll(ctx), ctx


def test_nll_matches_a_hand_computed_cross_entropy(random_pair):
    target, tok, translator, injection, nll = setup(random_pair)
    texts = [text(tok, "Question: Tom has 3 apples.\nAnswer:", " 3 + 1 = 4\n#### 4"),
             text(tok, "Question: 5 eggs?\nAnswer:", " #### 5")]
    h, mask = torch.randn(2, 6, 32), torch.ones(2, 6, dtype=torch.long)
    loss, ctx = step_loss(target, translator, injection, nll, h, mask, texts, tok.pad_token_id)
    logp = torch.log_softmax(ctx.logits.float(), -1)
    total, count = 0.0, 0
    for r, t in enumerate(texts):
        n = len(t.answer)
        width = ctx.logits.shape[1]
        for i, token in enumerate(t.answer):
            position = width - n + i  # answer tokens sit at the right end (left padding)
            total -= logp[r, position - 1, token].item()
            count += 1
    assert math.isclose(loss.item(), total / count, rel_tol=1e-5)


def test_gradient_reaches_translator_and_depends_on_question(random_pair):
    target, tok, translator, injection, nll = setup(random_pair)
    texts = [text(tok, "Question: Tom has 3 apples.\nAnswer:", " #### 3")]
    grads = []
    for seed in (1, 2):  # two different source questions (hidden states)
        torch.manual_seed(seed)
        h, mask = torch.randn(1, 5, 32), torch.ones(1, 5, dtype=torch.long)
        translator.zero_grad()
        loss, _ = step_loss(target, translator, injection, nll, h, mask, texts, tok.pad_token_id)
        loss.backward()
        grads.append(torch.cat([p.grad.flatten() for p in translator.parameters()]))
        assert grads[-1].abs().sum() > 0
    assert not torch.allclose(grads[0], grads[1])
    assert all(p.grad is None for p in target.parameters())  # the frozen target gets none
