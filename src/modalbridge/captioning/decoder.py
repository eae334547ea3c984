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
    logits: torch.Tensor | None  # (B, T, V); ClipCap given targets: None (the loss is fused with its output layer)
    attention: torch.Tensor | None  # (B, T, P) for attention models, else None


def _chunk_rows(V: int) -> int:
    return max(1, (1 << 23) // V)  # 32 MiB of float32 logits per chunk


class _LinearCrossEntropy(torch.autograd.Function):
    """Mean cross-entropy of ``h @ W.T (+ b)`` against ``targets`` without the (N, V) logits in memory: a few rows
    at a time, the forward computes each chunk's logits in float32, its loss terms and, at once, its gradient
    ``(softmax - onehot) @ W`` (the loss is the graph's end, so the gradient is known in the forward), then frees the
    chunk. Backward scales the stored gradient. ``W`` and ``b`` get no gradient: for frozen output layers only."""

    @staticmethod
    def forward(ctx, h, weight, bias, targets, banned):  # h (N, D), weight (V, D), targets (N,)
        N, V = h.shape[0], weight.shape[0]
        rows = _chunk_rows(V)
        want_grad = ctx.needs_input_grad[0]  # False for a validation loss under no_grad
        grad = torch.empty_like(h) if want_grad else None  # (N, D)
        total = h.new_zeros((), dtype=torch.float32)
        with torch.autocast(h.device.type, enabled=False):
            for i in range(0, N, rows):
                x = h[i : i + rows].to(weight.dtype)  # (n, D)
                logits = (x @ weight.T).float()  # (n, V)
                if bias is not None:
                    logits += bias.float()
                if banned is not None:
                    logits.index_fill_(1, banned, float("-inf"))
                t = targets[i : i + rows, None]  # (n, 1)
                lse = torch.logsumexp(logits, dim=1, keepdim=True)  # (n, 1)
                total += (lse - logits.gather(1, t)).sum()
                if not want_grad:
                    continue
                p = logits.sub_(lse).exp_()  # softmax, in place
                p.scatter_add_(1, t, p.new_full(t.shape, -1.0))  # softmax - onehot
                grad[i : i + rows] = (p.to(weight.dtype) @ weight).to(h.dtype)  # (n, D)
        if want_grad:
            ctx.save_for_backward(grad)
        ctx.n = N
        return total / N

    @staticmethod
    def backward(ctx, grad_out):
        (grad,) = ctx.saved_tensors
        return grad * (grad_out / ctx.n).to(grad.dtype), None, None, None, None


def linear_cross_entropy(h: torch.Tensor, head: nn.Linear | nn.Module, targets: torch.Tensor,
                         banned: list[int] | tuple = ()) -> torch.Tensor:
    """``F.cross_entropy(head(h), targets)`` (mean over the N rows, ``banned`` ids at -inf) for a *frozen* output
    layer over a large vocabulary, fused so the (N, V) logits, their log-softmax and its gradient are never stored
    (Liger-Kernel's fused linear cross-entropy does the same on GPUs, https://arxiv.org/abs/2410.10989). For
    SmolLM2's 49k-token head that was ~15 % of a float32 ClipCap training step on a CPU (bench/bench_clipcap.py)."""
    weight, bias = head.weight, getattr(head, "bias", None)
    if weight.requires_grad or (bias is not None and bias.requires_grad):
        raise ValueError("linear_cross_entropy is for frozen output layers (its weight gets no gradient)")
    ids = torch.tensor(sorted(banned), dtype=torch.long, device=h.device) if banned else None
    return _LinearCrossEntropy.apply(h, weight, bias, targets, ids)


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
