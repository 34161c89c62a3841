"""The Task interface: examples, k-shot prompts and answer scoring."""

from __future__ import annotations

import dataclasses
import hashlib
import random
from abc import abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any, ClassVar, Literal

from latentbridge.api.answers import extract_answer
from latentbridge.api.options import option
from latentbridge.errors import LatentBridgeError

Split = Literal["train", "dev", "test"]
DEV_SIZE = 200  # the dev split's default size (a recipe sets it: eval.dev_n)


@dataclass(frozen=True)
class Example:
    """One problem. ``answer`` is the full worked solution (GSM8K: lines then ``#### <number>``);
    ``label`` is an optional category the task provides (for example the problem template). A
    multiple-choice item (:mod:`latentbridge.api.choices`) also has its ``choices`` and the index of
    the right one, ``gold``; its ``answer`` is the gold choice's continuation (what training supervises)."""

    id: str
    question: str
    answer: str
    label: str | None = None
    choices: tuple[str, ...] = ()
    gold: int | None = None
    context: str = ""  # a context-split task's context: what the source reads beside the question
    answers: tuple[str, ...] = ()  # every gold answer of a free-text task (``answer`` is the first)


@dataclass(frozen=True)
class Prompt:
    """The text of one prompt, in pieces: ``header + question + cue`` is what a model reads, ``answer``
    the continuation it is trained to produce. ``header`` holds the k-shot exemplars; ``question`` is
    this question as the template writes it (``Question: ...\n``), and ``question_span`` the character
    range of the question's own text inside it (without the template's words, the same for every item).

    ``source``: in a context-split task (:class:`ContextTask`), the source's own prompt, which holds the
    context the target does not read; None where both models read the same prompt (:attr:`for_source`).

    ``turns``: a conversation's earlier turns, ``(role, content)`` pairs (a system instruction, few-shot
    exchanges: lm-eval's ``--system_instruction`` and ``--fewshot_as_multiturn``), which a chat template
    renders before the user turn holding ``header + question``; only models read through a chat template
    take them (tasks make none)."""

    header: str
    question: str
    cue: str
    answer: str
    separator: str = " "  # what ``answer`` starts with: the text between cue and solution
    question_span: tuple[int, int] | None = None  # [start, end) in `question`; None: all of it
    source: Prompt | None = None  # what the source reads instead, when it reads more than the target
    context_span: tuple[int, int] | None = None  # [start, end) of a context task's context in `question`
    turns: tuple[tuple[str, str], ...] = ()  # earlier chat turns (role, content), rendered before this one

    @property
    def text(self) -> str:
        return self.header + self.question + self.cue

    @property
    def for_source(self) -> Prompt:
        """The prompt the source reads: :attr:`source` in a context split, this very prompt elsewhere."""
        return self.source if self.source is not None else self

    def own_question_span(self) -> tuple[int, int]:
        """``[start, end)`` of the question's own text in :attr:`text`."""
        start, end = self.question_span if self.question_span is not None else (0, len(self.question))
        return len(self.header) + start, len(self.header) + end

    def own_context_span(self) -> tuple[int, int] | None:
        """``[start, end)`` of the item's context in :attr:`text` (None: this prompt holds no context)."""
        if self.context_span is None:
            return None
        return len(self.header) + self.context_span[0], len(self.header) + self.context_span[1]

    def without_question(self) -> Prompt:
        """The prompt with this question removed: the header and the cue only (on the source's side too:
        a context split's context goes with the question)."""
        source = self.source.without_question() if self.source is not None else None
        return dataclasses.replace(self, question="", question_span=(0, 0), source=source,
                                   context_span=None if self.context_span is None else (0, 0))


@dataclass
class TaskConfig:
    """Prompt settings every task has."""

    shots: int = option(0, ge=0, help="worked exemplars from the train split shown before each question")
    exemplars: Literal["fixed", "per_item"] = option(
        "fixed", help="'fixed': the same exemplars for every item; 'per_item': drawn per item by seed"
    )
    exemplar_seed: int = option(1234, help="seed that picks the exemplars (independent of the run seed)")
    question_template: str = option("Question: {question}\n", help="how one question is written")
    cue: str = option("Answer:", help="text after the question that asks for the answer")
    answer_separator: str = option(" ", help="text between the cue and the answer")
    exemplar_separator: str = option("\n\n", help="text after each worked exemplar")
    chat_template: bool = option(
        False, help="each model reads its prompts through its own tokenizer's chat template (one user turn, "
        "the soft tokens inside it), for instruct models")
    chat_template_kwargs: dict[str, Any] = option(
        default_factory=dict, help="with chat_template: keyword arguments for each tokenizer's apply_chat_template "
        "(its template's variables), e.g. {enable_thinking: false} for Qwen3, as the C2C authors render every prompt")
    supervise: Literal["solution", "final_line"] = option(
        "solution", help="what training supervises after the cue: 'solution', the whole worked answer; "
        "'final_line', only its '#### N' line (the answer must then come from the message, not from "
        "the target's own worked steps). Exemplars, scoring and the caches are unchanged; the objectives "
        "that read the answer (kl, dit_flow's teacher) read the final line too, and format_penalty "
        "still appends '\\n#### N' to the target's own continuation")

    def read_settings(self) -> dict:
        """The settings that change what the models read or write at evaluation, ``supervise`` left out
        (it changes only what training supervises): the key of the caches of baselines and source states,
        shared by runs that differ only in it."""
        settings = {k: v for k, v in dataclasses.asdict(self).items() if k != "supervise"}
        if not settings.get("chat_template_kwargs"):  # unset: the key of the caches made before the option
            settings.pop("chat_template_kwargs", None)
        return settings

    def check(self) -> list[tuple[str, str]]:
        if "{question}" not in self.question_template:
            return [("question_template", "must contain {question}")]
        if self.chat_template_kwargs and not self.chat_template:
            return [("chat_template_kwargs", "only with chat_template: true (no chat template renders the prompts)")]
        return []


class Task:
    """Yields examples, builds prompts and scores answers. Subclasses implement :meth:`load`.

    Every task has three splits: ``train``, ``dev`` and ``test``. ``load`` is asked for the splits in
    ``native_splits`` (by default ``"train"`` and ``"test"``); the ``dev`` split is then carved from the
    loaded train split: ``dev_size`` examples chosen by a fixed seeded shuffle, removed from train, so the
    two are disjoint. A task whose data has its own dev split lists ``"dev"`` in ``native_splits``.
    Selection (periodic evaluations, ``best/``, early stopping) reads ``dev``; ``test`` is read at the end.
    """

    name: ClassVar[str]
    Config: ClassVar[type[TaskConfig]] = TaskConfig
    native_splits: ClassVar[tuple[str, ...]] = ("train", "test")
    context_split: bool = False  # the target reads less than the source (a :class:`ContextTask`'s setting)

    def __init__(self, config: TaskConfig):
        self.config = config
        self.dev_size = DEV_SIZE
        self._cache: dict[str, list[Example]] = {}

    @abstractmethod
    def load(self, split: Split) -> list[Example]:
        """Every example of ``split`` (one of ``native_splits``), in a fixed order, ids unique."""

    def examples(self, split: Split) -> list[Example]:
        if split not in self._cache:
            if split in ("train", "dev") and "dev" not in self.native_splits:
                self._cache["dev"], self._cache["train"] = self._carve_dev(self.load("train"))
            else:
                self._cache[split] = self.load(split)
        return self._cache[split]

    def _carve_dev(self, full: list[Example]) -> tuple[list[Example], list[Example]]:
        """``dev_size`` examples of ``full`` (a seeded choice, in their original order) and the rest."""
        if self.dev_size > len(full) // 2:
            raise LatentBridgeError(
                f"eval.dev_n={self.dev_size} is too large for task '{self.name}': its train split has "
                f"{len(full)} examples and the dev split is carved from it (at most {len(full) // 2}); "
                "set a smaller eval.dev_n"
            )
        chosen = set(_shuffled_indices(len(full), _DEV_SEED)[: self.dev_size])
        dev = [e for i, e in enumerate(full) if i in chosen]
        return dev, [e for i, e in enumerate(full) if i not in chosen]

    def subsets(self, split: Split) -> dict[str, str]:
        """Item id -> the subset it belongs to, where a split holds items of two kinds whose figures must be
        read apart (``arith``: ``twin`` for a question equal to a training question once names are masked,
        ``fresh`` for the others); every record then names its subset and every summary gives each
        system's accuracy per subset. Empty (the default): no subsets."""
        return {}

    def labels(self) -> list[str]:
        """The categorical labels this task provides (sorted), or an empty list."""
        return sorted({e.label for e in self.examples("train") if e.label is not None})

    def exemplars(self, example: Example) -> list[Example]:
        """The k-shot exemplars for ``example``: from the train split, never the example itself."""
        shots = self.config.shots
        if shots == 0:
            return []
        pool = self.examples("train")
        if self.config.exemplars == "fixed":
            order: Sequence[int] = _shuffled_indices(len(pool), self.config.exemplar_seed)
        else:  # two spares, in case the example itself (or its twin) is drawn
            order = _rng(f"{self.config.exemplar_seed}:{example.id}").sample(range(len(pool)), min(len(pool), shots + 2))
        chosen: list[Example] = []
        for i in order:
            candidate = pool[i]
            if candidate.id != example.id and candidate.question != example.question:
                chosen.append(candidate)
                if len(chosen) == shots:
                    break
        return chosen

    def prompt(self, example: Example) -> Prompt:
        """What the target reads for ``example`` (and the source too, unless :attr:`Prompt.source` says
        otherwise)."""
        return self._prompt(example, self.question_text)

    def _prompt(self, example: Example, text_of: Callable[[Example], str]) -> Prompt:
        """The prompt of ``example`` with every question (the exemplars' too) written by ``text_of``."""
        c = self.config
        header = "".join(
            c.question_template.format(question=text_of(e)) + c.cue + c.answer_separator + e.answer
            + c.exemplar_separator
            for e in self.exemplars(example)
        )
        own = text_of(example)
        question = c.question_template.format(question=own)
        before = c.question_template.format(question="\x00").index("\x00")  # where the template puts the text
        return Prompt(
            header=header,
            question=question,
            cue=c.cue,
            answer=c.answer_separator + self.supervised_answer(example),
            separator=c.answer_separator,
            question_span=(before, before + len(own)),
        )

    def source_prompt(self, example: Example) -> Prompt:
        """Everything the source reads for ``example``, as one prompt: what the ``skyline`` system hands the
        target. A context-split task (the source reads a context the target never sees) returns the context
        and the question; by default it is :meth:`prompt`, what both models read."""
        return self.prompt(example)

    def supervised_answer(self, example: Example) -> str:
        """What training supervises after the cue and separator: the whole answer, or with
        ``supervise: final_line`` its last ``####`` line only."""
        if self.config.supervise == "solution":
            return example.answer
        at = example.answer.rfind("####")
        if at < 0:
            raise LatentBridgeError(
                f"task '{self.name}': supervise=final_line needs answers with a '####' line; example "
                f"{example.id!r} has none (set task.supervise=solution)"
            )
        return example.answer[at:]

    def question_text(self, example: Example) -> str:
        """The question as the template's ``{question}`` writes it (a multiple-choice task adds its choices)."""
        return example.question

    # -- scoring: the harness scores every system with these; override them for another answer format --

    filters: ClassVar[tuple[str, ...]] = ("strict-match", "flexible-extract")
    """Names of the answer filters, the first being the primary one (``<system>_correct``); every other
    filter ``f`` is also recorded (``<system>_correct_<f>``) and summarized. The default is GSM8K's,
    as lm-evaluation-harness names them: ``#### N`` (strict) and the last number (flexible)."""

    metrics: ClassVar[tuple[str, ...]] = ()
    """Graded scores beside the filters' right/wrong (``qa_context``: ``f1``): every metric ``m`` is recorded
    per item (``<system>_<m>``, from :meth:`item_metric`) and its mean summarized (``metrics``)."""

    def item_metric(self, generated: str, example: Example, metric: str) -> float:
        """``metric`` of ``generated`` for ``example`` (one of :attr:`metrics`)."""
        raise NotImplementedError(f"task '{self.name}' has no metric '{metric}'")

    def extract_answer(self, generated: str, filter: str) -> str | None:
        """The normalised answer ``filter`` finds in ``generated``, or None (invalid)."""
        return extract_answer(generated, _GSM8K_MODES[filter])

    def gold_answer(self, example: Example) -> str | None:
        """The gold answer as :meth:`extract_answer` would find it in a correct output."""
        return extract_answer(example.answer, "strict")

    def is_correct(self, generated: str, example: Example, filter: str | None = None) -> bool:
        """Whether ``generated`` answers ``example`` correctly under ``filter`` (default: the primary)."""
        found = self.extract_answer(generated, filter or self.filters[0])
        return found is not None and found == self.gold_answer(example)


@dataclass
class ContextTaskConfig(TaskConfig):
    """Prompt settings of a context-split task."""

    target_reads: Literal["question", "context_and_question"] = option(
        "question", help="what the target reads: 'question', the question only (the context reaches it only "
        "through the message: the context split); 'context_and_question', what the source reads")
    context_template: str = option(
        "{context} {question}", help="how a model that reads the context sees the question's text (inside "
        "question_template)")

    def check(self) -> list[tuple[str, str]]:
        problems = super().check()
        missing = [f"{{{k}}}" for k in ("context", "question") if f"{{{k}}}" not in self.context_template]
        if missing:
            problems.append(("context_template", f"must contain {' and '.join(missing)}"))
        return problems


class ContextTask(Task):
    """A task whose items have a context (:attr:`Example.context`) the source reads beside the question.

    With ``target_reads: question`` (the default) the target reads the question only: its prompt carries the
    source's, with the context, as :attr:`Prompt.source`, and everything the source reads (the bridge's
    states, its solutions, the ``source`` system) comes from that. The ``skyline`` system hands the target
    the source's prompt (:meth:`source_prompt`)."""

    Config: ClassVar[type[TaskConfig]] = ContextTaskConfig

    @property
    def context_split(self) -> bool:
        """Whether the target reads less than the source (``target_reads: question``)."""
        return self.config.target_reads == "question"

    def with_context(self, example: Example) -> str:
        """The question's text as a reader of the context sees it (``context_template``)."""
        return self.config.context_template.format(context=example.context, question=self.question_text(example))

    def source_prompt(self, example: Example) -> Prompt:
        prompt = self._prompt(example, self.with_context)
        own = self.config.context_template.format(context="\x00", question=self.question_text(example)).index("\x00")
        start = (prompt.question_span or (0, 0))[0] + own
        return dataclasses.replace(prompt, context_span=(start, start + len(example.context)))

    def prompt(self, example: Example) -> Prompt:
        if not self.context_split:
            return self.source_prompt(example)
        return dataclasses.replace(self._prompt(example, self.question_text), source=self.source_prompt(example))


_DEV_SEED = 20251116  # which train examples become dev: fixed, independent of the run's seed
_GSM8K_MODES = {"strict-match": "strict", "flexible-extract": "flexible"}


def _rng(key: str) -> random.Random:
    """A generator seeded from a string, the same in every process and Python version."""
    return random.Random(int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "little"))


@cache
def _shuffled_indices(n: int, seed: int) -> tuple[int, ...]:
    order = list(range(n))
    _rng(str(seed)).shuffle(order)
    return tuple(order)
