"""Peak resident memory of loading a ~1B-parameter model folder saved in bf16: dtype 'auto' against float32.

    python benchmarks/load_memory.py [--folder DIR]

Builds (once) a random-weight Llama of 0.85B parameters in bf16 (1.6 GiB on disk), then loads it
with latentbridge's `load_frozen` in a fresh process per variant and records that process's peak RSS
(`ru_maxrss`). The on-paper floor of a bf16 load is the weights' bytes; a float32 load needs twice that.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from common import write

LOAD = """
import json, resource, sys, torch
from latentbridge.bridge.models import load_frozen
model = load_frozen(sys.argv[1], dtype=sys.argv[2], device="cpu")
params = sum(p.numel() for p in model.model.parameters())
print(json.dumps({"dtype": str(model.dtype), "parameters": params,
                  "weight_bytes": sum(p.numel() * p.element_size() for p in model.model.parameters()),
                  "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))
"""


def build(folder: Path) -> None:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=32000, hidden_size=2048, intermediate_size=5632, num_hidden_layers=16,
                         num_attention_heads=16, num_key_value_heads=4, max_position_embeddings=2048,
                         tie_word_embeddings=False, dtype="bfloat16")
    torch.set_default_dtype(torch.bfloat16)
    with torch.device("meta"):
        model = LlamaForCausalLM(config)
    model = model.to_empty(device="cpu")
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.02)
    model.save_pretrained(folder, max_shard_size="1GB")
    # a tokenizer folder is needed by load_frozen: the built-in tiny-llama's
    from latentbridge.bridge.models import builtin_models

    for name in ("tokenizer.json", "tokenizer_config.json"):
        (folder / name).write_bytes((builtin_models()["tiny-llama"] / name).read_bytes())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", type=Path, default=None)
    args = parser.parse_args()
    folder = args.folder or Path(tempfile.gettempdir()) / "latentbridge-1b-bf16"
    if not (folder / "config.json").is_file():
        build(folder)
    rows = []
    for dtype in ("auto", "float32"):
        out = subprocess.run([sys.executable, "-c", LOAD, str(folder), dtype], capture_output=True, text=True, check=True)
        rows.append({"requested": dtype, **json.loads(out.stdout.strip().splitlines()[-1])})
    auto, fp32 = rows
    result = {"rows": rows, "auto_peak_over_weights": auto["peak_rss_bytes"] / auto["weight_bytes"],
              "float32_peak_over_auto_peak": fp32["peak_rss_bytes"] / auto["peak_rss_bytes"]}
    gib = 2**30
    table = [("models.dtype", "loaded as", "parameters", "weights", "peak RSS", "peak / weights")]
    for r in rows:
        table.append((r["requested"], r["dtype"], f"{r['parameters'] / 1e9:.2f}B", f"{r['weight_bytes'] / gib:.2f} GiB",
                      f"{r['peak_rss_bytes'] / gib:.2f} GiB", f"{r['peak_rss_bytes'] / r['weight_bytes']:.2f}"))
    notes = (f"A random-weight Llama saved in bf16 (2 shards), each load in a fresh process. `auto` keeps the "
             f"checkpoint's bf16: its peak is {result['auto_peak_over_weights']:.2f}x the bf16 weights (the rest: "
             f"Python, torch, transformers); a float32 load peaks {result['float32_peak_over_auto_peak']:.2f}x higher.")
    write("load_memory", result, table, notes)

if __name__ == "__main__":
    main()
