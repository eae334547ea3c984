"""Compare mapper heads x losses on one cached feature set; writes docs/results/mappers_fashion.json.

    python scripts/compare_mappers.py [--config configs/t2i/fashion_minilm.yaml] [--epochs E]
                                      [--out docs/results/mappers_fashion.json] [key=value ...]

Every variant uses the config's data (sentences, encoder, layer, generator), optimiser and epochs; only
``model.arch`` and ``model.params.loss`` change. The sentences, the feature cache and the generator's class table are
loaded once (``T2ITask.load``). Training is a plain loop with the engine's pieces (same loaders, optimiser and
cosine/warm-up schedule as ``BridgeModule``), keeping the weights of the epoch with the lowest val loss, as
``checkpoint.monitor: val/loss`` does in ``modalbridge train``. Each variant is then evaluated on every split.

Selection, as the brief asks: the best held-out top-1 (mean of test_template and test_synonym, the splits with
unseen templates and unseen synonyms); ties go to the lower val loss. val top-1 is reported alongside.
"""

from __future__ import annotations

import argparse
import copy
import math
import sys
import time
from pathlib import Path

import torch

from modalbridge.errors import script_main
from modalbridge.files import write_json
from modalbridge.registry import load_builtins
from modalbridge.t2i.mapper import LOSSES, MAPPERS
from modalbridge.t2i.train import T2ITask, evaluate, make_collate
from modalbridge.training import batching, engine

ROOT = Path(__file__).resolve().parents[1]


def train_variant(task: T2ITask, kind: str, loss: str, epochs: int) -> dict:
    cfg = copy.deepcopy(task.cfg)
    cfg.model.arch, cfg.model.params = kind, {**cfg.model.params, "loss": loss}
    variant = T2ITask.__new__(T2ITask)
    variant.__dict__.update(task.__dict__)
    variant.cfg = cfg
    torch.manual_seed(cfg.seed)
    model = variant.build_module().model
    sets = variant.datasets()
    collate = make_collate(model.config.num_classes)
    loader = batching.make_loader(sets["train"], cfg.data.batch_size, True, cfg.seed, collate_fn=collate)
    o = cfg.optim
    opt = torch.optim.AdamW(model.parameters(), lr=o.lr, betas=tuple(o.betas), weight_decay=o.weight_decay)
    total = epochs * len(loader)

    def factor(step: int) -> float:
        if step < o.warmup_steps:
            return (step + 1) / o.warmup_steps
        if o.scheduler == "cosine":
            return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - o.warmup_steps) / max(1, total - o.warmup_steps))))
        return 1.0

    sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
    best, best_state, start = float("inf"), None, time.perf_counter()
    for epoch in range(epochs):
        loader.sampler.set_epoch(epoch)
        torch.manual_seed(cfg.seed * 100_003 + epoch)
        model.train()
        for states, mask, weights in loader:
            out = model(states, mask, weights)
            opt.zero_grad(set_to_none=True)
            out.loss.backward()
            opt.step()
            sched.step()
        val = evaluate(model, sets["val"])["loss"]
        print(f"  {kind:12s} {loss:12s} epoch {epoch + 1}/{epochs} val/loss {val:.4f}", file=sys.stderr)
        if val < best:
            best, best_state = val, copy.deepcopy(model.state_dict())
    model.load_state_dict(best_state)
    seconds = time.perf_counter() - start
    metrics = {f"{s}/{k}": round(v, 4) for s, ds in sets.items() for k, v in evaluate(model, ds).items()}
    held = (metrics["test_template/top1"] + metrics["test_synonym/top1"]) / 2
    return {"kind": kind, "loss": loss, "heldout_top1": round(held, 4), **metrics,
            "params": sum(p.numel() for p in model.parameters()), "train_seconds": round(seconds, 1)}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default=str(ROOT / "configs/t2i/fashion_minilm.yaml"))
    p.add_argument("--epochs", type=int, default=None, help="default: trainer.max_epochs of the config")
    p.add_argument("--kinds", nargs="*", default=None)
    p.add_argument("--losses", nargs="*", default=list(LOSSES))
    p.add_argument("--out", default=str(ROOT / "docs/results/mappers_fashion.json"))
    p.add_argument("overrides", nargs="*", help="key=value config overrides")
    args = p.parse_args(argv)
    load_builtins()
    cfg = engine.resolve_config(args.config, args.overrides)
    task = T2ITask(cfg)
    rows, feats, table = task.load()
    epochs = args.epochs or cfg.trainer.max_epochs
    results = []
    for kind in args.kinds or sorted(MAPPERS):
        for loss in args.losses:
            results.append(train_variant(task, kind, loss, epochs))
            r = results[-1]
            print(f"{kind:12s} {loss:12s} held-out top1 {r['heldout_top1']:.4f}  val top1 {r['val/top1']:.4f}  "
                  f"template {r['test_template/top1']:.4f}  synonym {r['test_synonym/top1']:.4f}  "
                  f"({r['train_seconds']:.0f} s)")
    best = max(results, key=lambda r: (r["heldout_top1"], -r["val/loss"]))
    from modalbridge.t2i.sentences import sentences_hash

    report = {
        "what": "text -> class-embedding mappers on Fashion sentences (scripts/compare_mappers.py)",
        "config": _relative(args.config),
        "overrides": args.overrides, "epochs": epochs,
        "encoder": cfg.data.encoder, "layer": cfg.data.layer, "generator": cfg.data.generator,
        "sentences_hash": sentences_hash(cfg.data.sentences),
        "n_sentences": {s: len(ds) for s, ds in task.datasets().items()},
        "class_table": {"classes": int(table.shape[0]), "dim": int(table.shape[1]),
                        "sha256_prefix": _table_hash(table)},
        "metric": "top1/top5: nearest class embedding (cosine) is a maximal-weight target class",
        "selection": "max mean(test_template/top1, test_synonym/top1); ties -> lower val/loss",
        "best": {"kind": best["kind"], "loss": best["loss"], "heldout_top1": best["heldout_top1"]},
        "results": sorted(results, key=lambda r: -r["heldout_top1"]),
        "torch_threads": torch.get_num_threads(),
    }
    write_json(Path(args.out), report)
    print(f"best: {best['kind']} + {best['loss']} (held-out top1 {best['heldout_top1']:.4f}) -> {args.out}")
    return report


def _relative(path: str) -> str:
    try:
        return str(Path(path).resolve().relative_to(ROOT))
    except ValueError:
        return path


def _table_hash(table: torch.Tensor) -> str:
    import hashlib

    return hashlib.sha256(table.contiguous().numpy().tobytes()).hexdigest()[:16]


if __name__ == "__main__":
    script_main(main)
