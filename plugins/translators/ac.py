"""Translator ``ac``: activation communication (Ramesh & Li, ICML 2025, arXiv 2501.14082), training-free.

The source reads its prompt; its state at the last token, at the recipe's source layer ``k``
(``models.source_layer``: ``hidden_states[k]``), is sent. The target reads its own prompt, and at its last
token the state entering decoder layer ``j`` (``layer``: ``hidden_states[j]``) is combined with the sent
vector by ``mode``: ``replace``, ``sum`` or ``mean``; the forward pass and decoding then continue as usual.

Between models of one width the vector is sent as it is (``map: auto`` or ``identity``). Between widths
it passes through a linear map ``W`` (no bias, as the paper's) fitted by least squares (``map:
least_squares``, the default there) on ``fit_items`` train items: the source's last-token state at layer
``k`` against the target's at layer ``j``, each model reading the item's prompt; no gradient step. The map
is saved with the run like any translator's weights. It has no trainable parameter, so a recipe runs it
with ``train.steps: 0``.

Differences from the paper, each an option or a documented choice: the paper fits ``W`` with Adam on the
same mean squared error over 3,072 C4 sentences (task-agnostic); here it is the closed-form least-squares
solution on the task's train items (the issue's protocol; the paper reports task data helps). ``bias``
adds an intercept. The paper's default layers are ``k = j = 26`` of LLaMA-3's 32 and ``replace`` its best
function; here ``layer`` defaults to 2 (the tiny pair's 4 layers) and ``models.source_layer`` sets ``k``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch

from latentbridge import ActivationPatch, Translator, TranslatorConfig, hookimpl, option
from latentbridge.api.messages import SourceStates


@dataclass
class ACConfig(TranslatorConfig):
    k: int = option(1, gt=0, help="unused (one vector per item)")
    layer: int = option(2, ge=0, help="target layer j: the state entering decoder block j (hidden_states[j]) at "
                        "the prompt's last token is combined with the source's")
    mode: Literal["replace", "sum", "mean"] = option("replace", help="how: replaced by, summed with or averaged "
                                                     "with the source's state")
    map: Literal["auto", "identity", "least_squares"] = option(
        "auto", help="'identity': the source's state as it is (equal widths only); 'least_squares': an affine map "
        "fitted on train items; 'auto': identity for equal widths, else least squares")
    fit_items: int = option(512, gt=1, help="train items the least-squares map is fitted on")
    bias: bool = option(False, help="fit an affine map (with a bias) instead of the paper's linear one")
    fit_batch: int = option(32, gt=0, help="items per forward pass while fitting")


class AC(Translator):
    """Activation communication: the source's last-token state patched into the target at one layer."""

    name = "ac"
    Config = ACConfig
    emits = "activation"

    def __init__(self, config: ACConfig):
        super().__init__(config)
        self.fitted = config.map == "least_squares" or (config.map == "auto" and config.d_src != config.d_tgt)
        # the affine map (identity when not fitted): buffers, saved with the run, never trained
        self.register_buffer("weight", torch.eye(config.d_tgt, config.d_src))
        self.register_buffer("bias", torch.zeros(config.d_tgt))

    @classmethod
    def check_models(cls, source: Any, target: Any, config: ACConfig) -> list[tuple[str, str]]:
        """Refused before any weight loads: a layer the target lacks, an identity map between widths."""
        problems = []
        if not 0 <= config.layer < target.num_layers:
            problems.append(("layer", f"{config.layer} is out of range for {target.name} ({target.num_layers} "
                             f"decoder layers: use 0..{target.num_layers - 1})"))
        if config.map == "identity" and source.hidden_size != target.hidden_size:
            problems.append(("map", f"'identity' needs equal widths, but {source.name} has {source.hidden_size} and "
                             f"{target.name} {target.hidden_size}; use map: least_squares (fitted on train items)"))
        return problems

    def message(self, states: SourceStates, seeds: torch.Tensor | None = None) -> ActivationPatch:
        last = states.hidden[:, -1].float()  # rows are left-padded: the last column is each prompt's last token
        return ActivationPatch(last @ self.weight.T + self.bias, self.config.layer, self.config.mode)

    @torch.no_grad()
    def fit(self, bridge: Any, task: Any, log: Callable[[str], None]) -> None:
        """The least-squares map, when one is asked for: ``x @ Wᵀ ≈ y`` (with ``bias``: ``+ b``) over the first
        ``fit_items`` train examples (``x``: the source's last-token state at ``models.source_layer``;
        ``y``: the target's last-token state entering block ``layer``)."""
        if not self.fitted:
            return
        chosen = task.examples("train")[: self.config.fit_items]
        if len(chosen) < 2:
            raise ValueError(f"ac: a least-squares map needs at least two train items, the task has {len(chosen)}")
        log(f"ac: fitting the least-squares map on {len(chosen)} train items")
        xs, ys = [], []
        for start in range(0, len(chosen), self.config.fit_batch):
            batch = chosen[start : start + self.config.fit_batch]
            prompts = [task.prompt(e) for e in batch]
            xs.append(bridge.source_states(prompts, batch).hidden[:, -1].double().cpu())
            # the target reads what the source read (in a context split, the context too), as in the paper's fit
            ys.append(target_states(bridge, [p.for_source for p in prompts], self.config.layer).double().cpu())
        x, y = torch.cat(xs), torch.cat(ys)
        design = torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], 1) if self.config.bias else x
        solution = torch.linalg.lstsq(design, y).solution  # (d_src [+ 1]) x d_tgt
        self.weight.copy_(solution[: x.shape[1]].T.float())
        if self.config.bias:
            self.bias.copy_(solution[-1].float())


def target_states(bridge: Any, prompts: Sequence[Any], layer: int) -> torch.Tensor:
    """The target's state entering decoder block ``layer`` at the last token of each prompt: ``b d_tgt``."""
    target = bridge.target
    inputs = bridge.text_inputs(target, [bridge.target_encoder.prompt_ids(p) for p in prompts])
    out = inputs.forward(target.model, output_hidden_states=True)
    return out.hidden_states[layer][:, -1]


@hookimpl
def register_translators(register):
    register(AC)
