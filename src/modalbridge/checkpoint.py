"""A model is a directory: ``config.json`` + ``model.safetensors`` (+ optional ``vocab.json``, ``metrics.json``).

``config.json`` holds everything needed to rebuild the module (its registered ``model_type``, its config dataclass
as a dict, which includes the base models it bridges and their dims) plus the library version. Saving is atomic
(write a temp dir, then rename); loading never unpickles.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file, save_model

from modalbridge import __version__
from modalbridge.config import from_dict, to_dict
from modalbridge.errors import UserError, read_json
from modalbridge.files import atomic_dir, ordinary_mode
from modalbridge.registry import MODELS

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
VOCAB_NAME = "vocab.json"
METRICS_NAME = "metrics.json"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")


def save(
    model: torch.nn.Module,
    path: str | Path,
    vocab: Any = None,
    metrics: dict | None = None,
    extra: dict | None = None,
    tensors: dict[str, dict[str, torch.Tensor]] | None = None,
) -> Path:
    """Save ``model`` (a registered module with a dataclass ``config``) as a model directory, atomically.

    Args:
        model: module whose class is registered in ``MODELS`` and which has a ``config`` dataclass.
        path: target directory; replaced as a whole if it exists.
        vocab: JSON-serialisable vocabulary written to ``vocab.json``.
        metrics: written to ``metrics.json``.
        extra: more JSON-serialisable metadata stored under ``"extra"`` in ``config.json``.
        tensors: more safetensors files in the directory, ``{file name: {tensor name: tensor}}`` (e.g. the
            fine-tuned blocks of a captioner's image encoder, ``encoder.safetensors``).
    """
    path = Path(path)
    model_type = getattr(type(model), "model_type", None)
    if model_type is None or MODELS.get(model_type) is not type(model):
        raise TypeError(f"{type(model).__name__} is not registered in MODELS; cannot save it as a model directory")
    meta = {
        "model_type": model_type,
        "modalbridge_version": __version__,
        "config": to_dict(model.config),
        "extra": extra or {},
    }
    with atomic_dir(path) as tmp:
        save_model(model, str(tmp / WEIGHTS_NAME))
        ordinary_mode(tmp / WEIGHTS_NAME)
        (tmp / CONFIG_NAME).write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        if vocab is not None:
            (tmp / VOCAB_NAME).write_text(json.dumps(vocab, ensure_ascii=False) + "\n", encoding="utf-8")
        for name, state in (tensors or {}).items():
            save_file(state, str(tmp / name))
            ordinary_mode(tmp / name)
        if metrics is not None:
            (tmp / METRICS_NAME).write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    return path


def read_meta(path: str | Path) -> dict:
    """Read and check ``config.json`` of a model directory."""
    path = Path(path)
    if path.is_file() and path.suffix.lower() in PICKLE_SUFFIXES:
        raise UserError(f"{path} is a pickle file; modalbridge loads only model directories with safetensors weights")
    if not path.exists():
        raise UserError(f"model not found: {path}")
    if not path.is_dir():
        raise UserError(f"{path} is not a model directory (expected {CONFIG_NAME} + {WEIGHTS_NAME})")
    cfg_path = path / CONFIG_NAME
    if not cfg_path.is_file():
        raise UserError(f"{path} has no {CONFIG_NAME}; not a modalbridge model directory")
    meta = read_json(cfg_path)
    if not isinstance(meta, dict) or "model_type" not in meta or "config" not in meta:
        raise UserError(f"{cfg_path} lacks 'model_type'/'config'; not a modalbridge model directory")
    return meta


def load_state_dict(file: str | Path) -> dict[str, torch.Tensor]:
    """Load a safetensors file; truncated or corrupt files give a UserError."""
    file = Path(file)
    if not file.is_file():
        raise UserError(f"weights file missing: {file}")
    try:
        return load_file(str(file))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"corrupt or truncated weights file {file}: {msg}") from None


def build(meta: dict) -> torch.nn.Module:
    """Instantiate the registered module described by ``meta`` (random weights)."""
    cls = MODELS.get_entry(meta["model_type"])
    cfg = from_dict(cls.config_class, meta["config"])
    return cls(cfg)


def load_into(model: torch.nn.Module, state: dict[str, torch.Tensor], source: str | Path) -> None:
    """Load ``state`` strictly into ``model``; tied weights saved once by ``save_model`` are accepted."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    # safetensors' save_model drops aliases of shared tensors; they come back through the tie itself.
    shared = {k for k in missing if any(own[k].data_ptr() == own[j].data_ptr() for j in state if j in own)}
    missing = [k for k in missing if k not in shared]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        raise UserError(
            f"weights in {source} do not match the model config: "
            f"{len(missing)} missing (e.g. {missing[:2]}), {len(unexpected)} unexpected (e.g. {unexpected[:2]})"
        )
    for k, v in state.items():
        if own[k].shape != v.shape:
            raise UserError(
                f"weights in {source} do not match the model config: {k} has shape {tuple(v.shape)}, "
                f"expected {tuple(own[k].shape)}"
            )
    model.load_state_dict(state, strict=False)


def load(path: str | Path, expected: str | tuple[str, ...] | None = None) -> torch.nn.Module:
    """Load a model directory saved by :func:`save`; returns the module in eval mode.

    Args:
        path: the model directory.
        expected: model type(s) the caller can use; another type gives a UserError.
    """
    path = Path(path)
    meta = read_meta(path)
    if expected is not None:
        allowed = (expected,) if isinstance(expected, str) else expected
        if meta["model_type"] not in allowed:
            raise UserError(f"{path} holds a '{meta['model_type']}' model; expected {' or '.join(allowed)}")
    model = build(meta)
    load_into(model, load_state_dict(path / WEIGHTS_NAME), path / WEIGHTS_NAME)
    model.eval()
    model.meta = meta
    return model


def read_json_file(path: Path) -> Any:
    """Optional side file (``vocab.json``/``metrics.json``) of a model directory, or None."""
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise UserError(f"{path} is not valid JSON") from None
