"""Reliability fuzzing (issue 9): texts for ``draw`` / ``classify`` and ``POST /api/draw``, and a malformed-image
corpus for ``caption``'s image loading and ``POST /api/caption``.

Every input either works or gives the documented answer: a one-line ``UserError`` from the library, a 4xx JSON
``{"error"}`` from the API. Never another exception, a 500 or a traceback.

Sizes: ``MODALBRIDGE_FUZZ_EXAMPLES`` examples per fuzz test (default 100, so 200 texts in a normal run; the full run
in the README uses 10000) and ``MODALBRIDGE_FUZZ_IMAGES`` random mutations of valid images on top of the fixed
corpus of 29 (default 20; the full run 50).
The models are the tiny random ones of ``test_app_api`` (BERT hidden 32, 16 px BigGAN, ResNet + SAT), so the
cost is the code around them, which is what is under test.
"""

from __future__ import annotations

import io
import json
import os
import random
import struct
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from modalbridge.app import server as srv
from modalbridge.errors import UserError
from modalbridge.vision.io import load_image

EXAMPLES = int(os.environ.get("MODALBRIDGE_FUZZ_EXAMPLES", "100"))
MUTATIONS = int(os.environ.get("MODALBRIDGE_FUZZ_IMAGES", "20"))
LIMITS = srv.Limits(max_upload_bytes=400_000, max_pixels=200_000, max_text_chars=300, max_images=2, max_beam=3)
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                       HealthCheck.data_too_large])

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def pipelines(tmp_path_factory):
    from test_app_api import tiny_pipelines

    return tiny_pipelines(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="module")
def client(pipelines):
    from fastapi.testclient import TestClient

    with TestClient(srv.build_app(*pipelines, LIMITS), raise_server_exceptions=True) as c:
        yield c


def one_line_user_error(e: UserError) -> None:
    message = str(e)
    assert message.strip() and "\n" not in message and "Traceback" not in message, repr(message)


def assert_json_answer(r, allowed: tuple[int, ...]) -> dict:
    assert r.status_code in allowed, (r.status_code, r.text[:300])
    assert "Traceback" not in r.text
    body = r.json()
    if r.status_code >= 400:
        assert set(body) == {"error"} and body["error"] and "\n" not in body["error"], body
    return body


# ------------------------------------------------------------------------------------------------ texts
# Any code point, lone surrogates included (JSON can carry them; Python strings hold them), plus texts built
# from the separators, class words and control characters the text code treats specially.
ANY_CHAR = st.characters(min_codepoint=0, max_codepoint=0x10FFFF, exclude_categories=())
WORDS = st.sampled_from(["a", "an", "the", "red", "and", "with", "on", ",", ";", "&", "+", "vs", "then", "shirt",
                         "dress", "bag", "hat", "boot", "\x00", "\u200b", "\ud800", "\n", "\t", "\u2028", "🐈",
                         "ß", "İ", "ﬁ", "\u0301", "x" * 60])
TEXTS = st.one_of(
    st.text(ANY_CHAR, max_size=80),
    st.lists(WORDS, max_size=40).map(" ".join),
    st.text(ANY_CHAR, min_size=290, max_size=400),  # around the API's 300-character cap and the encoder's length
)


@FUZZ
@given(text=TEXTS, seed=st.one_of(st.none(), st.integers(-(2**70), 2**70)),
       truncation=st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-2, 2)))
def test_fuzz_library_draw_and_classify(pipelines, text, seed, truncation):
    drawer = pipelines[0]
    try:
        record = drawer.classifier.classify(text)
    except UserError as e:
        one_line_user_error(e)
    else:
        assert len(record["classes"]) == 5 and json.dumps(record, ensure_ascii=False).encode("utf-8")
    try:
        drawing = drawer.draw(text, n=1, seed=seed, truncation=truncation)
    except UserError as e:
        one_line_user_error(e)
    else:
        assert len(drawing.images) == max(1, len(drawing.objects)) and drawing.text.encode("utf-8")


JSON_VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(), st.text(ANY_CHAR, max_size=10)),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=5), inner, max_size=3)),
    max_leaves=8,
)
PAYLOADS = st.one_of(
    st.fixed_dictionaries({"text": TEXTS}, optional={"n": JSON_VALUES | st.integers(0, 3), "seed": JSON_VALUES,
                                                     "truncation": JSON_VALUES | st.floats(0, 1.5),
                                                     "colour": JSON_VALUES}),
    JSON_VALUES,
)


def _encode(payload) -> bytes:
    # json.dumps writes lone surrogates as \ud800 escapes and NaN/Infinity as bare words: both reach the server.
    return json.dumps(payload).encode("ascii")


@FUZZ
@given(body=st.one_of(PAYLOADS.map(_encode), st.binary(max_size=200)))
def test_fuzz_api_draw_answers_200_or_one_json_4xx(client, body):
    r = client.post("/api/draw", content=body, headers={"Content-Type": "application/json"})
    out = assert_json_answer(r, (200, 400, 413))
    if r.status_code == 200:
        assert set(out) == {"images", "classes"} and out["images"]


# ---------------------------------------------------------------------------------------- image corpus
def _save(image: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _bomb_png(width: int, height: int) -> bytes:
    """A valid PNG header claiming ``width`` x ``height`` with one tiny compressed row: a decompression bomb."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grayscale
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 64))
            + _png_chunk(b"IEND", b""))


def _photo(size=(48, 32)) -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8), "RGB")


def _exif_rotated_jpeg() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    return _save(_photo((40, 20)), "JPEG", exif=exif.tobytes())


def _palette_alpha_png() -> bytes:
    im = _photo((24, 24)).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    im.info["transparency"] = 0
    return _save(im, "PNG", transparency=0)


def _animated_gif() -> bytes:
    frames = [Image.new("RGB", (20, 20), c) for c in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    return _save(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)


def corpus() -> list[tuple[str, bytes, str]]:
    """(name, bytes, expected): "ok" must caption, "error" must be refused (UserError / 4xx), "any" either."""
    png, jpeg = _save(_photo(), "PNG"), _save(_photo(), "JPEG")
    return [
        ("empty", b"", "error"),
        ("png-signature-only", png[:8], "error"),
        ("png-truncated-half", png[: len(png) // 2], "error"),
        ("png-truncated-before-iend", png[:-12], "any"),  # every pixel is there; only the end marker is missing
        ("png-bad-crc", png[:40] + bytes([png[40] ^ 0xFF]) + png[41:], "error"),
        ("jpeg-truncated-half", jpeg[: len(jpeg) // 2], "error"),
        ("jpeg-header-only", jpeg[:200], "error"),
        ("gif-header-only", b"GIF89a\x10\x00\x10\x00", "error"),
        ("random-bytes", os.urandom(5000), "error"),
        ("text", b"a red dress\n" * 10, "error"),
        ("svg", b"<svg xmlns='http://www.w3.org/2000/svg' width='10' height='10'/>", "error"),
        ("bomb-png-100000x100000", _bomb_png(100_000, 100_000), "error"),
        ("bomb-png-30000x30000", _bomb_png(30_000, 30_000), "error"),
        ("bomb-png-over-the-cap", _bomb_png(1000, 1000), "error"),  # 1 MP > the test's 200,000-pixel cap
        ("wide-20000x1", _save(Image.new("L", (20000, 1), 128), "PNG"), "ok"),
        ("tall-1x20000", _save(Image.new("L", (1, 20000), 128), "PNG"), "ok"),
        ("tiny-1x1", _save(Image.new("RGB", (1, 1), (1, 2, 3)), "PNG"), "ok"),
        ("cmyk-jpeg", _save(_photo().convert("CMYK"), "JPEG"), "ok"),
        ("png-16-bit", _save(Image.fromarray(np.arange(0, 65536, 64, dtype=np.uint16).reshape(32, 32)), "PNG"),
         "ok"),
        ("palette-alpha-png", _palette_alpha_png(), "ok"),
        ("la-png", _save(Image.new("LA", (16, 16), (100, 50)), "PNG"), "ok"),
        ("rgba-png", _save(Image.new("RGBA", (16, 16), (1, 2, 3, 0)), "PNG"), "ok"),
        ("animated-gif", _animated_gif(), "ok"),
        ("exif-rotated-jpeg", _exif_rotated_jpeg(), "ok"),
        ("broken-exif-jpeg", _save(_photo(), "JPEG", exif=b"Exif\x00\x00MM\x00*garbage"), "ok"),
        ("float-tiff", _save(Image.fromarray(np.linspace(0, 1, 256, dtype=np.float32).reshape(16, 16)), "TIFF"),
         "ok"),
        ("bmp", _save(_photo(), "BMP"), "ok"),
        ("webp", _save(_photo(), "WEBP"), "ok"),
        ("one-bit", _save(Image.new("1", (16, 16), 1), "PNG"), "ok"),
    ]


def mutations(n: int) -> list[tuple[str, bytes, str]]:
    """Random damage to valid images: truncation at a random byte, a random byte flipped, a random run zeroed."""
    rng = random.Random(1234)
    bases = [_save(_photo(), "PNG"), _save(_photo(), "JPEG"), _animated_gif(), _save(_photo(), "WEBP"),
             _save(_photo(), "BMP"), _exif_rotated_jpeg()]
    out = []
    for i in range(n):
        data = bytearray(rng.choice(bases))
        kind = rng.choice(["cut", "flip", "zero"])
        at = rng.randrange(len(data))
        if kind == "cut":
            data = data[:at]
        elif kind == "flip":
            data[at] ^= 1 << rng.randrange(8)
        else:
            end = min(len(data), at + rng.randrange(1, 64))
            data[at:end] = bytes(end - at)
        out.append((f"mutation-{i}-{kind}@{at}", bytes(data), "any"))
    return out


CORPUS = corpus() + mutations(MUTATIONS)


def test_corpus_covers_what_issue_9_names():
    names = " ".join(name for name, _, _ in CORPUS)
    for kind in ("empty", "truncated", "bomb", "20000x1", "cmyk", "16-bit", "palette-alpha", "animated", "exif"):
        assert kind in names


@pytest.mark.parametrize("name, data, expected", CORPUS, ids=[c[0] for c in CORPUS])
def test_malformed_images_load_or_give_one_error(pipelines, client, name, data, expected):
    # caption's image loading, with the API's pixel cap
    try:
        image = load_image(data, max_pixels=LIMITS.max_pixels, name=name)
    except UserError as e:
        one_line_user_error(e)
        loaded = False
    else:
        assert image.mode == "RGB" and min(image.size) >= 1
        loaded = True
    if expected != "any":
        assert loaded == (expected == "ok"), name
    if name == "exif-rotated-jpeg":
        assert image.size == (20, 40)  # upright: orientation 6 applied
    if loaded:
        result = pipelines[1].caption([image], beam=1)[0]
        assert isinstance(result["caption"], str) and "\n" not in result["caption"]
    # the same bytes through the JSON API: the same verdict, as 200 or one 4xx JSON error
    r = client.post("/api/caption", files={"image": (f"{name}.bin", data, "application/octet-stream")},
                    data={"beam": "1"})
    assert_json_answer(r, (200, 400, 413))
    assert (r.status_code == 200) == loaded, (name, r.status_code, r.text[:200])
    if name.startswith("bomb"):
        assert r.status_code == 413
