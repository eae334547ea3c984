"""The one record type every caption dataset reader returns, and the check that drops records whose image is gone."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modalbridge.errors import UserError


class DataWarning(UserWarning):
    """Something in a dataset was dropped (missing images, empty captions); the message says what and how much."""


@dataclass
class CaptionRecord:
    """One image and its captions.

    Attributes:
        image_id: the dataset's id (COCO id, Karpathy cocoid or file name, Flickr file name, ...), as a string.
        path: image file.
        captions: reference captions (raw text, as published).
        split: ``train``/``val``/``test``, or ``""`` when the format has no split.
        meta: format-specific extras (Karpathy ``tokens``, openclipart ``keywords``, ...).
    """

    image_id: str
    path: Path
    captions: list[str]
    split: str = ""
    meta: dict[str, Any] = field(default_factory=dict)


def check_images(records: list[CaptionRecord], strict: bool = False, source: str = "dataset") -> list[CaptionRecord]:
    """Drop records whose image file is missing, with one warning (count + first names); UserError if ``strict``."""
    missing = [r for r in records if not r.path.is_file()]
    if not missing:
        return records
    names = ", ".join(str(r.path) for r in missing[:5])
    msg = f"{source}: {len(missing)} of {len(records)} image files are missing (first: {names})"
    if strict:
        raise UserError(msg)
    warnings.warn(msg + "; those images are skipped", DataWarning, stacklevel=2)
    gone = {id(r) for r in missing}
    return [r for r in records if id(r) not in gone]
