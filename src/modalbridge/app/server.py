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

The UI (:mod:`modalbridge.app.ui`) calls the same ``Services`` (:mod:`modalbridge.app.services`) as the API.
Uploads are read into memory; the API never writes them to disk. Gradio's UI upload route writes a file into
Gradio's upload folder; ``UploadGuard`` (:mod:`modalbridge.app.uploads`)
lets through only one verified image per request within the byte and pixel caps, at most ``max_kept_uploads`` at
once, and deletes each ``upload_ttl`` seconds later. ``serve`` points that folder (``GRADIO_TEMP_DIR``) at a
private temporary directory, the Caption tab deletes each upload right after reading it (heat maps derived from it
are sent inline, never cached), ``delete_cache`` removes Gradio's other cached files (the drawn images) once they
are ten minutes old, and the whole directory is removed when the server stops.
"""

from __future__ import annotations

import contextlib
import json
import logging
import signal
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import asdict
from typing import Any

import anyio
import gradio as gr
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
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
from modalbridge.app.uploads import UploadGuard, json_error, parse_multipart, private_upload_dir
from modalbridge.errors import UserError

log = logging.getLogger("modalbridge.app")


# ---------------------------------------------------------------------------------------------- JSON API
async def _guarded(coro) -> JSONResponse:
    """Every API answer is JSON; bad input is a 4xx, an unexpected failure a 500 without a traceback."""
    try:
        return JSONResponse(await coro)
    except ApiError as e:
        return json_error(e.status, str(e))
    except UserError as e:
        return json_error(400, str(e))
    except Exception as e:  # noqa: BLE001 - the traceback goes to the server log, never to the client
        log.exception("unexpected error in %s", getattr(coro, "__name__", "request"))
        return json_error(500, f"internal error ({type(e).__name__}); see the server log")


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
            return json_error(405, f"use POST for /api/{rest}")
        return json_error(404, f"no API route /api/{rest}; routes are /api/draw, /api/caption, /api/health")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request, exc):
        return json_error(exc.status_code, exc.detail)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request, exc):
        return json_error(422, "invalid request")

    @app.exception_handler(Exception)
    async def any_error(request, exc):
        log.error("unexpected %s: %s", type(exc).__name__, exc)
        return json_error(500, f"internal error ({type(exc).__name__}); see the server log")






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
