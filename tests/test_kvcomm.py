"""``kvcomm``: the source's cache in front of the target's text at the chosen layers, empty at the others;
the layers chosen by the paper's score; validate refuses another architecture."""

from __future__ import annotations

import json

import pytest
import torch
from latentbridge.plugins.translators.kvcomm import choose_layers
from typer.testing import CliRunner

from latentbridge import KVShare
from latentbridge.cli import app
from latentbridge.eval.harness import EvalSettings, Evaluator

from .helpers import make_experiment, recipe_dict

KVCOMM = ["translator=kvcomm", "injection=after_cache", "train.steps=0", "task.shots=1", "task.exemplars=per_item"]


def same_model(pair, *more):
    return make_experiment({"llama": pair["llama"], "mistral": pair["llama"]}, *KVCOMM, *more)


def texts(exp, n=4):
    examples = exp.task.examples("test")[:n]
    return examples, [exp.task.prompt(e) for e in examples]


def last_logits(exp, inputs):
    with torch.no_grad():
        return inputs.forward(exp.bridge.target.model).logits[:, -1]


def share(exp, ps, examples, layers):
    states = exp.bridge.source_states(ps, examples)
    return KVShare([k for k, _ in states.kv], [v for _, v in states.kv], states.mask, layers)


def test_every_layer_sharing_is_reading_the_source_text_first(random_pair):
    """Same model: the source's cache of text A, then the target's text B at every layer, is the target
    reading A then B as one sequence (positions continue after the source's)."""
    exp = same_model(random_pair)
    examples, ps = texts(exp)
    others = list(reversed(ps))  # the target reads other items' prompts after the source's
    bridge = exp.bridge
    got = last_logits(exp, bridge.bridged_inputs(share(exp, ps, examples, [0, 1]), others, with_answer=False))
    rows = [bridge.source_encoder.prompt_ids(a) + bridge.target_encoder.prompt_ids(b) for a, b in zip(ps, others, strict=True)]
    want = last_logits(exp, bridge.text_inputs(bridge.target, rows))
    assert torch.allclose(got, want, atol=1e-4)


def test_no_layer_sharing_is_the_target_alone(random_pair):
    """At a layer that does not share, the source's positions are empty: with none sharing, the target's
    logits are its own (rotary positions are relative, so the shifted start changes nothing)."""
    exp = same_model(random_pair)
    examples, ps = texts(exp)
    others = list(reversed(ps))
    bridge = exp.bridge
    got = last_logits(exp, bridge.bridged_inputs(share(exp, ps, examples, []), others, with_answer=False))
    want = last_logits(exp, bridge.text_inputs(bridge.target, [bridge.target_encoder.prompt_ids(b) for b in others]))
    assert torch.allclose(got, want, atol=1e-4)
    one = last_logits(exp, bridge.bridged_inputs(share(exp, ps, examples, [1]), others, with_answer=False))
    assert not torch.allclose(one, want, atol=1e-3) and not torch.allclose(one, got, atol=1e-3)


def test_generation_hides_the_source_in_every_decoding_step(random_pair, tmp_path, monkeypatch):
    """The layers that do not share keep the source's positions hidden in the pass over the prompt and in
    every decoding step (a spy on the mask change sees one-query passes), and the greedy outputs with no
    layer sharing are the target's own."""
    from latentbridge.bridge import hide

    seen: list[int] = []
    original = hide.hide_keys

    def spy(mask, n, q_len, kv_len, dtype, device, start=0):
        seen.append(q_len)
        return original(mask, n, q_len, kv_len, dtype, device, start)

    monkeypatch.setattr(hide, "hide_keys", spy)
    exp = same_model(random_pair, "translator.layers=[]")
    settings = EvalSettings(n=4, batch_size=3, max_new_tokens=6, stop=[], systems=["bridged", "target"])
    outputs = Evaluator(exp.bridge, exp.task, settings, tmp_path, use_cache=False).outputs()
    assert outputs["bridged"] == outputs["target"]
    assert 1 in seen and max(seen) > 1  # decoding steps and the prompt's pass


def test_the_layers_are_chosen_by_the_score_and_the_prior():
    scores = torch.tensor([0.1, 0.9, 0.5, 0.2, 0.8])
    assert choose_layers(scores, 0.4, 1.0, 10.0).nonzero().flatten().tolist() == [1, 4]
    assert choose_layers(scores, 0.3, 1.0, 10.0).sum() == 2  # ceil(0.3 * 5)
    # the prior alone (alpha 0) picks the middle layers
    assert choose_layers(scores, 0.2, 0.0, 1.0).nonzero().flatten().tolist() == [2]


def test_calibration_chooses_and_saves_the_layers(random_pair, tmp_path):
    from latentbridge.plugins.translators.kvcomm import attention_to_source

    exp = same_model(random_pair, "translator.layer_share=0.5")
    chosen = exp.translator.chosen
    assert chosen.sum() == 1 and exp.translator.shared == chosen.nonzero().flatten().tolist()
    assert "chosen" in exp.translator.state_dict()
    example = exp.task.examples("train")[0]
    scores = attention_to_source(exp.bridge, exp.task.prompt(example), example)
    # a share of each layer's attention: the source's positions take some of it, never all (each query
    # also sees itself), and the chosen layer is the one that gives them most
    assert scores.shape == (2,) and bool(((scores > 0) & (scores < 1)).all())
    assert exp.translator.shared == [int(scores.argmax())]


@pytest.mark.parametrize(("overrides", "says"), [
    ([], "kvcomm shares the source's cache with a target of the same architecture"),
])
def test_validate_refuses_another_architecture(random_pair, tmp_path, overrides, says):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(json.dumps(recipe_dict(random_pair, *KVCOMM, *overrides)))  # llama -> mistral
    result = CliRunner().invoke(app, ["validate", str(recipe)])
    assert result.exit_code == 2 and says in result.output, result.output
    assert "Traceback" not in result.output
