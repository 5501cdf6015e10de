"""Denoisers eps_theta(x_t, t, y): a class-conditional UNet for small images and an MLP for 2-D.

Parameters only, no training logic. Both take integer steps t (B,) and labels y (B,) where
y = None, or y == num_classes (the "null" label), means unconditional; the null label is what
classifier-free guidance (Ho & Salimans 2022) trains with label dropout.

The UNet is the DDPM architecture (Ho et al. 2020, Appendix B; the Wide-ResNet/PixelCNN++
backbone): residual blocks with GroupNorm and a time embedding, self-attention at chosen
resolutions, strided-conv down- and nearest-neighbour up-sampling. `UNetConfig.paper()` is the
DDPM CIFAR-10 model (ch=128, mults 1,2,2,2, 2 blocks, attention at 16x16, ~35.7M parameters).
Every layer is one that Opacus supports (GroupNorm, 1x1-conv attention), for DP-SGD baselines.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of integer steps t (B,) -> (B, dim), as in the Transformer/DDPM."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]  # (B, half)
    return torch.cat([torch.cos(args), torch.sin(args)], dim=1)


def _labels(y: torch.Tensor | None, batch: int, num_classes: int, device) -> torch.Tensor:
    """Labels with None mapped to the null label `num_classes`."""
    if y is None:
        return torch.full((batch,), num_classes, dtype=torch.long, device=device)
    return y.long()


def _groups(ch: int) -> int:
    return next(g for g in (32, 16, 8, 4, 2, 1) if ch % g == 0 and ch // g >= 2 or g == 1)


class Embedding(nn.Module):
    """Time + class embedding shared by both denoisers: (t, y) -> (B, dim)."""

    def __init__(self, base: int, dim: int, num_classes: int) -> None:
        super().__init__()
        self.base, self.num_classes = base, num_classes
        self.time = nn.Sequential(nn.Linear(base, dim), nn.SiLU(), nn.Linear(dim, dim))
        self.label = nn.Embedding(num_classes + 1, dim)  # last row: null label

    def forward(self, t: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        y = _labels(y, t.shape[0], self.num_classes, t.device)
        return self.time(timestep_embedding(t, self.base)) + self.label(y)


class ResBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, emb_dim: int, dropout: float) -> None:
        super().__init__()
        self.norm1, self.conv1 = nn.GroupNorm(_groups(c_in), c_in), nn.Conv2d(c_in, c_out, 3, padding=1)
        self.emb = nn.Linear(emb_dim, c_out)
        self.norm2, self.conv2 = nn.GroupNorm(_groups(c_out), c_out), nn.Conv2d(c_out, c_out, 3, padding=1)
        self.dropout = nn.Dropout(dropout)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.emb(F.silu(emb))[:, :, None, None]  # (B, C, 1, 1)
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.skip(x) + h


class Attention(nn.Module):
    """Single-head self-attention over pixels with 1x1-conv q, k, v (Opacus-friendly)."""

    def __init__(self, ch: int) -> None:
        super().__init__()
        self.norm, self.qkv, self.proj = nn.GroupNorm(_groups(ch), ch), nn.Conv2d(ch, 3 * ch, 1), nn.Conv2d(ch, ch, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(B, 3, C, H * W).unbind(1)  # each (B, C, HW)
        attn = torch.softmax(q.transpose(1, 2) @ k / math.sqrt(C), dim=-1)  # (B, HW, HW)
        h = (v @ attn.transpose(1, 2)).reshape(B, C, H, W)
        return x + self.proj(h)


class Upsample(nn.Module):
    """Nearest-neighbour x2 followed by a 3x3 conv (DDPM)."""

    def __init__(self, ch: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


@dataclass(frozen=True)
class UNetConfig:
    image_size: int = 8  # H = W of the input
    in_channels: int = 1
    base_channels: int = 32  # width: channels at full resolution
    channel_mults: tuple[int, ...] = (1, 2)  # one entry per resolution; len - 1 downsamplings
    num_res_blocks: int = 1  # depth: residual blocks per resolution
    attn_resolutions: tuple[int, ...] = ()  # resolutions (e.g. 16) that get self-attention
    num_classes: int = 10  # labels 0..num_classes-1; num_classes is the null label
    dropout: float = 0.0

    @classmethod
    def paper(cls, num_classes: int = 10) -> UNetConfig:
        """The DDPM CIFAR-10 UNet (Ho et al. 2020) used by the paper: ~35.7M parameters."""
        return cls(32, 3, 128, (1, 2, 2, 2), 2, (16,), num_classes, 0.1)

    def __post_init__(self) -> None:
        if self.image_size % 2 ** (len(self.channel_mults) - 1):
            raise ValueError(
                f"image_size={self.image_size} must be divisible by 2**(len(channel_mults)-1)"
                f"={2 ** (len(self.channel_mults) - 1)}"
            )


class UNet(nn.Module):
    """eps_theta(x_t, t, y) for images (B, C, H, W) -> (B, C, H, W)."""

    def __init__(self, config: UNetConfig = UNetConfig()) -> None:
        super().__init__()
        self.config = c = config
        ch, emb_dim = c.base_channels, 4 * c.base_channels
        self.embed = Embedding(ch, emb_dim, c.num_classes)
        self.stem = nn.Conv2d(c.in_channels, ch, 3, padding=1)
        self.down, skips, res = nn.ModuleList(), [ch], c.image_size
        for i, mult in enumerate(c.channel_mults):
            for _ in range(c.num_res_blocks):
                self.down.append(self._block(ch, c.base_channels * mult, res))
                ch = c.base_channels * mult
                skips.append(ch)
            if i < len(c.channel_mults) - 1:
                self.down.append(nn.Conv2d(ch, ch, 3, stride=2, padding=1))
                skips.append(ch)
                res //= 2
        self.mid = nn.ModuleList([ResBlock(ch, ch, emb_dim, c.dropout), Attention(ch), ResBlock(ch, ch, emb_dim, c.dropout)])
        self.up = nn.ModuleList()
        for i, mult in reversed(list(enumerate(c.channel_mults))):
            for _ in range(c.num_res_blocks + 1):
                self.up.append(self._block(ch + skips.pop(), c.base_channels * mult, res))
                ch = c.base_channels * mult
            if i > 0:
                self.up.append(Upsample(ch))
                res *= 2
        self.head = nn.Sequential(nn.GroupNorm(_groups(ch), ch), nn.SiLU(), nn.Conv2d(ch, c.in_channels, 3, padding=1))

    def _block(self, c_in: int, c_out: int, res: int) -> nn.Module:
        block = ResBlock(c_in, c_out, 4 * self.config.base_channels, self.config.dropout)
        return nn.ModuleList([block, Attention(c_out)]) if res in self.config.attn_resolutions else block

    @staticmethod
    def _run(layer: nn.Module, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        if isinstance(layer, ResBlock):
            return layer(h, emb)
        if isinstance(layer, nn.ModuleList):  # ResBlock + Attention
            return layer[1](layer[0](h, emb))
        return layer(h)  # down/up-sampling or attention

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        c = self.config
        if x.dim() != 4 or x.shape[1:] != (c.in_channels, c.image_size, c.image_size):
            raise ValueError(
                f"x must have shape (B, {c.in_channels}, {c.image_size}, {c.image_size}), got {tuple(x.shape)}"
            )
        emb = self.embed(t, y)
        h = self.stem(x)
        hs = [h]
        for layer in self.down:
            h = self._run(layer, h, emb)
            hs.append(h)
        for layer in self.mid:
            h = self._run(layer, h, emb)
        for layer in self.up:
            if isinstance(layer, Upsample):
                h = layer(h)
            else:
                h = self._run(layer, torch.cat([h, hs.pop()], dim=1), emb)
        return self.head(h)


class MLPDenoiser(nn.Module):
    """eps_theta(x_t, t, y) for vectors (B, dim): a residual MLP with time/class embedding."""

    def __init__(self, dim: int = 2, hidden: int = 128, depth: int = 3, num_classes: int = 1) -> None:
        super().__init__()
        self.dim = dim
        self.embed = Embedding(hidden, hidden, num_classes)
        self.inp = nn.Linear(dim, hidden)
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.LayerNorm(hidden), nn.SiLU(), nn.Linear(hidden, hidden)) for _ in range(depth)
        )
        self.out = nn.Sequential(nn.LayerNorm(hidden), nn.SiLU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        if x.dim() != 2 or x.shape[1] != self.dim:
            raise ValueError(f"x must have shape (B, {self.dim}), got {tuple(x.shape)}")
        emb = self.embed(t, y)
        h = self.inp(x)
        for block in self.blocks:
            h = h + block(h + emb)
        return self.out(h)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
