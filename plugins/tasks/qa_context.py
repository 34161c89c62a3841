"""Task ``qa_context``: real context-split data from local JSONL, in SQuAD's, HotpotQA's or LongBench's
layout (:func:`latentbridge.io.data.read_context_items`). The source reads the context (a paragraph, the
supporting paragraphs, a long document) and the question; the target the question only
(``task.target_reads: question``). Answers are free text, scored as SQuAD scores them: exact match
(the primary filter, ``exact_match``) and token F1 (metric ``f1``), each the best over the gold answers,
after SQuAD's normalisation (lower case, punctuation and the articles a/an/the removed, whitespace
collapsed), as lm-evaluation-harness and HF ``evaluate`` compute them. The answer is the first line of
what the model writes after the cue.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from latentbridge import ContextTask, ContextTaskConfig, hookimpl, option
from latentbridge.api.answers import SquadScored
from latentbridge.api.task import Example, Split
from latentbridge.io.data import ContextLayout, read_context_items


@dataclass(kw_only=True)  # data_dir has no default
class QAContextConfig(ContextTaskConfig):
    data_dir: str = option(help="folder holding the split files (relative paths: from the working directory)")
    train_file: str = option("train.jsonl", help="train split file name inside data_dir (dev is carved from it)")
    test_file: str = option("test.jsonl", help="test split file name inside data_dir")
    layout: ContextLayout = option("auto", help="'squad', 'hotpotqa', 'longbench', or 'auto' (each line's own)")
    context_template: str = option("{question}\nContext: {context}",
                                   help="how a model that reads the context sees the question's text (inside "
                                   "question_template: 'Question: <question>\\nContext: <context>\\nAnswer:')")


def first_line(generated: str) -> str:
    """The answer in a generation: its first non-blank line, stripped."""
    return next((line.strip() for line in generated.splitlines() if line.strip()), "")


class QAContext(SquadScored, ContextTask):
    """Extractive or free-text QA over a context the target does not read (SQuAD, HotpotQA, LongBench)."""

    name = "qa_context"
    Config = QAContextConfig

    def load(self, split: Split) -> list[Example]:
        c = self.config
        file = c.train_file if split == "train" else c.test_file
        return read_context_items(Path(c.data_dir).expanduser() / file, split, c.layout)

    def answer_text(self, generated: str) -> str:
        return first_line(generated)


@hookimpl
def register_tasks(register):
    register(QAContext)
