"""Build the pretrained tiny source/target LLM pair and the synthetic ``arith`` and ``facts`` data.

The pair mimics a Llama / Mistral pair at toy scale, trained from scratch on
GSM8K-format synthetic word problems (``arith``, see :mod:`.arith`) and on facts about
invented entities (``facts``, see :mod:`.facts`):

* ``tiny-llama`` (the stronger model): ``LlamaForCausalLM``, 4 layers x 128 wide,
  GQA 4/2 heads, rope base 500000, byte-level BPE with single-digit tokens.
* ``tiny-mistral`` (the weaker model): ``MistralForCausalLM``, 3 layers x 96
  wide, GQA 4/2 heads, rope base 10000, SentencePiece-style Metaspace BPE with
  multi-digit number pieces and a smaller vocabulary.

Both are trained by our own seeded AdamW loop on ``Question: q\\nAnswer: a`` + eos
and scored by greedy generation on the 200 arith test problems (target accuracies
about 0.8 and 0.5) and the 200 facts test questions. tiny-llama learns the facts of
every task entity (train, dev and test: the source knows them all); tiny-mistral learns
only the ``public`` entities' facts (the answer format), never a task entity's, so on the
facts task it is near chance. :func:`build_pair` writes::

    out_dir/arith/{train,test}.jsonl
    out_dir/facts/{train,dev,test,public}.jsonl
    out_dir/tiny-llama/    config.json, model.safetensors, tokenizer files
    out_dir/tiny-mistral/  (same)
    out_dir/zoo.json       per-model facts: params, tokenizer, sizes, accuracy, seconds

Every folder loads offline with ``AutoModelForCausalLM.from_pretrained`` and
``AutoTokenizer.from_pretrained``. Same seed and thread count -> same weights.
All settings live in :mod:`.specs`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedTokenizerFast

from latentbridge.zoo import facts as facts_task
from latentbridge.zoo import passages as passages_task
from latentbridge.zoo.arith import Example, generate_splits, masked, read_jsonl, write_jsonl
from latentbridge.zoo.evaluate import evaluate_accuracy
from latentbridge.zoo.specs import N_TEST, N_TRAIN, TORCH_THREADS, ZOO, ModelSpec
from latentbridge.zoo.tokenizer_pair import train_llama_tokenizer, train_mistral_tokenizer
from latentbridge.zoo.train import eval_prompt, make_model, train_model, train_reading, train_text

Progress = Callable[[str, int, int], None]
_TOKENIZER_TRAINERS = {"llama": train_llama_tokenizer, "mistral": train_mistral_tokenizer}
_TOKENIZER_TYPES = {
    "llama": "byte BPE, 1-digit",
    "mistral": "Metaspace, n-digit",
}


FACTS_SPLITS = ("train", "dev", "test", "public")


def taught_facts(spec: ModelSpec, facts: dict[str, list[Example]]) -> list[Example]:
    """The facts examples ``spec`` learns (each once): every task entity's, the public ones', or none."""
    if spec.facts == "task":
        return facts["train"] + facts["dev"] + facts["test"]
    if spec.facts == "public":
        return list(facts["public"])
    if spec.facts == "none":
        return []
    raise ValueError(f"unknown facts setting {spec.facts!r}")


def arith_by_subset(model: Any, tokenizer: Any, train: list[Example], test: list[Example],
                    progress: Any = None) -> dict[str, Any]:
    """Accuracy on the test problems equal to a training problem once names are masked (``twin``) and on the
    others (``fresh``): the subsets the ``arith`` task names in every record."""
    seen = {masked(e["question"]) for e in train}
    out = {}
    for name, rows in (("fresh", [e for e in test if masked(e["question"]) not in seen]),
                       ("twin", [e for e in test if masked(e["question"]) in seen])):
        if rows:
            accuracy = evaluate_accuracy(model, tokenizer, rows, progress=progress)
            out[name] = {"correct": round(accuracy * len(rows)), "n": len(rows), "accuracy": accuracy}
    return out


def passages_accuracy(model: Any, tokenizer: Any, seed: int, progress: Any = None, n: int = N_TEST) -> dict[str, Any]:
    """Accuracy on the first ``n`` ``passages`` test items (4 facts each) with the context (what the skyline
    reads) and without it (the question only: chance is one in :data:`passages_task.N_VALUES`)."""
    test = passages_task.generate_split("test", seed, n=n)
    alone = [{**e, "question": e["query"]} for e in test]
    return {"n": len(test), "n_facts": 4,
            "with_context": evaluate_accuracy(model, tokenizer, test, progress=progress),
            "question_only": evaluate_accuracy(model, tokenizer, alone, progress=progress)}


def read_stage(model: Any, tokenizer: Any, spec: ModelSpec, train: list[Example], taught: list[Example], seed: int,
               progress: Progress | None = None, on_step: Callable[[int], None] | None = None) -> list[float]:
    """``spec.reading``: teach a trained model to read a passage, replaying its arith problems and the facts it
    was taught (see :func:`~latentbridge.zoo.train.train_reading`)."""
    stage = spec.reading
    assert stage is not None

    def first(examples: list[Example]) -> list[tuple[str, str, float]]:
        return [(train_text(e["question"], e["answer"]), eval_prompt(e["question"]), spec.prompt_loss_weight)
                for e in examples]

    read = passages_task.generate_split("public", seed, n=stage.passages, n_facts=None)
    passages = [(train_text(e["question"], e["answer"]), eval_prompt(e["question"])) for e in read]
    return train_reading(model, tokenizer, [(first(train), stage.replay), (first(taught), stage.replay_facts)],
                         passages, spec, seed + spec.seed_offset, progress, on_step)


def build_model(
    spec: ModelSpec,
    train: list[Example],
    test: list[Example],
    out_dir: Path,
    seed: int,
    progress: Progress | None = None,
    facts: dict[str, list[Example]] | None = None,
) -> dict[str, Any]:
    """Train tokenizer + model for ``spec`` on arith ``train`` (and the facts ``spec.facts`` names, each
    ``spec.facts_repeat`` times), save to ``out_dir/spec.name``, return what was measured."""
    start = time.time()
    taught = taught_facts(spec, facts) if facts else []
    read = passages_task.generate_split("public", seed, n=spec.passages, n_facts=None) if spec.passages else []
    examples = list(train) + taught * spec.facts_repeat + read
    texts = [train_text(e["question"], e["answer"]) for e in examples]
    prompts = [eval_prompt(e["question"]) for e in examples]
    # a passage's invented names and values cannot be predicted: its prompt is read, not learned
    weights = [spec.prompt_loss_weight] * (len(examples) - len(read)) + [spec.passages_prompt_weight] * len(read)
    if spec.tokenizer_of is not None:  # the very tokenizer files of a model built before it
        tokenizer = PreTrainedTokenizerFast.from_pretrained(out_dir / spec.tokenizer_of)
    else:
        tokenizer = _TOKENIZER_TRAINERS[spec.tokenizer](texts, spec.vocab_size)
    model = make_model(spec, tokenizer, seed + spec.seed_offset)
    losses = train_model(model, tokenizer, texts, prompts, spec, seed + spec.seed_offset, progress, weights)
    if spec.reading is not None:
        losses += read_stage(model, tokenizer, spec, train, taught, seed, progress)

    def eval_progress(done: int, total: int) -> None:
        if progress is not None:
            progress(f"eval {spec.name}", done, total)

    accuracy = evaluate_accuracy(model, tokenizer, test, progress=eval_progress)
    measured: dict[str, Any] = {"arith_by_subset": arith_by_subset(model, tokenizer, train, test, eval_progress)}
    if facts:
        measured["facts_accuracy"] = evaluate_accuracy(model, tokenizer, facts["test"], progress=eval_progress)
        measured["n_facts_eval"] = len(facts["test"])
        # what it was taught (the first 200): high for both, so the target does know the answer format
        measured["taught_facts_accuracy"] = (
            evaluate_accuracy(model, tokenizer, taught[:N_TEST], progress=eval_progress) if taught else None)
    measured["passages"] = passages_accuracy(model, tokenizer, seed, eval_progress, n=min(N_TEST, len(test)))
    folder = out_dir / spec.name
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    seconds = time.time() - start
    return {
        "folder": spec.name,
        "architecture": type(model).__name__,
        "parameters": sum(p.numel() for p in model.parameters()),
        "tokenizer_type": _TOKENIZER_TYPES[spec.tokenizer],
        "vocab_size": len(tokenizer),
        "hidden_size": spec.hidden_size,
        "num_layers": spec.num_layers,
        "rope_theta": spec.rope_theta,
        "accuracy": accuracy,
        "n_eval": len(test),
        **measured,
        "final_train_loss": sum(losses[-50:]) / len(losses[-50:]),
        "build_seconds": round(seconds, 1),
        "spec": spec.to_dict(),
    }


_RESULT = "@@zoo-result "
_PROGRESS = "@@zoo-progress "


def _child_main() -> None:
    """Entry point of the build subprocess: one model, arguments as JSON in argv[1].

    Flush-to-zero is a per-thread CPU flag that new threads inherit, so the
    command line of :func:`_build_isolated` sets it right after ``import torch``,
    before torch starts its intra-op worker threads; only a fresh process
    guarantees that. Without it, tiny-mistral's training passed through phases
    where subnormal floats made steps up to 10x slower (the weights were
    bit-identical with and without it).
    """
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # this process only: keep the caller's output clean
    args = json.loads(sys.argv[1])
    torch.set_flush_denormal(True)
    torch.set_num_threads(TORCH_THREADS)
    spec = ModelSpec.from_dict(args["spec"])
    out = Path(args["out_dir"])
    train, test = read_jsonl(out / "arith" / "train.jsonl"), read_jsonl(out / "arith" / "test.jsonl")
    facts = {split: read_jsonl(out / "facts" / f"{split}.jsonl") for split in FACTS_SPLITS}

    def report(stage: str, done: int, total: int) -> None:
        print(_PROGRESS + json.dumps([stage, done, total]), flush=True)

    measured = build_model(spec, train, test, out, args["seed"], report, facts)
    print(_RESULT + json.dumps(measured), flush=True)


def _build_isolated(spec: ModelSpec, out: Path, seed: int, progress: Progress | None) -> dict[str, Any]:
    """Build one model in a fresh Python subprocess (see :func:`_child_main`)."""
    src = str(Path(__file__).resolve().parents[2])  # the folder that holds latentbridge/
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([src] + [p for p in [env.get("PYTHONPATH")] if p])
    arg = json.dumps({"spec": spec.to_dict(), "out_dir": str(out), "seed": seed})
    code = (  # flush-to-zero before anything (even imports) can start torch threads
        "import torch; torch.set_flush_denormal(True); "
        f"torch.set_num_threads({TORCH_THREADS}); "
        "from latentbridge.zoo.build import _child_main; _child_main()"
    )
    cmd = [sys.executable, "-c", code, arg]
    result: dict[str, Any] | None = None
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith(_PROGRESS) and progress is not None:
                progress(*json.loads(line[len(_PROGRESS) :]))
            elif line.startswith(_RESULT):
                result = json.loads(line[len(_RESULT) :])
    if proc.returncode != 0 or result is None:
        raise RuntimeError(f"building {spec.name} failed (exit code {proc.returncode})")
    return result


def build_pair(
    out_dir: str | Path,
    seed: int = 0,
    progress: Progress | None = None,
    specs: tuple[ModelSpec, ...] = ZOO,
    n_train: int = N_TRAIN,
    n_test: int = N_TEST,
    isolate: bool = True,
) -> dict[str, Any]:
    """Build the arith task and both models under ``out_dir``; write and return ``zoo.json``.

    ``progress(stage, done, total)`` is called during data, training and eval.
    ``specs``/``n_train``/``n_test`` exist for quick tests with cheaper settings.
    With ``isolate`` (the default) each model is built in a fresh Python
    subprocess with flush-to-zero on all torch threads: fast, and independent of
    what the calling process did before. ``isolate=False`` builds in this process (same
    weights, but training may be much slower if subnormals appear).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    start = time.time()
    if progress is not None:
        progress("data", 0, 1)
    train, test = generate_splits(seed, n_train, n_test)
    write_jsonl(out / "arith" / "train.jsonl", train)
    write_jsonl(out / "arith" / "test.jsonl", test)
    facts = facts_task.generate_splits(seed)
    for split in FACTS_SPLITS:
        write_jsonl(out / "facts" / f"{split}.jsonl", facts[split])
    if progress is not None:
        progress("data", 1, 1)
    models: dict[str, Any] = {}
    for spec in specs:
        if isolate:
            models[spec.name] = _build_isolated(spec, out, seed, progress)
            continue
        threads = torch.get_num_threads()
        torch.set_num_threads(TORCH_THREADS)
        try:
            models[spec.name] = build_model(spec, train, test, out, seed, progress, facts)
        finally:
            torch.set_num_threads(threads)
    info = {
        "seed": seed,
        "task": {"name": "arith", "n_train": len(train), "n_test": len(test), "folder": "arith"},
        "facts": {"name": "facts", "folder": "facts", **{f"n_{split}": len(facts[split]) for split in FACTS_SPLITS},
                  "entities": {split: len({r["entity"] for r in facts[split]}) for split in FACTS_SPLITS}},
        "models": models,
        "arith_subsets": "the arith test split by subset (latentbridge.plugins.tasks.arith.Arith.subsets): twin = "
                         "equal to a training question once names and pronouns are masked, fresh = the rest; "
                         "measured by the harness",
        "torch_threads": TORCH_THREADS,
        "torch_version": torch.__version__,
        "build_seconds": round(time.time() - start, 1),
    }
    (out / "zoo.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    return info
