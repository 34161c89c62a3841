"""The lm-evaluation-harness adapter, offline: small lm-eval tasks on local JSONL, the `target` system
against lm-eval's own Hugging Face model on the same tiny model, and the bridged system as in training."""

from __future__ import annotations

import json
import os

import pytest
import torch

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")  # lm-eval reads local files only: never a hub request
os.environ.setdefault("HF_HUB_OFFLINE", "1")
lm_eval = pytest.importorskip("lm_eval")

from lm_eval.api.instance import Instance  # noqa: E402
from lm_eval.models.huggingface import HFLM  # noqa: E402
from lm_eval.tasks import TaskManager  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from latentbridge.cli import app  # noqa: E402
from latentbridge.errors import LatentBridgeError  # noqa: E402
from latentbridge.eval.harness import EvalSettings, Evaluator  # noqa: E402
from latentbridge.eval.lm_eval_model import LatentBridgeLM  # noqa: E402

from .helpers import run_through_cli  # noqa: E402

MC_TASK = """task: lb_mc
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "Question: {{{{question}}}}\\nAnswer:"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: "{{{{answer}}}}"
metric_list:
  - metric: acc
  - metric: acc_norm
"""
GEN_TASK = """task: lb_gen
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: generate_until
doc_to_text: "Question: {{{{question}}}}\\nAnswer:"
doc_to_target: "{{{{choices[answer]}}}}"
generation_kwargs:
  until: ["\\n"]
  max_gen_toks: 8
  do_sample: false
metric_list:
  - metric: exact_match
    aggregation: mean
    higher_is_better: true
"""


@pytest.fixture(scope="module")
def bridge_run(random_pair, tmp_path_factory):
    """A run folder trained for a few steps on task facts_mc, and a folder of local lm-eval tasks."""
    root = tmp_path_factory.mktemp("lm_eval")
    os.environ["LATENTBRIDGE_CACHE_DIR"] = str(root / "cache")
    run_through_cli(random_pair, root, "facts_mc", "eval.n=4", "eval.dev_n=4")
    from latentbridge.plugins.tasks.multiple_choice import FactsChoice, FactsChoiceConfig

    items = FactsChoice(FactsChoiceConfig()).examples("test")[:6]
    tasks = root / "tasks"
    tasks.mkdir()
    jsonl = tasks / "facts.jsonl"
    jsonl.write_text("".join(json.dumps({"question": e.question, "choices": list(e.choices), "answer": e.gold}) + "\n"
                             for e in items))
    (tasks / "lb_mc.yaml").write_text(MC_TASK.format(data=jsonl))
    (tasks / "lb_gen.yaml").write_text(GEN_TASK.format(data=jsonl))
    return {"run": root / "run", "tasks": tasks, "items": items, "root": root}


def requests(kind, args):
    return [Instance(request_type=kind, doc={}, arguments=a, idx=i) for i, a in enumerate(args)]


PAIRS = [("Question: How many moons?\nAnswer:", " Velkar has 7 moons."), ("Question: What?\nAnswer: ", "B"),
         ("", "Velkar has 3 rings."), ("Question: x\n", "Answer: 12")]
TEXTS = ["Velkar has 7 moons.\n#### 7", "A longer text about the castle Brisel and its 9 towers and 4 gates."]


def test_target_scores_equal_lm_evals_hf_model(bridge_run, random_pair):
    ours = LatentBridgeLM(run=str(bridge_run["run"]), system="target", batch_size=3)
    hf = HFLM(pretrained=str(random_pair["mistral"]), dtype="float32", device="cpu", batch_size=2)
    mine, theirs = ours.loglikelihood(requests("loglikelihood", PAIRS)), hf.loglikelihood(requests("loglikelihood", PAIRS))
    for (a, greedy_a), (b, greedy_b) in zip(mine, theirs, strict=True):
        assert a == pytest.approx(b, abs=1e-4) and greedy_a == greedy_b
    texts = [(t,) for t in TEXTS]
    rolled = ours.loglikelihood_rolling(requests("loglikelihood_rolling", texts))
    assert rolled == pytest.approx(hf.loglikelihood_rolling(requests("loglikelihood_rolling", texts)), abs=1e-4)
    # windows: a max_length shorter than the text scores it in several windows, as hf does
    ours._max_length, hf._max_length = 8, 8
    assert ours.loglikelihood_rolling(requests("loglikelihood_rolling", texts)) == pytest.approx(
        hf.loglikelihood_rolling(requests("loglikelihood_rolling", texts)), abs=1e-4)
    hf._max_length = None

    manager = TaskManager(include_path=str(bridge_run["tasks"]))
    results = [lm_eval.simple_evaluate(model=lm, tasks=["lb_mc"], task_manager=manager, log_samples=True)
               for lm in (LatentBridgeLM(run=str(bridge_run["run"]), system="target", batch_size=4), hf)]
    (a, b) = (r["results"]["lb_mc"] for r in results)
    assert (a["acc,none"], a["acc_norm,none"]) == (b["acc,none"], b["acc_norm,none"])
    scores = [[float(x[0]) for s in r["samples"]["lb_mc"] for x in s["filtered_resps"]] for r in results]
    assert len(scores[0]) == 24 and scores[0] == pytest.approx(scores[1], abs=1e-4)


def harness_scores(lm, folder, cue=None):
    """The evaluation harness on the adapter's experiment, 2 items: the evaluator and its bridged scores (with
    ``cue``, every prompt's cue replaced by it)."""
    import dataclasses

    exp = lm.experiment
    ev = Evaluator(exp.bridge, exp.task, EvalSettings(n=2, batch_size=2, max_new_tokens=4, stop=[], systems=["bridged"]),
                   folder, use_cache=False)
    if cue is not None:
        ev.prompts = [dataclasses.replace(p, cue=cue) for p in ev.prompts]
    return ev, ev.scores()["bridged"]


def test_the_bridged_system_scores_as_the_harness_does(bridge_run, random_pair):
    """The adapter's bridged log-likelihood of a choice is the harness's: the same message, the same layout."""
    lm = LatentBridgeLM(run=str(bridge_run["run"]), system="bridged", step="final", batch_size=2)
    ev, harness = harness_scores(lm, bridge_run["root"] / "ev")
    for index in range(2):
        prompt, item = ev.prompts[index], ev.items[index]
        got = lm.loglikelihood(requests("loglikelihood", [(prompt.text, " " + c) for c in item.choices]))
        assert [g for g, _ in got] == pytest.approx(harness[index], abs=1e-4)
    target = LatentBridgeLM(run=str(bridge_run["run"]), system="target")
    pairs = [(ev.prompts[0].text, " " + c) for c in ev.items[0].choices]
    assert [g for g, _ in target.loglikelihood(requests("loglikelihood", pairs))] != pytest.approx(harness[0], abs=1e-3)


def test_results_do_not_depend_on_batching_and_repeat(bridge_run):
    one = LatentBridgeLM(run=str(bridge_run["run"]), system="bridged", step="final", batch_size=1)
    three = LatentBridgeLM(run=str(bridge_run["run"]), system="bridged", step="final", batch_size=3)
    a = one.loglikelihood(requests("loglikelihood", PAIRS))
    assert [x for x, _ in a] == pytest.approx([x for x, _ in three.loglikelihood(requests("loglikelihood", PAIRS))], abs=1e-4)
    gen = [("Question: How many moons does the planet Velkar have?\nAnswer:", {"until": ["\n"], "max_gen_toks": 6})] * 2
    outs = three.generate_until(requests("generate_until", gen))
    assert outs == one.generate_until(requests("generate_until", gen)) and outs[0] == outs[1]
    with pytest.raises(LatentBridgeError, match="greedily"):
        one.generate_until(requests("generate_until", [("x", {"do_sample": True})]))


def test_bad_model_args_are_one_clear_error(bridge_run, tmp_path):
    with pytest.raises(LatentBridgeError, match="system must be one of"):
        LatentBridgeLM(run=str(bridge_run["run"]), system="relay")
    with pytest.raises(LatentBridgeError, match="not a run folder"):
        LatentBridgeLM(run=str(tmp_path))
    with pytest.raises(LatentBridgeError, match="step must be"):
        LatentBridgeLM(run=str(bridge_run["run"]), step="last")
    # a misspelt argument is named, never ignored (sytem=target once evaluated the bridged system)
    with pytest.raises(LatentBridgeError, match="unknown model argument 'sytem' \\(did you mean 'system'\\?\\)"):
        LatentBridgeLM(run=str(bridge_run["run"]), sytem="target")
    with pytest.raises(LatentBridgeError, match="dtype must be one of"):
        LatentBridgeLM(run=str(bridge_run["run"]), dtype="int8")
    with pytest.raises(LatentBridgeError, match="batch_size must be an integer or 'auto'"):
        LatentBridgeLM(run=str(bridge_run["run"]), batch_size="big")


def test_dtype_is_honoured_and_auto_batch_is_said(bridge_run, capsys):
    lm = LatentBridgeLM(run=str(bridge_run["run"]), system="target", dtype="bfloat16", batch_size="auto",
                        max_batch_size=3)
    assert lm.frozen.model.dtype == torch.bfloat16 and lm.batch_size_per_gpu == 3
    assert "batch_size=auto is not searched for; using batch size 3" in capsys.readouterr().err
    assert LatentBridgeLM(run=str(bridge_run["run"]), system="target", dtype="float32").frozen.model.dtype == torch.float32


def test_the_cli_runs_lm_eval_with_the_bridge_offline(bridge_run, tmp_path):
    out = tmp_path / "out"
    args = ["lm-eval", "--model", "latentbridge", "--model_args", f"run={bridge_run['run']},system=bridged,step=best",
            "--tasks", "lb_mc,lb_gen", "--include_path", str(bridge_run["tasks"]), "--output_path", str(out),
            "--batch_size", "2"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    (written,) = out.rglob("results_*.json")
    results = json.loads(written.read_text())["results"]
    assert 0 <= results["lb_mc"]["acc,none"] <= 1 and 0 <= results["lb_mc"]["acc_norm,none"] <= 1
    assert "exact_match,none" in results["lb_gen"]
    bad = CliRunner().invoke(app, ["lm-eval", "--model", "latentbridge", "--model_args", f"run={tmp_path}",
                                   "--tasks", "lb_mc", "--include_path", str(bridge_run["tasks"])])
    assert bad.exit_code == 2 and "not a run folder" in bad.output


def test_the_empty_context_uses_the_prefix_token(bridge_run):
    lm = LatentBridgeLM(run=str(bridge_run["run"]), system="target")
    (score, _), = lm.loglikelihood(requests("loglikelihood", [("", "Velkar has 3 rings.")]))
    ids = lm.tok_encode("Velkar has 3 rings.", add_special_tokens=False)
    context = [lm.prefix_token_id] if lm.prefix_token_id != ids[0] else ids[:1]
    scored = ids if context != ids[:1] else ids[1:]
    with torch.no_grad():
        logp = torch.log_softmax(lm.frozen.model(input_ids=torch.tensor([context + scored])).logits[0].float(), -1)
    assert score == pytest.approx(sum(logp[len(context) - 1 + i, t].item() for i, t in enumerate(scored)), abs=1e-4)


def test_requests_show_a_progress_bar(bridge_run, capsys):
    lm = LatentBridgeLM(run=str(bridge_run["run"]), system="target", batch_size=2)
    lm.loglikelihood(requests("loglikelihood", [("Velkar has", " 3 rings."), ("Kor has", " 2 moons.")]))
    assert "Running loglikelihood requests" in capsys.readouterr().err
    lm.loglikelihood(requests("loglikelihood", [("Velkar has", " 3 rings.")]), disable_tqdm=True)
    assert "Running loglikelihood requests" not in capsys.readouterr().err


@pytest.fixture(scope="module")
def chat_run(random_pair, bridge_run, tmp_path_factory):
    """A short facts_mc run on a copy of the random pair whose tokenizers have chat templates, read through
    them in training (task.chat_template: true)."""
    from .helpers import recipe_dict
    from .test_chat_template import with_chat_templates

    root = tmp_path_factory.mktemp("lm_eval_chat")
    pair = with_chat_templates(random_pair, root)

    data = recipe_dict(pair, "eval.n=4", "eval.dev_n=4")
    data["task"] = {"name": "facts_mc", "chat_template": True}
    (root / "r.yaml").write_text(json.dumps(data))
    result = CliRunner().invoke(app, ["run", str(root / "r.yaml"), f"run_dir={root / 'run'}"])
    assert result.exit_code == 0, result.output
    return {"run": root / "run", "pair": pair, "root": root}


def test_chat_template_system_instruction_and_multiturn_few_shot_score_as_hf(chat_run, bridge_run):
    """target with --apply_chat_template, --system_instruction and --fewshot_as_multiturn: lm-eval's hf model's
    scores on the same folder (the rendered contexts differ from the plain ones, so this compares templates)."""
    manager = TaskManager(include_path=str(bridge_run["tasks"]))
    hf = HFLM(pretrained=str(chat_run["pair"]["mistral"]), dtype="float32", device="cpu", batch_size=2)
    ours = LatentBridgeLM(run=str(chat_run["run"]), system="target", batch_size=3)
    history = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Question: x?\nAnswer:"}]
    assert ours.apply_chat_template(history) == hf.apply_chat_template(history)
    assert ours.apply_chat_template(history).startswith("<s>Ask Be brief.")  # the template, not the plain text
    options = {"apply_chat_template": True, "system_instruction": "Be brief.", "fewshot_as_multiturn": True,
               "num_fewshot": 1, "log_samples": True, "random_seed": 0, "fewshot_random_seed": 1234}
    results = [lm_eval.simple_evaluate(model=lm, tasks=["lb_mc"], task_manager=manager, **options) for lm in (ours, hf)]
    contexts = [[s["arguments"][0][0] for s in r["samples"]["lb_mc"]] for r in results]
    assert contexts[0] == contexts[1] and all(c.startswith("<s>Ask Be brief.") for c in contexts[0])
    scores = [[float(x[0]) for s in r["samples"]["lb_mc"] for x in s["filtered_resps"]] for r in results]
    assert len(scores[0]) == 24 and scores[0] == pytest.approx(scores[1], abs=1e-4)
    plain = LatentBridgeLM(run=str(chat_run["run"]), system="target")
    first = results[0]["samples"]["lb_mc"][0]["arguments"][0]
    (templated, _), = plain.loglikelihood(requests("loglikelihood", [tuple(first)]))
    assert templated == pytest.approx(scores[0][0], abs=1e-4)


def test_bridged_reads_a_chat_request_as_in_training(chat_run):
    """system=bridged on a chat recipe: a one-turn chat request scores as the harness scores the same item
    (each model's own template, the message in the user turn, the cue after the assistant's opening)."""
    lm = LatentBridgeLM(run=str(chat_run["run"]), system="bridged", step="final", batch_size=2)
    ev, harness = harness_scores(lm, chat_run["root"] / "ev")
    fresh = LatentBridgeLM(run=str(chat_run["run"]), system="bridged", step="final", batch_size=2)
    for index in range(2):
        prompt, item = ev.prompts[index], ev.items[index]
        rendered = lm.apply_chat_template([{"role": "user", "content": prompt.text}])
        assert rendered.startswith("<s>Ask") and rendered.endswith(prompt.cue)
        pairs = [(rendered, " " + c) for c in item.choices]
        got = lm.loglikelihood(requests("loglikelihood", pairs))
        assert [g for g, _ in got] == pytest.approx(harness[index], abs=1e-4)
        # read back from the text alone: requests lm-eval cached (never rendered by this instance) read alike
        assert [g for g, _ in fresh.loglikelihood(requests("loglikelihood", pairs))] == pytest.approx(harness[index],
                                                                                                     abs=1e-4)
    # a template whose assistant opening ends in a line break: lm-eval would move a trailing "\n" of the context
    # into the continuation, to be read twice; the rendering comes without it, and scores as the harness does
    import copy

    from latentbridge.bridge.encoding import PromptEncoder

    tokenizer = copy.deepcopy(lm.bridge.target.tokenizer)
    tokenizer.chat_template = tokenizer.chat_template + "{{ '\\n' }}"  # (a template's own last newline is dropped)
    lm.bridge.target_encoder = PromptEncoder(tokenizer, chat=True)
    ev, harness = harness_scores(lm, chat_run["root"] / "ev_newline", cue="")
    prompt, item = ev.prompts[0], ev.items[0]
    rendered = lm.apply_chat_template([{"role": "user", "content": prompt.text}])
    assert lm.bridge.target_encoder.text(prompt).endswith(" Then\n") and rendered.endswith(" Then")
    got = lm.loglikelihood(requests("loglikelihood", [(rendered, " " + c) for c in item.choices]))
    assert [g for g, _ in got] == pytest.approx(harness[0], abs=1e-4)


def test_bridged_reads_a_system_instruction_and_multiturn_few_shot(chat_run, bridge_run):
    """system=bridged with --system_instruction and --fewshot_as_multiturn: each model reads the conversation
    through its own template, the message at the last user turn's start; a request scores as the harness
    scores the same item with those earlier turns, and otherwise than without them."""
    import dataclasses

    lm = LatentBridgeLM(run=str(chat_run["run"]), system="bridged", step="final", batch_size=2)
    ev, alone = harness_scores(lm, chat_run["root"] / "ev_turns_alone")
    shot = ev.prompts[1]
    turns = (("system", "Be brief."), ("user", shot.header + shot.question + shot.cue), ("assistant", ev.items[1].choices[0]))
    ev.prompts = [dataclasses.replace(p, turns=turns) for p in ev.prompts]
    harness = ev.scores()["bridged"]
    prompt, item = ev.prompts[0], ev.items[0]
    history = [{"role": r, "content": c} for r, c in turns] + [{"role": "user", "content": prompt.text}]
    rendered = lm.apply_chat_template(history)
    assert rendered.startswith("<s>Ask Be brief.") and rendered.endswith(prompt.cue)
    got = [g for g, _ in lm.loglikelihood(requests("loglikelihood", [(rendered, " " + c) for c in item.choices]))]
    assert got == pytest.approx(harness[0], abs=1e-4) and got != pytest.approx(alone[0], abs=1e-3)
    # through lm-eval: every context is a conversation the model rendered, read with its earlier turns
    manager = TaskManager(include_path=str(bridge_run["tasks"]))
    options = {"apply_chat_template": True, "system_instruction": "Be brief.", "fewshot_as_multiturn": True,
               "num_fewshot": 1, "log_samples": True, "random_seed": 0, "fewshot_random_seed": 1234}
    fresh = LatentBridgeLM(run=str(chat_run["run"]), system="bridged", step="final", batch_size=2)
    results = lm_eval.simple_evaluate(model=fresh, tasks=["lb_mc"], task_manager=manager, **options)
    contexts = [s["arguments"][0][0] for s in results["samples"]["lb_mc"]]
    assert contexts and all(c.startswith("<s>Ask Be brief.") for c in contexts)
    read = [fresh._prompt(c) for c in contexts]
    assert all([role for role, _ in p.turns] == ["system", "user", "assistant"] for p in read)
    assert all(0 <= r["acc,none"] <= 1 for r in [results["results"]["lb_mc"]])


def test_a_conversation_not_rendered_here_is_refused_not_misread(chat_run):
    """A multi-turn rendering the model did not make (lm-eval's request cache) cannot be read back into its
    turns: it is refused in one line rather than read as one long user message."""
    import copy

    from latentbridge.bridge.encoding import PromptEncoder

    lm = LatentBridgeLM(run=str(chat_run["run"]), system="bridged", step="final")
    tokenizer = copy.deepcopy(lm.bridge.target.tokenizer)
    # markup around each turn, as real templates have (rendered as text only: the tiny vocabulary cannot spell it)
    tokenizer.chat_template = ("{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }} [/end]{% endfor %}"
                               "{% if add_generation_prompt %}[assistant]{% endif %}")
    lm.bridge.target_encoder = PromptEncoder(tokenizer, chat=True)
    history = [{"role": "user", "content": "Q1"}, {"role": "assistant", "content": "A1"}, {"role": "user", "content": "Q2"}]
    rendered = lm.apply_chat_template(history)
    assert lm._prompt(rendered).turns == (("user", "Q1"), ("assistant", "A1"))  # rendered here: looked up
    other = LatentBridgeLM(run=str(chat_run["run"]), system="bridged", step="final")
    other.bridge.target_encoder = PromptEncoder(tokenizer, chat=True)
    with pytest.raises(LatentBridgeError, match="several turns that this model did not render"):
        other._prompt(rendered)
    # a system turn first: the text does not start as a one-turn rendering, and is refused too (not read as plain)
    system = lm.apply_chat_template([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Q2"}])
    assert lm._prompt(system).turns == (("system", "Be brief."),)
    with pytest.raises(LatentBridgeError, match="did not make and cannot read back"):
        other._prompt(system)
    one = other.apply_chat_template([{"role": "user", "content": "Q2"}])
    assert other._prompt(one).question == "Q2" and not other._prompt(one).turns  # one turn: read back from the text
    assert other._prompt("Question: Q2 Then?").question == "Question: Q2 Then?"  # a plain context: the user's message


def test_chat_options_the_bridge_cannot_serve_are_one_clear_error(chat_run, bridge_run, tmp_path):
    bridged = LatentBridgeLM(run=str(chat_run["run"]), system="bridged", step="final")
    with pytest.raises(LatentBridgeError, match="gen_prefix works with system=target"):  # continuing the last message
        bridged.apply_chat_template([{"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"}],
                                    add_generation_prompt=False)
    with pytest.raises(LatentBridgeError, match="got the roles \\['user', 'user'\\]"):
        bridged.apply_chat_template([{"role": "user", "content": "Q"}, {"role": "user", "content": "Q2"}])
    with pytest.raises(LatentBridgeError, match="got the roles \\['user', 'assistant'\\]"):  # no user turn last
        bridged.apply_chat_template([{"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"}])
    plain = LatentBridgeLM(run=str(bridge_run["run"]), system="bridged", step="final")
    with pytest.raises(LatentBridgeError, match="task.chat_template: true"):
        plain.apply_chat_template([{"role": "user", "content": "Q"}])
    out = tmp_path / "out"  # through the CLI: a model folder without a template is one line, exit 2
    result = CliRunner().invoke(app, ["lm-eval", "--model", "latentbridge", "--model_args", f"run={bridge_run['run']},"
                                      "system=target", "--tasks", "lb_mc", "--include_path", str(bridge_run["tasks"]),
                                      "--apply_chat_template", "--output_path", str(out), "--limit", "1"])
    assert result.exit_code == 2 and "has no chat template" in result.output, result.output
    assert not out.exists()


def test_the_cli_runs_bridged_with_a_system_instruction_and_multiturn_few_shot(chat_run, bridge_run, tmp_path):
    out = tmp_path / "out"
    args = ["lm-eval", "--model", "latentbridge", "--model_args", f"run={chat_run['run']},system=bridged,step=final",
            "--tasks", "lb_mc", "--include_path", str(bridge_run["tasks"]), "--output_path", str(out), "--limit", "2",
            "--apply_chat_template", "--system_instruction", "Be brief.", "--fewshot_as_multiturn", "--num_fewshot", "1",
            "--log_samples"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    (samples,) = out.rglob("samples_lb_mc_*.jsonl")
    contexts = [json.loads(line)["arguments"]["gen_args_0"]["arg_0"] for line in samples.read_text().splitlines()]
    assert len(contexts) == 2 and all(c.startswith("<s>Ask Be brief.") for c in contexts)
