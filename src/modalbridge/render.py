"""Model outputs as pictures and files: PNG/GIF bytes, enlargement, grids, captions on frames, attention heat maps,
and the writers behind ``draw`` and ``caption --attention`` (every file written atomically).

The pipelines (:mod:`modalbridge.t2i.pipeline`, :mod:`modalbridge.captioning.pipeline`) only compute; the CLI, the web
app and the scripts render their results through here.
"""

from __future__ import annotations

import hashlib
import io
import math
import re
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from modalbridge.errors import UserError
from modalbridge.files import atomic_write_bytes


def to_pil(images: torch.Tensor) -> list:
    """(N, C, H, W) in [-1, 1] -> N PIL images (L for one channel, RGB for three)."""
    x = ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()  # (N, H, W, C)
    return [Image.fromarray(a[..., 0], "L") if a.shape[-1] == 1 else Image.fromarray(a, "RGB") for a in x]


def png_bytes(image: Image.Image, **options) -> bytes:
    """The image as PNG file bytes (``options`` go to Pillow's PNG writer, e.g. ``compress_level``)."""
    buf = io.BytesIO()
    image.save(buf, format="PNG", **options)
    return buf.getvalue()


def enlarge(image, min_size: int = 128):
    """Nearest-neighbour upscaling by an integer factor so small (e.g. 32 px) images stay visible."""
    factor = max(1, -(-min_size // max(image.size)))
    return image if factor == 1 else image.resize((image.width * factor, image.height * factor), Image.NEAREST)


def grid(images: list, ncol: int | None = None, pad: int = 2):
    """Images side by side in rows of ``ncol`` (default: all in one row up to 8)."""
    ncol = ncol or min(8, len(images))
    w, h = images[0].size
    nrow = -(-len(images) // ncol)
    canvas = Image.new(images[0].mode, (ncol * (w + pad) + pad, nrow * (h + pad) + pad), 255 if images[0].mode == "L"
                       else (255, 255, 255))
    for i, im in enumerate(images):
        canvas.paste(im, (pad + (i % ncol) * (w + pad), pad + (i // ncol) * (h + pad)))
    return canvas


def captioned(image, caption: str):
    """The image with ``caption`` written on a white band below it (GIF frames of ``per_token``)."""
    image = image.convert("RGB")
    font = ImageFont.load_default()
    band = 16
    canvas = Image.new("RGB", (image.width, image.height + band), (255, 255, 255))
    canvas.paste(image, (0, 0))
    ImageDraw.Draw(canvas).text((3, image.height + 2), caption[: max(4, image.width // 6)], fill=(0, 0, 0), font=font)
    return canvas


def gif_bytes(frames: list, ms: int = 500) -> bytes:
    buf = io.BytesIO()
    frames = [f.convert("RGB") for f in frames]
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=ms, loop=0)
    return buf.getvalue()


def slug(text: str, limit: int = 40) -> str:
    """File-name stem: lowercase ASCII words joined by '-'. When that does not spell ``text`` exactly (other scripts,
    case, punctuation, truncation), 8 hex digits of its hash follow, so different texts never share a file name."""
    s = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:limit].strip("-")
    if s.replace("-", " ") == text:
        return s
    return f"{s or 'drawing'}-{hashlib.sha256(text.encode('utf-8', 'surrogatepass')).hexdigest()[:8]}"


def _write_png(path: Path, image, min_size: int) -> str:
    atomic_write_bytes(path, png_bytes(enlarge(image, min_size)))
    return str(path)


def save_drawing(d, out: str | Path, gif: bool = False, min_size: int = 128) -> dict:
    """Write a drawing's PNGs (+ a grid PNG when there are several, + a GIF with ``gif``) atomically into ``out``.

    Images smaller than ``min_size`` pixels are enlarged by an integer factor (nearest neighbour).
    Returns the JSON record ``{"text", "images", "classes", "seed", "truncation", "objects", "grid"?, "gif"?}``.
    """
    out = Path(out)
    stem = f"{slug(d.text)}-{d.seed}"
    record = {"text": d.text, "images": [_write_png(out / f"{stem}-{i}.png", im, min_size)
                                          for i, im in enumerate(d.images)],
              "classes": d.classes, "seed": d.seed, "truncation": d.truncation,
              "objects": [{"text": o.text, "classes": o.classes[:1]} for o in d.objects]}
    if len(d.images) > 1:
        ncol = len(d.objects[0].images) if len(d.objects) > 1 else None
        record["grid"] = _write_png(out / f"{stem}-grid.png", grid([enlarge(im, min_size) for im in d.images], ncol), 0)
    if gif:
        path = out / f"{stem}.gif"
        atomic_write_bytes(path, gif_bytes([enlarge(im, min_size) for im in d.images]))
        record["gif"] = str(path)
    return record


def save_per_token(text: str, seed: int, frames: list[tuple[str, object, dict]], out: str | Path,
                   min_size: int = 128) -> dict:
    """Per-word PNGs and the captioned slideshow GIF (``word -> class``); returns the JSON record."""
    out = Path(out)
    stem = f"{slug(text)}-{seed}"
    images = [_write_png(out / f"{stem}-word-{j}.png", im, min_size) for j, (_, im, _) in enumerate(frames)]
    gif_path = out / f"{stem}-words.gif"
    atomic_write_bytes(gif_path, gif_bytes([captioned(enlarge(im, min_size), f"{w} -> {c['label']}")
                                                 for w, im, c in frames], ms=700))
    return {"text": text, "images": images, "gif": str(gif_path), "seed": seed,
            "words": [{"word": w, **c} for w, _, c in frames]}


def save_frames(text: str, to: str, seed: int, frames: list, out: str | Path, gif: bool = False,
                min_size: int = 128) -> dict:
    """Interpolation frames as PNGs (+ GIF); returns the JSON record."""
    out = Path(out)
    stem = f"{slug(text, 24)}-to-{slug(to, 24)}-{seed}"
    record = {"text": text, "to": to, "seed": seed,
              "images": [_write_png(out / f"{stem}-{k}.png", im, min_size) for k, im in enumerate(frames)]}
    if gif:
        path = out / f"{stem}.gif"
        atomic_write_bytes(path, gif_bytes([enlarge(im, min_size) for im in frames], ms=250))
        record["gif"] = str(path)
    return record


# --------------------------------------------------------------------------------------------- attention
def _heat_rgb(a: np.ndarray) -> np.ndarray:
    """``(H, W)`` in [0, 1] -> ``(H, W, 3)`` in [0, 1]: a black-red-yellow-white ramp."""
    return np.stack([np.clip(3 * a, 0, 1), np.clip(3 * a - 1, 0, 1), np.clip(3 * a - 2, 0, 1)], -1)


def attention_overlay(image: Image.Image, word: str, attention, size: int = 256) -> Image.Image:
    """One word's attention ``(P,)`` over a square grid, upsampled over the image, with the word as the title."""
    a = torch.as_tensor(attention, dtype=torch.float32).reshape(-1)  # (P,)
    side = math.isqrt(a.numel())
    if side * side != a.numel():
        raise UserError(f"attention over {a.numel()} regions is not a square grid; cannot draw it")
    base = image.convert("RGB").resize((size, size), Image.Resampling.BICUBIC)
    grid = a.view(1, 1, side, side)
    heat = torch.nn.functional.interpolate(grid, size=(size, size), mode="bilinear", align_corners=False)[0, 0]
    heat = (heat - heat.min()) / (heat.max() - heat.min() + 1e-8)  # (S, S) in [0, 1]
    rgb = np.asarray(base, dtype=np.float32) / 255  # (S, S, 3)
    mix = 0.45 * rgb + 0.55 * _heat_rgb(heat.numpy()) * (0.3 + 0.7 * heat.numpy()[..., None])
    title_h = 28
    canvas = Image.new("RGB", (size, size + title_h), (255, 255, 255))
    canvas.paste(Image.fromarray((mix.clip(0, 1) * 255).astype(np.uint8)), (0, title_h))
    draw = ImageDraw.Draw(canvas)
    try:
        font = ImageFont.load_default(size=18)
    except TypeError:  # Pillow < 10.1
        font = ImageFont.load_default()
    w = draw.textlength(word, font=font)
    draw.text(((size - w) / 2, 4), word, fill=(0, 0, 0), font=font)
    return canvas


def save_attention_maps(image: Image.Image, words: list[str], attention, out_dir: str | Path, stem: str) -> list[Path]:
    """Write ``<out_dir>/<stem>_<NN>_<word>.png`` per word; returns the paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, (word, att) in enumerate(zip(words, attention, strict=False)):
        safe = "".join(ch if ch.isalnum() else "_" for ch in word)[:32] or "tok"
        path = out_dir / f"{stem}_{i:02d}_{safe}.png"
        atomic_write_bytes(path, png_bytes(attention_overlay(image, word, att)))
        paths.append(path)
    return paths
