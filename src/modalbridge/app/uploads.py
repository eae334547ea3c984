"""Uploads: the multipart parser of the JSON API and ``UploadGuard``, the middleware in front of Gradio's upload
route (images only, capped, deleted after use), and the private folder Gradio writes uploads into while serving."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import anyio
from fastapi.responses import JSONResponse
from python_multipart.multipart import MultipartParseError, MultipartParser, parse_options_header

from modalbridge.app.services import ApiError, Limits, check_upload_image


def json_error(status: int, message: str) -> JSONResponse:
    """Every error the web app sends: ``{"error": "<one line>"}`` (503s say when to retry)."""
    headers = {"Retry-After": "1"} if status == 503 else None
    return JSONResponse({"error": " ".join(str(message).split()) or "error"}, status_code=status, headers=headers)

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
            return await json_error(404, "this server does not take recordings")(scope, receive, send)
        upload = path == GRADIO_UPLOAD
        lim = self.limits
        cap = lim.max_upload_bytes + 16 * 2**10 if upload else lim.max_json_bytes  # + multipart framing
        body = await _read_asgi_body(scope, receive, cap)
        if body is None:
            return await json_error(413, f"the request is larger than the limit of {cap} bytes")(scope, receive, send)
        if upload:
            try:
                await self._check_upload(scope, body)
            except ApiError as e:
                return await json_error(e.status, str(e))(scope, receive, send)
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
