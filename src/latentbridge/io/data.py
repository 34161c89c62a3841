"""Reading GSM8K-format JSONL (``question``, ``answer``) with problems reported by line number."""

from __future__ import annotations

import json
from pathlib import Path

from latentbridge.api.task import Example
from latentbridge.errors import LatentBridgeError


def read_examples(path: str | Path, split: str, label_field: str | None = None) -> list[Example]:
    """Examples from a JSONL file, one object per line with string fields ``question`` and ``answer``.

    An example's id is the record's ``id`` (as a string) when it has one (not null), else
    ``<split>-<line number>`` (stable as long as the file is). Blank lines are skipped; a missing or
    empty file, a line that is not JSON, a record without the fields or an id that repeats an earlier
    line's (``7`` and ``"7"`` are one id) is an error naming the file and line.
    """
    path = Path(path)
    if not path.is_file():
        raise LatentBridgeError(f"data file not found: {path}")
    examples: list[Example] = []
    first_line: dict[str, int] = {}  # id -> the line that first used it
    with path.open(encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise LatentBridgeError(f"{path}:{line_no}: not valid JSON ({exc.msg})") from None
            if not isinstance(record, dict):
                raise LatentBridgeError(f"{path}:{line_no}: expected a JSON object, got {type(record).__name__}")
            for key in ("question", "answer"):
                if not isinstance(record.get(key), str) or not record[key].strip():
                    raise LatentBridgeError(f"{path}:{line_no}: field '{key}' must be a non-empty string")
            label = record.get(label_field) if label_field else None
            example_id = f"{split}-{line_no}" if record.get("id") is None else str(record["id"])
            if example_id in first_line:
                raise LatentBridgeError(f"{path}:{line_no}: id '{example_id}' repeats line {first_line[example_id]}")
            first_line[example_id] = line_no
            examples.append(
                Example(
                    id=example_id,
                    question=record["question"],
                    answer=record["answer"],
                    label=None if label is None else str(label),
                )
            )
    if not examples:
        raise LatentBridgeError(f"{path}: no examples (the file is empty)")
    return examples
