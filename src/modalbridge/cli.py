"""The ``modalbridge`` command line: parses, calls the library, prints. Nothing else lives here.

Contract (see README): exit code 0 on success; on bad input one line on stderr starting with ``error:``
and exit code 2. Set ``MODALBRIDGE_DEBUG=1`` to see tracebacks of unexpected failures.
"""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from modalbridge.errors import UserError, one_line

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
    typer.echo(f"error: {one_line(message)}", err=True)
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


# Every heavy command takes --threads; by default PyTorch uses the cores that are free when the command starts.
Threads = Annotated[
    int | None,
    typer.Option("--threads", help="PyTorch CPU threads (default: the cores other processes leave free at start; "
                 "MODALBRIDGE_THREADS or OMP_NUM_THREADS also set it).", show_default=False),
]


def _threads(n: int | None) -> None:
    from modalbridge import threads

    threads.configure(n)


# --------------------------------------------------------------------------------------------- training
@command("train")
def train_cmd(
    config: Annotated[Path | None, typer.Argument(help="YAML config (configs/...); omit with --resume.")] = None,
    overrides: Annotated[list[str] | None, typer.Argument(help="key=value overrides, dotted keys.")] = None,
    resume: Annotated[Path | None, typer.Option("--resume", help="Continue RUN_DIR from its last.ckpt.")] = None,
    threads: Threads = None,
):
    """Train the task named in CONFIG; writes runs/<name>/<timestamp>/ with config, checkpoints, logs, model/."""
    _threads(threads)
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
        if config is not None and config.resolve() != (resume / "config.yaml").resolve():
            raise UserError(f"--resume continues {resume} with its own config.yaml; drop {config} "
                            "(key=value overrides still apply)")
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
        list[Path] | None, typer.Option("--captions", help="COCO-format captions JSON to mine (repeatable).")
    ] = None,
    n: Annotated[int, typer.Option("--n", help="Generated sentences (mined captions come on top).")] = 50_000,
    seed: Annotated[int, typer.Option("--seed", help="Random seed; same seed, same files.")] = 0,
):
    """Build the text -> class training sentences: templates, synonyms, hypernyms, glosses, mined captions."""
    from modalbridge.t2i import sentence_files, sentences, vocabularies

    if n < 1:
        raise UserError(f"--n must be at least 1, got {n}")
    sentence_files.check_out_dir(out)
    for f in captions or []:
        if not f.is_file():  # fail before WordNet loads; the format is checked before any sentence is made
            raise UserError(f"captions file not found: {f}")
    meta = sentences.prepare(vocabularies.resolve(vocab), out, n=n, seed=seed, captions=captions or [])
    counts = meta["counts"]
    typer.echo(f"{meta['n_total']} sentences over {meta['n_classes']} classes -> {out}")
    typer.echo("splits:  " + ", ".join(f"{k} {v}" for k, v in counts["split"].items()))
    typer.echo("sources: " + ", ".join(f"{k} {v}" for k, v in counts["source"].items()))
    if meta["n_generated"] < meta["n_requested"]:
        typer.echo(f"note: the vocabulary gave only {meta['n_generated']} distinct generated sentences", err=True)


@command("extract")
def extract_cmd(
    data: Annotated[Path, typer.Option("--data", help="Prepared sentences directory (modalbridge prepare).")],
    encoder: Annotated[
        str | None, typer.Option("--encoder", help="Text encoder: minilm | HF hub id | directory.")
    ] = None,
    layer: Annotated[int, typer.Option("--layer", help="-1 = last layer, else an index into hidden_states.")] = -1,
    max_length: Annotated[int | None, typer.Option("--max-length", help="Word pieces per sentence.")] = None,
    cache: Annotated[Path | None, typer.Option("--cache", help="Cache root (default DATA/features).")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Sentences per forward pass.")] = 64,
    force: Annotated[bool, typer.Option("--force", help="Recompute even if the cache entry exists.")] = False,
    threads: Threads = None,
):
    """Compute the text encoder's hidden states of every prepared sentence once (safetensors feature cache)."""
    _threads(threads)
    import time

    from modalbridge.t2i import features
    from modalbridge.text.encoders import default_encoder_name

    if batch_size < 1 or (max_length is not None and max_length < 2):
        raise UserError("--batch-size must be >= 1 and --max-length >= 2")
    start = time.perf_counter()
    with _warnings_to_stderr():
        entry = features.extract(data, encoder or default_encoder_name(), layer, max_length, cache,
                                 batch_size=batch_size, force=force, verbose=True)
    meta = features.load_entry(entry).meta
    typer.echo(f"{meta['n']} sentences, {meta['tokens']} word pieces, hidden {meta['hidden_size']} "
               f"({meta['encoder']}, layer {meta['layer']}) in {time.perf_counter() - start:.1f} s -> {entry}")


@command("draw")
def draw_cmd(
    text: Annotated[str | None, typer.Argument(help="What to draw (or use --prompts FILE).")] = None,
    n: Annotated[int, typer.Option("--n", help="Images per object.")] = 4,
    seed: Annotated[int | None, typer.Option("--seed", help="Noise seed (default: derived from the text).")] = None,
    truncation: Annotated[float | None, typer.Option(
        "--truncation", help="In (0, 1]; lower = more typical (default: the generator's own, 0.85 for gan-fashion "
        "as chosen by its evaluation panel; 0.5 for BigGAN-deep).")] = None,
    out: Annotated[Path, typer.Option("--out", help="Output directory for PNG/GIF files.")] = Path("drawings"),
    gif: Annotated[bool, typer.Option("--gif", help="Also write an animated GIF of the images.")] = False,
    model: Annotated[
        str | None,
        typer.Option("--model", help="Resolver or mapper directory or name: t2i-fashion (default) | t2i-imagenet."),
    ] = None,
    generator: Annotated[
        str | None,
        typer.Option("--generator", help="biggan-deep-128|256|512 (hub id, cached) or a published-format directory "
                     "(config.json + pytorch_model.bin); required with a resolver such as t2i-imagenet."),
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON object per text.")] = False,
    prompts: Annotated[Path | None, typer.Option("--prompts", help="File with one prompt per line.")] = None,
    per_token: Annotated[bool, typer.Option("--per-token", help="One image per word + captioned GIF.")] = False,
    to: Annotated[str | None, typer.Option("--to", help="Interpolate from TEXT to this text.")] = None,
    steps: Annotated[int, typer.Option("--steps", help="Frames of --to interpolation.")] = 8,
    whole: Annotated[bool, typer.Option("--whole", help="Do not split texts naming several objects.")] = False,
    threads: Threads = None,
):
    """Draw images for a text: text encoder -> resolver or mapper -> class embedding -> generator."""
    _threads(threads)
    import json

    from modalbridge import render
    from modalbridge.t2i import pipeline as P

    with _warnings_to_stderr():
        texts = _texts(text, prompts)  # bad text fails before any model loads
        P.check_n(n)
        if truncation is not None:
            P.check_truncation(truncation)
        if seed is not None:
            P.check_seed(seed)
        pipe = P.load_drawer(model, generator)
        for t in texts:
            s = P.text_seed(t) if seed is None else seed
            if per_token:
                record = render.save_per_token(t, s, pipe.per_token(t, s, truncation), out)
            elif to is not None:
                frames = pipe.interpolate(t, to, steps, s, truncation)
                record = render.save_frames(t, P.clean_text(to), s, frames, out, gif)
            else:
                record = render.save_drawing(pipe.draw(t, n, s, truncation, split_objects=not whole), out, gif)
            if json_out:
                typer.echo(json.dumps(record, ensure_ascii=False))
                continue
            if "classes" in record:
                typer.echo("classes: " + ", ".join(f"{c['label']} {c['score']:.2f}" for c in record["classes"]))
            for key in ("words",):
                for w in record.get(key, []):
                    typer.echo(f"{w['word']} -> {w['label']} {w['score']:.2f}")
            typer.echo("\n".join(record["images"] + [record[k] for k in ("grid", "gif") if k in record]))


def _texts(text: str | None, prompts: Path | None) -> list[str]:
    from modalbridge.t2i.classify import clean_text, read_prompts

    if (text is None) == (prompts is None):
        raise UserError("give a TEXT or --prompts FILE (not both)")
    return read_prompts(prompts) if prompts is not None else [clean_text(text)]


@command("classify")
def classify_cmd(
    text: Annotated[str | None, typer.Argument(help="Text to classify (or use --prompts FILE).")] = None,
    prompts: Annotated[Path | None, typer.Option("--prompts", help="File with one text per line.")] = None,
    model: Annotated[
        str | None,
        typer.Option("--model", help="Resolver or mapper directory or name: t2i-fashion (default) | t2i-imagenet."),
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="One JSON object per text.")] = False,
    whole: Annotated[bool, typer.Option("--whole", help="Do not split texts naming several objects.")] = False,
    threads: Threads = None,
):
    """Text -> classes, no generator: the top-5 classes of each text (and of each object it names)."""
    _threads(threads)
    import json

    from modalbridge.t2i.classify import load_classifier

    with _warnings_to_stderr():
        texts = _texts(text, prompts)
        clf = load_classifier(model)
        for i in range(0, len(texts), 256):
            for record in clf.classify_many(texts[i : i + 256], split_objects=not whole):
                if json_out:
                    typer.echo(json.dumps(record, ensure_ascii=False))
                    continue
                line = ", ".join(f"{c['label']} {c['score']:.2f}" for c in record["classes"])
                objects = "".join(f" | {o['text']}: {o['classes'][0]['label']}" for o in record["objects"])
                typer.echo(f"{record['text']}\t{line}{objects}")


class _warnings_to_stderr:
    """Python warnings (truncated text, mismatched tables) become ``warning:`` lines on stderr."""

    def __enter__(self):
        import warnings

        self._ctx = warnings.catch_warnings(record=True)
        self._seen = self._ctx.__enter__()
        warnings.simplefilter("always")

    def __exit__(self, *exc):
        self._ctx.__exit__(*exc)
        for w in dict.fromkeys(str(w.message) for w in self._seen):
            typer.echo(f"warning: {w}", err=True)
        return False


# ------------------------------------------------------------------------------------ image -> text
def _quiet_hf() -> None:
    """Keep stdout/stderr to our own lines: no Hugging Face loading bars or info warnings.

    Importing transformers costs seconds and the default captioner does not need it, so this only sets the
    variables it (and huggingface_hub) read at import; a model that needs transformers imports it quietly."""
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    if "transformers" in sys.modules:  # already imported (e.g. in tests): set it directly
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()
    elif "huggingface_hub" in sys.modules:  # it read the variable already
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()


_LENGTH_PENALTY = typer.Option(
    "--length-penalty", help="Beam search ranks captions by logprob / length ** L (0 = raw sum, favours short "
    "captions; 1 = mean per token; default 1; 0..5).")
_TOP_P = typer.Option("--top-p", help="Nucleus sampling instead of beam search: sample from the most likely tokens "
                      "holding this much probability (0 < P <= 1; reproducible: seed 0).")
_TEMPERATURE = typer.Option("--temperature", help="Sampling temperature instead of beam search (0 = greedy, 1 = the "
                            "model's own distribution; 0..10); combines with --top-p.")


@command("caption")
def caption_cmd(
    images: Annotated[list[Path], typer.Argument(help="Image files (PNG, JPEG, ...).")],
    model: Annotated[
        str | None, typer.Option("--model", help="Model directory or name; default: embedded caption-fashion.")
    ] = None,
    beam: Annotated[int | None, typer.Option("--beam", help="Beam size (1 = greedy); default 3.")] = None,
    length_penalty: Annotated[float | None, _LENGTH_PENALTY] = None,
    top_p: Annotated[float | None, _TOP_P] = None,
    temperature: Annotated[float | None, _TEMPERATURE] = None,
    attention: Annotated[
        Path | None, typer.Option("--attention", help="Write per-word attention heat maps (PNG) into this dir.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line: image, caption, logprob.")] = False,
    threads: Threads = None,
):
    """Caption images with a trained model (Show-Attend-Tell, Show-and-Tell or ClipCap)."""
    _threads(threads)
    import json

    from modalbridge.captioning.pipeline import check_decoding, load_captioner
    from modalbridge.render import save_attention_maps
    from modalbridge.vision.io import load_image

    decoding = {"beam": beam, "length_penalty": length_penalty, "top_p": top_p, "temperature": temperature}
    check_decoding(**decoding)
    pil = [load_image(p) for p in images]  # every image is checked before the model loads
    _quiet_hf()
    captioner = load_captioner(model)
    if attention is not None and not captioner.has_attention:
        raise UserError(f"--attention needs a show_attend_tell model; this one is '{captioner.model.model_type}'")
    results = captioner.caption(pil, **decoding)
    for i, (path, img, res) in enumerate(zip(images, pil, results, strict=True)):
        if as_json:
            typer.echo(json.dumps({"image": str(path), "caption": res["caption"], "logprob": res["logprob"]},
                                  ensure_ascii=False))
        else:
            typer.echo(f"{path}\t{res['caption']}")
        if attention is not None:
            written = save_attention_maps(img, res["words"], res["attention"], attention, f"{i:03d}_{path.stem}")
            typer.echo(f"attention maps for {path}: {len(written)} PNGs in {attention}", err=True)


@command("evaluate")
def evaluate_cmd(
    data: Annotated[
        str | None,
        typer.Option("--data", help="Dataset SPEC (see modalbridge.captioning.datasets); default: the fashion "
                     "scenes test split, generated deterministically into the cache on first use."),
    ] = None,
    model: Annotated[
        str | None, typer.Option("--model", help="Model directory or name; default: embedded caption-fashion.")
    ] = None,
    split: Annotated[str, typer.Option("--split", help="Which split to score.")] = "test",
    beam: Annotated[int | None, typer.Option("--beam", help="Beam size (1 = greedy); default 3.")] = None,
    length_penalty: Annotated[float | None, _LENGTH_PENALTY] = None,
    top_p: Annotated[float | None, _TOP_P] = None,
    temperature: Annotated[float | None, _TEMPERATURE] = None,
    lang: Annotated[
        str, typer.Option("--lang", help="Language of the references; not 'en': Unicode tokenizer, no METEOR.")
    ] = "en",
    meteor: Annotated[bool, typer.Option("--meteor/--no-meteor", help="METEOR (English; starts a JVM).")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print the scores as one JSON object.")] = False,
    threads: Threads = None,
):
    """Score a captioning model on a dataset split: BLEU-1..4, METEOR, ROUGE-L, CIDEr (pycocoevalcap scale)."""
    _threads(threads)
    import json

    from modalbridge.captioning import datasets
    from modalbridge.captioning.pipeline import check_decoding, evaluate, load_captioner

    decoding = {"beam": beam, "length_penalty": length_penalty, "top_p": top_p, "temperature": temperature}
    check_decoding(**decoding)
    if data is None:  # the default captioner's own test data (fashion_scenes.py)
        from modalbridge.captioning import fashion_scenes

        data = f"folder:{fashion_scenes.ensure_test_data()}"
    records, whole = datasets.select_split(datasets.load(data), split, data)
    if whole:
        typer.echo(f"note: '{data}' has no splits; scoring all {len(records)} images", err=True)
    _quiet_hf()
    captioner = load_captioner(model)
    scores = evaluate(captioner, records, **decoding, meteor=meteor, lang=lang.strip().lower() or "en",
                      progress=not as_json and sys.stderr.isatty())
    if as_json:
        typer.echo(json.dumps(scores))
    else:
        for key, value in scores.items():
            typer.echo(f"{key:8s} {value}" if not isinstance(value, float) else f"{key:8s} {value:.4f}")


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
    generator: Annotated[
        str | None, typer.Option("--generator", help="generator for --model-t2i: biggan-deep-128|256|512 or DIR "
                                 "(required for t2i-imagenet); default: the model's own.")
    ] = None,
    workers: Annotated[int, typer.Option("--workers", min=1, help="Model calls running at once, per model.")] = 1,
    queue: Annotated[int, typer.Option("--queue", min=0, help="Requests that may wait, per model (then 503).")] = 64,
    threads: Threads = None,
):
    """Web demo (Draw and Caption tabs) and JSON API (POST /api/draw, /api/caption); models load once at start."""
    _threads(threads)
    from modalbridge.app.server import Limits, serve

    serve(host, port, model_t2i, model_caption, Limits(workers=workers, queue=queue), echo=typer.echo,
          generator=generator)



def _click_exceptions():
    try:  # typer >= 0.20 vendors click
        from typer._click import exceptions
    except ImportError:  # pragma: no cover - older typer
        from click import exceptions
    return exceptions


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """``warnings.showwarning`` for the console: one ``warning: ...`` line on stderr, no source path or code line."""
    text = " ".join(str(message).split()) or category.__name__
    try:
        print(f"warning: {text}", file=file or sys.stderr)
    except (OSError, ValueError):  # stderr closed or gone: a warning must never crash the command
        pass


def main() -> None:
    """Console entry point: usage errors also become one ``error:`` line with exit code 2; Python warnings
    (from us or any library) become one ``warning:`` line each."""
    import warnings

    warnings.showwarning = _show_warning
    cx = _click_exceptions()
    if len(sys.argv) == 1:
        sys.argv.append("--help")
    try:
        rv = app(standalone_mode=False)
    except cx.UsageError as e:
        print("error: " + " ".join(e.format_message().split()), file=sys.stderr)
        sys.exit(2)
    except typer.Abort:  # typer raises its own Abort and Exit (its vendored click module has neither)
        print("error: aborted", file=sys.stderr)
        sys.exit(130)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    sys.exit(rv if isinstance(rv, int) else 0)
