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


def test_the_bridged_system_scores_as_the_harness_does(bridge_run, random_pair):
    """The adapter's bridged log-likelihood of a choice is the harness's: the same message, the same layout."""
    lm = LatentBridgeLM(run=str(bridge_run["run"]), system="bridged", step="final", batch_size=2)
    exp = lm.experiment
    ev = Evaluator(exp.bridge, exp.task, EvalSettings(n=2, batch_size=2, max_new_tokens=4, stop=[], systems=["bridged"]),
                   bridge_run["root"] / "ev", use_cache=False)
    harness = ev.scores()["bridged"]
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
