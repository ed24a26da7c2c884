"""Figure 7 of Dosovitskiy et al. 2021 ("An Image is Worth 16x16 Words") and its Appendix D.7, for any ViT:
mean attention distance per head and layer, how sharp attention is (normalised entropy, peak), the
position embeddings' similarity and the patch filters' principal components.

    d = attention_distance(maps, grid, patch_px, prefix)   # (layers, heads) px, Fig. 7 right
    e = attention_entropy(maps, prefix)                    # (layers, heads), 1 = uniform
    s = position_similarity(model)                         # (P, P) cosine, Fig. 7 centre
    tiles, share = patch_filter_pcs(model)                 # (28, p, p, 3) RGB tiles, Fig. 7 left

The definitions (issue 30, so anyone can recompute them): only the patch tokens take part, queries and
keys (the class and distillation tokens left out); each attention row is restricted to the patch keys and
renormalised, a'(q, k) = a(q, k) / sum_k' a(q, k'); distances are between patch centres in input pixels
(a hybrid's token is one cell of its CNN's stride-16 map, centred on its 16 x 16 px cell, though it sees
more); entropies are divided by log(number of patch keys): 1 = uniform, 0 = one key (vit.models.attention
defines them, and the peak, for the overlays too). Every figure is a mean over photos, so batches combine
exactly (`Sums`); vit.explore.inside measures them on the test photos.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from vit.models.attention import NEARLY_UNIFORM, normalised_entropy, peak_ratio

Grid = tuple[int, int]  # (rows, cols) of patch tokens
LINES = (NEARLY_UNIFORM, 0.98, 0.99)  # normalised entropies at which the rows' peaks are recorded: the line, then two


# ------------------------------------------------------------------------------------------ geometry


def patch_centres(grid: Grid, patch_px: float) -> torch.Tensor:
    """(P, 2) centres (y, x) of the patches in input pixels, in the model's row-major token order."""
    rows, cols = grid
    y, x = torch.meshgrid(torch.arange(rows, dtype=torch.float64), torch.arange(cols, dtype=torch.float64),
                          indexing="ij")
    return (torch.stack([y, x], -1).reshape(-1, 2) + 0.5) * patch_px  # (P, 2)


def patch_distances(grid: Grid, patch_px: float) -> torch.Tensor:
    """(P, P) Euclidean distance between every two patch centres, in input pixels."""
    c = patch_centres(grid, patch_px)
    return torch.cdist(c, c)  # (P, P)


def uniform_distance(grid: Grid, patch_px: float) -> float:
    """The mean attention distance of uniform attention: the mean of d(q, k) over all pairs, q = k included."""
    return patch_distances(grid, patch_px).mean().item()


# ------------------------------------------------------------------------------------------ rows


def patch_rows(layer_map: torch.Tensor, prefix: int) -> torch.Tensor:
    """(..., N, N) softmax weights -> (..., P, P): patch queries over patch keys, renormalised (a')."""
    a = layer_map[..., prefix:, prefix:].double()  # (..., P, P)
    return a / a.sum(-1, keepdim=True)


def cls_rows(layer_map: torch.Tensor, prefix: int) -> torch.Tensor:
    """(..., N, N) softmax weights -> (..., P): the class token's row over the patch keys, renormalised."""
    a = layer_map[..., 0, prefix:].double()  # (..., P)
    return a / a.sum(-1, keepdim=True)


def _batched(layer_map: torch.Tensor) -> torch.Tensor:
    return layer_map if layer_map.dim() == 4 else layer_map.unsqueeze(0)  # (B, heads, N, N)


# ------------------------------------------------------------------------------------------ Fig. 7 right, and sharpness


def attention_distance(maps: Sequence[torch.Tensor], grid: Grid, patch_px: float, prefix: int) -> torch.Tensor:
    """Mean attention distance (Dosovitskiy et al. 2021, Fig. 7 right, Appendix D.7) in input pixels: for
    layer l, head h and photo b, the mean over patch queries q of sum_k a'(q, k) d(q, k); then the mean
    over photos. maps: per layer (B, heads, N, N) or (heads, N, N). Returns (layers, heads)."""
    d = patch_distances(grid, patch_px)  # (P, P)
    return torch.stack([(patch_rows(_batched(m), prefix) * d).sum(-1).mean((0, 2)) for m in maps]).float()


def attention_entropy(maps: Sequence[torch.Tensor], prefix: int) -> torch.Tensor:
    """Normalised entropy of the patch rows a'(q, .), mean over photos and patch queries: (layers, heads)."""
    return torch.stack([normalised_entropy(patch_rows(_batched(m), prefix)).mean((0, 2)) for m in maps]).float()


def cls_attention_entropy(maps: Sequence[torch.Tensor], prefix: int) -> torch.Tensor:
    """Normalised entropy of the class token's renormalised row over the patch keys, mean over photos:
    (layers, heads)."""
    return torch.stack([normalised_entropy(cls_rows(_batched(m), prefix)).mean(0) for m in maps]).float()


def attention_peak(maps: Sequence[torch.Tensor], prefix: int) -> torch.Tensor:
    """Largest weight of the patch rows x number of patch keys (1 = uniform), mean over photos and queries:
    (layers, heads)."""
    return torch.stack([peak_ratio(patch_rows(_batched(m), prefix)).mean((0, 2)) for m in maps]).float()


def cls_attention_peak(maps: Sequence[torch.Tensor], prefix: int) -> torch.Tensor:
    """Largest weight of the class token's renormalised patch row x number of patch keys, mean over photos:
    (layers, heads)."""
    return torch.stack([peak_ratio(cls_rows(_batched(m), prefix)).mean(0) for m in maps]).float()


def prefix_mass(maps: Sequence[torch.Tensor], prefix: int) -> torch.Tensor:
    """The share of the patch queries' attention on the class / distillation tokens (what a' leaves out),
    mean over photos and queries: (layers, heads)."""
    return torch.stack([_batched(m)[..., prefix:, :prefix].double().sum(-1).mean((0, 2)) for m in maps]).float()


@dataclass
class Sums:
    """Running sums over batches of photos, so that a long run never holds every photo's maps: each
    figure is a mean over photos, hence exact. `add` a batch's per-layer (B, heads, N, N) maps."""
    grid: Grid
    patch_px: float
    prefix: int
    photos: int = 0
    totals: dict[str, torch.Tensor] = field(default_factory=dict)  # name -> (layers, heads) sum over photos
    mean_row: dict[str, torch.Tensor] = field(default_factory=dict)  # head-mean class row: (layers,) sums
    row_entropy: list[torch.Tensor] = field(default_factory=list)  # every patch and class row's entropy
    row_peak: list[torch.Tensor] = field(default_factory=list)  # ... and its peak (same order)
    photo_entropy: list[torch.Tensor] = field(default_factory=list)  # per photo: (B, layers, heads) attention_entropy
    mean_row_peak_max: torch.Tensor | None = None  # (layers,) the largest head-mean class-row peak of any photo

    def add(self, maps: Sequence[torch.Tensor]) -> None:
        b = maps[0].shape[0]
        batch = {"attention_distance_px": attention_distance(maps, self.grid, self.patch_px, self.prefix),
                 "attention_entropy": attention_entropy(maps, self.prefix),
                 "cls_attention_entropy": cls_attention_entropy(maps, self.prefix),
                 "attention_peak": attention_peak(maps, self.prefix),
                 "cls_attention_peak": cls_attention_peak(maps, self.prefix),
                 "prefix_mass": prefix_mass(maps, self.prefix)}
        for name, value in batch.items():  # means over this batch -> sums
            self.totals[name] = self.totals.get(name, 0) + value.double() * b
        mean_rows = [cls_rows(m.mean(1), self.prefix) for m in maps]  # per layer (B, P): the page's head "mean"
        for name, fn in (("entropy", normalised_entropy), ("peak", peak_ratio)):
            self.mean_row[name] = self.mean_row.get(name, 0) + torch.stack([fn(r).sum() for r in mean_rows])
        top = torch.stack([peak_ratio(r).max() for r in mean_rows])  # (layers,) the sharpest photo's
        self.mean_row_peak_max = top if self.mean_row_peak_max is None else torch.maximum(self.mean_row_peak_max, top)
        for m in maps:
            for rows in (patch_rows(m, self.prefix), cls_rows(m, self.prefix)):
                self.row_entropy.append(normalised_entropy(rows).flatten().float())
                self.row_peak.append(peak_ratio(rows).flatten().float())
        self.photo_entropy.append(torch.stack([normalised_entropy(patch_rows(m, self.prefix)).mean(-1)
                                               for m in maps], 1).float())  # (B, layers, heads)
        self.photos += b

    def means(self) -> dict[str, list]:
        """Every (layers, heads) figure as the mean over the photos added, in nested lists."""
        out = {name: (total / self.photos).tolist() for name, total in self.totals.items()}
        out.update({f"cls_mean_row_{name}": (total / self.photos).tolist() for name, total in self.mean_row.items()})
        out["cls_mean_row_peak_max"] = self.mean_row_peak_max.tolist()
        return out

    def rows(self) -> dict:
        """How entropy and peak go together over every row seen (patch and class rows, every layer, head and
        photo): where to draw the "nearly uniform" line (vit.models.attention.NEARLY_UNIFORM)."""
        e, p = torch.cat(self.row_entropy), torch.cat(self.row_peak)
        flat = torch.cat(self.photo_entropy)  # (photos, layers, heads)
        return {"count": int(e.numel()),
                "lowest_entropy_peak_at_most": {str(cap): _min(e[p <= cap]) for cap in (1.5, 2.0)},
                "peak_at_entropy_at_least": {str(line): {"p99": _quantile(p[e >= line], 0.99), "max": _max(p[e >= line])}
                                             for line in LINES},
                "photo_attention_entropy": {"min": flat.min().item(), "max": flat.max().item(),
                                            **{f"share_at_least_{line}": (flat >= line).double().mean().item()
                                               for line in LINES}}}


def _min(t: torch.Tensor) -> float | None:
    return t.min().item() if t.numel() else None


def _max(t: torch.Tensor) -> float | None:
    return t.max().item() if t.numel() else None


def _quantile(t: torch.Tensor, q: float) -> float | None:
    return float(np.quantile(t.numpy(), q)) if t.numel() else None


# ------------------------------------------------------------------------------------------ Fig. 7 centre and left


def position_embedding(model: nn.Module) -> torch.Tensor:
    """(P, D) the learned position embeddings of the patch positions alone.

    Ours stores `pos_embed` (1, prefix + P, D), class (and distillation) positions first; timm's too,
    unless `no_embed_class` (then (1, P, D): the prefix tokens get no position; register tokens never do).
    ValueError when the count does not match the token grid (e.g. a resampled `dynamic_img_size`)."""
    model = getattr(model, "_orig_mod", model)
    pos = model.pos_embed.detach()[0]  # (N_pos, D)
    if hasattr(model, "cfg"):  # ours
        prefix = model.cfg.num_prefix_tokens
    elif getattr(model, "no_embed_class", False):
        prefix = 0
    else:
        prefix = getattr(model, "num_prefix_tokens", 1) - getattr(model, "num_reg_tokens", 0)
    grid = model.patch_embed.grid_size
    patches = grid * grid if isinstance(grid, int) else int(np.prod(grid))
    if pos.shape[0] != prefix + patches:
        raise ValueError(f"pos_embed has {pos.shape[0]} positions, expected {prefix} + {patches}")
    return pos[prefix:]  # (P, D)


def position_similarity(model: nn.Module) -> torch.Tensor:
    """(P, P) cosine similarity of every patch position's embedding with every other's (Fig. 7 centre), in
    row-major token order, unit diagonal: row i reshaped to the grid is tile i of the figure."""
    pos = nn.functional.normalize(position_embedding(model).double(), dim=-1)  # (P, D)
    return (pos @ pos.T).float()  # (P, P)


def patch_filter_pcs(model: nn.Module, n: int = 28) -> tuple[np.ndarray, np.ndarray]:
    """The first `n` principal components of the linear patch embedding's filters (Fig. 7 left) as RGB
    tiles, and the share of the filters' variance each explains.

    The filters are the D rows of E (Eq. 1), each a (3, p, p) weighting of a patch's pixels, centred on
    their mean before the SVD; each component is scaled on its own to [0, 1] around grey = 0, its sign set
    so its largest entry is positive. ValueError for a patch embedding that does not read pixels (a hybrid's
    reads its CNN stem's feature channels through a 1 x 1 projection). Returns ((n, p, p, 3), (n,))."""
    model = getattr(model, "_orig_mod", model)
    w = model.patch_embed.proj.weight.detach().double()  # (D, C, p, p)
    d, c, p, q = w.shape
    if c != 3 or p == 1:
        raise ValueError(f"the patch embedding reads {c} channels in {p} x {q} cells, not RGB pixels "
                         "(a hybrid ViT: its filters act on CNN features)")
    flat = w.reshape(d, -1)
    flat = flat - flat.mean(0, keepdim=True)  # (D, 3pp)
    _, s, vh = torch.linalg.svd(flat, full_matrices=False)  # vh: (min(D, 3pp), 3pp)
    comps = vh[:min(n, vh.shape[0])]  # (n, 3pp)
    comps = comps * torch.sign(comps.gather(1, comps.abs().argmax(1, keepdim=True)))
    comps = comps / comps.abs().amax(1, keepdim=True)  # each in [-1, 1]
    tiles = (0.5 + 0.5 * comps).reshape(-1, c, p, q).permute(0, 2, 3, 1)  # (n, p, p, 3)
    return tiles.numpy(), (s**2 / (s**2).sum())[:len(comps)].numpy()


def reads_pixels(model: nn.Module) -> bool:
    """Whether the patch embedding's filters act on RGB pixels (False for a hybrid's CNN features)."""
    w = getattr(model, "_orig_mod", model).patch_embed.proj.weight
    return w.shape[1] == 3 and w.shape[-1] > 1


def similarity_facts(similarity: torch.Tensor, grid: Grid) -> dict[str, float]:
    """What the position-similarity panel shows, in numbers: the mean cosine of neighbouring positions,
    of positions in the same row or column (not neighbours included), of every pair of different
    positions (and its spread), of the centre positions against the outermost ring, and of left-right
    mirror positions."""
    rows, cols = grid
    s = similarity.double().reshape(rows, cols, rows, cols)
    y, x = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
    y, x = y.ravel(), x.ravel()
    dy, dx = np.abs(y[:, None] - y[None]), np.abs(x[:, None] - x[None])
    flat = similarity.double().numpy()
    off = ~np.eye(rows * cols, dtype=bool)
    centre_d = np.hypot(y - (rows - 1) / 2, x - (cols - 1) / 2)
    centre = centre_d <= centre_d.min() + 1e-9
    ring = (y == 0) | (x == 0) | (y == rows - 1) | (x == cols - 1)
    mirror = [s[i, j, i, cols - 1 - j].item() for i in range(rows) for j in range(cols // 2)]
    return {"neighbours": float(flat[(dy + dx) == 1].mean()),
            "same_row_or_column": float(flat[((dy == 0) | (dx == 0)) & off].mean()),
            "all_pairs": float(flat[off].mean()), "all_pairs_std": float(flat[off].std()),
            "centre_vs_border": float(flat[np.ix_(centre, ring)].mean()),
            "left_right_mirror": float(np.mean(mirror)) if mirror else float("nan")}


def weight_facts(model: nn.Module, grid: Grid, n: int = 28) -> dict:
    """The figures of the two panels read from the weights alone: position similarity's (`similarity_facts`),
    what the patch embedding reads (input channels, kernel side) and, for a ViT that reads pixels, the share
    of the filters' variance each of the first `n` components explains (else None)."""
    w = getattr(model, "_orig_mod", model).patch_embed.proj.weight  # (D, C, k, k)
    return {"position_similarity": similarity_facts(position_similarity(model), grid),
            "embed_dim": int(w.shape[0]), "patch_embedding_channels": int(w.shape[1]),
            "patch_embedding_kernel": int(w.shape[-1]),
            "filters_explained_variance": patch_filter_pcs(model, n)[1].tolist() if reads_pixels(model) else None}
