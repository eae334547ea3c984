"""Captioning on real human titles (issue 13): openclipart, trained on its train split and scored on its test split
beside the two baselines a user would write instead, in one run.

    make data-openclipart
    .venv/bin/python scripts/eval_openclipart.py [--config configs/caption/sat_openclipart.yaml] [KEY=VALUE ...]

1. the Debian drawings through ``--data openclipart`` (titles + descriptions as captions, byte-identical images
   merged so that no test image is a training image; huge PNGs decoded at reduced size);
2. EfficientNet-Lite0 features of train and test images into the feature cache (images/s reported when extracted);
3. baselines on the test split: **nearest-neighbour retrieval** (the first caption of the train image whose pooled
   feature is most cosine-similar) and **the most frequent caption** of the train split;
4. ``modalbridge train CONFIG`` (overrides appended; or ``--run-dir`` scores a finished run), then the exported
   model captions the test images (beam 3);
5. BLEU-1..4, METEOR, ROUGE-L, CIDEr-D of all three with ``modalbridge.metrics.score`` -> docs/results/
   caption_openclipart.json (with the split sizes, the run dir, how many captions hold a word outside the
   vocabulary, and examples), on all test images and again on those without a near-duplicate in train (pooled
   cosine >= ``--near``: a recoloured or resized variant of a train drawing, which retrieval copies the title of).
"""

from __future__ import annotations

import argparse
import collections
import sys
import time
import warnings
from pathlib import Path

import torch.nn.functional as F

from modalbridge.errors import script_main

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", type=Path, default=ROOT / "configs/caption/sat_openclipart.yaml")
    ap.add_argument("--out", type=Path, default=ROOT / "docs/results/caption_openclipart.json")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--run-dir", type=Path, default=None, help="score this finished run instead of training one")
    ap.add_argument("--near", type=float, default=0.95,
                    help="cosine of pooled features at which a train image counts as a near-duplicate")
    ap.add_argument("overrides", nargs="*", help="config overrides key=value")
    args = ap.parse_args()
    from modalbridge import threads

    threads.configure(args.threads)
    from modalbridge.captioning import datasets, features
    from modalbridge.captioning.pairs import readable
    from modalbridge.captioning.pipeline import load_captioner
    from modalbridge.files import write_json
    from modalbridge.metrics import score
    from modalbridge.registry import load_builtins
    from modalbridge.training import engine
    from modalbridge.vision.encoders import build_encoder

    load_builtins()
    cfg = engine.resolve_config(args.config, args.overrides)
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        records = datasets.load(cfg.data.data)
        split = {s: readable([r for r in records if r.split == s], s) for s in ("train", "val", "test")}
    for w in said:
        print(f"warning: {w.message}", file=sys.stderr)
    sizes = {s: len(v) for s, v in split.items()}
    print(f"openclipart: {sizes}", file=sys.stderr)

    encoder = build_encoder(cfg.data.encoder)
    pooled, rates = {}, {}
    for s in ("train", "test"):
        paths = [r.path for r in split[s]]
        fresh = features.cached(encoder, paths, cfg.data.cache_dir) is None
        t0 = time.perf_counter()
        cache = features.extract(encoder, paths, cfg.data.cache_dir, batch_size=cfg.data.extract_batch_size)
        if fresh:
            rates[s] = round(len(paths) / (time.perf_counter() - t0), 2)
        bad = set(cache.failed)
        keep = [i for i in range(len(paths)) if i not in bad]  # drop images that did not decode
        split[s] = [split[s][i] for i in keep]
        pooled[s] = F.normalize(cache.pooled[keep].float(), dim=-1)  # (N, C)

    refs = {r.image_id: list(r.captions) for r in split["test"]}
    sims = pooled["test"] @ pooled["train"].T  # (N_test, N_train) cosine
    best, nearest = sims.max(1)  # (N_test,)
    retrieval = {r.image_id: split["train"][int(j)].captions[0] for r, j in zip(split["test"], nearest, strict=True)}
    counts = collections.Counter(c.strip().lower() for r in split["train"] for c in r.captions)
    frequent = counts.most_common(1)[0][0]

    t0 = time.perf_counter()
    run_dir = args.run_dir if args.run_dir is not None else engine.train(cfg)
    train_s = None if args.run_dir is not None else round(time.perf_counter() - t0, 1)
    cap = load_captioner(run_dir / "model")
    out = cap.caption([r.path for r in split["test"]], beam=3)
    hyps = {r.image_id: o["caption"] for r, o in zip(split["test"], out, strict=True)}
    systems = {"trained_model": hyps, "nearest_neighbour_retrieval": retrieval,
               "most_frequent_caption": {k: frequent for k in refs}}
    # Byte-identical copies are merged by the loader; recoloured or resized variants of a train drawing are not.
    # Scored again on the test images whose nearest train image is below --near: what retrieval cannot copy.
    far = {r.image_id for r, b in zip(split["test"], best, strict=True) if float(b) < args.near}
    results = {name: score(refs, h) for name, h in systems.items()}
    results_far = {name: score({k: refs[k] for k in far}, {k: h[k] for k in far}) for name, h in systems.items()}
    vocab = cap.vocab
    oov = sum(any(vocab.unk_id in vocab.encode(c)[1:-1] for c in r.captions) for r in split["test"])
    report = {
        "script": "scripts/eval_openclipart.py " + " ".join(args.overrides),
        "config": str(args.config.relative_to(ROOT)) if args.config.is_relative_to(ROOT) else str(args.config),
        "run_dir": str(run_dir), "train_seconds": train_s, "splits": sizes,
        "extraction_images_per_s": rates or "cached (extracted by an earlier run)",
        "vocab": {"kind": type(vocab).__name__, "size": len(vocab)},
        "test_images_with_a_reference_word_outside_the_vocabulary": oov,
        "most_frequent_caption": frequent,
        "results": results,
        "near_duplicate_cosine": args.near,
        "test_images_with_a_near_duplicate_in_train": len(refs) - len(far),
        "results_without_near_duplicates": results_far,
        "examples": [{"image": r.image_id, "references": r.captions, "model": o["caption"],
                      "retrieval": retrieval[r.image_id]} for r, o in list(zip(split["test"], out, strict=True))[:12]],
        "note": "METEOR 1.5 and the PTB tokenizer run on Java; CIDEr-D is pycocoevalcap's (golden-tested port).",
    }
    write_json(args.out, report)
    for title, res in (("all test images", results), (f"without near-duplicates ({len(far)})", results_far)):
        print(title)
        for name, sc in res.items():
            print(f"  {name:28s} " + "  ".join(f"{k} {sc[k]:.3f}" for k in ("BLEU-4", "METEOR", "ROUGE-L", "CIDEr")))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    script_main(main)
