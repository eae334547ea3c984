"""Image -> caption: load a trained captioner once, caption images, evaluate on a dataset split.

    captioner = load_captioner("runs/sat_coco/.../model")        # or None: the embedded "caption-fashion"
    captioner.caption(["a.jpg", pil_image, raw_bytes], beam=3)   # [{"image", "caption", "logprob", "words", ...}]
    captioner.caption(images, top_p=0.9, temperature=0.7)       # nucleus sampling instead of beam search
    evaluate(captioner, records, beam=3)                         # {"BLEU-1".."BLEU-4", "METEOR", ..., "n_images"}

A captioning model directory holds the decoder (``show_tell``, ``show_attend_tell`` or ``clipcap``), its vocabulary
and, in ``config.json``, the image encoder it was trained on (and ClipCap's LM); the encoder is rebuilt from that
name or path. The web app (:mod:`modalbridge.app`) and the CLI both call these functions.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypedDict

import torch
from PIL import Image

from modalbridge import assets
from modalbridge import checkpoint as ckpt
from modalbridge.captioning.decoding import clean_caption, line_constraints
from modalbridge.captioning.vocab import UNK_ID, Vocab
from modalbridge.errors import UserError

DEFAULT_MODEL = "caption-fashion"
CAPTION_MODEL_TYPES = ("show_tell", "show_attend_tell", "clipcap")
MAX_BEAM = 20


MAX_LENGTH_PENALTY = 5.0
MAX_TEMPERATURE = 10.0


def _number(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise UserError(f"{name} must be a finite number, got {value!r}")
    return float(value)


def check_beam(beam: int) -> int:
    """Beam size: an integer from 1 (greedy) to ``MAX_BEAM``."""
    if not isinstance(beam, int) or isinstance(beam, bool) or not 1 <= beam <= MAX_BEAM:
        raise UserError(f"beam must be an integer from 1 to {MAX_BEAM}, got {beam!r}")
    return beam


def check_length_penalty(value: float) -> float:
    """Beam search's length-normalisation exponent (``logprob / L ** value``): from 0 (raw sum) to 5."""
    value = _number(value, "length penalty")
    if not 0.0 <= value <= MAX_LENGTH_PENALTY:
        raise UserError(f"length penalty must be from 0 to {MAX_LENGTH_PENALTY:g}, got {value:g}")
    return value


def check_top_p(value: float) -> float:
    """Nucleus sampling's probability mass: in (0, 1]."""
    value = _number(value, "top-p")
    if not 0.0 < value <= 1.0:
        raise UserError(f"top-p must be greater than 0 and at most 1, got {value:g}")
    return value


def check_temperature(value: float) -> float:
    """Sampling temperature: from 0 (greedy) to ``MAX_TEMPERATURE``."""
    value = _number(value, "temperature")
    if not 0.0 <= value <= MAX_TEMPERATURE:
        raise UserError(f"temperature must be from 0 to {MAX_TEMPERATURE:g}, got {value:g}")
    return value


@dataclass(frozen=True)
class Decoding:
    """How captions are decoded: beam search (``beam``, ``length_penalty``), or nucleus sampling when ``top_p`` or
    ``temperature`` is set (one sample per image; a missing one of the two means 1.0)."""

    beam: int = 3
    length_penalty: float = 1.0
    top_p: float | None = None
    temperature: float | None = None

    @property
    def sampling(self) -> bool:
        return self.top_p is not None or self.temperature is not None


def check_decoding(
    beam: int | None = None,
    length_penalty: float | None = None,
    top_p: float | None = None,
    temperature: float | None = None,
) -> Decoding:
    """Validate decoding options (None = not given) and their combination into a :class:`Decoding`.

    Sampling (``top_p``/``temperature``) draws one caption per image, so it excludes a beam above 1 and a length
    penalty (which only ranks finished beams).

    Raises:
        UserError: a value out of range or a contradictory combination.
    """
    d = Decoding(
        beam=3 if beam is None else check_beam(beam),
        length_penalty=1.0 if length_penalty is None else check_length_penalty(length_penalty),
        top_p=None if top_p is None else check_top_p(top_p),
        temperature=None if temperature is None else check_temperature(temperature),
    )
    if d.sampling:
        if beam is not None and beam != 1:
            raise UserError(f"beam {beam} and top-p/temperature sampling exclude each other: sampling draws one "
                            "caption per image; leave the beam out (or use 1)")
        if length_penalty is not None:
            raise UserError("length penalty applies to beam search; it has no effect with top-p/temperature sampling")
        d = Decoding(1, 1.0, d.top_p, d.temperature)
    return d


def caption_constraints(model, vocab=None) -> tuple[list[int], list[int]]:
    """``(stop, suppress)`` token ids for :class:`~modalbridge.captioning.decoding.Constrained`: captions are one
    line without control characters, and a word vocabulary's ``<unk>`` is never emitted (the model would otherwise
    write "<unk>" for every rare word)."""
    if model.model_type == "clipcap":
        return model.line_constraints()
    stop, suppress = line_constraints(vocab.itos if vocab is not None else [])
    return stop, sorted({*suppress, UNK_ID})


@torch.no_grad()
def decode_features(
    model,
    features: torch.Tensor,
    beam: int | None = None,
    batch_size: int = 64,
    device=None,
    max_len: int | None = None,
    length_penalty: float | None = None,
    top_p: float | None = None,
    temperature: float | None = None,
    seed: int = 0,
    vocab=None,
) -> list[dict]:
    """Decode cached features ``(N, ...)``: beam search (greedy for ``beam=1``), or nucleus sampling when ``top_p``
    or ``temperature`` is given (see :func:`check_decoding`; samples are reproducible from ``seed``).

    Captions stop at EOS or at a token holding a line break, never contain control characters, and never hold a
    word vocabulary's ``<unk>`` (see :func:`caption_constraints`; pass the model's ``vocab`` so its control-character
    words are excluded too).

    Returns one dict per image: ``tokens`` (generated ids, without ``<bos>``, up to and excluding ``<eos>``),
    ``logprob`` (sum of the token log-probabilities, ``<eos>`` included) and ``attention`` (``(len(tokens), P)``
    tensor or None).
    """
    from modalbridge.captioning import decoding

    opts = check_decoding(beam, length_penalty, top_p, temperature)
    c = model.config
    max_len = max_len or c.max_len
    device = device or next(model.parameters()).device
    stop, suppress = caption_constraints(model, vocab)
    decoder = decoding.Constrained(model, c.eos_id, stop=stop, suppress=suppress)
    generator = torch.Generator(device=device).manual_seed(seed) if opts.sampling else None
    out: list[dict] = []
    for lo in range(0, len(features), batch_size):
        memory = features[lo : lo + batch_size].to(device).float()
        if opts.sampling:
            res = decoding.sample(decoder, memory, bos_id=c.bos_id, eos_id=c.eos_id, max_len=max_len,
                                  top_p=1.0 if opts.top_p is None else opts.top_p,
                                  temperature=1.0 if opts.temperature is None else opts.temperature,
                                  generator=generator)
        elif opts.beam == 1:
            res = decoding.greedy(decoder, memory, bos_id=c.bos_id, eos_id=c.eos_id, max_len=max_len)
        else:
            res = decoding.beam_search(decoder, memory, beam_size=opts.beam, bos_id=c.bos_id, eos_id=c.eos_id,
                                       max_len=max_len, length_penalty=opts.length_penalty)
        out.extend(_unpack(res, c.eos_id))
    return out


def _unpack(res, eos_id: int) -> list[dict]:
    """decoding.py's batch result -> per-image dicts (tokens cut at <eos>)."""
    items = []
    for hyp in res:
        tokens = [int(t) for t in hyp.tokens]
        if eos_id in tokens:
            tokens = tokens[: tokens.index(eos_id)]
        attn = getattr(hyp, "attention", None)
        if attn is not None:
            attn = attn[: len(tokens)].detach().float().cpu()
        items.append({"tokens": tokens, "logprob": float(hyp.logprob), "attention": attn})
    return items


class Caption(TypedDict):
    """One image's result of :meth:`Captioner.caption` (a plain dict, so it goes to JSON as it is; the image -> text
    counterpart of :class:`modalbridge.t2i.pipeline.Drawing`)."""

    image: str | None  # the path, or None for bytes / PIL input
    caption: str  # one line, no control characters
    logprob: float  # sum of the emitted tokens' log-probabilities (a line break counted as the end)
    words: list[str]  # the generated tokens as text
    attention: list[list[float]] | None  # (len(words), P), Show-Attend-Tell only


class Captioner:
    """A loaded captioning model with its image encoder and vocabulary; reuse it for many calls.

    Args:
        model: a caption decoder (:mod:`.sat` or :mod:`.clipcap`) in eval mode.
        encoder: the :class:`~modalbridge.vision.encoders.ImageEncoder` named in the model's config.
        vocab: the word :class:`~modalbridge.captioning.vocab.Vocab` (None for ClipCap: the LM tokenizer decodes).
        source: where the model came from (for messages).
    """

    def __init__(self, model, encoder, vocab=None, source: str = "", device: str | torch.device = "cpu"):
        self.model = model.eval().to(device)
        self.encoder = encoder.eval().to(device)
        self.vocab = vocab
        self.source = source
        self.device = torch.device(device)
        self.metrics = None

    @property
    def has_attention(self) -> bool:
        return self.model.model_type == "show_attend_tell"

    def words(self, tokens: list[int]) -> list[str]:
        """Display tokens of ``tokens``, aligned one-to-one with attention rows."""
        if self.vocab is not None:
            # one display token per id; a subword piece shows without its word-start marker
            return [self.vocab.itos[t].removeprefix("\u2581") if 0 <= t < len(self.vocab) else "<unk>"
                    for t in tokens]
        tok = self.model.tokenizer  # ClipCap has no attention to align with: drop special/empty pieces
        pieces = (tok.decode([t], skip_special_tokens=True).strip() for t in tokens)
        return [p for p in pieces if p]

    def text(self, tokens: list[int]) -> str:
        """Caption text of ``tokens``: always one line without control characters."""
        return clean_caption(self.vocab.decode(tokens) if self.vocab is not None else self.model.decode_text(tokens))

    def _load(self, image: Any) -> tuple[str | None, Image.Image]:
        from modalbridge.vision.io import load_image

        if isinstance(image, (str, Path)):
            return str(image), load_image(image)
        return None, load_image(image)  # PIL image, bytes, array: transparency and modes handled the same way

    @torch.no_grad()
    def caption(
        self,
        images: list,
        beam: int | None = None,
        max_len: int | None = None,
        batch_size: int = 16,
        length_penalty: float | None = None,
        top_p: float | None = None,
        temperature: float | None = None,
        seed: int = 0,
    ) -> list[Caption]:
        """Caption ``images`` (paths, raw bytes or PIL images).

        Decoding: beam search with ``beam`` (default 3; 1 = greedy) and ``length_penalty`` (default 1), or nucleus
        sampling when ``top_p`` or ``temperature`` is given (reproducible from ``seed``); see :func:`check_decoding`.

        Returns one :class:`Caption` per image, in order.

        Raises:
            UserError: bad decoding options; an unreadable, empty, truncated or oversized image (all images are
                checked before decoding).
        """
        check_decoding(beam, length_penalty, top_p, temperature)
        opts = {"beam": beam, "length_penalty": length_penalty, "top_p": top_p, "temperature": temperature,
                "seed": seed, "vocab": self.vocab}
        loaded = [self._load(im) for im in images]
        out: list[Caption] = []
        for lo in range(0, len(loaded), batch_size):
            chunk = loaded[lo : lo + batch_size]
            enc = self.encoder.encode([im for _, im in chunk])
            memory = enc.grid if self.model.feature == "grid" else enc.pooled
            for (name, _), res in zip(chunk, decode_features(self.model, memory, max_len=max_len,
                                                             device=self.device, **opts), strict=True):
                attn = res["attention"]
                out.append(Caption(
                    image=name,
                    caption=self.text(res["tokens"]),
                    logprob=res["logprob"],
                    words=self.words(res["tokens"]),
                    attention=attn.tolist() if attn is not None and self.has_attention else None,
                ))
        return out


def load_captioner(spec: str | Path | None = None, device: str | torch.device = "cpu") -> Captioner:
    """Load a captioning model directory (path, embedded name, or None for ``caption-fashion``) and its encoder,
    once per process, directory and device (like ``load_drawer``); a directory whose files changed since is
    loaded again."""
    path = assets.resolve_model(spec, DEFAULT_MODEL, "captioning model")
    stamp = tuple((f.name, st.st_mtime_ns, st.st_size) for f in sorted(path.iterdir())
                  if f.is_file() and (st := f.stat()))
    return _load_captioner(str(path), str(torch.device(device)), stamp)


@functools.lru_cache(maxsize=4)
def _load_captioner(directory: str, device: str, stamp: tuple) -> Captioner:
    from modalbridge.captioning import clipcap, sat  # noqa: F401 - register the model types

    path = Path(directory)
    model = ckpt.load(path, expected=CAPTION_MODEL_TYPES)
    vocab = None
    if model.model_type != "clipcap":
        data = ckpt.read_json_file(path / ckpt.VOCAB_NAME)
        if data is None:
            raise UserError(f"{path} has no {ckpt.VOCAB_NAME}; a captioning model needs its vocabulary")
        vocab = Vocab.from_dict(data)
        if len(vocab) != model.config.vocab_size:
            raise UserError(
                f"{path}: vocab.json has {len(vocab)} words but the model expects {model.config.vocab_size}"
            )
    encoder = _encoder_of(path, model.config.encoder)
    if encoder.dim != model.config.feature_dim:
        raise UserError(f"{path}: encoder '{model.config.encoder}' gives {encoder.dim}-d features, the model was "
                        f"trained on {model.config.feature_dim}-d")
    cap = Captioner(model, encoder, vocab, source=str(path), device=device)
    cap.metrics = ckpt.read_json_file(path / ckpt.METRICS_NAME)
    return cap


def _encoder_of(path: Path, name: str):
    """The image encoder a captioner was trained with: ``name`` as published, or with the fine-tuned last blocks
    that training saved beside the decoder (``encoder.safetensors``, see ``data.trainable_blocks``)."""
    from modalbridge.vision.encoders import build_encoder

    file = path / "encoder.safetensors"
    if not file.is_file():
        return build_encoder(name)
    n = int(ckpt.read_meta(path).get("extra", {}).get("encoder_trainable_blocks", 0))
    if n <= 0:
        raise UserError(f"{path}: {file.name} present but config.json's extra has no encoder_trainable_blocks")
    encoder = build_encoder(name, trainable_blocks=n)
    encoder.load_top_state(ckpt.load_state_dict(file), str(file))
    return encoder.requires_grad_(False).eval()


def evaluate(
    captioner: Captioner,
    records: list,
    beam: int | None = None,
    batch_size: int = 16,
    meteor: bool = True,
    lang: str = "en",
    progress: bool = False,
    length_penalty: float | None = None,
    top_p: float | None = None,
    temperature: float | None = None,
) -> dict:
    """Caption every record's image and score against its references with the COCO metrics.

    Args:
        records: :class:`~modalbridge.captioning.records.CaptionRecord` items (``image_id``, ``path``, ``captions``).
        meteor: include METEOR (starts a JVM).
        beam, length_penalty, top_p, temperature: decoding, as in :meth:`Captioner.caption`.

    Returns:
        ``{"BLEU-1".."BLEU-4", "METEOR", "ROUGE-L", "CIDEr", "n_images"}``.
    """
    from tqdm.auto import tqdm

    from modalbridge.metrics import score

    check_decoding(beam, length_penalty, top_p, temperature)
    records = list(records)
    if not records:
        raise UserError("no images to evaluate")
    refs, hyps = {}, {}
    bar = tqdm(total=len(records), desc="captioning", unit="img", disable=not progress)
    for lo in range(0, len(records), batch_size):
        chunk = records[lo : lo + batch_size]
        results = captioner.caption([r.path for r in chunk], beam=beam, batch_size=batch_size,
                                    length_penalty=length_penalty, top_p=top_p, temperature=temperature, seed=lo)
        for i, (r, res) in enumerate(zip(chunk, results, strict=True)):
            key = f"{lo + i}:{r.image_id}"
            refs[key] = list(r.captions)
            hyps[key] = res["caption"]
        bar.update(len(chunk))
    bar.close()
    scores = score(refs, hyps, lang=lang, meteor=meteor)
    scores["n_images"] = len(records)
    return scores
