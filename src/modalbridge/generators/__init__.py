"""Class-conditional image generators (BigGAN-deep) by name or path: ``load_generator``.

Accepted specs:
* a name in ``GENERATORS``: the published ``biggan-deep-128|256|512`` (hub repos ``huggingface/biggan-deep-<N>``,
  from the Hugging Face cache or downloaded, announced) or a generator shipped in ``modalbridge/weights/<name>``;
  ``default`` is an alias of ``gan-fashion``;
* a local directory in the published format: ``config.json`` (BigGANConfig fields) + ``pytorch_model.bin``;
* a modalbridge model directory: ``config.json`` with ``model_type`` + ``model.safetensors``;
* any other hub id holding the published format.
"""

from __future__ import annotations

import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch

from modalbridge import assets, checkpoint
from modalbridge.config import from_dict
from modalbridge.errors import UserError, closest, read_json
from modalbridge.generators.biggan import BigGAN, BigGANConfig, truncated_noise
from modalbridge.registry import Registry

__all__ = ["GENERATORS", "BigGAN", "BigGANConfig", "NamedGenerator", "load_generator", "load_published",
           "truncated_noise"]  # fmt: skip

PUBLISHED_WEIGHTS = "pytorch_model.bin"
DEFAULT_ALIAS = {"default": "gan-fashion"}


@dataclass(frozen=True)
class NamedGenerator:
    """Where a named generator comes from: a hub repo id (``hub``) or a folder under modalbridge/weights/.

    Calling it loads the generator, so ``GENERATORS.create(name)`` equals ``load_generator(name)``.
    """

    name: str
    source: str
    kind: str  # "hub" | "embedded"
    description: str = ""

    def __call__(self) -> torch.nn.Module:
        return load_generator(self.name)


GENERATORS = Registry("generator")
for _n, _size in [("128", "50.4M"), ("256", "55.9M"), ("512", "56.2M")]:
    GENERATORS[f"biggan-deep-{_n}"] = NamedGenerator(
        f"biggan-deep-{_n}", f"huggingface/biggan-deep-{_n}", "hub", f"BigGAN-deep {_n}px, ImageNet-1k, {_size} params"
    )
GENERATORS["gan-fashion"] = NamedGenerator(
    "gan-fashion", "gan-fashion", "embedded", "small BigGAN-deep trained here on Fashion-MNIST (configs/gan/)"
)


def load_generator(name_or_path: str | Path) -> torch.nn.Module:
    """Load a generator by registered name, local directory or hub id; returns it in eval mode on the CPU.

    Raises:
        UserError: unknown name, missing/corrupt/truncated files, no network for an uncached hub model.
    """
    spec = str(name_or_path).strip()
    spec = DEFAULT_ALIAS.get(spec, spec)
    if not spec:
        raise UserError("empty generator name")
    path = Path(spec).expanduser()
    if spec in GENERATORS and not path.exists():
        entry: NamedGenerator = GENERATORS[spec]
        if entry.kind == "hub":
            return load_dir(assets.resolve(entry.source))
        found = assets.embedded(entry.source)
        if found is None:
            raise UserError(f"generator '{spec}' is not shipped in this install (no {assets.WEIGHTS_DIR / spec}); "
                            "train it first or pass a generator directory")  # fmt: skip
        return load_dir(found)
    if path.exists():
        return load_dir(path)
    if found := assets.embedded(spec):
        return load_dir(found)
    if "/" in spec and not spec.startswith((".", "/", "~")) and spec.count("/") == 1:
        return load_dir(assets.resolve(spec))
    known = sorted(GENERATORS) + list(DEFAULT_ALIAS)
    raise UserError(f"unknown generator '{spec}'{closest(spec, known)}; known: {', '.join(known)}, "
                    "or a directory with config.json")  # fmt: skip


def load_dir(path: Path) -> torch.nn.Module:
    """A generator directory in either format (see the module docstring), in eval mode."""
    path = Path(path)
    meta = _read_config(path)
    if "model_type" in meta:
        model = checkpoint.load(path)
        if not hasattr(model, "class_embeddings"):
            raise UserError(f"{path} holds a '{meta['model_type']}' model, not an image generator")
        model.default_truncation = meta.get("extra", {}).get("default_truncation")  # None: the pipeline's default
        return model
    return load_published(path, meta)


def load_published(path: Path, meta: dict | None = None) -> BigGAN:
    """A directory in the published BigGAN format: ``config.json`` + ``pytorch_model.bin`` (tensors only)."""
    path = Path(path)
    meta = _read_config(path) if meta is None else meta
    meta = {k: v for k, v in meta.items() if not k.startswith("_")}  # e.g. "_name_or_path" bookkeeping
    config = from_dict(BigGANConfig, meta, prefix="biggan.")
    state = read_state_dict(path / PUBLISHED_WEIGHTS)
    with torch.device("meta"):  # no random init of ~50M weights that are overwritten anyway
        model = BigGAN(config)
    own = model.state_dict()
    missing, unexpected = [k for k in own if k not in state], [k for k in state if k not in own]
    if missing or unexpected:
        raise UserError(f"weights in {path / PUBLISHED_WEIGHTS} do not match its config.json: {len(missing)} missing "
                        f"(e.g. {missing[:2]}), {len(unexpected)} unexpected (e.g. {unexpected[:2]})")  # fmt: skip
    for k, v in own.items():
        if state[k].shape != v.shape:
            raise UserError(f"weights in {path / PUBLISHED_WEIGHTS} do not match its config.json: {k} has shape "
                            f"{tuple(state[k].shape)}, expected {tuple(v.shape)}")  # fmt: skip
    model.load_state_dict({k: v.float() for k, v in state.items()}, strict=True, assign=True)
    return model.eval()


def _read_config(path: Path) -> dict:
    if not path.is_dir():
        raise UserError(f"{path} is not a generator directory (expected config.json + {PUBLISHED_WEIGHTS} "
                        f"or {checkpoint.WEIGHTS_NAME})")  # fmt: skip
    cfg_file = path / checkpoint.CONFIG_NAME
    if not cfg_file.is_file():
        raise UserError(f"{path} has no {checkpoint.CONFIG_NAME}; not a generator directory")
    meta = read_json(cfg_file)
    if not isinstance(meta, dict):
        raise UserError(f"{cfg_file} must hold a JSON object")
    return meta


def read_state_dict(file: Path) -> dict[str, torch.Tensor]:
    """``torch.load(weights_only=True)``: plain tensors only, never arbitrary pickled objects."""
    if not file.is_file():
        raise UserError(f"weights file missing: {file}")
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "unsupported global" in str(e).lower():  # a class or function reference: code, not data
            raise UserError(f"refused to load {file}: it holds pickled Python objects, not just tensors") from None
        raise UserError(f"corrupt or truncated weights file {file} ({type(e).__name__})") from None
    except (RuntimeError, EOFError, ValueError, OSError, zipfile.BadZipFile, KeyError, AttributeError) as e:
        raise UserError(f"corrupt or truncated weights file {file} ({type(e).__name__})") from None
    if not isinstance(state, dict) or not all(isinstance(k, str) and torch.is_tensor(v) for k, v in state.items()):
        raise UserError(f"{file} is not a state dict of named tensors")
    return state
