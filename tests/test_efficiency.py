"""Speed features must not change results: shared-prefix reuse, batched generation, logit windows."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from latentbridge.bridge.layout import left_pad, positions_from_mask
from latentbridge.bridge.prefix import MIN_SHARED_PREFIX, common_prefix
from latentbridge.eval.harness import EvalSettings, Evaluator

from .helpers import make_experiment


def test_common_prefix():
    assert common_prefix([[1, 2, 3, 4], [1, 2, 5], [1, 2, 3]]) == 2
    assert common_prefix([[1, 2, 3], [1, 2, 3]]) == 2  # every row keeps a token of its own
    assert common_prefix([[7], [7, 8]]) == 0


def test_shared_prefix_reuse_gives_the_full_forward(random_pair):
    exp = make_experiment(random_pair, "task.shots=2")  # a fixed few-shot header: a long shared prefix
    bridge = exp.bridge
    prompts = [exp.task.prompt(e) for e in exp.task.examples("test")[:5]]
    rows = bridge.source_rows(prompts)
    assert common_prefix(rows) >= MIN_SHARED_PREFIX
    h, mask = bridge.source_hidden(prompts)
    ids, full_mask = left_pad(rows, bridge.source.pad_id, bridge.source.device)
    full = bridge.source.model(input_ids=ids, attention_mask=full_mask, position_ids=positions_from_mask(full_mask),
                               output_hidden_states=True).hidden_states[-1]
    for i in range(len(rows)):
        torch.testing.assert_close(h[i][mask[i].bool()], full[i][full_mask[i].bool()], rtol=1e-4, atol=1e-5)
    with torch.no_grad():
        torch.testing.assert_close(exp.translator(h, mask), exp.translator(full, full_mask), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("translator", ["linear", "dit"])
def test_batched_generation_equals_one_by_one(random_pair, tmp_path, monkeypatch, translator):
    monkeypatch.setenv("LATENTBRIDGE_CACHE_DIR", str(tmp_path / "cache"))
    extra = ["translator={name: dit, k: 3, d_model: 16, heads: 2}"] if translator == "dit" else []
    exp = make_experiment(random_pair, *extra, "task.shots=1", "task.exemplars=per_item")
    settings = EvalSettings(n=8, batch_size=8, max_new_tokens=8, stop=["\n\n"], systems=["source", "target", "bridged", "shuffled", "null", "relay"])
    Evaluator(exp.bridge, exp.task, settings, tmp_path / "batched", use_cache=False).evaluate(step=1)
    one = dataclasses.replace(settings, batch_size=1)
    Evaluator(exp.bridge, exp.task, one, tmp_path / "single", use_cache=False).evaluate(step=1)
    batched = [json.loads(x) for x in (tmp_path / "batched" / "eval_samples_test_step_1.jsonl").read_text().splitlines()]
    single = [json.loads(x) for x in (tmp_path / "single" / "eval_samples_test_step_1.jsonl").read_text().splitlines()]
    assert batched == single


def test_the_answer_window_holds_every_supervised_position(random_pair):
    from latentbridge.train.steps import StepBuilder

    exp = make_experiment(random_pair)
    ctx = StepBuilder(exp, torch.Generator().manual_seed(0)).context(1, exp.task.examples("train")[:4])
    window = ctx.logits.shape[1]
    labels = ctx.inputs.labels
    assert window < labels.shape[1]  # the vocabulary projection skips the prompt
    assert int((labels[:, :-window] != -100).sum()) == 0
    full = exp.bridge.target.model(**ctx.inputs.model_kwargs()).logits[:, -window:]
    torch.testing.assert_close(ctx.logits, full, rtol=1e-4, atol=1e-5)


def test_a_query_at_batch_one_reuses_the_few_shot_header(random_pair):
    """One row (a query at batch 1): the source runs the row's few-shot header once, keeps its cache, and the
    next query reads only its own tokens after it; the states equal the plain forward of each row."""
    exp = make_experiment(random_pair, "task.shots=2")
    bridge = exp.bridge
    prompts = [exp.task.prompt(e) for e in exp.task.examples("test")[:3]]
    plain = []
    for prompt in prompts:
        row = bridge.source_rows([prompt])[0]
        plain.append(bridge.source.model(input_ids=torch.tensor([row]), output_hidden_states=True).hidden_states[-1][0])
    assert not bridge._prefixes
    h, mask = bridge.source_hidden(prompts[:1])
    (prefix, state), = bridge._prefixes.items()
    header = len(bridge.source_encoder.target_text(prompts[0]).prefix) + len(bridge.source_encoder.ids(prompts[0].header))
    assert len(prefix) >= MIN_SHARED_PREFIX and abs(len(prefix) - header) <= 1  # the header, not the question
    torch.testing.assert_close(h[0][mask[0].bool()], plain[0], rtol=1e-4, atol=1e-5)
    for i in (1, 2):
        h, mask = bridge.source_hidden(prompts[i : i + 1])
        assert list(bridge._prefixes.items()) == [(prefix, state)]  # reused, not run again
        torch.testing.assert_close(h[0][mask[0].bool()], plain[i], rtol=1e-4, atol=1e-5)
    short = make_experiment(random_pair)  # no few-shot header: one plain pass, nothing kept
    short.bridge.source_hidden([short.task.prompt(short.task.examples("test")[0])])
    assert not short.bridge._prefixes


@pytest.mark.parametrize("alignment", ["retokenize", "last_character"])
def test_a_cache_readers_shared_header_runs_once_and_reads_as_the_full_pass(random_pair, alignment):
    """c2c's source pass with a fixed few-shot header: the header runs once (kept for the next batch) and only
    each row's rest reads its cache; the hidden states, the mask and every layer's keys and values come back
    where a plain pass over the left-padded rows puts them (rows of different lengths: different padding), and
    the target's fused prompt cache is the same."""
    from latentbridge.bridge import core

    exp = make_experiment(random_pair, "task.shots=2", "translator=c2c", "translator.hidden=16",
                          "translator.intermediate=16", "injection=fused_prompt", f"translator.alignment={alignment}")
    bridge = exp.bridge
    prompts = [exp.task.prompt(e) for e in exp.task.examples("test")[:4]]
    with torch.no_grad():
        for fuser in exp.translator.fusers.values():  # open gates: the fused cache depends on the sharer's entries
            fuser.key_gate_logit.fill_(1.0)
            fuser.value_gate_logit.fill_(1.0)
        exp.translator.eval()
        shared = bridge.source_states(prompts)
        assert len(bridge._prefixes) == 1 and len(next(iter(bridge._prefixes))) >= MIN_SHARED_PREFIX
        inputs = bridge.bridged_inputs(bridge.message(prompts), prompts, with_answer=False)
        fused = inputs.cache()
        state = next(iter(bridge._prefixes.values()))
        again = bridge.source_states(prompts)
        assert next(iter(bridge._prefixes.values())) is state  # the header's cache reused, not run again
        torch.testing.assert_close(again.kv[0][0], shared.kv[0][0])
        original = core.MIN_SHARED_PREFIX
        core.MIN_SHARED_PREFIX = 10**9  # the plain pass over the left-padded rows
        try:
            plain = bridge.source_states(prompts)
            plain_fused = bridge.bridged_inputs(bridge.message(prompts), prompts, with_answer=False).cache()
        finally:
            core.MIN_SHARED_PREFIX = original
    assert len(set(plain.mask.sum(1).tolist())) > 1  # rows of different lengths
    assert torch.equal(shared.mask, plain.mask) and shared.offsets == plain.offsets
    real = plain.mask.bool()
    torch.testing.assert_close(shared.hidden[real], plain.hidden[real], rtol=1e-4, atol=1e-5)
    for (k, v), (pk, pv) in zip(shared.kv, plain.kv, strict=True):
        torch.testing.assert_close(k.transpose(1, 2)[real], pk.transpose(1, 2)[real], rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(v.transpose(1, 2)[real], pv.transpose(1, 2)[real], rtol=1e-4, atol=1e-5)
    for a, b in zip(next(iter(fused.values())).layers, next(iter(plain_fused.values())).layers, strict=True):
        cached = inputs.attention_mask[:, : a.keys.shape[2]].bool()  # the target's real prompt slots (pads: masked)
        torch.testing.assert_close(a.keys.transpose(1, 2)[cached], b.keys.transpose(1, 2)[cached], rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(a.values.transpose(1, 2)[cached], b.values.transpose(1, 2)[cached], rtol=1e-4,
                                   atol=1e-5)
