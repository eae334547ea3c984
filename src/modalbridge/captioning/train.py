"""Training task ``caption``: a caption decoder on cached image features, selected by decoded CIDEr.

``modalbridge train configs/caption/sat_coco.yaml`` runs it. Steps:

1. read the dataset (``data.data`` SPEC, see :mod:`modalbridge.captioning.datasets`), split train/val;
2. encode every image once with the frozen ``data.encoder`` into the feature cache (:mod:`.features`);
3. build the vocabulary from the training captions (a :class:`~modalbridge.captioning.vocab.Vocab`, or the LM's
   subword tokenizer for ClipCap; with ``init_from`` the pretrained model's vocabulary is reused);
4. train with teacher-forced cross-entropy (+ Show, Attend and Tell's attention regulariser), one sample per
   (image, caption) pair;
5. validate with the teacher-forced loss (``val/loss``) *and* with real decoding: beam search over the first
   ``val_cider_images`` validation images (``val_beam``, ``val_length_penalty``; or nucleus sampling with
   ``val_top_p``/``val_temperature``; captions are one line and never hold ``<unk>``), scored by
   :func:`modalbridge.metrics.score` without METEOR, logged as ``val/CIDEr``, ``val/BLEU-4``, ``val/ROUGE-L``;
   ``checkpoint.monitor: val/CIDEr`` (mode max) keeps the best model;
6. export ``run_dir/model``: ``config.json`` (decoder config incl. encoder and LM names and dims),
   ``model.safetensors``, ``vocab.json``, ``metrics.json`` (which epoch each number is from: ``CaptionTask.export``).

Which decoder: ``model.arch`` names an entry of :data:`~modalbridge.captioning.decoder.DECODERS`; ``model.params`` are
fields of its config class (dims, dropout, ``lm`` for ClipCap, ...). Fields that follow from the data (vocabulary
size, feature dims, encoder, special ids) are filled in here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import lightning.pytorch as pl
import torch

from modalbridge import checkpoint as ckpt
from modalbridge.captioning import features
from modalbridge.captioning.decoder import DECODERS
from modalbridge.captioning.pairs import CaptionCodec, PairSet, Split, load_records, make_collate, readable, take_split
from modalbridge.captioning.vocab import SPECIALS, SubwordVocab, Vocab
from modalbridge.captioning.word_vectors import SPACY_MD, load_word_vectors
from modalbridge.config import from_dict
from modalbridge.errors import UserError
from modalbridge.registry import TASKS
from modalbridge.training.batching import make_loader
from modalbridge.training.task import BridgeModule, Task

ENCODER_WEIGHTS = "encoder.safetensors"  # a fine-tuned captioner's encoder blocks, next to model.safetensors


@dataclass
class CaptionDataConfig:
    data: str = ""  # dataset SPEC, e.g. "coco-karpathy:/data/coco/dataset_coco.json" or "folder:/data/scenes"
    train_split: str = "train"
    val_split: str = "val"
    encoder: str = "efficientnet-lite0"  # image encoder name or path (frozen; features are cached)
    # Encoder fine-tuning (the seeds' recipe: a frozen warm-up, then the last blocks train): the last
    # trainable_blocks blocks (+ the head norm) run on the fly and train from epoch unfreeze_after on, at encoder_lr;
    # the cache holds the frozen stem's output (before those blocks) instead of the final grid. 0 = frozen encoder.
    trainable_blocks: int = 0
    unfreeze_after: int = 0  # epochs with the whole encoder frozen first (the decoder warms up)
    encoder_lr: float = 1.0e-4
    cache_dir: str = "cache/features"
    feature_dtype: Literal["float16", "float32", "bfloat16"] = "float16"
    extract_batch_size: int = 32
    extract_device: str = "cpu"
    num_workers: int = 0
    batch_size: int = 32
    group_by_length: bool = False  # batches of similar caption lengths (less padding: ClipCap trains faster)
    max_len: int = 20  # words (SAT) or LM tokens (ClipCap) per training caption; longer ones are truncated
    min_freq: int = 5  # vocabulary threshold (words seen fewer times become <unk>; bpe: a merge's minimum count)
    max_vocab: int | None = None
    # "word": one id per word (Show-Attend-Tell's vocabulary); "bpe": byte-pair-encoded pieces trained on the
    # training captions (tokenizers library), max_vocab pieces (default 2000) - for titles full of rare words.
    vocab: Literal["word", "bpe"] = "word"
    lower: bool = True
    max_train_images: int = 0  # 0 = all; a prefix of the split for quick runs
    max_val_images: int = 0  # 0 = all; images used for the teacher-forced val/loss
    val_cider_images: int = 500  # images decoded for val/CIDEr at each validation; 0 = all val images
    val_beam: int = 3
    # Decoding of val/CIDEr (the same options as `caption --length-penalty/--top-p/--temperature`): beam search
    # ranks finished beams by logprob / length ** val_length_penalty; val_top_p or val_temperature switches to
    # nucleus sampling (seeded; val_beam must then be 1).
    val_length_penalty: float = 1.0
    val_top_p: float | None = None
    val_temperature: float | None = None
    val_tokenizer: Literal["auto", "ptb", "unicode"] = "auto"  # metric tokenizer; "unicode" needs no Java
    lang: str = "en"


@dataclass
class CaptionModelConfig:
    arch: str = "show_attend_tell"  # a registered caption decoder: show_tell, show_attend_tell, clipcap
    params: dict[str, Any] = field(default_factory=dict)  # fields of the decoder's config class
    # Pretrained word vectors for the word embedding (show_tell, show_attend_tell): a word2vec/GloVe/fastText text
    # file, or "spacy-md"; embed_dim follows the vectors. "" = random init. Words without a vector start random.
    word_vectors: str = ""
    freeze_word_vectors: bool = False  # keep the pretrained embedding fixed (words without a vector stay random)


# ---------------------------------------------------------------------------------------------------- data
class CaptionData(pl.LightningDataModule):
    def __init__(self, task: CaptionTask):
        super().__init__()
        self.task = task

    def train_dataloader(self):
        t = self.task
        lengths = [len(ids) for _, ids in t.train_data.pairs] if t.cfg.data.group_by_length else None
        return make_loader(PairSet(t.train_data.features, t.train_data.pairs), t.cfg.data.batch_size, True, t.cfg.seed,
                           self.trainer, lengths=lengths, collate_fn=make_collate(t.pad_id),
                           num_workers=t.cfg.data.num_workers)

    def val_dataloader(self):
        t = self.task
        return make_loader(PairSet(t.val_data.features, t.val_data.pairs), t.cfg.data.batch_size, False, t.cfg.seed,
                           self.trainer, collate_fn=make_collate(t.pad_id), num_workers=t.cfg.data.num_workers)


# -------------------------------------------------------------------------------------------------- module
class CaptionModule(BridgeModule):
    """The decoder (``model``, what gets exported) and, when fine-tuning, the encoder's last blocks
    (``encoder_top``, an :class:`~modalbridge.vision.encoders.EncoderTop` over the cached stem rows)."""

    def __init__(self, model, optim_cfg, task: CaptionTask):
        super().__init__(model, optim_cfg)
        self.task = task
        self.encoder_top = task.encoder_top

    def trainable_parameters(self):
        params = super().trainable_parameters()
        if self.encoder_top is None:
            return params
        top = [p for p in self.encoder_top.parameters() if p.requires_grad]
        return [{"params": params}, {"params": top, "lr": self.task.cfg.data.encoder_lr}]

    def features(self, rows: torch.Tensor) -> torch.Tensor:
        """Batch rows -> decoder features: the rows themselves, or the encoder's last blocks run on stem rows
        (with gradients only in training from epoch ``unfreeze_after`` on; frozen blocks stay in eval mode)."""
        top = self.encoder_top
        if top is None:
            return rows
        tune = self.training and self.current_epoch >= self.task.cfg.data.unfreeze_after
        top.train(tune)
        with torch.set_grad_enabled(tune and torch.is_grad_enabled()):
            return getattr(top(rows), self.task.feature)

    def training_step(self, batch, batch_idx):
        feats, input_ids, targets = batch
        out = self.model(self.features(feats), input_ids, targets)
        self.log("train/loss", out.loss, prog_bar=True, batch_size=len(feats))
        return out.loss

    def validation_step(self, batch, batch_idx):
        feats, input_ids, targets = batch
        out = self.model(self.features(feats), input_ids, targets)
        self.log("val/loss", out.loss, prog_bar=True, sync_dist=True, batch_size=len(feats))

    def on_validation_epoch_end(self):
        if self.trainer.sanity_checking:
            return
        # Every rank decodes the same images, so the monitored metric exists (and agrees) on all of them.
        scores = self.task.decode_and_score(self.model, device=self.device)
        for key in ("CIDEr", "BLEU-4", "ROUGE-L"):
            self.log(f"val/{key}", float(scores[key]), prog_bar=key == "CIDEr")


# ---------------------------------------------------------------------------------------------------- task
@TASKS.register("caption")
class CaptionTask(Task):
    DataConfig = CaptionDataConfig
    ModelConfig = CaptionModelConfig

    def __init__(self, cfg):
        super().__init__(cfg)
        self._prepared = False
        self.encoder_top = None  # the encoder's trainable last blocks (data.trainable_blocks > 0), set by prepare()

    # The model's dims follow from the data (vocabulary, features), so the data is prepared first.
    def prepare(self) -> None:
        if self._prepared:
            return
        from modalbridge.vision.encoders import build_encoder, split_encoder

        d, m = self.cfg.data, self.cfg.model
        self.decoding = _val_decoding(d)  # bad decoding options fail before any feature extraction
        cls = DECODERS.get_entry(m.arch)
        _check_word_vectors(m, cls)  # so does a missing vectors file
        from_dict(cls.config_class, dict(m.params), prefix="model.params.")  # and bad params (keys, types, values)
        records = load_records(d.data)
        train_recs = take_split(records, d.train_split, d.max_train_images)
        # Validation needs features for the val/loss images and the val/CIDEr images (prefixes of the split).
        limit = max(d.max_val_images, d.val_cider_images) if d.max_val_images > 0 and d.val_cider_images > 0 else 0
        val_recs = take_split(records, d.val_split, limit)
        if d.trainable_blocks < 0 or d.unfreeze_after < 0:
            raise UserError("data.trainable_blocks and data.unfreeze_after must be >= 0")
        encoder = build_encoder(d.encoder, trainable_blocks=d.trainable_blocks)
        enc = encoder.describe()
        params = dict(m.params)
        feature = params.get("feature", getattr(cls, "feature", "grid"))
        store = {"store_grid": feature == "grid", "dtype": d.feature_dtype}
        if d.trainable_blocks:  # cache the frozen stem; the last blocks run in the training loop
            try:
                encoder, self.encoder_top = split_encoder(encoder)
            except NotImplementedError as e:
                raise UserError(f"data.trainable_blocks: {e}") from None
            store["store_grid"] = True

        def features_of(encoder, recs: list, what: str) -> tuple[list, features.FeatureCache]:
            cache = features.cached(encoder, [r.path for r in recs], d.cache_dir, **store)
            if cache is None:  # extraction ahead: first leave out files that cannot be read
                recs = readable(recs, what)
                cache = features.extract(encoder, [r.path for r in recs], d.cache_dir, batch_size=d.extract_batch_size,
                                         num_workers=d.num_workers, device=d.extract_device, **store)
            return recs, cache

        (train_recs, train_cache), (val_recs, val_cache) = (features_of(encoder, train_recs, d.train_split),
                                                            features_of(encoder, val_recs, d.val_split))
        del encoder
        self.model = self._build_model(cls, params, enc, [c for r in train_recs for c in r.captions])
        self.feature = self.model.feature
        self.text = CaptionCodec(self.vocab, None if self.vocab is not None else self.model, d.max_len)
        self.pad_id = self.model.config.pad_id
        rows = "grid" if self.encoder_top is not None else self.feature  # stem rows are stored as the grid
        self.train_data = self._make_split(train_recs, train_cache.get(rows), skip=train_cache.failed)
        n_val = d.max_val_images if d.max_val_images > 0 else len(val_recs)
        val_rows = val_cache.get(rows)
        self.val_data = self._make_split(val_recs[:n_val], val_rows if n_val == len(val_rows) else val_rows[:n_val],
                                         skip=val_cache.failed)
        n_cider = d.val_cider_images if d.val_cider_images > 0 else len(val_recs)
        bad = set(val_cache.failed)  # images that could not be decoded are not scored either
        keep = [i for i in range(len(val_recs)) if i not in bad][:n_cider]
        self.cider_records, self.cider_features = [val_recs[i] for i in keep], val_rows[keep]
        self._prepared = True

    def _build_model(self, cls, params: dict, enc: dict, train_captions: list[str]):
        d = self.cfg.data
        derived = {"feature_dim": enc["feature_dim"], "num_positions": enc["num_positions"],
                   "encoder": enc["encoder"], "encoder_kind": enc["encoder_kind"]}
        if cls.model_type == "clipcap":
            from modalbridge.captioning.clipcap import ClipCap, ClipCapConfig
            from modalbridge.captioning.lm import load_lm, special_ids

            lm, tok = load_lm(params.get("lm", ClipCapConfig.lm))
            bos, eos, pad = special_ids(tok)
            derived.update(lm_dim=lm.get_input_embeddings().weight.shape[1], bos_id=bos, eos_id=eos, pad_id=pad,
                           vocab_size=lm.get_output_embeddings().weight.shape[0])
            config = from_dict(ClipCapConfig, {**params, **derived}, prefix="model.params.")
            self.vocab = None
            return ClipCap(config, lm=lm, tokenizer=tok)
        if self.cfg.init_from:
            self.vocab = _vocab_of(self.cfg.init_from)
        else:
            if d.vocab == "bpe":
                self.vocab = SubwordVocab.build(train_captions, min_freq=d.min_freq, max_size=d.max_vocab or 2000,
                                                lower=d.lower)
            else:
                self.vocab = Vocab.build(train_captions, min_freq=d.min_freq, max_size=d.max_vocab, lower=d.lower)
        v = self.vocab
        derived.update(vocab_size=len(v), pad_id=v.pad_id, bos_id=v.bos_id, eos_id=v.eos_id)
        matrix = self._word_vectors(params)
        if matrix is not None:
            derived["embed_dim"] = matrix.shape[1]
        config = from_dict(cls.config_class, {**params, **derived}, prefix="model.params.")
        model = cls(config)
        if matrix is not None:
            with torch.no_grad():
                model.embed.weight.copy_(matrix)
            model.embed.weight.requires_grad_(not self.cfg.model.freeze_word_vectors)
        return model

    def _word_vectors(self, params: dict) -> torch.Tensor | None:
        """``model.word_vectors`` -> the embedding matrix ``(V, E)`` (None when unset); ``word_vectors_found`` records
        how many vocabulary words got a pretrained vector."""
        m = self.cfg.model
        self.word_vectors_found = None
        _check_word_vectors(m, type(self))
        if not m.word_vectors.strip():
            return None
        try:
            vectors = load_word_vectors(m.word_vectors, self.vocab.itos[len(SPECIALS) :])
            matrix, found = self.vocab.embedding_matrix(vectors, seed=self.cfg.seed)
        except UserError as e:
            raise UserError(f"model.word_vectors={m.word_vectors}: {e}") from None
        if "embed_dim" in params and int(params["embed_dim"]) != matrix.shape[1]:
            raise UserError(f"model.params.embed_dim={params['embed_dim']} but model.word_vectors has "
                            f"{matrix.shape[1]}-d vectors; set model.params.embed_dim={matrix.shape[1]} "
                            "(or leave it out)")
        self.word_vectors_found = (found, len(self.vocab) - len(SPECIALS))
        return matrix

    def _make_split(self, records: list, feats: torch.Tensor, skip: list[int] = ()) -> Split:
        """One (row, caption ids) pair per caption; ``skip``: rows whose image could not be decoded."""
        bad = set(skip)
        pairs = [(i, self.text.encode(c)) for i, r in enumerate(records) if i not in bad for c in r.captions]
        if not pairs:
            raise UserError("a split has images but no captions")
        return Split(records, feats, pairs)

    def build_module(self) -> CaptionModule:
        self.prepare()
        return CaptionModule(self.model, self.cfg.optim, self)

    def build_datamodule(self) -> CaptionData:
        self.prepare()
        return CaptionData(self)

    @torch.no_grad()
    def decode_and_score(self, model, device=None, batch_size: int = 64) -> dict:
        """Beam-search the CIDEr images with ``model`` and score them against their references."""
        from modalbridge.captioning.pipeline import decode_features
        from modalbridge.metrics import score

        d = self.cfg.data
        was_training = model.training
        model.eval()
        try:
            o = self.decoding
            feats = self.cider_features
            if self.encoder_top is not None:  # stem rows -> final features with the current encoder blocks
                top_mode = self.encoder_top.training
                self.encoder_top.eval()
                dev = device or next(self.encoder_top.parameters()).device
                feats = torch.cat([getattr(self.encoder_top(feats[i : i + batch_size].float().to(dev)),
                                           self.feature).cpu() for i in range(0, len(feats), batch_size)])
                self.encoder_top.train(top_mode)
            seqs = decode_features(model, feats, beam=o.beam, batch_size=batch_size, device=device,
                                   length_penalty=None if o.sampling else o.length_penalty, top_p=o.top_p,
                                   temperature=o.temperature, seed=self.cfg.seed, vocab=self.vocab)
        finally:
            model.train(was_training)
        hyps = {str(i): self.text.decode(s["tokens"]) for i, s in enumerate(seqs)}
        refs = {str(i): list(r.captions) for i, r in enumerate(self.cider_records)}
        return score(refs, hyps, lang=d.lang, meteor=False, tokenizer=d.val_tokenizer)

    def export(self, module, path: Path, metrics: dict, run_config: dict) -> Path:
        """Write the model directory. ``metrics.json`` gets, besides the engine's keys (plain = the last epoch,
        ``last/epoch``; ``best/<monitor>`` at ``best/epoch``; ``weights/epoch``), the exported weights' own decoded
        scores ``weights/val/CIDEr``, ``weights/val/BLEU-4``, ``weights/val/ROUGE-L`` (same images and decoding as
        ``val/CIDEr``), so no number is read beside weights from another epoch."""
        device = next(module.model.parameters()).device
        scores = self.decode_and_score(module.model, device=device)
        metrics = {**metrics, **{f"weights/val/{k}": float(scores[k]) for k in ("CIDEr", "BLEU-4", "ROUGE-L")}}
        vocab = self.vocab.to_dict() if self.vocab is not None else {
            "format": "modalbridge.lm-tokenizer/1", "lm": module.model.config.lm}
        extra = {"run_config": run_config, "data": self.cfg.data.data, "task": "caption"}
        tensors = None
        if self.encoder_top is not None:  # the fine-tuned blocks travel with the decoder (load_captioner applies them)
            n = self.cfg.data.trainable_blocks
            extra["encoder_trainable_blocks"] = n
            tensors = {ENCODER_WEIGHTS: self.encoder_top.encoder.top_state()}
        found = getattr(self, "word_vectors_found", None)
        if found is not None:
            m = self.cfg.model
            extra["word_vectors"] = {"source": m.word_vectors, "frozen": m.freeze_word_vectors,
                                     "words_with_vectors": found[0], "words": found[1]}
        return ckpt.save(module.model, path, vocab=vocab, metrics=metrics, extra=extra, tensors=tensors)


def _check_word_vectors(m: CaptionModelConfig, cls) -> None:
    spec = m.word_vectors.strip()
    if not spec:
        if m.freeze_word_vectors:
            raise UserError("model.freeze_word_vectors needs model.word_vectors (a vectors file or spacy-md)")
        return
    if getattr(cls, "model_type", "") == "clipcap":
        raise UserError("model.word_vectors is for word decoders (show_tell, show_attend_tell); ClipCap embeds with "
                        "its language model")
    if spec.lower() != SPACY_MD and not Path(spec).expanduser().is_file():
        raise UserError(f"model.word_vectors: no such file {spec} (a word2vec/GloVe/fastText text file, or spacy-md)")


def _val_decoding(d: CaptionDataConfig):
    """The ``data.val_*`` decoding options, checked like the CLI's (one error naming the config key)."""
    from modalbridge.captioning.pipeline import check_decoding

    sampling = d.val_top_p is not None or d.val_temperature is not None
    try:
        return check_decoding(d.val_beam, None if sampling and d.val_length_penalty == 1.0 else d.val_length_penalty,
                              d.val_top_p, d.val_temperature)
    except UserError as e:
        raise UserError(f"config data.val_beam/val_length_penalty/val_top_p/val_temperature: {e}") from None


def _vocab_of(source: str | Path):
    """The vocabulary of a model directory (or a run dir's ``model/``), for fine-tuning with ``init_from``."""
    source = Path(source)
    model_dir = source / "model" if (source / "model" / ckpt.CONFIG_NAME).is_file() else source
    data = ckpt.read_json_file(model_dir / ckpt.VOCAB_NAME)
    if data is None:
        raise UserError(f"init_from {source}: no {ckpt.VOCAB_NAME}; cannot reuse its vocabulary")
    return Vocab.from_dict(data)
