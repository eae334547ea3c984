"""Caption datasets in their published formats, all read into one record type, :class:`CaptionRecord`.

``--data SPEC`` (:func:`parse_spec`, :func:`load`)::

    coco:ANN.json[,ANN2.json...][:IMAGES_DIR]   COCO captions JSON (annotations/captions_train2017.json format).
                                                IMAGES_DIR default: ANN's ../<train2017|val2014|...> if that folder
                                                exists (the COCO layout), else ANN's folder. Split from the file name.
    karpathy:FILE.json[:IMAGES_ROOT]            Karpathy split JSON (dataset_coco.json, dataset_flickr8k.json,
                                                dataset_flickr30k.json); alias coco-karpathy. Image path:
                                                IMAGES_ROOT/filepath/filename (filepath only in the COCO file).
                                                IMAGES_ROOT default: FILE's folder. "restval" counts as train.
    flickr:TOKENS.txt[:IMAGES_DIR]              Flickr8k/30k token file ("img.jpg#0<TAB>caption"). Splits from
                                                Flickr_8k.{train,dev,test}Images.txt next to TOKENS when present
                                                (dev -> "val"); IMAGES_DIR default: Flicker8k_Dataset, Flickr8k_Dataset,
                                                flickr30k-images, Images or images next to TOKENS, else its folder.
    folder:DIR                                  DIR/captions.csv (header with columns image,caption [,split]
                                                [,image_id]; several rows per image; Kaggle's captions.txt too) or
                                                DIR/captions.jsonl (one object per line: "image", "caption" or
                                                "captions", optional "split", "image_id"). UTF-8, any language.
                                                Image paths relative to DIR.
    openclipart[:ROOT]                          Debian openclipart-svg/-png (/usr/share/openclipart): titles (+
                                                descriptions) as captions, keywords in ``meta``.
    PATH                                        no kind: a folder with captions.csv/jsonl, a .json (COCO or
                                                Karpathy, sniffed) or a token .txt file.

The last ``:`` separates IMAGES_DIR only for kinds that take one, so a path may contain ``:`` in the first part
when IMAGES_DIR is given. Splits are normalised to ``train``/``val``/``test`` (``dev``, ``validation`` -> ``val``);
``""`` means the format does not say.

Missing image files are never skipped silently: they are dropped with one :class:`DataWarning` giving the count and
the first names, or raise a UserError with ``strict=True``.
"""

from __future__ import annotations

import csv
import io
import json
import re
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modalbridge.captioning.openclipart import OPENCLIPART_ROOT, load_openclipart
from modalbridge.captioning.records import CaptionRecord, DataWarning, check_images
from modalbridge.errors import UserError

KINDS = ("coco", "karpathy", "flickr", "folder", "openclipart")
_ALIASES = {"coco-karpathy": "karpathy", "flickr8k": "flickr", "flickr30k": "flickr", "dir": "folder"}
_SPLITS = {"train": "train", "restval": "train", "val": "val", "valid": "val", "validation": "val", "dev": "val"}
_SPLITS.update({"test": "test", "": ""})


@dataclass
class DataSpec:
    """A parsed ``--data`` string: ``kind`` plus the file/folder paths it names (None = default)."""

    kind: str
    source: list[Path]
    images: Path | None = None


def norm_split(name: str | None, restval_as: str = "train") -> str:
    s = (name or "").strip().lower()
    if s == "restval":
        return restval_as
    if s not in _SPLITS:
        raise UserError(f"unknown split name '{name}' (expected train, val, test, restval or dev)")
    return _SPLITS[s]


# ---------------------------------------------------------------------------------------------- spec


def parse_spec(spec: str) -> DataSpec:
    """Parse a ``--data`` SPEC (see the module docstring) without touching the files."""
    spec = str(spec).strip()
    if not spec:
        raise UserError("empty --data spec; e.g. folder:DIR, coco:ANN.json:IMAGES_DIR, karpathy:FILE.json")
    kind, sep, rest = spec.partition(":")
    kind_l = _ALIASES.get(kind.lower(), kind.lower())
    if not sep or kind_l not in KINDS:
        if kind_l == "openclipart" and not sep:
            return DataSpec("openclipart", [OPENCLIPART_ROOT])
        if sep and re.fullmatch(r"[A-Za-z][\w-]*", kind) and not Path(spec).exists():
            raise UserError(f"unknown dataset kind '{kind}' in --data {spec}; known: {', '.join(KINDS)}")
        return _sniff(Path(spec))
    if kind_l == "folder":
        return DataSpec("folder", [Path(rest)])
    if kind_l == "openclipart":
        return DataSpec("openclipart", [Path(rest) if rest else OPENCLIPART_ROOT])
    first, images = rest, None
    if ":" in rest:
        first, images_s = rest.rsplit(":", 1)
        images = Path(images_s) if images_s else None
    if not first:
        raise UserError(f"--data {spec}: missing the {kind_l} file after '{kind}:'")
    sources = [Path(p) for p in first.split(",")] if kind_l == "coco" else [Path(first)]
    return DataSpec(kind_l, sources, images)


def _sniff(path: Path) -> DataSpec:
    if not path.exists():
        raise UserError(f"dataset not found: {path} (spec forms: folder:DIR, coco:ANN.json, karpathy:FILE.json, ...)")
    if path.is_dir():
        if (path / "svg").is_dir() or (path / "png").is_dir():
            return DataSpec("openclipart", [path])
        return DataSpec("folder", [path])
    if path.suffix.lower() == ".json":
        data = _read_json(path)
        if isinstance(data, dict) and "annotations" in data:
            return DataSpec("coco", [path])
        if isinstance(data, dict) and isinstance(data.get("images"), list) and "annotations" not in data:
            return DataSpec("karpathy", [path])
        raise UserError(f"{path}: neither a COCO captions JSON nor a Karpathy split JSON")
    return DataSpec("flickr", [path])


def load(spec: str | DataSpec, strict: bool = False) -> list[CaptionRecord]:
    """Records of a ``--data`` SPEC (see the module docstring); images that do not exist are dropped with a warning.

    Args:
        spec: the SPEC string or a parsed :class:`DataSpec`.
        strict: raise a UserError instead of warning about missing images.
    """
    s = parse_spec(spec) if isinstance(spec, str) else spec
    if s.kind == "coco":
        recs = [r for src in s.source for r in load_coco(src, s.images, strict=strict, check=False)]
    elif s.kind == "karpathy":
        recs = load_karpathy(s.source[0], s.images, check=False)
    elif s.kind == "flickr":
        recs = load_flickr(s.source[0], s.images, check=False)
    elif s.kind == "folder":
        recs = load_folder(s.source[0], check=False)
    else:
        recs = load_openclipart(s.source[0], check=False)
    return check_images(recs, strict=strict, source=str(spec if isinstance(spec, str) else s.source[0]))


def select_split(records: list[CaptionRecord], split: str, source: str = "dataset") -> tuple[list[CaptionRecord], bool]:
    """The records of ``split``; a dataset whose format has no splits (a folder without a split column) is taken
    whole, and the second value says so. No record left is a UserError."""
    records = list(records)
    whole = bool(records) and not any(r.split for r in records)
    if not whole:
        records = [r for r in records if r.split == split]
    if not records:
        raise UserError(f"dataset '{source}' has no images in split '{split}'")
    return records, whole


# --------------------------------------------------------------------------------------------- readers


def _read_text(path: Path) -> str:
    if not path.is_file():
        raise UserError(f"file not found: {path}")
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise UserError(f"{path} is not UTF-8 text (byte {e.start}); save it as UTF-8") from None


def _read_json(path: Path) -> Any:
    try:
        return json.loads(_read_text(path))
    except json.JSONDecodeError as e:
        raise UserError(f"{path} is not valid JSON (line {e.lineno}: {e.msg})") from None


def _group(rows: Iterable[tuple[str, Path, str, str]]) -> list[CaptionRecord]:
    """(image_id, path, caption, split) rows -> one record per image id, first-appearance order."""
    recs: dict[str, CaptionRecord] = {}
    for image_id, path, caption, split in rows:
        rec = recs.get(image_id)
        if rec is None:
            rec = recs[image_id] = CaptionRecord(image_id, path, [], split)
        elif split and rec.split and split != rec.split:
            raise UserError(f"image {image_id} is listed in two splits: {rec.split} and {split}")
        rec.split = rec.split or split
        rec.captions.append(caption)
    return list(recs.values())


def load_coco(
    ann_file: str | Path,
    images_dir: str | Path | None = None,
    split: str | None = None,
    strict: bool = False,
    check: bool = True,
) -> list[CaptionRecord]:
    """COCO captions JSON: ``images[] {id, file_name}`` + ``annotations[] {image_id, caption}``.

    Images without annotations (e.g. ``image_info_test2017.json``) are kept with no captions, for captioning.

    Args:
        ann_file: e.g. ``annotations/captions_val2017.json``.
        images_dir: folder of the image files; default: ``../val2017`` next to ``annotations/`` when it exists.
        split: override the split taken from the file name (``captions_val2017.json`` -> ``val``).
        check: drop records of missing image files (with a warning).
    """
    ann_file = Path(ann_file)
    data = _read_json(ann_file)
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise UserError(f"{ann_file}: not a COCO captions file (no 'images' list)")
    m = re.match(r"(?:captions|image_info)_([a-z]+)(\d{4})", ann_file.stem)
    if split is None:
        split = m.group(1) if m and m.group(1) in _SPLITS else ""
    split = norm_split(split)
    if images_dir is None:
        guess = ann_file.resolve().parent.parent / f"{m.group(1)}{m.group(2)}" if m else None
        images_dir = guess if guess is not None and guess.is_dir() else ann_file.parent
    images_dir = Path(images_dir)
    recs: dict[Any, CaptionRecord] = {}
    for im in data["images"]:
        if not isinstance(im, dict) or "id" not in im or "file_name" not in im:
            raise UserError(f"{ann_file}: every image needs 'id' and 'file_name', got {str(im)[:80]}")
        recs[im["id"]] = CaptionRecord(str(im["id"]), images_dir / im["file_name"], [], split)
    orphans = 0
    for a in data.get("annotations", []):
        if not isinstance(a, dict) or "image_id" not in a or not isinstance(a.get("caption"), str):
            raise UserError(f"{ann_file}: every annotation needs 'image_id' and a 'caption' string")
        rec = recs.get(a["image_id"])
        if rec is None:
            orphans += 1
            continue
        rec.captions.append(a["caption"].strip())
    if orphans:
        msg = f"{ann_file}: {orphans} captions refer to image ids that are not in 'images'"
        if strict:
            raise UserError(msg)
        warnings.warn(msg + "; they are skipped", DataWarning, stacklevel=2)
    out = list(recs.values())
    return check_images(out, strict, str(ann_file)) if check else out


def load_karpathy(
    json_file: str | Path, images_root: str | Path | None = None, restval_as: str = "train", check: bool = True
) -> list[CaptionRecord]:
    """Karpathy split JSON (``{"images": [{"filepath"?, "filename", "split", "sentences": [{"raw", "tokens"}]}]}``).

    Args:
        json_file: ``dataset_coco.json`` / ``dataset_flickr8k.json`` / ``dataset_flickr30k.json``.
        images_root: root the ``filepath/filename`` are relative to; default: the JSON's folder.
        restval_as: split for COCO's "restval" images (Karpathy's own training used them: "train").
    """
    json_file = Path(json_file)
    data = _read_json(json_file)
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise UserError(f"{json_file}: not a Karpathy split file (no 'images' list)")
    root = Path(images_root) if images_root is not None else json_file.parent
    out = []
    for im in data["images"]:
        if not isinstance(im, dict) or "filename" not in im or not isinstance(im.get("sentences"), list):
            raise UserError(f"{json_file}: every image needs 'filename' and 'sentences', got {str(im)[:80]}")
        caps, toks = [], []
        for s in im["sentences"]:
            raw = s.get("raw") if isinstance(s, dict) else None
            tokens = s.get("tokens", []) if isinstance(s, dict) else []
            caps.append((raw if isinstance(raw, str) else " ".join(tokens)).strip())
            toks.append(list(tokens))
        image_id = str(im["cocoid"]) if "cocoid" in im else str(im["filename"])
        path = root / im.get("filepath", "") / im["filename"]
        out.append(CaptionRecord(image_id, path, caps, norm_split(im.get("split"), restval_as), {"tokens": toks}))
    return check_images(out, False, str(json_file)) if check else out


def _flickr_images_dir(tokens_file: Path) -> Path:
    for name in ("Flicker8k_Dataset", "Flickr8k_Dataset", "flickr30k-images", "flickr30k_images", "Images", "images"):
        if (tokens_file.parent / name).is_dir():
            return tokens_file.parent / name
    return tokens_file.parent


def load_flickr(
    tokens_file: str | Path,
    images_dir: str | Path | None = None,
    split_files: dict[str, str | Path] | None = None,
    check: bool = True,
) -> list[CaptionRecord]:
    """Flickr8k/30k token file: ``<image file>#<n><TAB><caption>`` per line.

    Args:
        split_files: split -> file listing its image names one per line (``Flickr_8k.trainImages.txt`` style);
            default: ``*trainImages.txt``/``*devImages.txt``/``*testImages.txt`` next to the token file.
    """
    tokens_file = Path(tokens_file)
    images = Path(images_dir) if images_dir is not None else _flickr_images_dir(tokens_file)
    if split_files is None:
        split_files = {}
        for split, pattern in (("train", "*trainImages.txt"), ("val", "*devImages.txt"), ("test", "*testImages.txt")):
            found = sorted(tokens_file.parent.glob(pattern))
            if found:
                split_files[split] = found[0]
    split_of: dict[str, str] = {}
    for split, f in split_files.items():
        split = norm_split(split)
        for name in _read_text(Path(f)).split():
            split_of[name] = split
    rows = []
    for n, line in enumerate(_read_text(tokens_file).splitlines(), start=1):
        if not line.strip():
            continue
        key, tab, caption = line.partition("\t")
        name, hash_, idx = key.rpartition("#")
        if not tab or not hash_ or not idx.strip().isdigit():
            raise UserError(f"{tokens_file}:{n}: expected '<image>#<n><TAB><caption>', got {line[:60]!r}")
        name = name.strip()
        rows.append((name, images / name, caption.strip(), split_of.get(name, "")))
    out = _group(rows)
    return check_images(out, False, str(tokens_file)) if check else out


_IMAGE_KEYS = ("image", "file_name", "filename", "path", "file")


def load_folder(folder: str | Path, check: bool = True) -> list[CaptionRecord]:
    """A custom folder: ``captions.csv`` (or Kaggle-style ``captions.txt``) or ``captions.jsonl``, any language."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"dataset folder not found: {folder}")
    for name in ("captions.jsonl", "captions.csv", "captions.txt"):
        if (folder / name).is_file():
            f = folder / name
            break
    else:
        raise UserError(f"{folder} has no captions.csv or captions.jsonl")
    rows, empty = [], 0
    if f.suffix == ".jsonl":
        for n, line in enumerate(_read_text(f).splitlines(), start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise UserError(f"{f}:{n}: not valid JSON ({e.msg})") from None
            image = next((obj[k] for k in _IMAGE_KEYS if isinstance(obj, dict) and k in obj), None)
            if not isinstance(image, str) or not image:
                raise UserError(f"{f}:{n}: each line needs an 'image' path")
            caps = obj.get("captions", obj.get("caption"))
            caps = [caps] if isinstance(caps, str) else caps
            if not isinstance(caps, list) or not all(isinstance(c, str) for c in caps):
                raise UserError(f"{f}:{n}: 'caption' must be a string or 'captions' a list of strings")
            split = norm_split(obj.get("split"))
            image_id = str(obj.get("image_id", image))
            if not caps:
                rows.append((image_id, folder / image, None, split))
            for c in caps:
                empty += not c.strip()
                rows.append((image_id, folder / image, c.strip() or None, split))
    else:
        reader = csv.DictReader(io.StringIO(_read_text(f)))
        cols = {c.strip().lower(): c for c in reader.fieldnames or []}
        if "image" not in cols or "caption" not in cols:
            raise UserError(f"{f}: the header must name the columns 'image' and 'caption' (got {reader.fieldnames})")
        for n, row in enumerate(reader, start=2):
            image = (row.get(cols["image"]) or "").strip()
            if not image:
                raise UserError(f"{f}:{n}: empty 'image' cell")
            caption = (row.get(cols["caption"]) or "").strip()
            empty += not caption
            split = norm_split(row.get(cols["split"])) if "split" in cols else ""
            image_id = (row.get(cols["image_id"]) or image).strip() if "image_id" in cols else image
            rows.append((image_id, folder / image, caption or None, split))
    if empty:
        warnings.warn(f"{f}: {empty} empty captions skipped", DataWarning, stacklevel=2)
    out = _group(rows)
    for r in out:
        r.captions = [c for c in r.captions if c is not None]
    return check_images(out, False, str(f)) if check else out
