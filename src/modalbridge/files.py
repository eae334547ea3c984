"""Generic file helpers of the bottom layer (no torch): atomic writes of files and directories, and JSON.

Every writer goes through a temp file (or directory) in the target's directory and ``os.replace``, so a crash or a
full disk never leaves a half-written file behind; readers of user-given JSON live in ``errors.read_json``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal


def cache_root() -> Path:
    """Where modalbridge keeps what it derives once (WordNet copy, scene images, dequantized LMs):
    ``$MODALBRIDGE_CACHE``, else ``$XDG_CACHE_HOME/modalbridge``, else ``~/.cache/modalbridge``."""
    if os.environ.get("MODALBRIDGE_CACHE"):
        return Path(os.environ["MODALBRIDGE_CACHE"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser() / "modalbridge"


def _umask() -> int:
    mask = os.umask(0o022)  # reading the umask means setting it; put it straight back
    os.umask(mask)
    return mask


_UMASK = _umask()  # once, at import: os.umask is process-wide and not safe to toggle from threads later
FILE_MODE = 0o666 & ~_UMASK  # what open(path, "w") gives a new file


def ordinary_mode(path: Path) -> None:
    """Give a file that a library created privately (safetensors writes 0o600) the mode of an ordinary new file."""
    os.chmod(path, FILE_MODE)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temp file in the same directory and ``os.replace``.

    The file gets the mode an ordinary ``open(path, "w")`` would give it (an existing file's own mode, else 0o666
    less the umask), not mkstemp's private 0o600.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        mode = path.stat().st_mode & 0o7777
    except FileNotFoundError:
        mode = FILE_MODE
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, mode)
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


@contextlib.contextmanager
def atomic_dir(target: Path, existing: Literal["replace", "keep"] = "replace") -> Iterator[Path]:
    """Build a directory in a temp directory beside ``target``; when the block succeeds it appears at ``target`` with
    one rename, complete or not at all (on an exception the temp directory is removed and ``target`` is untouched).

    ``existing="replace"``: a ``target`` already there is swapped out (moved aside, then removed). ``"keep"``: a
    ``target`` already there (another process finished first) wins and this build is dropped. Either way, losing a
    race to a concurrent builder keeps the directory that builder put in place.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        os.chmod(tmp, 0o777 & ~_UMASK)  # mkdtemp makes it private; the result is an ordinary directory
        yield tmp
        if target.exists() and existing == "keep":
            return
        old = None
        if target.exists():
            old = target.with_name(f".{target.name}.old-{os.getpid()}")
            os.replace(target, old)
        try:
            os.replace(tmp, target)
        except OSError:  # a concurrent builder swapped its directory in first; it is as good as ours
            if not target.is_dir():
                raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # nothing left after a successful rename
