"""Contract tests run for every built-in objective (DESIGN.md lesson 5: none of them may do nothing)."""

from __future__ import annotations

import math

import pytest
import torch

from latentbridge.api.messages import SoftTokens
from latentbridge.config.schema import config_to_dict, parse_config
from latentbridge.registry.host import Registry
from latentbridge.train.loss import weighted_loss
from latentbridge.train.steps import StepBuilder

from .helpers import make_experiment

REGISTRY = Registry.load(autoload=False)
BUILTIN = [n for n in REGISTRY.names("objective") if REGISTRY.get("objective", n).provider.distribution == "latentbridge"]
EXTRA = {
    "rope_phase": ["objectives.rope_phase.layers=1"],
    "dit_flow": ["translator={name: dit, k: 3, d_model: 16, heads: 2, sample_steps: 2}"],
}


def experiment(random_pair, name, *overrides):
    return make_experiment(
        random_pair, "objectives={}", f"objectives.{name}.weight=1.0", *EXTRA.get(name, []), *overrides,
        "train.batch_size=4",
    )


def context(exp, examples, step=1, seed=0):
    builder = StepBuilder(exp, torch.Generator().manual_seed(seed))
    return builder.context(step, examples)


def spy_on_answers(ctx) -> dict:
    """Record the ``answers`` the objective lays out through ``ctx.relayout`` (in ``seen["answers"]``)."""
    seen = {}
    relayout = ctx.relayout

    def spy(soft, with_answer=True, answers=None):
        if answers is not None:
            seen["answers"] = answers
        return relayout(soft, with_answer=with_answer, answers=answers)

    ctx.relayout = spy
    return seen


def test_every_builtin_is_covered():
    assert set(BUILTIN) >= {"nll", "kl", "prompt_alignment", "rope_phase", "contrastive_prompt", "probe_head",
                            "format_penalty", "dit_flow"}


@pytest.mark.parametrize("name", BUILTIN)
def test_gradient_reaches_the_translator(random_pair, name):
    exp = experiment(random_pair, name)
    ctx = context(exp, exp.task.examples("train")[:16])  # answers of many lengths: padding inside the window
    exp.objectives[name](ctx).backward()
    grads = [p.grad for p in exp.translator.parameters()]
    assert all(g is not None for g in grads)
    assert all(bool(torch.isfinite(g).all()) for g in grads)  # NaN > 0 is False: check finiteness itself
    assert sum(float(g.abs().sum()) for g in grads) > 0
    assert all(p.grad is None for p in exp.bridge.target.model.parameters())


@pytest.mark.parametrize("name", BUILTIN)
def test_depends_on_the_question(random_pair, name):
    """The same soft tokens scored against two different batches of questions give different losses."""
    exp = experiment(random_pair, name)
    fixed = torch.randn(4, exp.translator.k, exp.bridge.target.hidden_size)
    fixed = exp.translator.rescale(fixed)
    exp.bridge.message = lambda prompts, seeds=None, states=None, examples=None: SoftTokens(fixed)
    train = exp.task.examples("train")
    losses = [float(exp.objectives[name](context(exp, batch)).detach()) for batch in (train[:4], train[4:8])]
    assert not math.isclose(losses[0], losses[1], rel_tol=1e-6), losses


@pytest.mark.parametrize("name", BUILTIN)
def test_optimizing_it_alone_lowers_it(random_pair, name):
    exp = experiment(random_pair, name)
    examples = exp.task.examples("train")[:4]
    params = exp.trainable_parameters()
    optimizer = torch.optim.Adam(params, lr=1e-2)
    values = []
    for _ in range(12):
        optimizer.zero_grad()
        loss = exp.objectives[name](context(exp, examples))  # same examples, same seeds: a fixed batch
        loss.backward()
        optimizer.step()
        values.append(float(loss.detach()))
    assert values[-1] < values[0], values


@pytest.mark.parametrize("name", BUILTIN)
def test_doubling_the_weight_doubles_its_gradient(random_pair, name):
    exp = experiment(random_pair, name)
    examples = exp.task.examples("train")[:4]
    grads = []
    for weight in (0.7, 1.4):
        exp.translator.zero_grad()
        loss, _, _ = weighted_loss(exp.objectives, context(exp, examples), {name: weight})
        loss.backward()
        grads.append(torch.cat([p.grad.flatten() for p in exp.translator.parameters()]))
    torch.testing.assert_close(grads[1], 2 * grads[0], rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("name", BUILTIN)
def test_config_round_trips(name):
    cls = REGISTRY.get("objective", name).cls.Config
    default = parse_config(cls, {})
    assert parse_config(cls, config_to_dict(default)) == default


def test_contrastive_punishes_the_same_soft_tokens_for_every_question(random_pair):
    exp = experiment(random_pair, "contrastive_prompt")
    examples = exp.task.examples("train")[:4]
    same = exp.translator.rescale(torch.randn(1, exp.translator.k, exp.bridge.target.hidden_size)).repeat(4, 1, 1)
    exp.bridge.message = lambda prompts, seeds=None, states=None, examples=None: SoftTokens(same)
    ctx = context(exp, examples)
    assert float(exp.objectives["contrastive_prompt"](ctx)) >= math.log(4) - 1e-5  # never better than chance
    matched = exp.translator.rescale(ctx.get("question_pooled")[:, None, :].repeat(1, exp.translator.k, 1))
    exp.bridge.message = lambda prompts, seeds=None, states=None, examples=None: SoftTokens(matched)
    assert float(exp.objectives["contrastive_prompt"](context(exp, examples))) < math.log(4) - 0.5


def test_rope_phase_message_attention_by_hand():
    """Readout over the message keys only, and the share of the full (causal, unpadded) attention they get."""
    from latentbridge.plugins.objectives.rope_phase import message_attention

    from latentbridge.nn.keys import Captured

    q = torch.zeros(1, 1, 4, 2)
    q[0, 0, 3] = torch.tensor([1.0, 0.0])
    k = torch.tensor([[[[9.0, 9.0], [2.0, 0.0], [0.0, 0.0], [1.0, 0.0]]]])  # position 0 is padding
    v = torch.tensor([[[[5.0, 5.0], [1.0, 0.0], [0.0, 1.0], [3.0, 3.0]]]])
    captured = Captured(q, k, v, scaling=1.0)
    message = torch.tensor([[False, True, True, False]])
    valid = torch.tensor([[False, True, True, True]])
    readout, log_mass = message_attention(captured, slice(3, 4), message, valid)
    weights = torch.softmax(torch.tensor([2.0, 0.0]), 0)  # scores of the two message keys
    torch.testing.assert_close(readout[0, 0, 0], weights[0] * v[0, 0, 1] + weights[1] * v[0, 0, 2])
    full = torch.tensor([2.0, 0.0, 1.0]).exp()  # positions 1..3 (0 is padding)
    torch.testing.assert_close(log_mass[0, 0, 0], torch.log((full[0] + full[1]) / full.sum()))


def test_teacher_switch_selects_answer_or_question_embeddings(random_pair):
    examples = None
    got = {}
    for teacher in ("answer", "prompt"):
        exp = experiment(random_pair, "nll", f"teacher={teacher}")
        examples = examples or exp.task.examples("train")[:2]
        ctx = context(exp, examples)
        got[teacher] = ctx.get("teacher_embeds")
        expected = ctx.get("answer_embeds" if teacher == "answer" else "question_embeds")
        assert all(torch.equal(a, b) for a, b in zip(got[teacher], expected, strict=True))
    assert got["answer"][0].shape != got["prompt"][0].shape or not torch.equal(got["answer"][0], got["prompt"][0])


def test_curriculum_changes_what_the_target_reads_in_training(random_pair):
    exp = experiment(random_pair, "nll", "injection=soft_only", "curriculum.fade_start=10",
                     "curriculum.fade_end=20", "train.steps=30")
    builder = StepBuilder(exp, torch.Generator().manual_seed(0))
    text_mode, soft_only = builder.text_mode, exp.bridge.injection
    assert text_mode.name == "soft_plus_text" and soft_only.name == "soft_only"
    assert builder.modes(10, 64) == [text_mode] * 64
    assert builder.modes(20, 64) == [soft_only] * 64
    mixed = builder.modes(15, 2000)
    assert abs(sum(m is text_mode for m in mixed) / 2000 - 0.5) < 0.05
    examples = exp.task.examples("train")[:4]
    early = builder.context(1, examples)
    late = builder.context(25, examples)
    # early rows read the literal question (longer inputs); late rows read only soft tokens and the cue
    assert early.inputs.attention_mask.sum() > late.inputs.attention_mask.sum()
    q = exp.bridge.target_encoder.target_text(exp.task.prompt(examples[0])).question_ids()
    with torch.no_grad():
        question = exp.bridge.target.model.get_input_embeddings()(torch.tensor(list(q)))

    def reads_the_question(ctx) -> bool:
        """Whether row 0's text positions hold the question's token embeddings, in order."""
        inputs = ctx.inputs
        text = inputs.attention_mask[0].bool()
        if inputs.soft_mask is not None:
            text &= ~inputs.soft_mask[0].bool()
        row = inputs.inputs_embeds[0][text].detach()
        return any(torch.equal(row[i:i + len(q)], question) for i in range(len(row) - len(q) + 1))

    assert reads_the_question(early)  # the check finds the question where it is
    assert not reads_the_question(late)


def test_probe_head_parameters_are_trained_and_saved(random_pair, tmp_path):
    from safetensors.torch import load_file

    from latentbridge.train.runner import Runner

    exp = experiment(random_pair, "probe_head", "train.steps=2", "eval.every=100", "eval.n=2",
                     "eval.systems=[bridged]")
    before = {k: v.clone() for k, v in exp.objectives.state_dict().items()}
    Runner(exp, tmp_path).run()
    saved = load_file(str(tmp_path / "objectives.safetensors"))
    assert set(saved) == {f"probe_head.{k}" for k in exp.objectives["probe_head"].state_dict()}
    assert any(not torch.equal(saved[k], before[k]) for k in saved)


def test_format_penalty_scores_the_format_line_after_the_targets_own_continuation(random_pair, monkeypatch):
    """Rows whose greedy continuation already ends in `#### N` add nothing; for the others the scored
    answer is `\n#### <gold></s>`, read after the target's own continuation (not the gold solution)."""
    import latentbridge.plugins.objectives.format_penalty as fp

    from latentbridge.bridge.generation import Generation

    exp = experiment(random_pair, "format_penalty", "objectives.format_penalty.rows=4")
    examples = exp.task.examples("train")[:4]
    ctx = context(exp, examples)
    own = ["She has 5 apples", "#### 3", "so it is #### 12", "The answer is 7"]  # rows 0 and 3 lack a format line
    monkeypatch.setattr(fp, "greedy_generate", lambda *a, **k: [Generation(t, [], "stop") for t in own])
    seen = spy_on_answers(ctx)
    loss = exp.objectives["format_penalty"](ctx)
    tok = exp.bridge.target.tokenizer
    gold = [e.answer.rsplit("#### ", 1)[1] for e in examples]
    for r in (0, 3):
        context_ids, supervised = seen["answers"][r]
        assert list(context_ids) == tok(own[r], add_special_tokens=False)["input_ids"]
        assert list(supervised) == tok(f"\n#### {gold[r]}", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    assert seen["answers"][1] == ((), ()) and seen["answers"][2] == ((), ())
    assert float(loss.detach()) > 0
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in exp.translator.parameters())
    monkeypatch.setattr(fp, "greedy_generate", lambda *a, **k: [Generation("#### 1", [], "stop")] * 4)
    nothing = exp.objectives["format_penalty"](context(exp, examples))
    assert float(nothing.detach()) == 0.0
    nothing.backward()  # still part of the graph: a batch like this trains nothing, and breaks nothing
