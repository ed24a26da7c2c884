"""The from-scratch Vision Transformer (Dosovitskiy et al. 2020, "An Image is Worth 16x16 Words").

One frozen config, named presets, and a model whose parameter names follow timm
(`patch_embed.proj`, `cls_token`, `pos_embed`, `blocks.N.attn.qkv`, `norm`, `head`), so a timm
`VisionTransformer` state dict of the same config loads into it one-to-one. With
`distilled=True` it is DeiT's variant (Touvron et al. 2021): a second, distillation token
(`dist_token`) with its own head (`head_dist`), trained against a teacher's predictions.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

# Our ViT's eval preprocessing (the scratch models are trained with it): [-1, 1] inputs, bicubic resize,
# centre crop of 87.5 %; vit.models.families puts the input size beside it.
SCRATCH_PREPROCESSING = {"interpolation": "bicubic", "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5),
                         "crop_pct": 0.875, "crop_mode": "center"}


@dataclass(frozen=True)
class ViTConfig:
    image_size: int = 224  # input height = width, in pixels
    patch_size: int = 16  # side of a square patch; image_size must be a multiple of it
    in_chans: int = 3  # input channels
    num_classes: int = 1000  # classifier outputs
    embed_dim: int = 768  # D, the width of every token
    depth: int = 12  # L, the number of encoder blocks
    num_heads: int = 12  # attention heads per block; embed_dim must be a multiple of it
    mlp_ratio: float = 4.0  # MLP hidden size = mlp_ratio * embed_dim (unless mlp_dim is set)
    mlp_dim: int | None = None  # MLP hidden size, when it is not a multiple of embed_dim (None: mlp_ratio)
    qkv_bias: bool = True  # bias in the fused qkv projection
    dropout: float = 0.0  # after the embeddings (Eq. 1) and after each dense layer (Eq. 2-3)
    attn_dropout: float = 0.0  # on the attention weights
    drop_path: float = 0.0  # stochastic depth, rising linearly to this rate in the last block
    distilled: bool = False  # DeiT distillation token and head

    def __post_init__(self) -> None:
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size {self.image_size} is not a multiple of patch_size {self.patch_size}")
        if self.embed_dim % self.num_heads:
            raise ValueError(f"embed_dim {self.embed_dim} is not a multiple of num_heads {self.num_heads}")

    @property
    def grid_size(self) -> int:
        return self.image_size // self.patch_size

    @property
    def mlp_hidden(self) -> int:
        return self.mlp_dim if self.mlp_dim is not None else int(self.embed_dim * self.mlp_ratio)

    @property
    def num_prefix_tokens(self) -> int:
        return 2 if self.distilled else 1

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ViTConfig":
        return cls(**d)


# The paper's Table 1 rows at 224 px and patch 16, plus the small configs we train on FoodVision Mini.
PRESETS: dict[str, ViTConfig] = {
    "vit_base_patch16_224": ViTConfig(embed_dim=768, depth=12, num_heads=12),
    "vit_large_patch16_224": ViTConfig(embed_dim=1024, depth=24, num_heads=16),
    "vit_huge_patch16_224": ViTConfig(embed_dim=1280, depth=32, num_heads=16),
    # DeiT-Ti width (Touvron et al. 2021, Table 1) at half its depth, with a distillation token; 8 px
    # patches on 96 px images give a 12x12 token grid: a small, shallow shape that trains from scratch
    # on a few hundred photos in about an hour of two CPU cores.
    "vit_foodvision_p8_96": ViTConfig(
        image_size=96, patch_size=8, num_classes=3, embed_dim=192, depth=6, num_heads=3,
        dropout=0.0, drop_path=0.1, distilled=True),
    # The CIFAR-10 ViT of the ViT-from-scratch tutorials: 4 px patches on 32 px images (an 8x8 grid, 64
    # tokens + the class token), width 192, 6 blocks, MLP 512, no qkv bias; classifier = final LayerNorm
    # (`norm`) + Linear (`head`) on the class token. 2,098,762 parameters with 10 classes.
    "vit_cifar10_p4_32": ViTConfig(
        image_size=32, patch_size=4, num_classes=10, embed_dim=192, depth=6, num_heads=3, mlp_dim=512,
        qkv_bias=False, drop_path=0.1),
    # Tiny model for tests: a forward pass takes milliseconds.
    "vit_test_p8_32": ViTConfig(image_size=32, patch_size=8, num_classes=3, embed_dim=32, depth=2, num_heads=2),
}


def preset(name: str, **overrides) -> ViTConfig:
    """A named config, with any field replaced (e.g. `num_classes=3`)."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    return dataclasses.replace(PRESETS[name], **overrides)


class PatchEmbed(nn.Module):
    """Eq. 1: split into P x P patches and project each to D with one strided convolution."""

    def __init__(self, *, image_size: int, patch_size: int, in_chans: int, embed_dim: int) -> None:
        super().__init__()
        self.image_size = image_size
        self.grid_size = image_size // patch_size
        self.num_patches = self.grid_size**2
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        if H != self.image_size or W != self.image_size:
            raise ValueError(
                f"input is {H}x{W} px but this model was built for {self.image_size}x{self.image_size} px; "
                "resize the image with the model's own preprocessing")
        x = self.proj(x)  # (B, D, H/P, W/P)
        return x.flatten(2).transpose(1, 2)  # (B, N, D)


class Attention(nn.Module):
    """Multi-head self-attention (Eq. 2) with one fused qkv projection."""

    def __init__(self, *, dim: int, num_heads: int, qkv_bias: bool, attn_dropout: float, dropout: float) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.attn_drop = nn.Dropout(attn_dropout)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(dropout)
        self.fused_attn = True  # the fused kernel (timm's switch); False: the explicit softmax (vit.train on a CPU)

    def forward(self, x: torch.Tensor, return_attn: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim)  # (B, N, 3, heads, head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # 3 x (B, heads, N, head_dim)
        weights = None
        if return_attn or not self.fused_attn:  # explicit path: the softmax weights, kept if the caller asks
            attn = ((q * self.scale) @ k.transpose(-2, -1)).softmax(dim=-1)  # (B, heads, N, N)
            x = self.attn_drop(attn) @ v
            weights = attn if return_attn else None
        else:  # fast path: fused kernel, never materialises the weights
            x = F.scaled_dot_product_attention(q, k, v, dropout_p=self.attn_drop.p if self.training else 0.0)
        x = x.transpose(1, 2).reshape(B, N, C)  # (B, N, D)
        return self.proj_drop(self.proj(x)), weights


class Mlp(nn.Module):
    """Eq. 3's MLP: two dense layers with GELU, dropout after each."""

    def __init__(self, *, dim: int, hidden_dim: int, dropout: float) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU()
        self.drop1 = nn.Dropout(dropout)
        self.fc2 = nn.Linear(hidden_dim, dim)
        self.drop2 = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop2(self.fc2(self.drop1(self.act(self.fc1(x)))))


class DropPath(nn.Module):
    """Stochastic depth (Huang et al. 2016): drop a whole residual branch per sample while training."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = x.new_empty(x.shape[0], *([1] * (x.ndim - 1))).bernoulli_(1 - self.p)  # (B, 1, 1)
        return x * keep / (1 - self.p)


class Block(nn.Module):
    """One encoder block: pre-norm MSA (Eq. 2) and pre-norm MLP (Eq. 3), each with a residual."""

    def __init__(self, cfg: ViTConfig, drop_path: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(cfg.embed_dim, eps=1e-6)
        self.attn = Attention(dim=cfg.embed_dim, num_heads=cfg.num_heads, qkv_bias=cfg.qkv_bias,
                              attn_dropout=cfg.attn_dropout, dropout=cfg.dropout)
        self.norm2 = nn.LayerNorm(cfg.embed_dim, eps=1e-6)
        self.mlp = Mlp(dim=cfg.embed_dim, hidden_dim=cfg.mlp_hidden, dropout=cfg.dropout)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor, return_attn: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        attn_out, weights = self.attn(self.norm1(x), return_attn)
        x = x + self.drop_path(attn_out)  # z'_l = MSA(LN(z_{l-1})) + z_{l-1}
        x = x + self.drop_path(self.mlp(self.norm2(x)))  # z_l = MLP(LN(z'_l)) + z'_l
        return x, weights


class VisionTransformer(nn.Module):
    def __init__(self, cfg: ViTConfig) -> None:
        super().__init__()
        self.cfg = cfg
        D = cfg.embed_dim
        self.patch_embed = PatchEmbed(image_size=cfg.image_size, patch_size=cfg.patch_size,
                                      in_chans=cfg.in_chans, embed_dim=D)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, D))
        self.dist_token = nn.Parameter(torch.zeros(1, 1, D)) if cfg.distilled else None
        self.pos_embed = nn.Parameter(torch.zeros(1, self.patch_embed.num_patches + cfg.num_prefix_tokens, D))
        self.pos_drop = nn.Dropout(cfg.dropout)
        rates = [cfg.drop_path * i / max(cfg.depth - 1, 1) for i in range(cfg.depth)]  # 0 -> drop_path
        self.blocks = nn.ModuleList(Block(cfg, rate) for rate in rates)
        self.norm = nn.LayerNorm(D, eps=1e-6)
        self.head = nn.Linear(D, cfg.num_classes)
        self.head_dist = nn.Linear(D, cfg.num_classes) if cfg.distilled else None
        self._init_weights()

    def _init_weights(self) -> None:
        """timm/DeiT initialisation: truncated normal (std 0.02) for tokens, position embedding and Linears."""
        for p in (self.pos_embed, self.cls_token, self.dist_token):
            if p is not None:
                nn.init.trunc_normal_(p, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:  # qkv_bias=False has none
                    nn.init.zeros_(m.bias)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Eq. 1: patch embeddings with the class (and distillation) token prepended, plus positions."""
        x = self.patch_embed(x)  # (B, N_patches, D)
        prefix = [t.expand(x.shape[0], -1, -1) for t in (self.cls_token, self.dist_token) if t is not None]
        return self.pos_drop(torch.cat([*prefix, x], dim=1) + self.pos_embed)  # (B, N, D)

    def forward_features(self, x: torch.Tensor, return_attn: bool = False
                         ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Tokens after the final LayerNorm (B, N, D) and, if asked, each block's (B, heads, N, N) weights."""
        x = self.embed(x)  # (B, N, D)
        maps = []
        for block in self.blocks:
            x, weights = block(x, return_attn)
            if return_attn:
                maps.append(weights)
        return self.norm(x), maps  # Eq. 4's LN

    def forward_head(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Eq. 4: classify the class token. A distilled model averages its two heads at inference
        and returns both while training, for the two halves of the DeiT loss."""
        logits = self.head(x[:, 0])
        if self.head_dist is None:
            return logits
        logits_dist = self.head_dist(x[:, 1])
        if self.training:
            return logits, logits_dist
        return (logits + logits_dist) / 2

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        return self.forward_head(self.forward_features(x)[0])

    def forward_with_attention(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Logits plus one (B, heads, N, N) softmax attention map per block, via the explicit path."""
        tokens, maps = self.forward_features(x, return_attn=True)
        return self.forward_head(tokens), maps
