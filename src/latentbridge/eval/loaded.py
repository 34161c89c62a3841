"""A trained bridge to use: a run folder's models and translator, asked questions from Python.

    import latentbridge as lb
    bridge = lb.load_bridge("runs/facts_relay-...", step="best")
    bridge.generate(["How many moons does the planet Velkar have?"])            # the bridged system
    bridge.generate(questions, system="target")                                  # any system the run evaluates
    bridge.message(questions)                                                    # what crosses: a Message
    bridge.score("Which is heavier?", [" a stone", " a feather"])                # log-likelihood per choice

A question is a string (the task's question; a context-split task's context goes in a dict: ``{"question":
..., "context": ...}``) or an :class:`~latentbridge.api.task.Example`. Every system runs through the very
code ``latentbridge eval`` runs (the run's recipe, its decoding settings, batches of ``eval.batch_size``),
so an item asked here gets the output the evaluation file holds for it (an Example keeps its id, hence its
per-item seed; a string is given an id of its own).
"""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from latentbridge.api.messages import Message
from latentbridge.api.task import Example
from latentbridge.errors import LatentBridgeError
from latentbridge.eval.context import item_seed
from latentbridge.eval.controls import derangement
from latentbridge.eval.harness import EvalSettings, Evaluator

STEPS = ("best", "final")


def load_bridge(run_dir: str | Path, step: str = "best", overrides: Sequence[str] = (),
                log: Any = None) -> LoadedBridge:
    """The run folder ``run_dir`` ready to use: its models, its ``best`` (chosen on dev) or ``final``
    translator, and its recipe's task, decoding and systems (``overrides`` change the recipe, e.g.
    ``models.device=cuda``)."""
    from latentbridge.bridge.build import Experiment
    from latentbridge.config.recipe import load_recipe

    run_dir = Path(run_dir)
    if step not in STEPS:
        raise LatentBridgeError(f"step must be 'best' or 'final', got {step!r}")
    if not (run_dir / "recipe.yaml").is_file():
        raise LatentBridgeError(f"{run_dir} is not a run folder (no recipe.yaml)")
    weights = run_dir / "best" if step == "best" else run_dir
    if not (weights / "translator.safetensors").is_file():
        raise LatentBridgeError(f"{run_dir}: no translator weights for step '{step}' ({weights}/translator.safetensors)")
    recipe = load_recipe(run_dir / "recipe.yaml", overrides)
    experiment = Experiment.build(recipe, log=log or (lambda _: None), translator_dir=str(weights))
    experiment.bridge.translator.eval()
    return LoadedBridge(experiment, run_dir, step)


class _Asked(Evaluator):
    """The evaluation of the items asked, not a split's."""

    def __init__(self, *args: Any, items: Sequence[Example], **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.items = list(items)
        self.prompts = [self.task.prompt(e) for e in self.items]
        self.seeds = torch.tensor([item_seed(e.id) for e in self.items], dtype=torch.long)
        self.shuffle = derangement(len(self.items), self.seed)


class LoadedBridge:
    """A run folder's bridge, to ask (see the module)."""

    def __init__(self, experiment: Any, run_dir: Path, step: str):
        self.experiment, self.run_dir, self.step = experiment, Path(run_dir), step
        self.bridge, self.task, self.recipe = experiment.bridge, experiment.task, experiment.recipe

    @property
    def systems(self) -> list[str]:
        """The systems this run evaluates (``eval.systems``): what :meth:`generate` can be asked for."""
        return list(self.recipe.eval.systems)

    def items(self, questions: Sequence[str | dict | Example]) -> list[Example]:
        """Each question as the task's item (a string: its question; a dict: its fields)."""
        if isinstance(questions, (str, dict, Example)):
            raise LatentBridgeError("questions: give a list of questions, not one")
        out = []
        for q in questions:
            if isinstance(q, Example):
                out.append(q)
                continue
            fields = {"question": q} if isinstance(q, str) else dict(q)
            if not isinstance(fields.get("question"), str):
                raise LatentBridgeError(f"a question must be a string or a dict with a string 'question', got {q!r}")
            unknown = set(fields) - {"question", "context", "answer", "id", "choices"}
            if unknown:
                raise LatentBridgeError(f"a question's fields are question, context, answer, id and choices; "
                                        f"not {', '.join(sorted(unknown))}")
            digest = hashlib.sha256(f"{fields.get('context', '')}\n{fields['question']}".encode()).hexdigest()[:12]
            out.append(Example(id=str(fields.get("id") or f"asked-{digest}"), question=fields["question"],
                               answer=fields.get("answer", ""), context=fields.get("context", ""),
                               choices=tuple(fields.get("choices", ()))))
        return out

    def _evaluator(self, items: Sequence[Example], systems: Sequence[str], out: Path) -> _Asked:
        settings = EvalSettings.from_config(self.recipe.eval, "test")
        settings.systems = list(dict.fromkeys(systems))
        settings.n = len(items)
        return _Asked(self.bridge, self.task, settings, out, split="test", seed=self.recipe.seed, use_cache=False,
                      autocast=self.recipe.models.autocast, items=items)

    @torch.no_grad()
    def generate(self, questions: Sequence[str | dict | Example], system: str = "bridged") -> list[str]:
        """Each question's greedy output from ``system`` (``bridged``, ``target``, ``source``, ``relay``, a
        control, or any system registered)."""
        from latentbridge.registry.host import get_registry

        if system not in get_registry().names("system"):
            raise LatentBridgeError(f"unknown system {system!r}; known: {', '.join(get_registry().names('system'))}")
        items = self.items(questions)
        if not items:
            return []
        with tempfile.TemporaryDirectory(prefix="latentbridge-asked-") as out:  # nothing is written to the run
            ev = self._evaluator(items, [system], Path(out))
            outputs = ev.system(system).generate(ev)
        if outputs is None:
            raise LatentBridgeError(f"system {system!r} writes no text for these items")
        return list(outputs)

    @torch.no_grad()
    def message(self, questions: Sequence[str | dict | Example]) -> Message:
        """The translator's message for the questions (one row each), as the target would read it."""
        items = self.items(questions)
        prompts = [self.task.prompt(e) for e in items]
        seeds = torch.tensor([item_seed(e.id) for e in items], dtype=torch.long)
        return self.bridge.message(prompts, seeds)

    @torch.no_grad()
    def score(self, question: str | dict | Example, choices: Sequence[str], system: str = "bridged") -> list[float]:
        """Each choice's summed log-probability as the continuation of ``question`` read by ``system``."""
        if isinstance(choices, str) or not choices:
            raise LatentBridgeError("choices: give a list of at least one continuation")
        (item,) = self.items([question])
        item = Example(id=item.id, question=item.question, answer=choices[0], context=item.context,
                       choices=tuple(choices), gold=0)
        with tempfile.TemporaryDirectory(prefix="latentbridge-asked-") as out:
            ev = self._evaluator([item], [system], Path(out))
            ev.choices = True
            if not hasattr(self.task, "continuation"):  # a free-text task: each choice is the text that follows
                ev.task = _AsWritten(self.task)
            scores = ev.system(system).score(ev)
        if scores is None:
            raise LatentBridgeError(f"system {system!r} does not score choices")
        return [float(s) for s in scores[0]]


class _AsWritten:
    """A free-text task seen as a multiple-choice one: a choice's continuation is the choice as written."""

    def __init__(self, task: Any):
        self._task = task

    def __getattr__(self, name: str) -> Any:
        return getattr(self._task, name)

    def continuation(self, example: Example, choice: int) -> str:
        return example.choices[choice]

    def continuations(self, example: Example) -> list[str]:
        return list(example.choices)
