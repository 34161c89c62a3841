"""The seeded, resumable order in which training examples are visited."""

from __future__ import annotations

import torch


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
