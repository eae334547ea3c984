"""Training and judging a class resolver (resolver.py) on prepared sentences, with no generator anywhere.

Recipe (``train_resolver``):
1. Prototypes: the frozen text encoder's mean-pooled embedding of every name of every class (WordNet lemmas and the
   everyday names of the vocabulary), of its WordNet gloss, and of "<name>, a kind of <parent>". At this point the
   model *is* the zero-shot baseline plus lexical evidence.
2. Fine-tuning on the prepared sentences' cached token states with soft-target cross-entropy (a sentence naming two
   classes keeps both weights), an L2 anchor that keeps the prototypes near their zero-shot initialisation, and
   mention dropout (half the sentences hide their lexical evidence, so the similarity part learns names too).

Judging (``topk_hits`` with ``accepted_classes``): hand-written prompts whose target is an ImageNet wnid or a WordNet
hypernym wnid ("a dog" is right for any class under dog.n.01).
Notation: N sentences, T word pieces, H hidden, K classes, P prototypes.
"""

from __future__ import annotations

import csv
import json
import math
import random
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from modalbridge.errors import UserError
from modalbridge.t2i.resolver import ClassResolver, ResolverConfig
from modalbridge.t2i.vocabulary import Vocabulary
from modalbridge.training.batching import pad


# ---------------------------------------------------------------------------------------------- prototypes
def prototype_texts(vocab: Vocabulary, glosses: bool = True, parents: bool = True) -> tuple[list[str], list[int]]:
    """Texts that stand for each class (names, gloss, "<name>, a kind of <parent>") and their class indices."""
    texts, classes = [], []
    for c in vocab:
        items = [*c.lemmas]
        if glosses and c.gloss:
            items.append(c.gloss)
        if parents and c.hypernyms:
            items.append(f"{c.lemmas[0]}, a kind of {c.hypernyms[0]}")
        seen = set()
        for t in items:
            if t.lower() not in seen:
                seen.add(t.lower())
                texts.append(t)
                classes.append(c.index)
    return texts, classes


@torch.no_grad()
def pooled(encoder, texts: list[str], batch_size: int = 128) -> torch.Tensor:
    """(N, H) unit-length mean-pooled sentence embeddings (the sentence-transformers pooling of MiniLM)."""
    out = []
    for i in range(0, len(texts), 4096):
        enc = encoder.encode(texts[i : i + 4096], batch_size=batch_size)
        m = enc.mask.unsqueeze(-1).float()  # (B, T, 1)
        out.append(F.normalize((enc.hidden * m).sum(1) / m.sum(1).clamp_min(1), dim=-1))
    return torch.cat(out)


def zero_shot_scores(x: torch.Tensor, prototypes: torch.Tensor, prototype_class: torch.Tensor, k: int) -> torch.Tensor:
    """(N, H) unit vectors -> (N, K) best cosine per class: the baseline a user writes in ten lines."""
    sims = x @ prototypes.t()  # (N, P)
    out = sims.new_full((x.shape[0], k), -1.0)
    return out.scatter_reduce(1, prototype_class.expand_as(sims), sims, reduce="amax", include_self=True)


def build_resolver(vocab: Vocabulary, encoder, encoder_name: str, **config) -> ClassResolver:
    """A resolver initialised at the zero-shot baseline of ``vocab`` (step 1 of the recipe)."""
    texts, classes = prototype_texts(vocab)
    cfg = ResolverConfig(text_encoder=encoder_name, text_hidden=encoder.hidden_size, num_classes=len(vocab),
                         num_prototypes=len(texts), vocabulary=vocab.name, **config)
    model = ClassResolver(cfg)
    model.set_prototypes(pooled(encoder, texts), torch.tensor(classes))
    return model


# ---------------------------------------------------------------------------------------------- training
def batch_states(feats, idx: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows ``idx`` of a feature cache -> padded (B, T, H) float states and (B, T) mask."""
    return pad([feats[i].float() for i in idx])


def soft_targets(rows: list[dict], k: int) -> torch.Tensor:
    w = torch.zeros(len(rows), k)
    for i, r in enumerate(rows):
        for c, x in zip(r["classes"], r["weights"], strict=True):
            w[i, c] += float(x)
    return w / w.sum(-1, keepdim=True).clamp_min(1e-12)


def target_sets(rows: list[dict], k: int) -> list[set[int]]:
    """Per sentence, its target classes of maximal weight (for a sentence naming two classes equally, either)."""
    w = soft_targets(rows, k)
    best = w >= w.max(-1, keepdim=True).values - 1e-6  # (N, K)
    return [set(torch.nonzero(b).flatten().tolist()) for b in best]


def train_resolver(model: ClassResolver, feats, rows: list[dict], vocab: Vocabulary, epochs: int = 3,
                   batch_size: int = 256, lr: float = 1e-3, anchor: float = 1.0, mention_dropout: float = 0.5,
                   seed: int = 0, log=print) -> dict:
    """Fine-tune ``model`` in place on the ``train`` rows of prepared sentences (step 2 of the recipe)."""
    torch.manual_seed(seed)
    rng = random.Random(seed)
    train = [i for i, r in enumerate(rows) if r["split"] == "train"]
    if not train:
        raise UserError("no training sentences (split 'train') in the prepared data")
    mentions = vocab.mentions([r["text"] for r in rows])  # (N, K)
    targets = soft_targets(rows, len(vocab))  # (N, K)
    init = model.prototypes.detach().clone()  # (P, H)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    steps = epochs * math.ceil(len(train) / batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    model.train()
    history, start = [], time.perf_counter()
    for epoch in range(epochs):
        rng.shuffle(train)
        total = 0.0
        for b in range(0, len(train), batch_size):
            idx = train[b : b + batch_size]
            states, mask = batch_states(feats, idx)
            m = mentions[idx] * (torch.rand(len(idx), 1) >= mention_dropout)  # (B, K)
            out = model(states, mask, mention=m, weights=targets[idx])
            drift = ((model.prototypes - init) ** 2).sum(-1).mean()
            loss = out.loss + anchor * drift
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += float(out.loss.detach()) * len(idx)
        history.append({"epoch": epoch, "train_loss": total / len(train), "seconds": time.perf_counter() - start})
        log(f"epoch {epoch}: train loss {total / len(train):.4f} ({time.perf_counter() - start:.0f} s)")
    model.eval()
    return {"history": history}


def interpolate_weights(init: dict[str, torch.Tensor], tuned: dict[str, torch.Tensor], alpha: float
                        ) -> dict[str, torch.Tensor]:
    """WiSE-FT: ``(1 - alpha) * init + alpha * tuned`` for float tensors (alpha 0 = zero-shot, 1 = fine-tuned)."""
    return {k: (1 - alpha) * init[k] + alpha * v if v.is_floating_point() else v for k, v in tuned.items()}


@torch.no_grad()
def split_logits(model, feats, rows: list[dict], split: str, vocab: Vocabulary | None = None,
                 batch_size: int = 512) -> tuple[torch.Tensor, list[int]]:
    """(N, K) logits on a prepared split, and its row indices. With ``vocab`` the model (a resolver) also gets the
    texts' lexical evidence; without it (a table-bound mapper) only the states."""
    idx = [i for i, r in enumerate(rows) if r["split"] == split]
    out = []
    for b in range(0, len(idx), batch_size):
        part = idx[b : b + batch_size]
        extra = {} if vocab is None else {"mention": vocab.mentions([rows[i]["text"] for i in part])}
        out.append(model(*batch_states(feats, part), **extra).logits)
    return torch.cat(out), idx


def split_accuracy(model: ClassResolver, feats, rows: list[dict], vocab: Vocabulary, split: str,
                   batch_size: int = 512) -> dict[str, float]:
    """Top-1 / top-5 on a prepared split; a hit is any target class of maximal weight."""
    logits, idx = split_logits(model, feats, rows, split, vocab, batch_size)
    return topk_hits(logits, target_sets([rows[i] for i in idx], len(vocab)))


# ---------------------------------------------------------------------------------------------- judging
def read_labelled_prompts(path: str | Path) -> list[dict]:
    """A TSV with header ``prompt, target[, note]``; target = comma-separated wnids (classes or hypernyms)."""
    rows = []
    with open(path, encoding="utf-8", newline="") as f:
        for r in csv.DictReader(f, delimiter="\t"):
            if r.get("prompt") and r.get("target"):
                rows.append({"prompt": r["prompt"].strip(), "targets": [t.strip() for t in r["target"].split(",")],
                             "note": (r.get("note") or "").strip()})
    if not rows:
        raise UserError(f"{path} has no prompt/target rows")
    return rows


def accepted_classes(vocab: Vocabulary, targets: list[str]) -> set[int]:
    """Classes counted right for a target list: the classes themselves, or every class under a hypernym target
    (through all WordNet hypernym paths, not only the longest)."""
    from modalbridge.t2i import wordnet

    by_wnid = {c.wnid: c.index for c in vocab}
    ok: set[int] = set()
    for t in targets:
        if t in by_wnid:
            ok.add(by_wnid[t])
    hyper = {t for t in targets if t not in by_wnid}
    if hyper:
        for c in vocab:
            ancestors = {wordnet.wnid(a) for p in wordnet.synset(c.wnid).hypernym_paths() for a in p}
            if ancestors & hyper:
                ok.add(c.index)
    return ok


def topk_hits(scores: torch.Tensor, accepted: list[set[int]]) -> dict[str, float]:
    """(N, K) scores, per row the accepted classes -> top-1 / top-5 hit rates."""
    top = scores.topk(5, dim=-1).indices.tolist()
    h1 = sum(t[0] in a for t, a in zip(top, accepted, strict=True))
    h5 = sum(bool(set(t) & a) for t, a in zip(top, accepted, strict=True))
    return {"n": len(accepted), "top1": h1 / len(accepted), "top5": h5 / len(accepted)}


def save_json(path: Path, obj) -> None:
    from modalbridge.files import write_json

    write_json(path, json.loads(json.dumps(obj)))
