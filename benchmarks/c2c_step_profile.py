"""Where a c2c training step's time goes at real shapes, against a soft-token step (issue 27's c2c goal).

    python benchmarks/c2c_step_profile.py [--data-dir ../shared/data/gsm8k] [--folders DIR] [--repeats 5]

The pair and prompts are ``real_shapes.py``'s (8-shot GSM8K, batch 4, fp32, the source cache on). A c2c step
(the ``c2c_fusion`` recipe at these shapes) is split into what the bridge times inside it: the sharer's pass
over the receiver's tokens re-encoded (``Bridge.source_states``), the target's own prefill of the prompt
(``bridge.kv.prefill``, without gradient) and the rest (the fusers over every prompt position and layer, the
target's pass over the last prompt token and the answer reading the fused cache, the backward and the
optimizer). The soft-token step's ``source_states`` is its read of the source cache.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from common import timed, write
from real_shapes import Bench, build_folders, prompt_lengths

import latentbridge.bridge.core as core
import latentbridge.bridge.kv as kv

PARTS = {"sharer": "source_states (the sharer's pass)", "prefill": "the target's own prefill (no gradient)"}


def spied(record: dict[str, list[float]], name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            record.setdefault(name, []).append(time.perf_counter() - start)
    return wrapper


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=Path(__file__).resolve().parents[2] / "shared/data/gsm8k")
    parser.add_argument("--folders", type=Path, default=Path(tempfile.gettempdir()) / "latentbridge-real-shapes")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    record: dict[str, list[float]] = {}
    core.Bridge.source_states = spied(record, "sharer", core.Bridge.source_states)
    kv.prefill = spied(record, "prefill", kv.prefill)  # read by kv_fusion_inputs at call time
    folders = build_folders(args.folders, args.data_dir)
    steps: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        bench = Bench(folders, args.data_dir, tmp)
        c2c = bench.runner("c2c", [], recipe="c2c_fusion")
        bench.runner("soft", [])
        tokens = prompt_lengths(c2c.exp)
        names = ("c2c", "soft")
        for name in names:
            bench.step(name)()  # warm-up
        times: dict[str, list[float]] = {name: [] for name in names}
        parts: dict[str, dict[str, float]] = {name: dict.fromkeys(PARTS, 0.0) for name in names}
        for _ in range(args.repeats):  # interleaved, so that load on the machine hits both alike
            for name in names:
                record.clear()
                times[name].append(timed(bench.step(name)))
                for part in PARTS:
                    parts[name][part] += sum(record.get(part, [])) / args.repeats
        for name in names:
            steps[name] = {"step_s": statistics.median(times[name]), **{f"{p}_s": t for p, t in parts[name].items()}}
    c, s = steps["c2c"], steps["soft"]
    rest = c["step_s"] - c["sharer_s"] - c["prefill_s"]
    table = [("part of a step (seconds, mean of the repeats; step: median)", "c2c", "soft tokens"),
             ("whole step", f"{c['step_s']:.3f}", f"{s['step_s']:.3f}"),
             (PARTS["sharer"], f"{c['sharer_s']:.3f}", f"{s['sharer_s']:.3f}"),
             (PARTS["prefill"], f"{c['prefill_s']:.3f}", "-"),
             ("the rest (fusers, the target's pass over the last token and the answer, backward, AdamW)",
              f"{rest:.3f}", f"{s['step_s'] - s['sharer_s']:.3f}")]
    notes = (f"c2c step / soft-token step: {c['step_s'] / s['step_s']:.2f} (goal <= 1.3). Prompts: "
             f"{tokens['source']:.0f} source and {tokens['target']:.0f} target tokens on average, batch 4. The sharer "
             "runs the 8-shot header that every row shares once (kept between batches) and each row's rest after it; "
             "the target's own prefill still reads the whole prompt in every step.")
    write("c2c_step_profile", {"steps": steps, "prompt_tokens_8_shots": tokens,
                               "c2c_over_soft_step": c["step_s"] / s["step_s"]}, table, notes)


if __name__ == "__main__":
    main()
