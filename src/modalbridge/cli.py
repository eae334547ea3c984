"""The ``modalbridge`` command line: parses, calls the library, prints. Nothing else lives here.

Contract (see README): exit code 0 on success; on bad input one line on stderr starting with ``error:``
and exit code 2. Set ``MODALBRIDGE_DEBUG=1`` to see tracebacks of unexpected failures.
"""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from modalbridge.errors import UserError

app = typer.Typer(
    name="modalbridge",
    help="Bridges between frozen pretrained language and image models: text -> image and image -> text.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def _print_version(value: bool) -> None:
    if value:
        from modalbridge import __version__

        typer.echo(__version__)
        raise typer.Exit(0)


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_print_version, is_eager=True, help="Print the version and exit.")
    ] = False,
):
    """Bridges between frozen pretrained language and image models: text -> image and image -> text."""


def fail(message: str, code: int = 2) -> None:
    """Print one ``error:`` line on stderr and exit."""
    line = " ".join(str(message).split()) or "unknown error"
    typer.echo(f"error: {line}", err=True)
    raise typer.Exit(code)


def command(*args, **kwargs):
    """``app.command`` that turns UserError (and any unexpected exception) into one ``error:`` line."""

    def deco(fn):
        @functools.wraps(fn)
        def wrapper(*a, **kw):
            try:
                return fn(*a, **kw)
            except UserError as e:
                fail(str(e), 2)
            except (typer.Exit, typer.Abort, SystemExit):
                raise
            except KeyboardInterrupt:
                fail("interrupted", 130)
            except Exception as e:  # noqa: BLE001 - a user never sees a traceback
                if os.environ.get("MODALBRIDGE_DEBUG"):
                    raise
                fail(f"unexpected {type(e).__name__}: {e} (set MODALBRIDGE_DEBUG=1 for a traceback)", 1)

        return app.command(*args, **kwargs)(wrapper)

    return deco


# --------------------------------------------------------------------------------------------- training
@command("train")
def train_cmd(
    config: Annotated[Optional[Path], typer.Argument(help="YAML config (configs/...); omit with --resume.")] = None,
    overrides: Annotated[Optional[list[str]], typer.Argument(help="key=value overrides, dotted keys.")] = None,
    resume: Annotated[Optional[Path], typer.Option("--resume", help="Continue RUN_DIR from its last.ckpt.")] = None,
):
    """Train the task named in CONFIG; writes runs/<name>/<timestamp>/ with config, checkpoints, logs, model/."""
    from modalbridge.registry import load_builtins
    from modalbridge.training import engine

    load_builtins()
    overrides = list(overrides or [])
    if config is not None and "=" in str(config) and not Path(config).exists():
        overrides.insert(0, str(config))
        config = None
    if resume is not None:
        if not (resume / "config.yaml").is_file():
            raise UserError(f"cannot resume: {resume}/config.yaml not found")
        config = resume / "config.yaml"
    if config is None:
        raise UserError("give a CONFIG.yaml (or --resume RUN_DIR)")
    cfg = engine.resolve_config(config, overrides)
    run_dir = engine.train(cfg, resume=resume)
    if int(os.environ.get("LOCAL_RANK", "0")) == 0:
        typer.echo(f"run dir: {run_dir}")
        typer.echo(f"model:   {run_dir / 'model'}")


# ------------------------------------------------------------------------------------ text -> image
@command("prepare")
def prepare_cmd(
    vocab: Annotated[str, typer.Option("--vocab", help="imagenet1k | fashion | vocabulary JSON | list of wnids.")],
    out: Annotated[Path, typer.Option("--out", help="Output directory (sentences.jsonl, vocabulary.json, meta.json).")],
    captions: Annotated[
        Optional[list[Path]], typer.Option("--captions", help="COCO-format captions JSON to mine (repeatable).")
    ] = None,
    n: Annotated[int, typer.Option("--n", help="Generated sentences (mined captions come on top).")] = 50_000,
    seed: Annotated[int, typer.Option("--seed", help="Random seed; same seed, same files.")] = 0,
):
    """Build the text -> class training sentences: templates, synonyms, hypernyms, glosses, mined captions."""
    from modalbridge.t2i import sentences, vocabulary

    if n < 1:
        raise UserError(f"--n must be at least 1, got {n}")
    sentences.check_out_dir(out)
    for f in captions or []:
        if not f.is_file():  # fail before WordNet loads; the format is checked before any sentence is made
            raise UserError(f"captions file not found: {f}")
    meta = sentences.prepare(vocabulary.resolve(vocab), out, n=n, seed=seed, captions=captions or [])
    counts = meta["counts"]
    typer.echo(f"{meta['n_total']} sentences over {meta['n_classes']} classes -> {out}")
    typer.echo("splits:  " + ", ".join(f"{k} {v}" for k, v in counts["split"].items()))
    typer.echo("sources: " + ", ".join(f"{k} {v}" for k, v in counts["source"].items()))
    if meta["n_generated"] < meta["n_requested"]:
        typer.echo(f"note: the vocabulary gave only {meta['n_generated']} distinct generated sentences", err=True)




# ------------------------------------------------------------------------------------ image -> text


# -------------------------------------------------------------------------------------------- serve
@command("serve")
def serve_cmd(
    host: Annotated[str, typer.Option("--host", help="Interface to listen on (0.0.0.0 = all).")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=0, max=65535, help="TCP port.")] = 7860,
    model_t2i: Annotated[
        str | None, typer.Option("--model-t2i", help="text -> image model (name or path); default: embedded.")
    ] = None,
    model_caption: Annotated[
        str | None, typer.Option("--model-caption", help="image -> text model (name or path); default: embedded.")
    ] = None,
    workers: Annotated[int, typer.Option("--workers", min=1, help="Model calls running at once, per model.")] = 1,
    queue: Annotated[int, typer.Option("--queue", min=0, help="Requests that may wait, per model (then 503).")] = 64,
):
    """Web demo (Draw and Caption tabs) and JSON API (POST /api/draw, /api/caption); models load once at start."""
    from modalbridge.app.server import Limits, serve

    serve(host, port, model_t2i, model_caption, Limits(workers=workers, queue=queue), echo=typer.echo)



def _click_exceptions():
    try:  # typer >= 0.20 vendors click
        from typer._click import exceptions
    except ImportError:  # pragma: no cover - older typer
        from click import exceptions
    return exceptions


def main() -> None:
    """Console entry point: usage errors also become one ``error:`` line with exit code 2."""
    cx = _click_exceptions()
    if len(sys.argv) == 1:
        sys.argv.append("--help")
    try:
        rv = app(standalone_mode=False)
    except cx.UsageError as e:
        print("error: " + " ".join(e.format_message().split()), file=sys.stderr)
        sys.exit(2)
    except cx.Abort:
        print("error: aborted", file=sys.stderr)
        sys.exit(130)
    except (typer.Exit, cx.Exit) as e:
        sys.exit(e.exit_code)
    sys.exit(rv if isinstance(rv, int) else 0)
