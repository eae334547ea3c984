"""The Gradio UI in a real browser: Debian chromium, headless, driven by Playwright, against a loopback server.

Screenshots go to test-artifacts/ (git-ignored). Every request the page makes to another host is blocked and
recorded: the demo must work offline.
"""

from __future__ import annotations

import base64
import io
import os
from pathlib import Path

import pytest
from PIL import Image

from modalbridge.app import server as srv
from modalbridge.errors import UserError

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"{CHROMIUM} is missing (Debian package 'chromium')"),
    pytest.mark.usefixtures("one_torch_thread"),
]
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


@pytest.fixture(scope="module")
def pipelines(tmp_path_factory):
    from test_app_api import tiny_pipelines

    return tiny_pipelines(tmp_path_factory.mktemp("models"))


class Recording:
    """Wraps the captioner and records the beam of every call the server makes."""

    def __init__(self, inner):
        self.inner, self.beams = inner, []

    def caption(self, images, **kw):
        self.beams.append(kw.get("beam"))
        return self.inner.caption(images, **kw)


@pytest.fixture(scope="module")
def served(pipelines):
    limits = srv.Limits(max_images=4, max_beam=5)

    def loader(model, generator):  # stands in for load_drawer: t2i-imagenet needs a generator
        if generator is None:
            raise UserError(f"the resolver in {model} has no generator of its own; pass --generator ...")
        return pipelines[0]

    app = srv.build_app(pipelines[0], Recording(pipelines[1]), limits, srv.DrawChoices(loader=loader))
    with srv.private_upload_dir() as upload_dir, srv.running(app) as url:
        yield url, upload_dir, app.state.services.captioner


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(browser, served):
    url = served[0]
    external: list[str] = []
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.set_default_timeout(30_000)

    def only_loopback(route):
        if route.request.url.startswith(url) or route.request.url.startswith(("data:", "blob:")):
            route.continue_()
        else:
            external.append(route.request.url)
            route.abort()

    page.route("**/*", only_loopback)
    page.goto(url)
    yield page
    page.close()
    assert external == [], f"the page tried to reach other hosts: {external[:3]}"


def test_draw_tab_shows_images_and_top5_classes(page, pipelines):
    ARTIFACTS.mkdir(exist_ok=True)
    page.locator("#draw-button").click()  # no text yet: a readable error, not a traceback
    page.get_by_text("'text' must be a non-empty string").first.wait_for()
    page.locator("#draw-text textarea").fill("a red shirt")
    page.locator("#draw-n input[type=number]").fill("3")
    page.locator("#draw-n input[type=number]").press("Enter")
    page.locator("#draw-slideshow input[type=checkbox]").check()
    page.locator("#draw-button").click()
    # Three decoded images (an <img> that failed to load has naturalWidth 0 and would never pass).
    page.wait_for_function(
        "() => { const ims = [...document.querySelectorAll('#draw-images img')];"
        " return ims.length === 3 && ims.every(im => im.complete && im.naturalWidth > 0); }"
    )
    want = pipelines[0].draw("a red shirt", n=3, seed=None, truncation=0.5).classes
    classes = page.locator("#draw-classes")
    classes.get_by_text(want[-1]["label"]).first.wait_for()
    text = classes.inner_text()
    assert all(f"{c['label']} ({c['wnid']})" in text for c in want)
    # The per-word slideshow: an animated GIF with one frame per word ("a", "red", "shirt").
    gif = page.locator("#draw-gif img")
    gif.wait_for()
    src = gif.get_attribute("src")
    assert src.startswith("data:image/gif;base64,")
    frames = Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1])))
    assert frames.n_frames == 3
    page.screenshot(path=str(ARTIFACTS / "app-draw.png"), full_page=True)
    # Another model without a generator: a readable error toast, not a crash.
    page.locator("#draw-model input").click()
    page.get_by_role("option", name="t2i-imagenet").click()
    page.locator("#draw-button").click()
    page.get_by_text("has no generator of its own").first.wait_for()


def test_caption_tab_captions_an_upload_and_deletes_it(page, pipelines, served, tmp_path):
    _, upload_dir, recording = served
    ARTIFACTS.mkdir(exist_ok=True)
    picture = tmp_path / "upload.png"
    Image.new("RGB", (64, 48), (20, 60, 200)).save(picture)
    image = Image.open(picture).convert("RGB")
    page.get_by_role("tab", name="Caption").click()
    page.locator("#caption-image input[type=file]").set_input_files(str(picture))
    page.wait_for_function("document.querySelector('#caption-text textarea')?.value.length > 0")
    assert page.locator("#caption-text textarea").input_value() == pipelines[1].caption([image], beam=3)[0]["caption"]
    assert float(page.locator("#caption-logprob textarea").input_value()) < 0
    heat_maps = page.locator("#caption-attention img")
    heat_maps.first.wait_for()
    assert heat_maps.count() >= 1
    assert not list(upload_dir.rglob("upload*.png")), "the upload should be deleted once it is in memory"
    page.screenshot(path=str(ARTIFACTS / "app-caption.png"), full_page=True)
    # Captioning again with another beam uses the in-memory copy, not the deleted file.
    calls = len(recording.beams)
    page.locator("#caption-beam input[type=number]").fill("1")
    page.locator("#caption-beam input[type=number]").press("Enter")
    page.locator("#caption-button").click()
    want = f"{pipelines[1].caption([image], beam=1)[0]['logprob']:.3f}"
    page.wait_for_function("want => document.querySelector('#caption-logprob textarea')?.value === want", arg=want)
    assert recording.beams[calls:] == [1]
