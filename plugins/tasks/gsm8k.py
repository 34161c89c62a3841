"""Task ``gsm8k``: GSM8K-format JSONL from a local folder (real GSM8K, or any data in its format)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from latentbridge import Task, TaskConfig, hookimpl, option
from latentbridge.api.task import Example, Split
from latentbridge.io.data import read_examples


@dataclass(kw_only=True)  # data_dir has no default
class GSM8KConfig(TaskConfig):
    data_dir: str = option(help="folder holding the split files (relative paths: from the working directory)")
    train_file: str = option("train.jsonl", help="train split file name inside data_dir")
    test_file: str = option("test.jsonl", help="test split file name inside data_dir")
    label_field: str | None = option(None, help="record field holding a categorical label, if any")


class GSM8K(Task):
    """Grade-school math word problems in GSM8K's JSONL format, read from data_dir."""

    name = "gsm8k"
    Config = GSM8KConfig

    def load(self, split: Split) -> list[Example]:
        c = self.config
        file = c.train_file if split == "train" else c.test_file
        return read_examples(Path(c.data_dir).expanduser() / file, split, c.label_field)


@hookimpl
def register_tasks(register):
    register(GSM8K)
