"""U-Net ε-network for images (Ho et al. 2020; Song et al. 2021): wide ResNet blocks with the time
embedding added per block, self-attention at chosen resolutions, skip connections."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sde_gen.models.embeddings import SinusoidalEmbedding, TimeMLP

__all__ = ["UNet", "ResBlock", "AttentionBlock", "group_norm"]


def group_norm(channels: int, max_groups: int = 32, min_group_size: int = 4) -> nn.GroupNorm:
    """GroupNorm with the most groups (≤ ``max_groups``) dividing ``channels`` with at least
    ``min_group_size`` channels each. One channel a group would be InstanceNorm, which removes
    the per-channel time-embedding shift added before it."""
    limit = max(1, min(max_groups, channels // min_group_size))
    groups = max(g for g in range(1, limit + 1) if channels % g == 0)
    return nn.GroupNorm(groups, channels)


def _zero(module: nn.Module) -> nn.Module:
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class ResBlock(nn.Module):
    """Wide ResNet block: h = conv(SiLU(GN x)) + W e(t); out = skip(x) + conv(drop(SiLU(GN h)))."""

    def __init__(self, in_ch: int, out_ch: int, emb_dim: int, dropout: float = 0.0):
        super().__init__()
        self.norm1 = group_norm(in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.emb = nn.Linear(emb_dim, out_ch)
        self.norm2 = group_norm(out_ch)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = _zero(nn.Conv2d(out_ch, out_ch, 3, padding=1))
        self.skip = nn.Identity() if in_ch == out_ch else nn.Conv2d(in_ch, out_ch, 1)

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.emb(F.silu(emb))[:, :, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.skip(x) + h


class AttentionBlock(nn.Module):
    """Multi-head self-attention over the H·W positions: x + W_o softmax(QKᵀ/√d) V of GN(x).

    No positional encoding: a permutation of the positions permutes the output the same way.
    """

    def __init__(self, channels: int, num_heads: int = 1):
        super().__init__()
        if num_heads < 1 or channels % num_heads:
            raise ValueError(f"num_heads={num_heads} must divide channels={channels}")
        self.num_heads = num_heads
        self.norm = group_norm(channels)
        self.qkv = nn.Conv1d(channels, 3 * channels, 1)
        self.proj = _zero(nn.Conv1d(channels, channels, 1))

    def forward(self, x: Tensor) -> Tensor:
        B, C, H, W = x.shape
        h = self.qkv(self.norm(x).reshape(B, C, H * W))
        q, k, v = h.reshape(B, 3, self.num_heads, C // self.num_heads, H * W).unbind(1)
        out = F.scaled_dot_product_attention(
            q.transpose(-1, -2), k.transpose(-1, -2), v.transpose(-1, -2)
        )  # (B, heads, HW, d)
        out = out.transpose(-1, -2).reshape(B, C, H * W)
        return x + self.proj(out).reshape(B, C, H, W)


class Downsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


class UNet(nn.Module):
    """ε_θ(x, t) for images of per-sample shape (C, H, W).

    Level i (resolution H/2^i) has ``num_res_blocks`` ResBlocks of ``base_channels·channel_mult[i]``
    channels, attention after each when its resolution is in ``attn_resolutions``; the decoder
    mirrors it with one extra block per level taking the skips. H and W must be divisible by
    2^(len(channel_mult) − 1). The last conv is zero-initialised (ε_θ ≡ 0 at start);
    ``learn_variance`` returns 2C channels (ε then v, Nichol & Dhariwal 2021).
    """

    def __init__(
        self,
        shape: tuple[int, ...] | list[int],
        base_channels: int = 64,
        channel_mult: tuple[int, ...] | list[int] = (1, 2, 2),
        num_res_blocks: int = 2,
        attn_resolutions: tuple[int, ...] | list[int] = (),
        dropout: float = 0.1,
        embedding: nn.Module | None = None,
        num_heads: int = 1,
        learn_variance: bool = False,
    ):
        super().__init__()
        shape = tuple(int(s) for s in shape)
        if len(shape) != 3 or min(shape) < 1:
            raise ValueError(f"UNet needs a per-sample shape (C, H, W), got {shape}")
        channel_mult = tuple(int(m) for m in channel_mult)
        if len(channel_mult) == 0 or min(channel_mult) < 1:
            raise ValueError(f"channel_mult={channel_mult} must be non-empty positive integers")
        if base_channels < 1 or num_res_blocks < 1:
            raise ValueError(
                f"need base_channels={base_channels} >= 1, num_res_blocks={num_res_blocks} >= 1"
            )
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout={dropout} must lie in [0, 1)")
        C, H, W = shape
        depth = len(channel_mult) - 1
        if H % 2**depth or W % 2**depth:
            raise ValueError(
                f"image size {H}x{W} is not divisible by 2^(len(channel_mult)-1) = {2**depth} "
                f"(depth {depth} downsamplings for channel_mult={channel_mult})"
            )
        resolutions = {H // 2**i for i in range(depth + 1)}
        bad = [r for r in attn_resolutions if r not in resolutions]
        if bad:
            raise ValueError(
                f"attn_resolutions {bad} not among the U-Net's resolutions {sorted(resolutions)} "
                f"of {H}x{W} images: set model.attn_resolutions to some of them (or [])"
            )
        self.shape, self.learn_variance = shape, learn_variance
        embedding = SinusoidalEmbedding(base_channels) if embedding is None else embedding
        emb_dim = 4 * base_channels
        self.time = TimeMLP(embedding, emb_dim)
        self.conv_in = nn.Conv2d(C, base_channels, 3, padding=1)

        def block(i: int, o: int, res: int) -> nn.ModuleList:
            mods = [ResBlock(i, o, emb_dim, dropout)]
            if res in attn_resolutions:
                mods.append(AttentionBlock(o, num_heads))
            return nn.ModuleList(mods)

        self.down = nn.ModuleList()
        skips, ch, res = [base_channels], base_channels, H
        for level, mult in enumerate(channel_mult):
            for _ in range(num_res_blocks):
                self.down.append(block(ch, base_channels * mult, res))
                ch = base_channels * mult
                skips.append(ch)
            if level < depth:
                self.down.append(nn.ModuleList([Downsample(ch)]))
                skips.append(ch)
                res //= 2
        self.mid = nn.ModuleList(
            [
                ResBlock(ch, ch, emb_dim, dropout),
                AttentionBlock(ch, num_heads),
                ResBlock(ch, ch, emb_dim, dropout),
            ]
        )
        self.up = nn.ModuleList()
        for level, mult in reversed(list(enumerate(channel_mult))):
            for _ in range(num_res_blocks + 1):
                self.up.append(block(ch + skips.pop(), base_channels * mult, res))
                ch = base_channels * mult
            if level > 0:
                self.up.append(nn.ModuleList([Upsample(ch)]))
                res *= 2
        self.norm_out = group_norm(ch)
        self.conv_out = _zero(nn.Conv2d(ch, C * (2 if learn_variance else 1), 3, padding=1))

    @staticmethod
    def _run(mods: nn.ModuleList, h: Tensor, emb: Tensor) -> Tensor:
        for m in mods:
            h = m(h, emb) if isinstance(m, ResBlock) else m(h)
        return h

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        if tuple(x.shape[1:]) != self.shape:
            raise ValueError(f"x has per-sample shape {tuple(x.shape[1:])}, expected {self.shape}")
        emb = self.time(t)
        h = self.conv_in(x)
        hs = [h]
        for mods in self.down:
            h = self._run(mods, h, emb)
            hs.append(h)
        h = self.mid[0](h, emb)
        h = self.mid[1](h)
        h = self.mid[2](h, emb)
        for mods in self.up:
            if isinstance(mods[0], ResBlock):
                h = torch.cat([h, hs.pop()], dim=1)
            h = self._run(mods, h, emb)
        return self.conv_out(F.silu(self.norm_out(h)))
