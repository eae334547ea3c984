"""Debian's openclipart drawings (``openclipart-svg`` / ``-png``) as a caption dataset: their human titles and
descriptions as captions, RDF keywords in ``meta`` (``--data openclipart[:ROOT]``)."""

from __future__ import annotations

import hashlib
import re
import warnings
import xml.etree.ElementTree as ET
import zlib
from pathlib import Path
from typing import Any

from modalbridge.captioning.records import CaptionRecord, DataWarning, check_images
from modalbridge.errors import UserError

OPENCLIPART_ROOT = Path("/usr/share/openclipart")

_DC = "{http://purl.org/dc/elements/1.1/}"
_RDF = "{http://www.w3.org/1999/02/22-rdf-syntax-ns#}"


def svg_metadata(path: str | Path) -> dict[str, Any]:
    """Title, description and keywords of an openclipart SVG (RDF/Dublin Core in ``<metadata>``).

    Only the ``dc:title`` directly under ``cc:Work`` is the drawing's title (the others name publisher/creator).
    Parsing stops at the end of ``<metadata>``.
    """
    title = desc = ""
    keywords: list[str] = []
    try:
        for _event, el in ET.iterparse(str(path), events=("end",)):
            tag = el.tag.rsplit("}", 1)[-1]
            if tag == "Work":
                t, d = el.find(f"{_DC}title"), el.find(f"{_DC}description")
                title = " ".join((t.text or "").split()) if t is not None else ""
                desc = " ".join((d.text or "").split()) if d is not None else ""
                keywords = [" ".join((li.text or "").split()) for li in el.iter(f"{_RDF}li")]
                keywords = [k for k in keywords if k]
                break
            if tag == "metadata":
                break
    except (ET.ParseError, OSError) as e:
        return {"title": "", "description": "", "keywords": [], "error": f"{type(e).__name__}: {e}"}
    return {"title": title, "description": desc, "keywords": keywords}


_COLLECTION = re.compile(r"\b(collection|theme|icon ?set|cliparts|s[iu]bmission)\b", re.IGNORECASE)


def _usable(text: str) -> bool:
    t = text.strip().lower()
    if not t or t in {"untitled", "unnamed", "title", "none", "image", "drawing"}:
        return False
    return not _COLLECTION.search(t)  # names a collection, not the drawing


def _clean_title(text: str) -> str:
    """Drop the "Clipart by <author> - " boilerplate prefix; underscores to spaces."""
    text = re.sub(r"^clip\s*art by [^-]+? - ", "", text, flags=re.IGNORECASE)
    return " ".join(text.replace("_", " ").split())


def openclipart_split(rel: str) -> str:
    """Deterministic 90/5/5 split from a CRC32 of the relative path (stable across machines and versions)."""
    h = zlib.crc32(rel.encode("utf-8")) % 100
    return "train" if h < 90 else "val" if h < 95 else "test"


def load_openclipart(
    root: str | Path = OPENCLIPART_ROOT,
    prefer: str = "png",
    subdir: str | None = None,
    max_title_repeats: int | None = 30,
    check: bool = True,
) -> list[CaptionRecord]:
    """The Debian openclipart clip-arts with their human titles as captions.

    Layout (Debian ``openclipart-svg`` 1:0.18, checked with ``dpkg -L``): ``ROOT/svg/<category>/.../<name>.svg``, the
    RDF metadata inside each SVG; 8,121 paths, of which 663 are symlinks filing the same drawing under a second
    category (deduplicated here, so a drawing never lands in two splits). ``openclipart-png`` (130 MB, not installed
    here) is documented to ship the same tree rendered as ``ROOT/png/<category>/.../<name>.png``; with
    ``prefer="png"`` a record points at that PNG when it exists (PIL cannot read SVG), else at the SVG.

    Captions: the title, plus the description when it says more. Many titles name a collection or an author
    ("gramastar" on 1,375 stars, "Part of the Flat Icon Collection ...", "card" on every playing card): a title
    shared by more than ``max_title_repeats`` drawings is not used; the description replaces it when usable, else
    the drawing is skipped (about 3,500 of the 7,458 drawings keep a caption). "Clipart by <author> - " prefixes
    are removed and underscores become spaces. Byte-identical image files (the same picture uploaded under two names:
    242 groups, 52 of them across splits by path) become one record with the captions of all, split by the first
    path, so no test image is a training image. Skips and merges are counted in one :class:`DataWarning`.
    ``meta``: ``keywords``, ``svg``, ``categories``, ``same_image`` (the SVGs merged into this record).

    Args:
        root: ``/usr/share/openclipart`` or a copy of it.
        prefer: ``"png"`` or ``"svg"``.
        subdir: only this part of the tree (e.g. ``"animals"``).
        max_title_repeats: see above; None keeps every title.
    """
    root = Path(root)
    svg_root = root / "svg"
    if not svg_root.is_dir():
        raise UserError(f"{svg_root} not found: apt-get install openclipart-svg (and openclipart-png for PNGs)")
    base = svg_root / subdir if subdir else svg_root
    drawings: dict[Path, dict[str, Any]] = {}  # real file -> metadata + every category it is filed under
    for svg in sorted(base.rglob("*.svg")):
        real = svg.resolve()
        rel = svg.relative_to(svg_root).as_posix()
        if real in drawings:
            drawings[real]["categories"].append(str(Path(rel).parent))
            continue
        md = svg_metadata(real)
        md["title"], md["description"] = _clean_title(md["title"]), _clean_title(md["description"])
        drawings[real] = {**md, "rel": rel, "svg": svg, "categories": [str(Path(rel).parent)]}
    counts: dict[str, int] = {}
    for d in drawings.values():
        for key in ("title", "description"):
            t = d[key].lower()
            counts[t] = counts.get(t, 0) + 1

    def good(text: str) -> bool:
        return _usable(text) and (max_title_repeats is None or counts[text.lower()] <= max_title_repeats)

    by_content: dict[str, CaptionRecord] = {}  # file bytes hash -> the one record of that image
    skipped = merged = 0
    for d in drawings.values():
        svg, rel = d["svg"], d["rel"]
        caps = [c for c in (d["title"], d["description"]) if good(c)]
        if len(caps) == 2 and caps[1].rstrip(".").lower() == caps[0].rstrip(".").lower():
            caps = caps[:1]
        if not caps:
            skipped += 1
            continue
        png = root / "png" / Path(rel).with_suffix(".png")
        path = png if prefer == "png" and png.is_file() else svg
        try:
            key = hashlib.sha1(path.read_bytes()).hexdigest()
        except OSError:
            key = f"unreadable:{rel}"  # kept; the image check reports it
        first = by_content.get(key)
        if first is None:  # drawings are visited in sorted path order: the first path names and splits the image
            meta = {"keywords": d["keywords"], "svg": str(svg), "categories": d["categories"], "same_image": []}
            by_content[key] = CaptionRecord(rel[: -len(".svg")], path, caps, openclipart_split(rel), meta)
            continue
        # The same picture uploaded twice (byte-identical file): one record, so it can never sit in train and test.
        merged += 1
        seen = {c.rstrip(".").lower() for c in first.captions}
        first.captions.extend(c for c in caps if c.rstrip(".").lower() not in seen)
        first.meta["same_image"].append(str(svg))
        first.meta["categories"] += [c for c in d["categories"] if c not in first.meta["categories"]]
    out = list(by_content.values())
    if skipped or merged:
        warnings.warn(
            f"{base}: {skipped} of {len(drawings)} drawings skipped: no title or description that describes them "
            f"(missing, or shared by more than {max_title_repeats} drawings); {merged} byte-identical duplicates "
            "merged into the record of their first path (captions joined, one split)",
            DataWarning,
            stacklevel=2,
        )
    return check_images(out, False, str(root)) if check else out
