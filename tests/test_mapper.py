"""Mappers: every registered head x loss trains on a tiny config; in-span stays in the hull; metrics; save/load."""

from __future__ import annotations

import pytest
import torch

from modalbridge import checkpoint
from modalbridge.errors import UserError
from modalbridge.t2i.mapper import (
    LOSSES,
    MAPPERS,
    MapperConfig,
    T2IMapper,
    dense_weights,
    retrieval_metrics,
)

K, E, H = 6, 16, 32


def tiny(kind: str, loss: str = "cosine", seed: int = 0) -> T2IMapper:
    torch.manual_seed(seed)
    cfg = MapperConfig(kind=kind, loss=loss, text_hidden=H, embed_dim=E, num_classes=K, hidden=32, dropout=0.0)
    return T2IMapper(cfg, table=torch.randn(K, E))


def batch(b: int = 8, t: int = 7, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    states = torch.randn(b, t, H, generator=g)
    lengths = torch.randint(2, t + 1, (b,), generator=g)
    mask = torch.arange(t)[None] < lengths[:, None]
    states = states * mask[..., None]
    labels = torch.arange(b) % K
    return states, mask, torch.nn.functional.one_hot(labels, K).float()


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("kind", sorted(MAPPERS))
def test_every_mapper_forward_backward_and_learns(kind, loss):
    model = tiny(kind, loss)
    states, mask, w = batch()
    out = model(states, mask)
    assert out.loss is None and out.embedding.shape == (8, E) and out.logits.shape == (8, K)
    opt = torch.optim.Adam(model.parameters(), lr=2e-2)
    first = None
    for _ in range(15):
        out = model(states, mask, w)
        assert torch.isfinite(out.loss)
        opt.zero_grad()
        out.loss.backward()
        grads = [p.grad for p in model.parameters() if p.requires_grad]
        assert all(g is not None and torch.isfinite(g).all() for g in grads)
        opt.step()
        first = first if first is not None else out.loss.item()
    assert out.loss.item() < first  # it learns something on a memorisable batch
    assert not any(p.requires_grad for p in model.buffers())


def test_padding_does_not_change_the_output():
    for kind in sorted(MAPPERS):
        model = tiny(kind).eval()
        states, mask, _ = batch(b=1, t=7)
        n = int(mask.sum())
        padded = torch.cat([states, torch.randn(1, 3, H)], dim=1)  # garbage beyond the mask
        padded_mask = torch.cat([mask, torch.zeros(1, 3, dtype=torch.bool)], dim=1)
        a = model(states[:, :n], mask[:, :n]).embedding
        b = model(padded, padded_mask).embedding
        torch.testing.assert_close(a, b, msg=kind)


def test_token_dropout_only_in_training_and_never_empties_a_sentence():
    import dataclasses

    model = tiny("attention")
    model.config = dataclasses.replace(model.config, token_dropout=0.5)
    states, mask, _ = batch(b=64)
    model.eval()
    a, b = model(states, mask).embedding, model(states, mask).embedding
    torch.testing.assert_close(a, b)  # eval: no dropout
    model.train()
    torch.manual_seed(0)
    c = model(states, mask).embedding
    assert not torch.allclose(a, c) and torch.isfinite(c).all()  # some pieces dropped, none of the rows empty
    one = torch.zeros_like(mask)
    one[:, 0] = True  # one-piece sentences: dropping it would leave nothing, so it is kept
    torch.testing.assert_close(model(states, one).embedding, model.eval()(states, one).embedding)
    with pytest.raises(ValueError):
        MapperConfig(token_dropout=1.0)


def test_inspan_output_is_a_convex_combination_of_the_table():
    model = tiny("inspan").eval()
    states, mask, _ = batch(b=16)
    out = model(states * 50, mask)  # large inputs: peaked softmax, still in the hull
    p = torch.softmax(out.logits, -1)
    assert torch.all(p >= 0)
    torch.testing.assert_close(p.sum(-1), torch.ones(16))
    torch.testing.assert_close(out.embedding, p @ model.table)
    # The hull's support function bounds the output in every direction.
    dirs = torch.randn(64, E)
    proj_out, proj_table = out.embedding @ dirs.t(), model.table @ dirs.t()  # (B, 64), (K, 64)
    assert torch.all(proj_out <= proj_table.max(0).values + 1e-5)
    assert torch.all(proj_out >= proj_table.min(0).values - 1e-5)
    # A free head is not confined to the hull.
    free = tiny("mlp", loss="mse")
    with torch.no_grad():
        free.head.mlp[-1].bias.fill_(100.0)
    assert (free(states, mask).embedding @ dirs.t()).max() > proj_table.max()


def test_scale_free_losses_keep_table_norm():
    model = tiny("attention", loss="cosine").eval()
    states, mask, _ = batch()
    norms = model(states, mask).embedding.norm(dim=-1)
    torch.testing.assert_close(norms, torch.full_like(norms, model.table.norm(dim=-1).mean().item()))


def test_mixture_targets_and_metrics():
    w = dense_weights([[1], [2, 4], [0, 3]], [[1.0], [1.0, 1.0], [3.0, 1.0]], K)
    torch.testing.assert_close(w.sum(-1), torch.ones(3))
    assert w[1, 2] == w[1, 4] == 0.5 and w[2, 0] == 0.75
    table = torch.eye(K, E)
    emb = torch.stack([table[1], table[4] * 2, table[3]])  # hit, hit (either of a tie), miss (3 is minor)
    m = retrieval_metrics(emb, w, table)
    assert m["top1"].item() == pytest.approx(2 / 3)
    assert m["top5"].item() == 1.0
    perfect = retrieval_metrics(w @ table, w, table)
    assert perfect["mse"].item() == 0 and perfect["cosine"].item() == pytest.approx(1.0)
    with pytest.raises(UserError, match="out of range"):
        dense_weights([[K]], [[1.0]], K)


def test_contrastive_loss_is_soft_cross_entropy_over_the_table():
    model = tiny("inspan", loss="contrastive")
    emb = model.table[[0, 1]].clone()
    w = torch.nn.functional.one_hot(torch.tensor([0, 1]), K).float()
    right = model.loss(emb, w)
    wrong = model.loss(emb, w.flip(0))
    assert right < wrong


def test_save_load_roundtrip(tmp_path):
    model = tiny("inspan").eval()
    states, mask, _ = batch()
    checkpoint.save(model, tmp_path / "m", vocab=[{"index": i, "label": f"c{i}"} for i in range(K)])
    loaded = checkpoint.load(tmp_path / "m", expected="t2i_mapper")
    torch.testing.assert_close(loaded.table, model.table)
    torch.testing.assert_close(loaded(states, mask).embedding, model(states, mask).embedding)
    with pytest.raises(UserError, match="unknown mapper kind"):
        from modalbridge.config import from_dict

        from_dict(MapperConfig, {"kind": "nope"})


def test_t2i_mapper_task_trains_and_exports(tmp_path):
    """``modalbridge train`` on tiny models: features cached, split metrics logged, model dir records its bridge."""
    import csv
    import json

    from tiny import make_tiny_encoder, make_tiny_generator, make_tiny_sentences
    from typer.testing import CliRunner

    from modalbridge.cli import app

    enc, sent, gen = make_tiny_encoder(tmp_path / "enc"), make_tiny_sentences(tmp_path / "s"), \
        make_tiny_generator(tmp_path / "g")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        "task: t2i_mapper\nname: tiny\ntrainer: {max_epochs: 3, progress: false, log_every_n_steps: 1}\n"
        "logger: {backends: [csv]}\n"
        "checkpoint: {monitor: val/top1, mode: max}\noptim: {lr: 0.005}\n"
        f"data: {{sentences: {sent}, encoder: {enc}, generator: {gen}, batch_size: 32}}\n"
        "model: {arch: attention, params: {loss: cosine, hidden: 32}}\n"
    )
    r = CliRunner().invoke(app, ["train", str(cfg), f"run_root={tmp_path / 'runs'}"])
    assert r.exit_code == 0, r.output
    run = next((tmp_path / "runs" / "tiny").iterdir())
    meta = json.loads((run / "model" / "config.json").read_text())
    c = meta["config"]
    assert meta["model_type"] == "t2i_mapper" and c["kind"] == "attention"
    assert (c["text_encoder"], c["generator"]) == (str(enc.resolve()), str(gen.resolve()))
    assert (c["text_hidden"], c["embed_dim"], c["num_classes"]) == (32, 128, 5)
    assert meta["extra"]["generator"]["num_classes"] == 5
    vocab = json.loads((run / "model" / "vocab.json").read_text())
    assert [x["label"] for x in vocab["classes"]] == ["Dress", "Bag", "Shirt", "Elephant", "Bus"]
    metrics = json.loads((run / "model" / "metrics.json").read_text())
    for split in ("val", "test_template", "test_synonym"):
        assert 0 <= metrics[f"final/{split}/top1"] <= metrics[f"final/{split}/top5"] <= 1
    rows = list(csv.DictReader((run / "logs" / "csv" / "metrics.csv").open()))
    losses = [float(row["train/loss"]) for row in rows if row.get("train/loss")]
    assert sum(losses[-5:]) < sum(losses[:5])  # it learns
    assert any(row.get("test_synonym/top1") for row in rows) and any(row.get("val/top1") for row in rows)
    assert len(list((sent / "features").iterdir())) == 1  # the cache was built once, inside the data dir
    loaded = checkpoint.load(run / "model")
    torch.testing.assert_close(loaded.table, load_table(gen))
    assert loaded.config.loss == "cosine" and loaded.config.hidden == 32  # model.params reached MapperConfig

    for bad, message in ((["model.arch=attentoin"], "unknown model.arch 'attentoin' (did you mean 'attention'?)"),
                         (["model.params.kind=mlp"], "model.params.kind is set by the task"),
                         (["model.params.hiden=3"], "unknown config key 'model.params.hiden'")):
        r = CliRunner().invoke(app, ["train", str(cfg), f"run_root={tmp_path / 'bad'}", *bad])
        assert r.exit_code == 2 and message in r.output, r.output


def load_table(gen):
    from modalbridge.generators import load_generator

    return load_generator(gen).class_embeddings.detach()
