"""Fashion scenes: a compositional captioning dataset generated deterministically from Fashion-MNIST.

Each scene is a 224x224 RGB canvas (what EfficientNet-Lite0 reads natively, giving its 7x7 feature grid) on a plain
light background, holding 1-4 Fashion-MNIST items in distinct cells of a 3x3 grid, each tinted with a colour of a
small named palette and drawn small or large. Five reference captions per scene come from a small grammar
(plural counts, colours, sizes, positions, spatial relations) and the structured ground truth is kept, so a
captioner can be scored on what it names (:func:`class_mention_f1`) as well as with the COCO metrics.

Splits never share a Fashion-MNIST item: ``train`` and ``val`` scenes draw from disjoint parts of the Fashion-MNIST
train set (a fixed seeded partition), ``test`` scenes from the Fashion-MNIST test set. Scene ``i`` of a split depends
only on ``(seed, split, i)``, so asking for 20 scenes gives the first 20 of a 1000-scene split, byte for byte.

Notation: N scenes, K items per scene (1..4), S canvas side in pixels, (row, col) a grid cell in 0..2.

On disk (the ``folder:DIR`` format of :mod:`modalbridge.captioning.datasets`)::

    DIR/captions.jsonl     {"image": "test/00000.png", "captions": [5 strings], "split": "test", "items": [...]}
    DIR/{train,val,test}/NNNNN.png
    DIR/manifest.json      the generation parameters; a directory with the same manifest is reused as is
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from modalbridge.errors import UserError
from modalbridge.files import cache_root
from modalbridge.render import png_bytes as encode_png

FORMAT_VERSION = 1
SPLITS = ("train", "val", "test")
N_VAL_POOL = 6000  # Fashion-MNIST train items reserved for val scenes (never drawn by train scenes)
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (205, 30, 35),
    "blue": (30, 75, 210),
    "green": (25, 145, 55),
    "yellow": (230, 180, 0),
    "purple": (135, 45, 170),
    "black": (20, 20, 20),
}
BACKGROUND = (242, 240, 235)
SIZES = {"small": 34, "large": 56}  # item side in pixels on a 224 canvas (cells are 64 px)
# Natural (singular, plural) names of the 10 Fashion-MNIST classes, in label order.
NAMES = [
    ("t-shirt", "t-shirts"), ("pair of trousers", "pairs of trousers"), ("sweater", "sweaters"),
    ("dress", "dresses"), ("coat", "coats"), ("sandal", "sandals"), ("shirt", "shirts"),
    ("sneaker", "sneakers"), ("bag", "bags"), ("ankle boot", "ankle boots"),
]
NUMBERS = ["no", "one", "two", "three", "four"]
CELL_PHRASES = {
    (0, 0): "in the top left corner", (0, 1): "at the top", (0, 2): "in the top right corner",
    (1, 0): "on the left", (1, 1): "in the centre", (1, 2): "on the right",
    (2, 0): "in the bottom left corner", (2, 1): "at the bottom", (2, 2): "in the bottom right corner",
}
_SPLIT_CODE = {"train": 1, "val": 2, "test": 3}


@dataclass(frozen=True)
class Item:
    """One object of a scene: Fashion-MNIST ``label`` and ``source`` index, tint, size and grid cell."""

    label: int
    colour: str
    size: str
    row: int
    col: int
    source: int


@dataclass
class Scene:
    image_id: str
    split: str
    index: int
    items: list[Item]
    captions: list[str]

    @property
    def path(self) -> str:
        """Image path relative to the dataset directory."""
        return f"{self.split}/{self.index:05d}.png"


# ------------------------------------------------------------------------------------------------ grammar
def article(phrase: str) -> str:
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def head_phrase(label: int, count: int, adjectives: Sequence[str] = ()) -> str:
    """``(3, 2, ["red"]) -> "red dresses"``; trousers take "pair(s) of" with the adjectives inside."""
    adj = "".join(a + " " for a in adjectives if a)
    if label == 1:  # "pair of red trousers", "pairs of trousers"
        return ("pair" if count == 1 else "pairs") + f" of {adj}trousers"
    return adj + NAMES[label][0 if count == 1 else 1]


def noun_phrase(label: int, count: int, adjectives: Sequence[str] = ()) -> str:
    """``(3, 2, ["red"]) -> "two red dresses"``, ``(9, 1) -> "an ankle boot"``."""
    head = head_phrase(label, count, adjectives)
    return article(head) if count == 1 else f"{NUMBERS[count]} {head}"


def join_list(parts: Sequence[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def _reading_order(items: Sequence[Item]) -> list[Item]:
    return sorted(items, key=lambda it: (it.row, it.col))


def _grouped(items: Sequence[Item], with_size: bool) -> list[str]:
    """Noun phrases in reading order of first appearance. Without sizes, items of one class form one group whose
    colour is named only when shared ("two dresses"); with sizes, only identical items group ("two small red bags")."""
    groups: dict[tuple, list[Item]] = {}
    for it in _reading_order(items):
        groups.setdefault((it.label, it.colour, it.size) if with_size else (it.label,), []).append(it)
    out = []
    for g in groups.values():
        colour = g[0].colour if len({i.colour for i in g}) == 1 else ""
        out.append(noun_phrase(g[0].label, len(g), [g[0].size if with_size else "", colour]))
    return out


def _single(it: Item, with_size: bool = False) -> str:
    return noun_phrase(it.label, 1, [it.size if with_size else "", it.colour])


def relation(a: Item, b: Item, prefer_vertical: bool) -> str:
    """A spatial relation of ``a`` to ``b`` that their cells make true ("to the left of", "above", ...)."""
    horizontal = "to the left of" if a.col < b.col else "to the right of" if a.col > b.col else None
    vertical = "above" if a.row < b.row else "below" if a.row > b.row else None
    if horizontal and vertical:
        return vertical if prefer_vertical else horizontal
    return horizontal or vertical  # distinct cells: at least one differs


def make_captions(items: Sequence[Item], rng: np.random.Generator) -> list[str]:
    """Five paraphrases: grouped list, count, relation, positions, sizes."""
    ordered = _reading_order(items)
    k = len(items)
    groups = _grouped(items, with_size=False)
    listing = join_list(groups)
    caps = [listing]
    if k == 1:
        caps.append(f"a single {head_phrase(ordered[0].label, 1, [ordered[0].colour])} on a plain background")
    elif len(groups) == 1:
        caps.append(f"there are {listing} on a plain background")
    else:
        noun = "items" if rng.random() < 0.5 else "pieces of clothing"
        caps.append(f"{NUMBERS[k]} {noun}: {listing}")
    if k == 1:
        caps.append(f"{_single(ordered[0])} {CELL_PHRASES[(ordered[0].row, ordered[0].col)]}")
    else:
        i, j = rng.choice(k, size=2, replace=False)
        a, b = ordered[i], ordered[j]  # either order: "above" and "below" both occur
        rel = relation(a, b, prefer_vertical=bool(rng.random() < 0.5))
        rest = [_single(it) for it in ordered if it is not a and it is not b]
        caps.append(f"{_single(a)} {rel} {_single(b)}" + (f", with {join_list(rest)}" if rest else ""))
    caps.append(join_list([f"{_single(it)} {CELL_PHRASES[(it.row, it.col)]}" for it in ordered]))
    caps.append(join_list(_grouped(items, with_size=True)))
    return caps


# ------------------------------------------------------------------------------------------------ scenes
@functools.lru_cache(maxsize=3)
def _pools(split: str) -> tuple[np.ndarray, list[np.ndarray]]:
    """Fashion-MNIST images of ``split``'s source set and, per class, the item indices the split may use."""
    from modalbridge.vision import fashion_mnist

    if split not in _SPLIT_CODE:
        raise UserError(f"fashion scenes split must be one of {', '.join(SPLITS)}, got '{split}'")
    images, labels = fashion_mnist.load("test" if split == "test" else "train")
    if split == "test":
        allowed = np.arange(len(labels))
    else:  # a fixed partition of the train set, independent of `seed`: val items are never train items
        perm = np.random.default_rng(20240607).permutation(len(labels))
        allowed = np.sort(perm[:N_VAL_POOL] if split == "val" else perm[N_VAL_POOL:])
    return images, [allowed[labels[allowed] == c] for c in range(len(NAMES))]


def make_scene(split: str, index: int, seed: int = 0) -> Scene:
    """The structure and captions of scene ``index`` of ``split`` (a function of ``(seed, split, index)`` only)."""
    _, per_class = _pools(split)
    rng = np.random.default_rng([seed, _SPLIT_CODE[split], index])
    k = int(rng.choice([1, 2, 3, 4], p=[0.15, 0.35, 0.3, 0.2]))
    cells = rng.choice(9, size=k, replace=False)
    # A repeated class in a third of multi-item scenes, so counts ("two dresses") are frequent enough to learn.
    classes = rng.integers(0, 10, size=k)
    if k > 1 and rng.random() < 0.35:
        classes[1] = classes[0]
    colours = list(PALETTE)
    items = []
    for cls, cell in zip(classes, cells, strict=True):
        candidates = per_class[int(cls)]
        items.append(Item(
            label=int(cls), colour=colours[int(rng.integers(len(colours)))],
            size="large" if rng.random() < 0.5 else "small", row=int(cell) // 3, col=int(cell) % 3,
            source=int(candidates[rng.integers(len(candidates))]),
        ))
    return Scene(f"{split}-{index:05d}", split, index, items, make_captions(items, rng))


def render(scene: Scene, canvas: int = 224) -> Image.Image:
    """Draw ``scene``: each item's intensity is its opacity over the background, in its tint colour."""
    images, _ = _pools(scene.split)
    scale = canvas / 224
    margin, cell = round(16 * scale), (canvas - 2 * round(16 * scale)) / 3  # margin survives a 87.5% centre crop
    img = np.empty((canvas, canvas, 3), np.float32)
    img[:] = BACKGROUND
    for it in scene.items:
        side = round(SIZES[it.size] * scale)
        patch = Image.fromarray(images[it.source]).resize((side, side), Image.BILINEAR)
        alpha = np.asarray(patch, np.float32)[..., None]  # (side, side, 1)
        alpha = alpha / max(float(alpha.max()), 1.0)  # dim items are drawn in their full tint too
        y0 = round(margin + it.row * cell + (cell - side) / 2)
        x0 = round(margin + it.col * cell + (cell - side) / 2)
        region = img[y0 : y0 + side, x0 : x0 + side]
        region[:] = region * (1 - alpha) + np.asarray(PALETTE[it.colour], np.float32) * alpha
    return Image.fromarray(np.clip(np.rint(img), 0, 255).astype(np.uint8), "RGB")


def png_bytes(image: Image.Image) -> bytes:
    """Scene PNGs at a fixed compression level, so regenerated scenes are byte-identical."""
    return encode_png(image, compress_level=6)


def scene_record(scene: Scene) -> dict:
    """One ``captions.jsonl`` line: image path, captions, split and the structured ground truth."""
    return {
        "image": scene.path, "image_id": scene.image_id, "split": scene.split, "captions": scene.captions,
        "items": [asdict(it) for it in scene.items],
    }


def generate(
    out_dir: str | Path, n_train: int = 10000, n_val: int = 1000, n_test: int = 1000, seed: int = 0,
    canvas: int = 224, progress: bool = False,
) -> Path:
    """Write the dataset into ``out_dir`` (PNGs + ``captions.jsonl`` + ``manifest.json``); reused when complete.

    Returns:
        ``out_dir``.
    """
    from modalbridge.files import atomic_write_bytes, atomic_write_text, write_json

    out = Path(out_dir)
    manifest = {"format": FORMAT_VERSION, "seed": seed, "canvas": canvas,
                "sizes": {"train": n_train, "val": n_val, "test": n_test}}
    if is_complete(out, manifest):
        return out
    lines = []
    for split, n in (("train", n_train), ("val", n_val), ("test", n_test)):
        for i in range(n):
            scene = make_scene(split, i, seed)
            target = out / scene.path
            if not target.is_file():
                atomic_write_bytes(target, png_bytes(render(scene, canvas)))
            lines.append(json.dumps(scene_record(scene), ensure_ascii=False))
            if progress and (i + 1) % 1000 == 0:
                print(f"fashion scenes: {split} {i + 1}/{n}", flush=True)
    atomic_write_text(out / "captions.jsonl", "\n".join(lines) + "\n")
    write_json(out / "manifest.json", manifest)  # last: its presence marks a complete directory
    return out


def is_complete(out: Path, manifest: dict) -> bool:
    try:
        return json.loads((out / "manifest.json").read_text()) == manifest and (out / "captions.jsonl").is_file()
    except (OSError, json.JSONDecodeError):
        return False


def default_dir() -> Path:
    """Cache directory of the default (evaluation) scenes: ``$MODALBRIDGE_CACHE`` or ``~/.cache/modalbridge``."""
    return cache_root() / f"fashion_scenes_v{FORMAT_VERSION}"


def ensure_test_data(out_dir: str | Path | None = None, n_test: int = 500, seed: int = 0) -> Path:
    """The test split the default captioner was measured on (no train/val), regenerated deterministically if
    missing: the same PNG bytes and captions as ``scripts/make_fashion_scenes.py --test 500``."""
    return generate(out_dir or default_dir(), n_train=0, n_val=0, n_test=n_test, seed=seed)


def read_items(out_dir: str | Path) -> dict[str, list[Item]]:
    """Image path -> ground-truth items, from a generated ``captions.jsonl``."""
    path = Path(out_dir) / "captions.jsonl"
    if not path.is_file():
        raise UserError(f"{path} not found; generate the scenes first")
    out = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        rec = json.loads(line)
        out[rec["image"]] = [Item(**it) for it in rec["items"]]
    return out


# ------------------------------------------------------------------------------------------------ metrics
# Class words; "t-shirt" is matched (and removed) before "shirt" so a t-shirt is never also counted as a shirt.
_CLASS_PATTERNS = [
    (0, r"\bt\s*-?\s*shirts?\b|\btees?\b"), (1, r"\btrousers?\b|\bpants\b"), (2, r"\bsweaters?\b|\bpullovers?\b"),
    (3, r"\bdress(?:es)?\b"), (4, r"\bcoats?\b"), (5, r"\bsandals?\b"), (6, r"\bshirts?\b"),
    (7, r"\bsneakers?\b"), (8, r"\bbags?\b"), (9, r"\bboots?\b"),
]


def class_mentions(caption: str) -> set[int]:
    """Fashion-MNIST labels named in ``caption``."""
    text, found = caption.lower(), set()
    for label, pattern in _CLASS_PATTERNS:
        if re.search(pattern, text):
            found.add(label)
            text = re.sub(pattern, " ", text)
    return found


def class_mention_f1(captions: Sequence[str], truths: Sequence[Iterable]) -> dict[str, float]:
    """Micro precision/recall/F1 of the classes a caption names against those present in its scene.

    Args:
        captions: one caption per scene.
        truths: per scene, its items (:class:`Item`) or class labels.

    Returns:
        ``{"precision", "recall", "f1"}`` over all scenes (counts of distinct classes per scene).
    """
    if len(captions) != len(truths):
        raise ValueError(f"{len(captions)} captions but {len(truths)} ground truths")
    tp = fp = fn = 0
    for caption, truth in zip(captions, truths, strict=True):
        present = {t.label if isinstance(t, Item) else int(t) for t in truth}
        named = class_mentions(caption)
        tp, fp, fn = tp + len(named & present), fp + len(named - present), fn + len(present - named)
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 1.0
    return {"precision": precision, "recall": recall, "f1": f1}
