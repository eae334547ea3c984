"""Image preprocessing in torch / PIL only, read from a model's ``preprocessor_config.json`` (the Hugging Face
image-processor format), so a hub checkpoint sees the pixels it was trained on: resize -> centre crop -> normalise."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

MAX_ASPECT = 4  # Preprocess centre-crops images more elongated than this before a short-side resize

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)
class Preprocess:
    """Resize -> optional centre crop -> [0, 1] -> (x - mean) / std, like the Hugging Face image processors.

    Args:
        resize: an int resizes the shortest edge to it (aspect kept); ``(H, W)`` resizes to exactly that.
        crop: ``(H, W)`` centre crop after resizing, or None.
        mean, std: per-channel normalisation.
        resample: PIL resampling filter code (2 bilinear, 3 bicubic).
    """

    resize: int | tuple[int, int]
    crop: tuple[int, int] | None
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    resample: int = 3

    @property
    def size(self) -> tuple[int, int]:
        """(H, W) of the tensors this produces."""
        if self.crop is not None:
            return self.crop
        if isinstance(self.resize, int):
            return (self.resize, self.resize)
        return self.resize

    def to_dict(self) -> dict:
        return asdict(self)

    def image(self, img: Image.Image) -> torch.Tensor:
        """One PIL image -> ``(3, H, W)`` float tensor."""
        img = img.convert("RGB")
        w, h = img.size
        if isinstance(self.resize, int):
            # Resizing a 20000x1 image's short side to 256 would make a 5,120,000 x 256 image (gigabytes) that
            # the crop then mostly throws away: first centre-crop anything longer than MAX_ASPECT : 1.
            if max(w, h) > MAX_ASPECT * min(w, h):
                long = MAX_ASPECT * min(w, h)
                if w > h:
                    img = img.crop(((w - long) // 2, 0, (w - long) // 2 + long, h))
                else:
                    img = img.crop((0, (h - long) // 2, w, (h - long) // 2 + long))
                w, h = img.size
            # The HF rule: the short side becomes ``resize``, the long side int(resize * long / short).
            if w <= h:
                new = (self.resize, int(self.resize * h / w))
            else:
                new = (int(self.resize * w / h), self.resize)
        else:
            new = (self.resize[1], self.resize[0])
        if new != (w, h):
            img = img.resize(new, resample=Image.Resampling(self.resample))
        if self.crop is not None:
            ch, cw = self.crop
            w, h = img.size
            top, left = (h - ch) // 2, (w - cw) // 2
            img = img.crop((left, top, left + cw, top + ch))
        x = torch.from_numpy(np.asarray(img, dtype=np.float32).copy()).permute(2, 0, 1) / 255.0  # (3, H, W)
        mean = torch.tensor(self.mean, dtype=torch.float32)[:, None, None]
        std = torch.tensor(self.std, dtype=torch.float32)[:, None, None]
        return (x - mean) / std

    def __call__(self, images: list[Image.Image]) -> torch.Tensor:
        return torch.stack([self.image(im) for im in images])  # (B, 3, H, W)


def _hw(value, default: int) -> tuple[int, int]:
    value = default if value is None else value
    return (value, value) if isinstance(value, int) else (int(value["height"]), int(value["width"]))


def preprocess_from_config(model_dir: Path | None, image_size: int, mean, std, resample: int = 3) -> Preprocess:
    """Read ``preprocessor_config.json`` (HF image-processor format); fall back to the given defaults."""
    cfg = {}
    file = model_dir / "preprocessor_config.json" if model_dir is not None and model_dir.is_dir() else None
    if file is not None and file.is_file():
        cfg = json.loads(file.read_text(encoding="utf-8"))
    if not cfg:
        # No processor shipped (e.g. a tiny test model): the usual ImageNet recipe at the model's input size.
        return Preprocess(int(image_size / 0.875), (image_size, image_size), tuple(mean), tuple(std), resample)
    mean = tuple(cfg.get("image_mean", mean)) if cfg.get("do_normalize", True) else (0.0, 0.0, 0.0)
    std = tuple(cfg.get("image_std", std)) if cfg.get("do_normalize", True) else (1.0, 1.0, 1.0)
    resample = int(cfg.get("resample", resample))
    size = cfg.get("size", image_size)
    if isinstance(size, dict) and "shortest_edge" in size:
        edge = int(size["shortest_edge"])
        if "crop_pct" in cfg:  # ConvNext-style processors (used by ResNet): resize to edge/crop_pct, crop edge.
            if edge < 384:
                return Preprocess(int(edge / cfg["crop_pct"]), (edge, edge), mean, std, resample)
            return Preprocess((edge, edge), None, mean, std, resample)
        crop = _hw(cfg.get("crop_size"), edge) if cfg.get("do_center_crop", False) else None
        return Preprocess(edge, crop, mean, std, resample)
    hw = _hw(size, image_size)
    crop = _hw(cfg.get("crop_size"), hw[0]) if cfg.get("do_center_crop", False) else None
    return Preprocess(hw, crop, mean, std, resample)
