"""Training task ``t2i_mapper``: fit a mapper from cached text-encoder states to a generator's class embeddings.

``modalbridge train configs/t2i/fashion_minilm.yaml`` reads the prepared sentences (``data.sentences``),
loads (or first extracts) their cached hidden states for ``data.encoder``/``data.layer``, takes the targets from
``load_generator(data.generator).class_embeddings`` and trains on the ``train`` split. Every epoch logs
``<split>/{loss,top1,top5,mse,cosine}`` for ``val`` and the held-out ``test_template``/``test_synonym`` splits;
checkpoints follow ``checkpoint.monitor`` (val only). The exported ``model/`` is re-evaluated on every split with
the best weights (``metrics.json``); its ``config.json`` names the text encoder and generator with their dims, and
``vocab.json`` is the class vocabulary (labels, wnids, lemmas: what ``draw`` uses to find class words).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch

from modalbridge import checkpoint as ckpt
from modalbridge.config import from_dict
from modalbridge.errors import UserError, closest
from modalbridge.registry import TASKS
from modalbridge.t2i.features import Features, load_features
from modalbridge.t2i.mapper import MAPPERS, MapperConfig, T2IMapper, dense_weights, retrieval_metrics
from modalbridge.t2i.sentence_files import load_sentences, load_vocabulary, sentences_hash
from modalbridge.training.batching import make_loader, pad
from modalbridge.training.task import BridgeModule, Task

EVAL_SPLITS = ("val", "test_template", "test_synonym")


@dataclass
class T2IDataConfig:
    sentences: str = ""  # a prepared sentence directory (modalbridge prepare)
    encoder: str = "minilm"
    layer: int = -1
    max_length: int | None = None
    cache: str | None = None  # feature cache root; default <sentences>/features
    generator: str = "default"
    batch_size: int = 128
    eval_splits: list[str] = field(default_factory=lambda: list(EVAL_SPLITS))


@dataclass
class T2IModelConfig:
    """``model:`` as the caption task shapes it: ``arch`` names a mapper head (``MAPPERS``), ``params`` are fields of
    :class:`MapperConfig` (``loss``, ``hidden``, ``dropout``, ``token_dropout``, ``temperature``); the dims, the text
    encoder and the generator come from the data."""

    arch: str = "inspan"
    params: dict[str, Any] = field(default_factory=dict)


DERIVED = ("kind", "text_hidden", "embed_dim", "num_classes", "text_encoder", "text_layer", "max_length", "generator")


def model_spec(spec: str) -> str:
    """A local path becomes absolute (the model dir must work from anywhere); names stay names."""
    p = Path(spec).expanduser()
    return str(p.resolve()) if p.exists() else spec


def class_table(generator: str) -> torch.Tensor:
    """The generator's (K, E) class-embedding table."""
    from modalbridge.generators import load_generator

    with torch.no_grad():
        return load_generator(generator).class_embeddings.detach().float().clone()


def read_vocab(sentences_dir: Path, num_classes: int) -> dict:
    """The prepared vocabulary (what ``draw`` uses to find class words) as a dict for the model's ``vocab.json``."""
    vocab = load_vocabulary(sentences_dir)
    if len(vocab) != num_classes:
        raise UserError(f"{sentences_dir}/vocabulary.json lists {len(vocab)} classes, the generator {num_classes}")
    return vocab.to_dict()


class SentenceSet(torch.utils.data.Dataset):
    """Rows of one split: (T_i, H) cached states + sparse class mixture."""

    def __init__(self, feats: Features, rows: list[dict], indices: list[int]):
        self.feats, self.rows, self.indices = feats, rows, indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, j: int):
        i = self.indices[j]
        return self.feats[i], self.rows[i]["classes"], self.rows[i]["weights"]


def make_collate(num_classes: int):
    def collate(items):
        states, mask = pad([s.float() for s, _, _ in items])  # (B, T, H), (B, T)
        weights = dense_weights([c for _, c, _ in items], [w for _, _, w in items], num_classes)  # (B, K)
        return states, mask, weights

    return collate


class T2IModule(BridgeModule):
    def __init__(self, model: T2IMapper, optim_cfg, eval_names: list[str]):
        super().__init__(model, optim_cfg)
        self.eval_names = eval_names

    def validation_step(self, batch, batch_idx, dataloader_idx: int = 0):
        states, mask, weights = batch
        out = self.model(states, mask, weights)
        split = self.eval_names[dataloader_idx]
        metrics = {"loss": out.loss, **retrieval_metrics(out.embedding, weights, self.model.table)}
        for k, v in metrics.items():
            self.log(f"{split}/{k}", v, batch_size=len(states), add_dataloader_idx=False, prog_bar=k == "top1")


class T2IData(pl.LightningDataModule):
    def __init__(self, sets: dict[str, SentenceSet], batch_size: int, num_classes: int, seed: int):
        super().__init__()
        self.sets, self.batch_size, self.seed = sets, batch_size, seed
        self.collate = make_collate(num_classes)

    @property
    def eval_names(self) -> list[str]:
        return [s for s in self.sets if s != "train"]

    def train_dataloader(self):
        return make_loader(self.sets["train"], self.batch_size, True, self.seed, self.trainer, collate_fn=self.collate)

    def val_dataloader(self):
        return [make_loader(self.sets[s], self.batch_size, False, self.seed, self.trainer, collate_fn=self.collate)
                for s in self.eval_names]


@torch.no_grad()
def evaluate(model: T2IMapper, dataset: SentenceSet, batch_size: int = 512) -> dict[str, float]:
    """Metrics of ``model`` over a whole split (sums weighted by batch size)."""
    model.eval()
    collate = make_collate(model.config.num_classes)
    totals: dict[str, float] = {}
    for lo in range(0, len(dataset), batch_size):
        states, mask, weights = collate([dataset[j] for j in range(lo, min(lo + batch_size, len(dataset)))])
        out = model(states, mask, weights)
        for k, v in {"loss": out.loss, **retrieval_metrics(out.embedding, weights, model.table)}.items():
            totals[k] = totals.get(k, 0.0) + float(v) * len(states)
    return {k: v / max(1, len(dataset)) for k, v in totals.items()}


@TASKS.register("t2i_mapper")
class T2ITask(Task):
    DataConfig = T2IDataConfig
    ModelConfig = T2IModelConfig

    def __init__(self, cfg):
        super().__init__(cfg)
        d = cfg.data
        if not d.sentences:
            raise UserError("config key 'data.sentences' is required (a directory made by `modalbridge prepare`)")
        self.sentences_dir = Path(d.sentences)
        if not (self.sentences_dir / "sentences.jsonl").is_file():
            raise UserError(f"{self.sentences_dir} has no sentences.jsonl; run `modalbridge prepare --out DIR` first")
        self._loaded = None

    def load(self):
        """Sentences, cached features and the class table, loaded once."""
        if self._loaded is None:
            d = self.cfg.data
            rows = load_sentences(self.sentences_dir)
            feats = load_features(self.sentences_dir, d.encoder, d.layer, d.max_length, d.cache)
            if len(feats) != len(rows):
                raise UserError(f"feature cache holds {len(feats)} sentences, {self.sentences_dir} has {len(rows)}")
            table = class_table(d.generator)
            top = max((max(r["classes"]) for r in rows if r["classes"]), default=-1)
            if top >= table.shape[0]:
                raise UserError(
                    f"sentences name class {top} but generator '{d.generator}' has {table.shape[0]} classes"
                )
            self.vocab = read_vocab(self.sentences_dir, int(table.shape[0]))
            self._loaded = rows, feats, table
        return self._loaded

    def mapper_config(self) -> MapperConfig:
        rows, feats, table = self.load()
        d, m = self.cfg.data, self.cfg.model
        if m.arch not in MAPPERS:
            known = ", ".join(sorted(MAPPERS))
            raise UserError(f"unknown model.arch '{m.arch}'{closest(m.arch, MAPPERS)}; known: {known}")
        fixed = sorted(set(m.params) & set(DERIVED))
        if fixed:
            raise UserError(f"model.params.{fixed[0]} is set by the task (model.arch, data.*), not by model.params")
        derived = dict(kind=m.arch, text_hidden=feats.hidden_size, embed_dim=int(table.shape[1]),
                       num_classes=int(table.shape[0]), text_encoder=model_spec(d.encoder), text_layer=d.layer,
                       max_length=feats.meta.get("effective_max_length", d.max_length),
                       generator=model_spec(d.generator))
        return from_dict(MapperConfig, {**m.params, **derived}, prefix="model.params.")

    def datasets(self) -> dict[str, SentenceSet]:
        rows, feats, _ = self.load()
        splits = ["train"] + list(self.cfg.data.eval_splits)
        by_split = {s: [i for i, r in enumerate(rows) if r.get("split") == s] for s in splits}
        if not by_split["train"]:
            raise UserError(f"{self.sentences_dir} has no 'train' sentences")
        return {s: SentenceSet(feats, rows, idx) for s, idx in by_split.items() if idx}

    def build_module(self) -> T2IModule:
        _, _, table = self.load()
        try:
            mcfg = self.mapper_config()
        except ValueError as e:
            raise UserError(f"model config: {e}") from None
        names = [s for s in self.datasets() if s != "train"]
        return T2IModule(T2IMapper(mcfg, table=table), self.cfg.optim, names)

    def build_datamodule(self) -> T2IData:
        _, _, table = self.load()
        return T2IData(self.datasets(), self.cfg.data.batch_size, int(table.shape[0]), self.cfg.seed)

    def export(self, module: T2IModule, path: Path, metrics: dict, run_config: dict) -> Path:
        rows, feats, table = self.load()
        final = {f"{s}/{k}": v for s, ds in self.datasets().items() for k, v in evaluate(module.model, ds).items()}
        metrics = {**metrics, **{f"final/{k}": v for k, v in final.items()}}
        extra = {
            "run_config": run_config,
            "sentences": str(self.sentences_dir.resolve()),
            "sentences_hash": sentences_hash(self.sentences_dir),
            "text_encoder": {"name": module.model.config.text_encoder, "hidden_size": feats.hidden_size,
                             "layer": self.cfg.data.layer, "num_layers": feats.meta.get("num_layers")},
            "generator": {"name": module.model.config.generator, "num_classes": int(table.shape[0]),
                          "embed_dim": int(table.shape[1])},
        }
        return ckpt.save(module.model, path, vocab=self.vocab,
                         metrics=metrics, extra=extra)
