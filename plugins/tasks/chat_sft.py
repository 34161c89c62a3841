"""Task ``chat_sft``: instruction data (OpenHermes' layout), the response supervised, chat templates on.

Each line of ``train.jsonl`` / ``test.jsonl`` is a conversation: ``{"conversations": [{"from": "system" |
"human" | "gpt", "value": ...}]}`` (``teknium/OpenHermes-2.5``) or ``{"messages": [{"role", "content"}]}``
(:func:`latentbridge.io.data.read_chat_items`). System turns are dropped, as the C2C authors drop them; a
conversation with more than one exchange is left out (and counted: :attr:`ChatSFT.left_out`). The user
turn is the question, read through each model's chat template (``chat_template: true`` by default, no
"Question:" header, no cue: the template's assistant turn follows); the loss is on the response only.
Evaluation compares the generated response with the reference: exact match after SQuAD's normalisation
(the primary filter, rarely met by free text) and token F1 (metric ``f1``). Without ``data_dir`` it reads the
small invented sample shipped with latentbridge (``latentbridge/data/chat_sft``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import latentbridge
from latentbridge import Task, TaskConfig, hookimpl, option
from latentbridge.api.answers import SquadScored
from latentbridge.api.task import Example, Split
from latentbridge.io.data import read_chat_items

SAMPLE = Path(latentbridge.__file__).resolve().parent / "data" / "chat_sft"  # shipped with the package


@dataclass
class ChatSFTConfig(TaskConfig):
    data_dir: str | None = option(None, help="folder of the split files (default: the shipped sample)")
    train_file: str = option("train.jsonl", help="train split file name inside data_dir (dev is carved from it)")
    test_file: str = option("test.jsonl", help="test split file name inside data_dir")
    chat_template: bool = option(True, help="each model reads the instruction through its own chat template")
    question_template: str = option("{question}", help="the instruction as the user turn")
    cue: str = option("", help="nothing after the instruction: the chat template opens the assistant turn")
    answer_separator: str = option("", help="nothing between the assistant turn's opening and the response")


class ChatSFT(SquadScored, Task):
    """Instruction/response pairs; the response is supervised and scored by exact match and token F1."""

    name = "chat_sft"
    Config = ChatSFTConfig

    def load(self, split: Split) -> list[Example]:
        c = self.config
        folder = Path(c.data_dir).expanduser() if c.data_dir else SAMPLE
        examples, longer = read_chat_items(folder / (c.train_file if split == "train" else c.test_file), split)
        self.left_out = {**getattr(self, "left_out", {}), split: longer}
        return examples

    def golds(self, example: Example) -> tuple[str, ...]:
        return (example.answer,)  # the one response


@hookimpl
def register_tasks(register):
    register(ChatSFT)
