"""The ``generation`` source view: the source reads the prompt and its own solution (the latent relay),
written from the prompt alone, cut where the text relay cuts it, generated once and cached on disk."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from latentbridge.bridge import solutions as solutions_module
from latentbridge.bridge.solutions import SourceSolutions, relay_continuation
from latentbridge.eval.harness import EvalSettings, Evaluator

from .helpers import make_experiment

VIEW = ("source.view=generation", "task.shots=1", "train.max_train_examples=8", "eval.max_new_tokens=12")


@pytest.fixture
def view(random_pair, tmp_path, monkeypatch):
    monkeypatch.setenv("LATENTBRIDGE_CACHE_DIR", str(tmp_path / "cache"))
    return make_experiment(random_pair, *VIEW)


def test_the_source_reads_its_prompt_then_the_relay_cut_of_its_own_solution(view, tmp_path):
    bridge, task = view.bridge, view.task
    items = task.examples("test")[:4]
    prompts = [task.prompt(e) for e in items]
    solved = bridge.solutions.get(prompts)
    rows = bridge.source_rows(prompts)
    for prompt, text, row in zip(prompts, solved, rows, strict=True):
        assert row == bridge.source_encoder.continued_ids(prompt, relay_continuation(prompt, text))
        assert len(row) > len(bridge.source_encoder.prompt_ids(prompt))  # the solution is read too
    # the very solution the source system (and the text relay) produces on these items
    settings = EvalSettings(n=4, batch_size=4, max_new_tokens=12, stop=list(view.recipe.eval.stop), systems=["source"])
    ev = Evaluator(bridge, task, settings, tmp_path / "eval", use_cache=False)
    ev.items, ev.prompts = items, prompts
    assert ev.baselines()["source"] == solved


def test_the_solution_never_reads_the_gold_answer(view, monkeypatch):
    """Every gold answer changed: the source generates from the same ids and its states are the same."""
    task, bridge = view.task, view.bridge
    items = task.examples("test")[:3]
    changed = [dataclasses.replace(e, answer="999 apples.\n#### 999") for e in items]
    assert [task.prompt(e).answer for e in changed] != [task.prompt(e).answer for e in items]
    seen = []
    real = solutions_module.greedy_generate

    def spy(model, tokenizer, inputs, **kw):
        seen.append(inputs.inputs_embeds.clone())
        return real(model, tokenizer, inputs, **kw)

    monkeypatch.setattr(solutions_module, "greedy_generate", spy)
    bridge.solutions.known.clear()
    with torch.no_grad():
        a = bridge.source_states([task.prompt(e) for e in items])
        bridge.solutions.known.clear()
        b = bridge.source_states([task.prompt(e) for e in changed])
    assert len(seen) == 2 and torch.equal(seen[0], seen[1])
    assert torch.equal(a.hidden, b.hidden) and torch.equal(a.mask, b.mask)


def test_solutions_are_made_once_and_read_back_from_disk(view, monkeypatch):
    """Built with the run: the train pool, dev and test; a second build generates nothing."""
    task, bridge = view.task, view.bridge
    pool = [*task.examples("train")[:8], *task.examples("dev"), *task.examples("test")]
    assert bridge.solutions.path.is_file()

    def refuse(*a, **k):
        raise AssertionError("generated again")

    monkeypatch.setattr(solutions_module, "greedy_generate", refuse)
    again = SourceSolutions(bridge.source, bridge.source_encoder, max_new_tokens=12, stop=view.recipe.eval.stop,
                            batch_size=4, root=bridge.solutions.path.parents[1])
    assert again.get([task.prompt(e) for e in pool]) == bridge.solutions.get([task.prompt(e) for e in pool])
    other = SourceSolutions(bridge.source, bridge.source_encoder, max_new_tokens=13, stop=view.recipe.eval.stop,
                            batch_size=4, root=bridge.solutions.path.parents[1])
    assert other.known == {}  # other decoding settings: another file


def test_through_answer_keeps_the_final_line():
    from latentbridge.api.task import Prompt

    p = Prompt(header="", question="Question: 2+2?\n", cue="Answer:", answer=" 4\n#### 4")
    assert relay_continuation(p, "2 + 2 = 4.\n#### 4") == " 2 + 2 = 4.\n"
    assert relay_continuation(p, "2 + 2 = 4.\n#### 4", through_answer=True) == " 2 + 2 = 4.\n#### 4\n"


RELAYS = {
    "resampler": [],
    # several source layers (the translator reads them all), and rows that stop on a stop string
    "layers_and_stop": ["translator=kv_prefix", "models.source_layers=[1, 2]", "eval.stop=['####']"],
}


@pytest.fixture(params=sorted(RELAYS))
def shipped_relay(request, tmp_path, monkeypatch):
    """The shipped latent relay on the zoo pair: trained models that write real, different solutions (a
    random model writes one string for every prompt, and never the relay's separator or line end)."""
    from latentbridge.bridge.build import Experiment
    from latentbridge.config.recipe import load_recipe

    monkeypatch.setenv("LATENTBRIDGE_CACHE_DIR", str(tmp_path / "cache"))
    recipe = load_recipe("latent_relay", ["train.max_train_examples=2", "eval.n=2", "eval.dev_n=2",
                                          "eval.max_new_tokens=60", *RELAYS[request.param]])
    return Experiment.build(recipe)


def test_new_prompts_are_read_from_the_states_the_source_computed_while_solving(shipped_relay, monkeypatch):
    """Questions solved now (not cached): the states come from the generation, equal to a second pass over
    prompt + solution, laid out the same way, and the source runs no second pass."""
    task, bridge = shipped_relay.task, shipped_relay.bridge
    prompts = [task.prompt(e) for e in task.examples("test")[:4]]
    bridge.solutions.known.clear()  # new questions: none solved yet
    calls = []
    real = type(bridge.source.model).forward

    def counting(model, *a, **kw):
        calls.append((kw["input_ids"] if kw.get("input_ids") is not None else kw["inputs_embeds"]).shape)
        return real(model, *a, **kw)

    monkeypatch.setattr(type(bridge.source.model), "forward", counting)
    with torch.no_grad():
        kept = bridge.source_states(prompts)
    assert (bridge.solutions.reused, bridge.solutions.second_passes) == (4, 0)
    # the generation only: one pass over the prompts, then one token per step (no pass over prompt + solution)
    assert len(calls) > 1 and all(shape[1] == 1 for shape in calls[1:]), calls
    assert bridge.solutions.is_known(prompts)
    solved = bridge.solutions.get(prompts)
    assert len(set(solved)) == len(solved) and all("\n" in s for s in solved)  # real, different solutions
    with torch.no_grad():
        again = bridge.source_states(prompts)  # known now: a second pass, as for a cached item
    assert bridge.solutions.reused == 4 and calls[-1][1] > 1
    assert torch.equal(kept.mask, again.mask) and len(set(kept.mask.sum(1).tolist())) > 1  # padding tested
    real_rows = again.mask.bool()
    torch.testing.assert_close(kept.hidden[real_rows], again.hidden[real_rows], atol=1e-4, rtol=1e-4)
    assert len(kept.layers) == len(again.layers) == len(bridge.source_layers or [])
    for mine, theirs in zip(kept.layers, again.layers, strict=True):
        torch.testing.assert_close(mine[real_rows], theirs[real_rows], atol=1e-4, rtol=1e-4)


def test_a_solution_that_tokenizes_otherwise_is_read_by_a_second_pass(view, monkeypatch):
    """Where the relay's cut of the solution re-tokenizes into other tokens than those generated, the kept
    states do not describe the row: the bridge runs the source over it instead."""
    from latentbridge.bridge import core

    task, bridge = view.task, view.bridge
    prompts = [task.prompt(e) for e in task.examples("test")[:3]]
    bridge.solutions.known.clear()
    monkeypatch.setattr(core, "relay_continuation", lambda p, s, through=False: p.separator + "7 apples.\n")
    with torch.no_grad():
        states = bridge.source_states(prompts)
    assert (bridge.solutions.reused, bridge.solutions.second_passes) == (0, 3)
    rows = bridge.source_rows(prompts)
    assert states.mask.sum(1).tolist() == [len(r) for r in rows]


def test_only_the_rows_that_tokenize_otherwise_get_a_second_pass(shipped_relay, monkeypatch):
    """One row whose cut solution does not match what was generated: that row alone is run again, the
    others are read from the generation, and the batch equals a second pass over every row."""
    from latentbridge.bridge import core
    from latentbridge.bridge.solutions import relay_continuation

    task, bridge = shipped_relay.task, shipped_relay.bridge
    prompts = [task.prompt(e) for e in task.examples("test")[:4]]
    odd = prompts[1].question
    monkeypatch.setattr(core, "relay_continuation", lambda p, s, through=False: relay_continuation(p, s, through)
                        + ("Check: 7.\n" if p.question == odd else ""))
    bridge.solutions.known.clear()
    with torch.no_grad():
        mixed = bridge.source_states(prompts)
    assert (bridge.solutions.reused, bridge.solutions.second_passes) == (3, 1)
    with torch.no_grad():
        again = bridge.source_states(prompts)  # known now: a second pass over every row
    assert torch.equal(mixed.mask, again.mask)
    real = again.mask.bool()
    torch.testing.assert_close(mixed.hidden[real], again.hidden[real], atol=1e-4, rtol=1e-4)
