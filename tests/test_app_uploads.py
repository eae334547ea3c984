"""Gradio's upload route behind ``UploadGuard``: images only, capped, deleted after use (issue 9).

Real HTTP on 127.0.0.1 against ``build_app`` without models (the guard sits in front of Gradio, not the pipelines).
"""

from __future__ import annotations

import io
import os
import time

import pytest
import requests
from PIL import Image

from modalbridge.app import server as srv

LIMITS = srv.Limits(max_upload_bytes=200_000, max_pixels=300 * 300, max_kept_uploads=2, upload_ttl=1.0)


def png(size=(40, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (10, 200, 30)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def served():
    with srv.private_upload_dir() as upload_dir, srv.running(srv.build_app(None, None, LIMITS)) as url:
        yield url, upload_dir


def upload(url, *files):
    return requests.post(f"{url}/gradio_api/upload", files=[("files", f) for f in files], timeout=30)


def stored(upload_dir):
    return [p for p in upload_dir.rglob("*") if p.is_file()]


@pytest.mark.parametrize(
    "files, status",
    [
        ([("noise.png", os.urandom(100_000), "image/png")], 415),  # random bytes named .png
        ([("notes.txt", b"hello " * 1000, "text/plain")], 415),
        ([("page.svg", b"<svg xmlns='http://www.w3.org/2000/svg'/>", "image/svg+xml")], 415),
        ([("cut.png", png()[:-20], "image/png")], 415),  # truncated: PNG verify fails on the missing IEND
        ([("big.bin", os.urandom(2**20), "image/png")], 413),  # 1 MiB of noise: over the byte cap
        ([("wide.png", png((400, 400)), "image/png")], 413),  # few bytes, too many pixels
        ([("a.png", png(), "image/png"), ("b.png", png((8, 8)), "image/png")], 400),  # one file per request
    ],
)
def test_upload_route_refuses_non_images_oversize_and_several_files(served, files, status):
    url, upload_dir = served
    r = upload(url, *files)
    assert r.status_code == status, r.text
    assert set(r.json()) == {"error"}
    assert stored(upload_dir) == []  # nothing was written


def test_upload_route_keeps_an_image_briefly_and_caps_the_count(served):
    url, upload_dir = served
    r = upload(url, ("a.png", png(), "image/png"))
    assert r.status_code == 200, r.text
    (path,) = r.json()
    assert os.path.exists(path) and path.startswith(str(upload_dir))
    assert requests.get(f"{url}/gradio_api/file={path}", timeout=10).status_code == 200
    assert upload(url, ("b.png", png((20, 20)), "image/png")).status_code == 200
    busy = upload(url, ("c.png", png((21, 20)), "image/png"))  # max_kept_uploads = 2
    assert busy.status_code == 503 and "waiting" in busy.json()["error"]
    deadline = time.monotonic() + 10
    while stored(upload_dir) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert stored(upload_dir) == []  # deleted after upload_ttl (1 s here, 120 s by default)
    assert requests.get(f"{url}/gradio_api/file={path}", timeout=10).status_code in (403, 404)
    assert upload(url, ("c.png", png((21, 20)), "image/png")).status_code == 200  # room again


def test_other_gradio_posts_are_capped_and_recordings_refused(served):
    url, _ = served
    r = requests.post(f"{url}/gradio_api/queue/join", data=b"x" * (LIMITS.max_json_bytes + 1), timeout=10)
    assert r.status_code == 413 and set(r.json()) == {"error"}
    r = requests.post(f"{url}/gradio_api/process_recording", files={"video": ("v.mp4", b"0" * 10)}, timeout=10)
    assert r.status_code == 404
    assert requests.get(f"{url}/gradio_api/info", timeout=10).status_code == 200  # GETs pass through
