"""Natural prompts (written for issue 12, not used anywhere in training) -> ``draw`` -> the evaluation panel.

    .venv/bin/python scripts/gan_prompt_check.py                          # shipped t2i-fashion + gan-fashion
    .venv/bin/python scripts/gan_prompt_check.py --generator runs/gan-fashion-v2/<stamp>/model --truncation 0.7

Draws ``--n`` images (seed 0) for each prompt through the embedded text -> image pipeline (optionally with another
generator that has the same class table) and reports how often each judge of eval/fashion-judges recognises the
intended class, per class and overall, next to the judge's accuracy on the real test images. Prints JSON.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from modalbridge.errors import read_json, script_main
from modalbridge.vision import fashion_mnist
from modalbridge.vision.classifier import load_judge

ROOT = Path(__file__).resolve().parents[1]
PROMPTS = {  # intended class -> prompts
    "T-shirt/top": ["a plain cotton tee with short sleeves", "a sleeveless summer top", "my favourite band t-shirt",
                    "a loose crew-neck top"],
    "Trouser": ["slim grey chinos", "a pair of wide-leg pants", "dark denim trousers for work", "track pants"],
    "Pullover": ["a chunky knitted sweater", "a wool pullover for cold evenings", "a crew-neck jumper",
                 "a cashmere sweater"],
    "Dress": ["a long evening gown", "a floral summer dress", "a little black dress", "a knee-length sundress"],
    "Coat": ["a long wool overcoat", "a padded winter jacket with a zip", "a trench coat for the rain",
             "a heavy coat with big buttons"],
    "Sandal": ["strappy sandals for the summer", "open-toe sandals with a low heel", "beach sandals",
               "leather sandals with thin straps"],
    "Shirt": ["a button-down office shirt", "a checked flannel shirt", "a formal shirt with a collar",
              "a linen shirt with long sleeves"],
    "Sneaker": ["canvas trainers", "a pair of running shoes", "white tennis shoes", "low-top sneakers"],
    "Bag": ["a leather tote bag", "a small shoulder purse", "a travel backpack", "a clutch for the evening"],
    "Ankle boot": ["suede ankle boots", "short leather boots", "chelsea boots", "black booties with a block heel"],
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--generator", default=None, help="model dir to draw with instead of the pipeline's generator")
    ap.add_argument("--truncation", type=float, default=0.5)
    ap.add_argument("--n", type=int, default=4)
    ap.add_argument("--judges", type=Path, default=ROOT / "eval" / "fashion-judges")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from modalbridge.generators import load_generator
    from modalbridge.t2i.pipeline import load_drawer

    pipe = load_drawer(None)
    if args.generator:
        g = load_generator(args.generator).eval().requires_grad_(False)
        if not torch.equal(g.class_embeddings.detach().float(), pipe.table):
            raise SystemExit("that generator has another class table than the pipeline's")
        pipe.generator = g
    classes = list(fashion_mnist.CLASSES)
    images, labels, mapped = [], [], []
    for cls, prompts in PROMPTS.items():
        for text in prompts:
            d = pipe.draw(text, n=args.n, seed=0, truncation=args.truncation)
            x = torch.stack([torch.from_numpy(np.asarray(im.convert("L"), dtype=np.float32)) for im in d.images])
            images.append((x / 127.5 - 1).unsqueeze(1))
            labels += [classes.index(cls)] * args.n
            mapped.append(d.classes[0]["label"] == cls)
    x, y = torch.cat(images), np.array(labels)
    panel = read_json(args.judges / "panel.json", "judge panel")
    out = {"generator": args.generator or "pipeline default", "truncation": args.truncation, "n": args.n,
           "prompts": sum(map(len, PROMPTS.values())), "mapper_top1_correct": float(np.mean(mapped)), "judges": {}}
    for name in sorted(panel):
        _, pred = load_judge(args.judges / name).embed(x)
        ok = pred.numpy() == y
        out["judges"][name] = {"accuracy": float(ok.mean()), "real_test_accuracy": panel[name]["test_accuracy"],
                               "per_class": {c: float(ok[y == i].mean()) for i, c in enumerate(classes)}}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    script_main(main)
