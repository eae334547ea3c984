"""BigGAN-deep: exact equivalence with the reference port, published format, loading errors, truncation stats."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch
import torch.nn.functional as F
from tiny import save_published

from modalbridge.errors import UserError
from modalbridge.generators import GENERATORS, load_generator
from modalbridge.generators.biggan import BigGAN, BigGANConfig, truncated_noise
from modalbridge.registry import MODELS

ppb = pytest.importorskip("pytorch_pretrained_biggan")
pytestmark = pytest.mark.usefixtures("one_torch_thread")

# Truncations whose quotient by the 0.02 step is exact in floating point: the reference picks the right slot.
ON_GRID = [0.02, 0.1, 0.4, 0.5, 1.0]
# On the grid, but t / 0.02 rounds just off an integer and the reference takes the neighbouring slot.
MISROUNDED = [0.14, 0.58]
OFF_GRID = [0.013, 0.337, 0.777, 0.999]  # between slots, not halfway: the reference's swapped weights are wrong there
SPARE_SLOT = 25  # t = 0.5, exact: the reference reads it correctly, so tests can load any stats into it


TINY = dict(output_dim=16, z_dim=32, class_embed_dim=32, channel_width=8, num_classes=10,
            layers=[(True, 16, 8), (False, 8, 4), (True, 4, 2), (False, 2, 1)], attention_layer_position=2)  # fmt: skip


def randomised_reference(cfg: BigGANConfig, seed: int, final_gain: float = 1.0):
    """The reference generator with random weights, random per-slot batch-norm stats and consistent u, v."""
    torch.manual_seed(seed)
    ref_cfg = ppb.BigGANConfig(**{k: v for k, v in vars(cfg).items() if k != "out_channels"})
    ref = ppb.BigGAN(ref_cfg).eval()
    with torch.no_grad():
        for name, t in ref.state_dict().items():
            if name.endswith("running_means"):
                t.normal_(0.0, 0.5)
            elif name.endswith("running_vars"):
                t.uniform_(0.5, 2.0)
            elif name.endswith("gamma"):
                t.fill_(0.5)  # make the attention block count
            elif name.endswith("weight_orig"):  # u, v from power iteration, as the published conversion did
                mat, u, v = t.reshape(t.shape[0], -1), *(ref.state_dict()[name[:-4] + s] for s in ("u", "v"))
                for _ in range(3):
                    v.copy_(F.normalize(mat.t() @ u, dim=0))
                    u.copy_(F.normalize(mat @ v, dim=0))
        # the reference leaves these uninitialised (torch.Tensor(n)); small gain keeps tanh out of saturation
        ref.generator.bn.weight.uniform_(0.5, 1.5).mul_(final_gain)
        ref.generator.bn.bias.normal_(0.0, 0.1)
    return ref


def ours_from(ref) -> BigGAN:
    cfg = BigGANConfig(**ref.config.to_dict())
    with torch.device("meta"):
        model = BigGAN(cfg)
    model.load_state_dict(ref.state_dict(), strict=True, assign=True)  # same names and shapes, strictly
    return model.eval()


def correct_stats(ref, t: float) -> dict[str, torch.Tensor]:
    """Per norm layer, (mean, var) linearly interpolated between the two grid slots around t."""
    pos = t * 50
    i, f = (round(pos), 0.0) if abs(pos - round(pos)) < 1e-9 else (math.floor(pos), pos - math.floor(pos))
    out = {}
    for name, t_ in ref.state_dict().items():
        if name.endswith(("running_means", "running_vars")):
            out[name] = t_[i] * (1 - f) + t_[min(i + 1, 50)] * f
    return out


@torch.no_grad()
def reference_with_stats(ref, stats: dict[str, torch.Tensor], z, onehot) -> torch.Tensor:
    """Run the reference at t = 0.5 with the given stats placed in its (exactly read) slot 25."""
    sd = ref.state_dict()
    saved = {k: sd[k][SPARE_SLOT].clone() for k in stats}
    try:
        for k, v in stats.items():
            sd[k][SPARE_SLOT] = v
        return ref(z, onehot, SPARE_SLOT / 50)
    finally:
        for k, v in saved.items():
            sd[k][SPARE_SLOT] = v


def check_equivalence(ref, ours, batch: int, truncations_on, truncations_fixed, seed=0, check_reference_is_off=True):
    cfg = ours.config
    labels = torch.randint(cfg.num_classes, (batch,), generator=torch.Generator().manual_seed(seed))
    onehot = F.one_hot(labels, cfg.num_classes).float()
    with torch.inference_mode():
        emb = ours.embed(labels)
        assert torch.equal(emb, ref.embeddings(onehot))  # class i's embedding is column i of the Linear weight
        for t in truncations_on:
            z = truncated_noise(batch, cfg.z_dim, t, seed)
            expected, got = ref(z, onehot, t), ours(z, emb, t)
            assert got.shape == (batch, 3, cfg.output_dim, cfg.output_dim)
            assert 0.05 < expected.abs().mean() < 0.9  # informative: neither ~0 nor saturated by tanh
            torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
        for t in truncations_fixed:
            z = truncated_noise(batch, cfg.z_dim, t, seed)
            expected = reference_with_stats(ref, correct_stats(ref, t), z, onehot)
            got = ours(z, emb, t)
            torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
            if check_reference_is_off:  # the reference itself is off there (reversed weights / neighbouring slot)
                assert (ref(z, onehot, t) - got).abs().max() > 1e-3


def test_tiny_matches_reference_on_and_off_grid():
    ref = randomised_reference(BigGANConfig(**TINY), seed=0, final_gain=0.15)
    check_equivalence(ref, ours_from(ref), 3, ON_GRID, MISROUNDED + OFF_GRID)


@pytest.mark.slow
def test_full_size_128_matches_reference():
    ref = randomised_reference(BigGANConfig.published(128), seed=1)
    ours = ours_from(ref)
    assert ours.state_dict().keys() == ref.state_dict().keys()
    check_equivalence(ref, ours, 1, [0.4], [0.337], check_reference_is_off=False)


@pytest.mark.parametrize("size,millions", [(128, 50.4), (256, 55.9), (512, 56.2)])
def test_published_parameter_counts(size, millions):
    with torch.device("meta"):
        model = BigGAN(BigGANConfig.published(size))
    assert round(sum(p.numel() for p in model.parameters()) / 1e6, 1) == millions
    assert model.generator.conv_to_rgb.weight_orig.shape == (128, 128, 3, 3)  # the published, untrimmed conv


def test_class_embeddings_and_registration():
    model = BigGAN(BigGANConfig(**TINY)).eval()
    assert MODELS["biggan_deep"] is BigGAN and model.class_embeddings.shape == (10, 32)
    onehot = F.one_hot(torch.tensor([3, 7]), 10).float()
    torch.testing.assert_close(model.embeddings(onehot), model.class_embeddings[[3, 7]])
    assert {"biggan-deep-128", "biggan-deep-256", "biggan-deep-512", "gan-fashion"} <= set(GENERATORS)


def test_stats_interpolation_is_linear_between_slots():
    from modalbridge.generators.biggan import StandingBatchNorm

    bn = StandingBatchNorm(4, None, 51, 1e-4)
    bn.running_means.copy_(torch.arange(51.0)[:, None].expand(51, 4))
    for t, slot in [(0.4, 20.0), (0.58, 29.0), (0.14, 7.0), (0.33, 16.5), (0.999, 49.95)]:
        torch.testing.assert_close(bn.stats_at(t)[0], torch.full((4,), slot))


def test_truncation_and_noise():
    model = BigGAN(BigGANConfig(**TINY)).eval()
    z, e = torch.zeros(1, 32), model.class_embeddings[:1]
    for bad in (0, 0.0, 1.5, -0.1, float("nan")):
        with pytest.raises(UserError, match="truncation"):
            model(z, e, bad)
        with pytest.raises(UserError, match="truncation"):
            truncated_noise(2, 8, bad, 0)
    a, b = truncated_noise(4, 128, 0.5, seed=3), truncated_noise(4, 128, 0.5, seed=3)
    assert torch.equal(a, b) and not torch.equal(a, truncated_noise(4, 128, 0.5, seed=4))
    assert a.abs().max() <= 1.0 and a.std() > 0.2  # [-2, 2] scaled by 0.5
    with pytest.raises(UserError, match="expects z"):
        model(torch.zeros(1, 31), e, 0.5)


def test_small_config_trains_and_records_standing_stats():
    cfg = BigGANConfig.small(resolution=32, channel_width=8, num_classes=10, out_channels=1)
    cfg = dataclasses.replace(cfg, n_stats=5)  # 5 truncation slots keep the standing-stats pass short
    assert cfg.layers == [(False, 4, 4), (True, 4, 4), (False, 4, 4), (True, 4, 2), (False, 2, 2), (True, 2, 1)]
    assert BigGANConfig.small(128, 128, 1000, 3).layers == BigGANConfig().layers  # same recipe as published
    torch.manual_seed(0)
    model = BigGAN(cfg).train()
    labels = torch.tensor([0, 3, 9, 9])
    x = model(torch.randn(4, 128), model.embed(labels), 1.0)
    assert x.shape == (4, 3, 32, 32) and torch.equal(x[:, 0], x[:, 2])  # gray repeated to the RGB interface
    x.square().mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    model.update_standing_stats(batches=1, batch_size=8)
    bn = model.generator.layers[0].bn_0
    assert not torch.equal(bn.running_means[1], bn.running_means[4]) and (bn.running_vars > 0).all()
    model.eval()
    with torch.inference_mode():
        y = model(truncated_noise(4, 128, 0.5, 0), model.embed(labels), 0.5)
    assert torch.isfinite(y).all() and y.abs().max() <= 1


def test_load_generator_published_format(tmp_path):
    ref = randomised_reference(BigGANConfig(**TINY), seed=2, final_gain=0.15)
    ours = ours_from(ref)
    save_published(ours, tmp_path / "g")
    loaded = load_generator(tmp_path / "g")
    assert not loaded.training
    z, e = truncated_noise(2, 32, 0.7, 5), ours.class_embeddings[[1, 2]]
    with torch.inference_mode():
        torch.testing.assert_close(loaded(z, e, 0.7), ours(z, e, 0.7), atol=0, rtol=0)

    with pytest.raises(UserError, match="truncation"):
        loaded(z, e, 1.5)
    bin_ = tmp_path / "g" / "pytorch_model.bin"
    data = bin_.read_bytes()
    bin_.write_bytes(data[: len(data) // 2])  # truncated download
    with pytest.raises(UserError, match="corrupt or truncated"):
        load_generator(tmp_path / "g")
    bin_.write_bytes(b"\x00garbage" * 100)
    with pytest.raises(UserError, match="corrupt or truncated"):
        load_generator(tmp_path / "g")
    bin_.unlink()
    with pytest.raises(UserError, match="weights file missing"):
        load_generator(tmp_path / "g")
    (tmp_path / "g" / "config.json").unlink()
    with pytest.raises(UserError, match="no config.json"):
        load_generator(tmp_path / "g")


def test_load_generator_rejects_mismatched_or_unsafe_weights(tmp_path):
    model = BigGAN(BigGANConfig(**TINY))
    save_published(model, tmp_path / "g")
    cfg = json.loads((tmp_path / "g" / "config.json").read_text())
    (tmp_path / "g" / "config.json").write_text(json.dumps({**cfg, "channel_width": 16}))
    with pytest.raises(UserError, match="do not match"):
        load_generator(tmp_path / "g")
    (tmp_path / "g" / "config.json").write_text(json.dumps({**cfg, "bogus": 1}))
    with pytest.raises(UserError, match="bogus"):
        load_generator(tmp_path / "g")
    (tmp_path / "g" / "config.json").write_text(json.dumps(cfg))
    state = model.state_dict()
    state["evil"] = Exploit()  # a pickle that would run code when loaded without weights_only
    torch.save(state, tmp_path / "g" / "pytorch_model.bin")
    with pytest.raises(UserError, match="refused"):
        load_generator(tmp_path / "g")
    assert not (tmp_path / "pwned").exists()


class Exploit:
    def __reduce__(self):
        return (open, ("pwned", "w"))


def test_load_generator_modalbridge_dir_names_and_offline(tmp_path, monkeypatch):
    from modalbridge import assets, checkpoint

    model = BigGAN(BigGANConfig.small(32, 8, 10, 1)).eval()
    checkpoint.save(model, tmp_path / "m")
    loaded = load_generator(str(tmp_path / "m"))
    z, e = truncated_noise(2, 128, 1.0, 0), model.class_embeddings[:2]
    with torch.inference_mode():
        torch.testing.assert_close(loaded(z, e, 1.0), model(z, e, 1.0), atol=0, rtol=0)

    monkeypatch.setattr(assets, "WEIGHTS_DIR", tmp_path / "no-weights")
    with pytest.raises(UserError, match="gan-fashion.*not shipped"):
        load_generator("default")
    monkeypatch.setattr(assets, "WEIGHTS_DIR", tmp_path)
    torch.testing.assert_close(load_generator("m").generator.gen_z.bias, model.generator.gen_z.bias)
    with pytest.raises(UserError, match="did you mean 'biggan-deep-128'"):
        load_generator("bigan-deep-128")

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # an uncached hub model: one clear line, no download attempt
    with pytest.raises(UserError, match="huggingface/biggan-deep-256.*downloads are off"):
        GENERATORS.create("biggan-deep-256")
