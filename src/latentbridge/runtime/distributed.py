"""Running under torchrun: process-group set-up and the few collectives the runner needs.

Every helper is a no-op in a single process, so the same code path serves one CPU and N GPUs.
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

TIMEOUT_ENV = "LATENTBRIDGE_DIST_TIMEOUT_MIN"


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    return rank() == 0


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and "RANK" in os.environ


def init_from_env() -> None:
    """Join the process group torchrun describes (gloo on CPU, NCCL on CUDA). The timeout is long
    (default 120 minutes, ``$LATENTBRIDGE_DIST_TIMEOUT_MIN``) because ranks wait for each other
    through whole evaluations."""
    if not launched_by_torchrun() or is_distributed():
        return
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    minutes = float(os.environ.get(TIMEOUT_ENV, "120"))
    dist.init_process_group(backend=backend, timeout=timedelta(minutes=minutes))


def shutdown() -> None:
    """Leave the process group once every process is done (a process that exits while another still
    talks to it can be aborted by the backend's threads)."""
    if is_distributed():
        dist.barrier()
        dist.destroy_process_group()


def local_device() -> str | None:
    """The device of this rank under torchrun with CUDA (``cuda:<local rank>``), else None."""
    if launched_by_torchrun() and torch.cuda.is_available():
        return f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    return None


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def mean_(tensor: torch.Tensor) -> torch.Tensor:
    """In-place mean over ranks."""
    if is_distributed():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        tensor /= world_size()
    return tensor


def average_gradients(params: list[torch.nn.Parameter]) -> None:
    """Average every gradient over ranks, in one flat all-reduce."""
    if not is_distributed():
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    mean_(flat)
    offset = 0
    for p, g in zip(params, grads, strict=True):
        n = g.numel()
        p.grad = flat[offset : offset + n].view_as(p).clone()
        offset += n


def _device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def any_true(flag: bool) -> bool:
    """True on every rank if it is true on any."""
    if not is_distributed():
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=_device())
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def mean_values(values: dict[str, float]) -> dict[str, float]:
    """The mean of each value over ranks (every rank passes the same keys)."""
    if not is_distributed() or not values:
        return values
    keys = sorted(values)
    t = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=_device())
    mean_(t)
    return dict(zip(keys, t.tolist(), strict=True))


def gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order, on every rank."""
    if not is_distributed():
        return [obj]
    out: list[Any] = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` (``b ...``) from every process along dim 0, in rank order.

    The local slice keeps its autograd graph; the other processes' slices are constants (their own
    process back-propagates through them), as in the usual contrastive-learning gather. Objectives
    that use it set ``global_batch = True`` so the runner scales their gradient by the world size.
    """
    if not is_distributed():
        return x
    parts = [torch.empty_like(x) for _ in range(world_size())]
    dist.all_gather(parts, x.detach().contiguous())
    parts[rank()] = x
    return torch.cat(parts, dim=0)
