"""``ac``: activation communication. The patch lands at the state entering the named layer, at the last
prompt token, once; the least-squares map is what least squares gives; validate refuses what it cannot serve."""

from __future__ import annotations

import pytest
import torch
from typer.testing import CliRunner

from latentbridge.api.segments import Text
from latentbridge.bridge.layout import assemble
from latentbridge.cli import app
from latentbridge.eval.choices import supervised_logprobs
from latentbridge.eval.harness import EvalSettings, Evaluator

from .helpers import make_experiment, recipe_dict

AC = ["translator=ac", "injection=patched_prompt", "train.steps=0", "task.shots=1", "task.exemplars=per_item"]


def same_model(pair, *more):
    """tiny llama -> the same tiny llama: sending a state back where it came from changes nothing."""
    return make_experiment({"llama": pair["llama"], "mistral": pair["llama"]}, *AC, *more)


def prompts(exp, n=5):
    examples = exp.task.examples("test")[:n]  # different lengths: different left padding
    return examples, [exp.task.prompt(e) for e in examples]


def logits_of(exp, message, ps, answers=None):
    bridge = exp.bridge
    with torch.no_grad():
        if message is None:
            rows = [bridge.target_encoder.prompt_ids(p) for p in ps]
            inputs = bridge.text_inputs(bridge.target, rows)
        else:
            inputs = bridge.bridged_inputs(message, ps, with_answer=False)
        return inputs.forward(bridge.target.model).logits[:, -1]


@pytest.mark.parametrize("layer", [0, 1])
def test_the_state_sent_back_to_its_own_layer_changes_nothing(random_pair, layer):
    """Same model, source layer k = target layer j, replace: the target gets exactly the state it had
    there, so its logits are its own. A patch one layer off (the state of layer j written at j + 1), or at
    another position than the last prompt token, changes them (the next test)."""
    exp = same_model(random_pair, f"models.source_layer={layer}", f"translator.layer={layer}")
    _, ps = prompts(exp)
    message = exp.bridge.message(ps)
    assert torch.allclose(logits_of(exp, message, ps), logits_of(exp, None, ps), atol=1e-5)


def test_a_state_from_another_layer_changes_the_logits(random_pair):
    exp = same_model(random_pair, "models.source_layer=0", "translator.layer=1")
    _, ps = prompts(exp)
    assert not torch.allclose(logits_of(exp, exp.bridge.message(ps), ps), logits_of(exp, None, ps), atol=1e-3)


def test_sum_and_mean_combine_with_the_targets_own_state(random_pair):
    """``sum`` of the target's own state doubles it and ``mean`` of it leaves it: mean is the identity and
    sum is not (a mode that ignored the target's state would make both equal to replace)."""
    base = ["models.source_layer=1", "translator.layer=1"]
    mean = same_model(random_pair, *base, "translator.mode=mean")
    summed = same_model(random_pair, *base, "translator.mode=sum")
    _, ps = prompts(mean)
    own = logits_of(mean, None, ps)
    assert torch.allclose(logits_of(mean, mean.bridge.message(ps), ps), own, atol=1e-5)
    assert not torch.allclose(logits_of(summed, summed.bridge.message(ps), ps), own, atol=1e-3)


@pytest.mark.parametrize("mode", ["replace", "sum"])
def test_the_patch_is_at_the_last_prompt_token_when_an_answer_follows(random_pair, mode):
    """Scoring a continuation (multiple choice, training): the answer tokens follow the prompt, and the
    patch still lands on the prompt's last token: the identity patch (replace) gives the text system's
    scores, and doubling that state (sum) changes every answer token's (a patch on a later position would
    leave the first answer token's score alone)."""
    exp = same_model(random_pair, "models.source_layer=1", "translator.layer=1", f"translator.mode={mode}")
    examples, ps = prompts(exp)
    enc = exp.bridge.target_encoder
    answers = [((), enc.ids(" 7 apples")) for _ in ps]
    bridged = exp.bridge.bridged_inputs(exp.bridge.message(ps), ps, with_answer=True, answers=answers)
    text = [enc.target_text(p) for p in ps]
    rows = [[Text(list(t.prefix) + list(t.prompt)), Text(a, supervised=True)] for t, (_, a) in zip(text, answers, strict=True)]
    plain = assemble(rows, None, exp.bridge.target.embed, exp.bridge.target.pad_id)
    got, _ = supervised_logprobs(exp.bridge.target.model, bridged)
    want, _ = supervised_logprobs(exp.bridge.target.model, plain)
    if mode == "replace":
        assert got == pytest.approx(want, abs=1e-4)
    else:
        assert all(abs(g - w) > 1e-3 for g, w in zip(got, want, strict=True))


def test_generation_is_patched_once(random_pair, tmp_path):
    """Greedy outputs of the identity patch are the target's own over several tokens (a patch applied
    again at each decoding step would change them or fail)."""
    exp = same_model(random_pair, "models.source_layer=1", "translator.layer=1")
    settings = EvalSettings(n=5, batch_size=3, max_new_tokens=8, stop=[], systems=["bridged", "target"])
    outputs = Evaluator(exp.bridge, exp.task, settings, tmp_path, use_cache=False).outputs()
    assert outputs["bridged"] == outputs["target"]


def test_the_least_squares_map_is_the_least_squares_solution(random_pair):
    """Between widths (llama 32 -> mistral 24) the map is fitted on train items: its residual is the
    least-squares residual, and nudging the map makes it larger. Same model and layer: it is the identity."""
    exp = make_experiment(random_pair, *AC, "models.source_layer=1", "translator.layer=1", "translator.fit_items=80",
                          "translator.bias=true")
    from latentbridge.plugins.translators.ac import target_states

    t = exp.translator
    examples = exp.task.examples("train")[:80]
    ps = [exp.task.prompt(e) for e in examples]
    with torch.no_grad():
        x = exp.bridge.source_states(ps, examples).hidden[:, -1].double()
        y = target_states(exp.bridge, ps, 1).double()
    def residual(w, b):
        return float(((x @ w.T.double() + b.double()) - y).pow(2).sum())

    fitted = residual(t.weight, t.bias)
    for scale in (1.01, 0.99):
        assert residual(t.weight * scale, t.bias) > fitted
    assert residual(t.weight, t.bias + 0.01) > fitted
    own = same_model(random_pair, "models.source_layer=1", "translator.layer=1", "translator.map=least_squares",
                     "translator.fit_items=80")
    assert torch.allclose(own.translator.weight, torch.eye(32), atol=1e-3)
    assert torch.equal(own.translator.bias, torch.zeros(32))  # the paper's map has no bias


@pytest.mark.parametrize(("overrides", "says"), [
    (["translator.map=identity"], "translator.map: 'identity' needs equal widths"),
    (["translator.layer=7"], "translator.layer: 7 is out of range"),
])
def test_validate_refuses_what_ac_cannot_serve(random_pair, tmp_path, overrides, says):
    import json

    recipe = tmp_path / "r.yaml"
    recipe.write_text(json.dumps(recipe_dict(random_pair, *AC, *overrides)))
    result = CliRunner().invoke(app, ["validate", str(recipe)])
    assert result.exit_code == 2 and says in result.output, result.output
    assert "Traceback" not in result.output
