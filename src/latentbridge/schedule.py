"""Learning-rate schedules and the seeded, resumable order in which training examples are visited."""

from __future__ import annotations

import math

import torch


def lr_factor(step: int, *, total: int, warmup: int, schedule: str, min_ratio: float = 0.0) -> float:
    """Multiplier of the peak learning rate for optimizer step ``step`` (0-based).

    Linear warm-up from ``1/warmup`` to 1 over ``warmup`` steps, then ``cosine`` or ``linear`` decay to
    ``min_ratio`` at the last step, or ``constant``.
    """
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    if schedule == "constant" or total <= warmup:
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, total - warmup - 1))
    if schedule == "cosine":
        shape = 0.5 * (1.0 + math.cos(math.pi * progress))
    elif schedule == "linear":
        shape = 1.0 - progress
    else:
        raise ValueError(f"unknown schedule {schedule!r}")
    return min_ratio + (1.0 - min_ratio) * shape


class DataOrder:
    """Visits ``n`` examples epoch by epoch, each epoch a fresh permutation drawn from ``seed``.

    The permutation of epoch ``e`` depends only on ``(seed, e)``, so the position ``(epoch, offset)``
    is all a checkpoint needs to continue the exact same sequence.
    """

    def __init__(self, n: int, seed: int, epoch: int = 0, offset: int = 0):
        if n <= 0:
            raise ValueError("DataOrder needs at least one example")
        self.n, self.seed, self.epoch, self.offset = n, seed, epoch, offset
        self._perm = self._permutation(epoch)

    def _permutation(self, epoch: int) -> list[int]:
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(self.n, generator=gen).tolist()

    def take(self, count: int) -> list[int]:
        out: list[int] = []
        while len(out) < count:
            if self.offset == self.n:
                self.epoch, self.offset = self.epoch + 1, 0
                self._perm = self._permutation(self.epoch)
            grab = min(count - len(out), self.n - self.offset)
            out.extend(self._perm[self.offset : self.offset + grab])
            self.offset += grab
        return out

    def state(self) -> dict[str, int]:
        return {"epoch": self.epoch, "offset": self.offset}
