"""Generic file helpers of the bottom layer (no torch): atomic writes and JSON.

Every writer goes through a temp file in the target's directory and ``os.replace``, so a crash or a full disk never
leaves a half-written file behind; readers of user-given JSON live in ``errors.read_json``.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


def cache_root() -> Path:
    """Where modalbridge keeps what it derives once (WordNet copy, scene images, dequantized LMs):
    ``$MODALBRIDGE_CACHE``, else ``$XDG_CACHE_HOME/modalbridge``, else ``~/.cache/modalbridge``."""
    if os.environ.get("MODALBRIDGE_CACHE"):
        return Path(os.environ["MODALBRIDGE_CACHE"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser() / "modalbridge"


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temp file in the same directory and ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")
