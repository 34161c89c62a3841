"""Controls that keep a message's statistics and destroy its content: ``covgauss`` and ``randomrot``.

Both read the bridged messages of the evaluated items and hand the target, in the bridged layout, a
message with the same statistics that says nothing about *this* item (soft tokens; a kv prefix, each
layer's keys and values; a kv fusion, the change each fused layer makes to the target's cache):

- ``covgauss``: each item's message is a draw from a Gaussian with the mean and covariance of the evaluated
  items' messages. Soft tokens and kv prefixes are drawn whole: ``mean + Cᵀz / sqrt(N - 1)``, ``C`` the
  items' centred messages (``N`` rows, every vector of a message side by side) and ``z`` a standard normal
  ``N``-vector drawn from the item's seed, so the draw has the messages' full covariance, across positions
  and layers too. A fusion's deltas differ in length per item: per fused layer, keys and values apart,
  each position's delta is a draw from the mean and covariance of every real position's delta.
- ``randomrot``: every message vector (a soft token; a layer's key or value of one position, heads side by
  side; a fused delta) is multiplied by one fixed random orthogonal matrix per width, drawn from the run's
  seed: norms and every inner product between vectors are kept, their coordinates are not.

Draws are seeded per item, so a control's outputs do not depend on the batch an item sits in.
"""

from __future__ import annotations

from typing import Any

import torch
from latentbridge.plugins.systems.bridged import Control

from latentbridge import KVFusion, Message, hookimpl
from latentbridge.eval.context import item_seed


def _seed(*parts: Any) -> int:
    return item_seed(":".join(map(str, parts)))


def _normal(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def gaussian_like(samples: torch.Tensor, seeds: list[int]) -> torch.Tensor:
    """One draw per seed from the Gaussian with the mean and covariance of ``samples`` (``N D``):
    ``mean + Cᵀz / sqrt(N - 1)`` with ``C`` the centred samples and ``z ~ N(0, I_N)`` from each seed.
    The draws' covariance is the samples' (rank at most ``N - 1``). Returns ``len(seeds) D``."""
    data = samples.double()
    n = data.shape[0]
    if n < 2:
        raise ValueError("covgauss needs at least two evaluated items to estimate a covariance")
    mean = data.mean(0)
    z = torch.stack([_normal((n,), s) for s in seeds])
    return mean + z @ (data - mean) / (n - 1) ** 0.5


def gaussian_of_vectors(samples: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The mean ``D`` and a factor ``F`` (``D D``, ``F Fᵀ`` = the covariance) of the rows of ``samples``."""
    data = samples.double()
    mean = data.mean(0)
    cov = torch.cov(data.T, correction=1).reshape(data.shape[1], data.shape[1]) if data.shape[0] > 1 \
        else torch.zeros(data.shape[1], data.shape[1], dtype=torch.float64)
    values, vectors = torch.linalg.eigh(cov)
    return mean, vectors * values.clamp(min=0).sqrt()


def random_rotation(width: int, seed: int) -> torch.Tensor:
    """A random orthogonal ``width x width`` matrix (Haar: the QR of a Gaussian with signs fixed), from ``seed``."""
    q, r = torch.linalg.qr(_normal((width, width), seed))
    return q * torch.sign(torch.diagonal(r))


class StatisticsControl(Control):
    """A control that needs the message's vectors (or a fusion's deltas): a message kind that exposes
    neither (a plugin's, without ``Message.vectors``) is not run, an explicit null in every record."""

    def runs(self, ev: Any) -> bool:
        if not ev.items:
            return False
        with torch.no_grad():
            message = ev.own_message(ev.chunks()[0])
        return isinstance(message, KVFusion) or type(message).vectors is not Message.vectors


class CovGauss(StatisticsControl):
    """Control: each message is a draw from a Gaussian with the evaluated messages' mean and covariance."""

    name = "covgauss"
    default = True
    rank = 6

    def runs(self, ev: Any) -> bool:
        return len(ev.items) >= 2 and super().runs(ev)  # a covariance needs two items

    def message_for(self, ev: Any):
        state: dict[str, Any] = {}

        def message(chunk: slice):
            own = ev.own_message(chunk)
            seeds = [_seed("covgauss", ev.seed, int(s)) for s in ev.seeds[chunk]]
            if isinstance(own, KVFusion):
                return own.with_deltas(self._fusion_draws(ev, state, seeds))
            if own.vector_mask() is not None:  # rows of different lengths: a Gaussian per group, drawn per position
                if "positions" not in state:
                    state["positions"] = _position_statistics(ev)
                return own.with_vectors(_position_draws(own, state["positions"], seeds))
            if "samples" not in state:
                state["samples"] = _whole_messages(ev)
            shapes = [g.shape for g in own.vectors()]
            drawn = gaussian_like(state["samples"], seeds)
            groups, start = [], 0
            for b, n, d in shapes:
                groups.append(drawn[:, start : start + n * d].reshape(b, n, d).float())
                start += n * d
            return own.with_vectors([g.to(v.device) for g, v in zip(groups, own.vectors(), strict=True)])

        return message

    def _fusion_draws(self, ev: Any, state: dict[str, Any], seeds: list[int]):
        if "fusion" not in state:
            state["fusion"] = _fusion_statistics(ev)
        stats = state["fusion"]

        def change(layer: int, which: int, delta: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
            mean, factor = stats[(layer, which)]
            out = torch.zeros_like(delta)
            for row, seed in enumerate(seeds):
                real = mask[row].bool()
                z = _normal((int(real.sum()), factor.shape[1]), _seed(seed, layer, which))
                out[row, real] = (mean + z @ factor.T).to(delta.dtype).to(delta.device)
            return out

        return change


class RandomRot(StatisticsControl):
    """Control: every message vector rotated by one fixed random orthogonal matrix (norms kept)."""

    name = "randomrot"
    default = True
    rank = 7

    def message_for(self, ev: Any):
        rotations: dict[int, torch.Tensor] = {}

        def rotation(width: int) -> torch.Tensor:
            if width not in rotations:
                rotations[width] = random_rotation(width, _seed("randomrot", ev.seed, width))
            return rotations[width]

        def rotate(vectors: torch.Tensor) -> torch.Tensor:
            return (vectors.double() @ rotation(vectors.shape[-1]).to(vectors.device)).to(vectors.dtype)

        def message(chunk: slice):
            own = ev.own_message(chunk)
            if isinstance(own, KVFusion):
                return own.with_deltas(lambda layer, which, delta, mask: rotate(delta))
            return own.with_vectors([rotate(v) for v in own.vectors()])

        return message


def _whole_messages(ev: Any) -> torch.Tensor:
    """Every evaluated item's message as one row (its vectors side by side): ``N D``."""
    rows = []
    with torch.no_grad():
        for chunk in ev.chunks():
            vectors = ev.own_message(chunk).vectors()
            rows.append(torch.cat([v.detach().double().flatten(1).cpu() for v in vectors], 1))
    return torch.cat(rows)


def _position_statistics(ev: Any) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per vector group of a message whose rows differ in length (``Message.vector_mask``), the mean and
    covariance factor of its vectors at every real position of the evaluated items."""
    seen: list[list[torch.Tensor]] = []
    with torch.no_grad():
        for chunk in ev.chunks():
            message = ev.own_message(chunk)
            real = message.vector_mask().bool().cpu()
            for g, vectors in enumerate(message.vectors()):
                if g == len(seen):
                    seen.append([])
                seen[g].append(vectors.detach().double().cpu()[real])
    return [gaussian_of_vectors(torch.cat(parts)) for parts in seen]


def _position_draws(own: Any, stats: list[tuple[torch.Tensor, torch.Tensor]], seeds: list[int]) -> list[torch.Tensor]:
    """``own``'s vectors with every real position drawn from its group's Gaussian (padding left as it is)."""
    real = own.vector_mask().bool()
    out = []
    for g, (vectors, (mean, factor)) in enumerate(zip(own.vectors(), stats, strict=True)):
        drawn = vectors.detach().clone()
        for row, seed in enumerate(seeds):
            at = real[row].to(vectors.device)
            z = _normal((int(at.sum()), factor.shape[1]), _seed(seed, g))
            drawn[row, at] = (mean + z @ factor.T).to(drawn.dtype).to(drawn.device)
        out.append(drawn)
    return out


def _fusion_statistics(ev: Any) -> dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor]]:
    """Per fused layer and keys/values, the mean and covariance factor of the fused deltas at every real
    prompt position of the evaluated items (one pass of the fusion over them)."""
    seen: dict[tuple[int, int], list[torch.Tensor]] = {}

    def record(layer: int, which: int, delta: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        seen.setdefault((layer, which), []).append(delta[mask.bool()].detach().double().cpu())
        return delta

    with torch.no_grad():
        for chunk in ev.chunks():
            ev.bridge.bridged_inputs(ev.own_message(chunk).with_deltas(record), ev.prompts[chunk], with_answer=False)
    return {key: gaussian_of_vectors(torch.cat(parts)) for key, parts in seen.items()}


@hookimpl
def register_systems(register):
    for cls in (CovGauss, RandomRot):
        register(cls)
