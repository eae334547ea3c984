"""GAN training pieces (projection discriminator, spectral norm, hinge, EMA), the engine's ``gan`` task and the
shipped ``gan-fashion`` generator."""

from __future__ import annotations

import json
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
import torch.nn.functional as F
import yaml
from torch import nn

from modalbridge import assets, checkpoint
from modalbridge.generators import load_generator
from modalbridge.training import engine
from modalbridge.training.discriminator import (
    DiscriminatorConfig,
    ProjectionDiscriminator,
    d_hinge_loss,
    diff_augment,
    g_hinge_loss,
)
from modalbridge.training.gan import GANTask, ema_update, lr_factor, sample, save_grid


def tiny_d(resolution: int = 32) -> ProjectionDiscriminator:
    torch.manual_seed(0)
    return ProjectionDiscriminator(DiscriminatorConfig(resolution=resolution, channel_width=4, num_classes=10))


@pytest.mark.parametrize("resolution", [16, 32])
def test_discriminator_output_shape_and_projection(resolution):
    d = tiny_d(resolution).eval()
    x, y = torch.rand(5, 3, resolution, resolution) * 2 - 1, torch.tensor([0, 1, 2, 3, 9])
    with torch.no_grad():
        out = d(x, y)
        h = F.relu(d.blocks(x)).sum((2, 3))  # (B, F)
        expected = d.linear(h).squeeze(-1) + (d.embed(y) * h).sum(-1)  # psi(phi) + <embed(y), phi>
    assert out.shape == (5,)
    torch.testing.assert_close(out, expected)
    with torch.no_grad():
        assert not torch.allclose(d(x, y), d(x, (y + 1) % 10))  # the class changes the score


def test_discriminator_rejects_odd_resolution():
    with pytest.raises(Exception, match="power of two"):
        ProjectionDiscriminator(DiscriminatorConfig(resolution=24))


def test_spectral_norm_keeps_top_singular_value_near_one():
    d = tiny_d().train()
    conv = d.blocks[1].conv1
    with torch.no_grad():
        conv.parametrizations.weight.original.mul_(7.0)  # raw weight far from unit norm
    raw = torch.linalg.matrix_norm(conv.parametrizations.weight.original.flatten(1), ord=2)
    assert raw > 2.0
    x, y = torch.randn(2, 3, 32, 32), torch.tensor([1, 2])
    for _ in range(20):  # each training forward runs one power iteration
        d(x, y)
    for module in (conv, d.blocks[0].conv2, d.linear):
        sigma = torch.linalg.matrix_norm(module.weight.detach().flatten(1), ord=2)
        assert sigma == pytest.approx(1.0, abs=0.03)


def test_hinge_losses_on_known_scores():
    real, fake = torch.tensor([2.0, 0.5, -1.0]), torch.tensor([-2.0, 0.0, 1.0])
    # relu(1 - real) = [0, .5, 2] -> 5/6; relu(1 + fake) = [0, 1, 2] -> 1
    assert float(d_hinge_loss(real, fake)) == pytest.approx(5 / 6 + 1.0)
    assert float(g_hinge_loss(fake)) == pytest.approx(1 / 3)
    assert float(d_hinge_loss(torch.full((4,), 3.0), torch.full((4,), -3.0))) == 0.0  # both margins met


def test_ema_update_math():
    torch.manual_seed(0)
    model, ema = nn.BatchNorm1d(3), nn.BatchNorm1d(3)
    nn.init.normal_(model.weight)
    model(torch.randn(8, 3))  # moves the running stats (buffers)
    before = ema.weight.detach().clone()
    ema_update(ema, model, decay=0.9)
    torch.testing.assert_close(ema.weight, 0.9 * before + 0.1 * model.weight.detach())
    torch.testing.assert_close(ema.running_mean, model.running_mean)  # buffers are copied
    ema_update(ema, model, decay=0.0)
    torch.testing.assert_close(ema.weight, model.weight)


def test_ema_update_fused_equals_per_tensor_formula():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 5), nn.BatchNorm1d(5), nn.Linear(5, 2))
    ema = nn.Sequential(nn.Linear(4, 5), nn.BatchNorm1d(5), nn.Linear(5, 2))
    model(torch.randn(6, 4))
    expect = [0.7 * e.detach() + 0.3 * p.detach() for e, p in zip(ema.parameters(), model.parameters(), strict=True)]
    ema_update(ema, model, decay=0.7)
    for e, x in zip(ema.parameters(), expect, strict=True):
        torch.testing.assert_close(e, x)
    torch.testing.assert_close(ema[1].num_batches_tracked, model[1].num_batches_tracked)  # integer buffers too
    with pytest.raises(ValueError, match="parameter lists"):
        ema_update(nn.Linear(4, 5), model, decay=0.5)


def test_diff_augment_translation_shifts_content_and_fills_background():
    x = torch.full((64, 1, 16, 16), -1.0)
    x[:, :, 7, 7] = 1.0  # one bright pixel per image
    g = torch.Generator().manual_seed(0)
    y = diff_augment(x, "translation", generator=g)
    assert y.shape == x.shape and torch.equal(diff_augment(x, ""), x)
    bright = (y == 1.0).flatten(1)
    assert torch.all(bright.sum(1) == 1)  # the pixel moved, nothing was duplicated or lost
    pos = bright.float().argmax(1)
    rows, cols = pos // 16, pos % 16
    assert (rows - 7).abs().max() <= 2 and (cols - 7).abs().max() <= 2  # at most side / 8
    assert len(set(pos.tolist())) > 5  # images move independently
    assert set(y.unique().tolist()) == {-1.0, 1.0}  # the shifted-in border is background


def test_diff_augment_cutout_blanks_a_quarter_and_passes_gradients():
    x = torch.ones(8, 3, 16, 16, requires_grad=True)
    y = diff_augment(x, "cutout", generator=torch.Generator().manual_seed(1))
    hole = (y == 0).all(1)  # (B, H, W), the same square in every channel
    assert torch.all(hole.flatten(1).sum(1) == 64)  # (16 / 2) ** 2
    y.sum().backward()
    assert torch.equal(x.grad[:, 0] == 0, hole)  # differentiable: zero gradient exactly in the hole
    with pytest.raises(Exception, match="unknown augmentation 'flip'"):
        diff_augment(x, "translation,flip")


def test_save_grid_layout(tmp_path):
    from PIL import Image

    save_grid(torch.zeros(6, 3, 8, 8), ncol=3, path=tmp_path / "g.png", pad=2)
    img = Image.open(tmp_path / "g.png")
    assert img.size == (3 * 10 + 2, 2 * 10 + 2) and img.mode == "RGB"


TINY = [
    "data.dataset=random", "data.n_random=24", "data.batch_size=8", "trainer.max_epochs=2", "trainer.progress=false",
    "trainer.limit_train_batches=1.0",
    "trainer.log_every_n_steps=1", "model.g_channel_width=8", "model.d_channel_width=4", "model.ema_start=2",
    "model.ema_decay=0.5", "model.sample_every=3", "model.standing_batches=1", "model.generator={n_stats: 3}",
    "logger.backends=[csv]",
]  # fmt: skip


def test_gan_task_trains_through_engine_and_exports_a_generator(tmp_path):
    cfg = engine.resolve_config("configs/gan/fashion.yaml", TINY + [f"run_root={tmp_path}"])
    pl.seed_everything(cfg.seed, verbose=False)
    init = GANTask(cfg).build_module()  # the same initial weights train() starts from
    run_dir = engine.train(cfg)

    model_dir = run_dir / "model"
    meta = json.loads((model_dir / "config.json").read_text())
    assert meta["model_type"] == "biggan_deep"
    assert meta["config"]["channel_width"] == 8 and meta["config"]["out_channels"] == 1  # gray, repeated to RGB
    assert meta["config"]["n_stats"] == 3 and meta["extra"]["generator_steps"] == 6
    assert meta["extra"]["classes"][1] == "Trouser"
    assert (run_dir / "checkpoints" / "last.ckpt").is_file() and (run_dir / "samples" / "step000006.png").is_file()

    g = load_generator(model_dir)
    assert g.class_embeddings.shape == (10, 128)
    changed = [k for k, v in g.state_dict().items() if not torch.equal(v, init.model.state_dict()[k])]
    assert any(k.endswith("weight_orig") for k in changed) and "embeddings.weight" in changed
    bn = g.generator.bn
    assert not torch.all(bn.running_means == 0)  # standing statistics were measured at export
    imgs = sample(g, torch.tensor([0, 3, 9, 9]), truncation=0.5, seed=1)
    assert imgs.shape == (4, 3, 32, 32) and imgs.min() >= -1 and imgs.max() <= 1
    torch.testing.assert_close(imgs, sample(g, torch.tensor([0, 3, 9, 9]), truncation=0.5, seed=1))


def test_shipped_gan_fashion_loads_and_draws_recognisable_classes():
    from modalbridge.vision.classifier import load_classifier

    path = assets.resolve("gan-fashion")
    assert sum(f.stat().st_size for f in path.iterdir()) < 10_000_000
    g = load_generator("gan-fashion")
    meta = checkpoint.read_meta(path)
    assert meta["model_type"] == "biggan_deep" and "run_config" in meta["extra"]
    assert g.class_embeddings.shape == (10, 128)
    labels = torch.arange(10).repeat_interleave(5)
    imgs = sample(g, labels, truncation=0.5, seed=0)
    assert imgs.shape == (50, 3, 32, 32) and imgs.min() >= -1 and imgs.max() <= 1
    torch.testing.assert_close(imgs[:, 0], imgs[:, 2])  # gray, as the training data
    _, pred = load_classifier().embed(imgs)
    assert float((pred == labels).float().mean()) >= 0.7


def test_v2_recipe_warm_start_frozen_table_aux_head_snapshots(tmp_path):
    """configs/gan/fashion_v2.yaml's pieces on the tiny setup: G starts from a trained generator, its class table
    stays that generator's, D has an auxiliary classifier head, snapshots are exported model dirs."""
    first = engine.train(engine.resolve_config("configs/gan/fashion.yaml", TINY + [f"run_root={tmp_path / 'a'}"]))
    over = TINY + [f"run_root={tmp_path / 'b'}", f"model.init_generator={first / 'model'}", "model.aux_weight=0.5",
                   "model.balanced_labels=true", "model.freeze_class_table=true", "model.d_warmup_steps=2",
                   "model.snapshot_every=2", "model.max_g_steps=3", "model.ema_start=0"]
    run_dir = engine.train(engine.resolve_config("configs/gan/fashion_v2.yaml", over))
    meta = json.loads((run_dir / "model" / "config.json").read_text())
    assert meta["extra"]["generator_steps"] == 3  # max_g_steps; the first 2 D steps trained D alone
    assert (run_dir / "snapshots" / "step000002" / "model.safetensors").is_file()
    old, new = load_generator(first / "model"), load_generator(run_dir / "model")
    torch.testing.assert_close(new.class_embeddings, old.class_embeddings, rtol=0, atol=0)
    key = "generator.gen_z.weight_orig"
    assert not torch.equal(new.state_dict()[key], old.state_dict()[key])  # the rest of G trained on
    with pytest.raises(Exception, match="another generator config"):
        engine.train(engine.resolve_config("configs/gan/fashion_v2.yaml", over + ["model.g_channel_width=16"]))


def test_v3_recipe_new_generator_on_an_existing_class_table(tmp_path):
    """configs/gan/fashion_v3.yaml's pieces: a generator of another width starts from scratch but copies the class
    table of an existing model (so mappers trained on that table stay exact); D sees DiffAugment'ed inputs."""
    first = engine.train(engine.resolve_config("configs/gan/fashion.yaml", TINY + [f"run_root={tmp_path / 'a'}"]))
    over = TINY + [f"run_root={tmp_path / 'b'}", f"model.init_class_table={first / 'model'}",
                   "model.g_channel_width=16", "model.freeze_class_table=true", "model.diffaugment=translation,cutout",
                   "model.max_g_steps=2", "model.ema_start=0", "model.snapshot_every=0", "model.sample_every=0"]
    run_dir = engine.train(engine.resolve_config("configs/gan/fashion_v3.yaml", over))
    old, new = load_generator(first / "model"), load_generator(run_dir / "model")
    assert new.config.channel_width == 16 and old.config.channel_width == 8
    torch.testing.assert_close(new.class_embeddings, old.class_embeddings, rtol=0, atol=0)
    with pytest.raises(Exception, match=r"has a \(128, 10\) table"):
        bad = over + ["model.generator={n_stats: 3, class_embed_dim: 64}"]
        GANTask(engine.resolve_config("configs/gan/fashion_v3.yaml", bad)).build_module()


def test_aux_discriminator_head():
    d = ProjectionDiscriminator(DiscriminatorConfig(in_channels=3, resolution=32, channel_width=4, num_classes=10,
                                                    aux_classifier=True))
    scores, logits = d(torch.randn(5, 3, 32, 32), torch.arange(5), return_logits=True)
    assert scores.shape == (5,) and logits.shape == (5, 10)
    with pytest.raises(Exception, match="aux_classifier"):
        ProjectionDiscriminator(DiscriminatorConfig(channel_width=4))(torch.randn(1, 3, 32, 32), torch.zeros(1).long(),
                                                                      return_logits=True)


def test_time_budget_stops_training_and_still_exports(tmp_path):
    over = TINY + [f"run_root={tmp_path}", "trainer.max_epochs=5", "model.max_minutes=1.0e-9", "model.sample_every=0"]
    run_dir = engine.train(engine.resolve_config("configs/gan/fashion.yaml", over))
    meta = json.loads((run_dir / "model" / "config.json").read_text())
    assert meta["extra"]["generator_steps"] == 1  # stopped after the first step, not after 5 epochs
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()


def test_lr_decay_is_linear_to_zero_at_max_g_steps_and_lands_in_the_checkpoint(tmp_path):
    assert [lr_factor(s, 0, 10) for s in (0, 9)] == [1.0, 1.0]  # off: constant
    assert [lr_factor(s, 6, 10) for s in (0, 5, 6, 8, 9, 10)] == [1.0, 1.0, 1.0, 0.5, 0.25, 0.0]
    over = TINY + [f"run_root={tmp_path}", "model.max_g_steps=4", "model.lr_decay_from=2", "model.sample_every=0",
                   "trainer.max_epochs=10", "model.n_dis=1"]
    cfg = engine.resolve_config("configs/gan/fashion.yaml", over)
    run_dir = engine.train(cfg)
    state = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True, map_location="cpu")
    g_lr, d_lr = (opt["param_groups"][0]["lr"] for opt in state["optimizer_states"])
    # the 4th G step (3 done) ran at (4 - 3) / (4 - 2) = half of each rate
    assert (g_lr, d_lr) == pytest.approx((0.5 * cfg.optim.lr, 0.5 * cfg.model.d_lr))
    with pytest.raises(Exception, match="needs model.max_g_steps above it"):
        GANTask(engine.resolve_config("configs/gan/fashion.yaml", over + ["model.max_g_steps=2"])).build_module()


def test_v5_recipe_resolves_and_starts_where_the_reproduce_script_puts_v2():
    """configs/gan/fashion_v5.yaml validates, and its warm start is the directory scripts/reproduce_gan_fashion.sh
    fills with v2's weights (a renamed directory on one side would only fail after an hour of training)."""
    root = Path(__file__).resolve().parents[1]
    cfg = engine.resolve_config(str(root / "configs/gan/fashion_v5.yaml"), [])
    assert cfg.data.batch_size == 256 and cfg.model.max_g_steps > cfg.model.lr_decay_from > 0
    assert cfg.model.freeze_class_table
    script = (root / "scripts" / "reproduce_gan_fashion.sh").read_text()
    assert f'> "{cfg.model.init_generator}/$f"' in script and f"--install {cfg.model.init_generator}" in script
    assert "configs/gan/fashion_v5.yaml" in script and "runs/gan-fashion-v5/" in script


def test_v6_stage2_resumes_the_v5_run_and_the_final_install_takes_its_end(tmp_path):
    """scripts/reproduce_gan_fashion.sh's stage 2 (overrides on a --resume of the v5 run) resolves against v5's config
    and continues its schedule; on the tiny setup the two stages run, stage 1's config stays as config.1.yaml, and
    select_gan_snapshot.py --final installs run_dir/model (not the min-FD snapshot) with every candidate scored."""
    import re
    import subprocess
    import sys

    from safetensors.torch import load_file

    root = Path(__file__).resolve().parents[1]
    script = (root / "scripts" / "reproduce_gan_fashion.sh").read_text()
    stage2 = re.search(r'^STAGE2="([^"]*)"', script, re.M).group(1).split()
    assert '--resume "$RUN" $STAGE2' in script and '"$RUN" --final --install' in script
    v5 = engine.resolve_config(str(root / "configs/gan/fashion_v5.yaml"), [])
    v6 = engine.resolve_config(str(root / "configs/gan/fashion_v5.yaml"), stage2)
    assert v6.model.lr_decay_from == v5.model.max_g_steps < v6.model.max_g_steps  # restarts where stage 1 ended
    assert v6.model.aux_weight > v5.model.aux_weight and v6.optim.lr < v5.optim.lr and v6.model.d_warmup_steps == 0

    over = TINY + [f"run_root={tmp_path}", "model.aux_weight=0.5", "model.max_g_steps=4", "model.lr_decay_from=2",
                   "model.snapshot_every=2", "model.sample_every=0", "trainer.max_epochs=10", "model.n_dis=1"]
    run = engine.train(engine.resolve_config("configs/gan/fashion.yaml", over))
    cfg = engine.resolve_config(run / "config.yaml", ["model.max_g_steps=6", "model.lr_decay_from=4",
                                                      "model.aux_weight=2.0", "optim.lr=5e-5"])
    assert engine.train(cfg, resume=run) == run
    assert checkpoint.read_meta(run / "model")["extra"]["generator_steps"] == 6
    first = yaml.safe_load((run / "config.1.yaml").read_text())
    assert first["model"]["aux_weight"] == 0.5 and first["model"]["max_g_steps"] == 4

    out = tmp_path / "installed"
    res = subprocess.run([sys.executable, str(root / "scripts" / "select_gan_snapshot.py"), str(run), "--final",
                          "--install", str(out), "--n-per-class", "2", "--n-real-per-class", "3"],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    recorded = checkpoint.read_meta(out)["extra"]
    sel = recorded["selection"]
    assert sel["chosen"] == "model" and "not selected" in sel["criterion"]
    assert recorded["run_config"]["model"]["aux_weight"] == 2.0
    assert [c["model"]["aux_weight"] for c in recorded["earlier_run_configs"]] == [0.5]  # stage 1, from config.1.yaml
    assert {"step000002", "step000004", "model"} <= set(sel["scores"])
    a, b = load_file(str(out / "model.safetensors")), load_file(str(run / "model" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
