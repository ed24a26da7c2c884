"""Layer-wise relevance propagation (LRP) for our ViT and timm ViTs, in one forward and one backward pass.

Relevance is gradient x input on a forward pass re-written with the propagation rules built in
(Ali et al. 2022, "XAI for Transformers: Better Explanations through Conservative Propagation",
CP-LRP; Achtibat et al. 2024, "AttnLRP: Attention-Aware Layer-Wise Relevance Propagation for
Transformers"). Each rule is a `.detach()` or a gradient scale on this call's own forward path, the
same math as `vit.models.attention.trace`: no hooks, no patched module, nothing stored on the model.

- LayerNorm: the normalising scale is a constant (Ali et al. 2022, Sec. 3.3 "LN-rule"; AttnLRP
  Sec. 3.3.3, identity rule on the division), so LN(x) = (x - mean x) / std * w + b is linear in x.
- Attention, rule "cp" (the default): the softmax output is a constant (Ali et al. 2022, Sec. 3.2
  "AH-rule"), so a head is the linear map v -> A v and all relevance goes through the values.
  Rule "attnlrp": relevance also flows through the softmax (its gradient x input is AttnLRP's softmax
  rule, Eq. 13), split evenly over the two factors of each matmul (the uniform rule, Eq. 7):
  gradients to q and k are divided by 4, to v by 2 (as `lxt.efficient.patches.wrap_attention_forward`).
- GELU (any element-wise activation): the identity rule (AttnLRP Eq. 9), act(x) = x * (act(x) / x)
  with the ratio a constant, so relevance passes through unchanged.
- Linear layers: plain gradient x input, i.e. the epsilon-rule with epsilon = 0 (no gamma rule).

With every bias zero the network so re-written is linear in its input tokens (Euler: sum of gradient x
input = output), so the relevance summed over every token and channel equals the explained logit
exactly (conservation); with biases, the biases keep the difference.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from vit.models.scratch_vit import VisionTransformer

RULES = ("cp", "attnlrp")  # how relevance crosses attention: see the module docstring


@dataclass
class Relevance:
    """Token relevance of one image for one class."""
    tokens: torch.Tensor  # (N, D): relevance of every channel of every token entering the first block
    logits: torch.Tensor  # (1, classes) of the pass
    target: int  # the explained class index

    @property
    def per_token(self) -> torch.Tensor:
        """(N,) relevance of each token, summed over its channels."""
        return self.tokens.sum(-1)

    def conservation_gap(self) -> float:
        """(logit - total relevance) / |logit|: 0 for a bias-free network, else the biases' share."""
        logit = float(self.logits[0, self.target])
        return (logit - float(self.tokens.sum())) / max(abs(logit), 1e-12)


def token_relevance(model: nn.Module, x: torch.Tensor, target: int | None = None, *, rule: str = "cp") -> Relevance:
    """LRP of class `target` (default: the top one) for one normalised image x (1, 3, H, W), at the tokens
    entering the first block (patch embeddings with the prefix tokens and position embeddings added).
    One forward pass of the rules-built-in network and one `torch.autograd.grad`; the embedding (for the
    hybrid, the CNN stem) runs without a graph."""
    if rule not in RULES:
        raise ValueError(f"unknown LRP rule {rule!r}; choose one of {RULES}")
    model = getattr(model, "_orig_mod", model)  # torch.compile's wrapper: the module itself
    if not (hasattr(model, "blocks") and hasattr(model, "patch_embed")):
        raise TypeError(f"{type(model).__name__} has no attention blocks: LRP here is for ViTs")
    with torch.inference_mode(False), torch.enable_grad():
        with torch.no_grad():
            embedded = _embed(model, x.detach().clone())  # (1, N, D)
        tokens = embedded.detach().clone().requires_grad_(True)
        logits = _head(model, _blocks(model, tokens, rule))  # (1, classes)
        c = int(logits[0].argmax()) if target is None else int(target)
        if not 0 <= c < logits.shape[-1]:
            raise ValueError(f"target {c} is not a class index (0 .. {logits.shape[-1] - 1})")
        (grad,) = torch.autograd.grad(logits[0, c], tokens)
    return Relevance((tokens.detach() * grad)[0], logits.detach(), c)  # gradient x input, (N, D)


def _embed(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Tokens entering the first block, (B, N, D), as `trace` computes them."""
    if isinstance(model, VisionTransformer):
        return model.embed(x)
    return model.norm_pre(model.patch_drop(model._pos_embed(model.patch_embed(x))))


def _blocks(model: nn.Module, x: torch.Tensor, rule: str) -> torch.Tensor:
    """Every block of our ViT or a timm ViT (pre-norm attention and MLP, each with a residual; timm's
    LayerScale `ls1` / `ls2` is linear and kept), the rules built in; dropout and drop-path are the
    identity at inference and left out."""
    for block in model.blocks:
        attn_out = _attention(block.attn, _layer_norm(block.norm1, x), rule)
        x = x + getattr(block, "ls1", nn.Identity())(attn_out)
        mlp_out = _mlp(block.mlp, _layer_norm(block.norm2, x))
        x = x + getattr(block, "ls2", nn.Identity())(mlp_out)
    return x


def _head(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Final LayerNorm, then the classifier (token pooling and Linear(s): linear)."""
    _require_identity(getattr(model, "fc_norm", None), "fc_norm")
    _require_identity(getattr(model, "attn_pool", None), "attn_pool")
    return model.forward_head(_layer_norm(model.norm, x))


def _layer_norm(ln: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """LayerNorm with its scale a constant (Ali et al. 2022 LN-rule): linear in x."""
    if isinstance(ln, nn.Identity):
        return x
    if not isinstance(ln, nn.LayerNorm):
        raise TypeError(f"LRP: unsupported normalisation {type(ln).__name__}")
    centred = x - x.mean(-1, keepdim=True)
    std = (centred.pow(2).mean(-1, keepdim=True) + ln.eps).sqrt()
    y = centred / std.detach()
    if ln.weight is not None:
        y = y * ln.weight
    return y if ln.bias is None else y + ln.bias


def _attention(attn: nn.Module, x: torch.Tensor, rule: str) -> torch.Tensor:
    """Multi-head self-attention with one fused qkv (ours and timm's), the softmax a constant ("cp") or
    crossed by AttnLRP's uniform rule ("attnlrp")."""
    for name in ("q_norm", "k_norm", "norm"):
        _require_identity(getattr(attn, name, None), f"attn.{name}")
    B, N, C = x.shape
    qkv = attn.qkv(x).reshape(B, N, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4)  # (3, B, h, N, hd)
    q, k, v = qkv.unbind(0)  # 3 x (B, heads, N, head_dim)
    if rule == "cp":
        q, k = q.detach(), k.detach()  # AH-rule: the weights below are constants
    else:
        q, k, v = _scale_grad(q, 4.0), _scale_grad(k, 4.0), _scale_grad(v, 2.0)  # uniform rule, Eq. 7
    weights = ((q * attn.scale) @ k.transpose(-2, -1)).softmax(dim=-1)  # (B, heads, N, N)
    out = (weights @ v).transpose(1, 2).reshape(B, N, C)  # (B, N, D)
    return attn.proj(out)


def _mlp(mlp: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """fc1 -> activation (identity rule, AttnLRP Eq. 9) -> fc2; timm's optional `norm` must be absent."""
    _require_identity(getattr(mlp, "norm", None), "mlp.norm")
    h = mlp.fc1(x)  # (B, N, hidden)
    ratio = mlp.act(h) / torch.where(h == 0, torch.ones_like(h), h)  # act(h) / h; relevance at h = 0 is 0
    return mlp.fc2(h * ratio.detach())


def _scale_grad(t: torch.Tensor, factor: float) -> torch.Tensor:
    """t itself in the forward pass; its gradient divided by `factor` in the backward pass."""
    base = t.detach()
    return base + (t - base) / factor


def _require_identity(module: nn.Module | None, what: str) -> None:
    if module is not None and not isinstance(module, nn.Identity):
        raise TypeError(f"LRP: {what} ({type(module).__name__}) is not supported; only ViTs without it")
