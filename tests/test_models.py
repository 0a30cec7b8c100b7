"""Networks: time embeddings equal their formulas, attention is permutation-equivariant, the
U-Net's size rule, zero-initialised output, per-sample independence, every model config runs."""

from __future__ import annotations

import math
from pathlib import Path

import hydra
import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from sde_gen.losses import DSMLoss
from sde_gen.models import MLP, FourierEmbedding, ScoreModel, SinusoidalEmbedding, UNet
from sde_gen.models.unet import AttentionBlock, group_norm
from sde_gen.sde import VPSDE

CONF = Path(__file__).resolve().parents[1] / "sde_gen" / "conf"


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _randomise(module: nn.Module, seed: int = 0) -> None:
    """Replace every parameter by N(0, 0.2²) noise (undoes zero-inits, so outputs depend on θ)."""
    g = gen(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(0.2 * torch.randn(p.shape, generator=g, dtype=p.dtype))


# ---------------------------------------------------------------- embeddings
def test_sinusoidal_embedding_equals_formula():
    """e(t)_k = sin(1000 t P^{−k/4}), e(t)_{4+k} = cos(1000 t P^{−k/4}), k < 4, P = 10000."""
    emb = SinusoidalEmbedding(dim=8, scale=1000.0).double()
    t = torch.tensor([0.0, 1e-3, 0.25, 1.0], dtype=torch.float64)
    out = emb(t)
    for b, tb in enumerate(t.tolist()):
        for k in range(4):
            w = 10000.0 ** (-k / 4)
            assert out[b, k].item() == pytest.approx(math.sin(1000 * tb * w), abs=1e-12)
            assert out[b, 4 + k].item() == pytest.approx(math.cos(1000 * tb * w), abs=1e-12)


def test_fourier_embedding_equals_formula_and_is_seeded():
    """e(t) = [sin 2πtW, cos 2πtW] with fixed W ~ N(0, scale²): W is a buffer fixed by the seed
    and its sample std is within 10% of scale (512 draws: s.e. ≈ 3%)."""
    emb = FourierEmbedding(dim=1024, scale=16.0, seed=3)
    assert torch.equal(emb.W, FourierEmbedding(dim=1024, scale=16.0, seed=3).W)
    assert "W" in emb.state_dict() and not any(True for _ in emb.parameters())
    assert abs(float(emb.W.std()) / 16.0 - 1) < 0.1
    t = torch.tensor([0.1, 0.7])
    ref = 2 * math.pi * t[:, None] * emb.W[None, :]
    torch.testing.assert_close(emb(t), torch.cat([ref.sin(), ref.cos()], 1))


@pytest.mark.parametrize("cls", [SinusoidalEmbedding, FourierEmbedding])
def test_embedding_rejects_odd_dim(cls):
    with pytest.raises(ValueError, match="dim=7"):
        cls(dim=7)


# ---------------------------------------------------------------- attention
def test_attention_is_permutation_equivariant_over_positions():
    """Self-attention without positional encoding: permuting the H·W positions of the input
    permutes the output the same way (GroupNorm statistics are permutation invariant)."""
    block = AttentionBlock(8, num_heads=2).double()
    _randomise(block)
    x = torch.randn(2, 8, 4, 4, generator=gen(1), dtype=torch.float64)
    perm = torch.randperm(16, generator=gen(2))
    permute = lambda z: z.flatten(2)[:, :, perm].reshape(z.shape)  # noqa: E731
    torch.testing.assert_close(block(permute(x)), permute(block(x)), rtol=1e-12, atol=1e-12)
    assert (block(x) - x).abs().max() > 1e-3  # not the identity once θ is random


def test_attention_is_identity_at_init_and_checks_heads():
    block = AttentionBlock(8, num_heads=2)
    x = torch.randn(2, 8, 4, 4, generator=gen(1))
    assert torch.equal(block(x), x)  # zero-initialised output projection
    with pytest.raises(ValueError, match="num_heads=3"):
        AttentionBlock(8, num_heads=3)


def test_group_norm_groups_divide_channels():
    for c in (1, 6, 32, 48, 96, 100):
        gn = group_norm(c)
        assert c % gn.num_groups == 0 and gn.num_groups <= 32
        assert c // gn.num_groups >= min(4, c)  # never InstanceNorm: it would erase e(t)


# ---------------------------------------------------------------- U-Net
SMALL = dict(base_channels=8, channel_mult=(1, 2), num_res_blocks=1, attn_resolutions=(4,))


def test_unet_rejects_sizes_not_divisible_by_depth():
    with pytest.raises(ValueError, match=r"image size 12x12 .* 2\^\(len\(channel_mult\)-1\) = 8"):
        UNet((1, 12, 12), base_channels=8, channel_mult=(1, 2, 2, 2))
    with pytest.raises(ValueError, match="10x8"):
        UNet((1, 10, 8), base_channels=8, channel_mult=(1, 2, 2))
    with pytest.raises(ValueError, match=r"attn_resolutions \[5\]"):
        UNet((1, 8, 8), base_channels=8, channel_mult=(1, 2), attn_resolutions=(5,))
    with pytest.raises(ValueError, match=r"\(C, H, W\)"):
        UNet((8, 8), base_channels=8)
    UNet((1, 12, 12), base_channels=8, channel_mult=(1, 2, 2))  # 12 is divisible by 4


def test_unet_output_rule_and_zero_init():
    """Output has the input's shape (2C channels with learn_variance) and is exactly 0 at
    initialisation (zero last conv), so s_θ = −ε_θ/σ ≡ 0 at the start of training."""
    x = torch.randn(3, 2, 8, 8, generator=gen(0))
    t = torch.tensor([0.1, 0.5, 0.9])
    out = UNet((2, 8, 8), **SMALL)(x, t)
    assert out.shape == x.shape and torch.equal(out, torch.zeros_like(x))
    lv = UNet((2, 8, 8), learn_variance=True, **SMALL)
    assert lv(x, t).shape == (3, 4, 8, 8)
    eps, v = ScoreModel(lv, VPSDE()).eps_and_extra(x, t)
    assert eps.shape == v.shape == x.shape
    with pytest.raises(ValueError, match=r"\(2, 4, 4\)"):
        lv(torch.randn(3, 2, 4, 4), t)


def test_unet_samples_are_independent_and_time_matters():
    """In eval mode no information crosses the batch: a batch's outputs equal the outputs of
    each sample alone; and the output depends on t through the time embedding."""
    net = UNet((1, 8, 8), dropout=0.1, **SMALL).double().eval()
    _randomise(net)
    x = torch.randn(4, 1, 8, 8, generator=gen(0), dtype=torch.float64)
    t = torch.tensor([0.05, 0.3, 0.6, 0.95], dtype=torch.float64)
    whole = net(x, t)
    alone = torch.cat([net(x[i : i + 1], t[i : i + 1]) for i in range(4)])
    torch.testing.assert_close(whole, alone, rtol=1e-10, atol=1e-10)
    same_x = net(x[:1].expand(2, -1, -1, -1), torch.tensor([0.1, 0.9], dtype=torch.float64))
    assert (same_x[0] - same_x[1]).abs().max() > 1e-3


def test_unet_trains_one_step():
    """One Adam step on the DSM loss lowers the loss on the same batch and noise."""
    torch.manual_seed(0)
    model = ScoreModel(UNet((1, 8, 8), **SMALL), VPSDE())
    x0 = torch.randn(16, 1, 8, 8, generator=gen(0)).clamp(-1, 1)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    before = DSMLoss()(model, x0, gen(1))
    before.backward()
    opt.step()
    assert float(DSMLoss()(model, x0, gen(1)).detach()) < float(before.detach())


# ---------------------------------------------------------------- MLP
def test_mlp_zero_init_learned_variance_and_independence():
    x = torch.randn(5, 3, generator=gen(0), dtype=torch.float64)
    t = torch.linspace(0.1, 0.9, 5, dtype=torch.float64)
    assert torch.equal(MLP((3,))(x.float(), t.float()), torch.zeros(5, 3))
    net = MLP((3,), hidden=32, learn_variance=True).double()
    _randomise(net)
    out = net(x, t)
    assert out.shape == (5, 6)
    alone = torch.cat([net(x[i : i + 1], t[i : i + 1]) for i in range(5)])
    torch.testing.assert_close(out, alone, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match=r"\(2,\)"):
        net(torch.randn(5, 2, dtype=torch.float64), t)


# ---------------------------------------------------------------- every model config
MODEL_SHAPES = {
    "mlp": (2,),
    "mlp_fourier": (2,),
    "unet_digits": (1, 8, 8),
    "unet_digits_fourier": (1, 8, 8),
    "unet32": (3, 32, 32),
    "unet32_small": (3, 32, 32),
    "unet64": (3, 64, 64),
    "diffusers_unet": (1, 8, 8),
}


LOADERS = {"diffusers"}
"""Model configs that load a saved network (tested in tests/test_diffusers_*.py), not build one."""


def test_every_model_config_is_tested():
    assert {p.stem for p in (CONF / "model").glob("*.yaml")} == set(MODEL_SHAPES) | LOADERS


def _build(name: str, narrow: bool, learn_variance: bool = False) -> nn.Module:
    if name == "diffusers_unet":
        pytest.importorskip("diffusers")
    cfg = OmegaConf.load(CONF / "model" / f"{name}.yaml")
    cfg.pop("defaults")  # the nested model/param and model/time groups, not the network's
    cfg.learn_variance = learn_variance
    if narrow and "base_channels" in cfg:  # same structure (mult, attention, heads), fewer channels
        cfg.base_channels = 16
    return hydra.utils.instantiate(cfg, shape=MODEL_SHAPES[name])


def _forward_and_loss(net: nn.Module, shape: tuple[int, ...]) -> None:
    model = ScoreModel(net, VPSDE())
    x0 = torch.randn(2, *shape, generator=gen(0))
    value = DSMLoss()(model, x0, gen(1))
    value.backward()
    assert torch.isfinite(value) and value > 0


@pytest.mark.parametrize("learn_variance", [False, True])
@pytest.mark.parametrize("name", list(MODEL_SHAPES))
def test_model_configs_run(name, learn_variance):
    net = _build(name, narrow=True, learn_variance=learn_variance)
    x = torch.randn(2, *MODEL_SHAPES[name])
    out = net(x, torch.tensor([0.2, 0.7]))
    assert out.shape[1] == x.shape[1] * (2 if learn_variance else 1)
    _forward_and_loss(net, MODEL_SHAPES[name])


@pytest.mark.slow
@pytest.mark.parametrize("name", ["unet32", "unet64"])
def test_full_width_model_configs_run(name):
    _forward_and_loss(_build(name, narrow=False), MODEL_SHAPES[name])


@pytest.mark.slow
def test_mlp_learns_the_exact_eps_of_a_ring_mixture():
    """1500 Adam steps of DSM (λ = σ², batch 256, ~25 s on one core) on the 8-mode ring: the
    learned ε_θ is within 10% (squared, relative) of the exact −σ_t ∇log q_t for t ≥ 0.2."""
    from sde_gen.data import ring_mixture

    torch.manual_seed(0)
    sde, mix = VPSDE(), ring_mixture(std=0.15)
    model = ScoreModel(MLP((2,), hidden=128, num_layers=3), sde)
    opt = torch.optim.Adam(model.parameters(), 2e-3)
    g, loss_fn = gen(0), DSMLoss(t_min=1e-3)
    for _ in range(1500):
        opt.zero_grad()
        loss_fn(model, mix.sample(256, g), g).backward()
        opt.step()
    x0 = mix.sample64(4000, gen(9))
    for tv in (0.2, 0.5, 0.9):
        t = torch.full((4000,), tv, dtype=torch.float64)
        xt = sde.marginal_sample(x0, t, torch.randn(x0.shape, generator=gen(1), dtype=x0.dtype))
        exact = -sde.sigma(t)[:, None] * mix.score(xt, t, sde)
        with torch.no_grad():
            got = model.eps(xt.float(), t.float()).double()
        assert (got - exact).pow(2).sum(1).mean() < 0.1 * exact.pow(2).sum(1).mean()
