"""The caption-decoder protocol and registry, shared by every decoder family (``sat.py``, ``clipcap.py``) and by the
decoding, training and pipeline code that drives them.

Protocol (what :mod:`modalbridge.captioning.decoding` calls): ``state = init_state(memory)``;
``logprobs, state, attn = step(tokens, state)``; ``reorder_state(state, index)``; ``never_generated()``. Teacher
forcing is ``forward(memory, input_ids, targets=None) -> CaptionOutput``. Notation: B batch, T caption positions,
P image regions, V vocabulary size.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from modalbridge.registry import Registry

IGNORE = -100  # target id that the loss skips (padding after <eos>)

# Caption decoders that the ``caption`` training task can pick by ``model.arch``; each is also in MODELS.
DECODERS = Registry("caption decoder")


@dataclass
class CaptionOutput:
    loss: torch.Tensor | None  # scalar, only when targets are given
    logits: torch.Tensor  # (B, T, V); ClipCap given targets: (N, V) of the N scored positions only
    attention: torch.Tensor | None  # (B, T, P) for attention models, else None


class CaptionDecoder(nn.Module):
    """Shared parts: the teacher-forced ``forward`` over ``_step`` and the protocol's ``step``/``reorder_state``.

    Subclasses set ``feature`` ("grid": memory is ``(B, P, C)``; "pooled": ``(B, C)``) and implement
    ``init_state`` and either ``_advance`` + ``_output`` (recurrence, then output layer; see the module docstring) or
    ``_step`` and their own ``forward``. Both return logits, not log-probabilities.
    """

    feature: str = "grid"
    config: object

    def init_state(self, memory: torch.Tensor) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def _advance(self, tokens: torch.Tensor, state: dict) -> tuple[tuple, dict, torch.Tensor | None]:
        """Tokens ``(B,)`` -> the output layer's inputs (a tuple of ``(B, ·)``), new state, attention ``(B, P)``."""
        raise NotImplementedError

    def _output(self, *inputs: torch.Tensor) -> torch.Tensor:
        """The output layer: inputs ``(..., ·)`` from ``_advance`` -> logits ``(..., V)``."""
        raise NotImplementedError

    def _step(self, tokens: torch.Tensor, state: dict) -> tuple[torch.Tensor, dict, torch.Tensor | None]:
        inputs, state, attn = self._advance(tokens, state)
        return self._output(*inputs), state, attn

    def never_generated(self) -> list[int]:
        """Token ids that are never a target (e.g. ``<pad>``, ``<bos>``): masked out of every prediction."""
        return []

    def _mask(self, logits: torch.Tensor) -> torch.Tensor:
        """``logits`` with the never-generated ids at -inf. Without autograd (decoding, evaluation) the model's own
        fresh logits are masked in place: no (B, [T,] V) copy."""
        ids = self.never_generated()
        if not ids:
            return logits
        fill = logits.index_fill if torch.is_grad_enabled() else logits.index_fill_
        return fill(-1, torch.tensor(ids, device=logits.device), float("-inf"))

    def step(self, tokens: torch.Tensor, state: dict) -> tuple[torch.Tensor, dict, torch.Tensor | None]:
        """One decoding step: tokens ``(B,)`` -> log-probabilities ``(B, V)``, new state, attention ``(B, P)``."""
        logits, state, attn = self._step(tokens, state)
        return F.log_softmax(self._mask(logits.float()), dim=-1), state, attn

    def reorder_state(self, state: dict, index: torch.Tensor) -> dict:
        return {k: v.index_select(0, index) for k, v in state.items()}

    def regularizer(self, attention: torch.Tensor | None, mask: torch.Tensor) -> torch.Tensor | None:
        return None

    def forward(
        self, memory: torch.Tensor, input_ids: torch.Tensor, targets: torch.Tensor | None = None
    ) -> CaptionOutput:
        """Teacher forcing: feed ``input_ids`` ``(B, T)`` (``<bos> w_1 .. w_n``), predict ``targets`` ``(B, T)``
        (``w_1 .. w_n <eos>``, padded with -100)."""
        state = self.init_state(memory)
        inputs, attns = [], []
        for t in range(input_ids.shape[1]):
            step_inputs, state, attn = self._advance(input_ids[:, t], state)
            inputs.append(step_inputs)
            attns.append(attn)
        logits = self._mask(self._output(*(torch.stack(x, 1) for x in zip(*inputs, strict=True))))  # (B, T, V)
        attention = torch.stack(attns, 1) if attns and attns[0] is not None else None  # (B, T, P)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=IGNORE)
            reg = self.regularizer(attention, targets != IGNORE)
            if reg is not None:
                loss = loss + reg
        return CaptionOutput(loss=loss, logits=logits, attention=attention)
