"""The Gradio UI of ``modalbridge serve``: a Draw tab and a Caption tab over the server's ``Services``.

The Draw tab shows the top-5 classes of the text and, when the server offers ``DrawChoices``, lets the user pick the
text -> class model and the generator from the server's allow-list (a pair that cannot load is an error toast).

Both tabs call the same ``Services`` methods as the JSON API, so they share its gates (bounded queues) and limits.
Uploads: Gradio writes each one into its upload folder (``serve`` makes that a private temp dir); the Caption tab
reads it into memory (a per-session ``gr.State``), deletes the file at once, and sends everything derived from it
(heat maps) inline as ``data:`` URIs, so nothing of the user's image stays in Gradio's cache.
"""

from __future__ import annotations

import base64
import contextlib
import html
import logging
from pathlib import Path

import anyio
import gradio as gr
from PIL import Image

from modalbridge.app.services import ApiError, Limits, Services, check_draw_args, png_base64
from modalbridge.errors import UserError

log = logging.getLogger("modalbridge.app")


def figures_html(items: list[tuple[Image.Image, str]], css_class: str = "mb-figures") -> str:
    """Images with captions as inline ``data:`` URIs: derived from an upload, they never touch Gradio's cache."""
    figs = "".join(
        f'<figure style="margin:0"><img alt="{html.escape(cap)}" title="{html.escape(cap)}" style="max-width:160px" '
        f'src="data:image/png;base64,{png_base64(im)}"></figure>'
        for im, cap in items
    )
    return f'<div class="{css_class}" style="display:flex;flex-wrap:wrap;gap:8px">{figs}</div>'


def drawing_outputs(drawing, frames: list | None) -> tuple[list, dict, str]:
    """A ``Drawing`` (and ``per_token`` frames) -> gallery items, top-5 label dict, slideshow GIF as inline HTML.

    The generators' images can be small (32 px for Fashion-MNIST): previews are enlarged by an integer factor.
    """
    from modalbridge.render import captioned, enlarge, gif_bytes

    objects = getattr(drawing, "objects", None) or []
    names = [o.text for o in objects for _ in o.images] if len(objects) > 1 else [""] * len(drawing.images)
    images = [(enlarge(im, 128), f"{name} #{i + 1}".strip())
              for i, (im, name) in enumerate(zip(drawing.images, names, strict=True))]
    classes = {f"{c['label']} ({c['wnid']})": float(c["score"]) for c in drawing.classes}
    gif = ""
    if frames:
        data = gif_bytes([captioned(enlarge(im, 128), f"{w} -> {c['label']}") for w, im, c in frames], ms=700)
        gif = (f'<p><b>One image per word</b> (seed {drawing.seed})</p><img alt="per-word slideshow" '
               f'src="data:image/gif;base64,{base64.b64encode(data).decode("ascii")}">')
    return images, classes, gif


def attention_html(image: Image.Image, result: dict) -> str:
    """Per-word heat maps (Show, Attend and Tell's soft attention over the image grid), or a note without them."""
    if result.get("attention") is None:
        return "<p>This model has no per-word spatial attention to show.</p>"
    from modalbridge.render import attention_overlay

    words = result.get("words") or str(result["caption"]).split()
    pairs = zip(words, result["attention"], strict=False)
    return figures_html([(attention_overlay(image, word, att, size=160), word) for word, att in pairs])


def _take_upload(path: str | None, limits: Limits) -> bytes:
    """Read a Gradio upload into memory and delete the file (and its folder) from Gradio's upload directory."""
    if not path:
        raise gr.Error("Upload an image first.")
    file = Path(path)
    try:
        if file.stat().st_size > limits.max_upload_bytes:
            raise gr.Error(f"The image is larger than {limits.max_upload_bytes} bytes.")
        return file.read_bytes()
    except FileNotFoundError:
        raise gr.Error("The upload has expired; upload the image again.") from None
    finally:
        root = Path(gr.utils.get_upload_folder()).resolve()
        if file.resolve().is_relative_to(root):
            file.unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                file.parent.rmdir()


def _ui_errors(fn):
    """Bad input and busy queues become a Gradio error toast with the message; anything else a generic one."""

    async def wrapper(*args):
        try:
            return await fn(*args)
        except gr.Error:
            raise
        except (ApiError, UserError) as e:
            raise gr.Error(str(e)) from None
        except Exception as e:  # noqa: BLE001 - the traceback goes to the server log only
            log.exception("unexpected error in the UI")
            raise gr.Error(f"Internal error ({type(e).__name__}); see the server log.") from None

    wrapper.__name__ = fn.__name__
    return wrapper


def build_ui(services: Services) -> gr.Blocks:
    """The two tabs over ``services``; no model is touched while the page is built."""
    lim = services.limits

    choices = services.choices

    @_ui_errors
    async def ui_draw(text, n, seed, truncation, slideshow, model=None, generator=None):
        args = check_draw_args({"text": text or "", "n": int(n), "seed": (seed or "").strip() or None,
                                "truncation": float(truncation), "model": model or None,
                                "generator": generator or None}, lim)
        drawing, frames = await services.draw(args, slideshow=bool(slideshow))
        return await anyio.to_thread.run_sync(drawing_outputs, drawing, frames)

    @_ui_errors
    async def ui_upload(path, beam):
        data = _take_upload(path, lim)
        return (data, *await caption_bytes(data, beam))

    @_ui_errors
    async def ui_caption(data, beam):
        if not data:
            raise gr.Error("Upload an image first.")
        return await caption_bytes(data, beam)

    async def caption_bytes(data: bytes, beam) -> tuple:
        image, result = await services.caption(data, int(beam))
        maps = await anyio.to_thread.run_sync(attention_html, image, result)
        return result["caption"], f"{float(result['logprob']):.3f}", maps

    with gr.Blocks(title="modalbridge", delete_cache=(60, 600)) as demo:
        gr.Markdown("## modalbridge\nSmall learned bridges between frozen pretrained models: "
                    "**text → image** and **image → text**. The same models answer `POST /api/draw` and "
                    "`POST /api/caption`.")
        with gr.Tab("Draw"):
            with gr.Row():
                with gr.Column(scale=1):
                    text = gr.Textbox(label="Text", placeholder="a goldfish in a bowl", max_length=lim.max_text_chars,
                                      elem_id="draw-text")
                    n = gr.Slider(1, lim.max_images, value=min(4, lim.max_images), step=1, label="Images per object",
                                  elem_id="draw-n")
                    seed = gr.Textbox(label="Seed", placeholder="empty: derived from the text", max_length=12,
                                      elem_id="draw-seed")
                    truncation = gr.Slider(0.02, 1.0, value=services.default_truncation(), step=0.02,
                                           label="Truncation (lower: more typical)", elem_id="draw-truncation")
                    slideshow = gr.Checkbox(label="Per-token slideshow (GIF)", elem_id="draw-slideshow")
                    pickers = []
                    if choices is not None:  # names only (the server's allow-list); a bad pair -> an error toast
                        pickers = [
                            gr.Dropdown(choices.models, value=choices.models[0], label="Text -> class model",
                                        elem_id="draw-model"),
                            gr.Dropdown([("the model's own", ""), *choices.generators], value=choices.generator or "",
                                        label="Generator (required for t2i-imagenet)", elem_id="draw-generator"),
                        ]
                    draw_btn = gr.Button("Draw", variant="primary", elem_id="draw-button")
                with gr.Column(scale=2):
                    gallery = gr.Gallery(label="Images", columns=4, height="auto", elem_id="draw-images")
                    classes = gr.Label(label="Top-5 classes", num_top_classes=5, elem_id="draw-classes")
                    gif = gr.HTML(elem_id="draw-gif")
            inputs, outputs = [text, n, seed, truncation, slideshow, *pickers], [gallery, classes, gif]
            draw_btn.click(ui_draw, inputs, outputs, api_visibility="private")
            text.submit(ui_draw, inputs, outputs, api_visibility="private")
        with gr.Tab("Caption"):
            upload_bytes = gr.State(None, time_to_live=600)  # the upload, in memory, for this browser session
            with gr.Row():
                with gr.Column(scale=1):
                    image = gr.Image(label="Image", type="filepath", image_mode=None, sources=["upload", "clipboard"],
                                     elem_id="caption-image")
                    beam = gr.Slider(1, lim.max_beam, value=min(3, lim.max_beam), step=1, label="Beam size",
                                     elem_id="caption-beam")
                    caption_btn = gr.Button("Caption", variant="primary", elem_id="caption-button")
                with gr.Column(scale=2):
                    caption = gr.Textbox(label="Caption", interactive=False, elem_id="caption-text")
                    logprob = gr.Textbox(label="Log-probability", interactive=False, elem_id="caption-logprob")
                    gr.Markdown("**Where the decoder looked, word by word**")
                    heat = gr.HTML(elem_id="caption-attention")
            image.upload(ui_upload, [image, beam], [upload_bytes, caption, logprob, heat], api_visibility="private")
            caption_btn.click(ui_caption, [upload_bytes, beam], [caption, logprob, heat], api_visibility="private")
            image.clear(lambda: (None, "", "", ""), None, [upload_bytes, caption, logprob, heat],
                        api_visibility="private")
    demo.queue(max_size=lim.queue, default_concurrency_limit=lim.workers + 1)
    return demo
