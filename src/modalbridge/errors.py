"""The one exception type that reaches a user as a single ``error:`` line (exit code 2)."""

from __future__ import annotations

import difflib
import json
import os
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, NoReturn


class UserError(Exception):
    """Bad input from a user: a wrong path, value, model name or file. Rendered as ``error: <message>``."""


def closest(name: str, choices: Iterable[str]) -> str:
    """Return ``" (did you mean 'x'?)"`` for the closest choice, or an empty string."""
    match = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.5)
    return f" (did you mean '{match[0]}'?)" if match else ""


def read_json(path: str | os.PathLike, what: str = "file") -> Any:
    """The parsed content of a user-given JSON file; missing or unreadable is one ``UserError`` naming the path."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{what} not found: {path}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{path} is not valid JSON ({type(e).__name__})") from None


def one_line(message: object) -> str:
    """``message`` as the one line an ``error:`` shows: whitespace runs (newlines too) collapsed, never empty."""
    return " ".join(str(message).split()) or "unknown error"


def script_main(main: Callable[[], Any]) -> NoReturn:
    """Run a script's ``main()`` the way the CLI runs a command: a ``UserError``, or a ``SystemExit`` that carries a
    message, becomes one ``error:`` line on stderr and exit code 2; ``main``'s int return value is the exit code."""
    try:
        code = main()
    except UserError as e:
        message = str(e)
    except SystemExit as e:
        if not isinstance(e.code, str):
            raise
        message = e.code
    else:
        sys.exit(code or 0)
    print(f"error: {one_line(message)}", file=sys.stderr)
    sys.exit(2)
