"""Training and generation read the same layout: teacher-forced logits at the first answer position
equal the first generation step's logits, for left-padded batches, in every injection mode."""

from __future__ import annotations

import pytest
import torch

from latentbridge.bridge.generation import greedy_generate

from .helpers import make_experiment

MODES = ["soft_plus_text", "soft_only", "adapter"]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("reverse", [False, True], ids=["llama->mistral", "mistral->llama"])
def test_teacher_forced_logits_equal_first_generation_step(random_pair, mode, reverse):
    exp = make_experiment(random_pair, f"injection={mode}", "task.shots=1", "task.exemplars=per_item", reverse=reverse)
    bridge = exp.bridge
    examples = exp.task.examples("test")[:5]  # different lengths -> different left padding
    prompts = [exp.task.prompt(e) for e in examples]
    with torch.no_grad():
        soft = bridge.soft_tokens(prompts)
        train_inputs = bridge.bridged_inputs(soft, prompts, with_answer=True)
        gen_inputs = bridge.bridged_inputs(soft, prompts, with_answer=False)
        model = bridge.target.model
        teacher = model(**train_inputs.model_kwargs()).logits
        first_step = model(**gen_inputs.model_kwargs()).logits[:, -1]
    width = teacher.shape[1]
    pads_train = (train_inputs.attention_mask == 0).sum(1)
    pads_gen = (gen_inputs.attention_mask == 0).sum(1)
    assert len(set(pads_train.tolist())) > 1, "the batch must mix padding amounts"
    for r, prompt in enumerate(prompts):
        answer = bridge.target_encoder.target_text(prompt).answer
        first_answer = width - len(answer)
        assert train_inputs.labels[r, first_answer] == answer[0]
        assert (train_inputs.labels[r, :first_answer] == -100).all()
        torch.testing.assert_close(teacher[r, first_answer - 1], first_step[r], rtol=1e-4, atol=1e-4)
        # positions continue identically: the real tokens are numbered 0.. in both layouts
        assert train_inputs.position_ids[r, pads_train[r]:first_answer].tolist() == \
            gen_inputs.position_ids[r, pads_gen[r]:].tolist()
    generated = greedy_generate(model, bridge.target.tokenizer, gen_inputs, max_new_tokens=1, eos_ids=set())
    for r, out in enumerate(generated):
        answer = bridge.target_encoder.target_text(prompts[r]).answer
        assert out.token_ids[0] == int(teacher[r, width - len(answer) - 1].argmax())


def test_generation_continues_positions_per_row(random_pair):
    """Greedy decoding with a KV cache equals re-running the full sequence each step."""
    exp = make_experiment(random_pair)
    bridge = exp.bridge
    prompts = [exp.task.prompt(e) for e in exp.task.examples("test")[:3]]
    with torch.no_grad():
        soft = bridge.soft_tokens(prompts)
        inputs = bridge.bridged_inputs(soft, prompts, with_answer=False)
        fast = greedy_generate(bridge.target.model, bridge.target.tokenizer, inputs, max_new_tokens=5, eos_ids=set())
        for r, out in enumerate(fast):  # recompute without cache, one row at a time
            row = bridge.bridged_inputs(soft[r : r + 1], prompts[r : r + 1], with_answer=False)
            embeds, mask, pos = row.inputs_embeds, row.attention_mask, row.position_ids
            for token in out.token_ids:
                logits = bridge.target.model(inputs_embeds=embeds, attention_mask=mask, position_ids=pos).logits
                assert int(logits[0, -1].argmax()) == token
                embeds = torch.cat([embeds, bridge.target.embed(torch.tensor([[token]]))], 1)
                mask = torch.cat([mask, torch.ones(1, 1, dtype=mask.dtype)], 1)
                pos = torch.cat([pos, pos[:, -1:] + 1], 1)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("with_answer", [True, False], ids=["training", "generation"])
@pytest.mark.parametrize("reverse", [False, True], ids=["llama->mistral", "mistral->llama"])
def test_bos_is_read_once_and_first_as_the_teacher_reads_it(mode, with_answer, reverse):
    """Position 0 (the attention sink of Llama-style models) is BOS, as in the literal text the KL teacher
    reads, never a soft token: [pad][bos][soft][text], in training and generation alike. (The built-in
    pair: both tokenizers open every sequence with BOS, as Llama's and Mistral's do.)"""
    pair = {"llama": "tiny-llama", "mistral": "tiny-mistral"}
    exp = make_experiment(pair, f"injection={mode}", "task.shots=1", reverse=reverse)
    bridge = exp.bridge
    bos = bridge.target.tokenizer.bos_token_id
    assert bridge.target_encoder.prefix == [bos]
    prompts = [exp.task.prompt(e) for e in exp.task.examples("test")[:4]]
    with torch.no_grad():
        soft = bridge.soft_tokens(prompts)
        inputs = bridge.bridged_inputs(soft, prompts, with_answer=with_answer)
    bos_embedding = bridge.target.embed(torch.tensor([bos]))[0]
    for r in range(len(prompts)):
        first = int((inputs.attention_mask[r] == 0).sum())  # the first real position
        assert inputs.position_ids[r, first] == 0
        assert torch.equal(inputs.inputs_embeds[r, first], bos_embedding)
        is_bos = (inputs.inputs_embeds[r, first:] == bos_embedding).all(-1)
        assert int(is_bos.sum()) == 1  # once
        soft_positions = inputs.soft_mask[r].nonzero().flatten()
        assert soft_positions.min() > first  # every soft token comes after BOS


def test_no_deprecated_transformers_argument_is_used(random_pair, capfd):
    """Generation with a cache and the shared-prefix source path use the cache keyword the installed
    transformers takes (``cache``, or ``past_key_values`` where that is the spelling): no warning."""
    import warnings

    exp = make_experiment(random_pair, "task.shots=3")
    bridge = exp.bridge
    prompts = [exp.task.prompt(e) for e in exp.task.examples("test")[:3]]
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        warnings.simplefilter("error", DeprecationWarning)
        with torch.no_grad():
            bridge.source_hidden(prompts)  # a 3-shot header: the prefix path
            inputs = bridge.bridged_inputs(bridge.soft_tokens(prompts), prompts, with_answer=False)
            greedy_generate(bridge.target.model, bridge.target.tokenizer, inputs, max_new_tokens=3, eos_ids=set())
    out, err = capfd.readouterr()
    assert "deprecated" not in out + err


def test_final_line_supervision_labels_only_the_answer_line(random_pair):
    """With ``task.supervise=final_line`` the labels of the bridged training input are the target's ids
    of ' #### N', nothing of the worked steps."""
    exp = make_experiment(random_pair, "task.supervise=final_line")
    bridge, tok = exp.bridge, exp.bridge.target.tokenizer
    examples = exp.task.examples("test")[:4]
    prompts = [exp.task.prompt(e) for e in examples]
    with torch.no_grad():
        inputs = bridge.bridged_inputs(bridge.soft_tokens(prompts), prompts, with_answer=True)
    for r, e in enumerate(examples):
        supervised = inputs.labels[r][inputs.labels[r] != -100].tolist()
        assert supervised[-1] == tok.eos_token_id
        assert tok.decode(supervised[:-1]).strip() == e.answer.splitlines()[-1]
