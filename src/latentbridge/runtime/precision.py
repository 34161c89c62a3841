"""Mixed precision: the frozen models in the recipe's dtype, the translator's master weights in fp32.

On CUDA with ``models.dtype`` bfloat16 or float16 (and ``models.autocast`` on, the default), the
training step and generation run under ``torch.autocast``: matrix products in the low precision,
parameters, optimizer state and losses in fp32. On CPU nothing is autocast: the frozen models run in
their loaded dtype and the translator in fp32. (A translator may keep its own parameters in 16 bits:
``c2c`` with ``dtype: auto`` beside bf16 models, as the C2C authors keep their fusers.)
"""

from __future__ import annotations

import contextlib

import torch


def autocast(device: torch.device, dtype: torch.dtype, enabled: bool = True) -> contextlib.AbstractContextManager:
    if enabled and device.type == "cuda" and dtype in (torch.bfloat16, torch.float16):
        return torch.autocast(device_type="cuda", dtype=dtype)
    return contextlib.nullcontext()
