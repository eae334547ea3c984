"""`make demo`: runs both directions on the embedded offline default models and prints where every output is.

image -> text: captions a few fashion-scenes test images (generated deterministically, never seen in training)
with the default captioner "caption-fashion", and draws one attention map per generated word.
text -> image: draws a handful of prompts with the default text -> image model (when this install ships one),
as a grid PNG plus a per-token GIF.

Everything is offline and written under outputs/demo/ (or --out). Takes well under two minutes on a CPU.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from modalbridge.errors import script_main

ROOT = Path(__file__).resolve().parent.parent
SCENES = [1, 6, 10, 2]  # fashion-scenes test indices: one, two, three and four items
# The default text -> image model draws the ten Fashion-MNIST classes.
PROMPTS = ["a long summer dress", "white running sneakers", "a leather handbag", "a warm winter coat",
           "a pair of jeans", "ankle boots with a heel", "a striped shirt with buttons", "a knitted pullover",
           "sandals with thin straps", "a plain white t-shirt"]  # one per class: coat, shirt and pullover apart


def caption_demo(out: Path) -> list[Path]:
    from modalbridge.captioning import fashion_scenes
    from modalbridge.captioning.pipeline import load_captioner
    from modalbridge.files import atomic_write_bytes, write_json
    from modalbridge.render import save_attention_maps

    t0 = time.perf_counter()
    cap = load_captioner(None)  # the embedded default
    scenes = [fashion_scenes.make_scene("test", i) for i in SCENES]
    images = [fashion_scenes.render(s) for s in scenes]
    results = cap.caption(images, beam=3)
    written, report = [], []
    for scene, image, res in zip(scenes, images, results, strict=True):
        stem = scene.image_id
        path = out / "captions" / f"{stem}.png"
        atomic_write_bytes(path, fashion_scenes.png_bytes(image))
        maps = save_attention_maps(image, res["words"], res["attention"], out / "captions" / "attention", stem)
        f1 = fashion_scenes.class_mention_f1([res["caption"]], [scene.items])["f1"]
        print(f"  {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}: {res['caption']!r}"
              f"  (class-mention F1 {f1:.2f}; a reference: {scene.captions[0]!r})")
        report.append({"image": str(path), "caption": res["caption"], "logprob": res["logprob"],
                       "references": scene.captions, "attention_maps": [str(m) for m in maps]})
        written += [path, *maps]
    write_json(out / "captions" / "captions.json", report)
    print(f"  attention maps (one per word): {out / 'captions' / 'attention'}/  ({len(written) - len(scenes)} PNGs)")
    print(f"  summary: {out / 'captions' / 'captions.json'}   [{time.perf_counter() - t0:.1f} s]")
    return written


def t2i_demo(out: Path) -> None:
    try:
        from modalbridge.t2i import pipeline as t2i
    except ImportError:
        print("  skipped: this install has no text -> image pipeline (modalbridge.t2i.pipeline)")
        return
    from modalbridge import assets, render
    from modalbridge.errors import UserError
    from modalbridge.files import atomic_write_bytes, write_json

    default = getattr(t2i, "DEFAULT_MODEL", "t2i-fashion")
    if assets.embedded(default) is None:  # never reach for the network in the demo
        print(f"  skipped: the default text -> image model '{default}' is not shipped in this install yet "
              f"(expected in {assets.WEIGHTS_DIR / default})")
        return
    t0 = time.perf_counter()
    try:
        pipe = t2i.load_drawer(None)  # the embedded default
    except UserError as e:  # e.g. the default text -> image model is not shipped in this install yet
        print(f"  skipped: the default text -> image model is not available ({e})")
        return
    draw_dir = out / "draw"
    rows, records = [], []
    for prompt in PROMPTS:
        d = pipe.draw(prompt, n=4, seed=0)
        rows.extend(render.enlarge(im) for im in d.images[:4])
        records.append({"text": prompt, "classes": d.classes[:3]})
        print(f"  {prompt!r} -> {d.classes[0]['label']} ({d.classes[0]['score']:.2f})")
    grid_path = draw_dir / "prompts_grid.png"
    atomic_write_bytes(grid_path, render.png_bytes(render.grid(rows, ncol=4)))
    frames = pipe.per_token(PROMPTS[0], seed=0)
    per_token = render.save_per_token(PROMPTS[0], 0, frames, draw_dir / "per_token")
    write_json(draw_dir / "drawings.json", {"prompts": records, "grid": str(grid_path), "per_token": per_token})
    print(f"  grid ({len(PROMPTS)} prompts x 4 seeds, one row per prompt): {grid_path}")
    print(f"  per-word images of {PROMPTS[0]!r} as a GIF: {per_token['gif']}")
    print(f"  summary: {draw_dir / 'drawings.json'}   [{time.perf_counter() - t0:.1f} s]")


IMAGENET_PROMPTS = ["I love my cat", "a passenger jet taking off from the runway", "a dog and a cat on a sofa",
                    "the yellow vehicle that takes children to school", "a black and white bear chewing bamboo"]


def classify_demo(out: Path) -> None:
    """text -> ImageNet classes with the embedded resolver (no generator: BigGAN weights are not shipped)."""
    from modalbridge import assets
    from modalbridge.files import write_json
    from modalbridge.t2i.classify import load_classifier

    if assets.embedded("t2i-imagenet") is None:
        print("  skipped: t2i-imagenet is not shipped in this install")
        return
    records = load_classifier("t2i-imagenet").classify_many(IMAGENET_PROMPTS)
    for r in records:
        objects = "".join(f"; {o['text']!r} -> {o['classes'][0]['label']}" for o in r["objects"])
        print(f"  {r['text']!r} -> {r['classes'][0]['label']} ({r['classes'][0]['score']:.2f}){objects}")
    write_json(out / "classify.json", records)
    print(f"  summary: {out / 'classify.json'}  (draw them with --generator biggan-deep-128|256|512 or a directory)")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(ROOT / "outputs" / "demo"))
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    from modalbridge.errors import UserError

    status = 0
    print("image -> text (default captioner 'caption-fashion'):")
    try:
        caption_demo(out)
    except UserError as e:
        print(f"  error: {e}", file=sys.stderr)
        status = 1
    print("text -> image (default text -> image model):")
    t2i_demo(out)
    print("text -> ImageNet classes (t2i-imagenet):")
    classify_demo(out)
    print(f"all demo outputs: {out}")
    return status


if __name__ == "__main__":
    script_main(main)
