"""Models whose prediction provably depends on one patch only: ground truth for explanation maps."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vit.models.scratch_vit import VisionTransformer, preset

ROW, COL = 1, 2  # the informative patch of the 4 x 4 grid


def probe_vit(row: int = ROW, col: int = COL, marker: float = 8.0, sharp: float = 40.0,
              gain: float = 4.0) -> VisionTransformer:
    """A one-block vit_test_p8_32 with hand-set weights: position embeddings mark the class token, the
    informative patch and the rest; the class token's query matches only the informative patch's key,
    so its attention is one-hot there (the others' weights underflow to exactly 0); that patch's value
    is its per-channel pixel mean, and logit c = gain * (normalised) mean of channel c. The MLP is 0."""
    cfg = preset("vit_test_p8_32", depth=1)
    m = VisionTransformer(cfg).eval()
    grid, dim, hd = cfg.grid_size, cfg.embed_dim, cfg.embed_dim // cfg.num_heads
    with torch.no_grad():
        for p in m.parameters():
            p.zero_()
        for ln in (m.blocks[0].norm1, m.blocks[0].norm2, m.norm):
            ln.weight.fill_(1.0)
        pos = m.pos_embed[0]  # (1 + grid^2, D); zero-mean markers keep LayerNorm's mean at ~0
        pos[0, 2], pos[0, 3] = marker, -marker  # the class token
        pos[1:, 4], pos[1:, 5] = marker, -marker  # every patch ...
        p = 1 + row * grid + col
        pos[p, 4:6] = 0
        pos[p, 0], pos[p, 1] = marker, -marker  # ... but the informative one
        qkv, proj = m.blocks[0].attn.qkv.weight, m.blocks[0].attn.proj.weight  # qkv rows: q, k, v
        for h in range(cfg.num_heads):
            qkv[h * hd, 2] = sharp  # the class token's query ...
            qkv[dim + h * hd, 0] = 1.0  # ... meets the informative patch's key only
        for c in range(3):
            m.patch_embed.proj.weight[8 + c, c] = 1 / cfg.patch_size**2  # dims 8..10: channel means
            qkv[2 * dim + c, 8 + c] = 1.0  # head 0's value: the channel means
            proj[8 + c, c] = 1.0
            m.head.weight[c, 8 + c] = gain
    return m


class ProbeCNN(nn.Module):
    """A 'CNN' in timm's forward_features / forward_head shape: 8 px average pooling to a 4 x 4 map;
    logit c = gain * the mean of channel c in one cell."""

    def __init__(self, row: int = ROW, col: int = COL, gain: float = 2.0) -> None:
        super().__init__()
        self.row, self.col = row, col
        self.gain = nn.Parameter(torch.tensor(gain))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(x, 8)  # (B, 3, H / 8, W / 8)

    def forward_head(self, f: torch.Tensor) -> torch.Tensor:
        return self.gain * f[:, :, self.row, self.col]  # (B, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def probe_image(seed: int = 0, cls: int = 0, row: int = ROW, col: int = COL) -> torch.Tensor:
    """(1, 3, 32, 32) noise with channel `cls` raised by 2 in the informative patch."""
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(seed)) * 0.5
    x[0, cls, row * 8:row * 8 + 8, col * 8:col * 8 + 8] += 2.0
    return x


# Two classes, two places: class 0 reads channel 0 of cell A, class 1 channel 1 of cell B, class 2 nothing
# (its logit is 0). A map of an explicit target must follow the target, whichever class is on top.
CELLS = ((ROW, COL), (3, 0))  # A, B on the 4 x 4 grid


def two_cell_vit(cells: tuple = CELLS, marker: float = 8.0, sharp: float = 40.0,
                 gain: float = 4.0) -> VisionTransformer:
    """`probe_vit` with one head per class: head h's class-token query meets only cell h's key (position
    embeddings mark each cell), its value is channel h's pixel mean there, and logit h = gain * that
    mean (normalised); logit 2 = 0. The MLP is 0."""
    cfg = preset("vit_test_p8_32", depth=1)
    m = VisionTransformer(cfg).eval()
    grid, dim, hd = cfg.grid_size, cfg.embed_dim, cfg.embed_dim // cfg.num_heads
    with torch.no_grad():
        for p in m.parameters():
            p.zero_()
        for ln in (m.blocks[0].norm1, m.blocks[0].norm2, m.norm):
            ln.weight.fill_(1.0)
        pos = m.pos_embed[0]  # (1 + grid^2, D)
        pos[0, 2], pos[0, 3] = marker, -marker  # the class token
        pos[1:, 4], pos[1:, 5] = marker, -marker  # every patch ...
        qkv, proj = m.blocks[0].attn.qkv.weight, m.blocks[0].attn.proj.weight  # qkv rows: q, k, v
        for h, (row, col) in enumerate(cells):  # ... but cell h: marked in dims 6h, 6h + 1 (0, 1 and 6, 7)
            p = 1 + row * grid + col
            pos[p, 4:6] = 0
            pos[p, 6 * h], pos[p, 6 * h + 1] = marker, -marker
            qkv[h * hd, 2] = sharp  # head h's class-token query ...
            qkv[dim + h * hd, 6 * h] = 1.0  # ... meets cell h's key only
            qkv[2 * dim + h * hd, 8 + h] = 1.0  # head h's value: channel h's mean (dims 8..10, below)
            proj[12 + h, h * hd] = 1.0  # into dim 12 + h of the class token
            m.head.weight[h, 12 + h] = gain
        for c in range(3):
            m.patch_embed.proj.weight[8 + c, c] = 1 / cfg.patch_size**2  # dims 8..10: channel means
    return m


def two_cell_timm_vit(cells: tuple = CELLS) -> nn.Module:
    """`two_cell_vit`'s weights in timm's own VisionTransformer (the parameter names match one to one):
    the hybrid ViT's blocks, attention and head, as timm runs them."""
    from timm.models.vision_transformer import VisionTransformer as TimmViT

    ours = two_cell_vit(cells)
    cfg = ours.cfg
    m = TimmViT(img_size=cfg.image_size, patch_size=cfg.patch_size, embed_dim=cfg.embed_dim, depth=cfg.depth,
                num_heads=cfg.num_heads, mlp_ratio=cfg.mlp_hidden / cfg.embed_dim, num_classes=cfg.num_classes)
    m.load_state_dict(ours.state_dict())
    return m.eval()


class TwoCellCNN(nn.Module):
    """`ProbeCNN` with one cell per class: logit h = gain * the mean of channel h in cell h; logit 2 = 0."""

    def __init__(self, cells: tuple = CELLS, gain: float = 2.0) -> None:
        super().__init__()
        self.cells = cells
        self.gain = nn.Parameter(torch.tensor(gain))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(x, 8)  # (B, 3, H / 8, W / 8)

    def forward_head(self, f: torch.Tensor) -> torch.Tensor:
        read = [f[:, h, row, col] for h, (row, col) in enumerate(self.cells)]  # 2 x (B,)
        return self.gain * torch.stack([*read, torch.zeros_like(read[0])], 1)  # (B, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def two_cell_image(seed: int = 0, lift: tuple[float, float] = (2.0, 2.0), cells: tuple = CELLS) -> torch.Tensor:
    """(1, 3, 32, 32) noise with channel h raised by lift[h] in cell h: the larger lift is the top class."""
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(seed)) * 0.5
    for h, (row, col) in enumerate(cells):
        x[0, h, row * 8:row * 8 + 8, col * 8:col * 8 + 8] += lift[h]
    return x
