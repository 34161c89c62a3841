"""``soft_after_header``: the message after the few-shot header, the header read once as a cache.

The cached layout must read exactly what the whole row read at once reads (the same ids, positions and
attention), give the soft tokens the same gradient, and be the same in training and generation, on
left-padded batches, with one header for every row (run once, kept for the next batch) or one per row."""

from __future__ import annotations

import pytest
import torch

from latentbridge.api.segments import Soft, Text
from latentbridge.bridge.generation import greedy_generate
from latentbridge.bridge.layout import assemble, split_cached

from .helpers import make_experiment

EXEMPLARS = ["fixed", "per_item"]  # one header for every row / a header per row


def experiment(random_pair, exemplars, *more, reverse=False):
    return make_experiment(random_pair, "injection=soft_after_header", "task.shots=2",
                           f"task.exemplars={exemplars}", *more, reverse=reverse)


def batch(exp, n=5):
    prompts = [exp.task.prompt(e) for e in exp.task.examples("test")[:n]]  # different lengths: padding differs
    return prompts


def whole(bridge, soft, prompts, with_answer):
    """The same rows laid out without the cache: every token read in one pass."""
    texts = [bridge.target_encoder.target_text(p, with_answer) for p in prompts]
    rows = [bridge.injection.segments(t) for t in texts]
    target = bridge.target
    return assemble(rows, soft.to(target.dtype), target.embed, target.pad_id)


def real_logits(inputs, logits):
    """Per row, the logits of its real input tokens (the cache's positions are not in ``logits``)."""
    mask = inputs.attention_mask[:, -logits.shape[1]:].bool()
    return [logits[r][mask[r]] for r in range(logits.shape[0])]


@pytest.mark.parametrize("exemplars", EXEMPLARS)
def test_the_message_sits_between_the_header_and_the_question(random_pair, exemplars):
    exp = experiment(random_pair, exemplars)
    bridge = exp.bridge
    for prompt in batch(exp):
        text = bridge.target_encoder.target_text(prompt)
        row = bridge.injection.segments(text)
        lead, soft, rest = row[0], row[1], row[2]
        assert isinstance(lead, Text) and lead.cached and isinstance(soft, Soft)
        start, end = text.question_span
        assert list(lead.ids) == [*text.prefix, *text.prompt[:start]]
        assert len(text.prompt[:start]) > 10, "two exemplars make a header"
        assert list(rest.ids)[: end - start] == list(text.question_ids()), "the question follows the message"
        # the header holds the exemplars, not this question
        header = bridge.target.tokenizer.decode(text.prompt[:start])
        assert prompt.question.strip() not in header


@pytest.mark.parametrize("exemplars", EXEMPLARS)
@pytest.mark.parametrize("with_answer", [True, False], ids=["training", "generation"])
def test_the_cached_header_reads_as_the_whole_row(random_pair, exemplars, with_answer):
    exp = experiment(random_pair, exemplars)
    bridge = exp.bridge
    prompts = batch(exp)
    with torch.no_grad():
        soft = bridge.soft_tokens(prompts)
        cached = bridge.bridged_inputs(soft, prompts, with_answer=with_answer)
        plain = whole(bridge, soft, prompts, with_answer)
        model = bridge.target.model
        assert cached.cache is not None and plain.cache is None
        fast = real_logits(cached, cached.forward(model).logits)
        slow = real_logits(plain, model(**plain.model_kwargs()).logits)
    lead = cached.attention_mask.shape[1] - cached.inputs_embeds.shape[1]
    assert lead > 10 and cached.inputs_embeds.shape[1] < plain.inputs_embeds.shape[1] - 10, "the header is cached"
    for r in range(len(prompts)):
        n = fast[r].shape[0]
        torch.testing.assert_close(fast[r], slow[r][-n:], rtol=1e-4, atol=1e-4)
        # the labels are the whole row's, cut where the cache ends
        labels = plain.labels[r][plain.attention_mask[r].bool()][-n:]
        assert torch.equal(cached.labels[r][cached.attention_mask[r, lead:].bool()], labels)
    if exemplars == "per_item":
        assert (cached.attention_mask[:, :lead] == 0).any(), "headers of different lengths are left-padded"


@pytest.mark.parametrize("exemplars", EXEMPLARS)
def test_the_soft_tokens_get_the_whole_rows_gradient(random_pair, exemplars):
    exp = experiment(random_pair, exemplars)
    bridge = exp.bridge
    prompts = batch(exp, 4)
    with torch.no_grad():
        base = bridge.soft_tokens(prompts)
    grads = []
    for build in (lambda s: bridge.bridged_inputs(s, prompts, with_answer=True), lambda s: whole(bridge, s, prompts, True)):
        soft = base.clone().requires_grad_(True)
        inputs = build(soft)
        out = inputs.forward(bridge.target.model, labels=inputs.labels)
        out.loss.backward()
        grads.append(soft.grad)
    assert grads[0].abs().sum() > 0
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("translator", ["linear", "kv_prefix"])
@pytest.mark.parametrize("exemplars", EXEMPLARS)
@pytest.mark.parametrize("reverse", [False, True], ids=["llama->mistral", "mistral->llama"])
def test_training_equals_generation_after_the_cached_header(random_pair, reverse, exemplars, translator):
    """Teacher-forced logits at each row's first answer position equal the first generation step's, and
    greedy decoding takes their argmax: one layout for both (soft tokens, and a kv prefix after the header)."""
    exp = experiment(random_pair, exemplars, f"translator={{name: {translator}, k: 3}}", reverse=reverse)
    bridge = exp.bridge
    prompts = batch(exp)
    with torch.no_grad():
        message = bridge.message(prompts)
        train = bridge.bridged_inputs(message, prompts, with_answer=True)
        gen = bridge.bridged_inputs(message, prompts, with_answer=False)
        assert train.cache is not None
        model = bridge.target.model
        teacher = train.forward(model).logits
        first = gen.forward(model).logits[:, -1]
    generated = greedy_generate(model, bridge.target.tokenizer, gen, max_new_tokens=1, eos_ids=set())
    width = teacher.shape[1]
    for r, prompt in enumerate(prompts):
        answer = bridge.target_encoder.target_text(prompt).answer
        at = width - len(answer) - 1  # the position that predicts the first answer token
        assert train.labels[r, at + 1] == answer[0]
        torch.testing.assert_close(teacher[r, at], first[r], rtol=1e-4, atol=1e-4)
        assert generated[r].token_ids[0] == int(teacher[r, at].argmax())


@pytest.mark.parametrize("translator", ["linear", "kv_prefix"])
def test_a_shared_header_is_run_once_and_kept(random_pair, monkeypatch, translator):
    from latentbridge.bridge import prefix as prefix_module

    exp = experiment(random_pair, "fixed", f"translator={{name: {translator}, k: 3}}")
    bridge = exp.bridge
    prompts = batch(exp, 6)
    calls = []
    compute = prefix_module.PrefixState.compute.__func__
    monkeypatch.setattr(prefix_module.PrefixState, "compute",
                        classmethod(lambda cls, *a, **k: (a[0] is bridge.target.model and calls.append(len(a[1])))
                                    or compute(cls, *a, **k)))
    with torch.no_grad():
        first = bridge.bridged_inputs(bridge.message(prompts[:3]), prompts[:3], with_answer=True)
        second = bridge.bridged_inputs(bridge.message(prompts[3:]), prompts[3:], with_answer=True)
    assert len(calls) == 1, "the second batch reuses the header's cache"
    assert (first.attention_mask[:, : calls[0]] == 1).all() and (second.attention_mask[:, : calls[0]] == 1).all()


def cached_against_whole(bridge, leads, rests, soft):
    """Logits of each row's real input tokens: laid out after the leads' cache, and laid out whole."""
    target = bridge.target
    with torch.no_grad():
        cached = bridge.layout.after_lead(leads, rests, soft)
        plain = assemble([[Text(lead), *rest] for lead, rest in zip(leads, rests, strict=True)], soft,
                         target.embed, target.pad_id)
        fast = real_logits(cached, cached.forward(target.model).logits)
        slow = real_logits(plain, target.model(**plain.model_kwargs()).logits)
    for f, w in zip(fast, slow, strict=True):
        torch.testing.assert_close(f, w[-f.shape[0]:], rtol=1e-4, atol=1e-4)


def leads_and_rests(bridge, prompt):
    ids = bridge.target_encoder.prompt_ids(prompt)
    assert len(ids) > 40
    return ids[:20], [[Soft(), Text(ids[20:32])], [Soft(), Text(ids[20:27])]]  # two rests: padding differs


def test_leads_of_one_length_but_other_ids_are_not_shared(random_pair):
    exp = experiment(random_pair, "fixed")
    bridge = exp.bridge
    lead, rests = leads_and_rests(bridge, batch(exp, 1)[0])
    other = [*lead[:10], *reversed(lead[10:])]
    assert len(other) == len(lead) and other != lead
    soft = torch.randn(2, 3, bridge.target.hidden_size) * 0.1
    cached_against_whole(bridge, [lead, other], rests, soft)


def test_a_new_shared_header_replaces_the_kept_one(random_pair):
    exp = experiment(random_pair, "fixed")
    bridge = exp.bridge
    lead, rests = leads_and_rests(bridge, batch(exp, 1)[0])
    other = [*lead[:10], *reversed(lead[10:])]
    soft = torch.randn(2, 3, bridge.target.hidden_size) * 0.1
    cached_against_whole(bridge, [lead, lead], rests, soft)
    cached_against_whole(bridge, [other, other], rests, soft)  # same length, other ids: not the kept cache
    cached_against_whole(bridge, [lead, lead], rests, soft)


@pytest.mark.parametrize("exemplars", EXEMPLARS)
def test_a_kv_prefix_after_the_cached_header_reads_as_after_its_own_prefill(random_pair, exemplars):
    """kv_prefix with the header run by ``lead_cache`` (once per batch, or per row) equals kv_prefix
    running the text before the message itself, row by row."""
    from latentbridge.bridge.kv import kv_prefix_inputs

    exp = experiment(random_pair, exemplars, "translator={name: kv_prefix, k: 3}")
    bridge = exp.bridge
    prompts = batch(exp)
    with torch.no_grad():
        message = bridge.message(prompts)
        cached = bridge.bridged_inputs(message, prompts, with_answer=True)
        rows = [bridge.injection.segments(bridge.target_encoder.target_text(p)) for p in prompts]
        reference = kv_prefix_inputs(bridge.target, message, rows, None)
        model = bridge.target.model
        fast = real_logits(cached, cached.forward(model).logits)
        slow = real_logits(reference, reference.forward(model).logits)
    assert torch.equal(cached.attention_mask, reference.attention_mask)
    for f, w in zip(fast, slow, strict=True):
        torch.testing.assert_close(f, w, rtol=1e-4, atol=1e-4)


def test_lm_eval_refuses_the_mode_for_the_bridged_system(random_pair, tmp_path):
    """lm-eval's context is one string: the header cannot be told from the question, so the message would
    not sit where training put it."""
    from latentbridge.errors import LatentBridgeError
    from latentbridge.eval.lm_eval_model import LatentBridgeLM

    from .helpers import run_through_cli

    result = run_through_cli(random_pair, tmp_path, "arith", "injection=soft_after_header")  # trains, evaluates
    assert (tmp_path / "run" / "summary.json").exists(), result.output
    with pytest.raises(LatentBridgeError, match="cannot run injection 'soft_after_header'"):
        LatentBridgeLM(run=str(tmp_path / "run"), system="bridged")
    LatentBridgeLM(run=str(tmp_path / "run"), system="target")  # the target alone reads no message


def test_rows_without_a_cached_lead_are_laid_out_whole():
    assert split_cached([[Text([1, 2], cached=True), Soft(), Text([3])], [Text([1]), Soft(), Text([3])]]) is None
    assert split_cached([[Text([], cached=True), Soft(), Text([3])]]) is None
    leads, rests = split_cached([[Text([1], cached=True), Text([2], cached=True), Soft(), Text([3])]])
    assert leads == [[1, 2]] and rests == [[Soft(), Text([3])]]


@pytest.mark.parametrize("objective", ["format_penalty", "rope_phase"])
def test_objectives_that_need_whole_rows_are_refused(random_pair, objective):
    from latentbridge.errors import ConfigError

    from .helpers import make_recipe

    with pytest.raises(ConfigError, match=f"objectives.{objective}: needs every position.*soft_after_header"):
        make_recipe(random_pair, "injection=soft_after_header",
                    f"objectives={{nll: {{weight: 1.0}}, {objective}: {{weight: 0.1}}}}")
    make_recipe(random_pair, f"objectives={{nll: {{weight: 1.0}}, {objective}: {{weight: 0.1}}}}")  # elsewhere: fine

