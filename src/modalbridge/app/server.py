"""``modalbridge serve``: a Gradio demo and a JSON API on one FastAPI app, over pipeline objects loaded once.

Routes (the Gradio UI is mounted at ``/``; Gradio's own endpoints live under ``/gradio_api``):
    GET  /api/health   -> {"ok": true, "draw": bool, "caption": bool, "limits": {...}}
    POST /api/draw     JSON {"text", "n", "seed", "truncation", "model", "generator"}
                       -> {"images": [base64 PNG], "classes": [...]}; model/generator: names from ``DrawChoices``
    POST /api/caption  multipart field ``image`` (+ optional ``beam``, ``length_penalty``, ``top_p``, ``temperature``)
                       -> {"caption", "logprob"}
Every error is JSON ``{"error": "..."}``: 4xx for bad input, 503 when the queue is full, 500 (no traceback) otherwise.

Limits (``Limits``): request body and upload bytes, image pixels (checked from the header, before decoding),
text length, images per request, beam size. Model calls go through one ``Gate`` per pipeline: at most ``workers``
calls run (the pipelines share one model object each, and Hugging Face fast tokenizers are not thread-safe), at most
``queue`` more wait, each for at most ``queue_timeout`` seconds; beyond that the answer is 503. The UI tabs go
through the same gates, so the UI and the API cannot overload the models together.

The UI (:mod:`modalbridge.app.ui`) calls the same ``Services`` as the API. Uploads are read into memory; the API
never writes them to disk. Gradio's UI upload route writes a file into Gradio's upload folder; ``UploadGuard``
lets through only one verified image per request within the byte and pixel caps, at most ``max_kept_uploads`` at
once, and deletes each ``upload_ttl`` seconds later. ``serve`` points that folder (``GRADIO_TEMP_DIR``) at a
private temporary directory, the Caption tab deletes each upload right after reading it (heat maps derived from it
are sent inline, never cached), ``delete_cache`` removes Gradio's other cached files (the drawn images) once they
are ten minutes old, and the whole directory is removed when the server stops.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import json
import logging
import os
import shutil
import signal
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"  # before gradio is imported: no telemetry, no version check

import anyio  # noqa: E402
import gradio as gr  # noqa: E402
from fastapi import FastAPI, Request  # noqa: E402
from fastapi.exceptions import RequestValidationError  # noqa: E402
from fastapi.responses import JSONResponse  # noqa: E402
from PIL import Image  # noqa: E402
from python_multipart.multipart import MultipartParseError, MultipartParser, parse_options_header  # noqa: E402
from starlette.exceptions import HTTPException as StarletteHTTPException  # noqa: E402

from modalbridge import threads  # noqa: E402
from modalbridge.errors import UserError  # noqa: E402
from modalbridge.vision.io import load_image  # noqa: E402

log = logging.getLogger("modalbridge.app")


@dataclass
class Limits:
    """What one request may ask for, and how many requests may run or wait."""

    max_upload_bytes: int = 10 * 2**20  # one uploaded image file (the API body may add a little multipart framing)
    max_json_bytes: int = 64 * 2**10
    max_pixels: int = 25_000_000  # width * height, read from the image header before any decoding
    max_text_chars: int = 300
    max_images: int = 8
    max_beam: int = 10
    max_kept_uploads: int = 64  # UI upload files on disk at once (each deleted when read, or after upload_ttl)
    upload_ttl: float = 120.0  # seconds a UI upload that nothing read stays on disk
    workers: int = 1  # model calls running at once, per pipeline
    queue: int = 64  # requests allowed to wait, per pipeline
    queue_timeout: float = 60.0  # seconds a request may wait for a worker


class ApiError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class Busy(ApiError):
    def __init__(self, what: str):
        super().__init__(503, f"the {what} queue is full; try again in a moment")


def _adapted(fn: Callable, *args, **kwargs) -> Any:
    """Run a model call with threads re-counted for the machine's load now (see modalbridge.threads)."""
    threads.adapt()
    return fn(*args, **kwargs)


class Gate:
    """Bounded admission: ``workers`` calls run, up to ``queue`` wait (each at most ``timeout`` s), the rest -> Busy.

    It lives on the server's event loop, so waiting requests hold no threads; the model call itself runs in a
    worker thread (``anyio.to_thread``) so the loop keeps serving the UI and other requests.
    """

    def __init__(self, name: str, workers: int, queue: int, timeout: float):
        self.name, self.capacity, self.timeout = name, workers + queue, timeout
        self._sem = anyio.Semaphore(workers)
        self.pending = 0  # running + waiting; only touched on the event loop

    async def run(self, fn: Callable, *args, **kwargs) -> Any:
        if self.pending >= self.capacity:
            raise Busy(self.name)
        self.pending += 1
        try:
            try:
                with anyio.fail_after(self.timeout):
                    await self._sem.acquire()
            except TimeoutError:
                raise Busy(self.name) from None
            try:
                return await anyio.to_thread.run_sync(lambda: _adapted(fn, *args, **kwargs))
            finally:
                self._sem.release()
        finally:
            self.pending -= 1


# ------------------------------------------------------------------------------------------ validation
def _int(payload: dict, key: str, default: int | None, lo: int, hi: int) -> int | None:
    value = payload.get(key)
    if value is None:
        return default
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ApiError(400, f"'{key}' must be an integer from {lo} to {hi}, got {value!r}")
    return value


def check_draw_args(payload: Any, limits: Limits) -> dict:
    """The JSON body of /api/draw -> keyword arguments for ``Pipeline.draw`` (only those the client gave)."""
    if not isinstance(payload, dict):
        raise ApiError(400, 'the body must be a JSON object like {"text": "a red bird", "n": 2}')
    unknown = sorted(set(payload) - {"text", "n", "seed", "truncation", "model", "generator"})
    if unknown:
        raise ApiError(400, f"unknown field '{unknown[0]}'; fields are text, n, seed, truncation, model, generator")
    text = payload.get("text")
    if not isinstance(text, str) or not text.strip():
        raise ApiError(400, "'text' must be a non-empty string")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # JSON allows "\ud800"; no encoder or file name can take a lone surrogate
        raise ApiError(400, "'text' is not valid Unicode (it has a lone surrogate such as \\ud800)") from None
    if len(text) > limits.max_text_chars:
        raise ApiError(413, f"'text' has {len(text)} characters; the limit is {limits.max_text_chars}")
    args: dict = {"text": text.strip(), "n": _int(payload, "n", 1, 1, limits.max_images)}
    if payload.get("seed") is not None:
        args["seed"] = _int(payload, "seed", None, 0, 2**32 - 1)
    if payload.get("truncation") is not None:
        t = payload["truncation"]
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not 0 < t <= 1:
            raise ApiError(400, f"'truncation' must be a number in (0, 1], got {t!r}")
        args["truncation"] = float(t)
    for key in ("model", "generator"):  # names only: DrawChoices checks them against its allow-list
        value = payload.get(key)
        if value is not None and value != "":
            if not isinstance(value, str) or len(value) > 200:
                raise ApiError(400, f"'{key}' must be a name such as 't2i-fashion' or 'biggan-deep-128'")
            args[key] = value
    return args


DRAW_MODELS = ("t2i-fashion", "t2i-imagenet")  # text -> class models a client may pick (embedded names)
DRAW_GENERATORS = ("biggan-deep-128", "biggan-deep-256", "biggan-deep-512")  # generators a client may pick


@dataclass
class DrawChoices:
    """Which (model, generator) pairs /api/draw and the Draw tab may ask for: the names in ``DRAW_MODELS`` and
    ``DRAW_GENERATORS`` plus what the server was started with. Never a path from the network: a client's value is
    used only when it equals one of these names. A chosen pair is loaded on first use (``load_pipeline`` keeps a
    few loaded) inside the draw gate; a pair that cannot load (e.g. a resolver without a generator, hub weights not
    in the cache offline) is the loader's one-line ``UserError``, i.e. a 400.
    """

    model: str | None = None  # the server's --model-t2i (None: the default of draw)
    generator: str | None = None  # the server's --generator (None: the model's own)
    loader: Callable[[str, str | None], Any] | None = None  # (model, generator) -> pipeline; default load_pipeline

    @property
    def models(self) -> list[str]:
        from modalbridge.t2i.classify import DEFAULT_MODEL

        return list(dict.fromkeys([self.model or DEFAULT_MODEL, *DRAW_MODELS]))

    @property
    def generators(self) -> list[str]:
        return list(dict.fromkeys([*([self.generator] if self.generator else []), *DRAW_GENERATORS]))

    def resolve(self, model: str | None, generator: str | None) -> tuple[str, str | None] | None:
        """A client's choice -> the (model, generator) to load, or None for the server's own pipeline."""
        if model is not None and model not in self.models:
            raise ApiError(400, f"unknown model '{model}'; choose one of {', '.join(self.models)}")
        if generator is not None and generator not in self.generators:
            raise ApiError(400, f"unknown generator '{generator}'; choose one of {', '.join(self.generators)} "
                                "(or none: the model's own)")
        own = self.models[0]
        model = model or own
        if generator is None and model == own:
            generator = self.generator  # the server's own pair, unless another generator was asked for
        if model == own and generator == self.generator:
            return None
        return model, generator

    def load(self, model: str, generator: str | None) -> Any:
        if self.loader is not None:
            return self.loader(model, generator)
        from modalbridge.t2i.pipeline import load_pipeline

        return load_pipeline(model, generator)


def check_image(data: bytes, limits: Limits) -> None:
    """413 for too many bytes or pixels, from the header only (cheap, on the event loop; nothing is decoded).

    Unreadable data passes here and gets ``load_image``'s precise message (a 400) in the worker thread.
    """
    if len(data) > limits.max_upload_bytes:
        raise ApiError(413, f"the image has {len(data)} bytes; the limit is {limits.max_upload_bytes}")
    try:
        with Image.open(io.BytesIO(data)) as probe:
            w, h = probe.size
    except Image.DecompressionBombError:  # Pillow refuses > 2 x its MAX_IMAGE_PIXELS from the header: over our cap
        raise ApiError(413, f"the image has more pixels than Pillow opens; the limit is {limits.max_pixels}") from None
    except Exception:  # noqa: BLE001 - not an image: load_image says why (400), in the worker
        return
    if w * h > limits.max_pixels:
        raise ApiError(413, f"the image is {w}x{h} = {w * h} pixels; the limit is {limits.max_pixels}")


def png_base64(image: Image.Image) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


# --------------------------------------------------------------------------------------------- services
class Services:
    """The loaded pipelines, their gates and limits; both the JSON API and the UI call these methods."""

    def __init__(self, drawer: Any | None, captioner: Any | None, limits: Limits | None = None,
                 choices: DrawChoices | None = None):
        self.drawer, self.captioner, self.limits = drawer, captioner, limits or Limits()
        self.choices = choices  # None: only the server's own text -> image pipeline
        lim = self.limits
        self.draw_gate = Gate("draw", lim.workers, lim.queue, lim.queue_timeout)
        self.caption_gate = Gate("caption", lim.workers, lim.queue, lim.queue_timeout)

    async def draw(self, args: dict, slideshow: bool = False) -> tuple[Any, list | None]:
        """``Pipeline.draw(**args)`` and, with ``slideshow``, ``Pipeline.per_token`` (same seed and truncation).

        ``args`` may name a ``model`` and ``generator`` (see ``DrawChoices``); omitted, the server's own pipeline.
        """
        args = dict(args)
        model, generator = args.pop("model", None), args.pop("generator", None)
        pair = None
        if model is not None or generator is not None:
            if self.choices is None:
                raise ApiError(400, "this server draws with one model only; leave out 'model' and 'generator'")
            pair = self.choices.resolve(model, generator)
        if pair is None and self.drawer is None:
            raise ApiError(503, "no text -> image model is loaded in this server")

        def work():
            drawer = self.drawer if pair is None else self.choices.load(*pair)
            drawing = drawer.draw(**args)
            if not slideshow:
                return drawing, None
            return drawing, drawer.per_token(drawing.text, seed=drawing.seed, truncation=drawing.truncation)

        return await self.draw_gate.run(work)

    async def caption(self, data: bytes, beam: int | None = None, **decoding) -> tuple[Image.Image, dict]:
        """Caption uploaded bytes: caps checked here, decoding and the model in a worker thread (off the loop).
        ``decoding``: optional ``length_penalty``, ``top_p``, ``temperature`` (see ``Captioner.caption``)."""
        if self.captioner is None:
            raise ApiError(503, "no image -> text model is loaded in this server")
        check_image(data, self.limits)
        kwargs = {} if beam is None else {"beam": beam}
        kwargs.update({k: v for k, v in decoding.items() if v is not None})

        def work():
            image = load_image(data, max_pixels=self.limits.max_pixels, name="the upload")
            return image, self.captioner.caption([image], **kwargs)[0]

        return await self.caption_gate.run(work)


def draw_json(result: Any) -> dict:
    return {
        "images": [png_base64(im) for im in result.images],
        "classes": [
            {"label": str(c["label"]), "wnid": str(c["wnid"]), "score": float(c["score"])} for c in result.classes
        ],
    }


# ---------------------------------------------------------------------------------------------- JSON API
def _error(status: int, message: str) -> JSONResponse:
    headers = {"Retry-After": "1"} if status == 503 else None
    return JSONResponse({"error": " ".join(str(message).split()) or "error"}, status_code=status, headers=headers)


async def _guarded(coro) -> JSONResponse:
    """Every API answer is JSON; bad input is a 4xx, an unexpected failure a 500 without a traceback."""
    try:
        return JSONResponse(await coro)
    except ApiError as e:
        return _error(e.status, str(e))
    except UserError as e:
        return _error(400, str(e))
    except Exception as e:  # noqa: BLE001 - the traceback goes to the server log, never to the client
        log.exception("unexpected error in %s", getattr(coro, "__name__", "request"))
        return _error(500, f"internal error ({type(e).__name__}); see the server log")


async def read_body(request: Request, cap: int, what: str) -> bytes:
    """The request body, refused with 413 as soon as it (or its declared length) exceeds ``cap`` bytes."""
    declared = request.headers.get("content-length")
    too_big = ApiError(413, f"the request is larger than the limit of {what}")
    if declared is not None and (not declared.isdigit() or int(declared) > cap):
        raise too_big
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > cap:
            raise too_big
        chunks.append(chunk)
    return b"".join(chunks)


def parse_multipart(content_type: str, body: bytes) -> dict[str, tuple[str | None, bytes]]:
    """A multipart/form-data body, already in memory -> {field: (filename or None, bytes)}; nothing on disk."""
    ctype, params = parse_options_header(content_type)
    if ctype != b"multipart/form-data" or b"boundary" not in params:
        raise ApiError(415, "send the image as multipart/form-data with a file field named 'image'")
    parts: dict[str, tuple[str | None, bytes]] = {}
    cur: dict = {}
    state = {"field": b"", "value": b"", "ended": False}

    def on_part_begin():
        cur.clear()
        cur.update(headers={}, data=bytearray())

    def on_header_end():
        cur["headers"][state["field"].lower()] = state["value"]
        state["field"] = state["value"] = b""

    def on_part_end():
        _, opts = parse_options_header(cur["headers"].get(b"content-disposition", b""))
        name = opts.get(b"name", b"").decode("utf-8", "replace")
        filename = opts[b"filename"].decode("utf-8", "replace") if b"filename" in opts else None
        if len(parts) >= 8 or name in parts:
            raise ApiError(400, "too many or repeated form fields; send one 'image' and optionally 'beam'")
        parts[name] = (filename, bytes(cur["data"]))

    callbacks = {
        "on_part_begin": on_part_begin,
        "on_part_data": lambda d, s, e: cur["data"].extend(d[s:e]),
        "on_part_end": on_part_end,
        "on_header_field": lambda d, s, e: state.__setitem__("field", state["field"] + d[s:e]),
        "on_header_value": lambda d, s, e: state.__setitem__("value", state["value"] + d[s:e]),
        "on_header_end": on_header_end,
        "on_end": lambda: state.__setitem__("ended", True),
    }
    try:
        parser = MultipartParser(params[b"boundary"], callbacks)
        parser.write(body)
        parser.finalize()
    except MultipartParseError as e:
        raise ApiError(400, f"malformed multipart body ({e})") from None
    if not state["ended"]:
        raise ApiError(400, "malformed multipart body (it ends before the closing boundary)")
    return parts


def add_api(app: FastAPI, services: Services) -> None:
    lim = services.limits

    @app.get("/api/health")
    async def health():
        choices = services.choices
        return {"ok": True, "draw": services.drawer is not None, "caption": services.captioner is not None,
                "models": choices.models if choices else [], "generators": choices.generators if choices else [],
                "limits": asdict(lim)}

    async def draw(request: Request) -> dict:
        body = await read_body(request, lim.max_json_bytes, f"{lim.max_json_bytes} bytes")
        try:
            payload = json.loads(body)
        except (ValueError, UnicodeDecodeError) as e:
            raise ApiError(400, f"the body is not valid JSON ({e})") from None
        except RecursionError:  # e.g. 10 KB of "[[[[": json's parser recurses once per level
            raise ApiError(400, "the body is not valid JSON (nested too deeply)") from None
        drawing, _ = await services.draw(check_draw_args(payload, lim))
        return await anyio.to_thread.run_sync(draw_json, drawing)  # PNG encoding: off the event loop

    async def caption(request: Request) -> dict:
        framing = 16 * 2**10  # room for the multipart boundaries, headers and the beam field
        body = await read_body(request, lim.max_upload_bytes + framing, f"{lim.max_upload_bytes} bytes per image")
        parts = parse_multipart(request.headers.get("content-type", ""), body)
        if "image" not in parts or parts["image"][0] is None:
            raise ApiError(400, "missing the file field 'image'")
        beam = parts.get("beam", (None, b""))[1].decode("utf-8", "replace").strip() or None
        beam = _int({"beam": beam}, "beam", None, 1, lim.max_beam)
        decoding = {}  # optional fields, as `caption --length-penalty/--top-p/--temperature`; checked before the gate
        for key in ("length_penalty", "top_p", "temperature"):
            raw = parts.get(key, (None, b""))[1].decode("utf-8", "replace").strip()
            if raw:
                try:
                    decoding[key] = float(raw)
                except ValueError:
                    raise ApiError(400, f"'{key}' must be a number, got {raw[:40]!r}") from None
        from modalbridge.captioning.pipeline import check_decoding

        check_decoding(beam, **decoding)  # UserError: a 400 naming the option
        _, result = await services.caption(parts["image"][1], beam, **decoding)
        return {"caption": str(result["caption"]), "logprob": float(result["logprob"])}

    @app.post("/api/draw")
    async def api_draw(request: Request):
        return await _guarded(draw(request))

    @app.post("/api/caption")
    async def api_caption(request: Request):
        return await _guarded(caption(request))

    @app.api_route("/api/{rest:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
    async def unknown(rest: str):
        if rest in ("draw", "caption"):
            return _error(405, f"use POST for /api/{rest}")
        return _error(404, f"no API route /api/{rest}; routes are /api/draw, /api/caption, /api/health")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request, exc):
        return _error(exc.status_code, exc.detail)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request, exc):
        return _error(422, "invalid request")

    @app.exception_handler(Exception)
    async def any_error(request, exc):
        log.error("unexpected %s: %s", type(exc).__name__, exc)
        return _error(500, f"internal error ({type(exc).__name__}); see the server log")


# ------------------------------------------------------------------------------------ Gradio's upload route
GRADIO_UPLOAD = "/gradio_api/upload"
GRADIO_BLOCKED = ("/gradio_api/process_recording",)  # video recording: no tab here takes video or audio
UPLOAD_FORMATS = ("PNG", "JPEG", "GIF", "WEBP", "BMP", "TIFF", "MPO")  # what the Caption tab reads


def check_upload_image(data: bytes, limits: Limits) -> None:
    """A UI upload: 413 over the byte or pixel cap (header only), 415 unless Pillow identifies and verifies it."""
    check_image(data, limits)
    try:
        with Image.open(io.BytesIO(data)) as probe:
            fmt = probe.format
            probe.verify()  # structure and checksums (PNG CRCs), without decoding the pixels
    except Exception:  # noqa: BLE001 - anything Pillow cannot identify or verify is not an image we keep
        fmt = None
    if fmt not in UPLOAD_FORMATS:
        raise ApiError(415, "only image files can be uploaded (PNG, JPEG, GIF, WebP, BMP, TIFF)")


async def _read_asgi_body(scope: dict, receive: Callable, cap: int) -> bytes | None:
    """The whole request body, or None when it (or its declared length) is over ``cap`` bytes."""
    declared = dict(scope.get("headers") or []).get(b"content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > cap):
        return None
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return b""
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > cap:
            return None
        chunks.append(chunk)
        if not message.get("more_body"):
            return b"".join(chunks)


class UploadGuard:
    """ASGI middleware in front of Gradio's POST routes, which would otherwise store any file a client sends.

    * ``/gradio_api/upload``: one file per request, an image Pillow identifies and verifies (else 415), within the
      byte and pixel caps (else 413), and at most ``max_kept_uploads`` upload files on disk at once (else 503).
      Every accepted file is deleted ``upload_ttl`` seconds later unless the Caption tab has already read and
      deleted it (it does so at once).
    * Gradio's other POST routes (queue, events) take small JSON: their bodies are capped at ``max_json_bytes``
      (a ``data:`` URL image inside an event cannot be larger than that).
    * ``/gradio_api/process_recording`` (video/audio recordings) is refused: nothing in this UI records.
    Refusals are JSON ``{"error": ...}`` like the API's.
    """

    def __init__(self, app: Callable, limits: Limits):
        self.app, self.limits = app, limits
        self.kept: dict[str, float] = {}  # upload path -> time.monotonic() deadline

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        path = scope.get("path", "").rstrip("/") if scope["type"] == "http" else ""
        if not path.startswith("/gradio_api/") or scope.get("method") in ("GET", "HEAD", "OPTIONS"):
            return await self.app(scope, receive, send)
        if path in GRADIO_BLOCKED:
            return await _error(404, "this server does not take recordings")(scope, receive, send)
        upload = path == GRADIO_UPLOAD
        lim = self.limits
        cap = lim.max_upload_bytes + 16 * 2**10 if upload else lim.max_json_bytes  # + multipart framing
        body = await _read_asgi_body(scope, receive, cap)
        if body is None:
            return await _error(413, f"the request is larger than the limit of {cap} bytes")(scope, receive, send)
        if upload:
            try:
                await self._check_upload(scope, body)
            except ApiError as e:
                return await _error(e.status, str(e))(scope, receive, send)
        replayed = False

        async def replay():
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        if not upload:
            return await self.app(scope, replay, send)
        status, chunks = 0, []

        async def capture(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))
            await send(message)

        await self.app(scope, replay, capture)
        if status == 200:
            try:
                stored = json.loads(b"".join(chunks))
            except ValueError:
                stored = []
            for file in stored if isinstance(stored, list) else []:
                self._keep(str(file))

    async def _check_upload(self, scope: dict, body: bytes) -> None:
        ctype = dict(scope.get("headers") or []).get(b"content-type", b"").decode("latin-1")
        try:
            parts = parse_multipart(ctype, body)
        except ApiError as e:
            raise ApiError(e.status, "an upload is multipart/form-data with one image file in the field 'files'") \
                from None
        if set(parts) != {"files"} or parts["files"][0] is None:
            raise ApiError(400, "an upload is multipart/form-data with one image file in the field 'files'")
        await anyio.to_thread.run_sync(check_upload_image, parts["files"][1], self.limits)
        self._forget_gone()
        if len(self.kept) >= self.limits.max_kept_uploads:
            raise ApiError(503, f"{len(self.kept)} uploads are waiting to be read; try again in a moment")

    def _forget_gone(self) -> None:
        for file in [f for f in self.kept if not os.path.exists(f)]:
            del self.kept[file]

    def _keep(self, file: str) -> None:
        self.kept[file] = time.monotonic() + self.limits.upload_ttl
        asyncio.get_running_loop().call_later(self.limits.upload_ttl, self._expire, file)

    def _expire(self, file: str) -> None:
        deadline = self.kept.get(file)
        if deadline is None or time.monotonic() < deadline - 0.05:  # gone, or uploaded again since: a later timer
            return
        del self.kept[file]
        path = Path(file)
        with contextlib.suppress(OSError):
            path.unlink(missing_ok=True)
            path.parent.rmdir()  # Gradio's per-upload folder (named by the content's hash), when now empty


# ---------------------------------------------------------------------------------------------------- app
def build_app(drawer: Any | None, captioner: Any | None, limits: Limits | None = None,
              choices: DrawChoices | None = None) -> FastAPI:
    """The FastAPI app: JSON API under /api, the Gradio UI at /. Pipelines are loaded by the caller, once;
    ``choices`` lets clients pick other allow-listed text -> image models and generators (None: only ``drawer``)."""
    from modalbridge.app.ui import build_ui

    services = Services(drawer, captioner, limits, choices)
    app = FastAPI(title="modalbridge", docs_url=None, redoc_url=None, openapi_url=None)
    add_api(app, services)
    app.state.services = services
    app = gr.mount_gradio_app(
        app, build_ui(services), path="/", max_file_size=services.limits.max_upload_bytes, footer_links=[],
        run_history=False, ssr_mode=False, mcp_server=False, enable_monitoring=False, pwa=False, show_error=False,
    )
    app.add_middleware(UploadGuard, limits=services.limits)
    return app


def load_services(model_t2i: str | None = None, model_caption: str | None = None,
                  generator: str | None = None) -> tuple[Any, Any]:
    """Load both pipelines once (None = the embedded offline defaults; ``generator``: for the text -> image model)."""
    from modalbridge.captioning.pipeline import load_captioner
    from modalbridge.t2i.pipeline import load_pipeline

    return load_pipeline(model_t2i, generator), load_captioner(model_caption)


@contextlib.contextmanager
def private_upload_dir() -> Iterator[Path]:
    """Point Gradio's upload/cache folder at a fresh 0700 temp dir for the server's lifetime, then remove it."""
    previous = os.environ.get("GRADIO_TEMP_DIR")
    path = Path(tempfile.mkdtemp(prefix="modalbridge-gradio-"))
    os.environ["GRADIO_TEMP_DIR"] = str(path)
    try:
        yield path
    finally:
        if previous is None:
            os.environ.pop("GRADIO_TEMP_DIR", None)
        else:
            os.environ["GRADIO_TEMP_DIR"] = previous
        shutil.rmtree(path, ignore_errors=True)


def _server(app: FastAPI, sock: socket.socket):
    import uvicorn

    host, port = sock.getsockname()[:2]
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=5)
    return uvicorn.Server(config)


def bind(host: str = "127.0.0.1", port: int = 0) -> socket.socket:
    """A listening socket (port 0 = a free port, with no race between finding and binding it)."""
    try:
        sock = socket.create_server((host, port), family=socket.AF_INET6 if ":" in host else socket.AF_INET)
    except OSError as e:
        raise UserError(f"cannot listen on {host}:{port} ({e.strerror or e})") from None
    return sock


@contextlib.contextmanager
def running(app: FastAPI, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Run ``app`` with uvicorn on a background thread; yields its base URL and always shuts it down."""
    sock = bind(host, port)
    server = _server(app, sock)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True, name="modalbridge-serve")
    thread.start()
    try:
        while not server.started:
            if not thread.is_alive():
                raise RuntimeError("the server thread stopped during start-up")
            thread.join(0.02)
        port = sock.getsockname()[1]
        yield f"http://{'[' + host + ']' if ':' in host else host}:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def serve(host: str = "127.0.0.1", port: int = 7860, model_t2i: str | None = None,
          model_caption: str | None = None, limits: Limits | None = None, echo: Callable[[str], None] = print,
          generator: str | None = None) -> None:
    """Load both models, then serve the UI and the API until interrupted (Ctrl-C).

    ``generator``: for ``model_t2i`` (required for a resolver such as ``t2i-imagenet``). Clients may pick the other
    names of ``DrawChoices`` too; those load on first use.
    """
    sock = bind(host, port)  # fail fast on a busy port, before the slow model loads
    port = sock.getsockname()[1]  # the real one when port 0 asked for any free port
    drawer, captioner = load_services(model_t2i, model_caption, generator)
    with private_upload_dir():
        app = build_app(drawer, captioner, limits, DrawChoices(model_t2i, generator))
        server = _server(app, sock)
        echo(f"serving on http://{host}:{port}  (UI at /, API at /api/draw and /api/caption; Ctrl-C stops)")
        # uvicorn shuts down gracefully on SIGINT/SIGTERM, restores the previous handlers and re-raises the signal.
        # SIGTERM's default action would end the process before the upload folder is removed, so both signals
        # end as KeyboardInterrupt here: a normal stop.
        main = threading.current_thread() is threading.main_thread()
        previous = signal.signal(signal.SIGTERM, signal.default_int_handler) if main else None
        try:
            server.run(sockets=[sock])
        except KeyboardInterrupt:
            pass
        finally:
            if main:
                signal.signal(signal.SIGTERM, previous)
            sock.close()
    echo("stopped")
