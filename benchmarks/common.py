"""Shared helpers for the benchmarks: machine facts, robust timing, and writing results.

Every benchmark measures ratios within one run (the machine is shared and noisy), interleaving the
variants it compares, and writes ``results/<name>.json`` and ``results/<name>.md`` with the command
that produced them and the machine it ran on.
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> dict[str, Any]:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    try:
        import transformers

        info["transformers"] = transformers.__version__
    except ImportError:
        pass
    return info


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed(fn: Callable[[], Any]) -> float:
    sync()
    start = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - start


def interleaved(variants: dict[str, Callable[[], Any]], repeats: int, warmup: int = 1) -> dict[str, list[float]]:
    """Time each variant ``repeats`` times, alternating between them so that load on the machine
    affects all alike; returns the seconds of every repeat."""
    for _ in range(warmup):
        for fn in variants.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(repeats):
        for name, fn in variants.items():
            times[name].append(timed(fn))
    return times


def summary(times: list[float]) -> dict[str, float]:
    return {"median_s": statistics.median(times), "min_s": min(times), "repeats": len(times)}


def write(name: str, result: dict[str, Any], table: list[tuple[str, ...]], notes: str = "") -> None:
    """Write ``results/<name>.json`` and a markdown table ``results/<name>.md``."""
    RESULTS.mkdir(exist_ok=True)
    # the command as run from the repository root, wherever it was started
    command = "python " + shlex.join([os.path.relpath(Path(sys.argv[0]).resolve(), RESULTS.parents[1]), *sys.argv[1:]])
    payload = {"benchmark": name, "command": command, "machine": machine(),
               "date": time.strftime("%Y-%m-%d"), **result}
    (RESULTS / f"{name}.json").write_text(json.dumps(payload, indent=2) + "\n")
    header, *rows = table
    lines = [f"# {name}", "", f"Command: `{command}`  ", f"Machine: {payload['machine']['cpu']}, "
             f"{payload['machine']['cores']} cores, torch {payload['machine']['torch']} ({payload['date']})", ""]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "---|" * len(header))
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    if notes:
        lines += ["", notes]
    (RESULTS / f"{name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def git_commit() -> str | None:
    """The latentbridge checkout's HEAD, abbreviated (``latentbridge.io.rundir.git_commit``: with a timeout)."""
    from latentbridge.io.rundir import git_commit as full

    commit = full()
    return commit[:7] if commit else None


KEPT_RUN_FILES = ("run.json", "recipe.yaml", "summary.json")


def pack_runs(folders: list[str], into: Path, subfolders: str | None = None,
              weights: Callable[[Path], bool] = lambda _: True) -> None:
    """Keep runs under ``into/<run name>/``: their small files, test evaluations and the dev-chosen weights
    (what latency measurements read; only for the runs ``weights`` accepts), and each folder matching
    ``subfolders`` (a glob) whole."""
    import shutil

    for raw in folders:
        folder = Path(raw)
        dest = into / folder.name
        if dest.exists():  # a rerun replaces the kept run whole: no file of the earlier one stays beside it
            shutil.rmtree(dest)
        dest.mkdir(parents=True)
        for name in KEPT_RUN_FILES:
            shutil.copy2(folder / name, dest / name)
        for file in folder.glob("eval_samples_test_*.jsonl"):
            shutil.copy2(file, dest / file.name)
        for sub in folder.glob(subfolders) if subfolders else ():
            shutil.copytree(sub, dest / sub.name, dirs_exist_ok=True)
        if (folder / "best" / "translator.safetensors").is_file() and weights(folder):
            (dest / "best").mkdir(exist_ok=True)
            for name in ("translator.safetensors", "translator.json"):
                shutil.copy2(folder / "best" / name, dest / "best" / name)


def write_or_check(files: dict[str, str], check: bool) -> int:
    """Write each ``results/<name>`` file, or with ``check`` compare them byte for byte (1 on a change)."""
    if check:
        changed = [n for n, text in files.items() if not (RESULTS / n).is_file() or (RESULTS / n).read_text() != text]
        print("every table regenerates byte for byte" if not changed else f"changed: {', '.join(changed)}")
        return 1 if changed else 0
    for name, text in files.items():
        (RESULTS / name).write_text(text)
        print(f"wrote {RESULTS / name}")
    return 0


def soft_token_floor(exp: Any, examples: list[Any], autocast: Callable[[], Any] | None = None) -> Callable[[], None]:
    """What a soft-token training step cannot avoid, on ``examples`` (benchmark 1's floor): the translator's
    forward, the target's forward on the bridged input and the backward to the soft tokens and the
    translator. The source's states and the layout are made once, outside what is timed."""
    import contextlib

    from latentbridge.plugins.objectives.nll import answer_nll

    bridge = exp.bridge
    prompts = [exp.task.prompt(e) for e in examples]
    h, mask = bridge.source_hidden(prompts, examples)
    with torch.no_grad():
        inputs = bridge.bridged_inputs(bridge.soft_tokens(prompts, hidden=(h, mask)), prompts, with_answer=True)
    base, where, labels = inputs.inputs_embeds.detach(), inputs.soft_mask, inputs.labels
    window = int((labels != -100).sum(1).max()) + 1
    kwargs = {"attention_mask": inputs.attention_mask, "position_ids": inputs.position_ids}
    context = autocast or contextlib.nullcontext

    def floor() -> None:
        with context():
            soft = exp.translator(h.float(), mask)
            embeds = base.masked_scatter(where[..., None], soft.to(base.dtype))
            logits = bridge.target.model(inputs_embeds=embeds, **kwargs, logits_to_keep=window).logits
            answer_nll(logits, labels[:, -window:]).backward()
        exp.translator.zero_grad(set_to_none=True)

    return floor
