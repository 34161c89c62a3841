"""task.chat_template: each model reads its prompts through its own tokenizer's chat template, the soft
tokens inside the user turn (after the template's opening, before the turn's end)."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from typer.testing import CliRunner

from latentbridge.cli import app
from latentbridge.train.runner import Runner

from .helpers import make_experiment, recipe_dict

TEMPLATES = {  # words the tiny tokenizers can spell (their vocabularies hold no brackets)
    "llama": "{{ bos_token }}User: {% for m in messages %}{{ m['content'] }}{% endfor %}</s>"
             "{% if add_generation_prompt %}Friend: {% endif %}",
    "mistral": "<s>Ask {% for m in messages %}{{ m['content'] }}{% endfor %} Then",
}


def same_text(a: str, b: str) -> bool:
    return a.replace(" ", "") == b.replace(" ", "")


def with_chat_templates(pair, root, templates=None, suffix="chat"):
    """Copies of the pair's folders under ``root`` whose tokenizers have the chat templates above (or
    ``templates``, by model)."""
    out = {}
    for name, folder in pair.items():
        copy = root / f"{name}-{suffix}"
        shutil.copytree(folder, copy)
        config = json.loads((copy / "tokenizer_config.json").read_text())
        template = (templates or TEMPLATES)[name]
        (copy / "tokenizer_config.json").write_text(json.dumps({**config, "chat_template": template}))
        out[name] = copy
    return out


@pytest.fixture
def chat_pair(random_pair, tmp_path):
    return with_chat_templates(random_pair, tmp_path)


@pytest.mark.parametrize("mode", ["soft_only", "soft_plus_text"])
def test_prompts_go_through_each_models_own_template_with_soft_tokens_in_the_user_turn(chat_pair, mode):
    exp = make_experiment(chat_pair, "task.chat_template=true", f"injection={mode}", "task.shots=1")
    bridge = exp.bridge
    prompt = exp.task.prompt(exp.task.examples("test")[0])
    for encoder, model, template in ((bridge.source_encoder, bridge.source, TEMPLATES["llama"]),
                                     (bridge.target_encoder, bridge.target, TEMPLATES["mistral"])):
        assert model.tokenizer.chat_template == template  # each model reads through its own template
        rendered = model.tokenizer.apply_chat_template([{"role": "user", "content": prompt.header + prompt.question}],
                                                       tokenize=False, add_generation_prompt=True)
        assert same_text(model.tokenizer.decode(encoder.prompt_ids(prompt)), rendered + prompt.cue)
    text = bridge.target_encoder.target_text(prompt, with_answer=False)
    tok = bridge.target.tokenizer
    assert same_text(tok.decode(text.prefix), "<s>Ask") and same_text(tok.decode(text.cue), "Then" + prompt.cue)
    with torch.no_grad():
        inputs = bridge.bridged_inputs(bridge.soft_tokens([prompt]), [prompt], with_answer=False)
    soft = inputs.soft_mask[0].nonzero().flatten()
    assert soft.min() == len(text.prefix)  # right after the user turn opens
    after = len(text.cue) if mode == "soft_only" else len(text.prompt)
    assert int(soft.max()) == inputs.inputs_embeds.shape[1] - after - 1  # before the turn's end (and the content)


def test_a_short_run_with_chat_templates(chat_pair, tmp_path, monkeypatch):
    monkeypatch.setenv("LATENTBRIDGE_CACHE_DIR", str(tmp_path / "cache"))
    exp = make_experiment(chat_pair, "task.chat_template=true", "train.steps=2", "eval.every=2", "eval.n=2",
                          "eval.dev_n=2", "eval.max_new_tokens=4", "objectives.kl.weight=1")
    Runner(exp, tmp_path / "run").run()
    assert (tmp_path / "run" / "eval_samples_test_step_2.jsonl").is_file()


def test_chat_template_on_a_tokenizer_without_one_is_a_recipe_problem(random_pair, tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(json.dumps(recipe_dict(random_pair, "task.chat_template=true")))
    result = CliRunner().invoke(app, ["validate", str(recipe)])
    assert result.exit_code == 2
    assert "task.chat_template: the tokenizer of" in result.output and "has no chat template" in result.output


@pytest.mark.parametrize("trim", [False, True])
def test_earlier_turns_are_rendered_before_the_user_turn_that_holds_the_message(chat_pair, trim):
    """A prompt with earlier turns (lm-eval's --system_instruction, --fewshot_as_multiturn): each model reads the
    whole conversation through its own template; the prefix (what comes before the message) ends where the
    last user turn's content starts, and the question span is that turn's, even when an earlier turn has the
    same words (searching the rendering from its start would find the earlier one), also through a template
    that trims the message (as Llama-3's and Gemma's do)."""
    import dataclasses

    exp = make_experiment(chat_pair, "task.chat_template=true")
    bridge = exp.bridge
    if trim:
        from latentbridge.bridge.encoding import PromptEncoder

        for side in ("source", "target"):
            model = getattr(bridge, side)
            model.tokenizer.chat_template = model.tokenizer.chat_template.replace("m['content'] }}", "m['content'] | trim }}")
            setattr(bridge, f"{side}_encoder", PromptEncoder(model.tokenizer, chat=True))
    plain = exp.task.prompt(exp.task.examples("test")[0])
    content = plain.header + plain.question
    assert content != content.strip()  # what a trimming template changes
    turns = (("system", "Be brief."), ("user", content), ("assistant", "Sol 4."))
    prompt = dataclasses.replace(plain, turns=turns)
    for encoder, model in ((bridge.source_encoder, bridge.source), (bridge.target_encoder, bridge.target)):
        tok = model.tokenizer
        history = [{"role": r, "content": c} for r, c in turns] + [{"role": "user", "content": content}]
        rendered = tok.apply_chat_template(history, tokenize=False, add_generation_prompt=True)
        assert same_text(tok.decode(encoder.prompt_ids(prompt)), rendered + prompt.cue)
        text, alone = encoder.target_text(prompt, with_answer=False), encoder.target_text(plain, with_answer=False)
        opening = rendered[: rendered.rfind(content.strip() if trim else content)]
        assert same_text(tok.decode(text.prefix), opening) and "Sol 4." in tok.decode(text.prefix)
        assert text.prompt == alone.prompt and text.question_span == alone.question_span  # the last turn's own
        assert encoder.offsets(prompt) == encoder.offsets(plain)
        # no question at all (the null control at 0 shots): the message still goes after the template's opening
        empty = encoder.target_text(dataclasses.replace(plain, header="", question=""), with_answer=False)
        assert same_text(tok.decode(empty.prefix), encoder.chat[0])
    with torch.no_grad():  # the message sits right after the earlier turns, at the last user turn's start
        inputs = bridge.bridged_inputs(bridge.soft_tokens([prompt]), [prompt], with_answer=False)
    prefix = bridge.target_encoder.target_text(prompt, with_answer=False).prefix
    assert int(inputs.soft_mask[0].nonzero().min()) == len(prefix)


def test_earlier_turns_a_model_cannot_read_are_one_clear_error(chat_pair, random_pair):
    import dataclasses

    from latentbridge.bridge.encoding import PromptEncoder
    from latentbridge.errors import LatentBridgeError

    plain_exp = make_experiment(random_pair)
    prompt = plain_exp.task.prompt(plain_exp.task.examples("test")[0])
    with pytest.raises(LatentBridgeError, match="read without a chat template"):
        plain_exp.bridge.target_encoder.prompt_ids(dataclasses.replace(prompt, turns=(("system", "Be brief."),)))
    exp = make_experiment(chat_pair, "task.chat_template=true")
    tokenizer = exp.bridge.target.tokenizer
    tokenizer.chat_template = ("{% if messages[0]['role'] == 'system' %}{{ raise_exception('no system role') }}"
                               "{% endif %}" + TEMPLATES["mistral"])
    encoder = PromptEncoder(tokenizer, chat=True, name="tiny")
    with pytest.raises(LatentBridgeError, match="the chat template of tiny refuses a conversation whose earlier turns "
                                                "are \\['system'\\]: no system role"):
        encoder.prompt_ids(dataclasses.replace(prompt, turns=(("system", "Be brief."),)))


def test_chat_template_kwargs_reach_both_templates_and_leave_other_recipes_as_they_were(random_pair, tmp_path):
    """task.chat_template_kwargs are the templates' variables (Qwen3's enable_thinking): both models' renderings
    read them, in every prompt the bridge builds; unset, a recipe and the caches' key are as before the option;
    set without chat templates, one clear problem."""
    from latentbridge.config.recipe import load_recipe

    templates = {name: template + "{% if brief is defined and brief %} Then Then{% endif %}"
                 for name, template in TEMPLATES.items()}
    pair = with_chat_templates(random_pair, tmp_path, templates, suffix="vars")
    plain = make_experiment(pair, "task.chat_template=true")
    brief = make_experiment(pair, "task.chat_template=true", "task.chat_template_kwargs={brief: true}")
    prompt = plain.task.prompt(plain.task.examples("test")[0])
    for side in ("source_encoder", "target_encoder"):
        without, with_ = getattr(plain.bridge, side).text(prompt), getattr(brief.bridge, side).text(prompt)
        assert with_ != without and same_text(with_, without.removesuffix(prompt.cue) + "ThenThen" + prompt.cue)
        assert len(getattr(brief.bridge, side).prompt_ids(prompt)) > len(getattr(plain.bridge, side).prompt_ids(prompt))
    assert "chat_template_kwargs" not in plain.recipe.to_dict()["task"]
    assert "chat_template_kwargs" not in plain.recipe.task.config.read_settings()
    assert brief.recipe.to_dict()["task"]["chat_template_kwargs"] == {"brief": True}
    assert brief.recipe.task.config.read_settings()["chat_template_kwargs"] == {"brief": True}
    result = CliRunner().invoke(app, ["validate", "answer_softplus", "task.chat_template_kwargs={brief: true}"])
    assert result.exit_code == 2 and "only with chat_template: true" in result.output, result.output
    assert load_recipe("answer_softplus").to_dict()["task"].get("chat_template_kwargs") is None
    lm_eval_model = pytest.importorskip("latentbridge.eval.lm_eval_model")  # lm-eval's target/source renderings
    history, tokenizer = [{"role": "user", "content": "Ask"}], brief.bridge.target.tokenizer
    assert same_text(lm_eval_model._render_chat(tokenizer, history, True, "t", {"brief": True}),
                     lm_eval_model._render_chat(tokenizer, history, True, "t", {}) + "ThenThen")
