"""Evaluation as library calls: re-evaluating a run folder's translator, and summarizing eval files.

    import latentbridge as lb
    summary = lb.evaluate_run("runs/demo", step="final")     # writes runs/demo/eval_final/
    rows = lb.summarize_evals(["runs/demo"])                  # one summary per evaluation file
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from latentbridge.errors import LatentBridgeError
from latentbridge.io.atomic import write_json_atomic

STEPS = ("best", "final")


def evaluate_run(
    run_dir: str | Path,
    step: str = "best",
    overrides: Sequence[str] = (),
    *,
    split: str = "test",
    progress: Callable[[str, int, int], None] | None = None,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Evaluate the ``best`` (chosen on dev) or ``final`` translator of ``run_dir`` on ``split`` (``test``
    or ``dev``) with the run's own recipe (plus ``overrides``, e.g. ``eval.n=50``); writes
    ``<run_dir>/eval_<step>/`` (the per-item records and ``summary.json``) and returns the summary."""
    from latentbridge.bridge.build import Experiment
    from latentbridge.config.recipe import load_recipe
    from latentbridge.eval.harness import EvalSettings, Evaluator
    from latentbridge.io.weights import read_translator_meta
    from latentbridge.runtime.distributed import is_main

    run_dir = Path(run_dir)
    if step not in STEPS:
        raise LatentBridgeError(f"--step must be 'best' or 'final', got '{step}'")
    if split not in ("test", "dev"):
        raise LatentBridgeError(f"--split must be 'test' or 'dev', got '{split}'")
    if not (run_dir / "recipe.yaml").is_file():
        raise LatentBridgeError(f"{run_dir} is not a run folder (no recipe.yaml)")
    weights = run_dir / "best" if step == "best" else run_dir
    meta = read_translator_meta(weights)
    recipe = load_recipe(run_dir / "recipe.yaml", overrides)
    out_dir = run_dir / f"eval_{step}"
    experiment = Experiment.build(recipe, log=log or (lambda _: None), translator_dir=str(weights))
    evaluator = Evaluator(experiment.bridge, experiment.task, EvalSettings.from_config(recipe.eval, split), out_dir,
                          split=split, seed=recipe.seed, progress=progress, autocast=recipe.models.autocast)
    result = evaluator.evaluate(int(meta.get("step", 0)))
    if is_main():
        write_json_atomic(out_dir / "summary.json", result)
    return result


def summarize_evals(paths: Iterable[str | Path]) -> list[dict[str, Any]]:
    """A summary per evaluation file (``eval_samples_step_<N>.jsonl`` files, or run folders searched for
    them), in step order: ``{"file", "step", **summary}``."""
    from latentbridge.eval.summary import eval_files, read_records, summarize_records

    return [{"file": str(file), "step": step, **summarize_records(read_records(file))} for step, file in eval_files(paths)]
