"""The GPU check: the tiny pair and a random ~1B-parameter Llama -> Qwen2 pair in bf16 on CUDA.

    python benchmarks/gpu_check.py [--steps 20] [--items 64]

For each pair: a training step's time over its floor (the translator, the target's forward and the
backward to the soft tokens: benchmarks/step_floor.py's definition), evaluation tokens per second (greedy
generation of the bridged system, batched), and the peak GPU memory of the training steps against the
on-paper estimate (the frozen weights, the translator, its AdamW state and gradients). Writes
results/gpu_check.{json,md} with the machine. Needs CUDA; on a machine without it, it says so and exits 2.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch
from common import soft_token_floor, summary, write

from latentbridge.bridge.build import Experiment
from latentbridge.bridge.generation import greedy_generate
from latentbridge.config.recipe import load_recipe
from latentbridge.train.runner import Runner

BASE = ["models.dtype=bfloat16", "models.device=cuda", "train.batch_size=16", "eval.dev_n=64", "eval.n=64"]


def random_folder(root: Path, kind: str) -> Path:
    """A random-weight ~1B model folder in bf16 (tokenizer: the built-in pair's, so no download)."""
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    from latentbridge.bridge.models import builtin_models

    folder = root / kind
    if (folder / "config.json").is_file():
        return folder
    tokenizer_from = builtin_models()["tiny-llama" if kind == "llama" else "tiny-mistral"]
    from transformers import AutoTokenizer

    vocab = len(AutoTokenizer.from_pretrained(tokenizer_from))
    common = dict(vocab_size=vocab, max_position_embeddings=4096, dtype="bfloat16")
    if kind == "llama":
        config, cls = LlamaConfig(hidden_size=2048, intermediate_size=5632, num_hidden_layers=22, num_attention_heads=16,
                                  num_key_value_heads=4, **common), LlamaForCausalLM
    else:
        config, cls = Qwen2Config(hidden_size=1792, intermediate_size=6144, num_hidden_layers=24, num_attention_heads=14,
                                  num_key_value_heads=2, **common), Qwen2ForCausalLM
    torch.manual_seed(0)
    model = cls(config).to(torch.bfloat16)
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(tokenizer_from).save_pretrained(folder)
    return folder


def measure(name: str, overrides: list[str], steps: int, items: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        recipe = load_recipe("answer_softplus", [*BASE, f"cache.dir={tmp}/cache", *overrides])
        exp = Experiment.build(recipe)
        runner = Runner(exp, f"{tmp}/run")
        runner.train_step(1)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        times = []
        for step in range(2, steps + 2):
            start = time.perf_counter()
            runner.train_step(step)
            torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
        peak = torch.cuda.max_memory_allocated()
        floor = floor_times(exp, runner, steps)
        bridge = exp.bridge
        prompts = [exp.task.prompt(e) for e in exp.task.examples("test")[:items]]
        torch.cuda.synchronize()
        start, tokens = time.perf_counter(), 0
        with torch.no_grad():
            for i in range(0, items, 32):
                chunk = prompts[i : i + 32]
                outs = greedy_generate(bridge.target.model, bridge.target.tokenizer,
                                       bridge.bridged_inputs(bridge.soft_tokens(chunk), chunk, with_answer=False),
                                       max_new_tokens=96, eos_ids=bridge.target.eos_ids(), stop=["\n\n"])
                tokens += sum(len(o.token_ids) for o in outs)
        torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        frozen = sum(p.numel() * p.element_size() for m in (bridge.source, bridge.target) for p in m.model.parameters())
        trained = sum(p.numel() for p in exp.trainable_parameters())
        estimate = frozen + trained * 4 * 4  # fp32 weights, gradients and AdamW's two moments
    step, low = summary(times)["median_s"], summary(floor)["median_s"]
    return {"pair": name, "step_s": step, "floor_s": low, "step_over_floor": step / low,
            "eval_tokens_per_s": tokens / seconds, "peak_gpu_bytes": peak, "estimate_bytes": estimate,
            "peak_over_estimate": peak / estimate}


def floor_times(exp, runner, steps: int) -> list[float]:
    floor = soft_token_floor(exp, runner.train_examples[: exp.recipe.train.batch_size],
                             autocast=lambda: torch.autocast("cuda", dtype=torch.bfloat16))
    out = []
    for _ in range(steps):
        torch.cuda.synchronize()
        start = time.perf_counter()
        floor()
        torch.cuda.synchronize()
        out.append(time.perf_counter() - start)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--items", type=int, default=64)
    parser.add_argument("--folders", type=Path, default=Path(tempfile.gettempdir()) / "latentbridge-gpu-check")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("gpu_check: no CUDA device on this machine; nothing measured", file=sys.stderr)
        sys.exit(2)
    rows = [measure("tiny-llama -> tiny-mistral", [], args.steps, args.items)]
    llama, qwen = random_folder(args.folders, "llama"), random_folder(args.folders, "qwen2")
    rows.append(measure("random 1.1B Llama -> 1.0B Qwen2", [f"models.source={llama}", f"models.target={qwen}",
                                                          "translator.d_model=512"], args.steps, args.items))
    gib = 2**30
    table = [("pair", "step / floor", "eval tokens/s", "peak GPU memory", "on-paper estimate", "peak / estimate")]
    table += [(r["pair"], f"{r['step_over_floor']:.2f}", f"{r['eval_tokens_per_s']:.0f}", f"{r['peak_gpu_bytes'] / gib:.2f} GiB",
               f"{r['estimate_bytes'] / gib:.2f} GiB", f"{r['peak_over_estimate']:.2f}") for r in rows]
    write("gpu_check", {"rows": rows, "device": torch.cuda.get_device_name()}, table,
          notes=f"Device: {torch.cuda.get_device_name()}; bf16 frozen models, fp32 translator under autocast.")


if __name__ == "__main__":
    main()
