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
import contextlib
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
from dataclasses import asdict
from pathlib import Path
from typing import Any

import anyio
import gradio as gr
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from python_multipart.multipart import MultipartParseError, MultipartParser, parse_options_header
from starlette.exceptions import HTTPException as StarletteHTTPException

from modalbridge.app.services import (  # noqa: F401 - Limits, Services, ... stay importable from here
    ApiError,
    Busy,
    DrawChoices,
    Gate,
    Limits,
    Services,
    check_draw_args,
    check_image,
    check_upload_image,
    draw_json,
    int_field,
    load_services,
    png_base64,
)
from modalbridge.app.ui import build_ui
from modalbridge.errors import UserError

log = logging.getLogger("modalbridge.app")


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
        beam = int_field({"beam": beam}, "beam", None, 1, lim.max_beam)
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
