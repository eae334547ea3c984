"""What the web app does, apart from HTTP and the UI: limits, input checks, admission gates and the model services.

``Services`` is the one place where requests meet the pipelines; the JSON API (:mod:`modalbridge.app.server`) and
the Gradio UI (:mod:`modalbridge.app.ui`) both call it, so neither imports the other. Everything here raises
``ApiError`` (an HTTP status and one line) for bad input.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import anyio
from PIL import Image

from modalbridge import threads
from modalbridge.render import png_bytes
from modalbridge.vision.io import load_image


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
def int_field(payload: dict, key: str, default: int | None, lo: int, hi: int) -> int | None:
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
    """The JSON body of /api/draw -> keyword arguments for ``Drawer.draw`` (only those the client gave)."""
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
    args: dict = {"text": text.strip(), "n": int_field(payload, "n", 1, 1, limits.max_images)}
    if payload.get("seed") is not None:
        args["seed"] = int_field(payload, "seed", None, 0, 2**32 - 1)
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
    used only when it equals one of these names. A chosen pair is loaded on first use (``load_drawer`` keeps a
    few loaded) inside the draw gate; a pair that cannot load (e.g. a resolver without a generator, hub weights not
    in the cache offline) is the loader's one-line ``UserError``, i.e. a 400.
    """

    model: str | None = None  # the server's --model-t2i (None: the default of draw)
    generator: str | None = None  # the server's --generator (None: the model's own)
    loader: Callable[[str, str | None], Any] | None = None  # (model, generator) -> pipeline; default load_drawer

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
        from modalbridge.t2i.pipeline import load_drawer

        return load_drawer(model, generator)


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
    return base64.b64encode(png_bytes(image)).decode("ascii")


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

    def default_truncation(self) -> float:
        """The truncation the server's own pipeline draws with when a request leaves it out (the UI's start)."""
        return float(getattr(self.drawer, "default_truncation", None) or 0.5)

    async def draw(self, args: dict, slideshow: bool = False) -> tuple[Any, list | None]:
        """``Drawer.draw(**args)`` and, with ``slideshow``, ``Drawer.per_token`` (same seed and truncation).

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



def load_services(model_t2i: str | None = None, model_caption: str | None = None,
                  generator: str | None = None) -> tuple[Any, Any]:
    """Load both pipelines once (None = the embedded offline defaults; ``generator``: for the text -> image model)."""
    from modalbridge.captioning.pipeline import load_captioner
    from modalbridge.t2i.pipeline import load_drawer

    return load_drawer(model_t2i, generator), load_captioner(model_caption)
