"""Measure the fashion-scenes captioner on the test split and write docs/results/caption_fashion.json.

    python scripts/eval_caption_fashion.py [--model DIR] [--data data/fashion_scenes] [--beams 1 3 5]

Scores BLEU-1..4, METEOR, ROUGE-L, CIDEr-D (``modalbridge.metrics.score``) and class-mention F1
(``fashion_scenes.class_mention_f1``) for each beam size, decoding cached EfficientNet-Lite0 features of the
test images (the same features ``modalbridge caption`` computes on the fly). Also draws the attention figures
docs/images/caption_attention_{1,2}.png. ``--model`` omitted = the embedded default ``caption-fashion``.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch
from PIL import Image

from modalbridge import files
from modalbridge.captioning import fashion_scenes
from modalbridge.captioning.pipeline import decode_features, load_captioner
from modalbridge.errors import script_main
from modalbridge.render import attention_overlay

ROOT = Path(__file__).resolve().parent.parent


def attention_figure(image: Image.Image, words: list[str], attention, per_row: int = 6, size: int = 160) -> Image.Image:
    """The image followed by one attention overlay per generated word, ``per_row`` tiles a row."""
    tiles = [image.convert("RGB").resize((size, size + size * 28 // 256))]
    tiles += [attention_overlay(image, w, a, size=size) for w, a in zip(words, attention, strict=False)]
    th = max(t.height for t in tiles)
    rows = (len(tiles) + per_row - 1) // per_row
    fig = Image.new("RGB", (per_row * size, rows * th), (255, 255, 255))
    for i, t in enumerate(tiles):
        fig.paste(t, ((i % per_row) * size, (i // per_row) * th + th - t.height))
    return fig


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=None)
    p.add_argument("--data", default="data/fashion_scenes")
    p.add_argument("--split", default="test")
    p.add_argument("--beams", type=int, nargs="+", default=[1, 3, 5])
    p.add_argument("--out", default=str(ROOT / "docs/results/caption_fashion.json"))
    p.add_argument("--images", default=str(ROOT / "docs/images"))
    p.add_argument("--figures", type=int, nargs="*", default=[6, 10], help="test scene indices drawn with attention")
    p.add_argument("--no-meteor", action="store_true")
    p.add_argument("--config", default="configs/caption/sat_fashion.yaml", help="the training config (for the record)")
    p.add_argument("--train-args", default="", help="key=value overrides the model was trained with (for the record)")
    args = p.parse_args(argv)

    from modalbridge.captioning import features
    from modalbridge.metrics import score

    cap = load_captioner(args.model)
    model_dir = Path(cap.source)
    data = Path(args.data)
    recs = [json.loads(line) for line in (data / "captions.jsonl").read_text().splitlines()]
    recs = [r for r in recs if r["split"] == args.split]
    manifest = json.loads((data / "manifest.json").read_text())
    paths = [str(data / r["image"]) for r in recs]
    t0 = time.perf_counter()
    cache = features.extract(cap.encoder, paths, ROOT / "cache/features", progress=False)
    extract_s = time.perf_counter() - t0
    grid = cache.get(cap.model.feature)
    refs = {str(i): r["captions"] for i, r in enumerate(recs)}
    truths = [[fashion_scenes.Item(**it) for it in r["items"]] for r in recs]
    results, examples = {}, {}
    for beam in args.beams:
        t0 = time.perf_counter()
        seqs = decode_features(cap.model, grid, beam=beam, batch_size=100)
        decode_s = time.perf_counter() - t0
        hyps = {str(i): cap.text(s["tokens"]) for i, s in enumerate(seqs)}
        scores = score(refs, hyps, meteor=not args.no_meteor)
        f1 = fashion_scenes.class_mention_f1([hyps[str(i)] for i in range(len(recs))], truths)
        results[f"beam{beam}"] = {
            **{k: round(float(v), 4) for k, v in scores.items() if v is not None},
            "class_mention_precision": round(f1["precision"], 4), "class_mention_recall": round(f1["recall"], 4),
            "class_mention_f1": round(f1["f1"], 4),
            "decode_ms_per_image": round(1000 * decode_s / len(recs), 2),
            "mean_words": round(sum(len(h.split()) for h in hyps.values()) / len(hyps), 2),
        }
        examples[f"beam{beam}"] = {recs[i]["image"]: hyps[str(i)] for i in range(8)}
        print(f"beam {beam}: " + json.dumps(results[f"beam{beam}"]), flush=True)
    # Upper bound of the metrics: one reference scored against the other four.
    loo = score({k: v[1:] for k, v in refs.items()}, {k: v[0] for k, v in refs.items()}, meteor=False)

    images = Path(args.images)
    figures = []
    for n, idx in enumerate(args.figures, start=1):
        img = Image.open(data / recs[idx]["image"]).convert("RGB")
        res = cap.caption([img], beam=3)[0]
        fig = attention_figure(img, res["words"], res["attention"])
        path = images / f"caption_attention_{n}.png"
        files.atomic_write_bytes(path, fashion_scenes.png_bytes(fig))
        figures.append({"file": str(path.relative_to(ROOT)), "image": recs[idx]["image"], "caption": res["caption"],
                        "references": recs[idx]["captions"]})

    meta = json.loads((model_dir / "config.json").read_text())
    weights = model_dir / "model.safetensors"
    n_params = sum(p.numel() for p in cap.model.parameters())
    out = {
        "task": "image -> text on fashion scenes (compositional scenes of 1-4 Fashion-MNIST items)",
        "model": {"dir": str(model_dir.relative_to(ROOT)) if model_dir.is_relative_to(ROOT) else str(model_dir),
                  "model_type": meta["model_type"], "config": meta["config"], "parameters": n_params,
                  "weights_bytes": weights.stat().st_size, "train_metrics": cap.metrics},
        "data": {"dir": args.data, "split": args.split, "n_images": len(recs), "generation": manifest,
                 "references_per_image": 5},
        "results": results,
        "reference_vs_other_references": {k: round(float(v), 4) for k, v in loo.items() if v is not None},
        "examples": examples,
        "attention_figures": figures,
        "measured_on": {"machine": f"{platform.machine()} CPU, {torch.get_num_threads()} threads (shared, busy)",
                        "torch": torch.__version__, "feature_extraction_s": round(extract_s, 1)},
        "reproduce": [
            "python scripts/make_fashion_scenes.py --train 5000 --val 500 --test 500",
            f"modalbridge train {args.config} {args.train_args}".strip(),
            "python scripts/eval_caption_fashion.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        ],
    }
    files.write_json(Path(args.out), out)
    print(f"wrote {args.out} and {', '.join(f['file'] for f in figures)}")
    return 0


if __name__ == "__main__":
    script_main(main)
